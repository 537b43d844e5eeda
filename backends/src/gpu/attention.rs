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

use crate::kernel::build::{exp, max, KernelBuilder};
use crate::kernel::{name_f32, Access, Elem, Expr, Kernel};

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
    let mut lo = max(0i64, last - (cap as i64 - 1));
    if let Some(w) = window {
        lo = max(lo, Expr::Var(qpos) - (w as i64 - 1));
    }
    let lo = Expr::Var(b.let_i64("lo", lo));
    let hi = Expr::Var(qpos) + 1i64;
    let qb = Expr::Var(b.let_i64("qb", &r * d));
    b.for_range("i", 0usize, d, |b, i| b.store(out, &qb + &i, 0.0f32));
    let m = b.let_f32("m", f32::NEG_INFINITY);
    let l = b.let_f32("l", 0.0f32);
    let kb = b.local("kb", crate::kernel::Scalar::I64);
    let dot = b.local("dot", crate::kernel::Scalar::F32);
    b.for_range("p", &lo, &hi, |b, p| {
        b.set(kb, (Expr::Var(kvh) * cap + p % cap) * d);
        b.set(dot, 0.0f32);
        b.for_range("i", 0usize, d, |b, i| {
            b.sum(dot, q.at(&qb + &i) * k.at(Expr::Var(kb) + &i))
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
                &qb + &i,
                out.at(&qb + &i) * corr + Expr::Var(e) * v.at(Expr::Var(kb) + &i),
            );
        });
    });
    let inv = b.let_f32("inv", Expr::F32(1.0) / l);
    b.for_range("i", 0usize, d, |b, i| b.store(out, &qb + &i, out.at(&qb + &i) * inv));
    b.finish()
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
}
