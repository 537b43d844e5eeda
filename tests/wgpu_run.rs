//! The GPU schedule executed: every fixture compiled for `--target wgpu` and run with
//! `run --plan` on the first wgpu adapter (in CI: Mesa's lavapipe, Vulkan on the CPU) gives
//! Hugging Face's greedy ids for 12 tokens, with logits within 5e-3 of HF f32 at every step
//! (the parity tolerance of tests/parity.rs: room for summation order — the GPU kernels sum
//! across lanes and subgroups — while a modelling bug moves logits by O(0.1)).
//!
//! CUDA and Metal print the same schedule (tests/gpu_emit.rs), so this is the semantic check
//! for all three. Skipped, with a message, only when no adapter exists (no Vulkan driver).

mod common;

use common::*;
use gemma4c_runtime::npy::read_npy_f32;

const LOGIT_ATOL: f32 = 5e-3;
const TOKENS: usize = 12;

#[test]
fn wgpu_plans_give_hf_greedy_ids_and_logits_on_every_fixture() {
    for dir in fixtures() {
        let r = Reference::load(&dir);
        let want = &r.generated()[..TOKENS];
        let tmp = tempfile::tempdir().expect("tempdir");
        let plan = tmp.path().join("plan");
        let model = dir.to_str().expect("utf-8 path");
        let plan_s = plan.to_str().expect("utf-8 path");
        let c = gemma4c(&["compile", "--model", model, "--target", "wgpu", "--out", plan_s]);
        assert_eq!(c.code, 0, "{}: {}", dir.display(), c.stderr);
        assert!(plan.join("kernels.wgsl").exists());
        let npy = tmp.path().join("logits.npy");
        let out = run_ids(
            &["--plan", plan_s],
            &r.prompt(),
            TOKENS,
            &["--logits-out", npy.to_str().expect("utf-8 path")],
        );
        if out.code != 0 && out.stderr.contains("no GPU adapter") {
            eprintln!("SKIPPED: {}", out.stderr.trim());
            return;
        }
        assert_eq!(out.code, 0, "{}: {}", dir.display(), out.stderr);
        assert!(out.stderr.contains("wgpu adapter:"), "{}", out.stderr);
        let got: Vec<u32> = out.stdout.split_whitespace().map(|t| t.parse().expect("id")).collect();
        assert_eq!(got, want, "{}: greedy ids differ from HF", dir.display());
        let (shape, logits) = read_npy_f32(&npy).expect("logits.npy");
        let reference = &r.tensors["decode_logits"];
        let vocab = shape[1];
        assert_eq!(shape, [TOKENS, reference.shape[1]], "{}", dir.display());
        let mut worst = 0.0f32;
        for step in 0..TOKENS {
            let d = max_abs_diff(
                &logits[step * vocab..(step + 1) * vocab],
                &reference.data[step * vocab..(step + 1) * vocab],
            );
            assert!(d <= LOGIT_ATOL, "{}: step {step}: max |Δlogit| = {d}", dir.display());
            worst = worst.max(d);
        }
        // Without --logits-out the argmax runs on the device and only the id is read back.
        let out = run_ids(&["--plan", plan_s], &r.prompt(), TOKENS, &[]);
        assert_eq!(out.code, 0, "{}: {}", dir.display(), out.stderr);
        assert!(out.stderr.contains("greedy ids picked on the device"), "{}", out.stderr);
        let got: Vec<u32> = out.stdout.split_whitespace().map(|t| t.parse().expect("id")).collect();
        assert_eq!(got, want, "{}: device-argmax ids differ from HF", dir.display());
        eprintln!(
            "{}: 12 ids match HF (host and device argmax), max |Δlogit| = {worst:.2e}",
            dir.display()
        );
    }
}

#[test]
fn an_edited_kernels_wgsl_is_refused_by_the_plan_checker() {
    let dir = fixture("tiny_ple");
    let tmp = tempfile::tempdir().expect("tempdir");
    let plan = tmp.path().to_str().expect("utf-8 path");
    let c = gemma4c(&[
        "compile",
        "--model",
        dir.to_str().unwrap(),
        "--target",
        "wgpu",
        "--out",
        plan,
    ]);
    assert_eq!(c.code, 0, "{}", c.stderr);
    let wgsl = tmp.path().join("kernels.wgsl");
    let text = std::fs::read_to_string(&wgsl).unwrap();
    std::fs::write(&wgsl, text.replace("exp(", "sqrt(")).unwrap();
    let out = run_ids(&["--plan", plan], &[2, 17], 2, &[]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("kernels.wgsl"), "{}", out.stderr);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
}

/// A `--target metal` plan runs through the same wgpu runtime: on a Mac kernels.metal is
/// passed through to Metal; on any other adapter (here: lavapipe) the same GPU plan printed as
/// WGSL runs, so everything but the shader text is the path checked above. One fixture with
/// PLE, KV sharing and the tiled prefill: HF's 12 greedy ids.
#[test]
fn a_metal_plan_runs_through_the_wgpu_runtime() {
    let dir = fixture("tiny_ple");
    let r = Reference::load(&dir);
    let want = &r.generated()[..TOKENS];
    let tmp = tempfile::tempdir().expect("tempdir");
    let plan = tmp.path().to_str().expect("utf-8 path");
    let c = gemma4c(&[
        "compile",
        "--model",
        dir.to_str().unwrap(),
        "--target",
        "metal",
        "--out",
        plan,
    ]);
    assert_eq!(c.code, 0, "{}", c.stderr);
    assert!(tmp.path().join("kernels.metal").exists());
    let out = run_ids(&["--plan", plan], &r.prompt(), TOKENS, &[]);
    if out.code != 0 && out.stderr.contains("no GPU adapter") {
        eprintln!("SKIPPED: {}", out.stderr.trim());
        return;
    }
    assert_eq!(out.code, 0, "{}", out.stderr);
    // Only a Metal adapter can take MSL; whether it offers passthrough is wgpu's to say.
    let as_wgsl = out.stderr.contains("Metal plan run as WGSL");
    let passthrough = out.stderr.contains("kernels.metal (MSL passthrough)");
    assert!(as_wgsl || (passthrough && cfg!(target_os = "macos")), "{}", out.stderr);
    let got: Vec<u32> = out.stdout.split_whitespace().map(|t| t.parse().expect("id")).collect();
    assert_eq!(got, want, "metal plan: greedy ids differ from HF");
}
