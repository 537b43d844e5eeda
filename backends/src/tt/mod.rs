//! Tenstorrent backend: a plan → TT-Lang kernels (kernels.py), the TTNN host program (model.py),
//! its entry point (run.py), simulator-only support (sim_support.py) and the prepared weights
//! (weights.safetensors).
//!
//! The kernels are rendered from one tera template per family (`backends/templates/tt/`), with
//! every shape, grid and block size a literal; output is deterministic. The host program runs the
//! plan's decode program one launch per step, in plan order (prompt tokens go through the decode
//! step one position at a time); see `lower.rs` for how steps map to launches and `layout.rs` for
//! the device layout of activations.

pub mod backend;
pub mod bfp8;
pub mod kernels;
pub mod layout;
pub mod lower;
pub mod perf;
pub mod target;
pub mod weights;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use gemma4c_passes::Plan;
use serde_json::{json, Value};

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

/// Template sources, embedded so the compiler binary is self-contained.
const TEMPLATES: [(&str, &str); 20] = [
    ("eltwise", include_str!("../../templates/tt/eltwise.py.tera")),
    ("matmul", include_str!("../../templates/tt/matmul.py.tera")),
    ("geglu_matmul", include_str!("../../templates/tt/geglu_matmul.py.tera")),
    ("logits_head", include_str!("../../templates/tt/logits_head.py.tera")),
    (
        "sandwich_matmul",
        include_str!("../../templates/tt/sandwich_matmul.py.tera"),
    ),
    ("rms_norm", include_str!("../../templates/tt/rms_norm.py.tera")),
    ("add_rms_norm", include_str!("../../templates/tt/add_rms_norm.py.tera")),
    (
        "norm_add_norm",
        include_str!("../../templates/tt/norm_add_norm.py.tera"),
    ),
    ("norm_stream", include_str!("../../templates/tt/norm_stream.py.tera")),
    ("norm_rope", include_str!("../../templates/tt/norm_rope.py.tera")),
    ("kv_write", include_str!("../../templates/tt/kv_write.py.tera")),
    ("attention", include_str!("../../templates/tt/attention.py.tera")),
    ("moe_route", include_str!("../../templates/tt/moe_route.py.tera")),
    ("moe_act", include_str!("../../templates/tt/moe_act.py.tera")),
    ("copy", include_str!("../../templates/tt/copy.py.tera")),
    (
        "kernels_header",
        include_str!("../../templates/tt/kernels_header.py.tera"),
    ),
    ("model", include_str!("../../templates/tt/model.py.tera")),
    ("run", include_str!("../../templates/tt/run.py.tera")),
    ("sim_support", include_str!("../../templates/tt/sim_support.py.tera")),
    ("README", include_str!("../../templates/tt/README.md.tera")),
];

fn engine() -> Result<tera::Tera, TtError> {
    let mut t = tera::Tera::new();
    t.autoescape_on(Vec::<&str>::new());
    for (name, src) in TEMPLATES {
        t.add_raw_template(name, src)
            .map_err(|e| TtError::new(format!("template {name}: {e}")))?;
    }
    Ok(t)
}

fn render(t: &tera::Tera, name: &str, ctx: &Value) -> Result<String, TtError> {
    let c = tera::Context::from_serialize(ctx).map_err(|e| TtError::new(format!("template {name}: {e}")))?;
    t.render(name, &c)
        .map_err(|e| TtError::new(format!("rendering {name}: {e:?}")))
}

fn render_kernels(eng: &tera::Tera, header: &Value, kernels: &[kernels::Kernel]) -> Result<String, TtError> {
    let mut text = render(eng, "kernels_header", header)?;
    for k in kernels {
        let mut ctx = k.ctx.clone();
        ctx.as_object_mut()
            .expect("object")
            .insert("name".into(), json!(k.name));
        text.push_str("\n\n");
        text.push_str(&render(eng, k.template(), &ctx)?);
    }
    Ok(text)
}

/// kernels.py and sim_support.py for a hand-made list of kernels (named already): what the
/// kernel-family tests run. Returns `(kernels_py, sim_support_py)`.
pub fn render_standalone(
    target: &TtTarget,
    title: &str,
    kernels: &[kernels::Kernel],
) -> Result<(String, String), TtError> {
    let eng = engine()?;
    let header = json!({"target": target.name, "model": title});
    Ok((
        render_kernels(&eng, &header, kernels)?,
        render(&eng, "sim_support", &header)?,
    ))
}

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
    let eng = engine()?;
    let header = json!({
        "target": target.name,
        "model": plan.model.source.as_deref().map_or_else(|| format!("config {}", plan.model.fingerprint), |s| {
            Path::new(s).file_name().map_or(s.to_string(), |f| f.to_string_lossy().into_owned())
        }),
    });
    let kernels_py = render_kernels(&eng, &header, &low.kernels)?;
    let model = &header["model"];
    let device_weights: Vec<Value> = low
        .prepared
        .iter()
        .filter(|p| !p.host)
        .map(|p| {
            // Run-time indices stay float32 on the device: exact integers past bf16's 256.
            let index = matches!(p.source, lower::Source::Index { .. });
            let shard = low.shards.get(&p.name).map(|d| d.dim());
            json!({"name": p.name, "dtype": if index { "float32" } else { p.format(target).ttnn() }, "shard": shard})
        })
        .collect();
    let host_tables: Vec<Value> = low
        .prepared
        .iter()
        .filter(|p| matches!(p.source, lower::Source::Gather { .. }))
        .map(|p| json!({"name": p.name}))
        .collect();
    let ctx = json!({
        "target": target.name,
        "model": model,
        "launches": low.launches.iter().filter(|l| l.device).count(),
        "mesh": [target.mesh.0, target.mesh.1],
        "chips": target.chips(),
        "max_context": low.max_context,
        "vocab": plan.model.vocab_size,
        "bos": plan.model.bos_token_id,
        "eos": plan.model.eos_token_ids,
        "device_weights": device_weights,
        "host_tables": host_tables,
        "masks": low.masks.iter().map(|m| json!({
            "capacity": m.capacity,
            "window": m.window.map_or("MAX_CONTEXT".to_string(), |w| w.to_string()),
            "width": m.width,
        })).collect::<Vec<_>>(),
        "caps": low.caps.iter().enumerate().map(|(i, c)| json!({"capacity": c, "col": 32 * (i + 1)})).collect::<Vec<_>>(),
        "pos_cols": 32 * (1 + low.caps.len()),
        "states": low.states.iter().map(|s| json!({"rows": s.rows, "cols": s.cols, "name": s.comment})).collect::<Vec<_>>(),
        "slots": low.slots.iter().map(|s| json!({"rows": s.rows, "cols": s.cols, "comment": s.comment, "per_chip": s.per_chip})).collect::<Vec<_>>(),
        "logits_slot": low.logits_slot,
        "default_new_tokens": 16,
        "host_steps": low.launches.iter().filter(|l| !l.device).map(|l| json!({"code": l.code, "comment": l.comment})).collect::<Vec<_>>(),
        "steps": low.launches.iter().filter(|l| l.device).map(|l| json!({"code": l.code, "comment": l.comment})).collect::<Vec<_>>(),
    });
    let mut files = BTreeMap::new();
    files.insert("kernels.py".to_string(), kernels_py);
    files.insert("model.py".to_string(), render(&eng, "model", &ctx)?);
    files.insert("run.py".to_string(), render(&eng, "run", &ctx)?);
    files.insert("sim_support.py".to_string(), render(&eng, "sim_support", &ctx)?);
    files.insert("README.md".to_string(), render(&eng, "README", &ctx)?);

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
    let (perf_per_kernel, perf_total) = perf::model(target, &low.kernels, &per_kernel_uses, &low.all_reduce_bytes);
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
    // Launches per token: kernels and the all-reduces (each one TT-NN operation to dispatch).
    let launches: usize = per_kernel_uses.iter().sum::<usize>() + low.all_reduce_bytes.len();
    let layers = decode_layers(plan);
    let dram = dram_use(&low, target);
    target.check_dram(
        dram.total(),
        &format!("the compiled model ({})", header["model"].as_str().unwrap_or("?")),
    )?;
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
        // Distinct TT-Lang programs to compile: one per kernel, whatever the position, sequence
        // length or --max-context (positions and offsets are read from device tensors).
        "programs": low.kernels.len(),
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
