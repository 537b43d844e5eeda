//! The C-style printer's seam: a new C-like target is one `Dialect` impl. Here, host C11 with
//! the grid row as an argument, in under 60 lines; the test compiles its output with the system
//! C compiler and checks a bf16 matvec with soft-cap and an RMSNorm against values computed here.

use std::fmt::Write;
use std::process::Command;

use gemma4c_backends::cstyle::{print_module, Dialect};
use gemma4c_backends::kernel::{ops, Access, Elem};

// --- the toy dialect ---------------------------------------------------------------------------
struct HostC;

impl Dialect for HostC {
    fn prelude(&self) -> &str {
        "#include <math.h>\n#include <stdbool.h>\n#include <stdint.h>\n#include <string.h>\n\
         static inline float g4_bf16(uint16_t b) { uint32_t u = (uint32_t)b << 16; float f; memcpy(&f, &u, 4); return f; }\n\
         static inline uint16_t g4_to_bf16(float f) { uint32_t u; memcpy(&u, &f, 4); return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16); }\n\n"
    }
    fn signature(&self, name: &str, params: &[String]) -> String {
        format!("void {name}({}, long long row) {{", params.join(", "))
    }
    fn row_index(&self, rows: usize) -> Vec<String> {
        vec![format!("if (row >= {rows}LL) return;")]
    }
    fn elem_type(&self, e: Elem) -> &str {
        match e {
            Elem::F32 => "float",
            Elem::BF16 => "uint16_t",
            Elem::F16 => "_Float16",
            Elem::I32 => "int",
            // Never printed: C-style printers do not see block-quantized weights.
            Elem::Block(_) => "uint8_t",
        }
    }
    fn widen(&self, e: Elem, stored: &str) -> String {
        match e {
            Elem::F16 => format!("((float){stored})"),
            _ => format!("g4_bf16({stored})"),
        }
    }
    fn narrow(&self, e: Elem, value: &str) -> String {
        match e {
            Elem::F16 => format!("((_Float16)({value}))"),
            _ => format!("g4_to_bf16({value})"),
        }
    }
    fn non_finite(&self, x: f32) -> String {
        let inf = if x.is_nan() { "NAN" } else { "INFINITY" };
        format!("({}{inf})", if x < 0.0 { "-" } else { "" })
    }
    fn table_qualifiers(&self) -> &str {
        "static const "
    }
    fn helper_qualifiers(&self) -> &str {
        "static inline"
    }
}
// --- end of the toy dialect --------------------------------------------------------------------

fn c_floats(name: &str, v: &[f32]) -> String {
    let items: Vec<String> = v.iter().map(|x| format!("{x:e}f")).collect();
    format!("static float {name}[] = {{{}}};\n", items.join(", "))
}

#[test]
fn a_host_c_dialect_compiles_and_computes_what_the_kernels_mean() {
    let (n, k, cap, eps) = (8usize, 16usize, 3.0f32, 1e-6f32);
    let matvec = ops::matmul(1, n, k, Elem::BF16, Some(cap));
    let norm = ops::rms_norm(2, k, Elem::F32, Some(Elem::F32), eps, None);
    assert_eq!(
        matvec.params.iter().map(|p| p.access).collect::<Vec<_>>(),
        [Access::Read, Access::Read, Access::Write]
    );
    let src = print_module(&HostC, "toy host C", [&matvec, &norm]);
    assert!(
        src.starts_with("// toy host C\n// 2 kernels\n\n#include <math.h>"),
        "{src}"
    );
    assert_eq!(
        src,
        print_module(&HostC, "toy host C", [&matvec, &norm]),
        "deterministic"
    );

    // Inputs: x (two rows of k), bf16 weights [n, k] (exactly representable), norm weights.
    let x: Vec<f32> = (0..2 * k).map(|i| ((i * 7 % 11) as f32 - 5.0) / 4.0).collect();
    let w: Vec<f32> = (0..n * k).map(|i| ((i * 5 % 13) as f32 - 6.0) / 8.0).collect();
    let g: Vec<f32> = (0..k).map(|i| 0.5 + i as f32 / 16.0).collect();
    let w_bits: Vec<String> = w
        .iter()
        .map(|&v| format!("{}", half::bf16::from_f32(v).to_bits()))
        .collect();
    let mut main = src.clone();
    main += &c_floats("x", &x);
    main += &c_floats("g", &g);
    let _ = writeln!(main, "static uint16_t w[] = {{{}}};", w_bits.join(", "));
    main += "#include <stdio.h>\nint main(void) {\n  float mv[8], nm[32];\n";
    let _ = writeln!(
        main,
        "  for (long long r = 0; r < {n}; ++r) {}(x, w, mv, r);",
        matvec.name
    );
    let _ = writeln!(main, "  for (long long r = 0; r < 2; ++r) {}(x, g, nm, r);", norm.name);
    main += "  for (int i = 0; i < 8; ++i) printf(\"%.9g\\n\", mv[i]);\n";
    main += "  for (int i = 0; i < 32; ++i) printf(\"%.9g\\n\", nm[i]);\n  return 0;\n}\n";

    let dir = tempfile::tempdir().expect("tempdir");
    let c = dir.path().join("toy.c");
    std::fs::write(&c, &main).expect("write toy.c");
    let exe = dir.path().join("toy");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let built = match Command::new(&cc)
        .args(["-std=c11", "-O1", "-Wall", "-Werror", "-Wno-unused-function"])
        .arg(&c)
        .arg("-o")
        .arg(&exe)
        .arg("-lm")
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            eprintln!("skipping: no C compiler `{cc}` ({e})");
            return;
        }
    };
    assert!(
        built.status.success(),
        "{}\n{main}",
        String::from_utf8_lossy(&built.stderr)
    );
    let run = Command::new(&exe).output().expect("run toy");
    let got: Vec<f32> = String::from_utf8(run.stdout)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();

    // Reference: f32 sums in index order (what the kernels do), libm tanh: equal to 1e-6.
    for j in 0..n {
        let dot: f32 = (0..k).map(|i| x[i] * w[j * k + i]).sum();
        let want = cap * (dot / cap).tanh();
        assert!(
            (got[j] - want).abs() <= 1e-6 * want.abs().max(1.0),
            "matvec[{j}]: {} vs {want}",
            got[j]
        );
    }
    for r in 0..2 {
        let row = &x[r * k..(r + 1) * k];
        let inv = 1.0 / (row.iter().map(|v| v * v).sum::<f32>() / k as f32 + eps).sqrt();
        for i in 0..k {
            let want = row[i] * inv * g[i];
            let got = got[n + r * k + i];
            assert!(
                (got - want).abs() <= 1e-6 * want.abs().max(1.0),
                "rms_norm[{r},{i}]: {got} vs {want}"
            );
        }
    }
}
