//! Kernel families: sizing (grid, blocks, dataflow buffers, modelled L1) and the template
//! context of each generated TT-Lang operation. One template per family under
//! `backends/templates/tt/`; these files decide only numbers. Shared records and helpers here;
//! one file per group of families.

use serde::Serialize;

use super::target::{Grid, TtTarget, WeightFormat, TILE_BYTES};
use super::TtError;

mod cache;
mod chunk;
mod elementwise;
mod matmul;
mod moe;
mod norm;
mod sandwich;

pub use cache::{
    attention, attention_norm_rope, kv_write, kv_write_pair, AttentionCtx, FreshKv, KvFold, KvWriteCtx, QRope,
};
pub use chunk::attention_chunk;
pub use elementwise::{copy, eltwise, CopyCtx, EltwiseCtx, EltwiseInput};
pub use matmul::{gated_matmul, geglu_matmul, logits_head, matmul, split_matmul, GegluCtx, LogitsHeadCtx, MatmulCtx};
pub use moe::{moe_act, moe_act_share, moe_route, MoeActCtx, MoeRouteCtx};
pub use norm::{norm, norm_rope, NormCtx, NormRopeCtx, NormStreamCtx, StreamDfb, StreamOperand};
pub use sandwich::{sandwich_matmul, Sandwich, SandwichBody, SandwichCtx, SandwichKind};

/// One dataflow buffer of a kernel: `tiles` per block, `count` blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dfb {
    pub name: &'static str,
    pub tiles: usize,
    pub count: usize,
    /// Bytes per tile: the dtype of the tensor the buffer is made like (bf16, or a bfloat8_b
    /// weight).
    pub tile_bytes: usize,
}

impl Dfb {
    /// `count` blocks of `tiles` bf16 tiles each, named as in the template.
    pub fn new(name: &'static str, tiles: usize, count: usize) -> Dfb {
        Dfb {
            name,
            tiles,
            count,
            tile_bytes: TILE_BYTES,
        }
    }
}

/// The dataflow buffers that hold streamed matmul weights (matmul, geglu_matmul, logits_head).
const WEIGHT_DFBS: [&str; 3] = ["w", "wg", "wu"];

/// One generated operation: one compiled program, whatever the position (run-time indices are
/// read from device tensors, see `POS_DFB_TILES`).
#[derive(Debug, Clone, PartialEq)]
pub struct Kernel {
    /// Python name in kernels.py (assigned when registered).
    pub name: String,
    pub family: Family,
    /// Descriptive base for the name.
    pub base: String,
    /// What the family's template reads (besides `name`).
    pub ctx: KernelCtx,
    /// How the matmul weights it streams are stored: not read by the template (buffers are made
    /// like the tensors), but a bfloat8_b kernel is another program (name, L1, DRAM bytes).
    pub weights: WeightFormat,
    pub dfbs: Vec<Dfb>,
    /// `(cols, rows)` as tt-lang's `grid=` reads it.
    pub grid: Grid,
    /// What one launch moves and computes (the performance model's input, `perf.rs`).
    pub cost: Cost,
}

/// DRAM traffic and arithmetic of one launch. Tiles are bf16 tiles read or written in DRAM
/// (inputs re-read by several cores count once: they are small next to the weights); FLOPs
/// are what the tile engines compute (a decode row still costs a whole 32-row tile).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cost {
    pub dram_bytes: u64,
    pub flops: u64,
    /// Of the tiles read, how many are matmul weights (stored as `--weights` says).
    pub weight_tiles: u64,
}

impl Cost {
    pub(crate) fn new(tiles: usize, flops: usize) -> Cost {
        Cost {
            dram_bytes: (tiles * TILE_BYTES) as u64,
            flops: flops as u64,
            weight_tiles: 0,
        }
    }

    /// `tiles` of the counted tiles are matmul weights.
    pub(crate) fn weights(self, tiles: usize) -> Cost {
        Cost {
            weight_tiles: tiles as u64,
            ..self
        }
    }
}

/// FLOPs of `[rows_t x kt] @ [kt x nt]` in tiles.
pub(crate) fn matmul_flops(rows_t: usize, kt: usize, nt: usize) -> usize {
    2 * rows_t * kt * nt * 32 * 32 * 32
}

/// The family of a kernel: which template renders it and what stats.json calls it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Eltwise,
    Matmul,
    GegluMatmul,
    LogitsHead,
    SandwichMatmul,
    Norm(NormKind),
    NormRope,
    KvWrite,
    Attention,
    MoeRoute,
    MoeAct,
    Copy,
}

/// The row-norm families (the streamed template compares `kind` with the serialized name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NormKind {
    RmsNorm,
    AddRmsNorm,
    NormAdd,
    NormAddNorm,
}

impl NormKind {
    pub fn name(self) -> &'static str {
        match self {
            NormKind::RmsNorm => "rms_norm",
            NormKind::AddRmsNorm => "add_rms_norm",
            NormKind::NormAdd => "norm_add",
            NormKind::NormAddNorm => "norm_add_norm",
        }
    }
}

/// What the KV-cache write computes before writing the row (the template's `mode`: the
/// lower-case name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KvMode {
    /// The row as it is (kv_write).
    Plain,
    /// Weightless rms_norm (norm_kv_write: the V path).
    Norm,
    /// rms_norm * w, then RoPE (rope_kv_write: the K path).
    Rope,
}

impl KvMode {
    /// The kernel name's prefix.
    pub fn prefix(self) -> &'static str {
        match self {
            KvMode::Plain => "kv_write",
            KvMode::Norm => "norm_kv_write",
            KvMode::Rope => "rope_kv_write",
        }
    }
}

impl Family {
    /// The name in stats.json.
    pub fn name(self) -> &'static str {
        match self {
            Family::Eltwise => "eltwise",
            Family::Matmul => "matmul",
            Family::GegluMatmul => "geglu_matmul",
            Family::LogitsHead => "logits_head",
            Family::SandwichMatmul => "sandwich_matmul",
            Family::Norm(k) => k.name(),
            Family::NormRope => "norm_rope",
            Family::KvWrite => "kv_write",
            Family::Attention => "attention",
            Family::MoeRoute => "moe_route",
            Family::MoeAct => "moe_act",
            Family::Copy => "copy",
        }
    }
}

impl Kernel {
    /// The template that renders this kernel.
    pub fn template(&self) -> &'static str {
        match self.family {
            Family::Norm(_) if matches!(self.ctx, KernelCtx::NormStream(_)) => "norm_stream",
            Family::Norm(NormKind::NormAdd) => "norm_add_norm",
            Family::Attention if matches!(&self.ctx, KernelCtx::Attention(c) if c.chunk) => "attention_chunk",
            f => f.name(),
        }
    }

    /// Whether `other` is the same generated program (lowering registers one kernel for both).
    pub fn same_program(&self, other: &Kernel) -> bool {
        self.family == other.family && self.weights == other.weights && self.ctx == other.ctx
    }

    /// Modelled L1 bytes per core: all dataflow buffers.
    pub fn l1_bytes(&self) -> usize {
        self.dfbs.iter().map(|d| d.tiles * d.count * d.tile_bytes).sum()
    }

    /// The same kernel reading its matmul weights stored as `fmt` (a bfloat8_b weight tensor makes
    /// its dataflow buffers bfloat8_b too: smaller in L1, and fewer DRAM bytes per launch). The
    /// template is unchanged (buffers are made like the tensors); the name says the format.
    pub fn with_weight_format(mut self, fmt: WeightFormat, t: &TtTarget) -> Result<Kernel, TtError> {
        if fmt == WeightFormat::Bf16 {
            return Ok(self);
        }
        for d in &mut self.dfbs {
            if WEIGHT_DFBS.contains(&d.name) {
                d.tile_bytes = fmt.tile_bytes();
            }
        }
        self.cost.dram_bytes -= self.cost.weight_tiles * (TILE_BYTES - fmt.tile_bytes()) as u64;
        self.weights = fmt;
        self.base = format!("{}_{}", self.base, fmt.name());
        self.checked(t)
    }

    fn checked(self, t: &TtTarget) -> Result<Kernel, TtError> {
        if !t.grid.contains(self.grid) {
            return Err(TtError::new(format!(
                "kernel `{}` needs a grid of {} x {} cores (cols x rows); {} has {} x {}",
                self.base, self.grid.cols, self.grid.rows, t.name, t.grid.cols, t.grid.rows
            )));
        }
        if self.dfbs.len() > t.max_dfbs {
            return Err(TtError::new(format!(
                "kernel `{}` needs {} dataflow buffers; {} allows {}",
                self.base,
                self.dfbs.len(),
                t.name,
                t.max_dfbs
            )));
        }
        let l1 = self.l1_bytes();
        if l1 > t.l1_bytes {
            return Err(TtError::new(format!(
                "kernel `{}` needs {l1} bytes of L1 per core for its dataflow buffers ({}); {} leaves {} \
                 for them (of {} per core, after firmware and headroom for compiler temporaries; \
                 a smaller block or a streaming variant of this family is needed)",
                self.base,
                self.dfbs
                    .iter()
                    .map(|d| format!("{} {}x{}", d.name, d.count, d.tiles))
                    .collect::<Vec<_>>()
                    .join(", "),
                t.name,
                t.l1_bytes,
                t.l1_total
            )));
        }
        Ok(self)
    }
}

/// Tiles (of bf16 size) of the dataflow buffer that receives one tile of a float32 index tensor
/// (the position tensor, slice offsets) for `ttl.read_index`.
pub const POS_DFB_TILES: usize = 2;

/// Largest divisor of `n` that is at most `cap` (at least 1).
pub fn divisor_le(n: usize, cap: usize) -> usize {
    (1..=cap.max(1).min(n.max(1)))
        .rev()
        .find(|d| n.is_multiple_of(*d))
        .unwrap_or(1)
}

pub(crate) fn bc(iterations: usize) -> usize {
    if iterations > 1 {
        2
    } else {
        1
    }
}

/// Python float literal of an f32 (shortest round trip).
pub fn py_f32(x: f32) -> String {
    let s = format!("{x:?}");
    if s.contains('.') || s.contains('e') || s.contains("inf") || s.contains("NaN") {
        s
    } else {
        format!("{s}.0")
    }
}

/// `gelu_tanh(v)` as a block expression over shape `shp`.
pub fn gelu_expr(v: &str) -> String {
    format!(
        "ttl.block.fill(0.5, shp) * {v} * (ttl.block.fill(1.0, shp) + ttl.math.tanh(ttl.block.fill({}, shp) * ({v} + ttl.block.fill({}, shp) * {v} * {v} * {v})))",
        gemma4c_ir::math::GELU_SQRT_2_OVER_PI,
        gemma4c_ir::math::GELU_CUBIC
    )
}

/// `cap * tanh(v / cap)` over shape `shp`.
pub fn softcap_expr(v: &str, cap: f32) -> String {
    let c = py_f32(cap);
    format!("ttl.block.fill({c}, shp) * ttl.math.tanh({v} / ttl.block.fill({c}, shp))")
}

/// The template context of a kernel: one record per template (the whole-row norm templates
/// share `NormCtx`). Serialized as the record itself; `Kernel::template` picks the template.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum KernelCtx {
    Eltwise(EltwiseCtx),
    Copy(CopyCtx),
    Matmul(MatmulCtx),
    GegluMatmul(GegluCtx),
    LogitsHead(LogitsHeadCtx),
    SandwichMatmul(SandwichCtx),
    Norm(NormCtx),
    NormStream(NormStreamCtx),
    NormRope(NormRopeCtx),
    KvWrite(KvWriteCtx),
    Attention(AttentionCtx),
    MoeRoute(MoeRouteCtx),
    MoeAct(MoeActCtx),
}

impl KernelCtx {
    /// The grid part every template reads.
    pub fn grid(&self) -> &GridCtx {
        match self {
            KernelCtx::Eltwise(c) => &c.grid,
            KernelCtx::Copy(c) => &c.grid,
            KernelCtx::Matmul(c) => &c.tiles.grid,
            KernelCtx::GegluMatmul(c) => &c.tiles.grid,
            KernelCtx::LogitsHead(c) => &c.grid,
            KernelCtx::SandwichMatmul(c) => &c.grid,
            KernelCtx::Norm(c) => &c.grid,
            KernelCtx::NormStream(c) => &c.grid,
            KernelCtx::NormRope(c) => &c.grid,
            KernelCtx::KvWrite(c) => &c.grid,
            KernelCtx::Attention(c) => &c.grid,
            KernelCtx::MoeRoute(c) => &c.grid,
            KernelCtx::MoeAct(c) => &c.grid,
        }
    }
}

/// How a kernel's blocks are spread: `gx` = columns, `gy` = rows (tt-lang's `grid=(gx, gy)`);
/// templates flatten the node `(nx, ny)` row-major as `ny * gx + nx`; `n_blocks` blocks,
/// `per_node` per node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct GridCtx {
    pub gx: usize,
    pub gy: usize,
    pub per_node: usize,
    pub n_blocks: usize,
}

impl GridCtx {
    pub(crate) fn new(grid: Grid, per_node: usize, n_blocks: usize) -> GridCtx {
        GridCtx {
            gx: grid.cols,
            gy: grid.rows,
            per_node,
            n_blocks,
        }
    }
}

/// One of the tensors a matmul's output columns are split into (the fused q/k/v projections):
/// tile columns `start..end` of the product go to `name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutPart {
    pub name: String,
    pub start: usize,
    pub end: usize,
}

/// `y0, y1, ...` over consecutive runs of `parts` tile columns.
pub(crate) fn out_parts(parts: &[usize]) -> Vec<OutPart> {
    let mut start = 0;
    parts
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            start += n;
            OutPart {
                name: format!("y{i}"),
                start: start - n,
                end: start,
            }
        })
        .collect()
}

/// How an eltwise operand is read (the template compares the lower-case name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Same tile grid as the output.
    Full,
    /// A `[1, X]` row broadcast over rows.
    Row,
    /// One value (tile element (0, 0)) broadcast everywhere.
    Scalar,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p300() -> TtTarget {
        TtTarget::P300
    }

    #[test]
    fn kernels_use_grids_in_cols_rows_order_within_the_device() {
        let t = p300();
        // A wide matmul (E4B's LM head: 2560 -> 262144) spreads over all 13 x 10 cores.
        let k = matmul(&t, "doc", 1, 80, 8192, None).unwrap();
        assert_eq!(k.grid, Grid { cols: 13, rows: 10 });
        assert_eq!((k.ctx.grid().gx, k.ctx.grid().gy), (13, 10));
        // A kernel grid wider than the device is refused, naming kernel and figures.
        let narrow = TtTarget {
            grid: Grid { cols: 4, rows: 13 },
            ..p300()
        };
        let e = Kernel {
            grid: Grid { cols: 13, rows: 1 },
            ..k
        }
        .checked(&narrow)
        .unwrap_err();
        assert!(e.0.contains("13 x 1") && e.0.contains("4 x 13"), "{e}");
    }

    #[test]
    fn l1_overflow_is_a_compile_time_error_naming_the_kernel() {
        let t = p300();
        // Too little L1 even for streaming: a clear error naming the kernel and the budget.
        let small = TtTarget {
            l1_bytes: 8 * TILE_BYTES,
            ..p300()
        };
        let e = norm(&small, NormKind::NormAddNorm, "doc", 1, 1, 168, 5376, 1e-6, true).unwrap_err();
        assert!(
            e.0.contains("norm_add_norm_5376") && e.0.contains("L1") && e.0.contains("16384"),
            "{e}"
        );
        // A whole-row sandwich norm of 5376 (Gemma 4 31B) would need six 168-tile buffers: streamed.
        let k = norm(&t, NormKind::NormAddNorm, "doc", 1, 1, 168, 5376, 1e-6, true).unwrap();
        assert_eq!(k.template(), "norm_stream");
        assert!(k.l1_bytes() <= t.l1_bytes);
        // The same kernel fits at E4B's 2560.
        let k = norm(&t, NormKind::NormAddNorm, "doc", 1, 1, 80, 2560, 1e-6, true).unwrap();
        assert_eq!(k.dfbs.len(), 6);
        assert_eq!(k.l1_bytes(), 6 * 80 * TILE_BYTES);
    }

    #[test]
    fn dataflow_buffer_limit_is_checked() {
        let t = TtTarget { max_dfbs: 4, ..p300() };
        let e = attention(&t, "doc", 8, 2, 1024, 8, 1.0, None).unwrap_err();
        assert!(e.0.contains("dataflow buffers"), "{e}");
    }

    #[test]
    fn matmul_blocks_shrink_to_fit_l1() {
        let t = TtTarget {
            l1_bytes: 64 * TILE_BYTES,
            ..p300()
        };
        let k = matmul(&t, "doc", 1, 80, 320, None).unwrap();
        assert!(k.l1_bytes() <= t.l1_bytes, "{}", k.l1_bytes());
    }

    #[test]
    fn python_float_literals_round_trip() {
        assert_eq!(py_f32(1.0), "1.0");
        assert_eq!(py_f32(1e-6), "1e-6");
        assert_eq!(py_f32(30.0), "30.0");
        assert_eq!(py_f32(0.088_388_35), "0.08838835");
        assert_eq!(divisor_le(336, 8), 8);
        assert_eq!(divisor_le(15, 8), 5);
        assert_eq!(divisor_le(7, 4), 1);
    }
}
