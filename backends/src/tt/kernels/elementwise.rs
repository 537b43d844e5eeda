//! Elementwise operations and the tile-aligned slice copy.

use serde_json::{json, Value};

use super::{bc, divisor_le, with_grid, Cost, Dfb, Family, Kernel, Mode, POS_DFB_TILES};
use crate::tt::target::TtTarget;
use crate::tt::TtError;

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
    let inputs: Vec<Value> = modes
        .iter()
        .enumerate()
        .map(|(i, m)| json!({"name": names[i], "mode": m.name()}))
        .collect();
    let mut dfbs: Vec<Dfb> = modes
        .iter()
        .enumerate()
        .map(|(i, m)| Dfb::new(names[i], if *m == Mode::Scalar { 1 } else { nb }, b))
        .collect();
    dfbs.push(Dfb::new("y", nb, b));
    let ctx = json!({
        "doc": doc, "expr": expr, "inputs": inputs, "rows_t": rows_t, "cols_t": cols_t, "nb": nb,
        "col_blocks": col_blocks, "bc": b,
    });
    Kernel {
        name: String::new(),
        family: Family::Eltwise,
        base,
        ctx: with_grid(ctx, grid, per_node, n_blocks),
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
    let ctx = json!({"doc": doc, "rows_t": rows_t, "cols_t": cols_t, "nb": nb, "col_blocks": col_blocks, "bc": b});
    Kernel {
        name: String::new(),
        family: Family::Copy,
        base: format!("slice_{}", cols_t * 32),
        ctx: with_grid(ctx, grid, per_node, n_blocks),
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
