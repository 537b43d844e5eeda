//! GGUF parity: tiny Gemma 4 and Gemma 3 checkpoints converted by llama.cpp's
//! own convert_hf_to_gguf.py (f16) and quantized by llama.cpp (Q8_0, Q4_K_M),
//! run by gemma4c against transformers on the weights gguf-py dequantizes from
//! each file (tests/fixtures/gguf/*.expected.json, tools/make_gguf_fixtures.py).
//!
//! Tolerance 5e-3 on logits: gemma4c dequantizes bit-identically to gguf-py
//! (ir/tests/quant_gguf_py.rs), so the two runs compute with the same weights
//! and differ only in f32 summation order and tanh/exp implementations; the
//! measured difference is printed (4e-5 to 1.6e-4 on logits of magnitude ~10,
//! soft-capped at 30 for Gemma 4; the references are rounded to 1e-5), the
//! same 5e-3 the safetensors parity tests use, 30x above what is measured.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::{gemma4c, json_ids, repo_root};
use gemma4c_frontend::gguf::GgufFile;
use serde_json::Value;

const TOLERANCE: f32 = 5e-3;

/// GEMMA4C_GGUF_FIXTURES=DIR checks the files `tools/make_gguf_fixtures.py DIR
/// --checkpoint ...` made instead of the committed ones.
fn other_dir() -> Option<PathBuf> {
    std::env::var_os("GEMMA4C_GGUF_FIXTURES").map(PathBuf::from)
}

fn expected_files() -> Vec<PathBuf> {
    let dir = other_dir().unwrap_or_else(|| repo_root().join("tests/fixtures/gguf"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/fixtures/gguf")
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".expected.json"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_family_and_quant_kind_is_covered() {
    if other_dir().is_some() {
        return;
    }
    let names: Vec<String> = expected_files()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for family in ["gemma3", "gemma4"] {
        for kind in ["f16", "q8_0", "q4_k_m"] {
            let want = format!("tiny_{family}.{kind}.expected.json");
            assert!(names.contains(&want), "missing {want} in {names:?}");
        }
    }
    for kind in ["f16", "q4_k_m"] {
        let want = format!("tiny_gemma4_moe.{kind}.expected.json");
        assert!(names.contains(&want), "missing {want} in {names:?}");
    }
}

#[test]
fn files_hold_what_the_reference_says() {
    let mut all_types = BTreeMap::new();
    for path in expected_files() {
        let e: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let gguf = path.with_file_name(e["file"].as_str().unwrap());
        let bytes = std::fs::read(&gguf).unwrap();
        assert_eq!(
            gemma4c_runtime::artifact::sha256_hex(&bytes),
            e["sha256"].as_str().unwrap(),
            "{}: not the file the reference was made from",
            gguf.display()
        );
        let g = GgufFile::open(&gguf).unwrap();
        let mut types = BTreeMap::new();
        for t in &g.header.tensors {
            *types.entry(t.ggml_type.name().to_uppercase()).or_insert(0u64) += 1;
            *all_types.entry(t.ggml_type.name().to_uppercase()).or_insert(0u64) += 1;
        }
        let want: BTreeMap<String, u64> = e["element_types"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.to_uppercase(), v.as_u64().unwrap()))
            .collect();
        assert_eq!(types, want, "{}", gguf.display());

        // The GGUF tokenizer gives transformers' ids: the prompt (BOS added), then
        // text with runs of spaces, tabs, newlines, byte fallback and control tokens.
        let tok = gemma4c_runtime::gguf_tokenizer::from_gguf(&g).unwrap();
        let ids = tok.encode(e["prompt"].as_str().unwrap(), Some(2)).unwrap();
        assert_eq!(ids, json_ids(&e["prompt_ids"]), "{}: prompt ids", gguf.display());
        for case in e["tokenizer_cases"].as_array().unwrap() {
            let text = case[0].as_str().unwrap();
            let ids = tok.encode(text, None).unwrap();
            assert_eq!(ids, json_ids(&case[1]), "{}: ids of {text:?}", gguf.display());
            if !text.contains("<|turn>") {
                assert_eq!(tok.decode(&ids).unwrap(), text, "{}: decode", gguf.display());
            }
        }
    }
    // The block formats llama.cpp's Q4_K_M really writes for these shapes.
    for t in ["Q4_K", "Q6_K", "Q5_0", "Q8_0", "F16"] {
        if other_dir().is_some() {
            break;
        }
        assert!(all_types.contains_key(t), "no fixture holds {t}: {all_types:?}");
    }
}

#[test]
fn greedy_ids_and_logits_match_transformers_on_dequantized_weights() {
    let dir = tempfile::tempdir().unwrap();
    for path in expected_files() {
        let e: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let gguf = path.with_file_name(e["file"].as_str().unwrap());
        let want_ids = json_ids(&e["greedy_ids"]);
        let logits = dir.path().join("logits.npy");
        let n = want_ids.len().to_string();
        let out = gemma4c(&[
            "run",
            "--model",
            gguf.to_str().unwrap(),
            "--prompt",
            e["prompt"].as_str().unwrap(),
            "--max-new-tokens",
            &n,
            "--output",
            "ids",
            "--logits-out",
            logits.to_str().unwrap(),
            "--quiet",
        ]);
        assert_eq!(out.code, 0, "{}: {}", gguf.display(), out.stderr);
        let got: Vec<u32> = out.stdout.split_whitespace().map(|t| t.parse().unwrap()).collect();
        assert_eq!(got, want_ids, "{}: greedy ids differ from transformers", gguf.display());

        let (shape, values) = gemma4c_runtime::npy::read_npy_f32(&logits).unwrap();
        let steps = e["logits"].as_array().unwrap();
        assert_eq!(shape[0], steps.len(), "{}", gguf.display());
        let vocab = shape[1];
        let mut worst = 0f32;
        for (s, step) in steps.iter().enumerate() {
            let want: Vec<f32> = step
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            assert_eq!(want.len(), vocab, "{}", gguf.display());
            worst = worst.max(common::max_abs_diff(&values[s * vocab..(s + 1) * vocab], &want));
        }
        eprintln!("{}: max |logit - transformers| = {worst:.2e}", gguf.display());
        assert!(
            worst <= TOLERANCE,
            "{}: logits differ from transformers by {worst} (tolerance {TOLERANCE})",
            gguf.display()
        );
    }
}

/// gemma4c's quantizers rebuild llama.cpp's quantized fixtures byte for byte:
/// every Q8_0, Q4_0, Q4_K and Q6_K tensor of a Q8_0 or Q4_K_M file equals
/// gemma4c's quantization (`QuantFormat::quantize`, what `--quant` runs) of the
/// same tensor of the f16 file it was made from (llama.cpp's quantize widens
/// f16 to f32 and runs ggml's reference quantizers: no importance matrix). So
/// `--quant q4_k` on these weights holds exactly what these files hold, and
/// runs to the ids and logits the test above checks against transformers.
#[test]
fn gemma4c_quantizers_rebuild_llama_cpp_quantized_files() {
    let mut checked = BTreeMap::new();
    for path in expected_files() {
        let e: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let file = e["file"].as_str().unwrap();
        let Some(stem) = file
            .strip_suffix(".q4_k_m.gguf")
            .or_else(|| file.strip_suffix(".q8_0.gguf"))
        else {
            continue;
        };
        let quantized = GgufFile::open(&path.with_file_name(file)).unwrap();
        let Ok(source) = GgufFile::open(&path.with_file_name(format!("{stem}.f16.gguf"))) else {
            continue;
        };
        for t in &quantized.header.tensors {
            let gemma4c_frontend::gguf::GgmlType::Quant(q) = t.ggml_type else {
                continue;
            };
            if !gemma4c_ir::quantize::QUANTIZERS.contains(&q) {
                continue; // Q5_0: no quantizer in gemma4c
            }
            let values = source.dequantize(source.tensor(&t.name).unwrap()).unwrap();
            let ours = q.quantize(&values).unwrap();
            let theirs = quantized.bytes(t);
            let first = (0..ours.len()).find(|&i| ours.get(i) != theirs.get(i));
            assert!(
                ours.len() == theirs.len() && first.is_none(),
                "{file} `{}` ({q}): gemma4c's bytes differ from llama.cpp's at byte {first:?} of {}",
                t.name,
                theirs.len()
            );
            *checked.entry(q.name()).or_insert(0) += 1;
        }
    }
    eprintln!("tensors quantized byte-identically to llama.cpp: {checked:?}");
    if other_dir().is_none() {
        for q in ["q8_0", "q4_K", "q6_K"] {
            assert!(checked.contains_key(q), "no {q} tensor checked: {checked:?}");
        }
    }
}

/// The MoE Q4_K_M file's expert weights stay in their block format (read by
/// the MoE expert kernels, which dequantize them; the greedy test above runs
/// them against transformers), not dequantized to f32 at load.
#[test]
fn quantized_moe_experts_stay_quantized() {
    if other_dir().is_some() {
        return;
    }
    let file = repo_root().join("tests/fixtures/gguf/tiny_gemma4_moe.q4_k_m.gguf");
    let out = gemma4c(&["inspect", "--model", file.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("q5_0  layers.0.experts.gate_up_proj [4, 32, 64]"),
        "{}",
        out.stdout
    );
}
