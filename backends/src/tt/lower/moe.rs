//! The MoE steps of the decode program: router (norm + projection + routing), routing alone,
//! and the dense evaluation of every expert weighted by its routing weight.

use gemma4c_passes::plan::Step;

use super::ctx::{transposed, Ctx};
use super::mesh::{self, ShardDim};
use super::{Arg, Call, Item, Source};
use crate::tt::kernels::{self, py_f32};
use crate::tt::layout::DevLayout;
use crate::tt::TtError;

#[allow(clippy::too_many_arguments)]
pub(super) fn router(
    c: &mut Ctx,
    s: &Step,
    comment: String,
    items: &mut Vec<Item>,
    eps: &f32,
    scalar: &f32,
    top_k: &usize,
) -> Result<(), TtError> {
    let t = c.t;
    let (x, out) = (s.inputs[0], s.outputs[0]);
    let lx = c.lay(x)?;
    let n = *c.shape(x).last().unwrap_or(&1);
    let (_, pshape) = c
        .weight(s.inputs[2])
        .ok_or_else(|| c.err(s, "the router projection is not a checkpoint tensor"))?;
    let e = pshape[0];
    if lx.groups != 1 || lx.width != n {
        return Err(c.err(s, "the router input must be one unsegmented row"));
    }
    let (skey, _) = c
        .weight(s.inputs[1])
        .ok_or_else(|| c.err(s, "the router scale is not a checkpoint tensor"))?;
    let skey = skey.to_string();
    let g = c.row(&skey, DevLayout::flat(1, n))?;
    let dense = DevLayout::flat(1, e);
    let w = transposed(c, s, s.inputs[2], lx, dense)?;
    let scores = c.new_scratch(dense);
    let epilogue = Some(("scale", format!("acc * ttl.block.fill({}, shp)", py_f32(*scalar))));
    let k = kernels::logits_head(
        t,
        "router: rms_norm * scale @ proj * scalar",
        lx.row_tiles(),
        lx.col_tiles(),
        dense.col_tiles(),
        n,
        *eps,
        epilogue,
    )?;
    let k = c.weight_kernel(k, &w)?;
    items.push(Item::kernel(
        format!("{comment} (scores)"),
        k,
        vec![Arg::Buf(x), Arg::W(g), Arg::W(w), Arg::Buf(scores)],
        vec![x],
        vec![scores],
    ));
    c.lay.insert(out, dense);
    let (key, _) = c
        .weight(s.inputs[3])
        .ok_or_else(|| c.err(s, "per_expert_scale is not a checkpoint tensor"))?;
    let key = key.to_string();
    let scale = c.row(&key, dense)?;
    let pad = c.prep(
        format!("moe.pad.e{e}"),
        1,
        e.div_ceil(32) * 32,
        false,
        Source::MoePad { experts: e },
    )?;
    let k = kernels::moe_route(
        t,
        "MoE routing (softmax, top-k, renormalize, per-expert scale)",
        e,
        *top_k,
    )?;
    let k = c.kernel(k);
    items.push(Item::kernel(
        format!("{comment} (routing)"),
        k,
        vec![Arg::Buf(scores), Arg::W(scale), Arg::W(pad), Arg::Buf(out)],
        vec![scores],
        vec![out],
    ));
    Ok(())
}

pub(super) fn route(
    c: &mut Ctx,
    s: &Step,
    comment: String,
    items: &mut Vec<Item>,
    top_k: &usize,
) -> Result<(), TtError> {
    let t = c.t;
    let kcall = |kernel: usize, args: Vec<Arg>, reads: Vec<usize>, writes: Vec<usize>| {
        Item::kernel(comment.clone(), kernel, args, reads, writes)
    };
    let scores = s.inputs[0];
    let e = *c.shape(scores).last().unwrap_or(&1);
    let out = s.outputs[0];
    // One routing row per token (decode: 1, a prefill chunk: 32; one tile row either way).
    let dense = DevLayout::flat(c.lay(scores)?.rows, e);
    c.lay.insert(out, dense);
    let (key, _) = c
        .weight(s.inputs[1])
        .ok_or_else(|| c.err(s, "per_expert_scale is not a checkpoint tensor"))?;
    let key = key.to_string();
    let scale = c.row(&key, DevLayout::flat(1, e))?;
    let pad = c.prep(
        format!("moe.pad.e{e}"),
        1,
        e.div_ceil(32) * 32,
        false,
        Source::MoePad { experts: e },
    )?;
    if c.lay(scores)? != dense {
        return Err(c.err(s, "router scores must be one unsegmented row per token"));
    }
    let k = kernels::moe_route(
        t,
        "MoE routing (softmax, top-k, renormalize, per-expert scale)",
        e,
        *top_k,
    )?;
    let k = c.kernel(k);
    items.push(kcall(
        k,
        vec![Arg::Buf(scores), Arg::W(scale), Arg::W(pad), Arg::Buf(out)],
        vec![scores],
        vec![out],
    ));
    Ok(())
}

pub(super) fn experts(c: &mut Ctx, s: &Step, comment: String, items: &mut Vec<Item>) -> Result<(), TtError> {
    let t = c.t;
    let (x, wr, out) = (s.inputs[0], s.inputs[1], s.outputs[0]);
    let (lx, lo) = (c.lay(x)?, c.lay(out)?);
    let (gkey, gshape) = c
        .weight(s.inputs[3])
        .ok_or_else(|| c.err(s, "gate_up is not a checkpoint tensor"))?;
    let (gkey, gshape) = (gkey.to_string(), gshape.to_vec());
    let (dkey, _) = c
        .weight(s.inputs[4])
        .ok_or_else(|| c.err(s, "down is not a checkpoint tensor"))?;
    let dkey = dkey.to_string();
    let (e, inter) = (gshape[0], gshape[1] / 2);
    let it = inter.div_ceil(32);
    let lgu = DevLayout {
        rows: 1,
        groups: 2 * e,
        width: inter,
    };
    let lact = DevLayout {
        rows: 1,
        groups: e,
        width: inter,
    };
    let xin = DevLayout { rows: 1, ..lx }.canonical();
    let gu = c.prep(
        format!(
            "{gkey}@t{}",
            if xin.tag().is_empty() {
                String::new()
            } else {
                format!(".{}", xin.tag())
            }
        ),
        xin.col_tiles() * 32,
        2 * e * it * 32,
        false,
        Source::MoeGateUp {
            key: gkey,
            experts: e,
            inter,
            xin,
        },
    )?;
    let lout = DevLayout { rows: 1, ..lo }.canonical();
    let down = c.prep(
        format!(
            "{dkey}@t{}",
            if lout.tag().is_empty() {
                String::new()
            } else {
                format!(".{}", lout.tag())
            }
        ),
        e * it * 32,
        lout.col_tiles() * 32,
        false,
        Source::MoeDown {
            key: dkey,
            experts: e,
            inter,
            out: lout,
        },
    )?;
    let ex = c.prep(
        format!("moe.expand.e{e}.i{inter}"),
        e.div_ceil(32) * 32,
        e * it * 32,
        false,
        Source::MoeExpand { experts: e, inter },
    )?;
    // On a mesh whose chips split the experts evenly, each chip runs its share of the experts
    // (gate/up columns, expansion columns and down rows sharded by expert) and an all-reduce sums
    // the down projections' partial sums (`mesh.rs`); otherwise every chip runs them all.
    let chips = t.chips();
    let share = if chips > 1 && e.is_multiple_of(chips) {
        e / chips
    } else {
        e
    };
    if share < e {
        mesh::shard(c, &gu, ShardDim::Cols, 2 * share * it)?;
        mesh::shard(c, &ex, ShardDim::Cols, share * it)?;
        mesh::shard(c, &down, ShardDim::Rows, share * it)?;
    }
    let lgu = DevLayout {
        groups: 2 * share,
        ..lgu
    };
    let lact = DevLayout { groups: share, ..lact };
    let s1 = c.new_scratch(lgu);
    let s2 = c.new_scratch(lact);
    let sum = if share < e {
        for b in [s1, s2] {
            c.per_chip.insert(b);
        }
        let partial = c.new_scratch(lo);
        c.per_chip.insert(partial);
        partial
    } else {
        out
    };
    let k1 = kernels::matmul(
        t,
        "decode matmul: y = x @ W",
        lx.row_tiles(),
        lx.col_tiles(),
        lgu.col_tiles(),
        None,
    )?;
    let k1 = c.weight_kernel(k1, &gu)?;
    items.push(Item::kernel(
        format!("{comment} (gate/up of every expert)"),
        k1,
        vec![Arg::Buf(x), Arg::W(gu), Arg::Buf(s1)],
        vec![x],
        vec![s1],
    ));
    let k2 = kernels::moe_act_share(
        t,
        "MoE expert activations weighted by the dense routing row",
        share,
        e,
        it,
    )?;
    let k2 = c.kernel(k2);
    items.push(Item::kernel(
        format!("{comment} (gelu(gate) * up * routing weight)"),
        k2,
        vec![Arg::Buf(s1), Arg::Buf(wr), Arg::W(ex), Arg::Buf(s2)],
        vec![s1, wr],
        vec![s2],
    ));
    let k3 = kernels::matmul(
        t,
        "decode matmul: y = x @ W",
        lact.row_tiles(),
        lact.col_tiles(),
        lo.col_tiles(),
        None,
    )?;
    let k3 = c.weight_kernel(k3, &down)?;
    items.push(Item::kernel(
        format!("{comment} (down of every expert, summed)"),
        k3,
        vec![Arg::Buf(s2), Arg::W(down), Arg::Buf(sum)],
        vec![s2],
        vec![sum],
    ));
    if sum != out {
        items.push(Item {
            comment: format!("{comment} (all-reduce of the chips' expert sums)"),
            call: Call::AllReduce { src: sum, dst: out },
            reads: vec![sum],
            writes: vec![out],
        });
    }
    Ok(())
}
