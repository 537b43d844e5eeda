//! The prefill matmul against bf16 weights, both ways the JIT can run it: the
//! portable tiled kernel (f32 activations, on every host) and its variant for
//! CPUs with AVX-512 BF16 (`vdpbf16ps`, activations rounded to bf16; run only
//! where the host has the feature, and said so when it is skipped).

use gemma4c_backends::cpu::llvm::print_module;
use gemma4c_backends::kernel::{ops, Elem, Tiles};
use gemma4c_runtime::jit::{JitModule, Variants};
use rand::{Rng, SeedableRng};

fn bf16(v: f32) -> f32 {
    half::bf16::from_f32(v).to_f32()
}

/// Runs the kernel built by `matmul_for` over all its grid rows.
fn run(jit: &JitModule, name: &str, rows: usize, x: &[f32], w: &[u8], out: &mut [f32]) {
    let f = jit.kernel(name, 3).unwrap();
    type K = extern "C" fn(*const u8, *const u8, *mut u8, i64, i64);
    // SAFETY: `kernel` checked the signature (three buffers, begin, end); the
    // buffers hold m x k, n x k and m x n elements for `rows` grid rows.
    let f: K = unsafe { std::mem::transmute::<usize, K>(f) };
    f(x.as_ptr().cast(), w.as_ptr(), out.as_mut_ptr().cast(), 0, rows as i64);
}

#[test]
fn bf16_prefill_matmul_both_paths_match_dot_products() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(21);
    // m = 37: 9 blocks of 4 input rows and a single row; n = 12: 3 grid rows
    // of 4 features; k = 96: three 32-column steps.
    let (m, n, k) = (37, 12, 96);
    assert!(ops::has_dot_bf16(m, k, Elem::BF16));
    let wf: Vec<f32> = (0..n * k).map(|_| bf16(rng.random_range(-0.1f32..0.1))).collect();
    let w: Vec<u8> = wf.iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect();
    // Activations with a wide exponent range (bf16 rounding must be relative),
    // all normal numbers (vdpbf16ps flushes subnormals).
    let x: Vec<f32> = (0..m * k)
        .map(|_| rng.random_range(-1.0f32..1.0) * 2f32.powi(rng.random_range(-6..6)))
        .collect();
    for cap in [None, Some(3.0f32)] {
        let kern = ops::matmul_for(Tiles::Local, m, n, k, Elem::BF16, cap);
        assert_eq!(
            kern.variants.len(),
            1,
            "a bf16 prefill of {m} rows has the AVX-512 BF16 variant"
        );
        let ll = print_module("test", [&kern]);
        let rows = kern.rows;
        let portable = JitModule::compile_variants(&ll, None, 1, Variants::Off).unwrap();
        assert_eq!(portable.variant(&kern.name), None);
        let host = JitModule::compile_variants(&ll, None, 1, Variants::Host).unwrap();
        let mut outs = vec![];
        for (what, jit) in [("portable", &portable), ("host", &host)] {
            let mut out = vec![0f32; m * n];
            run(jit, &kern.name, rows, &x, &w, &mut out);
            outs.push((what, jit.variant(&kern.name).is_some(), out));
        }
        if !outs[1].1 {
            eprintln!("this host has no AVX-512 BF16: only the portable path was checked");
        }
        for (what, bf16_x, out) in &outs {
            for i in 0..m {
                for j in 0..n {
                    let dot = |round: bool| -> f64 {
                        (0..k)
                            .map(|c| {
                                let xv = x[i * k + c];
                                (if round { bf16(xv) } else { xv }) as f64 * wf[j * k + c] as f64
                            })
                            .sum()
                    };
                    let soft = |d: f64| cap.map_or(d, |c| c as f64 * (d / c as f64).tanh());
                    let scale: f64 = (0..k).map(|c| (x[i * k + c] * wf[j * k + c]).abs() as f64).sum();
                    let got = out[i * n + j] as f64;
                    // f32 accumulation of k exact products (and the kernels'
                    // tanh, a few ulp): 1e-6 of the sum of |products|.
                    let tol = 1e-6 * scale + 1e-7;
                    // The portable kernel is the f32 dot product; the variant
                    // is the dot product of the bf16-rounded activations.
                    let want = soft(dot(*bf16_x));
                    assert!(
                        (got - want).abs() <= tol,
                        "{what} cap {cap:?} [{i},{j}]: {got} vs {want}"
                    );
                    // Against the f32 reference the variant differs by the
                    // rounding of each activation: at most 2^-9 relative.
                    let f32_want = soft(dot(false));
                    let bound = if *bf16_x { scale / 512.0 } else { 0.0 } + tol;
                    assert!((got - f32_want).abs() <= bound, "{what} [{i},{j}] vs f32");
                }
            }
        }
    }
}

#[test]
fn short_prefills_and_other_weights_have_no_bf16_variant() {
    assert!(ops::matmul_for(Tiles::Local, 31, 8, 64, Elem::BF16, None)
        .variants
        .is_empty());
    assert!(ops::matmul_for(Tiles::Local, 64, 8, 48, Elem::BF16, None)
        .variants
        .is_empty());
    assert!(ops::matmul_for(Tiles::Local, 64, 8, 64, Elem::F32, None)
        .variants
        .is_empty());
    assert!(ops::matmul_for(Tiles::None, 64, 8, 64, Elem::BF16, None)
        .variants
        .is_empty());
}
