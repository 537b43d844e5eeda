//! Tensor parallelism over the board's chips (`TtTarget::mesh`; a p300 is a (1, 2) mesh).
//!
//! The MLP, the bulk of the weights, is split Megatron style: the gate and up projections are
//! column-parallel (chip `c` holds tile columns `c * n .. (c + 1) * n` of `W_gate^T` and `W_up^T`
//! and computes that share of `gelu(x W_gate) * (x W_up)`), the down projection row-parallel (chip
//! `c` holds the matching rows of `W_down^T` and computes a partial sum), and one all-reduce leaves
//! the sum on every chip. Intermediate widths that do not split into whole tiles per chip are
//! zero-padded: padded gate/up columns give `gelu(0) * 0 = 0`, padded down rows are zero, so the
//! padding is exact. MoE layers split their experts the same way when the chips divide them
//! evenly (`moe.rs`: each chip runs its share of the experts, an all-reduce sums them). Everything
//! else (norms, attention, the KV caches, the LM head, the router) is replicated: every chip runs
//! the same launch on the same values.
//!
//! On hardware, every launch runs once on the mesh (TT-NN runs an operation on each chip over its
//! local shard); under tt-lang-sim, whose mesh runs an operation once on the global tensor,
//! `sim_support.SimMesh` runs the sharded launches once per chip on the per-chip tensors and adds
//! the partial sums, so the parity tests check the sharded program itself.

use std::collections::BTreeMap;

use gemma4c_ir::Op;
use gemma4c_passes::plan::Step;

use super::ctx::{transposed, Ctx};
use super::geglu::{gate_up_kernel, GeGlu};
use super::lookup::Lookup;
use super::sandwich::Prologue;
use super::{Arg, Call, Item};
use crate::tt::kernels;
use crate::tt::layout::DevLayout;
use crate::tt::TtError;

/// Which axis of a prepared weight is split over the chips.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardDim {
    /// Rows (`W_down^T`, row-parallel).
    Rows,
    /// Columns (`W_gate^T`, `W_up^T`, column-parallel).
    Cols,
}

impl ShardDim {
    /// The dimension TT-NN's `ShardTensorToMesh(dim=...)` takes for a 2-D tensor.
    pub fn dim(self) -> usize {
        match self {
            ShardDim::Rows => 0,
            ShardDim::Cols => 1,
        }
    }
}

/// One sharded MLP: the fused gate/up/GeGLU step and the down projection that consumes it.
#[derive(Debug, Clone, Copy)]
pub(super) struct ShardedMlp {
    /// The down projection (a `MatMul` step).
    pub down: usize,
    /// Layout of the whole intermediate activation (what the checkpoint's shapes describe).
    pub full: DevLayout,
    /// Tile columns of the intermediate on each chip.
    pub per_chip_tiles: usize,
}

/// The GeGLU groups (`geglu::find`) whose result only a down projection reads, keyed by the
/// `gelu_mul` step. Empty on a one-chip board.
pub(super) fn find(l: &Lookup, geglus: &BTreeMap<usize, GeGlu>) -> BTreeMap<usize, ShardedMlp> {
    let (c, p) = (l.c, l.p);
    let chips = c.t.chips();
    let mut out = BTreeMap::new();
    if chips < 2 {
        return out;
    }
    for &g in geglus.keys() {
        let act = p.steps[g].outputs[0];
        if l.root(act) != act || !l.once(act) || l.is_output(act) {
            continue;
        }
        let Some(down) = l.consumers(act).into_iter().find(|&d| {
            let s = &p.steps[d];
            matches!(s.op, Op::MatMul) && l.root(s.inputs[0]) == act && c.weight(s.inputs[1]).is_some()
        }) else {
            continue;
        };
        let (Ok(full), Ok(lo)) = (c.lay(act), c.lay(p.steps[down].outputs[0])) else {
            continue;
        };
        if full.groups != 1 || l.is_output(p.steps[down].outputs[0]) || lo.rows != full.rows {
            continue;
        }
        out.insert(
            g,
            ShardedMlp {
                down,
                full,
                per_chip_tiles: full.col_tiles().div_ceil(chips),
            },
        );
    }
    out
}

/// The column-parallel gate/up launch of a sharded MLP (the GeGLU group `g`): the kernel is compiled for one chip's share, the weights are padded to a
/// whole share per chip and marked sharded by columns, and the intermediate becomes a per-chip
/// activation of that share's width.
pub(super) fn lower_gate_up(
    c: &mut Ctx,
    m: &ShardedMlp,
    g: GeGlu,
    pro: Option<&Prologue>,
    items: &mut Vec<Item>,
) -> Result<(), TtError> {
    let p = c.p;
    let (sg, su, s) = (&p.steps[g.gate], &p.steps[g.up], &p.steps[g.gelu_mul]);
    let x = sg.inputs[0];
    let lx = c.lay(x)?;
    let n = m.per_chip_tiles;
    let comment = format!("{} + {} + {}: {} (column-parallel)", sg.name, su.name, s.name, s.op);
    // With `pro`, every chip computes the (replicated) sandwich norm in front of its share.
    let (k, mut args, reads, mut writes, comment) = gate_up_kernel(
        c,
        pro,
        x,
        n,
        ", column-parallel: this chip's share of the intermediate",
        comment,
    )?;
    let wg = transposed(c, sg, sg.inputs[1], lx, m.full)?;
    let wu = transposed(c, su, su.inputs[1], lx, m.full)?;
    for w in [&wg, &wu] {
        shard(c, w, ShardDim::Cols, n)?;
    }
    let k = c.weight_kernel(k, &wg)?;
    let act = s.outputs[0];
    c.lay.insert(act, DevLayout::flat(m.full.rows, n * 32));
    c.per_chip.insert(act);
    args.extend([Arg::W(wg), Arg::W(wu)]);
    if let Some(pro) = pro {
        args.push(Arg::Buf(pro.s));
    }
    args.push(Arg::Buf(act));
    writes.push(act);
    items.push(Item::kernel(comment, k, args, reads, writes));
    Ok(())
}

/// The row-parallel down projection of a sharded MLP: each chip's partial sum, then the
/// all-reduce into the step's output (replicated again).
pub(super) fn lower_down(c: &mut Ctx, m: &ShardedMlp, s: &Step, items: &mut Vec<Item>) -> Result<(), TtError> {
    let (x, out) = (s.inputs[0], s.outputs[0]);
    let lo = c.lay(out)?;
    let n = m.per_chip_tiles;
    let w = transposed(c, s, s.inputs[1], m.full, lo)?;
    shard(c, &w, ShardDim::Rows, n)?;
    let k = kernels::matmul(
        c.t,
        "decode matmul, row-parallel: this chip's partial sum of y = x @ W",
        lo.row_tiles(),
        n,
        lo.col_tiles(),
        None,
    )?;
    let k = c.weight_kernel(k, &w)?;
    let partial = c.new_scratch(lo);
    c.per_chip.insert(partial);
    items.push(Item::kernel(
        format!("{}: {} (row-parallel partial sum)", s.name, s.op),
        k,
        vec![Arg::Buf(x), Arg::W(w), Arg::Buf(partial)],
        vec![x],
        vec![partial],
    ));
    items.push(Item {
        comment: format!("{}: all-reduce of the partial sums over the chips", s.name),
        call: Call::AllReduce { src: partial, dst: out },
        reads: vec![partial],
        writes: vec![out],
    });
    Ok(())
}

/// Pads prepared weight `name` to `per_chip` tiles per chip along `dim` and records the split.
pub(super) fn shard(c: &mut Ctx, name: &str, dim: ShardDim, per_chip: usize) -> Result<(), TtError> {
    let chips = c.t.chips();
    let p = c
        .prepared
        .iter_mut()
        .find(|p| p.name == name)
        .ok_or_else(|| TtError::new(format!("sharding `{name}`: no such prepared weight")))?;
    let len = match dim {
        ShardDim::Rows => &mut p.rows,
        ShardDim::Cols => &mut p.cols,
    };
    if len.div_ceil(32) > chips * per_chip {
        return Err(TtError::new(format!(
            "sharding `{name}`: {} tiles do not fit {chips} shares of {per_chip}",
            len.div_ceil(32)
        )));
    }
    *len = chips * per_chip * 32;
    c.shards.insert(name.to_string(), dim);
    Ok(())
}
