//! Kernel IR expressions in LLVM IR: each `Expr` becomes the SSA value it
//! computes, with the scalar type it has (casts, math intrinsics, the inlined
//! `tanh`).

use super::tanh::TANH;
use super::{align, f32_lit, ty, FnPrinter};
use crate::kernel::{BinOp, CmpOp, Elem, Expr, Scalar, UnOp};

impl FnPrinter<'_, '_> {
    pub(super) fn call1(&mut self, f: &str, arg: &str) -> String {
        self.decls.insert(format!("declare float @{f}(float)"));
        let t = self.fresh();
        self.line(&format!("{t} = call float @{f}(float {arg})"));
        t
    }

    pub(super) fn expr(&mut self, e: &Expr) -> (String, Scalar) {
        match e {
            Expr::F32(x) => (f32_lit(*x), Scalar::F32),
            Expr::I64(x) => (x.to_string(), Scalar::I64),
            Expr::Bool(b) => (b.to_string(), Scalar::Bool),
            Expr::Var(v) => {
                let t = self.k.local(*v).ty;
                let name = self.local(*v);
                let r = self.fresh();
                self.line(&format!("{r} = load {}, ptr {name}, align {}", ty(t), align(t)));
                (r, t)
            }
            Expr::Load { param, index } => {
                let (idx, _) = self.expr(index);
                let ptr = self.gep(*param, &idx);
                let r = self.fresh();
                match self.k.params[*param].elem {
                    Elem::F32 => {
                        self.line(&format!("{r} = load float, ptr {ptr}, align 4"));
                        (r, Scalar::F32)
                    }
                    Elem::BF16 => {
                        // bf16 is the top half of an f32.
                        self.line(&format!("{r} = load i16, ptr {ptr}, align 2"));
                        let (z, s, f) = (self.fresh(), self.fresh(), self.fresh());
                        self.line(&format!("{z} = zext i16 {r} to i32"));
                        self.line(&format!("{s} = shl i32 {z}, 16"));
                        self.line(&format!("{f} = bitcast i32 {s} to float"));
                        (f, Scalar::F32)
                    }
                    Elem::F16 => {
                        self.line(&format!("{r} = load half, ptr {ptr}, align 2"));
                        let f = self.fresh();
                        self.line(&format!("{f} = fpext half {r} to float"));
                        (f, Scalar::F32)
                    }
                    Elem::I32 => {
                        self.line(&format!("{r} = load i32, ptr {ptr}, align 4"));
                        let w = self.fresh();
                        self.line(&format!("{w} = sext i32 {r} to i64"));
                        (w, Scalar::I64)
                    }
                    Elem::Block(_) => {
                        self.line(&format!("{r} = load i8, ptr {ptr}, align 1"));
                        let w = self.fresh();
                        self.line(&format!("{w} = zext i8 {r} to i64"));
                        (w, Scalar::I64)
                    }
                }
            }
            Expr::Table { table, index } => {
                let (idx, _) = self.expr(index);
                let t = &self.k.tables[*table];
                let (len, global) = (t.values.len(), format!("@{}.{}", self.k.name, t.name));
                let ptr = self.fresh();
                self.line(&format!(
                    "{ptr} = getelementptr inbounds [{len} x float], ptr {global}, i64 0, i64 {idx}"
                ));
                let r = self.fresh();
                self.line(&format!("{r} = load float, ptr {ptr}, align 4"));
                (r, Scalar::F32)
            }
            Expr::Tile { tile, index } => {
                let (idx, _) = self.expr(index);
                let ptr = self.tile_gep(*tile, &idx);
                let r = self.fresh();
                self.line(&format!("{r} = load float, ptr {ptr}, align 4"));
                (r, Scalar::F32)
            }
            Expr::Exact(a) => {
                let outer = std::mem::replace(&mut self.exact, true);
                let r = self.expr(a);
                self.exact = outer;
                r
            }
            Expr::Bin(op, a, b) => {
                let (a, t) = self.expr(a);
                let (b, _) = self.expr(b);
                let r = self.fresh();
                let c = if self.exact { "" } else { "contract " };
                let line = match (t, op) {
                    (Scalar::F32, BinOp::Add) => format!("{r} = fadd {c}float {a}, {b}"),
                    (Scalar::F32, BinOp::Sub) => format!("{r} = fsub {c}float {a}, {b}"),
                    (Scalar::F32, BinOp::Mul) => format!("{r} = fmul {c}float {a}, {b}"),
                    (Scalar::F32, BinOp::Div) => format!("{r} = fdiv {c}float {a}, {b}"),
                    (Scalar::F32, BinOp::Min | BinOp::Max) => {
                        let f = if *op == BinOp::Min {
                            "llvm.minnum.f32"
                        } else {
                            "llvm.maxnum.f32"
                        };
                        self.decls.insert(format!("declare float @{f}(float, float)"));
                        format!("{r} = call float @{f}(float {a}, float {b})")
                    }
                    (Scalar::I64, BinOp::Add) => format!("{r} = add nsw i64 {a}, {b}"),
                    (Scalar::I64, BinOp::Sub) => format!("{r} = sub nsw i64 {a}, {b}"),
                    (Scalar::I64, BinOp::Mul) => format!("{r} = mul nsw i64 {a}, {b}"),
                    (Scalar::I64, BinOp::Div) => format!("{r} = sdiv i64 {a}, {b}"),
                    (Scalar::I64, BinOp::Rem) => format!("{r} = srem i64 {a}, {b}"),
                    (Scalar::I64, BinOp::Shr) => format!("{r} = lshr i64 {a}, {b}"),
                    (Scalar::I64, BinOp::BitAnd) => format!("{r} = and i64 {a}, {b}"),
                    (Scalar::I64, BinOp::Min | BinOp::Max) => {
                        let f = if *op == BinOp::Min {
                            "llvm.smin.i64"
                        } else {
                            "llvm.smax.i64"
                        };
                        self.decls.insert(format!("declare i64 @{f}(i64, i64)"));
                        format!("{r} = call i64 @{f}(i64 {a}, i64 {b})")
                    }
                    (Scalar::Bool, BinOp::And) => format!("{r} = and i1 {a}, {b}"),
                    (Scalar::Bool, BinOp::Or) => format!("{r} = or i1 {a}, {b}"),
                    (t, op) => unreachable!("verify rejects {op:?} on {t:?}"),
                };
                self.line(&line);
                (r, t)
            }
            Expr::Un(op, a) => {
                let (a, t) = self.expr(a);
                match op {
                    UnOp::Neg if t == Scalar::F32 => {
                        let r = self.fresh();
                        self.line(&format!("{r} = fneg float {a}"));
                        (r, t)
                    }
                    UnOp::Neg => {
                        let r = self.fresh();
                        self.line(&format!("{r} = sub nsw i64 0, {a}"));
                        (r, t)
                    }
                    UnOp::Not => {
                        let r = self.fresh();
                        self.line(&format!("{r} = xor i1 {a}, true"));
                        (r, t)
                    }
                    UnOp::ToF32 => {
                        // Through i32 (kernels convert small integers): 64-bit
                        // int → float has no vector instruction before AVX-512DQ,
                        // so an i64 conversion keeps dequantizing loops scalar.
                        let (n, r) = (self.fresh(), self.fresh());
                        self.line(&format!("{n} = trunc i64 {a} to i32"));
                        self.line(&format!("{r} = sitofp i32 {n} to float"));
                        (r, Scalar::F32)
                    }
                    UnOp::Sext8 => {
                        let (b, r) = (self.fresh(), self.fresh());
                        self.line(&format!("{b} = trunc i64 {a} to i8"));
                        self.line(&format!("{r} = sext i8 {b} to i64"));
                        (r, Scalar::I64)
                    }
                    UnOp::F16Bits => {
                        let (b, h, r) = (self.fresh(), self.fresh(), self.fresh());
                        self.line(&format!("{b} = trunc i64 {a} to i16"));
                        self.line(&format!("{h} = bitcast i16 {b} to half"));
                        self.line(&format!("{r} = fpext half {h} to float"));
                        (r, Scalar::F32)
                    }
                    UnOp::Exp => (self.call1("llvm.exp.f32", &a), t),
                    UnOp::Cos => (self.call1("llvm.cos.f32", &a), t),
                    UnOp::Sin => (self.call1("llvm.sin.f32", &a), t),
                    UnOp::Sqrt => (self.call1("llvm.sqrt.f32", &a), t),
                    UnOp::Tanh => {
                        let r = self.fresh();
                        self.line(&format!("{r} = call float @{TANH}(float {a})"));
                        (r, t)
                    }
                }
            }
            Expr::Cmp(op, a, b) => {
                let (a, t) = self.expr(a);
                let (b, _) = self.expr(b);
                let r = self.fresh();
                let line = if t == Scalar::F32 {
                    let c = match op {
                        CmpOp::Lt => "olt",
                        CmpOp::Le => "ole",
                        CmpOp::Gt => "ogt",
                        CmpOp::Ge => "oge",
                        CmpOp::Eq => "oeq",
                        CmpOp::Ne => "une",
                    };
                    format!("{r} = fcmp {c} float {a}, {b}")
                } else {
                    let c = match op {
                        CmpOp::Lt => "slt",
                        CmpOp::Le => "sle",
                        CmpOp::Gt => "sgt",
                        CmpOp::Ge => "sge",
                        CmpOp::Eq => "eq",
                        CmpOp::Ne => "ne",
                    };
                    format!("{r} = icmp {c} i64 {a}, {b}")
                };
                self.line(&line);
                (r, Scalar::Bool)
            }
            Expr::Select(c, a, b) => {
                let (c, _) = self.expr(c);
                let (a, t) = self.expr(a);
                let (b, _) = self.expr(b);
                let r = self.fresh();
                self.line(&format!("{r} = select i1 {c}, {} {a}, {} {b}", ty(t), ty(t)));
                (r, t)
            }
        }
    }
}
