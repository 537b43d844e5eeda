//! Backend fusion at the end of a decoder layer: the post-norm + residual add (`norm_add`), the
//! layer scalar (`mul` by a one-value weight) and, when the next step normalizes that result
//! (the next layer's input norm), that rms_norm too, in one launch instead of three. The scalar
//! multiplies the residual before it is stored and normalized, as the unfused steps do.

use std::collections::BTreeMap;

use gemma4c_ir::Op;
use gemma4c_passes::plan::{BufferKind, Program};

use super::ctx::Ctx;
use super::lookup::Lookup;
use super::{Arg, Item, Source};
use crate::tt::kernels::{self, NormKind};
use crate::tt::TtError;

/// One fused group: the `norm_add` step, the scalar `mul` step, and the optional next `rms_norm`.
#[derive(Debug, Clone, Copy)]
pub(super) struct ScaledNorm {
    pub(super) norm_add: usize,
    pub(super) mul: usize,
    pub(super) next_norm: Option<usize>,
}

/// Finds the groups, keyed by the step that emits the fused launch (the `mul`).
pub(super) fn find(l: &Lookup) -> BTreeMap<usize, ScaledNorm> {
    let (c, p) = (l.c, l.p);
    let mut out = BTreeMap::new();
    for (i, s) in p.steps.iter().enumerate() {
        if !matches!(s.op, Op::Mul) || s.inputs.len() != 2 {
            continue;
        }
        let Some((_, wshape)) = c.weight(s.inputs[1]) else {
            continue;
        };
        if wshape.iter().product::<usize>() != 1 {
            continue;
        }
        let a = l.root(s.inputs[0]);
        let Some(pa) = l.producer(a) else { continue };
        let na = &p.steps[pa];
        let Op::NormAdd { eps } = na.op else { continue };
        let (Ok(la), Ok(lo)) = (c.lay(a), c.lay(s.outputs[0])) else {
            continue;
        };
        if !l.once(a) || la != lo || la.groups != 1 || la.width % 32 != 0 {
            continue;
        }
        // The next rms_norm of the scaled residual, with a weight and the same eps.
        let o = l.root(s.outputs[0]);
        let next_norm = l.consumers(o).into_iter().find(|&q| {
            q > i
                && matches!(p.steps[q].op, Op::RmsNorm { eps: e } if e == eps)
                && p.steps[q].inputs.len() == 2
                && l.root(p.steps[q].inputs[0]) == o
                && c.weight(p.steps[q].inputs[1]).is_some()
                && c.lay(p.steps[q].outputs[0]).is_ok_and(|l| l == la)
        });
        // A row that does not fit L1 whole is streamed by another template: not fused.
        let n = *p.buffers[a].shape.last().unwrap_or(&1);
        let kind = if next_norm.is_some() {
            NormKind::NormAddNorm
        } else {
            NormKind::NormAdd
        };
        let fits = kernels::norm(c.t, kind, "", la.row_tiles(), 1, la.col_tiles(), n, eps, true)
            .is_ok_and(|k| k.scaled(c.t).is_ok_and(|k| k.template() == "norm_add_norm"));
        if !fits || !matches!(p.buffers[a].kind, BufferKind::Activation { .. }) {
            continue;
        }
        out.insert(
            i,
            ScaledNorm {
                norm_add: pa,
                mul: i,
                next_norm,
            },
        );
    }
    out
}

/// The fused launch of group `g`.
pub(super) fn lower(c: &mut Ctx, p: &Program, g: ScaledNorm, items: &mut Vec<Item>) -> Result<(), TtError> {
    let (na, mul) = (&p.steps[g.norm_add], &p.steps[g.mul]);
    let Op::NormAdd { eps } = na.op else {
        return Err(TtError::new("scaled norm: not a norm_add step"));
    };
    let (res, x) = (na.inputs[0], na.inputs[1]);
    let l = c.lay(na.outputs[0])?;
    let n = *c.shape(na.outputs[0]).last().unwrap_or(&1);
    let (groups, st, wl) = c.norm_segments(na, l, n)?;
    let weight = |c: &mut Ctx, id: usize| -> Result<String, TtError> {
        let (key, _) = c
            .weight(id)
            .ok_or_else(|| TtError::new(format!("scaled norm: buffer {id} is not a checkpoint tensor")))?;
        let key = key.to_string();
        c.row(&key, wl)
    };
    let mut args = vec![Arg::Buf(res), Arg::Buf(x), Arg::W(weight(c, na.inputs[2])?)];
    let (skey, _) = c
        .weight(mul.inputs[1])
        .ok_or_else(|| TtError::new("scaled norm: the scalar is not a checkpoint tensor"))?;
    let skey = skey.to_string();
    let scale = c.prep(skey.clone(), 1, 32, false, Source::Scalar { key: skey })?;
    let mut comment = format!("{}: {} + {}: {}", na.name, na.op, mul.name, mul.op);
    let scaled_out = mul.outputs[0];
    let mut writes = vec![scaled_out];
    let kind = match g.next_norm {
        Some(q) => {
            let q = &p.steps[q];
            args.push(Arg::W(weight(c, q.inputs[1])?));
            args.push(Arg::W(scale));
            args.push(Arg::Buf(q.outputs[0]));
            writes.push(q.outputs[0]);
            comment.push_str(&format!(" + {}: {}", q.name, q.op));
            NormKind::NormAddNorm
        }
        None => {
            args.push(Arg::W(scale));
            NormKind::NormAdd
        }
    };
    args.push(Arg::Buf(scaled_out));
    let k = kernels::norm(
        c.t,
        kind,
        "post-norm + residual add, times the layer scalar (+ the next pre-norm)",
        l.row_tiles(),
        groups,
        st,
        n,
        eps,
        true,
    )?
    .scaled(c.t)?;
    let k = c.kernel(k);
    items.push(Item::kernel(comment, k, args, vec![res, x], writes));
    Ok(())
}
