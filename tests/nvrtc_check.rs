//! kernels.cu of every fixture and of the four released configs compiled by NVRTC 12.9 to PTX for
//! compute_80 and compute_90. `compile --target cuda-*` itself runs NVRTC (the pip wheels that
//! scripts/setup.sh installs under ~/.cache/gemma4c/nvrtc-12.9, loaded at run time) and writes
//! kernels.ptx, failing when kernels.cu does not compile; this test checks the PTX it wrote
//! rather than compiling each source a second time: PTX 8.8 for the target's architecture, one
//! `.entry` per `__global__` kernel of kernels.cu. No GPU is needed; the PTX is not run here.
//! Skipped, with a message, when the wheels are missing.

mod common;

use std::path::PathBuf;

use common::*;

#[test]
fn every_kernels_cu_compiles_with_nvrtc_for_sm80_and_sm90() {
    let wheel = PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/gemma4c/nvrtc-12.9");
    if !wheel.join("nvidia/cuda_nvrtc/lib/libnvrtc.so.12").exists() {
        eprintln!(
            "SKIPPED: no NVRTC wheel in {} (scripts/setup.sh installs it)",
            wheel.display()
        );
        return;
    }
    for src in fixture_and_released_sources() {
        for (target, sm) in [("cuda-sm80", "sm_80"), ("cuda-sm90", "sm_90")] {
            let tmp = compile_into_tempdir(&src, target);
            let cu = std::fs::read_to_string(tmp.path().join("kernels.cu")).expect("kernels.cu");
            let ptx = std::fs::read_to_string(tmp.path().join("kernels.ptx"))
                .unwrap_or_else(|e| panic!("{src:?} {target}: compile wrote no kernels.ptx ({e})"));
            assert!(ptx.contains(".version 8.8"), "{src:?} {target}: not PTX 8.8");
            assert!(
                ptx.lines().any(|l| l.trim() == format!(".target {sm}")),
                "{src:?} {target}: PTX not for {sm}"
            );
            let kernels = cu
                .lines()
                .filter(|l| l.starts_with("extern \"C\" __global__ void"))
                .count();
            let entries = ptx.matches(".entry ").count();
            assert!(
                kernels > 0 && entries == kernels,
                "{src:?} {target}: {entries} PTX entries for {kernels} kernels"
            );
        }
    }
}
