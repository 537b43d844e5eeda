//! MoE routing and the dense expert activations.

use serde::Serialize;

use super::{bc, divisor_le, gelu_expr, Cost, Dfb, Family, GridCtx, Kernel, KernelCtx};
use crate::tt::target::{Grid, TtTarget, WeightFormat};
use crate::tt::TtError;

/// What moe_route.py.tera reads: the router scores of `experts` (`et` tiles), `top_k` kept.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MoeRouteCtx {
    pub doc: String,
    pub experts: usize,
    pub et: usize,
    pub top_k: usize,
    #[serde(flatten)]
    pub grid: GridCtx,
}

/// What moe_act.py.tera reads: `experts` experts of `it` intermediate tiles (gate and up halves
/// of `it2`), in `(1, nb)` blocks (`jb` per expert); the routing row spans `et` tiles.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MoeActCtx {
    pub doc: String,
    pub experts: usize,
    pub et: usize,
    pub it: usize,
    pub it2: usize,
    pub nb: usize,
    pub jb: usize,
    pub bc: usize,
    pub gelu_g: String,
    #[serde(flatten)]
    pub grid: GridCtx,
}

/// MoE routing to a dense weight row.
pub fn moe_route(t: &TtTarget, doc: &str, experts: usize, top_k: usize) -> Result<Kernel, TtError> {
    let et = experts.div_ceil(32);
    let ctx = MoeRouteCtx {
        doc: doc.to_string(),
        experts,
        et,
        top_k,
        grid: GridCtx::new(Grid { cols: 1, rows: 1 }, 1, 1),
    };
    Kernel {
        name: String::new(),
        family: Family::MoeRoute,
        base: format!("moe_route_{experts}_top{top_k}"),
        ctx: KernelCtx::MoeRoute(ctx),
        weights: WeightFormat::Bf16,
        dfbs: ["scores", "scale", "pad", "y"]
            .iter()
            .map(|&name| Dfb::new(name, et, 1))
            .collect(),
        grid: Grid { cols: 1, rows: 1 },
        cost: Cost::new(4 * et, 64 * et * 1024),
    }
    .checked(t)
}

/// Dense expert activations `gelu(gate_e) * up_e * w_e`.
pub fn moe_act(t: &TtTarget, doc: &str, experts: usize, it: usize) -> Result<Kernel, TtError> {
    moe_act_share(t, doc, experts, experts, it)
}

/// `moe_act` over a share of `experts` consecutive experts of a routing row of `lanes` experts
/// (a chip's share when the experts are split over a mesh: the expansion matrix's columns are
/// sharded with them, its rows and the routing row are whole).
pub fn moe_act_share(t: &TtTarget, doc: &str, experts: usize, lanes: usize, it: usize) -> Result<Kernel, TtError> {
    let et = lanes.div_ceil(32);
    let nb = divisor_le(it, 8);
    let jb = it / nb;
    let n_blocks = experts * jb;
    let (grid, per_node) = t.grid_for(n_blocks);
    let b = bc(per_node);
    let ctx = MoeActCtx {
        doc: doc.to_string(),
        experts,
        et,
        it,
        it2: 2 * it,
        nb,
        jb,
        bc: b,
        gelu_g: gelu_expr("g"),
        grid: GridCtx::new(grid, per_node, n_blocks),
    };
    Kernel {
        name: String::new(),
        family: Family::MoeAct,
        base: if lanes == experts {
            format!("moe_act_{experts}x{}", it * 32)
        } else {
            format!("moe_act_{experts}of{lanes}x{}", it * 32)
        },
        ctx: KernelCtx::MoeAct(ctx),
        weights: WeightFormat::Bf16,
        dfbs: vec![
            Dfb::new("gate", nb, b),
            Dfb::new("up", nb, b),
            Dfb::new("w", et, b),
            Dfb::new("expand", et * nb, b),
            Dfb::new("y", nb, b),
        ],
        grid,
        cost: Cost::new(
            experts * it * 3 + et * (1 + nb * jb * experts),
            16 * experts * it * 1024,
        ),
    }
    .checked(t)
}
