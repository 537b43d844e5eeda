//! Gemma 4 text config: reads Hugging Face `config.json` (flat `gemma4_text` or
//! multimodal `gemma4` with `text_config`) and resolves the per-layer geometry
//! exactly as `transformers`' `Gemma4TextConfig` does.

use std::path::{Path, PathBuf};

use gemma4c_ir::{DType, RopeSpec};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::FrontendError;
use crate::fields::{read_json, size, yes, At, Size, TokenIds};

/// Attention type of a layer (`layer_types` entries; serialized, for the
/// fingerprint, under the Rust names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LayerType {
    #[serde(rename(deserialize = "sliding_attention"))]
    Sliding,
    #[serde(rename(deserialize = "full_attention"))]
    Full,
}

impl LayerType {
    pub fn hf_name(self) -> &'static str {
        match self {
            LayerType::Sliding => "sliding_attention",
            LayerType::Full => "full_attention",
        }
    }
}

/// Resolved geometry of one decoder layer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerConfig {
    pub index: usize,
    pub layer_type: LayerType,
    pub head_dim: usize,
    pub num_kv_heads: usize,
    /// Full layers of 26B/31B: no `v_proj`, V is the raw `k_proj` output.
    pub k_eq_v: bool,
    /// The layer whose K/V this layer attends over: itself, or for KV-sharing
    /// consumers the last earlier non-shared layer of the same type.
    pub kv_source: usize,
    pub mlp_width: usize,
}

impl LayerConfig {
    pub fn shares_kv(&self) -> bool {
        self.kv_source != self.index
    }
}

/// `rope_parameters[layer_type]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RopeParams {
    pub rope_type: String,
    pub theta: f64,
    pub partial_rotary_factor: f64,
    pub factor: f64,
}

impl RopeParams {
    /// Frequencies for a head of `head_dim` lanes.
    pub fn spec(&self, head_dim: usize) -> RopeSpec {
        let rotated_pairs = match self.rope_type.as_str() {
            // `int(partial_rotary_factor * head_dim // 2)`; the exponent keeps head_dim.
            "proportional" => (self.partial_rotary_factor * head_dim as f64 / 2.0).floor() as usize,
            _ => head_dim / 2,
        };
        RopeSpec {
            theta: self.theta,
            head_dim,
            rotated_pairs,
            // `linear` and `proportional` divide the frequencies by `factor`;
            // transformers' default RoPE ignores it (it only warns).
            factor: if self.rope_type == "default" { 1.0 } else { self.factor },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MoeConfig {
    pub num_experts: usize,
    pub top_k: usize,
    pub intermediate_size: usize,
}

/// Per-Layer Embeddings (E2B/E4B).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PleConfig {
    /// `hidden_size_per_layer_input` (P).
    pub hidden: usize,
    /// `vocab_size_per_layer_input`.
    pub vocab: usize,
}

/// The Gemma generation a config describes. Both share one config type and
/// one op set; their builders (`gemma3.rs`, `gemma4.rs`) differ in small ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Gemma3,
    Gemma4,
}

/// A Gemma text decoder's resolved config (Gemma 4, or Gemma 3 with `family`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Gemma4Config {
    /// Where it was read from (not part of the fingerprint).
    #[serde(skip)]
    pub path: PathBuf,
    pub family: Family,
    /// Multiplier of the q·k scores: 1.0 in Gemma 4 (q and k are RMS-normed),
    /// `query_pre_attn_scalar^-0.5` in Gemma 3.
    pub attention_scale: f32,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub layers: Vec<LayerConfig>,
    pub sliding_window: usize,
    pub rms_norm_eps: f32,
    pub final_logit_softcapping: Option<f32>,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Multimodal checkpoints only: ids (image, video, audio placeholders) that
    /// the text path replaces by `pad_token_id` before embedding.
    pub multimodal_placeholder_ids: Vec<u32>,
    pub num_kv_shared_layers: usize,
    pub use_double_wide_mlp: bool,
    pub ple: Option<PleConfig>,
    pub moe: Option<MoeConfig>,
    pub rope_sliding: RopeParams,
    pub rope_full: RopeParams,
    /// Declared weight dtype (`dtype` / `torch_dtype`); bf16 when absent, as released.
    pub dtype: DType,
    pub bos_token_id: u32,
    pub pad_token_id: u32,
    pub eos_token_ids: Vec<u32>,
}

impl Gemma4Config {
    pub fn rope(&self, layer_type: LayerType) -> &RopeParams {
        match layer_type {
            LayerType::Sliding => &self.rope_sliding,
            LayerType::Full => &self.rope_full,
        }
    }

    /// A digest of everything that shapes the model (not the file it came from),
    /// so a compiled plan can tell whether a checkpoint is the one it was built for.
    ///
    /// The digest is over the config's JSON (fields in declaration order, floats in shortest
    /// round-trip form), a format that does not change with the Rust version the way `Debug`
    /// output may.
    pub fn fingerprint(&self) -> String {
        let json = serde_json::to_string(self).expect("a config always serializes");
        // FNV-1a, 64 bit: stable across builds and platforms.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in json.bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{h:016x}")
    }

    /// Index of the first KV-sharing consumer layer.
    pub fn first_shared_layer(&self) -> usize {
        self.num_hidden_layers - self.num_kv_shared_layers
    }

    /// Reads `config.json` and, if present next to it, `generation_config.json`
    /// (for extra EOS ids).
    pub fn from_file(path: &Path) -> Result<Gemma4Config, FrontendError> {
        let mut cfg = Self::from_json(&read_json(path)?, path)?;
        let gen_path = path.with_file_name("generation_config.json");
        if gen_path.exists() {
            #[derive(Deserialize)]
            struct Generation {
                eos_token_id: Option<TokenIds>,
            }
            let at = At {
                path: &gen_path,
                prefix: "",
            };
            let gen: Generation = at.parse(&read_json(&gen_path)?)?;
            for id in gen.eos_token_id.unwrap_or_default().0 {
                if !cfg.eos_token_ids.contains(&id) {
                    cfg.eos_token_ids.push(id);
                }
            }
        }
        Ok(cfg)
    }

    /// Parses an already-loaded `config.json`; `path` is used in messages.
    pub fn from_json(root: &Value, path: &Path) -> Result<Gemma4Config, FrontendError> {
        let outer = At { path, prefix: "" };
        let top = root
            .as_object()
            .ok_or_else(|| outer.err("(root)", "expected a JSON object"))?;
        let model_type = top.get("model_type").and_then(Value::as_str).unwrap_or("");
        let unknown = |found: &str| FrontendError::UnknownModelType {
            path: path.to_path_buf(),
            found: found.to_string(),
        };
        let (family, multimodal) = match model_type {
            "gemma4_text" => (Family::Gemma4, false),
            "gemma4" => (Family::Gemma4, true),
            "gemma3_text" => (Family::Gemma3, false),
            "gemma3" => (Family::Gemma3, true),
            other => return Err(unknown(other)),
        };
        if !multimodal {
            return resolve_text(family, root, outer, Vec::new());
        }
        let Some(Value::Object(text)) = top.get("text_config") else {
            return Err(outer.err(
                "text_config",
                format!("a `{model_type}` config must contain a `text_config` object"),
            ));
        };
        // Special ids may live on the outer config only.
        let mut text = text.clone();
        for key in ["bos_token_id", "eos_token_id", "pad_token_id", "dtype", "torch_dtype"] {
            if let (None, Some(v)) = (text.get(key), top.get(key)) {
                text.insert(key.to_string(), v.clone());
            }
        }
        #[derive(Deserialize)]
        struct Outer {
            #[serde(default = "yes")]
            tie_word_embeddings: bool,
            image_token_id: Option<TokenIds>,
            video_token_id: Option<TokenIds>,
            audio_token_id: Option<TokenIds>,
        }
        let o: Outer = outer.parse(root)?;
        // `Gemma{3,4}ForConditionalGeneration` ties its LM head by the outer flag.
        text.insert("tie_word_embeddings".into(), Value::Bool(o.tie_word_embeddings));
        // Gemma 4's text path replaces image/video/audio placeholder ids by pad before the
        // embedding lookups (transformers' defaults when absent; an explicit null: none).
        let mut placeholders = Vec::new();
        if family == Family::Gemma4 {
            for (key, ids, default) in [
                ("image_token_id", o.image_token_id, 258_880u32),
                ("video_token_id", o.video_token_id, 258_884),
                ("audio_token_id", o.audio_token_id, 258_881),
            ] {
                match ids {
                    Some(ids) => placeholders.extend(ids.0),
                    None if top.contains_key(key) => {}
                    None => placeholders.push(default),
                }
            }
        }
        if let Some(t) = text.get("model_type").and_then(Value::as_str) {
            if family == Family::Gemma4 && t != "gemma4_text" {
                return Err(unknown(t));
            }
        }
        let at = At {
            path,
            prefix: "text_config.",
        };
        resolve_text(family, &Value::Object(text), at, placeholders)
    }
}

fn resolve_text(family: Family, text: &Value, at: At, placeholders: Vec<u32>) -> Result<Gemma4Config, FrontendError> {
    let common: Common = at.parse(text)?;
    match family {
        Family::Gemma4 => crate::gemma4_config::resolve(at.parse(text)?, common, at, placeholders),
        Family::Gemma3 => crate::gemma3_config::resolve(at.parse(text)?, common, at),
    }
}

/// The layer whose K/V cache layer `index` attends over: itself below `first_shared`, else
/// (a KV-sharing consumer) the last earlier non-shared layer of the same type, as transformers
/// picks it. `None` when no earlier layer has that type.
pub(crate) fn kv_source(index: usize, first_shared: usize, types: &[LayerType]) -> Option<usize> {
    if index < first_shared {
        return Some(index);
    }
    (0..first_shared).rev().find(|&j| types[j] == types[index])
}

/// The first KV-sharing consumer whose (head_dim, KV heads) differ from its source's: a
/// consumer attends over its source's cache, so their geometry must agree.
pub(crate) fn kv_geometry_mismatch(layers: &[LayerConfig]) -> Option<(&LayerConfig, &LayerConfig)> {
    layers
        .iter()
        .map(|l| (l, &layers[l.kv_source]))
        .find(|(l, src)| (l.head_dim, l.num_kv_heads) != (src.head_dim, src.num_kv_heads))
}

/// Text config keys Gemma 3 and Gemma 4 share, with transformers' defaults.
#[derive(Deserialize)]
pub(crate) struct Common {
    #[serde(default = "gelu")]
    pub hidden_activation: String,
    #[serde(default)]
    pub attention_bias: bool,
    pub layer_types: Option<Vec<LayerType>>,
    dtype: Option<String>,
    torch_dtype: Option<String>,
    pub final_logit_softcapping: Option<f64>,
    eos_token_id: Option<TokenIds>,
    bos_token_id: Option<TokenIds>,
    pad_token_id: Option<TokenIds>,
    #[serde(default = "size::<131_072>")]
    pub max_position_embeddings: Size,
    #[serde(default = "eps")]
    rms_norm_eps: f64,
    #[serde(default = "yes")]
    pub tie_word_embeddings: bool,
}

fn gelu() -> String {
    "gelu_pytorch_tanh".into()
}

fn eps() -> f64 {
    1e-6
}

impl Common {
    /// Checks what neither family supports; `model` names it in messages.
    pub(crate) fn check(&self, at: At, model: &str) -> Result<(), FrontendError> {
        if self.hidden_activation != "gelu_pytorch_tanh" {
            return Err(at.err(
                "hidden_activation",
                format!(
                    "`{}` is not supported; {model} uses `gelu_pytorch_tanh`",
                    self.hidden_activation
                ),
            ));
        }
        if self.attention_bias {
            return Err(at.err(
                "attention_bias",
                format!("must be false: {model} has no attention biases"),
            ));
        }
        // No prompt fits a context of 0 tokens: say so at load, not at the first run.
        if self.max_position_embeddings.0 == 0 {
            return Err(at.err("max_position_embeddings", "must be positive"));
        }
        Ok(())
    }

    /// `dtype` (or the older `torch_dtype`); bf16 when absent, as released.
    pub(crate) fn dtype(&self, at: At) -> Result<DType, FrontendError> {
        let (key, name) = match (&self.dtype, &self.torch_dtype) {
            (Some(d), _) => ("dtype", d),
            (None, Some(d)) => ("torch_dtype", d),
            (None, None) => return Ok(DType::BF16),
        };
        DType::parse(name)
            .filter(|d| d.is_float())
            .ok_or_else(|| at.err(key, format!("expected float32, bfloat16 or float16, got \"{name}\"")))
    }

    pub(crate) fn rms_norm_eps(&self, at: At) -> Result<f32, FrontendError> {
        let eps = self.rms_norm_eps as f32;
        if !is_positive(eps as f64) {
            return Err(at.err("rms_norm_eps", "must be a positive number"));
        }
        Ok(eps)
    }

    /// (bos, pad, eos) with transformers' Gemma defaults (2, 0, [1]).
    pub(crate) fn token_ids(&self) -> (u32, u32, Vec<u32>) {
        let eos = self.eos_token_id.clone().map_or(vec![1], |t| t.0);
        (
            TokenIds::first_or(self.bos_token_id.clone(), 2),
            TokenIds::first_or(self.pad_token_id.clone(), 0),
            eos,
        )
    }
}

/// `rope_parameters`: one entry per layer type.
#[derive(Deserialize)]
#[serde(expecting = "an object keyed by layer type")]
pub(crate) struct RopeTable {
    pub sliding_attention: Option<RopeEntry>,
    pub full_attention: Option<RopeEntry>,
}

impl RopeTable {
    pub(crate) fn get(&self, t: LayerType) -> Option<&RopeEntry> {
        match t {
            LayerType::Sliding => self.sliding_attention.as_ref(),
            LayerType::Full => self.full_attention.as_ref(),
        }
    }
}

#[derive(Deserialize)]
#[serde(expecting = "an object")]
pub(crate) struct RopeEntry {
    rope_type: Option<String>,
    /// The legacy spelling transformers still accepts.
    #[serde(rename = "type")]
    legacy_type: Option<String>,
    pub rope_theta: Option<f64>,
    pub partial_rotary_factor: Option<f64>,
    pub factor: Option<f64>,
}

impl RopeEntry {
    pub(crate) fn rope_type(&self) -> &str {
        self.rope_type
            .as_deref()
            .or(self.legacy_type.as_deref())
            .unwrap_or("default")
    }
}

/// True for finite-or-infinite positive numbers; false for zero, negatives and NaN.
pub(crate) fn is_positive(x: f64) -> bool {
    x > 0.0
}
