//! Config resolution details that transformers handles in a particular way
//! (each found by running gemma4c against transformers on varied checkpoints).

mod common;

use std::path::Path;

use common::*;
use gemma4c_frontend::Gemma4Config;
use serde_json::{json, Value};

fn parse(v: Value) -> Gemma4Config {
    Gemma4Config::from_json(&v, Path::new("config.json")).expect("valid config")
}

fn tiny_text_config() -> Value {
    let text = std::fs::read_to_string(fixture("tiny_ple").join("config.json")).expect("fixture config");
    serde_json::from_str(&text).expect("json")
}

fn multimodal(text: Value, outer: Value) -> Value {
    let mut top = outer.as_object().expect("object").clone();
    top.insert("model_type".into(), json!("gemma4"));
    top.insert("text_config".into(), text);
    Value::Object(top)
}

#[test]
fn multimodal_tie_flag_comes_from_the_outer_config() {
    let mut text = tiny_text_config();
    text["tie_word_embeddings"] = json!(true);
    assert!(!parse(multimodal(text.clone(), json!({"tie_word_embeddings": false}))).tie_word_embeddings);
    text["tie_word_embeddings"] = json!(false);
    assert!(parse(multimodal(text.clone(), json!({"tie_word_embeddings": true}))).tie_word_embeddings);
    // Absent on the outer config: transformers' default (tied).
    assert!(parse(multimodal(text, json!({}))).tie_word_embeddings);
}

#[test]
fn multimodal_placeholder_ids_default_like_transformers() {
    let cfg = parse(multimodal(tiny_text_config(), json!({})));
    assert_eq!(cfg.multimodal_placeholder_ids, vec![258_880, 258_884, 258_881]);
    let cfg = parse(multimodal(
        tiny_text_config(),
        json!({"image_token_id": 301, "video_token_id": null}),
    ));
    assert_eq!(cfg.multimodal_placeholder_ids, vec![301, 258_881]);
    assert!(
        parse(tiny_text_config()).multimodal_placeholder_ids.is_empty(),
        "text-only configs have none"
    );
}

#[test]
fn placeholder_ids_inside_the_vocabulary_are_embedded_as_pad() {
    let cfg = parse(multimodal(tiny_text_config(), json!({"image_token_id": 301})));
    let g = gemma4c_frontend::build(&cfg, &gemma4c_frontend::BuildOptions::new(&cfg, 1, 16, 1), &|_| {
        cfg.dtype
    })
    .expect("builds");
    let text = gemma4c_ir::print(&g);
    assert!(
        text.contains("replace_ids[ids=[301],with=0](%0)"),
        "{}",
        &text[..text.len().min(2000)]
    );
}

#[test]
fn default_rope_ignores_factor_and_legacy_type_key_is_read() {
    let mut v = tiny_text_config();
    v["rope_parameters"]["sliding_attention"]["factor"] = json!(4.0);
    let cfg = parse(v.clone());
    assert_eq!(
        cfg.rope_sliding.spec(32).factor,
        1.0,
        "transformers' default RoPE ignores `factor`"
    );
    let full = v["rope_parameters"]["full_attention"].as_object_mut().expect("object");
    let kind = full.remove("rope_type").expect("rope_type");
    full.insert("type".into(), kind);
    full.insert("factor".into(), json!(2.0));
    let cfg = parse(v);
    assert_eq!(cfg.rope_full.rope_type, "proportional");
    assert_eq!(
        cfg.rope_full.spec(64).factor,
        2.0,
        "proportional RoPE divides by `factor`"
    );
}

#[test]
fn a_stored_lm_head_is_used_even_when_the_config_says_tied() {
    // Copy a fixture and store an lm_head.weight that differs from the embedding:
    // transformers then keeps the two apart.
    let tmp = tempfile::tempdir().expect("tmp");
    for e in std::fs::read_dir(fixture("tiny_dense_kv")).expect("dir") {
        let p = e.expect("entry").path();
        std::fs::copy(&p, tmp.path().join(p.file_name().expect("name"))).expect("copy");
    }
    let path = tmp.path().join("model.safetensors");
    let bytes = std::fs::read(&path).expect("read");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("valid");
    let embed = st.tensor("model.embed_tokens.weight").expect("embedding");
    let head: Vec<u8> = embed
        .data()
        .chunks_exact(4)
        .flat_map(|b| (-f32::from_le_bytes([b[0], b[1], b[2], b[3]])).to_le_bytes())
        .collect();
    let mut tensors: Vec<(String, safetensors::tensor::TensorView)> = st.tensors();
    tensors.push((
        "lm_head.weight".into(),
        safetensors::tensor::TensorView::new(embed.dtype(), embed.shape().to_vec(), &head).expect("view"),
    ));
    std::fs::write(&path, safetensors::serialize(tensors, None).expect("serialize")).expect("write");
    let model = gemma4c_frontend::Model::open(tmp.path()).expect("opens");
    assert!(!model.config.tie_word_embeddings);
    // The head is the negated table and soft-capping is odd, so the first step's
    // logits are exactly the negated logits of the tied original.
    let r = Reference::load(&fixture("tiny_dense_kv"));
    let npy = tmp.path().join("logits.npy");
    let npy_arg = npy.to_str().expect("utf-8").to_string();
    let source = ["--model", tmp.path().to_str().expect("utf-8")];
    let out = run_ids(
        &source,
        &r.prompt(),
        1,
        &["--executor", "reference", "--logits-out", &npy_arg],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let (_, got) = gemma4c_runtime::npy::read_npy_f32(&npy).expect("npy");
    let want = &r.tensors["decode_logits"].data[..got.len()];
    let negated: Vec<f32> = want.iter().map(|x| -x).collect();
    let d = max_abs_diff(&got, &negated);
    assert!(d <= 5e-3, "logits are not the negated tied logits: max |Δ| = {d}");
}

#[test]
fn fingerprint_covers_the_model_not_the_file() {
    let a = tiny_text_config();
    let fp = parse(a.clone()).fingerprint();
    assert_eq!(fp.len(), 16, "{fp}");
    let elsewhere = Gemma4Config::from_json(&a, Path::new("/elsewhere/config.json")).expect("valid");
    assert_eq!(elsewhere.fingerprint(), fp, "the path is not part of the model");
    let mut eps = a.clone();
    eps["rms_norm_eps"] = json!(1e-5);
    assert_ne!(parse(eps).fingerprint(), fp, "rms_norm_eps shapes the model");
    let mut window = a;
    window["sliding_window"] = json!(7);
    assert_ne!(parse(window).fingerprint(), fp, "sliding_window shapes the model");
}
