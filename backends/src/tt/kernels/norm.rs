//! Row norms (plain, with residual add, the Gemma sandwich) and the per-head q/k norm + RoPE.

use serde::Serialize;

use super::{
    bc, divisor_le, matmul_flops, py_f32, Cost, Dfb, Family, GridCtx, Kernel, KernelCtx, NormKind, POS_DFB_TILES,
};
use crate::tt::target::{TtTarget, WeightFormat, TILE_BYTES};
use crate::tt::TtError;

/// What the whole-row norm templates read (rms_norm, add_rms_norm and norm_add_norm, which also
/// renders norm_add): `groups` segments of `st` tiles per row (`n` real columns; `inv_n`, `eps`
/// as Python literals).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NormCtx {
    pub doc: String,
    pub rows_t: usize,
    pub groups: usize,
    pub st: usize,
    pub n: usize,
    pub bc: usize,
    /// rms_norm: multiplied by a weight.
    pub has_w: bool,
    pub inv_n: String,
    pub eps: String,
    /// norm_add_norm (not norm_add): the next pre-norm too.
    pub has_pre: bool,
    /// norm_add(_norm): the residual multiplied by the layer scalar (`Kernel::scaled`).
    pub scaled: bool,
    #[serde(flatten)]
    pub grid: GridCtx,
}

/// What norm_stream.py.tera reads: a row-norm family (`kind`) whose segments are streamed in
/// `(1, cb)` chunks (`nc` per segment), one pass over the inputs per statistic.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NormStreamCtx {
    pub doc: String,
    pub kind: NormKind,
    pub rows_t: usize,
    pub groups: usize,
    pub st: usize,
    pub n: usize,
    pub has_w: bool,
    pub cb: usize,
    pub nc: usize,
    pub inv_n: String,
    pub eps: String,
    pub dfbs: Vec<StreamDfb>,
    /// The tensors each pass reads.
    pub passes: Vec<Vec<StreamOperand>>,
    /// The tensors written, in order.
    pub outs: Vec<&'static str>,
    #[serde(flatten)]
    pub grid: GridCtx,
}

/// A streamed norm's dataflow buffer: `{var}_dfb`, made like `tensor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamDfb {
    pub var: &'static str,
    pub tensor: &'static str,
}

/// A tensor one pass of a streamed norm reads (`weight`: a norm weight row, broadcast).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamOperand {
    pub var: &'static str,
    pub tensor: &'static str,
    pub weight: bool,
}

/// What norm_rope.py.tera reads: one block per head of `dt` tiles, the rms_norm * w first when
/// `has_norm`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NormRopeCtx {
    pub doc: String,
    pub heads: usize,
    pub dt: usize,
    pub bc: usize,
    pub has_norm: bool,
    pub inv_n: String,
    pub eps: String,
    /// A prefill chunk: whole cos/sin tiles (`chunk.rs`).
    pub chunk: bool,
    #[serde(flatten)]
    pub grid: GridCtx,
}

/// Row-norm families over `groups` segments of `st` tiles (`n` real columns each):
/// `rms_norm` (optional weight), `add_rms_norm`, `norm_add`, `norm_add_norm`. A segment that
/// does not fit in L1 whole is streamed in chunks (one pass per statistic).
#[allow(clippy::too_many_arguments)]
pub fn norm(
    t: &TtTarget,
    kind: NormKind,
    doc: &str,
    rows_t: usize,
    groups: usize,
    st: usize,
    n: usize,
    eps: f32,
    has_w: bool,
) -> Result<Kernel, TtError> {
    let n_blocks = rows_t * groups;
    let (grid, per_node) = t.grid_for(n_blocks);
    let b = bc(per_node);
    let family = kind.name();
    let names: &[&'static str] = match kind {
        NormKind::RmsNorm if has_w => &["x", "w", "y"],
        NormKind::RmsNorm => &["x", "y"],
        NormKind::AddRmsNorm => &["a", "b", "w", "y", "s"],
        NormKind::NormAddNorm => &["res", "x", "w_post", "w_pre", "y", "s"],
        NormKind::NormAdd => &["res", "x", "w_post", "s"],
    };
    let ctx = NormCtx {
        doc: doc.to_string(),
        rows_t,
        groups,
        st,
        n,
        bc: b,
        has_w,
        inv_n: py_f32(1.0 / n as f32),
        eps: py_f32(eps),
        has_pre: kind == NormKind::NormAddNorm,
        scaled: false,
        grid: GridCtx::new(grid, per_node, n_blocks),
    };
    let w = if has_w || kind != NormKind::RmsNorm {
        ""
    } else {
        "_unit"
    };
    let g = if groups > 1 { format!("_{groups}x") } else { "_".into() };
    let whole = Kernel {
        name: String::new(),
        family: Family::Norm(kind),
        base: format!("{family}{g}{n}{w}"),
        ctx: KernelCtx::Norm(ctx),
        weights: WeightFormat::Bf16,
        dfbs: names.iter().map(|&name| Dfb::new(name, st, b)).collect(),
        grid,
        cost: Cost::new(names.len() * rows_t * groups * st, 8 * rows_t * groups * st * 1024),
    };
    if whole.l1_bytes() <= t.l1_bytes {
        return whole.checked(t);
    }
    // Streamed: (1, cb) chunks, double buffered.
    let budget = t.l1_bytes / (names.len() * 2 * TILE_BYTES);
    let cb = divisor_le(st, budget.min(16));
    let var = |name: &'static str| match name {
        "res" => "r",
        "w_post" => "wa",
        "w_pre" => "wb",
        other => other,
    };
    let d = |name: &'static str| StreamOperand {
        var: var(name),
        tensor: name,
        weight: name.starts_with('w'),
    };
    let (passes, outs): (Vec<Vec<StreamOperand>>, Vec<&'static str>) = match kind {
        NormKind::RmsNorm if has_w => (vec![vec![d("x")], vec![d("x"), d("w")]], vec!["y"]),
        NormKind::RmsNorm => (vec![vec![d("x")], vec![d("x")]], vec!["y"]),
        NormKind::AddRmsNorm => (vec![vec![d("a"), d("b")], vec![d("a"), d("b"), d("w")]], vec!["s", "y"]),
        NormKind::NormAdd => (vec![vec![d("x")], vec![d("res"), d("x"), d("w_post")]], vec!["s"]),
        NormKind::NormAddNorm => (
            vec![
                vec![d("x")],
                vec![d("res"), d("x"), d("w_post")],
                vec![d("res"), d("x"), d("w_post"), d("w_pre")],
            ],
            vec!["s", "y"],
        ),
    };
    let dfbs: Vec<StreamDfb> = names
        .iter()
        .map(|&name| StreamDfb {
            var: var(name),
            tensor: name,
        })
        .collect();
    let ctx = NormStreamCtx {
        doc: doc.to_string(),
        kind,
        rows_t,
        groups,
        st,
        n,
        has_w,
        cb,
        nc: st / cb,
        inv_n: py_f32(1.0 / n as f32),
        eps: py_f32(eps),
        dfbs,
        passes,
        outs,
        grid: GridCtx::new(grid, per_node, n_blocks),
    };
    Kernel {
        name: String::new(),
        family: Family::Norm(kind),
        base: format!("{family}{g}{n}{w}_streamed"),
        ctx: KernelCtx::NormStream(ctx),
        weights: WeightFormat::Bf16,
        dfbs: names.iter().map(|&name| Dfb::new(name, cb, 2)).collect(),
        grid,
        cost: Cost::new(names.len() * rows_t * groups * st * 2, 8 * rows_t * groups * st * 1024),
    }
    .checked(t)
}

impl Kernel {
    /// This whole-row `norm_add` / `norm_add_norm` with the residual multiplied by a one-value
    /// weight (the layer scalar) before it is stored and normalized again.
    pub fn scaled(mut self, t: &TtTarget) -> Result<Kernel, TtError> {
        let fused = matches!(self.family, Family::Norm(NormKind::NormAdd | NormKind::NormAddNorm));
        if !fused || self.template() != "norm_add_norm" {
            return Err(TtError::new(format!(
                "kernel `{}`: only whole-row norm_add kernels take a layer scalar",
                self.base
            )));
        }
        let KernelCtx::Norm(c) = &mut self.ctx else {
            unreachable!("whole-row norm kernels have a norm context")
        };
        c.scaled = true;
        let b = c.bc;
        self.dfbs.push(Dfb::new("scale", 1, b));
        self.base.push_str("_scaled");
        self.cost.dram_bytes += TILE_BYTES as u64;
        self.checked(t)
    }
}

/// q/k norm + RoPE (or RoPE alone) per head.
pub fn norm_rope(
    t: &TtTarget,
    doc: &str,
    heads: usize,
    dt: usize,
    n: usize,
    eps: Option<f32>,
) -> Result<Kernel, TtError> {
    let (grid, per_node) = t.grid_for(heads);
    let b = bc(per_node);
    let has_norm = eps.is_some();
    let ctx = NormRopeCtx {
        doc: doc.to_string(),
        heads,
        dt,
        bc: b,
        has_norm,
        inv_n: py_f32(1.0 / n as f32),
        eps: py_f32(eps.unwrap_or(0.0)),
        chunk: false,
        grid: GridCtx::new(grid, per_node, heads),
    };
    let mut dfbs = vec![Dfb::new("x", dt, b)];
    if has_norm {
        dfbs.push(Dfb::new("w", dt, b));
    }
    dfbs.extend([
        Dfb::new("cos", dt, b),
        Dfb::new("sin", dt, b),
        Dfb::new("rot", dt * dt, b),
        Dfb::new("sel", 1, b),
        Dfb::new("pos", POS_DFB_TILES, 1),
        Dfb::new("y", dt, b),
    ]);
    let fam = if has_norm { "norm_rope" } else { "rope" };
    Kernel {
        name: String::new(),
        family: Family::NormRope,
        base: format!("{fam}_{heads}x{n}"),
        ctx: KernelCtx::NormRope(ctx),
        weights: WeightFormat::Bf16,
        dfbs,
        grid,
        cost: Cost::new(
            heads * (4 * dt + dt * dt + 1) + if has_norm { heads * dt } else { 0 },
            heads * (matmul_flops(1, dt, dt) + 2 * matmul_flops(1, 1, dt)),
        ),
    }
    .checked(t)
}
