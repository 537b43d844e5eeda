//! The CPU target: kernels.ll generated from the plan and JIT-compiled with
//! LLVM. Parity with Hugging Face on every fixture (ids exact, logits within
//! 5e-3 of HF f32, cosine >= 0.9999), with the reference executor on the same
//! plan, with itself across thread counts, unfused plans, and a snapshot of the
//! generated kernels.
//!
//! `GEMMA4C_EXTRA_FIXTURES=dir1:dir2` adds checkpoints the suite has not seen
//! (e.g. written by `UNSEEN_DIR=... tools/make_fixtures.sh`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use gemma4c_frontend::Model;
use gemma4c_passes::plan::Plan;
use gemma4c_runtime::jit::{JitOptions, JitSession};
use gemma4c_runtime::npy::read_npy_f32;
use gemma4c_runtime::{Executor, PlanSession};

const LOGIT_ATOL: f32 = 5e-3;
const MIN_COSINE: f64 = 0.9999;

fn all_fixtures() -> Vec<PathBuf> {
    let mut dirs = parity_fixtures();
    if let Ok(extra) = std::env::var("GEMMA4C_EXTRA_FIXTURES") {
        dirs.extend(extra.split(':').filter(|s| !s.is_empty()).map(PathBuf::from));
    }
    dirs
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `gemma4c compile --target cpu` into a fresh directory.
fn compile(dir: &Path, extra: &[&str]) -> tempfile::TempDir {
    let out = tempfile::tempdir().expect("tempdir");
    let mut args = vec![
        "compile",
        "--model",
        path(dir),
        "--target",
        "cpu",
        "--out",
        path(out.path()),
    ];
    args.extend_from_slice(extra);
    let r = gemma4c(&args);
    assert_eq!(r.code, 0, "{}: compile failed: {}", dir.display(), r.stderr);
    assert!(
        out.path().join("kernels.ll").exists(),
        "compile --target cpu writes kernels.ll"
    );
    out
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
    let na: f64 = a.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// Runs `--plan OUT` (or `--model`) with the JIT and checks ids and logits against HF.
fn check_against_hf(dir: &Path, source: &[&str], extra: &[&str], what: &str) {
    let r = Reference::load(dir);
    let want = r.generated();
    let tmp = tempfile::tempdir().expect("tempdir");
    let npy = tmp.path().join("logits.npy");
    let mut more = vec!["--executor", "jit", "--logits-out", path(&npy)];
    more.extend_from_slice(extra);
    let out = run_ids(source, &r.prompt(), want.len(), &more);
    assert_eq!(out.code, 0, "{} ({what}): {}", dir.display(), out.stderr);
    let got: Vec<u32> = out.stdout.split_whitespace().map(|t| t.parse().expect("id")).collect();
    assert_eq!(got, want, "{} ({what}): greedy ids differ from HF", dir.display());
    let (shape, logits) = read_npy_f32(&npy).expect("logits.npy");
    let reference = &r.tensors["decode_logits"];
    assert_eq!(shape, reference.shape, "{}: logits shape", dir.display());
    let vocab = shape[1];
    for step in 0..shape[0] {
        let (a, b) = (
            &logits[step * vocab..(step + 1) * vocab],
            &reference.data[step * vocab..(step + 1) * vocab],
        );
        let d = max_abs_diff(a, b);
        assert!(
            d <= LOGIT_ATOL,
            "{} ({what}): step {step}: max |Δlogit| = {d}",
            dir.display()
        );
        let c = cosine(a, b);
        assert!(c >= MIN_COSINE, "{} ({what}): step {step}: cosine {c}", dir.display());
    }
}

#[test]
fn jit_plan_matches_hf_on_every_fixture() {
    for dir in all_fixtures() {
        let out = compile(&dir, &[]);
        check_against_hf(
            &dir,
            &["--plan", path(out.path()), "--model", path(&dir)],
            &[],
            "compiled plan",
        );
    }
}

#[test]
fn jit_run_model_compiles_in_memory_and_matches_hf() {
    for dir in all_fixtures() {
        check_against_hf(&dir, &["--model", path(&dir)], &[], "run --model");
        // Short prefill chunks: ring-buffer wrap of the sliding caches between calls.
        check_against_hf(
            &dir,
            &["--model", path(&dir)],
            &["--prefill-chunk", "5"],
            "prefill chunk 5",
        );
    }
}

#[test]
fn jit_unfused_plan_matches_hf() {
    // Every primitive kernel (add, mul, gelu, rope, kv_write, softcap, unfused MoE) runs here.
    for dir in all_fixtures() {
        let out = compile(&dir, &["--no-fuse"]);
        check_against_hf(
            &dir,
            &["--plan", path(out.path()), "--model", path(&dir)],
            &[],
            "unfused plan",
        );
    }
}

/// The JIT and the reference executor on the same plan, logits of every call.
#[test]
fn jit_matches_reference_executor_on_the_same_plan() {
    for dir in all_fixtures() {
        for chunk in [None, Some("3")] {
            let extra: Vec<&str> = chunk.map_or(vec![], |c| vec!["--prefill-chunk", c]);
            let out = compile(&dir, &extra);
            let plan: Plan =
                serde_json::from_str(&std::fs::read_to_string(out.path().join("plan.json")).expect("plan.json"))
                    .expect("valid plan");
            let ll = std::fs::read_to_string(out.path().join("kernels.ll")).expect("kernels.ll");
            let model = Model::open(&dir).expect("model");
            let mut reference = PlanSession::new(plan.clone(), &model).expect("reference session");
            let mut jit = JitSession::new(plan, &model, &ll, &JitOptions::default()).expect("jit session");
            let r = Reference::load(&dir);
            let mut feed = vec![r.prompt()];
            feed.extend(r.generated().iter().map(|&t| vec![t]));
            let mut worst = 0.0f32;
            for ids in &feed {
                let a = reference.forward(ids).expect("reference forward");
                let b = jit.forward(ids).expect("jit forward");
                worst = worst.max(max_abs_diff(&a, &b));
            }
            assert_eq!(jit.position(), reference.position());
            // Both are f32; only summation order differs (half the HF tolerance).
            assert!(
                worst <= 2.5e-3,
                "{} (chunk {chunk:?}): JIT vs reference max |Δlogit| = {worst}",
                dir.display()
            );
        }
    }
}

/// Rows are independent, so any split over threads gives bit-identical logits.
#[test]
fn jit_results_do_not_depend_on_the_thread_count() {
    let dir = fixture("tiny_moe");
    let r = Reference::load(&dir);
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut results = Vec::new();
    for threads in ["1", "3"] {
        let npy = tmp.path().join(format!("logits{threads}.npy"));
        let out = Command::new(env!("CARGO_BIN_EXE_gemma4c"))
            .env("GEMMA4C_THREADS", threads)
            // Split every launch, however small.
            .env("GEMMA4C_PARALLEL_BYTES", "0")
            .args(["run", "--model", path(&dir), "--prompt-ids", &ids_csv(&r.prompt())])
            .args(["--max-new-tokens", "6", "--output", "ids", "--logits-out", path(&npy)])
            .output()
            .expect("run gemma4c");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        results.push(std::fs::read(&npy).expect("logits"));
    }
    assert!(results[0] == results[1], "1 and 3 threads give different logits");
}

#[test]
fn kernels_ll_is_deterministic_and_matches_the_snapshot() {
    let dir = fixture("tiny_ple");
    let a = std::fs::read_to_string(compile(&dir, &[]).path().join("kernels.ll")).expect("kernels.ll");
    let b = std::fs::read_to_string(compile(&dir, &[]).path().join("kernels.ll")).expect("kernels.ll");
    assert!(a == b, "two compiles of one model give different kernels.ll");
    insta::with_settings!({ snapshot_path => "../snapshots", prepend_module_to_snapshot => true }, {
        insta::assert_snapshot!("tiny_ple_kernels_ll", a);
    });
}

#[test]
fn executor_flag_and_missing_kernels() {
    let dir = fixture("tiny_ple");
    let r = Reference::load(&dir);
    let out = compile(&dir, &[]);
    std::fs::remove_file(out.path().join("kernels.ll")).expect("remove kernels.ll");
    let plan = ["--plan", path(out.path()), "--model", path(&dir)];
    // Without kernels.ll the plan runs on the reference executor by default ...
    let ok = run_ids(&plan, &r.prompt(), 3, &[]);
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    // ... and asking for the JIT says what is missing.
    let bad = run_ids(&plan, &r.prompt(), 3, &["--executor", "jit"]);
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.contains("kernels.ll"), "{}", bad.stderr);
    // The reference executor on --model still works.
    let reference = run_ids(&["--model", path(&dir)], &r.prompt(), 3, &["--executor", "reference"]);
    assert_eq!(reference.code, 0, "{}", reference.stderr);
    assert_eq!(reference.stdout, ok.stdout);
}

#[test]
fn bench_reports_speed_and_bandwidth() {
    let dir = fixture("tiny_ple_bf16_mm");
    let out = gemma4c(&[
        "bench",
        "--model",
        path(&dir),
        "--tokens",
        "4",
        "--prompt-tokens",
        "16",
        "--threads",
        "2",
        "--json",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("bench --json prints JSON");
    for key in [
        "prefill_tok_s",
        "decode_tok_s",
        "weight_bytes_per_token",
        "effective_gb_s",
        "measured_bandwidth_gb_s",
    ] {
        let x = v[key].as_f64().unwrap_or(0.0);
        assert!(x > 0.0, "{key} = {x}");
    }
    assert_eq!(v["dtype"], "bf16");
}

/// Kernels for the released model shapes (from their configs, no weights):
/// every op kind at real widths lowers, prints and JIT-compiles.
#[test]
fn kernels_for_released_configs_jit_compile() {
    let configs = repo_root().join("tests/configs");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&configs)
        .expect("tests/configs")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    names.sort();
    assert!(!names.is_empty());
    for cfg in names {
        let out = tempfile::tempdir().expect("tempdir");
        let r = gemma4c(&[
            "compile",
            "--config",
            path(&cfg),
            "--target",
            "cpu",
            "--out",
            path(out.path()),
            "--max-context",
            "64",
            "--prefill-chunk",
            "16",
        ]);
        assert_eq!(r.code, 0, "{}: {}", cfg.display(), r.stderr);
        let ll = std::fs::read_to_string(out.path().join("kernels.ll")).expect("kernels.ll");
        let jit =
            gemma4c_runtime::jit::JitModule::compile(&ll, None, 2).unwrap_or_else(|e| panic!("{}: {e}", cfg.display()));
        assert!(jit.function("embedding_bf16_s1_h0").is_err());
        for line in ll.lines().filter(|l| l.starts_with("define void @")) {
            let name = &line["define void @".len()..line.find('(').expect("(")];
            jit.function(name).unwrap_or_else(|e| panic!("{}: {e}", cfg.display()));
        }
    }
}
