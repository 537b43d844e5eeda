//! Backend fusion of a layer's K/V cache writes into its attention launch: the `kv_write_pair`
//! (K norm + RoPE, V norm, the rows written at the slot) of the caches the attention reads runs
//! inside the fused q norm + RoPE attention (`attn_rope.rs`). The block of each KV head uses the
//! fresh K/V row directly as one extra online-softmax step and writes it into the cache; this
//! step's mask for such layers hides the slot being written (it is never read back in the same
//! launch), so the layer needs no separate write launch.

use std::collections::BTreeMap;

use gemma4c_ir::Op;

use super::attn_rope::AttnRope;
use super::lookup::Lookup;

/// The K write `k` and V write `v` (a `kv_write_pair`) folded into an attention launch.
#[derive(Debug, Clone, Copy)]
pub(super) struct KvFold {
    pub(super) k: usize,
    pub(super) v: usize,
}

/// Folds keyed by their attention step. `pairs`: the K/V write pairs (keyed by the V write);
/// `attn`: the q norm + RoPE attentions.
pub(super) fn find(
    l: &Lookup,
    pairs: &BTreeMap<usize, usize>,
    attn: &BTreeMap<usize, AttnRope>,
) -> BTreeMap<usize, KvFold> {
    let (c, p) = (l.c, l.p);
    let mut out = BTreeMap::new();
    for (&v, &k) in pairs {
        let (ks, vs) = (c.state(p.steps[k].inputs[0]), c.state(p.steps[v].inputs[0]));
        let (Some(ks), Some(vs)) = (ks, vs) else { continue };
        let reads = |i: usize, st: usize| p.steps[i].inputs.iter().any(|&b| c.state(b) == Some(st));
        // The first attention after the V write that reads these caches, and it must be the
        // next reader of either cache (nothing in between may see the rows unwritten).
        let Some(a) = (v + 1..p.steps.len()).find(|&i| reads(i, ks) || reads(i, vs)) else {
            continue;
        };
        let Some(g) = attn.get(&a) else { continue };
        let s = &p.steps[a];
        let own = s.inputs.len() >= 3 && c.state(s.inputs[1]) == Some(ks) && c.state(s.inputs[2]) == Some(vs);
        // The K row is rotated with the q's cos/sin rows: the same RoPE.
        let same_rope = match (&p.steps[k].op, &p.steps[g.norm_rope].op) {
            (Op::RopeKvWrite { rope: rk, .. }, Op::NormRope { rope: rq, .. }) => rk == rq,
            _ => false,
        };
        if own && same_rope {
            out.insert(a, KvFold { k, v });
        }
    }
    out
}
