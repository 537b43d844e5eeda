//! Gemma models from GGUF files: llama.cpp's tensor names mapped to the
//! Hugging Face keys the builders read, the config dispatched on
//! `general.architecture`, and the metadata helpers both architectures share.
//!
//! The names are those of llama.cpp's converter (`convert_hf_to_gguf.py`, its
//! `Gemma3Model` and `Gemma4Model`, with gguf-py's `tensor_mapping.py`). No
//! tensor is permuted or transposed by the converter for these models: GGUF's
//! reversed dimension order (`ne`) already reads as Hugging Face's
//! `[out, in]`, and `[experts, out, in]` for the MoE banks.

use crate::config::Gemma4Config;
use crate::error::FrontendError;
use crate::gguf::GgufFile;

/// (llama.cpp name inside `blk.N.`, Hugging Face key inside `layers.N.`).
/// Gemma 3 uses the first thirteen; the rest are Gemma 4's (PLE, layer
/// scalar, MoE). Suffixes differ where the converter renamed a parameter
/// that is not a `.weight` in transformers.
const LAYER_TENSORS: [(&str, &str); 25] = [
    ("attn_norm.weight", "input_layernorm.weight"),
    ("attn_q.weight", "self_attn.q_proj.weight"),
    ("attn_k.weight", "self_attn.k_proj.weight"),
    ("attn_v.weight", "self_attn.v_proj.weight"),
    ("attn_output.weight", "self_attn.o_proj.weight"),
    ("attn_q_norm.weight", "self_attn.q_norm.weight"),
    ("attn_k_norm.weight", "self_attn.k_norm.weight"),
    ("post_attention_norm.weight", "post_attention_layernorm.weight"),
    ("ffn_norm.weight", "pre_feedforward_layernorm.weight"),
    ("post_ffw_norm.weight", "post_feedforward_layernorm.weight"),
    ("ffn_gate.weight", "mlp.gate_proj.weight"),
    ("ffn_up.weight", "mlp.up_proj.weight"),
    ("ffn_down.weight", "mlp.down_proj.weight"),
    // Gemma 4: the per-layer scalar (HF `layer_scalar`, shape [1]).
    ("layer_output_scale.weight", "layer_scalar"),
    // Gemma 4 PLE (the converter reuses Gemma 3n's names).
    ("inp_gate.weight", "per_layer_input_gate.weight"),
    ("proj.weight", "per_layer_projection.weight"),
    ("post_norm.weight", "post_per_layer_input_norm.weight"),
    // Gemma 4 MoE (26B-A4B): router, expert banks, the extra norms.
    ("ffn_gate_inp.weight", "router.proj.weight"),
    ("ffn_gate_inp.scale", "router.scale"),
    ("ffn_down_exps.scale", "router.per_expert_scale"),
    ("ffn_gate_up_exps.weight", "experts.gate_up_proj"),
    ("ffn_down_exps.weight", "experts.down_proj"),
    ("post_ffw_norm_1.weight", "post_feedforward_layernorm_1.weight"),
    ("pre_ffw_norm_2.weight", "pre_feedforward_layernorm_2.weight"),
    ("post_ffw_norm_2.weight", "post_feedforward_layernorm_2.weight"),
];

const MODEL_TENSORS: [(&str, &str); 6] = [
    ("token_embd.weight", "embed_tokens.weight"),
    ("output_norm.weight", "norm.weight"),
    ("output.weight", "lm_head.weight"),
    ("per_layer_token_embd.weight", "embed_tokens_per_layer.weight"),
    ("per_layer_model_proj.weight", "per_layer_model_projection.weight"),
    ("per_layer_proj_norm.weight", "per_layer_projection_norm.weight"),
];

/// The Hugging Face key of a llama.cpp tensor name (`blk.3.attn_q.weight` →
/// `layers.3.self_attn.q_proj.weight`); `None` for tensors the text model
/// does not read as weights (`rope_freqs.weight` is read by the Gemma 4
/// config instead).
pub fn hf_key(gguf_name: &str) -> Option<String> {
    if let Some(rest) = gguf_name.strip_prefix("blk.") {
        let (layer, name) = rest.split_once('.')?;
        if layer.is_empty() || !layer.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let layer: usize = layer.parse().ok()?;
        let (_, hf) = LAYER_TENSORS.iter().find(|(g, _)| *g == name)?;
        return Some(format!("layers.{layer}.{hf}"));
    }
    let (_, hf) = MODEL_TENSORS.iter().find(|(g, _)| *g == gguf_name)?;
    Some(hf.to_string())
}

/// The llama.cpp name of a Hugging Face key (for messages).
pub fn gguf_name(hf: &str) -> Option<String> {
    if let Some(rest) = hf.strip_prefix("layers.") {
        let (layer, name) = rest.split_once('.')?;
        let (g, _) = LAYER_TENSORS.iter().find(|(_, h)| *h == name)?;
        return Some(format!("blk.{layer}.{g}"));
    }
    let (g, _) = MODEL_TENSORS.iter().find(|(_, h)| *h == hf)?;
    Some(g.to_string())
}

/// The model config a GGUF file describes (`general.architecture` is
/// `gemma3` or `gemma4`).
pub fn config(g: &GgufFile) -> Result<Gemma4Config, FrontendError> {
    match g.str("general.architecture")? {
        "gemma3" => super::gemma3::config(g),
        "gemma4" => super::gemma4::config(g),
        other => Err(FrontendError::Config {
            path: g.path.clone(),
            field: "general.architecture".into(),
            message: format!("`{other}` is not supported (gemma4c reads `gemma3` and `gemma4` GGUF files)"),
        }),
    }
}

/// Metadata access for one architecture's keys (`{arch}.{key}`), with
/// errors that name the full key.
pub(crate) struct ArchMeta<'a> {
    pub g: &'a GgufFile,
    pub arch: &'static str,
}

impl ArchMeta<'_> {
    pub fn key(&self, k: &str) -> String {
        format!("{}.{k}", self.arch)
    }

    pub fn bad(&self, field: &str, message: impl Into<String>) -> FrontendError {
        FrontendError::Config {
            path: self.g.path.clone(),
            field: field.to_string(),
            message: message.into(),
        }
    }

    /// A required positive integer.
    pub fn positive(&self, k: &str) -> Result<usize, FrontendError> {
        let key = self.key(k);
        match self.g.usize(&key)? {
            0 => Err(self.bad(&key, "must be positive")),
            v if v > crate::bounds::MAX_FIELD => Err(self.bad(
                &key,
                format!("{v} is larger than gemma4c accepts ({})", crate::bounds::MAX_FIELD),
            )),
            v => Ok(v),
        }
    }

    /// A positive integer, or `default` when the key is absent.
    pub fn positive_or(&self, k: &str, default: usize) -> Result<usize, FrontendError> {
        match self.g.meta(&self.key(k)) {
            None => Ok(default),
            Some(_) => self.positive(k),
        }
    }

    /// A per-layer integer: one value for every layer, or an array with one
    /// entry per layer (llama.cpp writes arrays when layers differ).
    pub fn per_layer(&self, k: &str, n_layers: usize) -> Result<Vec<usize>, FrontendError> {
        let key = self.key(k);
        let Some(items) = self.g.meta(&key).and_then(|v| v.as_array()) else {
            return Ok(vec![self.positive(k)?; n_layers]);
        };
        if items.len() != n_layers {
            return Err(self.bad(
                &key,
                format!("has {} entries but block_count is {n_layers}", items.len()),
            ));
        }
        items
            .iter()
            .enumerate()
            .map(|(i, v)| match v.as_u64() {
                Some(x) if x > 0 && x <= crate::bounds::MAX_FIELD as u64 => Ok(x as usize),
                _ => Err(self.bad(&key, format!("entry {i} is {}; expected a positive integer", v.kind()))),
            })
            .collect()
    }

    /// A positive, finite float, or `default` when the key is absent.
    pub fn positive_f64_or(&self, k: &str, default: f64) -> Result<f64, FrontendError> {
        let key = self.key(k);
        let v = self.g.f64_or(&key, default)?;
        if !(v > 0.0 && v.is_finite()) {
            return Err(self.bad(&key, format!("{v} must be a positive number")));
        }
        Ok(v)
    }

    /// A tensor's Hugging Face-order shape, or an error naming the tensor.
    pub fn tensor_shape(&self, name: &str) -> Result<Vec<usize>, FrontendError> {
        self.g
            .tensor(name)
            .map(|t| t.shape())
            .ok_or_else(|| self.bad(name, "tensor missing"))
    }

    /// `tokenizer.ggml.{k}` as a token id, or `default`.
    pub fn token_id(&self, k: &str, default: u32) -> Result<u32, FrontendError> {
        let key = format!("tokenizer.ggml.{k}");
        let v = self.g.usize_or(&key, default as usize)?;
        u32::try_from(v).map_err(|_| self.bad(&key, format!("{v} is not a token id")))
    }

    /// The EOS id, plus the named end-of-turn tokens when the vocabulary has
    /// them (llama.cpp and the checkpoints' generation configs stop on both).
    pub fn eos_ids(&self, end_of_turn: &[&str]) -> Result<Vec<u32>, FrontendError> {
        let mut ids = vec![self.token_id("eos_token_id", 1)?];
        if let Some(eot) = self.g.meta("tokenizer.ggml.eot_token_id").and_then(|v| v.as_u64()) {
            ids.push(eot as u32);
        }
        if let Ok(tokens) = self.g.array("tokenizer.ggml.tokens") {
            for name in end_of_turn {
                if let Some(i) = tokens.iter().position(|t| t.as_str() == Some(name)) {
                    ids.push(i as u32);
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        ids.retain(|id| seen.insert(*id));
        Ok(ids)
    }

    pub fn rms_norm_eps(&self) -> Result<f32, FrontendError> {
        Ok(self.positive_f64_or("attention.layer_norm_rms_epsilon", 1e-6)? as f32)
    }
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
            ("blk.4.layer_output_scale.weight", "layers.4.layer_scalar"),
            ("blk.1.inp_gate.weight", "layers.1.per_layer_input_gate.weight"),
            ("blk.1.proj.weight", "layers.1.per_layer_projection.weight"),
            ("blk.1.post_norm.weight", "layers.1.post_per_layer_input_norm.weight"),
            ("per_layer_token_embd.weight", "embed_tokens_per_layer.weight"),
            ("per_layer_model_proj.weight", "per_layer_model_projection.weight"),
            ("per_layer_proj_norm.weight", "per_layer_projection_norm.weight"),
            ("blk.3.ffn_gate_inp.weight", "layers.3.router.proj.weight"),
            ("blk.3.ffn_gate_inp.scale", "layers.3.router.scale"),
            ("blk.3.ffn_down_exps.scale", "layers.3.router.per_expert_scale"),
            ("blk.3.ffn_gate_up_exps.weight", "layers.3.experts.gate_up_proj"),
            ("blk.3.ffn_down_exps.weight", "layers.3.experts.down_proj"),
            (
                "blk.3.pre_ffw_norm_2.weight",
                "layers.3.pre_feedforward_layernorm_2.weight",
            ),
        ] {
            assert_eq!(hf_key(g).as_deref(), Some(h), "{g}");
            assert_eq!(gguf_name(h).as_deref(), Some(g), "{h}");
        }
        assert_eq!(hf_key("blk.x.attn_q.weight"), None);
        assert_eq!(hf_key("blk.+1.attn_q.weight"), None);
        assert_eq!(hf_key("rope_freqs.weight"), None);
        assert_eq!(hf_key("blk.0.attn_q.bias"), None);
    }
}
