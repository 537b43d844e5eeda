//! The three GPU printers (WGSL, Metal, CUDA) print one schedule: the same kernels, in the
//! same order, with the same launch shape (workgroups × lanes, which loops the lanes split)
//! and the same number of barriers. So the WGSL run on lavapipe (tests/wgpu_run.rs) checks the
//! schedule CUDA and Metal print. Snapshots of all three for tiny_ple and E4B.

mod common;

use std::path::Path;

use common::*;

/// `compile SOURCE --target TARGET` into a fresh directory; returns the file `name`.
fn compile(source: &[&str], target: &str, name: &str) -> String {
    let out = tempfile::tempdir().expect("tempdir");
    let mut args = vec!["compile"];
    args.extend_from_slice(source);
    args.extend_from_slice(&["--target", target, "--out", out.path().to_str().expect("utf-8")]);
    let r = gemma4c(&args);
    assert_eq!(r.code, 0, "{target}: {}", r.stderr);
    std::fs::read_to_string(out.path().join(name)).expect(name)
}

fn model(dir: &Path) -> Vec<String> {
    vec!["--model".into(), dir.to_str().expect("utf-8").into()]
}

/// Per kernel: its schedule line and its barrier count (`barrier` is the dialect's spelling).
fn schedule(src: &str, barrier: &str) -> Vec<(String, usize)> {
    let mut out: Vec<(String, usize)> = Vec::new();
    for line in src.lines() {
        if line.starts_with("// ") && line.contains(" rows, one ") {
            out.push((line.to_string(), 0));
        } else if line.contains(barrier) {
            out.last_mut().expect("a kernel before its barrier").1 += 1;
        }
    }
    out
}

const TARGETS: [(&str, &str, &str); 3] = [
    ("wgpu", "kernels.wgsl", "workgroupBarrier()"),
    ("metal", "kernels.metal", "threadgroup_barrier("),
    ("cuda-sm90", "kernels.cu", "__syncthreads()"),
];

#[test]
fn wgsl_metal_and_cuda_print_the_same_schedule() {
    for dir in [fixture("tiny_ple"), fixture("tiny_moe")] {
        let src = model(&dir);
        let src: Vec<&str> = src.iter().map(String::as_str).collect();
        let scheds: Vec<Vec<(String, usize)>> = TARGETS
            .iter()
            .map(|(t, f, b)| schedule(&compile(&src, t, f), b))
            .collect();
        assert!(scheds[0].len() > 10, "{:?}", scheds[0]);
        assert!(
            scheds[0].iter().any(|(l, b)| l.contains("one workgroup") && *b > 0),
            "lanes cooperate"
        );
        assert_eq!(scheds[0], scheds[1], "{}: WGSL vs Metal", dir.display());
        assert_eq!(scheds[0], scheds[2], "{}: WGSL vs CUDA", dir.display());
    }
}

#[test]
fn gpu_kernels_match_the_snapshots() {
    let cfg = repo_root().join("tests/configs/gemma-4-e4b.json");
    let e4b = ["--config", cfg.to_str().expect("utf-8")];
    let tiny = model(&fixture("tiny_ple"));
    let tiny: Vec<&str> = tiny.iter().map(String::as_str).collect();
    for (tag, src) in [("tiny_ple", &tiny[..]), ("e4b", &e4b[..])] {
        for (t, f, _) in TARGETS {
            if tag == "tiny_ple" && f == "kernels.cu" {
                continue; // tests/cuda_emit.rs snapshots it
            }
            let text = compile(src, t, f);
            assert_eq!(text, compile(src, t, f), "{tag} {t}: deterministic");
            let name = format!("{tag}_{}", f.replace('.', "_"));
            insta::with_settings!({ snapshot_path => "../snapshots", prepend_module_to_snapshot => true }, {
                insta::assert_snapshot!(name, text);
            });
        }
    }
}
