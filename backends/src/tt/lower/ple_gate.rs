//! Backend fusion of Gemma 4's per-layer-input gate: `gelu(x @ W_gate) * per_layer_inputs[layer]`
//! is a matmul, a slice of the per-layer-input row and a gelu_mul; here one launch
//! (`gated_matmul`) whose epilogue multiplies by the slice, read at a run-time tile offset.

use std::collections::BTreeMap;

use gemma4c_ir::Op;
use gemma4c_passes::plan::Program;

use super::ctx::{transposed, Ctx};
use super::lookup::Lookup;
use super::sandwich::Prologue;
use super::{Arg, Item, Source};
use crate::tt::kernels::{self, gelu_expr, SandwichBody};
use crate::tt::TtError;

/// The steps of one gate: `matmul` and `slice` feed the `gelu_mul`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Gate {
    pub(super) matmul: usize,
    pub(super) slice: usize,
    pub(super) gelu_mul: usize,
}

/// Gates keyed by their gelu_mul step.
pub(super) fn find(l: &Lookup) -> BTreeMap<usize, Gate> {
    let (c, p) = (l.c, l.p);
    let mut out = BTreeMap::new();
    for (i, s) in p.steps.iter().enumerate() {
        if !matches!(s.op, Op::GeluMul) {
            continue;
        }
        let (g, e) = (l.root(s.inputs[0]), l.root(s.inputs[1]));
        let (Some(pm), Some(ps)) = (l.producer(g), l.producer(e)) else {
            continue;
        };
        let (sm, ss) = (&p.steps[pm], &p.steps[ps]);
        let same = |a: usize, b: usize| matches!((c.lay(a), c.lay(b)), (Ok(x), Ok(y)) if x == y);
        let fusable = matches!(sm.op, Op::MatMul)
            && c.weight(sm.inputs[1]).is_some()
            && matches!(ss.op, Op::Slice { axis, .. } if axis > 0)
            && l.once(g)
            && l.once(e)
            && same(g, e)
            && same(g, s.outputs[0])
            && c.lay(g).is_ok_and(|l| l.groups == 1)
            && offset(c, ss).is_some();
        if fusable {
            out.insert(
                i,
                Gate {
                    matmul: pm,
                    slice: ps,
                    gelu_mul: i,
                },
            );
        }
    }
    out
}

/// The slice's start tile column in its source, when it is tile aligned.
fn offset(c: &Ctx, s: &gemma4c_passes::plan::Step) -> Option<usize> {
    let Op::Slice { axis, start, end } = s.op else {
        return None;
    };
    let (x, out) = (s.inputs[0], s.outputs[0]);
    let (lx, lo) = (c.lay(x).ok()?, c.lay(out).ok()?);
    let inner: usize = c.shape(x)[axis + 1..].iter().product();
    let (c0, len) = (start * inner, (end - start) * inner);
    let aligned = if lx.width.is_multiple_of(32) {
        c0.is_multiple_of(32) && len.is_multiple_of(32)
    } else {
        c0.is_multiple_of(lx.width) && len.is_multiple_of(lx.width) && lo.width == lx.width
    };
    (aligned && lo.cols() == len).then(|| lx.dev_col(c0) / 32)
}

/// The gated_matmul launch of `g` (with `pro`, the sandwich norm that makes x in the same launch).
pub(super) fn lower(
    c: &mut Ctx,
    p: &Program,
    g: Gate,
    pro: Option<&Prologue>,
    items: &mut Vec<Item>,
) -> Result<(), TtError> {
    let (sm, ss, sg) = (&p.steps[g.matmul], &p.steps[g.slice], &p.steps[g.gelu_mul]);
    let (x, src, out) = (sm.inputs[0], ss.inputs[0], sg.outputs[0]);
    let (lx, lo) = (c.lay(x)?, c.lay(out)?);
    let w = transposed(c, sm, sm.inputs[1], lx, lo)?;
    let at = offset(c, ss).ok_or_else(|| c.err(ss, "slice is not tile aligned"))?;
    let off = c.prep(format!("slice.offset{at}"), 1, 32, false, Source::Index { value: at })?;
    let mut comment = format!("{} + {} + {}: {}", sm.name, ss.name, sg.name, sg.op);
    let (k, mut args, mut reads, mut writes) = match pro {
        Some(pro) => {
            let k = kernels::sandwich_matmul(
                c.t,
                "sandwich norm, then the per-layer-input gate: gelu(x @ W) * slice",
                pro.spec(c)?,
                &SandwichBody::Gated {
                    nt: lo.col_tiles(),
                    epilogue: ("gelu".into(), gelu_expr("acc")),
                },
            )?;
            comment = format!("{} + {comment}", pro.comment(c));
            (k, pro.args(c)?, vec![pro.res, pro.h], vec![pro.s])
        }
        None => {
            let k = kernels::gated_matmul(
                c.t,
                "per-layer-input gate: gelu(x @ W) * slice",
                lx.row_tiles(),
                lx.col_tiles(),
                lo.col_tiles(),
                Some(("gelu", gelu_expr("acc"))),
            )?;
            (k, vec![Arg::Buf(x)], vec![x], vec![])
        }
    };
    let k = c.weight_kernel(k, &w)?;
    args.extend([Arg::W(w), Arg::Buf(src), Arg::W(off)]);
    if let Some(pro) = pro {
        args.push(Arg::Buf(pro.s));
    }
    args.push(Arg::Buf(out));
    reads.push(src);
    writes.push(out);
    items.push(Item::kernel(comment, k, args, reads, writes));
    Ok(())
}
