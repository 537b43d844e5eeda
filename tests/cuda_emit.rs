//! The CUDA targets: `compile --target cuda-sm90` (or `cuda-sm80`) writes kernels.cu (CUDA C,
//! one `extern "C" __global__` function per distinct kernel of the plan, printed from the GPU
//! schedule shared with Metal and WGSL, tests/gpu_emit.rs) next
//! to plan.json and stats.json, deterministically. Checked against a snapshot;
//! no GPU or CUDA toolkit is needed.

mod common;

use std::path::Path;

use common::*;

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `gemma4c compile --target cuda-sm90` into a fresh directory; returns kernels.cu.
fn compile_cu(dir: &Path) -> String {
    compile_cu_for(dir, "cuda-sm90")
}

fn compile_cu_for(dir: &Path, target: &str) -> String {
    let out = tempfile::tempdir().expect("tempdir");
    let r = gemma4c(&[
        "compile",
        "--model",
        path(dir),
        "--target",
        target,
        "--out",
        path(out.path()),
    ]);
    assert_eq!(r.code, 0, "{}: compile failed: {}", dir.display(), r.stderr);
    for f in ["plan.json", "stats.json", "kernels.cu"] {
        assert!(out.path().join(f).exists(), "compile --target {target} writes {f}");
    }
    assert!(
        !out.path().join("kernels.ll").exists(),
        "kernels.ll is the cpu artifact"
    );
    std::fs::read_to_string(out.path().join("kernels.cu")).expect("kernels.cu")
}

#[test]
fn kernels_cu_is_deterministic() {
    let dir = fixture("tiny_ple");
    let a = compile_cu(&dir);
    let b = compile_cu(&dir);
    assert!(a == b, "two compiles of one model give different kernels.cu");
}

#[test]
fn kernels_cu_has_one_global_function_per_kernel() {
    let cu = compile_cu(&fixture("tiny_ple"));
    let names: Vec<&str> = cu
        .lines()
        .filter_map(|l| l.strip_prefix("extern \"C\" __global__ void __launch_bounds__("))
        .map(|l| l.split_once(") ").expect("bounds").1.split('(').next().expect("name"))
        .collect();
    assert!(!names.is_empty());
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(names, sorted, "kernels are distinct and sorted by name");
    assert!(cu.contains(&format!("// {} kernels", names.len())));
    assert!(cu.contains("#include <cuda_bf16.h>"));
}

#[test]
fn kernels_cu_matches_the_snapshot() {
    let cu = compile_cu(&fixture("tiny_ple"));
    insta::with_settings!({ snapshot_path => "../snapshots", prepend_module_to_snapshot => true }, {
        insta::assert_snapshot!("tiny_ple_kernels_cu", cu);
    });
}

#[test]
fn sm80_differs_from_sm90_only_in_the_header() {
    let dir = fixture("tiny_moe");
    let sm90 = compile_cu_for(&dir, "cuda-sm90");
    let sm80 = compile_cu_for(&dir, "cuda-sm80");
    let (head90, body90) = sm90.split_once('\n').expect("header line");
    let (head80, body80) = sm80.split_once('\n').expect("header line");
    assert_eq!(
        head80,
        "// gemma4c kernels for target cuda-sm80 (CUDA C, compile with NVRTC or nvcc for sm_80)."
    );
    assert_eq!(head90.replace("sm90", "sm80").replace("sm_90", "sm_80"), head80);
    assert!(
        body80 == body90,
        "the kernels themselves are the same for both architectures"
    );
}
