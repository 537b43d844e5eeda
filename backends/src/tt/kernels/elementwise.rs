//! Elementwise operations and the tile-aligned slice copy.

use serde::Serialize;

use super::{bc, divisor_le, Cost, Dfb, Family, GridCtx, Kernel, KernelCtx, Mode, POS_DFB_TILES};
use crate::tt::target::{TtTarget, WeightFormat};
use crate::tt::TtError;

/// What eltwise.py.tera reads: `expr` over the inputs' blocks, `(1, nb)` blocks of a
/// `rows_t x cols_t` tile grid.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EltwiseCtx {
    pub doc: String,
    pub expr: String,
    pub inputs: Vec<EltwiseInput>,
    pub rows_t: usize,
    pub cols_t: usize,
    pub nb: usize,
    pub col_blocks: usize,
    pub bc: usize,
    #[serde(flatten)]
    pub grid: GridCtx,
}

/// An eltwise operand: its tensor name (`a`, `b`, `c`) and how it is read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EltwiseInput {
    pub name: &'static str,
    pub mode: Mode,
}

/// What copy.py.tera reads: `(1, nb)` blocks of the `rows_t x cols_t` slice.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CopyCtx {
    pub doc: String,
    pub rows_t: usize,
    pub cols_t: usize,
    pub nb: usize,
    pub col_blocks: usize,
    pub bc: usize,
    #[serde(flatten)]
    pub grid: GridCtx,
}

/// Elementwise family (add, mul, scale, gelu_tanh, softcap, gelu_mul): `expr` over the operands
/// `a_v`, `b_v` (already broadcast to the block shape `shp`).
pub fn eltwise(
    t: &TtTarget,
    base: String,
    doc: &str,
    expr: String,
    modes: &[Mode],
    rows_t: usize,
    cols_t: usize,
) -> Result<Kernel, TtError> {
    let nb = divisor_le(cols_t, 8);
    let col_blocks = cols_t / nb;
    let n_blocks = rows_t * col_blocks;
    let (grid, per_node) = t.grid_for(n_blocks);
    let b = bc(per_node);
    let names = ["a", "b", "c"];
    let inputs: Vec<EltwiseInput> = modes
        .iter()
        .enumerate()
        .map(|(i, &mode)| EltwiseInput { name: names[i], mode })
        .collect();
    let mut dfbs: Vec<Dfb> = modes
        .iter()
        .enumerate()
        .map(|(i, m)| Dfb::new(names[i], if *m == Mode::Scalar { 1 } else { nb }, b))
        .collect();
    dfbs.push(Dfb::new("y", nb, b));
    let ctx = EltwiseCtx {
        doc: doc.to_string(),
        expr,
        inputs,
        rows_t,
        cols_t,
        nb,
        col_blocks,
        bc: b,
        grid: GridCtx::new(grid, per_node, n_blocks),
    };
    Kernel {
        name: String::new(),
        family: Family::Eltwise,
        base,
        ctx: KernelCtx::Eltwise(ctx),
        weights: WeightFormat::Bf16,
        dfbs,
        grid,
        cost: Cost::new(
            modes
                .iter()
                .map(|m| {
                    if *m == Mode::Scalar {
                        1
                    } else if *m == Mode::Row {
                        cols_t
                    } else {
                        rows_t * cols_t
                    }
                })
                .sum::<usize>()
                + rows_t * cols_t,
            8 * rows_t * cols_t * 1024,
        ),
    }
    .checked(t)
}

/// Tile-aligned column slice (the start column is read at run time from a one-tile tensor).
pub fn copy(t: &TtTarget, doc: &str, rows_t: usize, cols_t: usize) -> Result<Kernel, TtError> {
    let nb = divisor_le(cols_t, 8);
    let col_blocks = cols_t / nb;
    let n_blocks = rows_t * col_blocks;
    let (grid, per_node) = t.grid_for(n_blocks);
    let b = bc(per_node);
    let ctx = CopyCtx {
        doc: doc.to_string(),
        rows_t,
        cols_t,
        nb,
        col_blocks,
        bc: b,
        grid: GridCtx::new(grid, per_node, n_blocks),
    };
    Kernel {
        name: String::new(),
        family: Family::Copy,
        base: format!("slice_{}", cols_t * 32),
        ctx: KernelCtx::Copy(ctx),
        weights: WeightFormat::Bf16,
        dfbs: vec![
            Dfb::new("x", nb, b),
            Dfb::new("y", nb, b),
            Dfb::new("offset", POS_DFB_TILES, 1),
        ],
        grid,
        cost: Cost::new(2 * rows_t * cols_t, 0),
    }
    .checked(t)
}
