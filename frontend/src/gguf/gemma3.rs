//! Gemma 3 config from GGUF metadata (`general.architecture = gemma3`, keys
//! `gemma3.*`), as llama.cpp reads them (`src/models/gemma3.cpp`).
//!
//! llama.cpp's converter (`Gemma3Model`) stores every Gemma 3
//! `*norm.weight` as `1 + w` (transformers' GGUF loader subtracts the 1
//! again), which is exactly the scale the graph's RMSNorm multiplies by, so
//! GGUF norm weights are used as stored.
//!
//! What a Gemma 3 GGUF cannot say, and how it is read: `query_pre_attn_scalar`
//! (llama.cpp scales by `head_dim^-0.5`, except the 62-layer 27B); the layer
//! pattern when `attention.sliding_window_pattern` is absent (every 6th layer
//! full); RoPE scaling applies to full layers only (transformers' Gemma 3).

use gemma4c_ir::DType;

use super::gemma::ArchMeta;
use crate::config::{Family, Gemma4Config, LayerType, RopeParams};
use crate::error::FrontendError;
use crate::gemma3_config::uniform_layers;
use crate::gguf::GgufFile;

pub(crate) fn config(g: &GgufFile) -> Result<Gemma4Config, FrontendError> {
    let m = ArchMeta { g, arch: "gemma3" };
    let hidden_size = m.positive("embedding_length")?;
    let num_hidden_layers = m.positive("block_count")?;
    if num_hidden_layers > crate::bounds::MAX_LAYERS {
        return Err(m.bad(&m.key("block_count"), format!("{num_hidden_layers} layers is too many")));
    }
    let num_attention_heads = m.positive("attention.head_count")?;
    let num_kv_heads = m.positive("attention.head_count_kv")?;
    let intermediate_size = m.positive("feed_forward_length")?;
    let head_dim = g.usize_or(&m.key("attention.key_length"), hidden_size / num_attention_heads)?;
    if head_dim == 0 || head_dim % 2 != 0 || num_attention_heads % num_kv_heads != 0 {
        return Err(m.bad(
            &m.key("attention.key_length"),
            format!(
                "head_dim {head_dim} must be positive and even, and head_count_kv {num_kv_heads} must divide head_count {num_attention_heads}"
            ),
        ));
    }
    let value_length = g.usize_or(&m.key("attention.value_length"), head_dim)?;
    if value_length != head_dim {
        return Err(m.bad(
            &m.key("attention.value_length"),
            format!("{value_length} differs from key_length {head_dim}"),
        ));
    }
    let sliding_window = g.usize_or(&m.key("attention.sliding_window"), 4096)?.max(1);
    let layers = uniform_layers(
        &layer_types(&m, num_hidden_layers)?,
        head_dim,
        num_kv_heads,
        intermediate_size,
    );
    let scaling = g
        .meta(&m.key("rope.scaling.type"))
        .and_then(|v| v.as_str())
        .unwrap_or("none");
    let factor = match scaling {
        "none" => 1.0,
        "linear" => m.positive_f64_or("rope.scaling.factor", 1.0)?,
        other => {
            return Err(m.bad(
                &m.key("rope.scaling.type"),
                format!("`{other}` is not supported (expected `linear` or none)"),
            ))
        }
    };
    let rope_full = RopeParams {
        rope_type: if scaling == "linear" { "linear" } else { "default" }.into(),
        theta: m.positive_f64_or("rope.freq_base", 1_000_000.0)?,
        partial_rotary_factor: 1.0,
        factor,
    };
    // transformers' `rope_local_base_freq` default when the file has no value.
    let rope_sliding = RopeParams {
        rope_type: "default".into(),
        theta: m.positive_f64_or("rope.freq_base_swa", 10_000.0)?,
        partial_rotary_factor: 1.0,
        factor: 1.0,
    };
    // llama.cpp scales scores by 1/sqrt(head_dim), except for the 27B (62 layers)
    // whose `query_pre_attn_scalar` is hidden_size / heads.
    let query_pre_attn_scalar = if num_hidden_layers == 62 {
        hidden_size / num_attention_heads
    } else {
        head_dim
    };
    let vocab_size = m.tensor_shape("token_embd.weight")?.first().copied().unwrap_or(0);
    let softcap = g.f64_or(&m.key("final_logit_softcapping"), 0.0)?;
    Ok(Gemma4Config {
        path: g.path.clone(),
        family: Family::Gemma3,
        attention_scale: (query_pre_attn_scalar as f64).powf(-0.5) as f32,
        vocab_size,
        hidden_size,
        num_hidden_layers,
        num_attention_heads,
        intermediate_size,
        layers,
        sliding_window,
        rms_norm_eps: m.rms_norm_eps()?,
        final_logit_softcapping: (softcap.is_finite() && softcap > 0.0).then_some(softcap as f32),
        max_position_embeddings: m.positive_or("context_length", 131_072)?,
        tie_word_embeddings: g.tensor("output.weight").is_none(),
        multimodal_placeholder_ids: Vec::new(),
        num_kv_shared_layers: 0,
        use_double_wide_mlp: false,
        ple: None,
        moe: None,
        rope_sliding,
        rope_full,
        // Declared dtype for config-only uses (size bounds, `inspect`, `ir`); each tensor keeps
        // the type the file stores it in (`WeightStore::from_gguf`).
        dtype: DType::F32,
        bos_token_id: m.token_id("bos_token_id", 2)?,
        pad_token_id: m.token_id("padding_token_id", 0)?,
        eos_token_ids: m.eos_ids(&["<end_of_turn>"])?,
    })
}

/// `attention.sliding_window_pattern`: one bool per layer (true = sliding),
/// or a period n (every n-th layer full); absent, llama.cpp's period 6.
fn layer_types(m: &ArchMeta, n: usize) -> Result<Vec<LayerType>, FrontendError> {
    let key = m.key("attention.sliding_window_pattern");
    let period = |p: usize| {
        (0..n)
            .map(|i| {
                if (i + 1) % p == 0 {
                    LayerType::Full
                } else {
                    LayerType::Sliding
                }
            })
            .collect()
    };
    match m.g.meta(&key) {
        None => Ok(period(6)),
        Some(v) => match (v.as_array(), v.as_u64()) {
            (Some(items), _) => super::gemma4::sliding_flags(m, &key, items, n),
            (None, Some(p)) if p > 0 => Ok(period(p as usize)),
            _ => Err(m.bad(
                &key,
                format!("is {}; expected one bool per layer or a positive period", v.kind()),
            )),
        },
    }
}
