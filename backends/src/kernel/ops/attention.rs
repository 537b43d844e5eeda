//! Attention over a ring-buffer KV cache (GQA, optional sliding window) and
//! MoE routing.

use gemma4c_ir::Op;

use crate::kernel::build::{and, eq, exp, gt, max, not, KernelBuilder};
use crate::kernel::launches::{LaunchArg, StepCx};
use crate::kernel::ops;
use crate::kernel::{name_f32, Access, Elem, Expr, Kernel, Scalar, Var};

/// The first position query `qpos` sees: none whose ring slot this call overwrote (`last` is the
/// newest position the call writes, so positions `<= last - C` are gone) and, with a sliding
/// window, none more than `w - 1` before `qpos`. The one visibility rule of every attention kernel.
pub fn first_visible(last: Expr, qpos: Var, cap: usize, window: Option<usize>) -> Expr {
    let mut lo = max(0i64, last - (cap as i64 - 1));
    if let Some(w) = window {
        lo = max(lo, Expr::Var(qpos) - (w as i64 - 1));
    }
    lo
}

/// `Attention`: one grid row per (query token `t`, head `h`). Query `t` sits at
/// position `pos + t` and sees positions `lo..=pos + t`, where `lo` excludes
/// positions outside the window and positions whose slot `p mod C` was
/// overwritten by this call (`p <= pos + S - 1 - C`) — exactly the slots the
/// reference finds visible. Softmax in two passes (max, then exp-sum and the
/// weighted sum of V). Params: `q [S,H,D], k_cache [KV,C,D], v_cache, pos, out [S,H,D]`.
pub fn attention(
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
        "attention_s{s}_h{heads}_kv{kv_heads}_d{d}_c{cap}_{win}_scale{}",
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
    let dot = b.local("dot", Scalar::F32);
    let kb = b.local("kb", Scalar::I64);
    // q · k of position p into `dot`; `kb` is the row of p's slot.
    let score = |b: &mut KernelBuilder, p: &Expr| {
        b.set(kb, (Expr::Var(kvh) * cap + p % cap) * d);
        b.set(dot, 0.0f32);
        b.for_range("i", 0usize, d, |b, i| {
            b.sum(dot, q.at(&qb + &i) * k.at(Expr::Var(kb) + &i))
        });
    };
    let m = b.let_f32("m", f32::NEG_INFINITY);
    b.for_range("p", &lo, &hi, |b, p| {
        score(b, &p);
        b.max(m, Expr::Var(dot) * scale);
    });
    b.for_range("i", 0usize, d, |b, i| b.store(out, &qb + &i, 0.0f32));
    let l = b.let_f32("l", 0.0f32);
    b.for_range("p", &lo, &hi, |b, p| {
        score(b, &p);
        let e = b.let_f32("e", exp(Expr::Var(dot) * scale - m));
        b.sum(l, e);
        b.for_range("i", 0usize, d, |b, i| {
            b.store(
                out,
                &qb + &i,
                out.at(&qb + &i) + Expr::Var(e) * v.at(Expr::Var(kb) + &i),
            );
        });
    });
    let inv = b.let_f32("inv", Expr::F32(1.0) / l);
    b.for_range("i", 0usize, d, |b, i| b.store(out, &qb + &i, out.at(&qb + &i) * inv));
    b.finish()
}

/// `MoeRoute`: softmax over `E` scores, top-`K` (ties to the lower index),
/// renormalized over the chosen, times the per-expert scale. One grid row per
/// token. Params: `scores [S,E], per_expert_scale [E], weights [S,K], experts i32 [S,K]`.
pub fn moe_route(s: usize, e: usize, k: usize, scale: Elem) -> Kernel {
    let mut b = KernelBuilder::new(format!("moe_route_{}_s{s}_e{e}_k{k}", scale.name()), s);
    let scores = b.param("scores", Elem::F32, Access::Read);
    let per_expert = b.param("per_expert_scale", scale, Access::Read);
    let weights = b.param("weights", Elem::F32, Access::ReadWrite);
    let experts = b.param("experts", Elem::I32, Access::ReadWrite);
    let r = b.row();
    let sb = Expr::Var(b.let_i64("sb", &r * e));
    let ob = Expr::Var(b.let_i64("ob", &r * k));
    let m = b.let_f32("m", f32::NEG_INFINITY);
    b.for_range("j", 0usize, e, |b, j| b.max(m, scores.at(&sb + &j)));
    let total = b.let_f32("total", 0.0f32);
    b.for_range("j", 0usize, e, |b, j| b.sum(total, exp(scores.at(&sb + &j) - m)));
    let (best, best_p) = (b.local("best", Scalar::I64), b.local("best_p", Scalar::F32));
    let taken = b.local("taken", Scalar::Bool);
    b.for_range("slot", 0usize, k, |b, slot| {
        b.set(best, -1i64);
        b.set(best_p, -1.0f32);
        b.for_range("j", 0usize, e, |b, j| {
            let p = b.let_f32("p", exp(scores.at(&sb + &j) - m) / total);
            b.set(taken, false);
            b.for_range("q", 0usize, &slot, |b, qi| {
                b.if_(eq(experts.at(&ob + &qi), j.clone()), |b| {
                    b.set(taken, true);
                });
            });
            b.if_(and(not(taken), gt(p, best_p)), |b| {
                b.set(best, j.clone());
                b.set(best_p, p);
            });
        });
        b.store(experts, &ob + &slot, best);
        b.store(weights, &ob + &slot, best_p);
    });
    let sum = b.let_f32("sum", 0.0f32);
    b.for_range("slot", 0usize, k, |b, slot| {
        b.set(sum, Expr::Var(sum) + weights.at(&ob + &slot))
    });
    b.for_range("slot", 0usize, k, |b, slot| {
        let i = &ob + &slot;
        b.store(
            weights,
            i.clone(),
            weights.at(i.clone()) / sum * per_expert.at(experts.at(i)),
        );
    });
    b.finish()
}

/// Launches of the attention and MoE routing steps of a plan.
pub(crate) fn launches(cx: &mut StepCx, op: &Op) -> Result<(), String> {
    match op {
        Op::MoeRouter { eps, scalar, top_k } => {
            let ins: Vec<usize> = (0..4).map(|i| cx.input(i)).collect::<Result<_, _>>()?;
            let (x, scale, proj, per_expert) = (ins[0], ins[1], ins[2], ins[3]);
            let h = cx.last_dim(x);
            let s = cx.numel(x) / h;
            let e = cx.shape(proj)[0];
            let normed = cx.scratch(s * h * 4);
            let scores = cx.scratch(s * e * 4);
            let norm = ops::rms_norm(s, h, cx.elem(x), Some(cx.elem(scale)), *eps, Some(*scalar));
            cx.launch(norm, vec![LaunchArg::Buffer(x), LaunchArg::Buffer(scale), normed], None)?;
            let mm = ops::matmul_for(cx.tiles, s, e, h, cx.elem(proj), None);
            cx.launch(mm, vec![normed, LaunchArg::Buffer(proj), scores], None)?;
            let route = ops::moe_route(s, e, *top_k, cx.elem(per_expert));
            let outs = &cx.step.outputs;
            let args = vec![
                scores,
                LaunchArg::Buffer(per_expert),
                LaunchArg::Buffer(outs[0]),
                LaunchArg::Buffer(outs[1]),
            ];
            cx.launch(route, args, None)
        }
        Op::Attention { window, scale } => {
            let (q, kc) = (cx.input(0)?, cx.input(1)?);
            let (qs, ks) = (cx.shape(q).to_vec(), cx.shape(kc).to_vec());
            if qs.len() != 3 || ks.len() != 3 || qs[1] % ks[0] != 0 {
                return Err(format!("attention of q {qs:?} over a cache {ks:?}"));
            }
            let k = ops::attention(qs[0], qs[1], ks[0], qs[2], ks[1], *window, *scale);
            cx.launch(k, cx.io_args(), None)
        }
        Op::MoeRoute { top_k } => {
            let (scores, scale) = (cx.input(0)?, cx.input(1)?);
            let (s, e) = (cx.shape(scores)[0], cx.shape(scores)[1]);
            let k = ops::moe_route(s, e, *top_k, cx.elem(scale));
            cx.launch(k, cx.io_args(), None)
        }
        other => Err(format!("{other} is not a attention op")),
    }
}
