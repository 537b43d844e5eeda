//! Tenstorrent backend: a plan → TT-Lang kernels (kernels.py), the TTNN host program (model.py),
//! its entry point (run.py), simulator-only support (sim_support.py) and the prepared weights
//! (weights.safetensors).
//!
//! The kernels are rendered from one tera template per family (`backends/templates/tt/`, each
//! from a typed context: `render.rs`, `kernels::KernelCtx`), with
//! every shape, grid and block size a literal; output is deterministic. The host program runs the
//! plan's prefill program over the prompt in chunks of 32 positions (one tile row), then its
//! decode program one token at a time, one launch per step in plan order; see `lower/` for how
//! steps map to launches and `layout.rs` for the device layout of activations.

pub mod backend;
pub mod bfp8;
pub mod kernels;
pub mod layout;
pub mod lower;
pub mod perf;
mod render;
pub mod target;
pub mod weights;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use gemma4c_passes::Plan;
use serde_json::{json, Value};

pub use render::render_standalone;
pub use target::{TtTarget, WeightFormat};
pub use weights::{DtypeOf, RowReader, WeightReader, Weights};

/// An error of the Tenstorrent backend (unsupported plan shape, hardware limit, I/O).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TtError(pub String);

impl TtError {
    pub fn new(msg: impl Into<String>) -> TtError {
        TtError(msg.into())
    }
}

impl fmt::Display for TtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TtError {}

/// The generated text files and the numbers for stats.json.
pub struct Emitted {
    /// File name → contents (kernels.py, model.py, run.py, sim_support.py, README.md).
    pub files: BTreeMap<String, String>,
    pub lowered: lower::Lowered,
    pub stats: Value,
}

/// Generates the Python side of the artifact for `plan` (no weights needed).
pub fn emit(plan: &Plan, target: &TtTarget) -> Result<Emitted, TtError> {
    let low = lower::lower(plan, target)?;
    let model = plan.model.source.as_deref().map_or_else(
        || format!("config {}", plan.model.fingerprint),
        |s| {
            Path::new(s)
                .file_name()
                .map_or(s.to_string(), |f| f.to_string_lossy().into_owned())
        },
    );
    let files = render::files(plan, target, &low, &model)?;

    // Per-kernel statistics.
    let mut uses: BTreeMap<usize, usize> = BTreeMap::new();
    for l in &low.launches {
        if let Some(k) = l.kernel {
            *uses.entry(k).or_default() += 1;
        }
    }
    let per_kernel_uses: Vec<usize> = (0..low.kernels.len())
        .map(|i| uses.get(&i).copied().unwrap_or(0))
        .collect();
    // The token selection reads the logits row's tiles (bf16): one tile row of the vocabulary.
    let logits_bytes = plan.model.vocab_size.div_ceil(32) * 32 * 32 * 2;
    let (perf_per_kernel, perf_total) = perf::model(
        target,
        &low.kernels,
        &per_kernel_uses,
        &low.all_reduce_bytes,
        Some(logits_bytes),
    );
    let kernels: serde_json::Map<String, Value> = low
        .kernels
        .iter()
        .zip(perf_per_kernel)
        .zip(&per_kernel_uses)
        .map(|((k, mut perf), &n)| {
            let m = perf.as_object_mut().expect("object");
            m.insert("family".into(), json!(k.family.name()));
            m.insert("grid".into(), json!({"cols": k.grid.cols, "rows": k.grid.rows}));
            m.insert("dataflow_buffers".into(), json!(k.dfbs.len()));
            m.insert("l1_bytes_per_core".into(), json!(k.l1_bytes()));
            m.insert("launches_per_token".into(), json!(n));
            (k.name.clone(), perf)
        })
        .collect();
    // Launches per token: kernels, the all-reduces and the token selection (each one operation
    // to dispatch).
    let launches: usize = per_kernel_uses.iter().sum::<usize>() + low.all_reduce_bytes.len() + 1;
    let layers = decode_layers(plan);
    let prefill = prefill_stats(target, &low);
    let dram = dram_use(&low, target);
    target.check_dram(dram.total(), &format!("the compiled model ({model})"))?;
    let stats = json!({
        "device": target.name,
        "grid": {"cols": target.grid.cols, "rows": target.grid.rows},
        "mesh": [target.mesh.0, target.mesh.1],
        "chips": target.chips(),
        "sharded_weights": low.shards.len(),
        "all_reduces_per_token": low.all_reduce_bytes.len(),
        "weights": target.weights.name(),
        "l1_bytes_per_core": target.l1_bytes,
        "l1_total_bytes_per_core": target.l1_total,
        "dram": {
            "weights_bytes": dram.weights,
            "kv_cache_bytes": dram.kv,
            "activation_bytes": dram.activations,
            "total_bytes": dram.total(),
            "counted_per_chip": true,
            "available_bytes": target.dram_available(),
            "host_table_bytes": dram.host_tables,
        },
        "max_dataflow_buffers": target.max_dfbs,
        "device_launches_per_token": launches,
        "layers": layers,
        "launches_per_layer": (launches as f64 / layers.max(1) as f64 * 100.0).round() / 100.0,
        "performance": perf_total,
        "prefill": prefill,
        // Distinct TT-Lang programs to compile: one per kernel, whatever the position, sequence
        // length or --max-context (positions and offsets are read from device tensors).
        "programs": low.kernels.len(),
        // What crosses to the host per token (one chip's copy, as model.py reads it): the
        // greedy id (uint32, row major), or when sampling (--top-k <= 32) one bf16 tile of
        // values and one uint32 tile of ids as ttnn.topk writes them (twice that for k <= 64).
        "host_readback_bytes_per_token": 4,
        "host_readback_bytes_per_token_sampling": 32 * 32 * (2 + 4),
        "token_selection": "on the device: ttnn.argmax (greedy) or ttnn.topk (sampling)",
        "host_row_fetches_per_token": low.launches.iter().filter(|l| l.kernel.is_none()).count(),
        "max_l1_bytes_per_core": low.kernels.iter().map(|k| k.l1_bytes()).max().unwrap_or(0),
        "max_dataflow_buffers_per_kernel": low.kernels.iter().map(|k| k.dfbs.len()).max().unwrap_or(0),
        "kernels": kernels,
    });
    Ok(Emitted {
        files,
        lowered: low,
        stats,
    })
}

/// The prefill program's launches per chunk and its modelled speed (null without one). A chunk's
/// launches cost what decode's do: decode already computes (and the model counts) whole 32-row
/// tiles, so a chunk streams the weights of its cache-filling steps once for 32 tokens (the layers
/// that write K/V, no LM head: `lower::program::cache_filling`). model.py runs chunks
/// untraced (`modelled_tok_s`); `modelled_tok_s_traced` is what a captured chunk would give.
fn prefill_stats(target: &TtTarget, low: &lower::Lowered) -> Value {
    let Some(p) = &low.prefill else {
        return Value::Null;
    };
    let mut uses = vec![0; low.kernels.len()];
    for l in &p.launches {
        if let Some(k) = l.kernel {
            uses[k] += 1;
        }
    }
    let (_, total) = perf::model(target, &low.kernels, &uses, &p.all_reduce_bytes, None);
    let tokens = lower::PREFILL_CHUNK as f64;
    let ms = |k: &str| total[k].as_f64().unwrap_or(f64::NAN);
    let tok_s = |k: &str| (tokens / ms(k) * 1e3 * 10.0).round() / 10.0;
    json!({
        "chunk_tokens": lower::PREFILL_CHUNK,
        "launches_per_chunk": uses.iter().sum::<usize>() + p.all_reduce_bytes.len(),
        "modelled_ms_per_chunk": ms("modelled_ms_per_token"),
        "modelled_ms_per_chunk_traced": ms("modelled_ms_per_token_traced"),
        "modelled_tok_s": tok_s("modelled_ms_per_token"),
        "modelled_tok_s_traced": tok_s("modelled_ms_per_token_traced"),
    })
}

/// Decoder layers of the plan's decode program (steps are named `layers.N.…`).
fn decode_layers(plan: &Plan) -> usize {
    plan.program("decode").map_or(0, |p| {
        p.steps
            .iter()
            .filter_map(|s| s.name.strip_prefix("layers.")?.split('.').next()?.parse::<usize>().ok())
            .max()
            .map_or(0, |n| n + 1)
    })
}

/// Device DRAM of one chip of the generated program: every device tensor is bf16 (`Model.up`),
/// except the bfloat8_b matmul weights of `--weights bfp8`; weights sharded over the mesh count
/// their share (one chip's tiles), everything else is on every chip.
pub struct DramUse {
    pub weights: u64,
    pub kv: u64,
    pub activations: u64,
    /// Kept on the host (embedding tables, RoPE tables), not counted in `total`.
    pub host_tables: u64,
}

impl DramUse {
    pub fn total(&self) -> u64 {
        self.weights + self.kv + self.activations
    }
}

fn dram_use(low: &lower::Lowered, t: &TtTarget) -> DramUse {
    let bytes = |rows: usize, cols: usize| (rows.div_ceil(32) * 32 * cols.div_ceil(32) * 32 * 2) as u64;
    let tiles = |p: &lower::Prepared| (p.rows.div_ceil(32) * p.cols.div_ceil(32)) as u64;
    DramUse {
        weights: low
            .prepared
            .iter()
            .filter(|p| !p.host)
            .map(|p| {
                let share = if low.shards.contains_key(&p.name) { t.chips() } else { 1 };
                tiles(p) / share as u64 * p.format(t).tile_bytes() as u64
            })
            .sum(),
        kv: low.states.iter().map(|s| bytes(s.rows, s.cols)).sum(),
        activations: low.slots.iter().map(|s| bytes(s.rows, s.cols)).sum(),
        host_tables: low
            .prepared
            .iter()
            .filter(|p| p.host)
            .map(|p| bytes(p.rows, p.cols))
            .sum(),
    }
}

/// Writes the TT artifact files into `dir` (plan.json and stats.json are the caller's). With a
/// weight reader, also writes weights.safetensors. Returns the TT statistics for stats.json.
pub fn write_artifact(dir: &Path, plan: &Plan, target: &TtTarget, weights: Option<Weights>) -> Result<Value, TtError> {
    let e = emit(plan, target)?;
    for (name, text) in &e.files {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|err| TtError::new(format!("writing {}: {err}", path.display())))?;
    }
    let mut stats = e.stats;
    if let Some(w) = weights {
        let mut meta = BTreeMap::new();
        meta.insert("format".to_string(), "gemma4c-tt-weights-1".to_string());
        meta.insert("target".to_string(), target.name.to_string());
        meta.insert("fingerprint".to_string(), plan.model.fingerprint.clone());
        meta.insert("weights".to_string(), target.weights.name().to_string());
        let bytes = weights::write(&dir.join("weights.safetensors"), target, &e.lowered.prepared, w, &meta)?;
        stats["weights_bytes"] = json!(bytes);
    }
    Ok(stats)
}
