//! Elementwise ops, slices and embedding gathers. Grid rows are rows of the
//! last dimension (or of the broadcast operand), so the inner loop is
//! contiguous and vectorizes.

use gemma4c_ir::{math, Op};

use super::gelu;
use crate::kernel::build::{eq, select, KernelBuilder};
use crate::kernel::launches::StepCx;
use crate::kernel::ops;
use crate::kernel::{name_f32, Access, Elem, Expr, Kernel};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum UnaryKind {
    Scale(f32),
    GeluTanh,
    Softcap(f32),
}

/// `out = f(x)` over `n` elements in rows of `d`. Params: `x, out`.
pub fn unary(kind: UnaryKind, n: usize, d: usize, x_elem: Elem) -> Kernel {
    let tag = match kind {
        UnaryKind::Scale(f) => format!("scale{}", name_f32(f)),
        UnaryKind::GeluTanh => "gelu_tanh".into(),
        UnaryKind::Softcap(c) => format!("softcap{}", name_f32(c)),
    };
    let mut b = KernelBuilder::new(format!("{tag}_{}_n{n}_d{d}", x_elem.name()), n / d);
    let x = b.param("x", x_elem, Access::Read);
    let out = b.param("out", Elem::F32, Access::Write);
    let base = Expr::Var(b.let_i64("base", b.row() * d));
    b.for_range("j", 0usize, d, |b, j| {
        let v = b.let_f32("v", x.at(&base + &j));
        let y = match kind {
            UnaryKind::Scale(f) => Expr::Var(v) * f,
            UnaryKind::GeluTanh => gelu(&Expr::Var(v)),
            UnaryKind::Softcap(c) => math::softcap(Expr::Var(v), c),
        };
        b.store(out, &base + &j, y);
    });
    b.finish()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryKind {
    Add,
    Mul,
    /// `gelu_tanh(a) * b`.
    GeluMul,
}

/// `out = a ⊕ b` over `n` elements of `a` (rows of `d`); `b` has `bn` elements:
/// `n` (same shape), a suffix of `a`'s shape, or 1. Params: `a, b, out`.
pub fn binary(kind: BinaryKind, n: usize, d: usize, bn: usize, elems: [Elem; 2]) -> Kernel {
    let tag = match kind {
        BinaryKind::Add => "add",
        BinaryKind::Mul => "mul",
        BinaryKind::GeluMul => "gelu_mul",
    };
    // Inner loop length: a row of `a`, or the broadcast operand.
    let inner = if bn == n || bn == 1 { d } else { bn };
    let name = format!("{tag}_{}_{}_n{n}_i{inner}_b{bn}", elems[0].name(), elems[1].name());
    let mut b = KernelBuilder::new(name, n / inner);
    let a = b.param("a", elems[0], Access::Read);
    let bb = b.param("b", elems[1], Access::Read);
    let out = b.param("out", Elem::F32, Access::Write);
    let base = Expr::Var(b.let_i64("base", b.row() * inner));
    b.for_range("j", 0usize, inner, |b, j| {
        let bi = if bn == n {
            &base + &j
        } else if bn == 1 {
            Expr::I64(0)
        } else {
            j.clone()
        };
        let av = b.let_f32("av", a.at(&base + &j));
        let bv = bb.at(bi);
        let y = match kind {
            BinaryKind::Add => Expr::Var(av) + bv,
            BinaryKind::Mul => Expr::Var(av) * bv,
            BinaryKind::GeluMul => gelu(&Expr::Var(av)) * bv,
        };
        b.store(out, &base + &j, y);
    });
    b.finish()
}

/// `Slice`: elements `[start, end)` of axis `dim` in a `[outer, dim, inner]`
/// view. Bits are copied (f32 or i32). Params: `x, out`.
pub fn slice(outer: usize, dim: usize, inner: usize, start: usize, end: usize, elem: Elem) -> Kernel {
    let name = format!("slice_{}_o{outer}_d{dim}_i{inner}_{start}_{end}", elem.name());
    let len = (end - start) * inner;
    let mut b = KernelBuilder::new(name, outer);
    let x = b.param("x", elem, Access::Read);
    let out = b.param("out", elem, Access::Write);
    let src = Expr::Var(b.let_i64("src", (b.row() * dim + start) * inner));
    let dst = Expr::Var(b.let_i64("dst", b.row() * len));
    b.for_range("j", 0usize, len, |b, j| b.store(out, &dst + &j, x.at(&src + &j)));
    b.finish()
}

/// `Embedding`: `out[t] = table[ids[t]]` for `S` ids into a `[V, H]` table
/// (ids were range-checked by the runtime). Params: `table, ids, out`.
pub fn embedding(s: usize, h: usize, table_elem: Elem) -> Kernel {
    if let Elem::Block(q) = table_elem {
        return super::embedding_quant(s, h, q);
    }
    let mut b = KernelBuilder::new(format!("embedding_{}_s{s}_h{h}", table_elem.name()), s);
    let table = b.param("table", table_elem, Access::Read);
    let ids = b.param("ids", Elem::I32, Access::Read);
    let out = b.param("out", Elem::F32, Access::Write);
    let src = Expr::Var(b.let_i64("src", ids.at(b.row()) * h));
    let dst = Expr::Var(b.let_i64("dst", b.row() * h));
    b.for_range("j", 0usize, h, |b, j| b.store(out, &dst + &j, table.at(&src + &j)));
    b.finish()
}

/// `ReplaceIds`: `out[t] = with` where `ids[t]` is one of `set`, else `ids[t]`
/// (multimodal placeholders embedded as pad). Params: `ids, out`.
pub fn replace_ids(s: usize, set: &[i32], with: i32) -> Kernel {
    let listed: Vec<String> = set.iter().map(i32::to_string).collect();
    let mut b = KernelBuilder::new(format!("replace_ids_s{s}_{}_with{with}", listed.join("_")), s);
    let ids = b.param("ids", Elem::I32, Access::Read);
    let out = b.param("out", Elem::I32, Access::Write);
    let id = Expr::Var(b.let_i64("id", ids.at(b.row())));
    let mut value = id.clone();
    for &placeholder in set {
        value = select(
            eq(id.clone(), Expr::I64(placeholder as i64)),
            Expr::I64(with as i64),
            value,
        );
    }
    b.store(out, b.row(), value);
    b.finish()
}

/// Launches of the elementwise, slice and embedding steps of a plan.
pub(crate) fn launches(cx: &mut StepCx, op: &Op) -> Result<(), String> {
    match op {
        Op::ReplaceIds { ids, with } => {
            let x = cx.input(0)?;
            let k = ops::replace_ids(cx.numel(x), ids, *with);
            cx.launch(k, cx.io_args(), None)
        }
        Op::Scale { factor } => unary_step(cx, UnaryKind::Scale(*factor)),
        Op::GeluTanh => unary_step(cx, UnaryKind::GeluTanh),
        Op::Softcap { cap } => unary_step(cx, UnaryKind::Softcap(*cap)),
        Op::Add => binary_step(cx, BinaryKind::Add),
        Op::Mul => binary_step(cx, BinaryKind::Mul),
        Op::GeluMul => binary_step(cx, BinaryKind::GeluMul),
        Op::Slice { axis, start, end } => {
            let x = cx.input(0)?;
            let shape = cx.shape(x).to_vec();
            let outer: usize = shape[..*axis].iter().product();
            let inner: usize = shape[axis + 1..].iter().product();
            let k = ops::slice(outer, shape[*axis], inner, *start, *end, cx.elem(x));
            cx.launch(k, cx.io_args(), None)
        }
        Op::Embedding => {
            let (table, ids) = (cx.input(0)?, cx.input(1)?);
            let (s, h) = (cx.numel(ids), cx.shape(table)[1]);
            let k = ops::embedding(s, h, cx.elem(table));
            let row_bytes = cx
                .dtype(table)
                .bytes_for(&[h])
                .ok_or("embedding rows are not whole blocks")?;
            cx.launch(k, cx.io_args(), Some(s * row_bytes))
        }
        other => Err(format!("{other} is not a elementwise op")),
    }
}

fn unary_step(cx: &mut StepCx, kind: UnaryKind) -> Result<(), String> {
    let x = cx.input(0)?;
    let k = ops::unary(kind, cx.numel(x), cx.last_dim(x), cx.elem(x));
    cx.launch(k, cx.io_args(), None)
}

fn binary_step(cx: &mut StepCx, kind: BinaryKind) -> Result<(), String> {
    let (a, b) = (cx.input(0)?, cx.input(1)?);
    let (n, bn) = (cx.numel(a), cx.numel(b));
    let sa = cx.shape(a);
    let sb = cx.shape(b);
    let suffix = sb.len() <= sa.len() && sa[sa.len() - sb.len()..] == *sb;
    if !(bn == n || bn == 1 || suffix) {
        return Err(format!("cannot broadcast {sb:?} to {sa:?}"));
    }
    let k = ops::binary(kind, n, cx.last_dim(a), bn, [cx.elem(a), cx.elem(b)]);
    cx.launch(k, cx.io_args(), None)
}
