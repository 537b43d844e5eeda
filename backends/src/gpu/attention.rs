//! Attention in the form GPUs want: online softmax (one pass over the positions, rescaling the
//! running output when the maximum grows), so one workgroup per (query token, head) walks the
//! positions in step with its lanes splitting the head dimension: each lane owns head elements
//! `lane, lane + threads, ...` of the output, the q·k dot product of a position is a lane
//! split plus a combine, and the K and V rows are read coalesced. The positions are
//! `lo..=pos + t`, bounded by the current position (not the cache capacity), and any head
//! dimension (512 included) works because the lanes stride it.
//!
//! Same visibility rule and parameters as `kernel::ops::attention` (the CPU's two-pass form);
//! the online softmax reorders the same arithmetic, so results agree to rounding.

use crate::kernel::build::{exp, max, min, KernelBuilder};
use crate::kernel::ops::attention::first_visible;
use crate::kernel::{name_f32, Access, Buf, Elem, Expr, Kernel, Var};

/// `Attention` of `s` query tokens, `heads` heads over `kv_heads` cached heads of `d`
/// elements, a ring buffer of `cap` positions and an optional sliding window.
/// Params: `q [S,H,D], k_cache [KV,C,D], v_cache, pos, out [S,H,D]`.
pub fn attention_online(
    s: usize,
    heads: usize,
    kv_heads: usize,
    d: usize,
    cap: usize,
    window: Option<usize>,
    scale: f32,
) -> Kernel {
    let win = window.map_or("causal".to_string(), |w| format!("w{w}"));
    let name = format!(
        "attention_online_s{s}_h{heads}_kv{kv_heads}_d{d}_c{cap}_{win}_scale{}",
        name_f32(scale)
    );
    let group = heads / kv_heads;
    let mut b = KernelBuilder::new(name, s * heads);
    let q = b.param("q", Elem::F32, Access::Read);
    let k = b.param("k_cache", Elem::F32, Access::Read);
    let v = b.param("v_cache", Elem::F32, Access::Read);
    let pos = b.param("pos", Elem::I32, Access::Read);
    let out = b.param("out", Elem::F32, Access::ReadWrite);
    let r = b.row();
    let kvh = b.let_i64("kvh", (&r % heads) / group);
    let qpos = b.let_i64("qpos", pos.at(0usize) + &r / heads);
    let last = pos.at(0usize) + (s as i64 - 1);
    let lo = Expr::Var(b.let_i64("lo", first_visible(last, qpos, cap, window)));
    let hi = Expr::Var(qpos) + 1i64;
    let qb = Expr::Var(b.let_i64("qb", &r * d));
    let (_, l) = online_softmax(&mut b, [q, k, v], kvh, &qb, (out, &qb), (&lo, &hi), cap, d, scale);
    let inv = b.let_f32("inv", Expr::F32(1.0) / l);
    b.for_range("i", 0usize, d, |b, i| b.store(out, &qb + &i, out.at(&qb + &i) * inv));
    b.finish()
}

/// How many workgroups share one head's positions in a decode step (flash-decode): enough
/// that a GPU's multiprocessors have work when there are few heads (8 heads × 32 splits = 256
/// workgroups from a 2048-position cache on), at least 2 so every plan exercises the merge.
pub fn decode_splits(cap: usize) -> usize {
    cap.div_ceil(64).clamp(2, 32).min(cap.max(1))
}

/// Decode attention split along the cache (flash-decode), first half: one workgroup per
/// (head, split). The positions `lo..=pos` (bounded by the current position, not the cache
/// capacity) are cut at run time into `splits` nearly equal chunks; each workgroup runs the
/// online softmax of [`attention_online`] over its chunk and writes its unnormalized output
/// with its running maximum `m` and sum `l` (an empty chunk writes `m = -inf, l = 0`).
/// Params: `q [H,D], k_cache [KV,C,D], v_cache, pos, part_out [H*splits,D], part_ml [H*splits,2]`.
pub fn attention_split(
    heads: usize,
    kv_heads: usize,
    d: usize,
    cap: usize,
    window: Option<usize>,
    scale: f32,
    splits: usize,
) -> Kernel {
    let win = window.map_or("causal".to_string(), |w| format!("w{w}"));
    let name = format!(
        "attention_split{splits}_h{heads}_kv{kv_heads}_d{d}_c{cap}_{win}_scale{}",
        name_f32(scale)
    );
    let group = heads / kv_heads;
    let mut b = KernelBuilder::new(name, heads * splits);
    let q = b.param("q", Elem::F32, Access::Read);
    let k = b.param("k_cache", Elem::F32, Access::Read);
    let v = b.param("v_cache", Elem::F32, Access::Read);
    let pos = b.param("pos", Elem::I32, Access::Read);
    let po = b.param("part_out", Elem::F32, Access::ReadWrite);
    let pml = b.param("part_ml", Elem::F32, Access::ReadWrite);
    let r = b.row();
    let h = b.let_i64("h", &r / splits);
    let kvh = b.let_i64("kvh", Expr::Var(h) / group);
    let qpos = b.let_i64("qpos", pos.at(0usize));
    let lo = Expr::Var(b.let_i64("lo", first_visible(Expr::Var(qpos), qpos, cap, window)));
    let hi = Expr::Var(b.let_i64("hi", Expr::Var(qpos) + 1i64));
    let len = Expr::Var(b.let_i64("chunk_len", (&hi - &lo + (splits as i64 - 1)) / splits));
    let first = Expr::Var(b.let_i64("chunk_lo", min(&hi, &lo + (&r % splits) * &len)));
    let last = Expr::Var(b.let_i64("chunk_hi", min(&hi, &first + &len)));
    let qb = Expr::Var(b.let_i64("qb", Expr::Var(h) * d));
    let ob = Expr::Var(b.let_i64("ob", &r * d));
    let (m, l) = online_softmax(&mut b, [q, k, v], kvh, &qb, (po, &ob), (&first, &last), cap, d, scale);
    b.store(pml, &r * 2usize, m);
    b.store(pml, &r * 2usize + 1i64, l);
    b.finish()
}

/// Flash-decode, second half: one workgroup per head merges its splits' partial outputs,
/// weighting each by `exp(m_c - M)` (`M` the largest `m_c`; an empty split weighs 0), and
/// divides by the merged sum. Params: `part_out, part_ml, out [H,D]`.
pub fn attention_merge(heads: usize, d: usize, splits: usize) -> Kernel {
    let mut b = KernelBuilder::new(format!("attention_merge{splits}_h{heads}_d{d}"), heads);
    let po = b.param("part_out", Elem::F32, Access::Read);
    let pml = b.param("part_ml", Elem::F32, Access::Read);
    let out = b.param("out", Elem::F32, Access::ReadWrite);
    let r = b.row();
    let pb = Expr::Var(b.let_i64("pb", &r * splits));
    let big = b.let_f32("big_m", f32::NEG_INFINITY);
    for c in 0..splits {
        b.max(big, pml.at((&pb + c as i64) * 2usize));
    }
    let total = b.let_f32("total", 0.0f32);
    for c in 0..splits {
        let ml = (&pb + c as i64) * 2usize;
        b.sum(total, exp(pml.at(&ml) - Expr::Var(big)) * pml.at(ml + 1i64));
    }
    let inv = b.let_f32("inv", Expr::F32(1.0) / total);
    let acc = b.local("acc", crate::kernel::Scalar::F32);
    b.for_range("i", 0usize, d, |b, i| {
        b.set(acc, 0.0f32);
        for c in 0..splits {
            let w = exp(pml.at((&pb + c as i64) * 2usize) - Expr::Var(big));
            b.set(acc, Expr::Var(acc) + w * po.at((&pb + c as i64) * d + &i));
        }
        b.store(out, &r * d + &i, Expr::Var(acc) * inv);
    });
    b.finish()
}

/// The online softmax of one query row (`q` at `qb`) over the positions `range` of cached head
/// `kvh`: zeroes the output row `out` (at its offset), accumulates into it the V rows weighted
/// by `exp(score - m)`, rescaling when the running maximum `m` grows, and returns `(m, l)`
/// (`l` the running sum of weights; the output is left unnormalized).
#[allow(clippy::too_many_arguments)]
fn online_softmax(
    b: &mut KernelBuilder,
    [q, k, v]: [Buf; 3],
    kvh: Var,
    qb: &Expr,
    (out, ob): (Buf, &Expr),
    (first, end): (&Expr, &Expr),
    cap: usize,
    d: usize,
    scale: f32,
) -> (Var, Var) {
    b.for_range("i", 0usize, d, |b, i| b.store(out, ob + &i, 0.0f32));
    let m = b.let_f32("m", f32::NEG_INFINITY);
    let l = b.let_f32("l", 0.0f32);
    let kb = b.local("kb", crate::kernel::Scalar::I64);
    let dot = b.local("dot", crate::kernel::Scalar::F32);
    b.for_range("p", first, end, |b, p| {
        b.set(kb, (Expr::Var(kvh) * cap + p % cap) * d);
        b.set(dot, 0.0f32);
        b.for_range("i", 0usize, d, |b, i| {
            b.sum(dot, q.at(qb + &i) * k.at(Expr::Var(kb) + &i))
        });
        let sc = b.let_f32("score", Expr::Var(dot) * scale);
        let m_new = b.let_f32("m_new", max(Expr::Var(m), sc));
        // exp(-inf - finite) = 0 on the first position: the zero output stays zero.
        let corr = b.let_f32("corr", exp(Expr::Var(m) - m_new));
        let e = b.let_f32("e", exp(Expr::Var(sc) - m_new));
        b.set(l, Expr::Var(l) * corr + e);
        b.set(m, m_new);
        b.for_range("i", 0usize, d, |b, i| {
            b.store(
                out,
                ob + &i,
                out.at(ob + &i) * corr + Expr::Var(e) * v.at(Expr::Var(kb) + &i),
            );
        });
    });
    (m, l)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::schedule::derive;
    use crate::gpu::{Body, GStmt};

    #[test]
    fn positions_run_in_step_and_lanes_split_the_head_dimension() {
        let g = derive(&attention_online(1, 8, 2, 512, 4096, None, 1.0));
        let Body::Workgroup(b) = &g.body else { panic!("{g:?}") };
        let seq = b
            .iter()
            .find_map(|s| match s {
                GStmt::Seq { var, body, .. } => Some((g.kernel.local(*var).name.clone(), body)),
                _ => None,
            })
            .expect("a positions loop");
        assert_eq!(seq.0, "p");
        let inner: Vec<&str> = seq
            .1
            .iter()
            .filter_map(|s| match s {
                GStmt::Lanes { var, .. } => Some(g.kernel.local(*var).name.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(inner, ["i", "i"]);
        assert!(seq.1.iter().any(|s| matches!(s, GStmt::Combine(v) if v.len() == 1)));
    }

    #[test]
    fn flash_decode_splits_the_cache_and_merges_per_head() {
        assert_eq!(decode_splits(16), 2);
        assert_eq!(decode_splits(256), 4);
        assert_eq!(decode_splits(4096), 32);
        assert_eq!(decode_splits(1), 1);
        let split = derive(&attention_split(8, 1, 512, 4096, Some(512), 1.0, 32));
        assert_eq!(split.workgroups(), 8 * 32);
        let Body::Workgroup(b) = &split.body else {
            panic!("{split:?}")
        };
        // Positions in step, head dimension across lanes, m and l stored by lane 0 at the end.
        assert!(b.iter().any(|s| matches!(s, GStmt::Seq { .. })));
        assert!(matches!(b.last(), Some(GStmt::Lane0(v)) if v.len() == 2), "{b:?}");
        let merge = derive(&attention_merge(8, 512, 32));
        assert_eq!(merge.workgroups(), 8);
        let Body::Workgroup(b) = &merge.body else {
            panic!("{merge:?}")
        };
        assert!(b.iter().any(|s| matches!(s, GStmt::Lanes { .. })));
    }
}
