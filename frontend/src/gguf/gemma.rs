//! Gemma models from GGUF metadata: llama.cpp's tensor names and `gemma3.*`
//! keys mapped to the Hugging Face names and config the builders use.
//!
//! llama.cpp's converter (`convert_hf_to_gguf.py`, `Gemma3Model`) stores every
//! Gemma 3 `*norm.weight` as `1 + w` (transformers' GGUF loader subtracts the 1
//! again), which is exactly the scale the graph's RMSNorm multiplies by, so
//! GGUF norm weights are used as stored.

use gemma4c_ir::DType;

use crate::config::{Family, Gemma4Config, LayerConfig, LayerType, RopeParams};
use crate::error::FrontendError;
use crate::gguf::GgufFile;

/// (llama.cpp name inside `blk.N.`, Hugging Face name inside `layers.N.`).
const LAYER_TENSORS: [(&str, &str); 13] = [
    ("attn_norm", "input_layernorm"),
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("attn_q_norm", "self_attn.q_norm"),
    ("attn_k_norm", "self_attn.k_norm"),
    ("post_attention_norm", "post_attention_layernorm"),
    ("ffn_norm", "pre_feedforward_layernorm"),
    ("post_ffw_norm", "post_feedforward_layernorm"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
];

const MODEL_TENSORS: [(&str, &str); 3] = [
    ("token_embd", "embed_tokens"),
    ("output_norm", "norm"),
    ("output", "lm_head"),
];

/// The Hugging Face key of a llama.cpp tensor name (`blk.3.attn_q.weight` →
/// `layers.3.self_attn.q_proj.weight`); `None` for tensors the text model
/// does not read.
pub fn hf_key(gguf_name: &str) -> Option<String> {
    let stem = gguf_name.strip_suffix(".weight")?;
    if let Some(rest) = stem.strip_prefix("blk.") {
        let (layer, name) = rest.split_once('.')?;
        let layer: usize = layer.parse().ok()?;
        let (_, hf) = LAYER_TENSORS.iter().find(|(g, _)| *g == name)?;
        return Some(format!("layers.{layer}.{hf}.weight"));
    }
    let (_, hf) = MODEL_TENSORS.iter().find(|(g, _)| *g == stem)?;
    Some(format!("{hf}.weight"))
}

/// The llama.cpp name of a Hugging Face key (for messages).
pub fn gguf_name(hf: &str) -> Option<String> {
    let stem = hf.strip_suffix(".weight")?;
    if let Some(rest) = stem.strip_prefix("layers.") {
        let (layer, name) = rest.split_once('.')?;
        let (g, _) = LAYER_TENSORS.iter().find(|(_, h)| *h == name)?;
        return Some(format!("blk.{layer}.{g}.weight"));
    }
    let (g, _) = MODEL_TENSORS.iter().find(|(_, h)| *h == stem)?;
    Some(format!("{g}.weight"))
}

/// The model config a GGUF file describes (`general.architecture = gemma3`).
pub fn config(g: &GgufFile) -> Result<Gemma4Config, FrontendError> {
    let arch = g.str("general.architecture")?;
    if arch != "gemma3" {
        return Err(FrontendError::Config {
            path: g.path.clone(),
            field: "general.architecture".into(),
            message: format!("`{arch}` is not supported (gemma4c reads `gemma3` GGUF files)"),
        });
    }
    let key = |k: &str| format!("{arch}.{k}");
    let bad = |k: &str, m: String| FrontendError::Config {
        path: g.path.clone(),
        field: k.to_string(),
        message: m,
    };
    let positive = |k: &str| -> Result<usize, FrontendError> {
        match g.usize(&key(k))? {
            0 => Err(bad(&key(k), "must be positive".into())),
            v => Ok(v),
        }
    };
    let hidden_size = positive("embedding_length")?;
    let num_hidden_layers = positive("block_count")?;
    let num_attention_heads = positive("attention.head_count")?;
    let num_kv_heads = positive("attention.head_count_kv")?;
    let intermediate_size = positive("feed_forward_length")?;
    let head_dim = g.usize_or(&key("attention.key_length"), hidden_size / num_attention_heads)?;
    if head_dim == 0 || head_dim % 2 != 0 || num_attention_heads % num_kv_heads != 0 {
        return Err(bad(
            &key("attention.key_length"),
            format!(
                "head_dim {head_dim} must be positive and even, and head_count_kv {num_kv_heads} must divide head_count {num_attention_heads}"
            ),
        ));
    }
    let value_length = g.usize_or(&key("attention.value_length"), head_dim)?;
    if value_length != head_dim {
        return Err(bad(
            &key("attention.value_length"),
            format!("{value_length} differs from key_length {head_dim}"),
        ));
    }
    let sliding_window = g.usize_or(&key("attention.sliding_window"), 4096)?.max(1);
    // llama.cpp: every 6th layer is global, local layers use RoPE base 10000.
    let layers = (0..num_hidden_layers)
        .map(|index| LayerConfig {
            index,
            layer_type: if (index + 1) % 6 == 0 {
                LayerType::Full
            } else {
                LayerType::Sliding
            },
            head_dim,
            num_kv_heads,
            k_eq_v: false,
            kv_source: index,
            mlp_width: intermediate_size,
        })
        .collect();
    let scaling = g
        .meta(&key("rope.scaling.type"))
        .and_then(|v| v.as_str())
        .unwrap_or("none");
    let factor = match scaling {
        "none" => 1.0,
        "linear" => g.f64(&key("rope.scaling.factor"))?,
        other => {
            return Err(bad(
                &key("rope.scaling.type"),
                format!("`{other}` is not supported (expected `linear` or none)"),
            ))
        }
    };
    let rope_full = RopeParams {
        rope_type: if scaling == "linear" { "linear" } else { "default" }.into(),
        theta: g.f64_or(&key("rope.freq_base"), 1_000_000.0)?,
        partial_rotary_factor: 1.0,
        factor,
    };
    let rope_sliding = RopeParams {
        rope_type: "default".into(),
        theta: 10_000.0,
        partial_rotary_factor: 1.0,
        factor: 1.0,
    };
    if !(rope_full.theta > 0.0 && factor > 0.0) {
        return Err(bad(
            &key("rope.freq_base"),
            "RoPE base and scaling factor must be positive".into(),
        ));
    }
    // llama.cpp scales scores by 1/sqrt(head_dim), except for the 27B (62 layers)
    // whose `query_pre_attn_scalar` is hidden_size / heads.
    let query_pre_attn_scalar = if num_hidden_layers == 62 {
        hidden_size / num_attention_heads
    } else {
        head_dim
    };
    let embed = g
        .tensor("token_embd.weight")
        .ok_or_else(|| bad("token_embd.weight", "tensor missing".into()))?;
    let vocab_size = embed.shape()[0];
    let tie_word_embeddings = g.tensor("output.weight").is_none();
    let token = |k: &str, d: u32| -> Result<u32, FrontendError> {
        Ok(g.usize_or(&format!("tokenizer.ggml.{k}"), d as usize)? as u32)
    };
    let mut eos_token_ids = vec![token("eos_token_id", 1)?];
    // llama.cpp also ends generation at `<end_of_turn>` (as Gemma's generation_config does).
    if let Ok(tokens) = g.array("tokenizer.ggml.tokens") {
        if let Some(i) = tokens.iter().position(|t| t.as_str() == Some("<end_of_turn>")) {
            if !eos_token_ids.contains(&(i as u32)) {
                eos_token_ids.push(i as u32);
            }
        }
    }
    let rms_norm_eps = g.f64_or(&key("attention.layer_norm_rms_epsilon"), 1e-6)? as f32;
    if rms_norm_eps.is_nan() || rms_norm_eps <= 0.0 {
        return Err(bad(&key("attention.layer_norm_rms_epsilon"), "must be positive".into()));
    }
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
        rms_norm_eps,
        final_logit_softcapping: None,
        max_position_embeddings: g.usize_or(&key("context_length"), 131_072)?,
        tie_word_embeddings,
        multimodal_placeholder_ids: Vec::new(),
        num_kv_shared_layers: 0,
        use_double_wide_mlp: false,
        ple: None,
        moe: None,
        rope_sliding,
        rope_full,
        // Weights are served as f32 (quantized blocks dequantize at load).
        dtype: DType::F32,
        bos_token_id: token("bos_token_id", 2)?,
        pad_token_id: token("padding_token_id", 0)?,
        eos_token_ids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_both_ways() {
        for (g, h) in [
            ("blk.17.attn_q.weight", "layers.17.self_attn.q_proj.weight"),
            (
                "blk.0.post_ffw_norm.weight",
                "layers.0.post_feedforward_layernorm.weight",
            ),
            ("blk.2.ffn_norm.weight", "layers.2.pre_feedforward_layernorm.weight"),
            ("token_embd.weight", "embed_tokens.weight"),
            ("output_norm.weight", "norm.weight"),
        ] {
            assert_eq!(hf_key(g).as_deref(), Some(h));
            assert_eq!(gguf_name(h).as_deref(), Some(g));
        }
        assert_eq!(hf_key("blk.x.attn_q.weight"), None);
        assert_eq!(hf_key("rope_freqs.weight"), None);
    }
}
