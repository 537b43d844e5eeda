//! Sanity bounds on sizes derived from a config, checked when the config is
//! resolved (so `inspect` refuses what `run` could not hold), before anything
//! is built or allocated. A config is untrusted: `head_dim: 2147483648` must be
//! an error naming the field, not an abort after gigabytes of allocation.

use gemma4c_ir::limits::{host_memory_bytes, human_bytes};

use crate::config::Gemma4Config;
use crate::error::FrontendError;

/// Largest value of any integer size field (no Gemma 4 size comes near it;
/// with it, a product of two fields cannot overflow 64 bits).
pub const MAX_FIELD: usize = 1 << 32;

/// Most decoder layers a config may have (Gemma 4 has 30 to 60).
pub const MAX_LAYERS: usize = 10_000;

/// The largest tensors a config implies, with the fields that size them.
fn tensors(cfg: &Gemma4Config) -> Vec<(String, &'static str, Vec<usize>)> {
    let h = cfg.hidden_size;
    let mut t = vec![(
        "embed_tokens.weight".to_string(),
        "vocab_size, hidden_size",
        vec![cfg.vocab_size, h],
    )];
    if let Some(ple) = &cfg.ple {
        t.push((
            "embed_tokens_per_layer.weight".into(),
            "vocab_size_per_layer_input, num_hidden_layers, hidden_size_per_layer_input",
            vec![ple.vocab, cfg.num_hidden_layers, ple.hidden],
        ));
    }
    if let Some(moe) = &cfg.moe {
        t.push((
            "layers.0.experts.gate_up_proj".into(),
            "num_experts, moe_intermediate_size, hidden_size",
            vec![moe.num_experts, 2 * moe.intermediate_size, h],
        ));
    }
    for l in &cfg.layers {
        let i = l.index;
        t.push((
            format!("layers.{i}.self_attn.q_proj.weight"),
            "num_attention_heads, head_dim, hidden_size",
            vec![cfg.num_attention_heads, l.head_dim, h],
        ));
        t.push((
            format!("layers.{i}.self_attn.k_proj.weight"),
            "num_key_value_heads, head_dim, hidden_size",
            vec![l.num_kv_heads, l.head_dim, h],
        ));
        t.push((
            format!("layers.{i}.mlp.gate_proj.weight"),
            "intermediate_size, hidden_size",
            vec![l.mlp_width, h],
        ));
    }
    t
}

/// Every tensor the config implies must fit in this machine's memory (it is
/// read in full by the reference executor and streamed by the JIT), and its
/// size must not overflow.
pub(crate) fn check_sizes(cfg: &Gemma4Config) -> Result<(), FrontendError> {
    let limit = host_memory_bytes();
    let elem = cfg.dtype.size_bytes() as u128;
    for (key, fields, shape) in tensors(cfg) {
        let bytes = shape.iter().fold(elem, |acc, &d| acc.saturating_mul(d as u128));
        if bytes > limit as u128 {
            // Blame the largest factor: the one most likely mistyped.
            let (field, _) = fields
                .split(", ")
                .zip(&shape)
                .max_by_key(|&(_, &d)| d)
                .unwrap_or(("hidden_size", &0));
            return Err(FrontendError::Config {
                path: cfg.path.clone(),
                field: field.to_string(),
                message: format!(
                    "tensor `{key}` ({fields}: {shape:?}) would take {}, more than this machine's {} of memory",
                    if bytes > u64::MAX as u128 {
                        "more than 2^64 bytes".to_string()
                    } else {
                        human_bytes(bytes as u64)
                    },
                    human_bytes(limit)
                ),
            });
        }
    }
    Ok(())
}

/// KV-cache bytes of a context of `tokens` (f32 caches, shared layers counted once).
pub fn kv_cache_bytes(cfg: &Gemma4Config, tokens: usize) -> Option<usize> {
    let per_token = cfg
        .layers
        .iter()
        .filter(|l| !l.shares_kv())
        .try_fold(0usize, |acc, l| {
            acc.checked_add(2usize.checked_mul(l.num_kv_heads)?.checked_mul(l.head_dim)?)
        })?;
    per_token.checked_mul(4)?.checked_mul(tokens)
}
