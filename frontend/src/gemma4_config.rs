//! Gemma 4 text config keys (`gemma4_text`, or the `text_config` of `gemma4`)
//! resolved into per-layer geometry exactly as transformers'
//! `Gemma4TextConfig` does: head dims and KV heads per layer type (hub keys,
//! then `per_layer_config` overrides), KV sharing, the double-wide MLP, PLE,
//! MoE and RoPE per layer type.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::config::{
    is_positive, kv_geometry_mismatch, kv_source, Common, Family, Gemma4Config, LayerConfig, LayerType, MoeConfig,
    PleConfig, RopeParams, RopeTable,
};
use crate::error::FrontendError;
use crate::fields::{size, At, Size};

/// The Gemma 4 text config keys, with transformers' defaults.
#[derive(Deserialize)]
pub(crate) struct Gemma4Keys {
    vocab_size: Size,
    hidden_size: Size,
    num_hidden_layers: Size,
    num_attention_heads: Size,
    num_key_value_heads: Size,
    head_dim: Size,
    intermediate_size: Size,
    use_bidirectional_attention: Option<Value>,
    #[serde(default = "size::<512>")]
    sliding_window: Size,
    /// Per-layer geometry: hub-style keys, then transformers-5.23 `per_layer_config` overrides.
    #[serde(default)]
    attention_k_eq_v: bool,
    #[serde(default = "size::<512>")]
    global_head_dim: Size,
    num_global_key_value_heads: Option<Size>,
    per_layer_config: Option<BTreeMap<String, LayerOverride>>,
    #[serde(default = "size::<0>")]
    num_kv_shared_layers: Size,
    #[serde(default)]
    use_double_wide_mlp: bool,
    #[serde(default = "size::<256>")]
    hidden_size_per_layer_input: Size,
    #[serde(default = "size::<262_144>")]
    vocab_size_per_layer_input: Size,
    #[serde(default)]
    enable_moe_block: bool,
    num_experts: Option<Size>,
    top_k_experts: Option<Size>,
    moe_intermediate_size: Option<Size>,
    rope_parameters: Option<RopeTable>,
}

/// A `per_layer_config` entry.
#[derive(Deserialize)]
#[serde(expecting = "an object with head_dim and/or num_key_value_heads")]
struct LayerOverride {
    head_dim: Option<Size>,
    num_key_value_heads: Option<Size>,
}

pub(crate) fn resolve(
    k: Gemma4Keys,
    common: Common,
    f: At,
    placeholders: Vec<u32>,
) -> Result<Gemma4Config, FrontendError> {
    let [vocab_size, hidden_size, num_hidden_layers, num_attention_heads, num_key_value_heads, head_dim, intermediate_size] =
        [
            k.vocab_size,
            k.hidden_size,
            k.num_hidden_layers,
            k.num_attention_heads,
            k.num_key_value_heads,
            k.head_dim,
            k.intermediate_size,
        ]
        .map(|s| s.0);
    if num_hidden_layers > crate::bounds::MAX_LAYERS {
        return Err(f.err(
            "num_hidden_layers",
            format!(
                "{num_hidden_layers} is more than the {} layers gemma4c accepts",
                crate::bounds::MAX_LAYERS
            ),
        ));
    }
    for (key, v) in [
        ("vocab_size", vocab_size),
        ("hidden_size", hidden_size),
        ("num_hidden_layers", num_hidden_layers),
        ("num_attention_heads", num_attention_heads),
        ("num_key_value_heads", num_key_value_heads),
        ("head_dim", head_dim),
        ("intermediate_size", intermediate_size),
    ] {
        if v == 0 {
            return Err(f.err(key, "must be positive"));
        }
    }
    common.check(f, "Gemma 4")?;
    if k.use_bidirectional_attention.as_ref().and_then(Value::as_str) == Some("all") {
        return Err(f.err(
            "use_bidirectional_attention",
            "`all` (non-causal text attention) is not supported",
        ));
    }

    let layer_types = layer_types(&common, f, num_hidden_layers)?;
    let sliding_window = k.sliding_window.0;
    if sliding_window == 0 {
        return Err(f.err("sliding_window", "must be positive"));
    }
    let overrides = per_layer_overrides(&k, f, num_hidden_layers)?;
    let num_kv_shared_layers = k.num_kv_shared_layers.0;
    if num_kv_shared_layers >= num_hidden_layers && num_kv_shared_layers > 0 {
        return Err(f.err(
            "num_kv_shared_layers",
            format!("{num_kv_shared_layers} leaves no layer to produce K/V (num_hidden_layers is {num_hidden_layers})"),
        ));
    }
    let first_shared = num_hidden_layers - num_kv_shared_layers;

    let mut layers = Vec::with_capacity(num_hidden_layers);
    for (index, &layer_type) in layer_types.iter().enumerate() {
        let (mut hd, mut nkv) = match (layer_type, &overrides) {
            (LayerType::Sliding, _) => (head_dim, num_key_value_heads),
            // With per_layer_config present, the hub keys are ignored (as in transformers).
            (LayerType::Full, Some(_)) => (head_dim, num_key_value_heads),
            (LayerType::Full, None) => (
                k.global_head_dim.0,
                match (k.attention_k_eq_v, k.num_global_key_value_heads) {
                    (true, Some(n)) => n.0,
                    _ => num_key_value_heads,
                },
            ),
        };
        if let Some(ov) = overrides.as_ref().and_then(|o| o[index]) {
            hd = ov.0.unwrap_or(hd);
            nkv = ov.1.unwrap_or(nkv);
        }
        if hd == 0 || hd % 2 != 0 {
            return Err(f.err(
                "head_dim",
                format!("layer {index} has head_dim {hd}; expected a positive even number"),
            ));
        }
        if nkv == 0 || num_attention_heads % nkv != 0 {
            return Err(f.err(
                "num_key_value_heads",
                format!(
                    "layer {index} has {nkv} kv heads, which must divide num_attention_heads = {num_attention_heads}"
                ),
            ));
        }
        let kv_source = kv_source(index, first_shared, &layer_types).ok_or_else(|| {
            f.err(
                "num_kv_shared_layers",
                format!(
                    "layer {index} ({}) shares K/V but no earlier non-shared layer has that type",
                    layer_type.hf_name()
                ),
            )
        })?;
        let consumer = kv_source != index;
        layers.push(LayerConfig {
            index,
            layer_type,
            head_dim: hd,
            num_kv_heads: nkv,
            k_eq_v: k.attention_k_eq_v && layer_type == LayerType::Full,
            kv_source,
            mlp_width: intermediate_size * if k.use_double_wide_mlp && consumer { 2 } else { 1 },
        });
    }
    if let Some((l, src)) = kv_geometry_mismatch(&layers) {
        return Err(f.err(
            "per_layer_config",
            format!(
                "layer {} shares K/V with layer {} but their (head_dim, kv heads) differ: ({}, {}) vs ({}, {})",
                l.index, src.index, l.head_dim, l.num_kv_heads, src.head_dim, src.num_kv_heads
            ),
        ));
    }

    let ple = (k.hidden_size_per_layer_input.0 > 0).then_some(PleConfig {
        hidden: k.hidden_size_per_layer_input.0,
        vocab: k.vocab_size_per_layer_input.0,
    });
    let moe = if k.enable_moe_block {
        let req = |v: Option<Size>, key: &str| v.map(|s| s.0).ok_or_else(|| f.err(key, "is missing"));
        let num_experts = req(k.num_experts, "num_experts")?;
        let top_k = req(k.top_k_experts, "top_k_experts")?;
        let intermediate = req(k.moe_intermediate_size, "moe_intermediate_size")?;
        if top_k == 0 || top_k > num_experts {
            return Err(f.err(
                "top_k_experts",
                format!("{top_k} must be in 1..={num_experts} (num_experts)"),
            ));
        }
        if intermediate == 0 {
            return Err(f.err("moe_intermediate_size", "must be positive"));
        }
        Some(MoeConfig {
            num_experts,
            top_k,
            intermediate_size: intermediate,
        })
    } else {
        None
    };

    // transformers computes tanh(x / c) * c whenever the field is not null;
    // tanh is odd, so a negative c equals |c|. Zero would divide by zero.
    let softcap = match common.final_logit_softcapping {
        None => None,
        Some(c) if c == 0.0 || !c.is_finite() => {
            return Err(f.err(
                "final_logit_softcapping",
                format!("{c} is not a usable cap (tanh(x / c) * c); use null for no soft-capping"),
            ))
        }
        Some(c) => Some(c.abs() as f32),
    };
    let (bos_token_id, pad_token_id, eos_token_ids) = common.token_ids();
    let cfg = Gemma4Config {
        path: f.path.to_path_buf(),
        family: Family::Gemma4,
        attention_scale: 1.0,
        vocab_size,
        hidden_size,
        num_hidden_layers,
        num_attention_heads,
        intermediate_size,
        layers,
        sliding_window,
        rms_norm_eps: common.rms_norm_eps(f)?,
        final_logit_softcapping: softcap,
        max_position_embeddings: common.max_position_embeddings.0,
        tie_word_embeddings: common.tie_word_embeddings,
        multimodal_placeholder_ids: placeholders,
        num_kv_shared_layers,
        use_double_wide_mlp: k.use_double_wide_mlp,
        ple,
        moe,
        rope_sliding: rope(&k, f, LayerType::Sliding)?,
        rope_full: rope(&k, f, LayerType::Full)?,
        dtype: common.dtype(f)?,
        bos_token_id,
        pad_token_id,
        eos_token_ids,
    };
    crate::bounds::check_sizes(&cfg)?;
    Ok(cfg)
}

/// `layer_types` (as many as layers), or transformers' default: every 6th layer full.
/// transformers forces the last layer to full attention.
fn layer_types(common: &Common, f: At, n: usize) -> Result<Vec<LayerType>, FrontendError> {
    let mut types = match &common.layer_types {
        None => (0..n)
            .map(|i| {
                if (i + 1) % 6 == 0 {
                    LayerType::Full
                } else {
                    LayerType::Sliding
                }
            })
            .collect(),
        Some(t) if t.len() != n => {
            return Err(f.err(
                "layer_types",
                format!("has {} entries but num_hidden_layers is {n}", t.len()),
            ))
        }
        Some(t) => t.clone(),
    };
    if let Some(last) = types.last_mut() {
        *last = LayerType::Full;
    }
    Ok(types)
}

/// Sparse `(head_dim, num_key_value_heads)` overrides keyed by layer index.
type Overrides = Vec<Option<(Option<usize>, Option<usize>)>>;

fn per_layer_overrides(k: &Gemma4Keys, f: At, n: usize) -> Result<Option<Overrides>, FrontendError> {
    let Some(table) = &k.per_layer_config else {
        return Ok(None);
    };
    let mut out: Overrides = vec![None; n];
    for (key, entry) in table {
        let field = format!("per_layer_config.{key}");
        let idx: usize = key.parse().map_err(|_| f.err(&field, "key must be a layer index"))?;
        if idx >= n {
            return Err(f.err(&field, format!("layer {idx} does not exist (num_hidden_layers is {n})")));
        }
        out[idx] = Some((entry.head_dim.map(|s| s.0), entry.num_key_value_heads.map(|s| s.0)));
    }
    Ok(Some(out))
}

/// `rope_parameters[t]`; transformers' Gemma 4 defaults when absent.
fn rope(k: &Gemma4Keys, f: At, t: LayerType) -> Result<RopeParams, FrontendError> {
    let Some(p) = k.rope_parameters.as_ref().and_then(|all| all.get(t)) else {
        return Ok(match t {
            LayerType::Sliding => RopeParams {
                rope_type: "default".into(),
                theta: 10_000.0,
                partial_rotary_factor: 1.0,
                factor: 1.0,
            },
            LayerType::Full => RopeParams {
                rope_type: "proportional".into(),
                theta: 1_000_000.0,
                partial_rotary_factor: 0.25,
                factor: 1.0,
            },
        });
    };
    let field = format!("rope_parameters.{}", t.hf_name());
    let rope_type = p.rope_type();
    if !["default", "linear", "proportional"].contains(&rope_type) {
        return Err(f.err(
            &format!("{field}.rope_type"),
            format!("`{rope_type}` is not supported (expected `default`, `linear` or `proportional`)"),
        ));
    }
    let params = RopeParams {
        rope_type: rope_type.to_string(),
        theta: p.rope_theta.unwrap_or(10_000.0),
        partial_rotary_factor: p.partial_rotary_factor.unwrap_or(1.0),
        factor: p.factor.unwrap_or(1.0),
    };
    if !is_positive(params.theta) || !is_positive(params.factor) || !(0.0..=1.0).contains(&params.partial_rotary_factor)
    {
        return Err(f.err(
            &field,
            "rope_theta and factor must be positive and partial_rotary_factor in [0, 1]",
        ));
    }
    Ok(params)
}
