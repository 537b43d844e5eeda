//! Bad input gives a clear error naming the file, tensor or field and what was
//! expected, a non-zero exit, and never a panic.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

/// A writable copy of the tiny PLE fixture.
fn copy_fixture() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dst = tmp.path().join("model");
    std::fs::create_dir(&dst).expect("mkdir");
    for entry in std::fs::read_dir(fixture("tiny_ple")).expect("fixture") {
        let p = entry.expect("entry").path();
        std::fs::copy(&p, dst.join(p.file_name().expect("name"))).expect("copy");
    }
    (tmp, dst)
}

fn run_ids(dir: &Path, ids: &str, new_tokens: &str) -> CliOutput {
    gemma4c(&[
        "run",
        "--model",
        dir.to_str().expect("utf-8"),
        "--prompt-ids",
        ids,
        "--max-new-tokens",
        new_tokens,
        "--output",
        "ids",
    ])
}

fn assert_clean_error(out: &CliOutput, needles: &[&str]) {
    assert_ne!(out.code, 0, "expected failure, got stdout {}", out.stdout);
    assert!(
        !out.stderr.contains("panicked"),
        "panic instead of an error:\n{}",
        out.stderr
    );
    for n in needles {
        assert!(out.stderr.contains(n), "error should mention `{n}`:\n{}", out.stderr);
    }
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) {
    let path = dir.join("config.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
    edit(v.as_object_mut().expect("object"));
    std::fs::write(&path, serde_json::to_string_pretty(&v).expect("json")).expect("write");
}

/// Rewrites model.safetensors with `edit` applied to (name, dtype, shape, bytes).
fn edit_tensors(dir: &Path, edit: impl Fn(&str, Dtype, Vec<usize>, Vec<u8>) -> Option<(Dtype, Vec<usize>, Vec<u8>)>) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).expect("read");
    let st = SafeTensors::deserialize(&bytes).expect("valid");
    let mut owned = Vec::new();
    for (name, view) in st.tensors() {
        if let Some((dtype, shape, data)) = edit(&name, view.dtype(), view.shape().to_vec(), view.data().to_vec()) {
            owned.push((name, dtype, shape, data));
        }
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = owned
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).expect("view"),
            )
        })
        .collect();
    let out = safetensors::serialize(views, None).expect("serialize");
    std::fs::write(&path, out).expect("write");
}

const IDS: &str = "2,17,301";

#[test]
fn the_unmodified_copy_runs() {
    let (_t, dir) = copy_fixture();
    let out = run_ids(&dir, IDS, "2");
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[test]
fn missing_safetensors() {
    let (_t, dir) = copy_fixture();
    std::fs::remove_file(dir.join("model.safetensors")).expect("rm");
    assert_clean_error(&run_ids(&dir, IDS, "2"), &["model.safetensors"]);
}

#[test]
fn truncated_safetensors() {
    let (_t, dir) = copy_fixture();
    let path = dir.join("model.safetensors");
    let len = std::fs::metadata(&path).expect("meta").len();
    let f = std::fs::OpenOptions::new().write(true).open(&path).expect("open");
    f.set_len(len / 2).expect("truncate");
    assert_clean_error(&run_ids(&dir, IDS, "2"), &["model.safetensors", "safetensors"]);
}

#[test]
fn missing_tensor() {
    let (_t, dir) = copy_fixture();
    edit_tensors(&dir, |name, d, s, b| {
        (!name.ends_with("layers.2.self_attn.q_norm.weight")).then_some((d, s, b))
    });
    assert_clean_error(
        &run_ids(&dir, IDS, "2"),
        &["layers.2.self_attn.q_norm.weight", "missing"],
    );
}

#[test]
fn tensor_with_wrong_shape() {
    let (_t, dir) = copy_fixture();
    edit_tensors(&dir, |name, d, mut s, b| {
        if name.ends_with("layers.1.mlp.up_proj.weight") {
            s.swap(0, 1);
        }
        Some((d, s, b))
    });
    assert_clean_error(
        &run_ids(&dir, IDS, "2"),
        &["model.safetensors", "layers.1.mlp.up_proj.weight", "expected shape"],
    );
}

#[test]
fn tensor_with_wrong_dtype() {
    let (_t, dir) = copy_fixture();
    edit_tensors(&dir, |name, d, s, b| {
        if name.ends_with("norm.weight") && name.starts_with("model.norm") {
            Some((Dtype::I32, s, b))
        } else {
            Some((d, s, b))
        }
    });
    assert_clean_error(&run_ids(&dir, IDS, "2"), &["norm.weight", "i32"]);
}

#[test]
fn missing_config_field() {
    let (_t, dir) = copy_fixture();
    edit_config(&dir, |c| {
        c.remove("hidden_size");
    });
    assert_clean_error(&run_ids(&dir, IDS, "2"), &["config.json", "hidden_size", "missing"]);
}

#[test]
fn config_field_with_wrong_type() {
    let (_t, dir) = copy_fixture();
    edit_config(&dir, |c| {
        c.insert("num_attention_heads".into(), Value::String("four".into()));
    });
    assert_clean_error(
        &run_ids(&dir, IDS, "2"),
        &["config.json", "num_attention_heads", "integer"],
    );
}

#[test]
fn layer_types_length_mismatch() {
    let (_t, dir) = copy_fixture();
    edit_config(&dir, |c| {
        if let Some(Value::Array(a)) = c.get_mut("layer_types") {
            a.pop();
        }
    });
    assert_clean_error(
        &run_ids(&dir, IDS, "2"),
        &["config.json", "layer_types", "num_hidden_layers"],
    );
}

#[test]
fn unknown_model_type() {
    let (_t, dir) = copy_fixture();
    edit_config(&dir, |c| {
        c.insert("model_type".into(), Value::String("llama".into()));
    });
    assert_clean_error(&run_ids(&dir, IDS, "2"), &["config.json", "unknown model_type `llama`"]);
}

#[test]
fn token_id_outside_vocabulary() {
    let (_t, dir) = copy_fixture();
    assert_clean_error(&run_ids(&dir, "2,17,600", "2"), &["token id 600", "vocab"]);
}

#[test]
fn context_beyond_max_position_embeddings() {
    let (_t, dir) = copy_fixture();
    edit_config(&dir, |c| {
        c.insert("max_position_embeddings".into(), Value::from(8));
    });
    assert_clean_error(&run_ids(&dir, IDS, "6"), &["max_position_embeddings"]);
    // A context of no tokens is refused when the config is read, by `inspect` too.
    edit_config(&dir, |c| {
        c.insert("max_position_embeddings".into(), Value::from(0));
    });
    let inspect = gemma4c(&["inspect", "--model", dir.to_str().unwrap()]);
    assert_clean_error(
        &inspect,
        &["config.json", "max_position_embeddings", "must be positive"],
    );
}

#[test]
fn quant_with_a_config_alone_is_refused() {
    // --config has no weights to quantize: the flag would be ignored, so it is refused.
    let config = fixture("tiny_ple").join("config.json");
    let out = tempfile::tempdir().unwrap();
    let o = gemma4c(&[
        "compile",
        "--config",
        config.to_str().unwrap(),
        "--quant",
        "q8_0",
        "--target",
        "cpu",
        "--out",
        out.path().join("plan").to_str().unwrap(),
    ]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(
        o.stderr.contains("--quant") && o.stderr.contains("--config"),
        "{}",
        o.stderr
    );
}

#[test]
fn model_directory_does_not_exist() {
    let out = run_ids(Path::new("/nonexistent/gemma"), IDS, "2");
    assert_clean_error(&out, &["/nonexistent/gemma"]);
}

#[test]
fn bad_sampling_flags() {
    let (_t, dir) = copy_fixture();
    let out = gemma4c(&[
        "run",
        "--model",
        dir.to_str().expect("utf-8"),
        "--prompt-ids",
        IDS,
        "--temperature",
        "0.7",
        "--top-p",
        "1.5",
        "--output",
        "ids",
    ]);
    assert_clean_error(&out, &["--top-p"]);
}
