//! Backend fusion of a layer's two cache writes: the K path (`rope_kv_write`: rms_norm * w, RoPE)
//! and the V path (`norm_kv_write`: weightless rms_norm) into caches of the same geometry, one
//! launch (`kv_write_pair`) instead of two.

use std::collections::BTreeMap;

use gemma4c_ir::Op;
use gemma4c_passes::plan::Program;

use super::ctx::Ctx;
use super::lookup::Lookup;
use super::steps::head_tiles;
use super::{Arg, Item};
use crate::tt::kernels;
use crate::tt::layout::DevLayout;
use crate::tt::TtError;

/// Pairs keyed by the V write (where the fused launch goes), valued by the K write.
pub(super) fn find(l: &Lookup, absorbed: &[bool]) -> BTreeMap<usize, usize> {
    let (c, p) = (l.c, l.p);
    let mut out = BTreeMap::new();
    let geometry = |i: usize| c.state(p.steps[i].inputs[0]).map(|si| c.plan.state[si].shape.clone());
    for (j, v) in p.steps.iter().enumerate() {
        let Op::NormKvWrite { eps: ev } = v.op else { continue };
        let Some(i) = (0..j).rev().find(|&i| matches!(p.steps[i].op, Op::RopeKvWrite { .. })) else {
            continue;
        };
        let k = &p.steps[i];
        let Op::RopeKvWrite { eps: ek, .. } = k.op else {
            continue;
        };
        let (kc, vc) = (k.inputs[0], v.inputs[0]);
        // Nothing in between reads either cache (the K row must be written before any reader).
        let untouched = p.steps[i + 1..j]
            .iter()
            .all(|s| !s.inputs.contains(&kc) && !s.inputs.contains(&vc));
        let same = geometry(i).is_some() && geometry(i) == geometry(j);
        let lays = matches!((c.lay(k.inputs[1]), c.lay(v.inputs[1])), (Ok(a), Ok(b)) if a == b);
        if ek == ev && same && lays && untouched && !absorbed[i] && !absorbed[j] && !out.values().any(|&o| o == i) {
            out.insert(j, i);
        }
    }
    out
}

/// The fused launch of K write `i` and V write `j`.
pub(super) fn lower(c: &mut Ctx, p: &Program, i: usize, j: usize, items: &mut Vec<Item>) -> Result<(), TtError> {
    let (k, v) = (&p.steps[i], &p.steps[j]);
    let Op::RopeKvWrite { eps, ref rope } = k.op else {
        return Err(c.err(k, "not a rope_kv_write"));
    };
    let (ks, vs) = (
        c.state(k.inputs[0])
            .ok_or_else(|| c.err(k, "the cache is not a state buffer"))?,
        c.state(v.inputs[0])
            .ok_or_else(|| c.err(v, "the cache is not a state buffer"))?,
    );
    let (kv, capacity, d) = c.ring(ks);
    let (kn, vn) = (k.inputs[1], v.inputs[1]);
    let dt = head_tiles(c, k, kn, d)?;
    let ci = c.cap(capacity);
    let (key, _) = c
        .weight(k.inputs[2])
        .ok_or_else(|| c.err(k, "k_norm weight is not a checkpoint tensor"))?;
    let key = key.to_string();
    let w = c.row(&key, DevLayout::flat(1, d))?;
    let (cos, sin) = c.rope(rope)?;
    let rot = c.rotate_half(d)?;
    let args = vec![
        Arg::State(ks),
        Arg::Buf(kn),
        Arg::W(w),
        Arg::W(cos),
        Arg::W(sin),
        Arg::W(rot),
        Arg::State(vs),
        Arg::Buf(vn),
        Arg::W("kv.select".into()),
        Arg::W("kv.keep".into()),
        Arg::Pos,
    ];
    let kern = kernels::kv_write_pair(
        c.t,
        "K and V paths into their caches: rope(rms_norm(k) * w) and rms_norm(v), row writes",
        kv,
        capacity,
        dt,
        d,
        eps,
        1 + ci,
    )?;
    let kern = if c.prefill { kern.over_chunk(c.t)? } else { kern };
    let kern = c.kernel(kern);
    let comment = format!("{}: {} + {}: {}", k.name, k.op, v.name, v.op);
    items.push(Item::kernel(comment, kern, args, vec![kn, vn], vec![]));
    Ok(())
}
