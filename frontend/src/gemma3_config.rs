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

use std::path::Path;

use gemma4c_ir::DType;
use serde_json::{Map, Value};

use crate::config::{is_positive, Family, Gemma4Config, LayerConfig, LayerType, RopeParams};
use crate::error::FrontendError;
use crate::fields::Fields;

pub(crate) fn from_json(top: &Map<String, Value>, path: &Path) -> Result<Gemma4Config, FrontendError> {
    let model_type = top.get("model_type").and_then(Value::as_str).unwrap_or("");
    let (text, prefix) = match model_type {
        "gemma3_text" => (top.clone(), ""),
        "gemma3" => match top.get("text_config") {
            Some(Value::Object(t)) => {
                let mut t = t.clone();
                for key in ["bos_token_id", "eos_token_id", "pad_token_id", "dtype", "torch_dtype"] {
                    if let (None, Some(v)) = (t.get(key), top.get(key)) {
                        t.insert(key.to_string(), v.clone());
                    }
                }
                // `Gemma3ForConditionalGeneration` ties its head by the outer flag.
                let outer = Fields::new(path, "", top.clone());
                t.insert(
                    "tie_word_embeddings".into(),
                    Value::Bool(outer.bool_or("tie_word_embeddings", true)?),
                );
                (t, "text_config.")
            }
            _ => {
                return Err(FrontendError::Config {
                    path: path.to_path_buf(),
                    field: "text_config".into(),
                    message: "a `gemma3` config must contain a `text_config` object".into(),
                })
            }
        },
        other => {
            return Err(FrontendError::UnknownModelType {
                path: path.to_path_buf(),
                found: other.to_string(),
            })
        }
    };
    resolve(&Fields::new(path, prefix, text))
}

fn resolve(f: &Fields) -> Result<Gemma4Config, FrontendError> {
    let positive = |key: &str, default: Option<usize>| -> Result<usize, FrontendError> {
        let v = match default {
            Some(d) => f.usize_or(key, d)?,
            None => f.usize_req(key)?,
        };
        if v == 0 {
            return Err(f.err(key, "must be positive"));
        }
        Ok(v)
    };
    let vocab_size = positive("vocab_size", Some(262_208))?;
    let hidden_size = positive("hidden_size", None)?;
    let num_hidden_layers = positive("num_hidden_layers", None)?;
    let num_attention_heads = positive("num_attention_heads", None)?;
    let num_kv_heads = positive("num_key_value_heads", None)?;
    let head_dim = positive("head_dim", Some(256))?;
    let intermediate_size = positive("intermediate_size", None)?;
    if head_dim % 2 != 0 {
        return Err(f.err("head_dim", format!("{head_dim} must be even (RoPE rotates pairs)")));
    }
    if num_attention_heads % num_kv_heads != 0 {
        return Err(f.err(
            "num_key_value_heads",
            format!("{num_kv_heads} must divide num_attention_heads = {num_attention_heads}"),
        ));
    }
    let activation = f
        .get("hidden_activation")
        .and_then(Value::as_str)
        .unwrap_or("gelu_pytorch_tanh");
    if activation != "gelu_pytorch_tanh" {
        return Err(f.err(
            "hidden_activation",
            format!("`{activation}` is not supported; Gemma 3 uses `gelu_pytorch_tanh`"),
        ));
    }
    if f.bool_or("attention_bias", false)? {
        return Err(f.err("attention_bias", "must be false: Gemma 3 has no attention biases"));
    }
    if f.bool_or("use_bidirectional_attention", false)? {
        return Err(f.err("use_bidirectional_attention", "non-causal attention is not supported"));
    }
    if f.get("attn_logit_softcapping").is_some() {
        return Err(f.err(
            "attn_logit_softcapping",
            "attention-score soft-capping is not supported",
        ));
    }
    let sliding_window = positive("sliding_window", Some(4096))?;
    let layer_types = layer_types(f, num_hidden_layers)?;
    let layers = uniform_layers(&layer_types, head_dim, num_kv_heads, intermediate_size);
    let query_pre_attn_scalar = f.f64_or("query_pre_attn_scalar", 256.0)?;
    if !is_positive(query_pre_attn_scalar) {
        return Err(f.err("query_pre_attn_scalar", "must be positive"));
    }
    let (rope_sliding, rope_full) = rope(f)?;
    let dtype = match f.get("dtype").or_else(|| f.get("torch_dtype")) {
        None => DType::BF16,
        Some(v) => v
            .as_str()
            .and_then(DType::parse)
            .filter(|d| d.is_float())
            .ok_or_else(|| f.err("dtype", format!("expected float32, bfloat16 or float16, got {v}")))?,
    };
    let softcap = f.f64_or("final_logit_softcapping", 0.0)?;
    let token = |key: &str, default: u32| -> Result<u32, FrontendError> {
        Ok(match f.get(key) {
            Some(v) => f.token_ids(key, v)?.first().copied().unwrap_or(default),
            None => default,
        })
    };
    let rms_norm_eps = f.f64_or("rms_norm_eps", 1e-6)? as f32;
    if !is_positive(rms_norm_eps as f64) {
        return Err(f.err("rms_norm_eps", "must be a positive number"));
    }
    Ok(Gemma4Config {
        path: f.path.to_path_buf(),
        family: Family::Gemma3,
        // transformers: `config.query_pre_attn_scalar**-0.5`, a Python float.
        attention_scale: query_pre_attn_scalar.powf(-0.5) as f32,
        vocab_size,
        hidden_size,
        num_hidden_layers,
        num_attention_heads,
        intermediate_size,
        layers,
        sliding_window,
        rms_norm_eps,
        final_logit_softcapping: (softcap > 0.0).then_some(softcap as f32),
        max_position_embeddings: f.usize_or("max_position_embeddings", 131_072)?,
        tie_word_embeddings: f.bool_or("tie_word_embeddings", true)?,
        multimodal_placeholder_ids: Vec::new(),
        num_kv_shared_layers: 0,
        use_double_wide_mlp: false,
        ple: None,
        moe: None,
        rope_sliding,
        rope_full,
        dtype,
        bos_token_id: token("bos_token_id", 2)?,
        pad_token_id: token("pad_token_id", 0)?,
        eos_token_ids: match f.get("eos_token_id") {
            Some(v) => f.token_ids("eos_token_id", v)?,
            None => vec![1],
        },
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
fn layer_types(f: &Fields, n: usize) -> Result<Vec<LayerType>, FrontendError> {
    match f.get("layer_types") {
        None => {
            let pattern = f.usize_or("sliding_window_pattern", 6)?;
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
        Some(Value::Array(items)) if items.len() == n => items
            .iter()
            .enumerate()
            .map(|(i, v)| match v.as_str() {
                Some("sliding_attention") => Ok(LayerType::Sliding),
                Some("full_attention") => Ok(LayerType::Full),
                _ => Err(f.err(
                    "layer_types",
                    format!("entry {i} is {v}; expected \"sliding_attention\" or \"full_attention\""),
                )),
            })
            .collect(),
        Some(v) => Err(f.err(
            "layer_types",
            format!("expected a list of {n} layer types (num_hidden_layers), got {v}"),
        )),
    }
}

/// Default RoPE on both layer types: `rope_parameters` (transformers 5), or the
/// legacy `rope_theta` / `rope_local_base_freq` / `rope_scaling` (full layers).
fn rope(f: &Fields) -> Result<(RopeParams, RopeParams), FrontendError> {
    let params = |t: LayerType, legacy_theta: &str, theta: f64| -> Result<RopeParams, FrontendError> {
        let mut p = RopeParams {
            rope_type: "default".into(),
            theta: f.f64_or(legacy_theta, theta)?,
            partial_rotary_factor: 1.0,
            factor: 1.0,
        };
        let entry = match (f.get("rope_parameters"), t) {
            (Some(all), _) => all.get(t.hf_name()).cloned(),
            (None, LayerType::Full) => f.get("rope_scaling").cloned(),
            (None, LayerType::Sliding) => None,
        };
        let field = format!("rope_parameters.{}", t.hf_name());
        if let Some(entry) = entry.filter(|e| !e.is_null()) {
            let e = entry
                .as_object()
                .ok_or_else(|| f.err(&field, format!("expected an object, got {entry}")))?;
            if let Some(kind) = e.get("rope_type").or_else(|| e.get("type")).and_then(Value::as_str) {
                p.rope_type = kind.to_string();
            }
            let num = |k: &str, d: f64| -> Result<f64, FrontendError> {
                match e.get(k) {
                    None | Some(Value::Null) => Ok(d),
                    Some(v) => v
                        .as_f64()
                        .ok_or_else(|| f.err(&format!("{field}.{k}"), "expected a number")),
                }
            };
            p.theta = num("rope_theta", p.theta)?;
            p.factor = num("factor", 1.0)?;
        }
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
    };
    Ok((
        params(LayerType::Sliding, "rope_local_base_freq", 10_000.0)?,
        params(LayerType::Full, "rope_theta", 1_000_000.0)?,
    ))
}
