//! The Gemma sandwich norm folded into the matmul that reads its result: the post-norm +
//! residual add (and the layer scalar, and the next pre-norm) computed by every core in
//! registers in front of its weight panels, with node 0 writing the new residual. One launch
//! instead of two for the MLP input (norm_add_norm → gate/up GeGLU), the per-layer-input gate
//! (norm_add → gated matmul) and the next layer's projections (scaled norm_add_norm → q/k/v).

use serde::Serialize;

use super::{
    bc, divisor_le, gelu_expr, matmul_flops, out_parts, py_f32, Cost, Dfb, Family, GridCtx, Kernel, KernelCtx, OutPart,
    POS_DFB_TILES,
};
use crate::tt::target::{TtTarget, WeightFormat, TILE_BYTES};
use crate::tt::TtError;

/// The prologue: `s = (res + rms_norm(h) * w_post) [* scale]`, and `x = rms_norm(s) * w_pre`
/// when `pre` (else `x = s`); rows of `kt` tiles, `n` real columns.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sandwich {
    pub kt: usize,
    pub n: usize,
    pub eps: f32,
    pub pre: bool,
    pub scaled: bool,
}

/// What is computed from `x` after the prologue.
#[derive(Debug, Clone, PartialEq)]
pub enum SandwichBody {
    /// `x @ w` into one tensor (one part) or several (`parts`: tile columns of each, the fused
    /// q/k/v projections).
    Matmul { parts: Vec<usize> },
    /// `epilogue(x @ w) * e[:, offset..]` (the per-layer-input gate).
    Gated { nt: usize, epilogue: (String, String) },
    /// `gelu_tanh(x @ wg) * (x @ wu)`.
    Geglu { nt: usize },
}

/// Which `SandwichBody` a sandwich_matmul computes (the template's `body`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SandwichKind {
    Matmul,
    Gated,
    Geglu,
}

/// What sandwich_matmul.py.tera reads: the prologue over rows of `kt` tiles (`n` real columns;
/// `inv_n`, `eps` as Python literals), then `body` over `(kt, nb)` weight panels.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SandwichCtx {
    pub doc: String,
    pub kt: usize,
    pub nt: usize,
    pub nb: usize,
    pub n: usize,
    pub inv_n: String,
    pub eps: String,
    /// `x = rms_norm(s) * w_pre` (else `x = s`).
    pub has_pre: bool,
    /// `s` is multiplied by the layer scalar.
    pub scaled: bool,
    pub body: SandwichKind,
    pub bc_w: usize,
    pub bc_out: usize,
    pub gelu_g: String,
    /// The gated body's epilogue on `acc` (`acc` and no name otherwise).
    pub epilogue: String,
    pub epilogue_doc: String,
    /// The matmul body's output columns split over several tensors; empty: one tensor `y`.
    pub outs: Vec<OutPart>,
    #[serde(flatten)]
    pub grid: GridCtx,
}

/// One launch of the sandwich prologue and `body`.
pub fn sandwich_matmul(t: &TtTarget, doc: &str, pro: Sandwich, body: &SandwichBody) -> Result<Kernel, TtError> {
    let kt = pro.kt;
    let (nt, unit, weights, kind) = match body {
        SandwichBody::Matmul { parts } => (
            parts.iter().sum(),
            parts.iter().fold(0, |g, &n| gcd(g, n)),
            1,
            SandwichKind::Matmul,
        ),
        SandwichBody::Gated { nt, .. } => (*nt, *nt, 1, SandwichKind::Gated),
        SandwichBody::Geglu { nt } => (*nt, *nt, 2, SandwichKind::Geglu),
    };
    let gated = matches!(body, SandwichBody::Gated { .. });
    // res, h, w_post, s (+ w_pre) rows and the scalar, held for the whole launch.
    let prologue = (4 + usize::from(pro.pre)) * kt + usize::from(pro.scaled);
    let mut nb = divisor_le(unit, (nt / t.cores()).clamp(1, 8));
    let (grid, per_node, n_blocks, b, bw) = loop {
        let n_blocks = nt / nb;
        let (grid, per_node) = t.grid_for(n_blocks);
        let b = bc(per_node);
        let gate = if gated { nb * b + POS_DFB_TILES } else { 0 };
        let bytes = |bw: usize| (prologue + weights * kt * nb * bw + nb * b + gate) * TILE_BYTES;
        if bytes(b) <= t.l1_bytes {
            break (grid, per_node, n_blocks, b, b);
        }
        if nb == 1 {
            // One weight panel at a time (no double buffering) rather than no fusion.
            break (grid, per_node, n_blocks, b, 1);
        }
        nb = divisor_le(unit, nb - 1);
    };
    let mut ctx = SandwichCtx {
        doc: doc.to_string(),
        kt,
        nt,
        nb,
        n: pro.n,
        inv_n: py_f32(1.0 / pro.n as f32),
        eps: py_f32(pro.eps),
        has_pre: pro.pre,
        scaled: pro.scaled,
        body: kind,
        bc_w: bw,
        bc_out: b,
        gelu_g: gelu_expr("g"),
        epilogue: "acc".to_string(),
        epilogue_doc: String::new(),
        outs: Vec::new(),
        grid: GridCtx::new(grid, per_node, n_blocks),
    };
    let mut dfbs = vec![Dfb::new("res", kt, 1), Dfb::new("h", kt, 1), Dfb::new("w_post", kt, 1)];
    if pro.pre {
        dfbs.push(Dfb::new("w_pre", kt, 1));
    }
    if pro.scaled {
        dfbs.push(Dfb::new("scale", 1, 1));
    }
    dfbs.push(Dfb::new("s", kt, 1));
    let mut tag = String::new();
    match body {
        SandwichBody::Matmul { parts } => {
            dfbs.push(Dfb::new("w", kt * nb, bw));
            if parts.len() > 1 {
                ctx.outs = out_parts(parts);
            }
            let shape: Vec<String> = parts.iter().map(|n| (n * 32).to_string()).collect();
            tag.push_str(&format!("matmul_{}x{}", kt * 32, shape.join("_")));
        }
        SandwichBody::Gated { epilogue, .. } => {
            dfbs.push(Dfb::new("w", kt * nb, bw));
            dfbs.push(Dfb::new("e", nb, b));
            dfbs.push(Dfb::new("off", POS_DFB_TILES, 1));
            ctx.epilogue_doc = epilogue.0.clone();
            ctx.epilogue = epilogue.1.clone();
            tag.push_str(&format!("gated_matmul_{}x{}_{}", kt * 32, nt * 32, epilogue.0));
        }
        SandwichBody::Geglu { .. } => {
            dfbs.push(Dfb::new("wg", kt * nb, bw));
            dfbs.push(Dfb::new("wu", kt * nb, bw));
            tag.push_str(&format!("geglu_matmul_{}x{}", kt * 32, nt * 32));
        }
    }
    dfbs.push(Dfb::new("y", nb, b));
    let norm = match (pro.pre, pro.scaled) {
        (true, true) => "norm_add_norm_scaled",
        (true, false) => "norm_add_norm",
        (false, true) => "norm_add_scaled",
        (false, false) => "norm_add",
    };
    // Weights, the two input rows, the norm weights and s written, the outputs (and the gate's
    // slice): inputs re-read by every core count once, as elsewhere.
    let tiles = weights * kt * nt + prologue + nt + if gated { nt } else { 0 };
    Kernel {
        name: String::new(),
        family: Family::SandwichMatmul,
        base: format!("{norm}_{tag}"),
        ctx: KernelCtx::SandwichMatmul(ctx),
        weights: WeightFormat::Bf16,
        dfbs,
        grid,
        cost: Cost::new(tiles, weights * matmul_flops(1, kt, nt)).weights(weights * kt * nt),
    }
    .checked(t)
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}
