//! Rendering the artifact's text files from the embedded templates (`backends/templates/tt/`),
//! each from a typed context: a kernel from its `KernelCtx`, the file headers from `Header`,
//! model.py, run.py and README.md from `HostCtx`. A misspelled variable is then a compile
//! error here, not a template error at render time.

use std::collections::BTreeMap;

use gemma4c_passes::Plan;
use serde::Serialize;

use super::kernels::Kernel;
use super::lower::{self, Lowered};
use super::{TtError, TtTarget};

/// Template sources, embedded so the compiler binary is self-contained.
const TEMPLATES: [(&str, &str); 21] = [
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
    (
        "attention_chunk",
        include_str!("../../templates/tt/attention_chunk.py.tera"),
    ),
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

fn context(name: &str, ctx: &impl Serialize) -> Result<tera::Context, TtError> {
    tera::Context::from_serialize(ctx).map_err(|e| TtError::new(format!("template {name}: {e}")))
}

fn render_context(t: &tera::Tera, name: &str, c: &tera::Context) -> Result<String, TtError> {
    t.render(name, c)
        .map_err(|e| TtError::new(format!("rendering {name}: {e:?}")))
}

fn render(t: &tera::Tera, name: &str, ctx: &impl Serialize) -> Result<String, TtError> {
    render_context(t, name, &context(name, ctx)?)
}

/// What kernels_header.py and sim_support.py read: the target and the model's name.
#[derive(Serialize)]
struct Header<'a> {
    target: &'static str,
    model: &'a str,
}

fn render_kernels(eng: &tera::Tera, header: &Header, kernels: &[Kernel]) -> Result<String, TtError> {
    let mut text = render(eng, "kernels_header", header)?;
    for k in kernels {
        // The kernel's Python name is assigned when it is registered, after its context is made.
        let mut c = context(k.template(), &k.ctx)?;
        c.insert("name", &k.name);
        text.push_str("\n\n");
        text.push_str(&render_context(eng, k.template(), &c)?);
    }
    Ok(text)
}

/// kernels.py and sim_support.py for a hand-made list of kernels (named already): what the
/// kernel-family tests run. Returns `(kernels_py, sim_support_py)`.
pub fn render_standalone(target: &TtTarget, title: &str, kernels: &[Kernel]) -> Result<(String, String), TtError> {
    let eng = engine()?;
    let header = Header {
        target: target.name,
        model: title,
    };
    Ok((
        render_kernels(&eng, &header, kernels)?,
        render(&eng, "sim_support", &header)?,
    ))
}

/// What model.py, run.py and README.md read: the host program of the lowered decode step.
#[derive(Serialize)]
struct HostCtx<'a> {
    target: &'static str,
    model: &'a str,
    /// Device operations of the decode step.
    launches: usize,
    /// `(rows, cols)` of chips.
    mesh: [usize; 2],
    chips: usize,
    max_context: usize,
    vocab: usize,
    bos: u32,
    eos: &'a [u32],
    device_weights: Vec<DeviceWeight<'a>>,
    /// Gather tables kept on the host (embeddings), read a row per token.
    host_tables: Vec<HostTable<'a>>,
    masks: Vec<MaskCtx>,
    caps: Vec<CapCtx>,
    /// Columns of the position tensor: the position, then one tile column per cache capacity.
    pos_cols: usize,
    /// The KV caches.
    states: Vec<StateCtx<'a>>,
    /// The activation buffers.
    slots: Vec<SlotCtx<'a>>,
    logits_slot: usize,
    default_new_tokens: usize,
    host_steps: Vec<StepCtx<'a>>,
    steps: Vec<StepCtx<'a>>,
    prefill: Option<PrefillCtx<'a>>,
}

/// The prefill program's host side: one chunk of `rows` tokens.
#[derive(Serialize)]
struct PrefillCtx<'a> {
    rows: usize,
    /// Device operations of one chunk.
    launches: usize,
    host_steps: Vec<StepCtx<'a>>,
    steps: Vec<StepCtx<'a>>,
}

/// A prepared weight uploaded once: its ttnn dtype, and the axis it is split over the mesh by
/// (`None`: replicated).
#[derive(Serialize)]
struct DeviceWeight<'a> {
    name: &'a str,
    dtype: &'static str,
    shard: Option<usize>,
}

#[derive(Serialize)]
struct HostTable<'a> {
    name: &'a str,
}

/// An attention mask row: its cache `capacity`, the sliding `window` as Python (`MAX_CONTEXT`
/// for full attention), `width` columns.
#[derive(Serialize)]
struct MaskCtx {
    /// 1 (decode) or a prefill chunk's rows.
    rows: usize,
    capacity: usize,
    window: String,
    width: usize,
    /// Python bool: the variant for launches that write the current position's K/V row.
    fresh: &'static str,
}

/// A cache capacity and the position tensor's column that holds the slot for it.
#[derive(Serialize)]
struct CapCtx {
    capacity: usize,
    col: usize,
}

#[derive(Serialize)]
struct StateCtx<'a> {
    rows: usize,
    cols: usize,
    name: &'a str,
}

#[derive(Serialize)]
struct SlotCtx<'a> {
    rows: usize,
    cols: usize,
    comment: &'a str,
    /// A different value on each chip.
    per_chip: bool,
}

/// One line of host code (a launch, a collective or a host row fetch).
#[derive(Serialize)]
struct StepCtx<'a> {
    code: &'a str,
    comment: &'a str,
}

/// kernels.py, model.py, run.py, sim_support.py and README.md of `low` (model name `model`).
pub(super) fn files<'a>(
    plan: &'a Plan,
    target: &TtTarget,
    low: &'a Lowered,
    model: &'a str,
) -> Result<BTreeMap<String, String>, TtError> {
    let eng = engine()?;
    let header = Header {
        target: target.name,
        model,
    };
    let device_weights = low
        .prepared
        .iter()
        .filter(|p| !p.host)
        .map(|p| {
            // Run-time indices stay float32 on the device: exact integers past bf16's 256.
            let index = matches!(p.source, lower::Source::Index { .. });
            DeviceWeight {
                name: &p.name,
                dtype: if index { "float32" } else { p.format(target).ttnn() },
                shard: low.shards.get(&p.name).map(|d| d.dim()),
            }
        })
        .collect();
    let host_tables = low
        .prepared
        .iter()
        .filter(|p| matches!(p.source, lower::Source::Gather { .. }))
        .map(|p| HostTable { name: &p.name })
        .collect();
    let steps = |launches: &'a [lower::Launch], device: bool| -> Vec<StepCtx<'a>> {
        launches
            .iter()
            .filter(|l| l.device == device)
            .map(|l| StepCtx {
                code: &l.code,
                comment: &l.comment,
            })
            .collect()
    };
    let ctx = HostCtx {
        target: target.name,
        model,
        // The kernels and collectives, and the token selection that ends the step.
        launches: low.launches.iter().filter(|l| l.device).count() + 1,
        mesh: [target.mesh.0, target.mesh.1],
        chips: target.chips(),
        max_context: low.max_context,
        vocab: plan.model.vocab_size,
        bos: plan.model.bos_token_id,
        eos: &plan.model.eos_token_ids,
        device_weights,
        host_tables,
        masks: low
            .masks
            .iter()
            .map(|m| MaskCtx {
                rows: m.rows,
                capacity: m.capacity,
                window: m.window.map_or("MAX_CONTEXT".to_string(), |w| w.to_string()),
                width: m.width,
                fresh: if m.fresh { "True" } else { "False" },
            })
            .collect(),
        caps: low
            .caps
            .iter()
            .enumerate()
            .map(|(i, &capacity)| CapCtx {
                capacity,
                col: 32 * (i + 1),
            })
            .collect(),
        pos_cols: 32 * (1 + low.caps.len()),
        states: low
            .states
            .iter()
            .map(|s| StateCtx {
                rows: s.rows,
                cols: s.cols,
                name: &s.comment,
            })
            .collect(),
        slots: low
            .slots
            .iter()
            .map(|s| SlotCtx {
                rows: s.rows,
                cols: s.cols,
                comment: &s.comment,
                per_chip: s.per_chip,
            })
            .collect(),
        logits_slot: low.logits_slot,
        default_new_tokens: 16,
        host_steps: steps(&low.launches, false),
        steps: steps(&low.launches, true),
        prefill: low.prefill.as_ref().map(|p| PrefillCtx {
            rows: lower::PREFILL_CHUNK,
            launches: p.launches.iter().filter(|l| l.device).count(),
            host_steps: steps(&p.launches, false),
            steps: steps(&p.launches, true),
        }),
    };
    let mut files = BTreeMap::new();
    files.insert("kernels.py".to_string(), render_kernels(&eng, &header, &low.kernels)?);
    files.insert("model.py".to_string(), render(&eng, "model", &ctx)?);
    files.insert("run.py".to_string(), render(&eng, "run", &ctx)?);
    files.insert("sim_support.py".to_string(), render(&eng, "sim_support", &header)?);
    files.insert("README.md".to_string(), render(&eng, "README", &ctx)?);
    Ok(files)
}
