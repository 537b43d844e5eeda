//! What `gemma4c inspect` reports: config summary, per-layer table, parameter
//! count and bytes read per decoded token.

use std::fmt::Write;

use crate::config::{Family, Gemma4Config, LayerType};
use crate::error::FrontendError;
use crate::gemma4::weight_manifest;

/// Weight traffic of one decode step, in elements.
pub struct DecodeTraffic {
    pub parameters: usize,
    /// Elements of weights read per decoded token: embedding tables contribute
    /// one row (the tied LM head still reads all of `embed_tokens`), MoE experts
    /// only the `top_k` chosen ones.
    pub weight_elements_per_token: usize,
    /// K+V elements cached per token of context, over all cache-owning layers.
    pub kv_elements_per_token: usize,
}

pub fn decode_traffic(cfg: &Gemma4Config) -> Result<DecodeTraffic, FrontendError> {
    let mut parameters = 0;
    let mut read = 0;
    for (key, shape) in weight_manifest(cfg)? {
        let n: usize = shape.iter().product();
        parameters += n;
        read += if key == "embed_tokens_per_layer.weight" {
            shape[1]
        } else if key.contains(".experts.") {
            let moe = cfg.moe.as_ref().map_or(1, |m| m.top_k);
            n / shape[0] * moe
        } else {
            n
        };
    }
    if !cfg.tie_word_embeddings {
        // embed_tokens is only gathered from; lm_head.weight is read whole.
        read -= cfg.vocab_size * cfg.hidden_size - cfg.hidden_size;
    }
    let kv = cfg
        .layers
        .iter()
        .filter(|l| !l.shares_kv())
        .map(|l| 2 * l.num_kv_heads * l.head_dim)
        .sum();
    Ok(DecodeTraffic {
        parameters,
        weight_elements_per_token: read,
        kv_elements_per_token: kv,
    })
}

fn human(n: f64) -> String {
    match n {
        n if n >= 1e9 => format!("{:.2} G", n / 1e9),
        n if n >= 1e6 => format!("{:.2} M", n / 1e6),
        n if n >= 1e3 => format!("{:.2} K", n / 1e3),
        n => format!("{n}"),
    }
}

pub fn render(cfg: &Gemma4Config) -> Result<String, FrontendError> {
    let t = decode_traffic(cfg)?;
    let bytes = cfg.dtype.size_bytes();
    let mut s = String::new();
    let _ = writeln!(s, "config: {}", cfg.path.display());
    if cfg.family == Family::Gemma3 {
        let _ = writeln!(
            s,
            "family gemma3  attention scale {}  RMSNorm scale 1 + w{}",
            cfg.attention_scale,
            if cfg.path.extension().is_some_and(|e| e == "gguf") {
                "  (GGUF: stored as 1 + w)"
            } else {
                ""
            }
        );
    }
    let _ = writeln!(
        s,
        "hidden {}  layers {}  query heads {}  vocab {}  sliding window {}  max positions {}",
        cfg.hidden_size,
        cfg.num_hidden_layers,
        cfg.num_attention_heads,
        cfg.vocab_size,
        cfg.sliding_window,
        cfg.max_position_embeddings
    );
    let _ = writeln!(
        s,
        "MLP {}  PLE {}  MoE {}  KV-shared layers {}  final soft-cap {}  dtype {}",
        cfg.intermediate_size,
        cfg.ple.as_ref().map_or("none".to_string(), |p| format!(
            "{} x {} (vocab {})",
            cfg.num_hidden_layers, p.hidden, p.vocab
        )),
        cfg.moe.as_ref().map_or("none".to_string(), |m| format!(
            "{} experts, top-{}, width {}",
            m.num_experts, m.top_k, m.intermediate_size
        )),
        cfg.num_kv_shared_layers,
        cfg.final_logit_softcapping
            .map_or("none".to_string(), |c| c.to_string()),
        cfg.dtype,
    );
    let _ = writeln!(s, "rope sliding: {:?}", cfg.rope_sliding);
    let _ = writeln!(s, "rope full:    {:?}", cfg.rope_full);
    let _ = writeln!(s);
    let _ = writeln!(s, "layer  type     head_dim  kv_heads  kv_from  k=v  mlp_width");
    for l in &cfg.layers {
        let ty = match l.layer_type {
            LayerType::Sliding => "sliding",
            LayerType::Full => "full",
        };
        let src = if l.shares_kv() {
            l.kv_source.to_string()
        } else {
            "own".to_string()
        };
        let _ = writeln!(
            s,
            "{:>5}  {:<7}  {:>8}  {:>8}  {:>7}  {:>3}  {:>9}",
            l.index,
            ty,
            l.head_dim,
            l.num_kv_heads,
            src,
            if l.k_eq_v { "yes" } else { "no" },
            l.mlp_width
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "parameters: {} ({})", t.parameters, human(t.parameters as f64));
    let _ = writeln!(
        s,
        "weight bytes read per decoded token ({}): {} ({}B)",
        cfg.dtype,
        t.weight_elements_per_token * bytes,
        human((t.weight_elements_per_token * bytes) as f64)
    );
    let _ = writeln!(
        s,
        "KV cache bytes per token of context (f32): {}",
        t.kv_elements_per_token * 4
    );
    Ok(s)
}
