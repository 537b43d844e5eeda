//! The CUDA executor where no GPU is: `compile --target cuda-*` writes kernels.ptx (NVRTC from
//! the cached wheels) into the manifest, or says why not; `run --plan` / `bench --plan` on a
//! CUDA plan without libcuda say so and exit 1 (cudarc's context creation would panic); a plan
//! without its PTX is refused with the reason. Execution itself needs an NVIDIA GPU:
//! tools/gpu_device_check.sh runs the fixtures' parity and the bench there.

mod common;

use std::process::Command;

use common::*;

fn compile_cuda(dir: &std::path::Path, out: &std::path::Path, env: &[(&str, &str)]) -> CliOutput {
    let o = Command::new(env!("CARGO_BIN_EXE_gemma4c"))
        .args([
            "compile",
            "--model",
            dir.to_str().unwrap(),
            "--target",
            "cuda-sm90",
            "--out",
        ])
        .arg(out)
        .envs(env.iter().copied())
        .output()
        .expect("run gemma4c");
    CliOutput {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn nvrtc_wheels() -> Option<std::path::PathBuf> {
    let d = std::env::var_os("GEMMA4C_NVRTC_DIR")
        .map(std::path::PathBuf::from)
        .or_else(|| Some(std::path::PathBuf::from(std::env::var_os("HOME")?).join(".cache/gemma4c/nvrtc-12.9")))?;
    d.join("nvidia/cuda_nvrtc/lib/libnvrtc.so.12").is_file().then_some(d)
}

#[test]
fn compile_writes_kernels_ptx_and_run_without_a_driver_exits_1() {
    let Some(wheels) = nvrtc_wheels() else {
        eprintln!("SKIPPED: no NVRTC wheels (scripts/setup.sh installs them)");
        return;
    };
    let fixture = fixture("tiny_ple");
    let tmp = tempfile::tempdir().unwrap();
    let plan = tmp.path().join("plan");
    let c = compile_cuda(&fixture, &plan, &[("GEMMA4C_NVRTC_DIR", wheels.to_str().unwrap())]);
    assert_eq!(c.code, 0, "{}", c.stderr);
    let ptx = std::fs::read_to_string(plan.join("kernels.ptx")).expect("kernels.ptx");
    assert!(ptx.contains(".target sm_90"), "{}", &ptx[..300.min(ptx.len())]);
    // Every kernel of kernels.cu is an entry of the PTX, the device argmax and flash-decode included.
    let cu = std::fs::read_to_string(plan.join("kernels.cu")).unwrap();
    let kernels: Vec<&str> = cu
        .lines()
        .filter_map(|l| l.strip_prefix("extern \"C\" __global__ void __launch_bounds__("))
        .map(|l| l.split_once(") ").unwrap().1.split('(').next().unwrap())
        .collect();
    assert!(kernels.len() > 10, "{kernels:?}");
    assert!(kernels.iter().any(|k| k.starts_with("argmax_")), "{kernels:?}");
    assert!(kernels.iter().any(|k| k.starts_with("attention_split")), "{kernels:?}");
    for k in &kernels {
        assert!(ptx.contains(&format!(".entry {k}(")), "{k} is not in kernels.ptx");
    }
    let manifest = std::fs::read_to_string(plan.join("manifest.json")).unwrap();
    assert!(manifest.contains("kernels.ptx"), "{manifest}");

    let has_driver = ["/usr/lib/x86_64-linux-gnu/libcuda.so.1", "/usr/lib64/libcuda.so.1"]
        .iter()
        .any(|p| std::path::Path::new(p).exists());
    if has_driver {
        eprintln!("SKIPPED the no-driver half: this machine has libcuda");
        return;
    }
    let plan_s = plan.to_str().unwrap();
    for args in [
        vec![
            "run",
            "--plan",
            plan_s,
            "--prompt-ids",
            "2,17",
            "--max-new-tokens",
            "2",
            "--output",
            "ids",
        ],
        vec!["bench", "--plan", plan_s, "--tokens", "2", "--prompt-tokens", "2"],
    ] {
        let out = gemma4c(&args);
        assert_eq!(out.code, 1, "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.contains("no CUDA driver: libcuda.so could not be loaded"),
            "{}",
            out.stderr
        );
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    }
}

#[test]
fn without_nvrtc_compile_says_why_and_run_refuses_the_plan_without_ptx() {
    let tmp = tempfile::tempdir().unwrap();
    let plan = tmp.path().join("plan");
    let empty = tmp.path().join("no-wheels");
    let c = compile_cuda(
        &fixture("tiny_ple"),
        &plan,
        &[("GEMMA4C_NVRTC_DIR", empty.to_str().unwrap()), ("LD_LIBRARY_PATH", "")],
    );
    assert_eq!(c.code, 0, "{}", c.stderr);
    assert!(
        c.stderr
            .contains("note: kernels.ptx not written: NVRTC (libnvrtc.so.12) not found"),
        "{}",
        c.stderr
    );
    assert!(plan.join("kernels.cu").exists() && !plan.join("kernels.ptx").exists());
    let out = run_ids(&["--plan", plan.to_str().unwrap()], &[2, 17], 2, &[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("no kernels.ptx"), "{}", out.stderr);
}
