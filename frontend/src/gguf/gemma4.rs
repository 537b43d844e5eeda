//! Gemma 4 config from GGUF metadata (`general.architecture = gemma4`, keys
//! `gemma4.*`), following llama.cpp's converter (`Gemma4Model` in
//! `convert_hf_to_gguf.py`) and loader (`src/models/gemma4.cpp`); the numbers
//! are resolved the way transformers' `Gemma4TextConfig` resolves the
//! checkpoint the file was converted from.
//!
//! How the converter writes a Gemma 4:
//! - norms are stored as `w` (Gemma 4's RMSNorm scales by `w`, not `1 + w`);
//!   no tensor is permuted or transposed;
//! - `attention.key_length`/`value_length` are the full-attention head dim,
//!   `*_swa` the sliding one; `attention.head_count_kv` and
//!   `feed_forward_length` are per-layer arrays when layers differ (global KV
//!   heads; the double-wide MLP of KV-sharing layers);
//! - `attention.sliding_window_pattern` is one bool per layer (true = sliding);
//! - full layers use "proportional" RoPE: llama.cpp rotates the whole head
//!   (`rope.dimension_count` = head dim) with `rope_freqs.weight` holding 1.0
//!   for the rotated pairs and 1e30 (no rotation) for the rest, so the number
//!   of 1.0 entries is transformers' `partial_rotary_factor * head_dim / 2`;
//! - K=V full layers (31B) have no `attn_v`; KV-sharing layers have no K/V;
//! - MoE: `expert_count`, `expert_used_count`, `expert_feed_forward_length`,
//!   tensors `ffn_gate_inp` (router), `ffn_gate_inp.scale`, merged
//!   `ffn_gate_up_exps`, `ffn_down_exps` and its `.scale` (per-expert scale).

use gemma4c_ir::DType;

use super::gemma::ArchMeta;
use crate::config::{
    kv_geometry_mismatch, kv_source, Family, Gemma4Config, LayerConfig, LayerType, MoeConfig, PleConfig, RopeParams,
};
use crate::error::FrontendError;
use crate::gguf::{GgmlType, GgufFile, MetaValue};

pub(crate) fn config(g: &GgufFile) -> Result<Gemma4Config, FrontendError> {
    let m = ArchMeta { g, arch: "gemma4" };
    let hidden_size = m.positive("embedding_length")?;
    let n = m.positive("block_count")?;
    if n > crate::bounds::MAX_LAYERS {
        return Err(m.bad(&m.key("block_count"), format!("{n} layers is too many")));
    }
    let heads = m.per_layer("attention.head_count", n)?;
    let num_attention_heads = heads[0];
    if let Some(i) = heads.iter().position(|&h| h != num_attention_heads) {
        return Err(m.bad(
            &m.key("attention.head_count"),
            format!(
                "layer {i} has {} heads, layer 0 {num_attention_heads}: per-layer query head counts are not supported",
                heads[i]
            ),
        ));
    }
    let kv_heads = m.per_layer("attention.head_count_kv", n)?;
    let ff = m.per_layer("feed_forward_length", n)?;
    let head_dim_full = head_dim(&m, "attention.key_length", "attention.value_length")?;
    let head_dim_swa = head_dim(&m, "attention.key_length_swa", "attention.value_length_swa")?;

    let pattern_key = m.key("attention.sliding_window_pattern");
    let pattern = g.array(&pattern_key)?;
    let mut types = sliding_flags(&m, &pattern_key, pattern, n)?;
    // transformers forces the last layer to full attention whatever the
    // checkpoint's layer_types say (the converter copies them unchanged).
    types[n - 1] = LayerType::Full;

    let num_kv_shared_layers = g.usize_or(&m.key("attention.shared_kv_layers"), 0)?;
    if num_kv_shared_layers >= n {
        return Err(m.bad(
            &m.key("attention.shared_kv_layers"),
            format!("{num_kv_shared_layers} leaves no layer to produce K/V (block_count is {n})"),
        ));
    }
    let first_shared = n - num_kv_shared_layers;

    let mut layers = Vec::with_capacity(n);
    for (index, &layer_type) in types.iter().enumerate() {
        let hd = match layer_type {
            LayerType::Sliding => head_dim_swa,
            LayerType::Full => head_dim_full,
        };
        let nkv = kv_heads[index];
        if num_attention_heads % nkv != 0 {
            return Err(m.bad(
                &m.key("attention.head_count_kv"),
                format!("layer {index} has {nkv} KV heads, which must divide head_count {num_attention_heads}"),
            ));
        }
        let kv_source = kv_source(index, first_shared, &types).ok_or_else(|| {
            m.bad(
                &m.key("attention.shared_kv_layers"),
                format!(
                    "layer {index} ({}) shares K/V but no earlier non-shared layer has that type",
                    layer_type.hf_name()
                ),
            )
        })?;
        let k_eq_v = kv_source == index && k_eq_v(&m, index, layer_type)?;
        layers.push(LayerConfig {
            index,
            layer_type,
            head_dim: hd,
            num_kv_heads: nkv,
            k_eq_v,
            kv_source,
            mlp_width: ff[index],
        });
    }
    if let Some((l, src)) = kv_geometry_mismatch(&layers) {
        return Err(m.bad(
            &m.key("attention.head_count_kv"),
            format!(
                "layer {} shares K/V with layer {} but their KV heads differ ({} vs {})",
                l.index, src.index, l.num_kv_heads, src.num_kv_heads
            ),
        ));
    }
    // The double-wide MLP doubles the width of KV-sharing layers only.
    let intermediate_size = ff[0];
    let use_double_wide_mlp = layers.iter().any(|l| l.mlp_width != intermediate_size);

    let sliding_window = m.positive("attention.sliding_window")?;
    let (rope_sliding, rope_full) = rope(&m, head_dim_swa, head_dim_full, &types)?;
    let vocab_size = m.tensor_shape("token_embd.weight")?.first().copied().unwrap_or(0);
    let ple = ple(&m, n)?;
    let moe = moe(&m, n)?;

    // transformers computes tanh(x / c) * c; a negative c equals |c|.
    let softcap_key = m.key("final_logit_softcapping");
    let final_logit_softcapping = match g.meta(&softcap_key) {
        None => None,
        Some(_) => {
            let c = g.f64(&softcap_key)?;
            if c == 0.0 || !c.is_finite() {
                return Err(m.bad(&softcap_key, format!("{c} is not a usable cap (tanh(x / c) * c)")));
            }
            Some(c.abs() as f32)
        }
    };
    let cfg = Gemma4Config {
        path: g.path.clone(),
        family: Family::Gemma4,
        attention_scale: 1.0,
        vocab_size,
        hidden_size,
        num_hidden_layers: n,
        num_attention_heads,
        intermediate_size,
        layers,
        sliding_window,
        rms_norm_eps: m.rms_norm_eps()?,
        final_logit_softcapping,
        max_position_embeddings: m.positive_or("context_length", 131_072)?,
        tie_word_embeddings: g.tensor("output.weight").is_none(),
        multimodal_placeholder_ids: Vec::new(),
        num_kv_shared_layers,
        use_double_wide_mlp,
        ple,
        moe,
        rope_sliding,
        rope_full,
        // Declared dtype for config-only uses (size bounds, `inspect`, `ir`); each tensor keeps
        // the type the file stores it in (`WeightStore::from_gguf`).
        dtype: DType::F32,
        bos_token_id: m.token_id("bos_token_id", 2)?,
        pad_token_id: m.token_id("padding_token_id", 0)?,
        // transformers' GGUF loader: <eos>, <turn|> and <|tool_response>.
        eos_token_ids: m.eos_ids(&["<turn|>", "<|tool_response>"])?,
    };
    crate::bounds::check_sizes(&cfg)?;
    Ok(cfg)
}

/// A head dim whose key and value lengths agree (llama.cpp requires it for Gemma 4).
fn head_dim(m: &ArchMeta, key: &str, value: &str) -> Result<usize, FrontendError> {
    let k = m.positive(key)?;
    let v = m.g.usize_or(&m.key(value), k)?;
    if v != k {
        return Err(m.bad(&m.key(value), format!("{v} differs from {} = {k}", m.key(key))));
    }
    if k % 2 != 0 {
        return Err(m.bad(&m.key(key), format!("{k} must be even (RoPE rotates pairs)")));
    }
    Ok(k)
}

/// One bool per layer, true = sliding window.
pub(crate) fn sliding_flags(
    m: &ArchMeta,
    key: &str,
    items: &[MetaValue],
    n: usize,
) -> Result<Vec<LayerType>, FrontendError> {
    if items.len() != n {
        return Err(m.bad(key, format!("has {} entries but block_count is {n}", items.len())));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, v)| match v.as_bool() {
            Some(true) => Ok(LayerType::Sliding),
            Some(false) => Ok(LayerType::Full),
            None => Err(m.bad(key, format!("entry {i} is {}; expected a bool", v.kind()))),
        })
        .collect()
}

/// An owning full-attention layer without `attn_v` uses the raw K projection
/// as V (transformers' `attention_k_eq_v`, the 31B's global layers).
fn k_eq_v(m: &ArchMeta, layer: usize, t: LayerType) -> Result<bool, FrontendError> {
    let has = |name: &str| m.g.tensor(&format!("blk.{layer}.{name}.weight")).is_some();
    if has("attn_qkv") {
        return Err(m.bad(
            &format!("blk.{layer}.attn_qkv.weight"),
            "fused QKV projections are not supported (expected attn_q, attn_k, attn_v)",
        ));
    }
    if has("attn_v") {
        return Ok(false);
    }
    if t == LayerType::Sliding {
        return Err(m.bad(
            &format!("blk.{layer}.attn_v.weight"),
            "tensor missing (only full-attention layers may share K as V)",
        ));
    }
    Ok(true)
}

fn rope(
    m: &ArchMeta,
    head_dim_swa: usize,
    head_dim_full: usize,
    types: &[LayerType],
) -> Result<(RopeParams, RopeParams), FrontendError> {
    if let Some(t) = m.g.meta(&m.key("rope.scaling.type")).and_then(|v| v.as_str()) {
        if t != "none" {
            return Err(m.bad(
                &m.key("rope.scaling.type"),
                format!("`{t}` is not supported for gemma4 (its full layers use proportional RoPE via rope_freqs)"),
            ));
        }
    }
    let n_rot_swa = m.g.usize_or(&m.key("rope.dimension_count_swa"), head_dim_swa)?;
    if n_rot_swa != head_dim_swa {
        return Err(m.bad(
            &m.key("rope.dimension_count_swa"),
            format!("{n_rot_swa} differs from key_length_swa {head_dim_swa} (partial RoPE on sliding layers is not supported)"),
        ));
    }
    // transformers' Gemma 4 defaults when a base is absent.
    let rope_sliding = RopeParams {
        rope_type: "default".into(),
        theta: m.positive_f64_or("rope.freq_base_swa", 10_000.0)?,
        partial_rotary_factor: 1.0,
        factor: 1.0,
    };
    let mut rope_full = RopeParams {
        rope_type: "proportional".into(),
        theta: m.positive_f64_or("rope.freq_base", 1_000_000.0)?,
        partial_rotary_factor: 1.0,
        factor: 1.0,
    };
    if types.contains(&LayerType::Full) {
        let n_rot = m.g.usize_or(&m.key("rope.dimension_count"), head_dim_full)?;
        if n_rot != head_dim_full {
            return Err(m.bad(
                &m.key("rope.dimension_count"),
                format!("{n_rot} differs from key_length {head_dim_full} (the converter rotates whole heads and masks pairs with rope_freqs)"),
            ));
        }
        let pairs = rotated_pairs(m, head_dim_full)?;
        // `floor(p * d / 2)` must give back `pairs`; 2k/d is exact for the
        // released sizes, the nudge guards the rounding of any other.
        let mut p = 2.0 * pairs as f64 / head_dim_full as f64;
        if ((p * head_dim_full as f64 / 2.0).floor() as usize) < pairs {
            p = f64::from_bits(p.to_bits() + 1);
        }
        rope_full.partial_rotary_factor = p;
        debug_assert_eq!(rope_full.spec(head_dim_full).rotated_pairs, pairs);
    }
    Ok((rope_sliding, rope_full))
}

/// The number of leading 1.0 entries of `rope_freqs.weight` (the rest must be
/// the converter's 1e30, which stops rotation).
fn rotated_pairs(m: &ArchMeta, head_dim_full: usize) -> Result<usize, FrontendError> {
    let name = "rope_freqs.weight";
    let t = m.g.tensor(name).ok_or_else(|| {
        m.bad(
            name,
            "tensor missing (full-attention layers need it for proportional RoPE)",
        )
    })?;
    if t.shape() != [head_dim_full / 2] || t.ggml_type != GgmlType::F32 {
        return Err(m.bad(
            name,
            format!(
                "is {} {:?}, expected f32 [{}] (key_length / 2)",
                t.ggml_type.name(),
                t.shape(),
                head_dim_full / 2
            ),
        ));
    }
    let values: Vec<f32> =
        m.g.bytes(t)
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
    let pairs = values.iter().take_while(|&&v| v == 1.0).count();
    if let Some((i, v)) = values.iter().enumerate().skip(pairs).find(|(_, &v)| v < 1e29) {
        return Err(m.bad(
            name,
            format!("entry {i} is {v}; expected 1.0 for rotated pairs then 1e30 (only proportional RoPE is supported)"),
        ));
    }
    Ok(pairs)
}

/// Per-Layer Embeddings: `embedding_length_per_layer_input` > 0.
fn ple(m: &ArchMeta, n: usize) -> Result<Option<PleConfig>, FrontendError> {
    // Required, as llama.cpp requires it: 0 says the model has no PLE.
    let name = "per_layer_token_embd.weight";
    let key = m.key("embedding_length_per_layer_input");
    let hidden = m.g.usize(&key)?;
    if hidden == 0 {
        if m.g.tensor(name).is_some() {
            return Err(m.bad(
                &key,
                format!("is 0 (no Per-Layer Embeddings) but the file holds `{name}`"),
            ));
        }
        return Ok(None);
    }
    let shape = m.tensor_shape(name)?;
    match shape[..] {
        [vocab, width] if width == n * hidden && vocab > 0 => Ok(Some(PleConfig { hidden, vocab })),
        _ => Err(m.bad(
            name,
            format!(
                "has shape {shape:?}, expected [vocab, block_count * embedding_length_per_layer_input] = [vocab, {}]",
                n * hidden
            ),
        )),
    }
}

/// The 26B-A4B's routed experts, on every layer or none (transformers'
/// `enable_moe_block`).
fn moe(m: &ArchMeta, n: usize) -> Result<Option<MoeConfig>, FrontendError> {
    let num_experts = m.g.usize_or(&m.key("expert_count"), 0)?;
    let routed: Vec<bool> = (0..n)
        .map(|i| m.g.tensor(&format!("blk.{i}.ffn_gate_inp.weight")).is_some())
        .collect();
    if num_experts == 0 {
        if let Some(i) = routed.iter().position(|&r| r) {
            return Err(m.bad(
                &m.key("expert_count"),
                format!("missing or 0, but blk.{i}.ffn_gate_inp.weight (an MoE router) is present"),
            ));
        }
        return Ok(None);
    }
    if let Some(i) = routed.iter().position(|&r| !r) {
        return Err(m.bad(
            &format!("blk.{i}.ffn_gate_inp.weight"),
            "tensor missing (gemma4c runs MoE on every layer, as transformers' enable_moe_block)",
        ));
    }
    for i in 0..n {
        if m.g.tensor(&format!("blk.{i}.ffn_gate_exps.weight")).is_some() {
            return Err(m.bad(
                &format!("blk.{i}.ffn_gate_exps.weight"),
                "separate gate/up expert banks are not supported (expected ffn_gate_up_exps, as the converter writes)",
            ));
        }
    }
    let top_k = m.positive("expert_used_count")?;
    if top_k > num_experts {
        return Err(m.bad(
            &m.key("expert_used_count"),
            format!("{top_k} is more than expert_count {num_experts}"),
        ));
    }
    let widths = m.per_layer("expert_feed_forward_length", n)?;
    if let Some(i) = widths.iter().position(|&w| w != widths[0]) {
        return Err(m.bad(
            &m.key("expert_feed_forward_length"),
            format!("layer {i} differs from layer 0: per-layer expert widths are not supported"),
        ));
    }
    Ok(Some(MoeConfig {
        num_experts,
        top_k,
        intermediate_size: widths[0],
    }))
}
