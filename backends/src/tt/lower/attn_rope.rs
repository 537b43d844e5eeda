//! Backend fusion of the query path into attention: the q norm + RoPE step (`norm_rope`) whose
//! only reader is the attention step becomes part of the attention launch (each query head is
//! normalized and rotated in registers before it is packed), so the rotated q is never written.

use std::collections::BTreeMap;

use gemma4c_ir::Op;

use super::attn_kv::KvFold;
use super::ctx::Ctx;
use super::lookup::Lookup;
use super::steps::{attention_geometry, head_tiles, AttnGeometry};
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

/// The fused launch of `g`, with the layer's K/V cache writes `writes` folded in.
pub(super) fn lower(c: &mut Ctx, g: AttnRope, writes: Option<KvFold>, items: &mut Vec<Item>) -> Result<(), TtError> {
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
    } = attention_geometry(c, s, r, x, *window, writes.is_some())?;
    let (key, _) = c
        .weight(r.inputs[1])
        .ok_or_else(|| c.err(r, "the norm weight is not a checkpoint tensor"))?;
    let key = key.to_string();
    let w = c.row(&key, DevLayout::flat(1, d))?;
    let (cos, sin) = c.rope(rope)?;
    let rot = c.rotate_half(d)?;
    // The folded K/V write: its new rows, the k_norm weight and the slot's position tile. Prefill
    // chunks write their K/V tiles in launches of their own (`attn_kv::find` runs on decode only).
    if c.prefill && writes.is_some() {
        return Err(c.err(s, "a prefill chunk's attention cannot write the K/V cache itself"));
    }
    let mut fold = None;
    let mut comment = format!("{}: {} + {}: {}", r.name, r.op, s.name, s.op);
    if let Some(f) = writes {
        let (ks_, vs_) = (&p.steps[f.k], &p.steps[f.v]);
        let Op::RopeKvWrite { eps: ek, .. } = ks_.op else {
            return Err(c.err(ks_, "not a rope_kv_write"));
        };
        let (kn, vn) = (ks_.inputs[1], vs_.inputs[1]);
        if head_tiles(c, ks_, kn, d)? != dt || head_tiles(c, vs_, vn, d)? != dt {
            return Err(c.err(ks_, "the new K/V rows do not have the query's head tiles"));
        }
        let (key, _) = c
            .weight(ks_.inputs[2])
            .ok_or_else(|| c.err(ks_, "k_norm weight is not a checkpoint tensor"))?;
        let key = key.to_string();
        let kw = c.row(&key, DevLayout::flat(1, d))?;
        let pos_tile = 1 + c.cap(capacity);
        fold = Some((
            kn,
            kw,
            vn,
            kernels::KvFold {
                n: d,
                eps: ek,
                pos_tile,
            },
        ));
        comment = format!("{}: {} + {}: {} + {comment}", ks_.name, ks_.op, vs_.name, vs_.op);
    }
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
            if fold.is_some() {
                "q rms_norm + RoPE, decode attention (GQA, online softmax) over the cache and this token's K/V row, written into the caches"
            } else {
                "q rms_norm + RoPE, then decode attention (GQA, online softmax)"
            },
            heads,
            kv,
            capacity,
            dt,
            *scale,
            *window,
            d,
            *eps,
            fold.as_ref().map(|f| f.3),
        )?
    };
    let k = c.kernel(k);
    let mut args = vec![
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
    ];
    let mut reads = vec![x];
    if let Some((kn, kw, vn, _)) = fold {
        args.extend([Arg::Buf(kn), Arg::W(kw), Arg::Buf(vn), Arg::W("kv.keep".into())]);
        reads.extend([kn, vn]);
    }
    args.push(Arg::Buf(out));
    items.push(Item::kernel(comment, k, args, reads, vec![out]));
    Ok(())
}
