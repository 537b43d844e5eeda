//! kernels.cu of every fixture and of the four released configs compiled by NVRTC 12.9 to PTX for
//! compute_80 and compute_90 (tools/nvrtc_check.py loads the pip wheel's libnvrtc with ctypes;
//! scripts/setup.sh installs the wheels under ~/.cache/gemma4c/nvrtc-12.9). No GPU is needed; the
//! PTX is not run here. Skipped, with a message, when the wheels are missing.

mod common;

use std::path::PathBuf;
use std::process::Command;

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
    let helper = repo_root().join("tools/nvrtc_check.py");
    for src in fixture_and_released_sources() {
        for (target, arch) in [("cuda-sm80", "compute_80"), ("cuda-sm90", "compute_90")] {
            let tmp = compile_into_tempdir(&src, target);
            let cu = tmp.path().join("kernels.cu");
            let out = Command::new("python3")
                .arg(&helper)
                .arg(&wheel)
                .arg(arch)
                .arg(&cu)
                .output()
                .expect("python3");
            let log = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{src:?} {arch}: {log}");
            let ptx = std::fs::read_to_string(tmp.path().join(format!("kernels.{arch}.ptx"))).expect("ptx");
            assert!(ptx.contains(".version 8.8") && ptx.contains(".entry"), "{src:?} {arch}");
        }
    }
}
