//! Decode matmuls: plain (with an epilogue), the fused gate/up GeGLU, and final norm + LM head.

use serde::Serialize;

use super::{
    bc, divisor_le, gelu_expr, matmul_flops, out_parts, py_f32, Cost, Dfb, Family, GridCtx, Kernel, KernelCtx, OutPart,
    POS_DFB_TILES,
};
use crate::tt::target::{Grid, TtTarget, WeightFormat, TILE_BYTES};
use crate::tt::TtError;

/// What matmul.py.tera reads: `[rows_t x kt] @ [kt x nt]` tiles in `(1, kb) x (kb, nb)` steps,
/// `epilogue` applied to the accumulator `acc` (`epilogue_doc` names it).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MatmulCtx {
    pub doc: String,
    #[serde(flatten)]
    pub tiles: MatmulTiles,
    pub epilogue: String,
    pub epilogue_doc: String,
    /// The result multiplies a run-time slice of `e` (`gated_matmul`).
    pub gate: bool,
    /// The output columns split over several tensors (`split_matmul`); empty: one tensor `y`.
    pub outs: Vec<OutPart>,
}

/// What geglu_matmul.py.tera reads: `gelu_g` (the GELU of the gate block `g`) times the up
/// block, the two matmuls sharing the `x` blocks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GegluCtx {
    pub doc: String,
    #[serde(flatten)]
    pub tiles: MatmulTiles,
    pub gelu_g: String,
}

/// The blocking both matmul templates read: `[rows_t x kt] @ [kt x nt]` tiles in `(1, kb) x
/// (kb, nb)` steps, `col_blocks` output blocks per tile row dealt over the grid, and the
/// dataflow-buffer depths of the input and output blocks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MatmulTiles {
    pub rows_t: usize,
    pub kt: usize,
    pub nt: usize,
    pub kb: usize,
    pub nb: usize,
    pub k_blocks: usize,
    pub col_blocks: usize,
    pub bc_in: usize,
    pub bc_out: usize,
    #[serde(flatten)]
    pub grid: GridCtx,
}

impl MatmulTiles {
    /// The blocking of `[rows_t x kt] @ [kt x nt]` with `weights` weight matrices per K step
    /// (2 for GeGLU's gate and up) and output blocks that divide `unit` columns, and the grid
    /// it runs on.
    fn new(
        t: &TtTarget,
        rows_t: usize,
        kt: usize,
        nt: usize,
        unit: usize,
        weights: usize,
    ) -> Result<(MatmulTiles, Grid), TtError> {
        let (kb, nb) = matmul_blocks(t, rows_t, kt, nt, unit, weights)?;
        let col_blocks = nt / nb;
        let n_blocks = rows_t * col_blocks;
        let (grid, per_node) = t.grid_for(n_blocks);
        let tiles = MatmulTiles {
            rows_t,
            kt,
            nt,
            kb,
            nb,
            k_blocks: kt / kb,
            col_blocks,
            bc_in: bc(per_node * (kt / kb)),
            bc_out: bc(per_node),
            grid: GridCtx::new(grid, per_node, n_blocks),
        };
        Ok((tiles, grid))
    }
}

/// What logits_head.py.tera reads: the final rms_norm over `n` real columns (`inv_n`, `eps` as
/// Python literals), then `[1 x kt] @ [kt x nt]` in `(kt, nb)` weight panels.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogitsHeadCtx {
    pub doc: String,
    pub rows_t: usize,
    pub kt: usize,
    pub nt: usize,
    pub nb: usize,
    pub n: usize,
    pub col_blocks: usize,
    pub bc_out: usize,
    pub bc_w: usize,
    pub bc_x: usize,
    pub inv_n: String,
    pub eps: String,
    pub epilogue: String,
    pub epilogue_doc: String,
    #[serde(flatten)]
    pub grid: GridCtx,
}

/// `(kb, nb)`: K and N block sizes; `nb` divides `unit` (a divisor of `nt`).
fn matmul_blocks(
    t: &TtTarget,
    rows_t: usize,
    kt: usize,
    nt: usize,
    unit: usize,
    weights: usize,
) -> Result<(usize, usize), TtError> {
    let nb = divisor_le(unit, (nt / t.cores()).clamp(1, 8));
    let mut kb = divisor_le(kt, 8);
    loop {
        let n_blocks = rows_t * (nt / nb);
        let (_, per_node) = t.grid_for(n_blocks);
        let bin = bc(per_node * (kt / kb));
        let bytes = (kb * bin + weights * kb * nb * bin + nb * bc(per_node)) * TILE_BYTES;
        if bytes <= t.l1_bytes || kb == 1 {
            return Ok((kb, nb));
        }
        kb = divisor_le(kt, kb - 1);
    }
}

/// Decode matmul `y = epilogue(x @ w)`, K streamed, output blocks over the grid.
pub fn matmul(
    t: &TtTarget,
    doc: &str,
    rows_t: usize,
    kt: usize,
    nt: usize,
    epilogue: Option<(&str, String)>,
) -> Result<Kernel, TtError> {
    matmul_in_units(t, doc, rows_t, kt, nt, nt, epilogue)
}

/// One matmul whose output columns are `outs` tile columns of separate tensors `y0, y1, ...`
/// (the q, k and v projections of one input as one launch: the weights side by side, the writer
/// sends each output block to its tensor).
pub fn split_matmul(t: &TtTarget, doc: &str, rows_t: usize, kt: usize, outs: &[usize]) -> Result<Kernel, TtError> {
    let nt: usize = outs.iter().sum();
    let unit = outs.iter().fold(0, |g, &n| gcd(g, n));
    let mut k = matmul_in_units(t, doc, rows_t, kt, nt, unit, None)?;
    let KernelCtx::Matmul(c) = &mut k.ctx else {
        unreachable!("matmul_in_units makes a matmul context")
    };
    c.outs = out_parts(outs);
    let shape: Vec<String> = outs.iter().map(|n| (n * 32).to_string()).collect();
    k.base = format!("matmul_{}x{}", kt * 32, shape.join("_"));
    k.checked(t)
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn matmul_in_units(
    t: &TtTarget,
    doc: &str,
    rows_t: usize,
    kt: usize,
    nt: usize,
    unit: usize,
    epilogue: Option<(&str, String)>,
) -> Result<Kernel, TtError> {
    let (tiles, grid) = MatmulTiles::new(t, rows_t, kt, nt, unit, 1)?;
    let (kb, nb, bc_in, bc_out) = (tiles.kb, tiles.nb, tiles.bc_in, tiles.bc_out);
    let (edoc, expr, tag) = match &epilogue {
        Some((d, e)) => (d.to_string(), e.clone(), format!("_{d}")),
        None => (String::new(), "acc".to_string(), String::new()),
    };
    let ctx = MatmulCtx {
        doc: doc.to_string(),
        tiles,
        epilogue: expr,
        epilogue_doc: edoc,
        gate: false,
        outs: Vec::new(),
    };
    Kernel {
        name: String::new(),
        family: Family::Matmul,
        base: format!("matmul_{}x{}{tag}", kt * 32, nt * 32),
        ctx: KernelCtx::Matmul(ctx),
        weights: WeightFormat::Bf16,
        dfbs: vec![
            Dfb::new("x", kb, bc_in),
            Dfb::new("w", kb * nb, bc_in),
            Dfb::new("y", nb, bc_out),
        ],
        grid,
        cost: Cost::new(kt * nt + rows_t * (kt + nt), matmul_flops(rows_t, kt, nt)).weights(kt * nt),
    }
    .checked(t)
}

/// `epilogue(x @ w) * e[:, offset..]`: a matmul whose result gates a slice of another
/// activation (Gemma 4's per-layer-input gate: `gelu(x @ W_gate) * per_layer_input[layer]`). The
/// slice starts at a tile column read at run time from a one-tile index tensor.
pub fn gated_matmul(
    t: &TtTarget,
    doc: &str,
    rows_t: usize,
    kt: usize,
    nt: usize,
    epilogue: Option<(&str, String)>,
) -> Result<Kernel, TtError> {
    let mut k = matmul(t, doc, rows_t, kt, nt, epilogue)?;
    let KernelCtx::Matmul(c) = &mut k.ctx else {
        unreachable!("matmul() makes a matmul context")
    };
    c.gate = true;
    let (nb, bc_out) = (c.tiles.nb, c.tiles.bc_out);
    k.dfbs.push(Dfb::new("e", nb, bc_out));
    k.dfbs.push(Dfb::new("off", POS_DFB_TILES, 1));
    k.base = format!("gated_{}", k.base);
    k.cost.dram_bytes += (rows_t * nt * TILE_BYTES) as u64;
    k.checked(t)
}

/// `gelu_tanh(x @ wg) * (x @ wu)` in one launch.
pub fn geglu_matmul(t: &TtTarget, doc: &str, rows_t: usize, kt: usize, nt: usize) -> Result<Kernel, TtError> {
    let (tiles, grid) = MatmulTiles::new(t, rows_t, kt, nt, nt, 2)?;
    let (kb, nb, bc_in, bc_out) = (tiles.kb, tiles.nb, tiles.bc_in, tiles.bc_out);
    let ctx = GegluCtx {
        doc: doc.to_string(),
        tiles,
        gelu_g: gelu_expr("g"),
    };
    Kernel {
        name: String::new(),
        family: Family::GegluMatmul,
        base: format!("geglu_matmul_{}x{}", kt * 32, nt * 32),
        ctx: KernelCtx::GegluMatmul(ctx),
        weights: WeightFormat::Bf16,
        dfbs: vec![
            Dfb::new("x", kb, bc_in),
            Dfb::new("wg", kb * nb, bc_in),
            Dfb::new("wu", kb * nb, bc_in),
            Dfb::new("y", nb, bc_out),
        ],
        grid,
        cost: Cost::new(2 * kt * nt + rows_t * (kt + nt), 2 * matmul_flops(rows_t, kt, nt)).weights(2 * kt * nt),
    }
    .checked(t)
}

/// Final norm + LM head + soft-cap.
#[allow(clippy::too_many_arguments)]
pub fn logits_head(
    t: &TtTarget,
    doc: &str,
    rows_t: usize,
    kt: usize,
    nt: usize,
    n: usize,
    eps: f32,
    epilogue: Option<(&str, String)>,
) -> Result<Kernel, TtError> {
    if rows_t != 1 {
        return Err(TtError::new(
            "norm + matmul kernels are generated for the decode step (one row) only",
        ));
    }
    let mut nb = divisor_le(nt, (nt / t.cores()).clamp(1, 8));
    let (grid, per_node, n_blocks, b, bw) = loop {
        let n_blocks = rows_t * (nt / nb);
        let (grid, per_node) = t.grid_for(n_blocks);
        let b = bc(per_node);
        let bytes = |bw: usize| (2 * kt + kt * nb * bw + nb * b) * TILE_BYTES;
        if bytes(b) <= t.l1_bytes {
            break (grid, per_node, n_blocks, b, b);
        }
        if nb == 1 {
            // One weight column panel at a time (31B's 5376-deep panel does not fit twice).
            break (grid, per_node, n_blocks, b, 1);
        }
        nb = divisor_le(nt, nb - 1);
    };
    let (edoc, expr, tag) = match &epilogue {
        Some((d, e)) => (d.to_string(), e.clone(), format!("_{d}")),
        None => (String::new(), "acc".to_string(), String::new()),
    };
    let ctx = LogitsHeadCtx {
        doc: doc.to_string(),
        rows_t,
        kt,
        nt,
        nb,
        n,
        col_blocks: nt / nb,
        bc_out: b,
        bc_w: bw,
        bc_x: 1,
        inv_n: py_f32(1.0 / n as f32),
        eps: py_f32(eps),
        epilogue: expr,
        epilogue_doc: edoc,
        grid: GridCtx::new(grid, per_node, n_blocks),
    };
    Kernel {
        name: String::new(),
        family: Family::LogitsHead,
        base: format!("norm_matmul_{}x{}{tag}", kt * 32, nt * 32),
        ctx: KernelCtx::LogitsHead(ctx),
        weights: WeightFormat::Bf16,
        dfbs: vec![
            Dfb::new("x", kt, 1),
            Dfb::new("g", kt, 1),
            Dfb::new("w", kt * nb, bw),
            Dfb::new("y", nb, b),
        ],
        grid,
        cost: Cost::new(kt * nt + 2 * kt + nt, matmul_flops(rows_t, kt, nt)).weights(kt * nt),
    }
    .checked(t)
}
