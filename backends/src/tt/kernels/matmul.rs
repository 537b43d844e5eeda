//! Decode matmuls: plain (with an epilogue), the fused gate/up GeGLU, and final norm + LM head.

use serde_json::json;

use super::{bc, divisor_le, gelu_expr, matmul_flops, py_f32, with_grid, Cost, Dfb, Family, Kernel, POS_DFB_TILES};
use crate::tt::target::{TtTarget, TILE_BYTES};
use crate::tt::TtError;

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
    let mut start = 0;
    let parts: Vec<_> = outs
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            start += n;
            json!({"name": format!("y{i}"), "start": start - n, "end": start})
        })
        .collect();
    k.ctx
        .as_object_mut()
        .expect("kernel contexts are objects")
        .insert("outs".into(), json!(parts));
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
    let (kb, nb) = matmul_blocks(t, rows_t, kt, nt, unit, 1)?;
    let col_blocks = nt / nb;
    let n_blocks = rows_t * col_blocks;
    let (grid, per_node) = t.grid_for(n_blocks);
    let (bc_in, bc_out) = (bc(per_node * (kt / kb)), bc(per_node));
    let (edoc, expr, tag) = match &epilogue {
        Some((d, e)) => (d.to_string(), e.clone(), format!("_{d}")),
        None => (String::new(), "acc".to_string(), String::new()),
    };
    let ctx = json!({
        "doc": doc, "rows_t": rows_t, "kt": kt, "nt": nt, "kb": kb, "nb": nb, "k_blocks": kt / kb,
        "col_blocks": col_blocks, "bc_in": bc_in, "bc_out": bc_out, "epilogue": expr, "epilogue_doc": edoc,
    });
    Kernel {
        name: String::new(),
        family: Family::Matmul,
        base: format!("matmul_{}x{}{tag}", kt * 32, nt * 32),
        ctx: with_grid(ctx, grid, per_node, n_blocks),
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
    let bc_out = k.ctx["bc_out"].as_u64().unwrap_or(1) as usize;
    let nb = k.ctx["nb"].as_u64().unwrap_or(1) as usize;
    k.ctx
        .as_object_mut()
        .expect("kernel contexts are objects")
        .insert("gate".into(), json!(true));
    k.dfbs.push(Dfb::new("e", nb, bc_out));
    k.dfbs.push(Dfb::new("off", POS_DFB_TILES, 1));
    k.base = format!("gated_{}", k.base);
    k.cost.dram_bytes += (rows_t * nt * TILE_BYTES) as u64;
    k.checked(t)
}

/// `gelu_tanh(x @ wg) * (x @ wu)` in one launch.
pub fn geglu_matmul(t: &TtTarget, doc: &str, rows_t: usize, kt: usize, nt: usize) -> Result<Kernel, TtError> {
    let (kb, nb) = matmul_blocks(t, rows_t, kt, nt, nt, 2)?;
    let col_blocks = nt / nb;
    let n_blocks = rows_t * col_blocks;
    let (grid, per_node) = t.grid_for(n_blocks);
    let (bc_in, bc_out) = (bc(per_node * (kt / kb)), bc(per_node));
    let ctx = json!({
        "doc": doc, "rows_t": rows_t, "kt": kt, "nt": nt, "kb": kb, "nb": nb, "k_blocks": kt / kb,
        "col_blocks": col_blocks, "bc_in": bc_in, "bc_out": bc_out, "gelu_g": gelu_expr("g"),
    });
    Kernel {
        name: String::new(),
        family: Family::GegluMatmul,
        base: format!("geglu_matmul_{}x{}", kt * 32, nt * 32),
        ctx: with_grid(ctx, grid, per_node, n_blocks),
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
    let ctx = json!({
        "doc": doc, "rows_t": rows_t, "kt": kt, "nt": nt, "nb": nb, "n": n, "col_blocks": nt / nb,
        "bc_out": b, "bc_w": bw, "bc_x": 1, "inv_n": py_f32(1.0 / n as f32), "eps": py_f32(eps), "epilogue": expr, "epilogue_doc": edoc,
    });
    Kernel {
        name: String::new(),
        family: Family::LogitsHead,
        base: format!("norm_matmul_{}x{}{tag}", kt * 32, nt * 32),
        ctx: with_grid(ctx, grid, per_node, n_blocks),
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
