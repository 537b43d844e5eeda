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
    let mut sources: Vec<Vec<String>> = fixtures()
        .iter()
        .map(|d| vec!["--model".into(), d.to_str().unwrap().into()])
        .collect();
    for c in ["gemma-4-e2b", "gemma-4-e4b", "gemma-4-31b", "gemma-4-26b-a4b"] {
        let p = repo_root().join(format!("tests/configs/{c}.json"));
        sources.push(vec!["--config".into(), p.to_str().unwrap().into()]);
    }
    let helper = repo_root().join("tools/nvrtc_check.py");
    for src in sources {
        for (target, arch) in [("cuda-sm80", "compute_80"), ("cuda-sm90", "compute_90")] {
            let tmp = tempfile::tempdir().expect("tempdir");
            let mut args: Vec<&str> = vec!["compile"];
            args.extend(src.iter().map(String::as_str));
            args.extend(["--target", target, "--out", tmp.path().to_str().unwrap()]);
            let r = gemma4c(&args);
            assert_eq!(r.code, 0, "{src:?}: {}", r.stderr);
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
