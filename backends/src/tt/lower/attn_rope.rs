//! Backend fusion of the query path into attention: the q norm + RoPE step (`norm_rope`) whose
//! only reader is the attention step becomes part of the attention launch (each query head is
//! normalized and rotated in registers before it is packed), so the rotated q is never written.

use std::collections::BTreeMap;

use gemma4c_ir::Op;

use super::ctx::Ctx;
use super::lookup::Lookup;
use super::steps::{attention_geometry, AttnGeometry};
use super::{Arg, Item};
use crate::tt::kernels;
use crate::tt::layout::DevLayout;
use crate::tt::TtError;

/// The steps of one fused query path.
#[derive(Debug, Clone, Copy)]
pub(super) struct AttnRope {
    pub(super) norm_rope: usize,
    pub(super) attention: usize,
}

/// Groups keyed by their attention step.
pub(super) fn find(l: &Lookup) -> BTreeMap<usize, AttnRope> {
    let (c, p) = (l.c, l.p);
    let mut out = BTreeMap::new();
    for (i, s) in p.steps.iter().enumerate() {
        if !matches!(s.op, Op::Attention { .. }) {
            continue;
        }
        let q = l.root(s.inputs[0]);
        let Some(pr) = l.producer(q) else { continue };
        let r = &p.steps[pr];
        let same = |a: usize, b: usize| matches!((c.lay(a), c.lay(b)), (Ok(x), Ok(y)) if x == y);
        let fusable = matches!(r.op, Op::NormRope { .. })
            && r.inputs.len() >= 2
            && c.weight(r.inputs[1]).is_some()
            && l.once(q)
            && same(r.inputs[0], q)
            && c.shape(r.inputs[0]) == c.shape(q);
        if fusable {
            out.insert(
                i,
                AttnRope {
                    norm_rope: pr,
                    attention: i,
                },
            );
        }
    }
    out
}

/// The fused launch of `g`.
pub(super) fn lower(c: &mut Ctx, g: AttnRope, items: &mut Vec<Item>) -> Result<(), TtError> {
    let p = c.p;
    let (r, s) = (&p.steps[g.norm_rope], &p.steps[g.attention]);
    let (Op::NormRope { eps, ref rope }, Op::Attention { window, scale }) = (&r.op, &s.op) else {
        return Err(c.err(s, "not a norm_rope feeding attention"));
    };
    let (x, out) = (r.inputs[0], s.outputs[0]);
    let AttnGeometry {
        ks,
        vs,
        heads,
        kv,
        capacity,
        d,
        dt,
        mask: m,
    } = attention_geometry(c, s, r, x, *window)?;
    let (key, _) = c
        .weight(r.inputs[1])
        .ok_or_else(|| c.err(r, "the norm weight is not a checkpoint tensor"))?;
    let key = key.to_string();
    let w = c.row(&key, DevLayout::flat(1, d))?;
    let (cos, sin) = c.rope(rope)?;
    let rot = c.rotate_half(d)?;
    let k = if c.prefill {
        kernels::attention_chunk(
            c.t,
            "q rms_norm + RoPE, then prefill attention over the cache (32 queries per head)",
            heads,
            kv,
            capacity,
            dt,
            *scale,
            *window,
            Some((d, *eps)),
        )?
    } else {
        kernels::attention_norm_rope(
            c.t,
            "q rms_norm + RoPE, then decode attention (GQA, online softmax)",
            heads,
            kv,
            capacity,
            dt,
            *scale,
            *window,
            d,
            *eps,
        )?
    };
    let k = c.kernel(k);
    items.push(Item::kernel(
        format!("{}: {} + {}: {}", r.name, r.op, s.name, s.op),
        k,
        vec![
            Arg::Buf(x),
            Arg::W(w),
            Arg::W(cos),
            Arg::W(sin),
            Arg::W(rot),
            Arg::Pos,
            Arg::State(ks),
            Arg::State(vs),
            Arg::Mask(m),
            Arg::W("kv.select".into()),
            Arg::Buf(out),
        ],
        vec![x],
        vec![out],
    ));
    Ok(())
}
