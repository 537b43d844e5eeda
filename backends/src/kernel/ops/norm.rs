//! RMSNorm and its fused forms, and the per-head row transforms (q/k norm,
//! RoPE, KV-cache writes). One grid row per normalized row.

use gemma4c_ir::{math, Op, RopeSpec};

use super::inv_rms;
use crate::kernel::build::{cos, sin, to_f32, KernelBuilder};
use crate::kernel::launches::StepCx;
use crate::kernel::ops;
use crate::kernel::{name_f32, name_f64, Access, Elem, Expr, Kernel, Scalar};

fn w_name(w: Option<Elem>) -> &'static str {
    w.map_or("nw", Elem::name)
}

/// `out = x * rms(x)^-1 [* w] [* post]` over rows of `d` (`post`: the MoE
/// router's constant scale). Params: `x, [w], out`.
pub fn rms_norm(rows: usize, d: usize, x_elem: Elem, w: Option<Elem>, eps: f32, post: Option<f32>) -> Kernel {
    let post_name = post.map_or(String::new(), |p| format!("_x{}", name_f32(p)));
    let name = format!(
        "rms_norm_{}_{}_r{rows}_d{d}_eps{}{post_name}",
        x_elem.name(),
        w_name(w),
        name_f32(eps)
    );
    let mut b = KernelBuilder::new(name, rows);
    let x = b.param("x", x_elem, Access::Read);
    let wt = w.map(|e| b.param("w", e, Access::Read));
    let out = b.param("out", Elem::F32, Access::Write);
    let base = b.let_i64("base", b.row() * d);
    let ss = b.let_f32("ss", 0.0f32);
    b.for_range("j", 0usize, d, |b, j| {
        let v = b.let_f32("v", x.at(Expr::Var(base) + &j));
        b.sum(ss, Expr::Var(v) * v);
    });
    let inv = inv_rms(&mut b, "inv", Expr::Var(ss), d, eps);
    b.for_range("j", 0usize, d, |b, j| {
        let v = x.at(Expr::Var(base) + &j) * &inv;
        let v = match wt {
            Some(w) => v * w.at(&j),
            None => v,
        };
        let v = match post {
            Some(p) => v * p,
            None => v,
        };
        b.store(out, Expr::Var(base) + &j, v);
    });
    b.finish()
}

/// Index into a broadcast operand of `bn` elements, for element `j` of row `base`
/// (rows of `d` elements out of `n`): same shape, a suffix, or one element.
fn bcast(bn: usize, n: usize, d: usize, base: &Expr, j: &Expr) -> Expr {
    if bn == n {
        base + j
    } else if bn == 1 {
        Expr::I64(0)
    } else if bn == d {
        j.clone()
    } else {
        (base + j) % bn
    }
}

/// `AddRmsNorm`: `(a, b, w) → (rms_norm(a + b) * w, a + b)`. Params: `a, b, w, normed, sum`.
pub fn add_rms_norm(rows: usize, d: usize, bn: usize, elems: [Elem; 3], eps: f32) -> Kernel {
    let n = rows * d;
    let name = format!(
        "add_rms_norm_{}_{}_{}_r{rows}_d{d}_b{bn}_eps{}",
        elems[0].name(),
        elems[1].name(),
        elems[2].name(),
        name_f32(eps)
    );
    let mut b = KernelBuilder::new(name, rows);
    let a = b.param("a", elems[0], Access::Read);
    let bb = b.param("b", elems[1], Access::Read);
    let w = b.param("w", elems[2], Access::Read);
    let normed = b.param("normed", Elem::F32, Access::Write);
    let sum = b.param("sum", Elem::F32, Access::ReadWrite);
    let base = Expr::Var(b.let_i64("base", b.row() * d));
    let ss = b.let_f32("ss", 0.0f32);
    b.for_range("j", 0usize, d, |b, j| {
        let s = b.let_f32("s", a.at(&base + &j) + bb.at(bcast(bn, n, d, &base, &j)));
        b.store(sum, &base + &j, s);
        b.sum(ss, Expr::Var(s) * s);
    });
    let inv = inv_rms(&mut b, "inv", Expr::Var(ss), d, eps);
    b.for_range("j", 0usize, d, |b, j| {
        b.store(normed, &base + &j, sum.at(&base + &j) * &inv * w.at(&j));
    });
    b.finish()
}

/// `NormAddNorm`: `(residual, x, w_post, w_pre) → (rms_norm(s) * w_pre, s)` with
/// `s = residual + rms_norm(x) * w_post`. Params: `residual, x, w_post, w_pre, normed, sum`.
pub fn norm_add_norm(rows: usize, d: usize, elems: [Elem; 4], eps: f32) -> Kernel {
    let names: Vec<&str> = elems.iter().map(|e| e.name()).collect();
    let name = format!("norm_add_norm_{}_r{rows}_d{d}_eps{}", names.join("_"), name_f32(eps));
    let mut b = KernelBuilder::new(name, rows);
    let res = b.param("residual", elems[0], Access::Read);
    let x = b.param("x", elems[1], Access::Read);
    let w_post = b.param("w_post", elems[2], Access::Read);
    let w_pre = b.param("w_pre", elems[3], Access::Read);
    let normed = b.param("normed", Elem::F32, Access::Write);
    let sum = b.param("sum", Elem::F32, Access::ReadWrite);
    let base = Expr::Var(b.let_i64("base", b.row() * d));
    let ss_x = b.let_f32("ss_x", 0.0f32);
    b.for_range("j", 0usize, d, |b, j| {
        let v = b.let_f32("v", x.at(&base + &j));
        b.sum(ss_x, Expr::Var(v) * v);
    });
    let inv_x = inv_rms(&mut b, "inv_x", Expr::Var(ss_x), d, eps);
    let ss = b.let_f32("ss", 0.0f32);
    b.for_range("j", 0usize, d, |b, j| {
        let s = b.let_f32("s", res.at(&base + &j) + x.at(&base + &j) * &inv_x * w_post.at(&j));
        b.store(sum, &base + &j, s);
        b.sum(ss, Expr::Var(s) * s);
    });
    let inv = inv_rms(&mut b, "inv", Expr::Var(ss), d, eps);
    b.for_range("j", 0usize, d, |b, j| {
        b.store(normed, &base + &j, sum.at(&base + &j) * &inv * w_pre.at(&j));
    });
    b.finish()
}

/// `NormAdd`: `residual + rms_norm(x) * w`. Params: `residual, x, w, out`.
pub fn norm_add(rows: usize, d: usize, elems: [Elem; 3], eps: f32) -> Kernel {
    let names: Vec<&str> = elems.iter().map(|e| e.name()).collect();
    let name = format!("norm_add_{}_r{rows}_d{d}_eps{}", names.join("_"), name_f32(eps));
    let mut b = KernelBuilder::new(name, rows);
    let res = b.param("residual", elems[0], Access::Read);
    let x = b.param("x", elems[1], Access::Read);
    let w = b.param("w", elems[2], Access::Read);
    let out = b.param("out", Elem::F32, Access::Write);
    let base = Expr::Var(b.let_i64("base", b.row() * d));
    let ss = b.let_f32("ss", 0.0f32);
    b.for_range("j", 0usize, d, |b, j| {
        let v = b.let_f32("v", x.at(&base + &j));
        b.sum(ss, Expr::Var(v) * v);
    });
    let inv = inv_rms(&mut b, "inv", Expr::Var(ss), d, eps);
    b.for_range("j", 0usize, d, |b, j| {
        b.store(out, &base + &j, res.at(&base + &j) + x.at(&base + &j) * &inv * w.at(&j));
    });
    b.finish()
}

/// Optional RMSNorm of a head row.
#[derive(Debug, Clone, Copy)]
pub struct HeadNorm {
    pub eps: f32,
    pub weight: Option<Elem>,
}

/// Where a transformed head row goes.
#[derive(Debug, Clone, Copy)]
pub enum HeadDest {
    /// A fresh `[S, heads, D]` output.
    Out,
    /// Slot `(pos + t) mod capacity` of a `[heads, capacity, D]` cache, in place.
    Cache { capacity: usize },
}

/// Per-head rows of `x [S, heads, D]`: optional RMSNorm (times a `[D]` weight),
/// optional RoPE at position `pos + t`, written to an output or a KV cache:
/// `Rope`, `NormRope`, `KvWrite`, `NormKvWrite`, `RopeKvWrite`.
/// Params in step order: cache ops `cache, x, [w], pos`; others `x, [w], pos, out`
/// (`pos` only when it is used).
pub fn head_rows(
    s: usize,
    heads: usize,
    d: usize,
    norm: Option<HeadNorm>,
    rope: Option<&RopeSpec>,
    dest: HeadDest,
) -> Kernel {
    let mut name = String::new();
    if let Some(n) = norm {
        name += &format!("norm_{}_eps{}_", w_name(n.weight), name_f32(n.eps));
    }
    if let Some(r) = rope {
        name += &format!(
            "rope_t{}_p{}_f{}_",
            name_f64(r.theta),
            r.rotated_pairs,
            name_f64(r.factor)
        );
    }
    name += &match dest {
        HeadDest::Out => format!("heads_s{s}_h{heads}_d{d}"),
        HeadDest::Cache { capacity } => format!("kv_write_s{s}_h{heads}_d{d}_c{capacity}"),
    };
    let mut b = KernelBuilder::new(name, s * heads);
    let cache = match dest {
        HeadDest::Cache { .. } => Some(b.param("cache", Elem::F32, Access::ReadWrite)),
        HeadDest::Out => None,
    };
    let x = b.param("x", Elem::F32, Access::Read);
    let w = norm.and_then(|n| n.weight).map(|e| b.param("w", e, Access::Read));
    let needs_pos = rope.is_some() || cache.is_some();
    let pos = needs_pos.then(|| b.param("pos", Elem::I32, Access::Read));
    let (dst, dst_base) = match (dest, cache) {
        (HeadDest::Cache { capacity }, Some(c)) => {
            let t = b.row() / heads;
            let h = b.row() % heads;
            let p = pos.expect("cache writes read pos").at(0usize);
            let slot = (p + t) % capacity;
            (c, (h * capacity + slot) * d)
        }
        _ => {
            let out = b.param("out", Elem::F32, Access::Write);
            (out, b.row() * d)
        }
    };
    let src_base = Expr::Var(b.let_i64("src", b.row() * d));
    let dst_base = Expr::Var(b.let_i64("dst", dst_base));
    // The normalized (and weighted) element `i` of the source row.
    let scale = match norm {
        Some(n) => {
            let ss = b.let_f32("ss", 0.0f32);
            b.for_range("j", 0usize, d, |b, j| {
                let v = b.let_f32("v", x.at(&src_base + &j));
                b.sum(ss, Expr::Var(v) * v);
            });
            Some((super::inv_rms(&mut b, "inv", Expr::Var(ss), d, n.eps), w))
        }
        None => None,
    };
    let elem = |i: Expr| -> Expr {
        let v = x.at(&src_base + &i);
        match &scale {
            Some((inv, Some(w))) => v * inv * w.at(i),
            Some((inv, None)) => v * inv,
            None => v,
        }
    };
    match rope {
        Some(spec) => {
            let half = d / 2;
            let inv_freq = b.table("inv_freq", spec.inv_freq());
            let pos = pos.expect("rope reads pos");
            let t = b.row() / heads;
            let p = b.let_f32("p", to_f32(pos.at(0usize) + t));
            let (c, sn) = (b.local("cos", Scalar::F32), b.local("sin", Scalar::F32));
            b.for_range("i", 0usize, half, |b, i| {
                let angle = b.let_f32("angle", math::rope_angle(Expr::Var(p), inv_freq.at(&i)));
                b.set(c, cos(Expr::Var(angle)));
                b.set(sn, sin(Expr::Var(angle)));
                let a = b.let_f32("a", elem(i.clone()));
                let bv = b.let_f32("b", elem(&i + half));
                let (lo, hi) = math::rotate_pair(Expr::Var(a), Expr::Var(bv), Expr::Var(c), Expr::Var(sn));
                b.store(dst, &dst_base + &i, lo);
                b.store(dst, &dst_base + &i + half, hi);
            });
        }
        None => {
            b.for_range("i", 0usize, d, |b, i| b.store(dst, &dst_base + &i, elem(i.clone())));
        }
    }
    b.finish()
}

/// Launches of the RMSNorm, per-head (RoPE, q/k norm) and KV-cache steps of a plan.
pub(crate) fn launches(cx: &mut StepCx, op: &Op) -> Result<(), String> {
    match op {
        Op::RmsNorm { eps } => {
            let x = cx.input(0)?;
            let d = cx.last_dim(x);
            let w = cx.step.inputs.get(1).map(|&w| cx.elem(w));
            let k = ops::rms_norm(cx.numel(x) / d, d, cx.elem(x), w, *eps, None);
            cx.launch(k, cx.io_args(), None)
        }
        Op::AddRmsNorm { eps } => {
            let (a, b, w) = (cx.input(0)?, cx.input(1)?, cx.input(2)?);
            let d = cx.last_dim(a);
            let k = ops::add_rms_norm(
                cx.numel(a) / d,
                d,
                cx.numel(b),
                [cx.elem(a), cx.elem(b), cx.elem(w)],
                *eps,
            );
            cx.launch(k, cx.io_args(), None)
        }
        Op::NormAddNorm { eps } => {
            let ins: Vec<usize> = (0..4).map(|i| cx.input(i)).collect::<Result<_, _>>()?;
            let d = cx.last_dim(ins[0]);
            if cx.numel(ins[1]) != cx.numel(ins[0]) {
                return Err("norm_add_norm operands must have one shape".into());
            }
            let elems = [cx.elem(ins[0]), cx.elem(ins[1]), cx.elem(ins[2]), cx.elem(ins[3])];
            let k = ops::norm_add_norm(cx.numel(ins[0]) / d, d, elems, *eps);
            cx.launch(k, cx.io_args(), None)
        }
        Op::NormAdd { eps } => {
            let (res, x, w) = (cx.input(0)?, cx.input(1)?, cx.input(2)?);
            let d = cx.last_dim(x);
            if cx.numel(res) != cx.numel(x) {
                return Err("norm_add operands must have one shape".into());
            }
            let k = ops::norm_add(cx.numel(x) / d, d, [cx.elem(res), cx.elem(x), cx.elem(w)], *eps);
            cx.launch(k, cx.io_args(), None)
        }
        Op::Rope { rope } => head_step(cx, None, Some(rope), false),
        Op::NormRope { eps, rope } => {
            let w = cx.elem(cx.input(1)?);
            head_step(
                cx,
                Some(HeadNorm {
                    eps: *eps,
                    weight: Some(w),
                }),
                Some(rope),
                false,
            )
        }
        Op::KvWrite => head_step(cx, None, None, true),
        Op::NormKvWrite { eps } => head_step(
            cx,
            Some(HeadNorm {
                eps: *eps,
                weight: None,
            }),
            None,
            true,
        ),
        Op::RopeKvWrite { eps, rope } => {
            let w = cx.elem(cx.input(2)?);
            head_step(
                cx,
                Some(HeadNorm {
                    eps: *eps,
                    weight: Some(w),
                }),
                Some(rope),
                true,
            )
        }
        other => Err(format!("{other} is not a norm op")),
    }
}

/// Per-head row ops: `x [S, heads, D]` (operand 0, or 1 after the cache).
fn head_step(
    cx: &mut StepCx,
    norm: Option<HeadNorm>,
    rope: Option<&gemma4c_ir::RopeSpec>,
    cache: bool,
) -> Result<(), String> {
    let x = cx.input(if cache { 1 } else { 0 })?;
    let xs = cx.shape(x).to_vec();
    if xs.len() != 3 {
        return Err(format!("expected [S, heads, D], got {xs:?}"));
    }
    let dest = if cache {
        let c = cx.shape(cx.input(0)?).to_vec();
        if c.len() != 3 || c[0] != xs[1] || c[2] != xs[2] {
            return Err(format!("cache {c:?} does not hold rows of {xs:?}"));
        }
        HeadDest::Cache { capacity: c[1] }
    } else {
        HeadDest::Out
    };
    let k = ops::head_rows(xs[0], xs[1], xs[2], norm, rope, dest);
    let args = if cache { cx.in_args() } else { cx.io_args() };
    cx.launch(k, args, None)
}
