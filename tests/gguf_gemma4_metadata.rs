//! Gemma 4 GGUF metadata and tensors that are missing or odd: the llama.cpp
//! fixture (tests/fixtures/gguf/tiny_gemma4.f16.gguf) rewritten with one edit
//! each must give an error naming the key or tensor, or (for a full layer
//! without `attn_v`) read as transformers' K=V attention.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::repo_root;
use gemma4c_frontend::gguf::write::GgufWriter;
use gemma4c_frontend::gguf::{GgmlType, GgufFile, MetaArray, MetaValue};
use gemma4c_frontend::Model;

/// (name, row-major shape, ggml type id, stored bytes).
type Tensors = Vec<(String, Vec<usize>, u32, Vec<u8>)>;
/// One edit of the fixture's metadata and tensors.
type Edit = Box<dyn Fn(&mut BTreeMap<String, MetaValue>, &mut Tensors)>;

fn fixture() -> PathBuf {
    repo_root().join("tests/fixtures/gguf/tiny_gemma4.f16.gguf")
}

/// The fixture with `edit` applied to its metadata and tensors, written to a temp file.
fn edited(edit: impl Fn(&mut BTreeMap<String, MetaValue>, &mut Tensors)) -> (tempfile::TempDir, PathBuf) {
    let g = GgufFile::open(&fixture()).unwrap();
    let mut meta = g.header.metadata.clone();
    let mut tensors: Tensors = g
        .header
        .tensors
        .iter()
        .map(|t| {
            let id = match t.ggml_type {
                GgmlType::F32 => 0,
                GgmlType::F16 => 1,
                other => panic!("the f16 fixture holds only f32/f16, not {}", other.name()),
            };
            (t.name.clone(), t.shape(), id, g.bytes(t).to_vec())
        })
        .collect();
    edit(&mut meta, &mut tensors);
    let mut w = GgufWriter::new();
    for (k, v) in meta {
        w.meta(&k, v);
    }
    for (name, shape, id, data) in tensors {
        w.tensor(&name, &shape, id, data);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edited.gguf");
    std::fs::write(&path, w.to_bytes()).unwrap();
    (dir, path)
}

fn error_of(edit: impl Fn(&mut BTreeMap<String, MetaValue>, &mut Tensors)) -> String {
    let (_dir, path) = edited(edit);
    match Model::open(&path) {
        Ok(_) => panic!("the edited file was accepted"),
        Err(e) => e.to_string(),
    }
}

fn drop_tensor(tensors: &mut Tensors, name: &str) {
    let before = tensors.len();
    tensors.retain(|t| t.0 != name);
    assert_eq!(tensors.len() + 1, before, "{name} is in the fixture");
}

fn bools(v: &[bool]) -> MetaValue {
    MetaValue::Array(MetaArray {
        elem_type: gemma4c_frontend::gguf::type_id::BOOL,
        items: v.iter().map(|&b| MetaValue::Bool(b)).collect(),
    })
}

fn u32s(v: &[u32]) -> MetaValue {
    MetaValue::Array(MetaArray {
        elem_type: gemma4c_frontend::gguf::type_id::U32,
        items: v.iter().map(|&x| MetaValue::U32(x)).collect(),
    })
}

#[test]
fn the_fixture_reads_as_its_transformers_config() {
    let m = Model::open(&fixture()).unwrap();
    let c = &m.config;
    assert_eq!((c.hidden_size, c.num_hidden_layers, c.num_attention_heads), (64, 4, 2));
    let table: Vec<_> = c
        .layers
        .iter()
        .map(|l| (l.head_dim, l.num_kv_heads, l.kv_source, l.mlp_width, l.k_eq_v))
        .collect();
    assert_eq!(
        table,
        [
            (16, 1, 0, 64, false),
            (32, 1, 1, 64, false),
            (16, 1, 0, 128, false),
            (32, 1, 1, 128, false)
        ]
    );
    assert_eq!(c.ple.as_ref().map(|p| (p.hidden, p.vocab)), Some((8, 512)));
    assert_eq!(
        c.rope_full.spec(32).rotated_pairs,
        4,
        "partial_rotary_factor 0.25 of 32"
    );
    assert_eq!(c.rope_sliding.theta, 10_000.0);
    assert_eq!(c.rope_full.theta, 1_000_000.0);
    assert_eq!(c.final_logit_softcapping, Some(30.0));
    assert_eq!((c.sliding_window, c.num_kv_shared_layers), (4, 2));
    assert!(c.tie_word_embeddings && c.use_double_wide_mlp && c.moe.is_none());
}

#[test]
fn the_moe_fixture_reads_as_its_transformers_config() {
    let m = Model::open(&repo_root().join("tests/fixtures/gguf/tiny_gemma4_moe.q4_k_m.gguf")).unwrap();
    let c = &m.config;
    let moe = c.moe.as_ref().expect("MoE");
    assert_eq!((moe.num_experts, moe.top_k, moe.intermediate_size), (4, 2, 16));
    let table: Vec<_> = c
        .layers
        .iter()
        .map(|l| (l.head_dim, l.num_kv_heads, l.k_eq_v))
        .collect();
    // K=V on the full layer, with its one global KV head (a per-layer head_count_kv array).
    assert_eq!(table, [(16, 2, false), (16, 2, false), (32, 1, true)]);
    assert!(c.ple.is_none() && c.num_kv_shared_layers == 0);
}

#[test]
fn missing_or_odd_keys_are_named() {
    let cases: Vec<(&str, Edit)> = vec![
        (
            "gemma4.attention.key_length_swa",
            Box::new(|m, _| {
                m.remove("gemma4.attention.key_length_swa");
            }),
        ),
        (
            "gemma4.attention.sliding_window_pattern",
            Box::new(|m, _| {
                m.remove("gemma4.attention.sliding_window_pattern");
            }),
        ),
        (
            "gemma4.attention.sliding_window_pattern",
            Box::new(|m, _| {
                m.insert("gemma4.attention.sliding_window_pattern".into(), bools(&[true, false]));
            }),
        ),
        (
            "gemma4.attention.head_count_kv",
            Box::new(|m, _| {
                m.insert("gemma4.attention.head_count_kv".into(), u32s(&[1, 3, 1, 3]));
            }),
        ),
        (
            "gemma4.feed_forward_length",
            Box::new(|m, _| {
                m.insert("gemma4.feed_forward_length".into(), u32s(&[64, 64]));
            }),
        ),
        (
            "gemma4.attention.value_length",
            Box::new(|m, _| {
                m.insert("gemma4.attention.value_length".into(), MetaValue::U32(16));
            }),
        ),
        (
            "gemma4.rope.dimension_count_swa",
            Box::new(|m, _| {
                m.insert("gemma4.rope.dimension_count_swa".into(), MetaValue::U32(8));
            }),
        ),
        (
            "gemma4.final_logit_softcapping",
            Box::new(|m, _| {
                m.insert("gemma4.final_logit_softcapping".into(), MetaValue::F32(0.0));
            }),
        ),
        (
            "gemma4.embedding_length_per_layer_input",
            Box::new(|m, _| {
                m.remove("gemma4.embedding_length_per_layer_input");
            }),
        ),
        (
            "gemma4.attention.shared_kv_layers",
            Box::new(|m, _| {
                m.insert("gemma4.attention.shared_kv_layers".into(), MetaValue::U32(4));
            }),
        ),
        (
            "blk.0.ffn_gate_inp.weight",
            Box::new(|m, _| {
                m.insert("gemma4.expert_count".into(), MetaValue::U32(4));
            }),
        ),
        (
            "gemma4.rope.scaling.type",
            Box::new(|m, _| {
                m.insert("gemma4.rope.scaling.type".into(), MetaValue::String("yarn".into()));
            }),
        ),
        (
            "gemma4.context_length",
            Box::new(|m, _| {
                m.insert("gemma4.context_length".into(), MetaValue::U32(0));
            }),
        ),
        (
            "general.architecture",
            Box::new(|m, _| {
                m.insert("general.architecture".into(), MetaValue::String("llama".into()));
            }),
        ),
    ];
    for (key, edit) in cases {
        let e = error_of(edit);
        assert!(e.contains(key), "the error should name `{key}`: {e}");
    }
}

#[test]
fn missing_or_odd_tensors_are_named() {
    let e = error_of(|_, t| drop_tensor(t, "rope_freqs.weight"));
    assert!(e.contains("rope_freqs.weight") && e.contains("missing"), "{e}");

    // A rope_freqs that is not 1.0 then 1e30 is not proportional RoPE.
    let e = error_of(|_, t| {
        let r = t.iter_mut().find(|t| t.0 == "rope_freqs.weight").unwrap();
        r.3[8..12].copy_from_slice(&0.5f32.to_le_bytes());
    });
    assert!(e.contains("rope_freqs.weight") && e.contains("entry 2"), "{e}");

    let e = error_of(|_, t| drop_tensor(t, "blk.0.attn_v.weight"));
    assert!(e.contains("blk.0.attn_v.weight"), "{e}");

    let e = error_of(|_, t| drop_tensor(t, "blk.2.attn_q.weight"));
    assert!(e.contains("blk.2.attn_q.weight"), "{e}");

    let e = error_of(|_, t| drop_tensor(t, "blk.3.layer_output_scale.weight"));
    assert!(e.contains("blk.3.layer_output_scale.weight"), "{e}");

    let e = error_of(|_, t| drop_tensor(t, "per_layer_token_embd.weight"));
    assert!(e.contains("per_layer_token_embd.weight"), "{e}");

    let e = error_of(|_, t| {
        let q = t.iter_mut().find(|t| t.0 == "blk.1.attn_q.weight").unwrap();
        q.1 = vec![32, 64];
        q.3.truncate(32 * 64 * 2);
    });
    assert!(
        e.contains("layers.1.self_attn.q_proj.weight") && e.contains("[32, 64]"),
        "{e}"
    );
}

#[test]
fn a_full_layer_without_attn_v_uses_k_as_v() {
    let (_dir, path) = edited(|_, t| drop_tensor(t, "blk.1.attn_v.weight"));
    let m = Model::open(&path).unwrap();
    let k_eq_v: Vec<bool> = m.config.layers.iter().map(|l| l.k_eq_v).collect();
    assert_eq!(k_eq_v, [false, true, false, false]);
}
