//! `--quant`: tiny fixtures quantized at load, run by the JIT (dequantizing
//! inside its kernels) against the reference executor on the same quantized
//! weights (dequantized by `gemma4c_ir::quant`, bit-exact with gguf-py; the
//! kernels' dequantization is bit-exact with it too: runtime/tests/quant_kernels.rs).
//! The quantizers themselves match gguf-py (q8_0, q4_0) and llama.cpp (q4_K,
//! q6_K) byte for byte (ir/tests/quant_gguf_py.rs). The tiny fixtures' rows
//! are 128 or 256 wide, so q4_k/q6_k quantize only the 256-wide ones (the MLP
//! down projections) and keep the rest, saying so. tiny_moe's expert weights
//! are quantized too and dequantized inside the MoE expert kernels.

mod common;

use std::path::Path;

use common::{fixture, gemma4c, max_abs_diff, run_ids, Reference};
use gemma4c_runtime::npy::read_npy_f32;

fn ids_and_logits(source: &[&str], prompt: &[u32], extra: &[&str], npy: &Path) -> (String, Vec<f32>, String) {
    let mut args = extra.to_vec();
    let path = npy.to_str().unwrap();
    args.extend_from_slice(&["--logits-out", path, "--quiet"]);
    let out = run_ids(source, prompt, 12, &args);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let (_, logits) = read_npy_f32(npy).expect("logits npy");
    (out.stdout.trim().to_string(), logits, out.stderr)
}

#[test]
fn quantized_jit_matches_the_reference_on_the_same_quantized_weights() {
    let tmp = tempfile::tempdir().unwrap();
    // tiny_moe's expert rows are 32 and 128 wide: whole Q8_0/Q4_0 blocks,
    // not K-quant super-blocks of 256.
    let all = ["q8_0", "q4_0", "q4_k", "q6_k"];
    for (name, formats) in [
        ("tiny_ple", &all[..]),
        ("tiny_gemma3", &all[..]),
        ("tiny_moe", &all[..2]),
    ] {
        let dir = fixture(name);
        let d = dir.to_str().unwrap();
        let prompt = Reference::load(&dir).prompt();
        let (plain_ids, plain, _) = ids_and_logits(&["--model", d], &prompt, &[], &tmp.path().join("plain.npy"));
        for &q in formats {
            let npy = |e: &str| tmp.path().join(format!("{name}_{q}_{e}.npy"));
            let (jit_ids, jit, stderr) = ids_and_logits(&["--model", d], &prompt, &["--quant", q], &npy("jit"));
            assert!(stderr.contains("matmul weights quantized at load"), "{stderr}");
            if name == "tiny_moe" {
                // The experts are quantized (and dequantized inside the MoE kernels); the router is kept.
                let inspect = gemma4c(&["inspect", "--model", d, "--quant", q]);
                assert_eq!(inspect.code, 0, "{}", inspect.stderr);
                for line in [
                    format!("{q}  layers.0.experts.gate_up_proj"),
                    format!("{q}  layers.0.experts.down_proj"),
                ] {
                    assert!(inspect.stdout.contains(&line), "{}", inspect.stdout);
                }
                assert!(stderr.contains("MoE router x"), "{stderr}");
            }
            let (ref_ids, reference, _) = ids_and_logits(
                &["--model", d],
                &prompt,
                &["--quant", q, "--executor", "reference"],
                &npy("ref"),
            );
            assert_eq!(jit_ids, ref_ids, "{name} {q}: greedy ids");
            assert_eq!(jit_ids.split(' ').count(), 12);
            // Both f32 on identical weights; only summation order differs
            // (the tolerance of the unquantized JIT-vs-reference test).
            let worst = max_abs_diff(&jit, &reference);
            assert!(worst <= 2.5e-3, "{name} {q}: JIT vs reference max |Δlogit| = {worst}");
            // The weights really changed: the logits moved (and less for q8_0).
            let moved = max_abs_diff(&jit[..plain.len().min(jit.len())], &plain[..plain.len().min(jit.len())]);
            assert!(moved > 1e-4, "{name} {q}: quantization changed nothing ({moved})");
            eprintln!("{name} {q}: ids {jit_ids} (unquantized {plain_ids}); |Δ| vs reference {worst:.2e}, vs unquantized {moved:.2e}");
        }
    }
}

/// A plan compiled with --quant carries its formats; `run --plan` quantizes
/// the checkpoint the same way and gives the same ids as `run --model --quant`.
#[test]
fn compiled_quantized_plans_run_and_other_targets_refuse_them() {
    let dir = fixture("tiny_gemma3");
    let d = dir.to_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("plan");
    let o = out.to_str().unwrap();
    let c = gemma4c(&[
        "compile", "--model", d, "--target", "cpu", "--out", o, "--quant", "q8_0",
    ]);
    assert_eq!(c.code, 0, "{}", c.stderr);
    let plan = std::fs::read_to_string(out.join("plan.json")).unwrap();
    assert!(plan.contains("\"q8_0\""), "the plan names the format");
    let prompt = Reference::load(&dir).prompt();
    let a = run_ids(&["--plan", o], &prompt, 12, &["--quiet"]);
    let b = run_ids(&["--model", d], &prompt, 12, &["--quiet", "--quant", "q8_0"]);
    assert_eq!(a.code, 0, "{}", a.stderr);
    assert_eq!(a.stdout, b.stdout);

    let gpu = gemma4c(&[
        "compile",
        "--model",
        d,
        "--target",
        "cuda-sm90",
        "--out",
        o,
        "--quant",
        "q8_0",
    ]);
    assert_ne!(gpu.code, 0);
    assert!(gpu.stderr.contains("run only on --target cpu"), "{}", gpu.stderr);

    let k = gemma4c(&["run", "--model", d, "--prompt-ids", "2", "--quant", "q5_k"]);
    assert_ne!(k.code, 0);
    assert!(
        k.stderr
            .contains("--quant `q5_k` is not supported; expected one of q8_0, q4_0, q4_k, q6_k"),
        "{}",
        k.stderr
    );
}

/// The plan checker recomputes a block-quantized weight's size as
/// `rows * (cols / block) * block_bytes` (whole blocks only) and keeps block
/// formats to the cpu target, before anything is bound.
#[test]
fn quantized_plan_edits_are_refused_by_the_checker() {
    let dir = fixture("tiny_gemma3");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("plan");
    let o = out.to_str().unwrap();
    let c = gemma4c(&[
        "compile",
        "--model",
        dir.to_str().unwrap(),
        "--target",
        "cpu",
        "--out",
        o,
        "--quant",
        "q8_0",
    ]);
    assert_eq!(c.code, 0, "{}", c.stderr);
    let base: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("plan.json")).unwrap()).unwrap();
    let q = base["weights"]
        .as_array()
        .unwrap()
        .iter()
        .position(|w| w["dtype"] == "q8_0")
        .expect("a q8_0 weight");
    let check = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut v = base.clone();
        edit(&mut v);
        let plan: gemma4c_passes::plan::Plan = serde_json::from_value(v).expect("still a plan");
        plan.check().expect_err("edited plan accepted")
    };
    let unedited: gemma4c_passes::plan::Plan = serde_json::from_value(base.clone()).unwrap();
    unedited.check().expect("the compiled plan passes");
    let e = check(&|v| v["weights"][q]["shape"][1] = serde_json::json!(100));
    assert!(e.contains("not whole"), "{e}");
    let e = check(&|v| v["weights"][q]["dtype"] = serde_json::json!("q4_K"));
    assert!(e.contains("q4_K"), "{e}");
    let e = check(&|v| v["target"] = serde_json::json!("cuda-sm90"));
    assert!(e.contains("run only on the cpu target"), "{e}");
}

/// `--quant-embedding` quantizes the token embedding too (the gather and the
/// tied LM head then dequantize it in their kernels); the PLE table stays.
#[test]
fn quant_embedding_quantizes_the_tied_table() {
    let dir = fixture("tiny_ple");
    let d = dir.to_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let prompt = Reference::load(&dir).prompt();
    let flags = ["--quant", "q8_0", "--quant-embedding"];
    let (jit_ids, jit, stderr) = ids_and_logits(&["--model", d], &prompt, &flags, &tmp.path().join("jit.npy"));
    assert!(!stderr.contains("embedding table"), "{stderr}");
    let mut reference_flags = flags.to_vec();
    reference_flags.extend(["--executor", "reference"]);
    let (ref_ids, reference, _) =
        ids_and_logits(&["--model", d], &prompt, &reference_flags, &tmp.path().join("ref.npy"));
    assert_eq!(jit_ids, ref_ids, "greedy ids");
    let worst = max_abs_diff(&jit, &reference);
    assert!(worst <= 2.5e-3, "JIT vs reference max |Δlogit| = {worst}");
    let inspect = gemma4c(&["inspect", "--model", d, "--quant", "q8_0", "--quant-embedding"]);
    assert_eq!(inspect.code, 0, "{}", inspect.stderr);
    assert!(
        inspect.stdout.contains("q8_0  embed_tokens.weight"),
        "{}",
        inspect.stdout
    );
    assert!(inspect.stdout.contains("per_layer"), "{}", inspect.stdout);
    let alone = gemma4c(&["inspect", "--model", d, "--quant-embedding"]);
    assert_ne!(alone.code, 0, "--quant-embedding without --quant is refused");
}
