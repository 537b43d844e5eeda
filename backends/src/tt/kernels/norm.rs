//! Row norms (plain, with residual add, the Gemma sandwich) and the per-head q/k norm + RoPE.

use serde_json::{json, Value};

use super::{bc, divisor_le, matmul_flops, py_f32, with_grid, Cost, Dfb, Family, Kernel, NormKind, POS_DFB_TILES};
use crate::tt::target::{TtTarget, TILE_BYTES};
use crate::tt::TtError;

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
    let ctx = json!({
        "doc": doc, "rows_t": rows_t, "groups": groups, "st": st, "n": n, "bc": b, "has_w": has_w,
        "inv_n": py_f32(1.0 / n as f32), "eps": py_f32(eps), "has_pre": kind == NormKind::NormAddNorm,
    });
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
        ctx: with_grid(ctx, grid, per_node, n_blocks),
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
    let var = |name: &str| {
        match name {
            "res" => "r",
            "w_post" => "wa",
            "w_pre" => "wb",
            other => other,
        }
        .to_string()
    };
    let d = |name: &str| json!({"var": var(name), "tensor": name, "weight": name.starts_with('w')});
    let (passes, outs): (Vec<Vec<Value>>, Vec<&str>) = match family {
        "rms_norm" if has_w => (vec![vec![d("x")], vec![d("x"), d("w")]], vec!["y"]),
        "rms_norm" => (vec![vec![d("x")], vec![d("x")]], vec!["y"]),
        "add_rms_norm" => (vec![vec![d("a"), d("b")], vec![d("a"), d("b"), d("w")]], vec!["s", "y"]),
        "norm_add" => (vec![vec![d("x")], vec![d("res"), d("x"), d("w_post")]], vec!["s"]),
        _ => (
            vec![
                vec![d("x")],
                vec![d("res"), d("x"), d("w_post")],
                vec![d("res"), d("x"), d("w_post"), d("w_pre")],
            ],
            vec!["s", "y"],
        ),
    };
    let dfbs: Vec<Value> = names
        .iter()
        .map(|name| json!({"var": var(name), "tensor": name}))
        .collect();
    let ctx = json!({
        "doc": doc, "kind": family, "rows_t": rows_t, "groups": groups, "st": st, "n": n, "has_w": has_w,
        "cb": cb, "nc": st / cb, "inv_n": py_f32(1.0 / n as f32), "eps": py_f32(eps), "dfbs": dfbs,
        "passes": passes, "outs": outs,
    });
    Kernel {
        name: String::new(),
        family: Family::Norm(kind),
        base: format!("{family}{g}{n}{w}_streamed"),
        ctx: with_grid(ctx, grid, per_node, n_blocks),
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
        let b = self.ctx["bc"].as_u64().unwrap_or(1) as usize;
        self.ctx
            .as_object_mut()
            .expect("kernel contexts are objects")
            .insert("scaled".into(), json!(true));
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
    let ctx = json!({
        "doc": doc, "heads": heads, "dt": dt, "bc": b, "has_norm": has_norm,
        "inv_n": py_f32(1.0 / n as f32), "eps": py_f32(eps.unwrap_or(0.0)),
    });
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
        ctx: with_grid(ctx, grid, per_node, heads),
        dfbs,
        grid,
        cost: Cost::new(
            heads * (4 * dt + dt * dt + 1) + if has_norm { heads * dt } else { 0 },
            heads * (matmul_flops(1, dt, dt) + 2 * matmul_flops(1, 1, dt)),
        ),
    }
    .checked(t)
}
