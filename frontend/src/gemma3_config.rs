//! Gemma 3 text config: Hugging Face `config.json` (flat `gemma3_text`, or the
//! multimodal `gemma3` with `text_config`) resolved as transformers'
//! `Gemma3TextConfig` does, into the shared config type with
//! `family = Gemma3`.
//!
//! Gemma 3 against Gemma 4: every layer has the same head_dim and KV heads, no
//! PLE, MoE or KV sharing; scores are scaled by `query_pre_attn_scalar^-0.5`;
//! both layer types use default RoPE (`rope_local_base_freq` on sliding layers,
//! `rope_theta` with optional linear scaling on full ones); RMSNorm scales by
//! `1 + w` (the weight store folds the 1 in at load, see `model.rs`).

use serde::de::IgnoredAny;
use serde::Deserialize;

use crate::config::{
    is_positive, Common, Family, Gemma4Config, LayerConfig, LayerType, RopeEntry, RopeParams, RopeTable,
};
use crate::error::FrontendError;
use crate::fields::{size, At, Size};

/// The Gemma 3 text config keys, with transformers' defaults.
#[derive(Deserialize)]
pub(crate) struct Gemma3Keys {
    #[serde(default = "size::<262_208>")]
    vocab_size: Size,
    hidden_size: Size,
    num_hidden_layers: Size,
    num_attention_heads: Size,
    num_key_value_heads: Size,
    #[serde(default = "size::<256>")]
    head_dim: Size,
    intermediate_size: Size,
    #[serde(default)]
    use_bidirectional_attention: bool,
    attn_logit_softcapping: Option<IgnoredAny>,
    #[serde(default = "size::<4096>")]
    sliding_window: Size,
    #[serde(default = "size::<6>")]
    sliding_window_pattern: Size,
    #[serde(default = "query_pre_attn_scalar")]
    query_pre_attn_scalar: f64,
    rope_parameters: Option<RopeTable>,
    /// Legacy: full layers' scaling, `rope_theta` and `rope_local_base_freq` their bases.
    rope_scaling: Option<RopeEntry>,
    #[serde(default = "full_theta")]
    rope_theta: f64,
    #[serde(default = "sliding_theta")]
    rope_local_base_freq: f64,
}

fn query_pre_attn_scalar() -> f64 {
    256.0
}

fn full_theta() -> f64 {
    1_000_000.0
}

fn sliding_theta() -> f64 {
    10_000.0
}

pub(crate) fn resolve(k: Gemma3Keys, common: Common, f: At) -> Result<Gemma4Config, FrontendError> {
    let positive = |key: &str, v: Size| {
        if v.0 == 0 {
            Err(f.err(key, "must be positive"))
        } else {
            Ok(v.0)
        }
    };
    let vocab_size = positive("vocab_size", k.vocab_size)?;
    let hidden_size = positive("hidden_size", k.hidden_size)?;
    let num_hidden_layers = positive("num_hidden_layers", k.num_hidden_layers)?;
    let num_attention_heads = positive("num_attention_heads", k.num_attention_heads)?;
    let num_kv_heads = positive("num_key_value_heads", k.num_key_value_heads)?;
    let head_dim = positive("head_dim", k.head_dim)?;
    let intermediate_size = positive("intermediate_size", k.intermediate_size)?;
    if head_dim % 2 != 0 {
        return Err(f.err("head_dim", format!("{head_dim} must be even (RoPE rotates pairs)")));
    }
    if num_attention_heads % num_kv_heads != 0 {
        return Err(f.err(
            "num_key_value_heads",
            format!("{num_kv_heads} must divide num_attention_heads = {num_attention_heads}"),
        ));
    }
    common.check(f, "Gemma 3")?;
    if k.use_bidirectional_attention {
        return Err(f.err("use_bidirectional_attention", "non-causal attention is not supported"));
    }
    if k.attn_logit_softcapping.is_some() {
        return Err(f.err(
            "attn_logit_softcapping",
            "attention-score soft-capping is not supported",
        ));
    }
    let sliding_window = positive("sliding_window", k.sliding_window)?;
    let layer_types = layer_types(&k, &common, f, num_hidden_layers)?;
    let layers = uniform_layers(&layer_types, head_dim, num_kv_heads, intermediate_size);
    if !is_positive(k.query_pre_attn_scalar) {
        return Err(f.err("query_pre_attn_scalar", "must be positive"));
    }
    let softcap = common.final_logit_softcapping.unwrap_or(0.0);
    let (bos_token_id, pad_token_id, eos_token_ids) = common.token_ids();
    Ok(Gemma4Config {
        path: f.path.to_path_buf(),
        family: Family::Gemma3,
        // transformers: `config.query_pre_attn_scalar**-0.5`, a Python float.
        attention_scale: k.query_pre_attn_scalar.powf(-0.5) as f32,
        vocab_size,
        hidden_size,
        num_hidden_layers,
        num_attention_heads,
        intermediate_size,
        layers,
        sliding_window,
        rms_norm_eps: common.rms_norm_eps(f)?,
        final_logit_softcapping: (softcap > 0.0).then_some(softcap as f32),
        max_position_embeddings: common.max_position_embeddings.0,
        tie_word_embeddings: common.tie_word_embeddings,
        multimodal_placeholder_ids: Vec::new(),
        num_kv_shared_layers: 0,
        use_double_wide_mlp: false,
        ple: None,
        moe: None,
        rope_sliding: rope(&k, f, LayerType::Sliding)?,
        rope_full: rope(&k, f, LayerType::Full)?,
        dtype: common.dtype(f)?,
        bos_token_id,
        pad_token_id,
        eos_token_ids,
    })
}

/// Gemma 3's layers: one head geometry and MLP width for all, no KV sharing, K and V apart.
pub(crate) fn uniform_layers(
    types: &[LayerType],
    head_dim: usize,
    num_kv_heads: usize,
    mlp_width: usize,
) -> Vec<LayerConfig> {
    types
        .iter()
        .enumerate()
        .map(|(index, &layer_type)| LayerConfig {
            index,
            layer_type,
            head_dim,
            num_kv_heads,
            k_eq_v: false,
            kv_source: index,
            mlp_width,
        })
        .collect()
}

/// `layer_types`, or every `sliding_window_pattern`-th layer full (default 6).
/// Unlike Gemma 4, the last layer is not forced to full attention.
fn layer_types(k: &Gemma3Keys, common: &Common, f: At, n: usize) -> Result<Vec<LayerType>, FrontendError> {
    match &common.layer_types {
        None => {
            let pattern = k.sliding_window_pattern.0;
            if pattern == 0 {
                return Err(f.err("sliding_window_pattern", "must be positive"));
            }
            Ok((0..n)
                .map(|i| {
                    if (i + 1) % pattern == 0 {
                        LayerType::Full
                    } else {
                        LayerType::Sliding
                    }
                })
                .collect())
        }
        Some(t) if t.len() == n => Ok(t.clone()),
        Some(t) => Err(f.err(
            "layer_types",
            format!(
                "expected a list of {n} layer types (num_hidden_layers), got {} entries",
                t.len()
            ),
        )),
    }
}

/// Default RoPE on both layer types: `rope_parameters` (transformers 5), or the
/// legacy `rope_theta` / `rope_local_base_freq` / `rope_scaling` (full layers).
fn rope(k: &Gemma3Keys, f: At, t: LayerType) -> Result<RopeParams, FrontendError> {
    let legacy_theta = match t {
        LayerType::Sliding => k.rope_local_base_freq,
        LayerType::Full => k.rope_theta,
    };
    let entry = match (&k.rope_parameters, t) {
        (Some(all), _) => all.get(t),
        (None, LayerType::Full) => k.rope_scaling.as_ref(),
        (None, LayerType::Sliding) => None,
    };
    let p = RopeParams {
        rope_type: entry.map_or("default", RopeEntry::rope_type).to_string(),
        theta: entry.and_then(|e| e.rope_theta).unwrap_or(legacy_theta),
        partial_rotary_factor: 1.0,
        factor: entry.and_then(|e| e.factor).unwrap_or(1.0),
    };
    let field = format!("rope_parameters.{}", t.hf_name());
    if !["default", "linear"].contains(&p.rope_type.as_str()) {
        return Err(f.err(
            &field,
            format!(
                "rope_type `{}` is not supported (expected `default` or `linear`)",
                p.rope_type
            ),
        ));
    }
    if !is_positive(p.theta) || !is_positive(p.factor) {
        return Err(f.err(&field, "rope_theta and factor must be positive"));
    }
    Ok(p)
}
