//! `gemma4c compile` + `gemma4c run --plan`: fused plans give HF's tokens, fuse
//! at every site, and reject bad plans and targets clearly.

mod common;

use std::path::Path;

use common::*;
use gemma4c_frontend::Gemma4Config;
use serde_json::Value;

fn compile(model: &Path, out: &Path, extra: &[&str]) -> CliOutput {
    let mut args = vec![
        "compile",
        "--model",
        model.to_str().expect("utf-8"),
        "--target",
        "cpu",
        "--out",
        out.to_str().expect("utf-8"),
    ];
    args.extend_from_slice(extra);
    gemma4c(&args)
}

fn run_plan(plan: &Path, r: &Reference) -> CliOutput {
    let source = ["--plan", plan.to_str().expect("utf-8"), "--executor", "reference"];
    run_ids(&source, &r.prompt(), r.generated().len(), &[])
}

fn stats(out: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("stats.json")).expect("stats.json")).expect("json")
}

fn ids(r: &Reference) -> String {
    r.generated().iter().map(u32::to_string).collect::<Vec<_>>().join(" ")
}

#[test]
fn compiled_plans_reproduce_hf_tokens_fused_and_unfused() {
    for dir in fixtures() {
        let r = Reference::load(&dir);
        for (label, extra) in [
            ("fused", vec![]),
            ("unfused", vec!["--no-fuse"]),
            ("chunk3", vec!["--prefill-chunk", "3"]),
        ] {
            let tmp = tempfile::tempdir().expect("tempdir");
            let c = compile(&dir, tmp.path(), &extra);
            assert_eq!(c.code, 0, "{} {label}: {}", dir.display(), c.stderr);
            let out = run_plan(tmp.path(), &r);
            assert_eq!(out.code, 0, "{} {label}: {}", dir.display(), out.stderr);
            assert_eq!(out.stdout.trim(), ids(&r), "{} {label}", dir.display());
        }
    }
}

#[test]
fn fused_ops_appear_at_every_site() {
    for dir in fixtures() {
        let cfg = Gemma4Config::from_file(&dir.join("config.json")).expect("config");
        let tmp = tempfile::tempdir().expect("tempdir");
        let c = compile(&dir, tmp.path(), &[]);
        assert_eq!(c.code, 0, "{}", c.stderr);
        let s = stats(tmp.path());
        let ops = &s["ops"];
        let layers = cfg.num_hidden_layers as u64;
        let ple_layers = if cfg.ple.is_some() { layers } else { 0 };
        let cached = cfg.layers.iter().filter(|l| !l.shares_kv()).count() as u64;
        let moe = cfg.moe.is_some() as u64;
        let name = dir.display();
        assert_eq!(ops["gelu_mul"], layers + ple_layers, "{name}: MLP + PLE sites");
        // The attention sandwich (post-norm, residual add, pre-norm) in every layer;
        // post-norm + residual add after the MLP, after PLE, and for the MoE sum.
        assert_eq!(ops["norm_add_norm"], layers, "{name}");
        assert_eq!(ops["norm_add"], layers * (1 + moe) + ple_layers, "{name}");
        assert_eq!(
            ops.get("moe_router").and_then(Value::as_u64).unwrap_or(0),
            layers * moe,
            "{name}"
        );
        assert_eq!(ops["norm_rope"], layers, "{name}: q norm+rope in every layer");
        assert_eq!(
            ops["rope_kv_write"], cached,
            "{name}: one K write per cache-owning layer"
        );
        assert_eq!(
            ops["norm_kv_write"], cached,
            "{name}: one V write per cache-owning layer"
        );
        assert_eq!(ops["logits_head"], 1, "{name}");
        assert!(ops.get("gelu_tanh").is_none(), "{name}: no unfused gelu left");
        assert!(ops.get("kv_write").is_none() && ops.get("rope").is_none(), "{name}");
        let fused = s["launches_per_token"].as_u64().expect("number");
        let unfused = s["launches_per_token_unfused"].as_u64().expect("number");
        assert!(fused < unfused, "{name}: {fused} launches fused vs {unfused} unfused");
    }
}

#[test]
fn plan_json_is_deterministic() {
    let dir = fixture("tiny_ple");
    let (a, b) = (tempfile::tempdir().expect("tmp"), tempfile::tempdir().expect("tmp"));
    assert_eq!(compile(&dir, a.path(), &["--emit", "ir-before,ir-after"]).code, 0);
    assert_eq!(compile(&dir, b.path(), &["--emit", "ir-before,ir-after"]).code, 0);
    for f in ["plan.json", "ir-before.txt", "ir-after.txt"] {
        let x = std::fs::read(a.path().join(f)).expect(f);
        let y = std::fs::read(b.path().join(f)).expect(f);
        assert!(x == y, "{f} differs between two compiles");
    }
}

#[test]
fn released_configs_compile_from_config_alone() {
    for (file, layers) in [("gemma-4-e2b.json", 35u64), ("gemma-4-e4b.json", 42)] {
        let tmp = tempfile::tempdir().expect("tmp");
        let path = repo_root().join("tests/configs").join(file);
        let out = gemma4c(&[
            "compile",
            "--config",
            path.to_str().expect("utf-8"),
            "--target",
            "cpu",
            "--out",
            tmp.path().to_str().expect("utf-8"),
        ]);
        assert_eq!(out.code, 0, "{file}: {}", out.stderr);
        let s = stats(tmp.path());
        assert_eq!(
            s["ops"]["gelu_mul"].as_u64(),
            Some(2 * layers),
            "{file}: MLP + PLE in every layer"
        );
        assert!(s["launches_per_token"].as_u64() < s["launches_per_token_unfused"].as_u64());
    }
}

#[test]
fn unknown_target_is_a_clear_error() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = gemma4c(&[
        "compile",
        "--model",
        fixture("tiny_ple").to_str().expect("utf-8"),
        "--target",
        "tpu-v5",
        "--out",
        tmp.path().to_str().expect("utf-8"),
    ]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("unknown target `tpu-v5`") && out.stderr.contains("cpu"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("panicked"));
    // Every GPU target writes its kernels (tests/gpu_emit.rs).
    for (t, file) in [
        ("metal", "kernels.metal"),
        ("wgpu", "kernels.wgsl"),
        ("cuda-sm90", "kernels.cu"),
    ] {
        let out_dir = tmp.path().join(t);
        let out = gemma4c(&[
            "compile",
            "--model",
            fixture("tiny_ple").to_str().expect("utf-8"),
            "--target",
            t,
            "--out",
            out_dir.to_str().expect("utf-8"),
        ]);
        assert_eq!(out.code, 0, "{t}: {}", out.stderr);
        assert!(out_dir.join(file).exists(), "{t} writes {file}");
    }
}

#[test]
fn plan_from_a_different_model_is_rejected() {
    let tmp = tempfile::tempdir().expect("tmp");
    assert_eq!(compile(&fixture("tiny_ple"), tmp.path(), &[]).code, 0);
    let out = gemma4c(&[
        "run",
        "--plan",
        tmp.path().to_str().expect("utf-8"),
        "--model",
        fixture("tiny_moe").to_str().expect("utf-8"),
        "--prompt-ids",
        "2,17",
        "--output",
        "ids",
    ]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("different model"), "{}", out.stderr);
    assert!(!out.stderr.contains("panicked"));
}

#[test]
fn corrupt_plan_is_rejected() {
    let tmp = tempfile::tempdir().expect("tmp");
    assert_eq!(compile(&fixture("tiny_ple"), tmp.path(), &[]).code, 0);
    let plan = tmp.path().join("plan.json");
    let text = std::fs::read_to_string(&plan).expect("plan");
    std::fs::write(&plan, &text[..text.len() / 2]).expect("truncate");
    let out = gemma4c(&[
        "run",
        "--plan",
        tmp.path().to_str().expect("utf-8"),
        "--prompt-ids",
        "2,17",
        "--output",
        "ids",
    ]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("plan.json") && out.stderr.contains("changed since compile"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("panicked"));
}
