//! Gemma 4 text config: reads Hugging Face `config.json` (flat `gemma4_text` or
//! multimodal `gemma4` with `text_config`) and resolves the per-layer geometry
//! exactly as `transformers`' `Gemma4TextConfig` does.

use std::path::{Path, PathBuf};

use gemma4c_ir::{DType, RopeSpec};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::FrontendError;
use crate::fields::{read_json, Fields};

/// Attention type of a layer (`layer_types` entries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum LayerType {
    Sliding,
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
        let root = read_json(path)?;
        let mut cfg = Self::from_json(&root, path)?;
        let gen_path = path.with_file_name("generation_config.json");
        if gen_path.exists() {
            let gen = read_json(&gen_path)?;
            if let Some(v) = gen.get("eos_token_id") {
                let f = Fields::new(&gen_path, "", gen.as_object().unwrap_or(&Map::new()).clone());
                for id in f.token_ids("eos_token_id", v)? {
                    if !cfg.eos_token_ids.contains(&id) {
                        cfg.eos_token_ids.push(id);
                    }
                }
            }
        }
        Ok(cfg)
    }

    /// Parses an already-loaded `config.json`; `path` is used in messages.
    pub fn from_json(root: &Value, path: &Path) -> Result<Gemma4Config, FrontendError> {
        let top = root.as_object().ok_or_else(|| FrontendError::Config {
            path: path.to_path_buf(),
            field: "(root)".into(),
            message: "expected a JSON object".into(),
        })?;
        let model_type = top.get("model_type").and_then(Value::as_str).unwrap_or("");
        if model_type.starts_with("gemma3") {
            return crate::gemma3_config::from_json(top, path);
        }
        let outer = Fields::new(path, "", top.clone());
        let (text, prefix, placeholders) = match model_type {
            "gemma4_text" => (top.clone(), "", Vec::new()),
            "gemma4" => match top.get("text_config") {
                Some(Value::Object(t)) => {
                    // Special ids may live on the outer config only.
                    let mut t = t.clone();
                    for key in ["bos_token_id", "eos_token_id", "pad_token_id", "dtype", "torch_dtype"] {
                        if let (None, Some(v)) = (t.get(key), top.get(key)) {
                            t.insert(key.to_string(), v.clone());
                        }
                    }
                    // `Gemma4ForConditionalGeneration` ties its LM head by the outer flag.
                    t.insert(
                        "tie_word_embeddings".into(),
                        Value::Bool(outer.bool_or("tie_word_embeddings", true)?),
                    );
                    // Its text path replaces image/video/audio placeholder ids by pad
                    // before the embedding lookups (transformers' defaults when absent).
                    let mut ids = Vec::new();
                    for (key, default) in [
                        ("image_token_id", 258_880u32),
                        ("video_token_id", 258_884),
                        ("audio_token_id", 258_881),
                    ] {
                        match outer.get(key) {
                            Some(v) => ids.extend(outer.token_ids(key, v)?),
                            None if top.contains_key(key) => {} // explicit null: no placeholder
                            None => ids.push(default),
                        }
                    }
                    (t, "text_config.", ids)
                }
                _ => {
                    return Err(FrontendError::Config {
                        path: path.to_path_buf(),
                        field: "text_config".into(),
                        message: "a `gemma4` config must contain a `text_config` object".into(),
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
        if let Some(t) = text.get("model_type").and_then(Value::as_str) {
            if t != "gemma4_text" {
                return Err(FrontendError::UnknownModelType {
                    path: path.to_path_buf(),
                    found: t.to_string(),
                });
            }
        }
        resolve(&Fields::new(path, prefix, text), placeholders)
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

fn resolve(f: &Fields, multimodal_placeholder_ids: Vec<u32>) -> Result<Gemma4Config, FrontendError> {
    let vocab_size = f.usize_req("vocab_size")?;
    let hidden_size = f.usize_req("hidden_size")?;
    let num_hidden_layers = f.usize_req("num_hidden_layers")?;
    let num_attention_heads = f.usize_req("num_attention_heads")?;
    let num_key_value_heads = f.usize_req("num_key_value_heads")?;
    let head_dim = f.usize_req("head_dim")?;
    let intermediate_size = f.usize_req("intermediate_size")?;
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

    let activation = f
        .get("hidden_activation")
        .and_then(Value::as_str)
        .unwrap_or("gelu_pytorch_tanh");
    if activation != "gelu_pytorch_tanh" {
        return Err(f.err(
            "hidden_activation",
            format!("`{activation}` is not supported; Gemma 4 uses `gelu_pytorch_tanh`"),
        ));
    }
    if f.bool_or("attention_bias", false)? {
        return Err(f.err("attention_bias", "must be false: Gemma 4 has no attention biases"));
    }
    if f.get("use_bidirectional_attention").and_then(Value::as_str) == Some("all") {
        return Err(f.err(
            "use_bidirectional_attention",
            "`all` (non-causal text attention) is not supported",
        ));
    }

    let layer_types = parse_layer_types(f, num_hidden_layers)?;
    let sliding_window = f.usize_or("sliding_window", 512)?;
    if sliding_window == 0 {
        return Err(f.err("sliding_window", "must be positive"));
    }

    // Per-layer geometry: hub-style keys, then transformers-5.23 `per_layer_config` overrides.
    let attention_k_eq_v = f.bool_or("attention_k_eq_v", false)?;
    let global_head_dim = f.usize_or("global_head_dim", 512)?;
    let num_global_kv = f.usize_opt("num_global_key_value_heads")?;
    let overrides = parse_per_layer_config(f, num_hidden_layers)?;
    let num_kv_shared_layers = f.usize_or("num_kv_shared_layers", 0)?;
    if num_kv_shared_layers >= num_hidden_layers && num_kv_shared_layers > 0 {
        return Err(f.err(
            "num_kv_shared_layers",
            format!("{num_kv_shared_layers} leaves no layer to produce K/V (num_hidden_layers is {num_hidden_layers})"),
        ));
    }
    let first_shared = num_hidden_layers - num_kv_shared_layers;
    let use_double_wide_mlp = f.bool_or("use_double_wide_mlp", false)?;

    let mut layers = Vec::with_capacity(num_hidden_layers);
    for (index, &layer_type) in layer_types.iter().enumerate() {
        let (mut hd, mut nkv) = match (layer_type, &overrides) {
            (LayerType::Sliding, _) => (head_dim, num_key_value_heads),
            // With per_layer_config present, the hub keys are ignored (as in transformers).
            (LayerType::Full, Some(_)) => (head_dim, num_key_value_heads),
            (LayerType::Full, None) => (
                global_head_dim,
                match (attention_k_eq_v, num_global_kv) {
                    (true, Some(n)) => n,
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
            k_eq_v: attention_k_eq_v && layer_type == LayerType::Full,
            kv_source,
            mlp_width: intermediate_size * if use_double_wide_mlp && consumer { 2 } else { 1 },
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

    let ple_hidden = f.usize_or("hidden_size_per_layer_input", 256)?;
    let ple = if ple_hidden > 0 {
        Some(PleConfig {
            hidden: ple_hidden,
            vocab: f.usize_or("vocab_size_per_layer_input", 262_144)?,
        })
    } else {
        None
    };

    let moe = if f.bool_or("enable_moe_block", false)? {
        let num_experts = f.usize_req("num_experts")?;
        let top_k = f.usize_req("top_k_experts")?;
        let intermediate = f.usize_req("moe_intermediate_size")?;
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

    let (rope_sliding, rope_full) = parse_rope(f)?;
    let dtype = match f.get("dtype").or_else(|| f.get("torch_dtype")) {
        None => DType::BF16,
        Some(v) => v
            .as_str()
            .and_then(DType::parse)
            .filter(|d| d.is_float())
            .ok_or_else(|| f.err("dtype", format!("expected float32, bfloat16 or float16, got {v}")))?,
    };
    // transformers computes tanh(x / c) * c whenever the field is not null;
    // tanh is odd, so a negative c equals |c|. Zero would divide by zero.
    let softcap = match f.get("final_logit_softcapping") {
        None | Some(Value::Null) => None,
        Some(_) => {
            let c = f.f64_or("final_logit_softcapping", 0.0)?;
            if c == 0.0 || !c.is_finite() {
                return Err(f.err(
                    "final_logit_softcapping",
                    format!("{c} is not a usable cap (tanh(x / c) * c); use null for no soft-capping"),
                ));
            }
            Some(c.abs() as f32)
        }
    };
    let eos = match f.get("eos_token_id") {
        Some(v) => f.token_ids("eos_token_id", v)?,
        None => vec![1],
    };
    let token = |key: &str, default: u32| -> Result<u32, FrontendError> {
        Ok(match f.get(key) {
            Some(v) => f.token_ids(key, v)?.first().copied().unwrap_or(default),
            None => default,
        })
    };
    let max_position_embeddings = f.usize_or("max_position_embeddings", 131_072)?;
    let rms_norm_eps = f.f64_or("rms_norm_eps", 1e-6)? as f32;
    if !is_positive(rms_norm_eps as f64) {
        return Err(f.err("rms_norm_eps", "must be a positive number"));
    }
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
        rms_norm_eps,
        final_logit_softcapping: softcap,
        max_position_embeddings,
        tie_word_embeddings: f.bool_or("tie_word_embeddings", true)?,
        multimodal_placeholder_ids,
        num_kv_shared_layers,
        use_double_wide_mlp,
        ple,
        moe,
        rope_sliding,
        rope_full,
        dtype,
        bos_token_id: token("bos_token_id", 2)?,
        pad_token_id: token("pad_token_id", 0)?,
        eos_token_ids: eos,
    };
    crate::bounds::check_sizes(&cfg)?;
    Ok(cfg)
}

pub(crate) fn parse_layer_types(f: &Fields, n: usize) -> Result<Vec<LayerType>, FrontendError> {
    let mut types = match f.get("layer_types") {
        // transformers' default: every 6th layer is full attention.
        None => (0..n)
            .map(|i| {
                if (i + 1) % 6 == 0 {
                    LayerType::Full
                } else {
                    LayerType::Sliding
                }
            })
            .collect(),
        Some(Value::Array(items)) => {
            if items.len() != n {
                return Err(f.err(
                    "layer_types",
                    format!("has {} entries but num_hidden_layers is {n}", items.len()),
                ));
            }
            items
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
                .collect::<Result<Vec<_>, _>>()?
        }
        Some(v) => return Err(f.err("layer_types", format!("expected a list, got {v}"))),
    };
    // transformers forces the last layer to full attention.
    if let Some(last) = types.last_mut() {
        *last = LayerType::Full;
    }
    Ok(types)
}

/// Sparse `(head_dim, num_key_value_heads)` overrides keyed by layer index.
type Overrides = Vec<Option<(Option<usize>, Option<usize>)>>;

fn parse_per_layer_config(f: &Fields, n: usize) -> Result<Option<Overrides>, FrontendError> {
    let Some(v) = f.get("per_layer_config") else {
        return Ok(None);
    };
    let obj = v.as_object().ok_or_else(|| {
        f.err(
            "per_layer_config",
            format!("expected an object keyed by layer index, got {v}"),
        )
    })?;
    let mut out: Overrides = vec![None; n];
    for (key, entry) in obj {
        let field = format!("per_layer_config.{key}");
        let idx: usize = key.parse().map_err(|_| f.err(&field, "key must be a layer index"))?;
        if idx >= n {
            return Err(f.err(&field, format!("layer {idx} does not exist (num_hidden_layers is {n})")));
        }
        let e = entry
            .as_object()
            .ok_or_else(|| f.err(&field, format!("expected an object, got {entry}")))?;
        let sub = Fields::new(f.path, "", e.clone());
        let hd = sub
            .usize_opt("head_dim")
            .map_err(|_| f.err(&field, "head_dim must be an integer"))?;
        let kv = sub
            .usize_opt("num_key_value_heads")
            .map_err(|_| f.err(&field, "num_key_value_heads must be an integer"))?;
        out[idx] = Some((hd, kv));
    }
    Ok(Some(out))
}

fn parse_rope(f: &Fields) -> Result<(RopeParams, RopeParams), FrontendError> {
    let default_for = |t: LayerType| match t {
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
    };
    let Some(all) = f.get("rope_parameters") else {
        return Ok((default_for(LayerType::Sliding), default_for(LayerType::Full)));
    };
    let all = all
        .as_object()
        .ok_or_else(|| f.err("rope_parameters", "expected an object keyed by layer type"))?;
    let one = |t: LayerType| -> Result<RopeParams, FrontendError> {
        let field = format!("rope_parameters.{}", t.hf_name());
        let Some(p) = all.get(t.hf_name()) else {
            return Ok(default_for(t));
        };
        let p = p.as_object().ok_or_else(|| f.err(&field, "expected an object"))?;
        let sub = Fields::new(f.path, "", p.clone());
        // `type` is the legacy spelling transformers still accepts.
        let rope_type = sub
            .get("rope_type")
            .or_else(|| sub.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_string();
        if !["default", "linear", "proportional"].contains(&rope_type.as_str()) {
            return Err(f.err(
                &format!("{field}.rope_type"),
                format!("`{rope_type}` is not supported (expected `default`, `linear` or `proportional`)"),
            ));
        }
        let num = |k: &str, d: f64| {
            sub.f64_or(k, d)
                .map_err(|_| f.err(&format!("{field}.{k}"), "expected a number"))
        };
        let params = RopeParams {
            theta: num("rope_theta", 10_000.0)?,
            partial_rotary_factor: num("partial_rotary_factor", 1.0)?,
            factor: num("factor", 1.0)?,
            rope_type,
        };
        if !is_positive(params.theta)
            || !is_positive(params.factor)
            || !(0.0..=1.0).contains(&params.partial_rotary_factor)
        {
            return Err(f.err(
                &field,
                "rope_theta and factor must be positive and partial_rotary_factor in [0, 1]",
            ));
        }
        Ok(params)
    };
    Ok((one(LayerType::Sliding)?, one(LayerType::Full)?))
}

/// True for finite-or-infinite positive numbers; false for zero, negatives and NaN.
pub(crate) fn is_positive(x: f64) -> bool {
    x > 0.0
}
