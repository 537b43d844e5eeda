//! Kernel IR → LLVM IR text.
//!
//! The output is plain, unoptimized LLVM IR (LLVM 19 syntax): every local is an
//! `alloca` (the optimizer's mem2reg turns them into SSA values), loops are
//! head/body/latch blocks, index arithmetic is `nsw`. What makes the matvec
//! vectorize is here: `noalias` buffer pointers, `reassoc contract` on
//! reduction updates (and `contract` on other float arithmetic, so multiply-adds
//! fuse), and a `tanh` made of arithmetic (no libm call) so GELU and soft-cap
//! loops vectorize too. The host's `target-cpu`/`target-features` are added by
//! the runtime when it JIT-compiles the module; the text stays host-neutral.

use std::collections::BTreeSet;
use std::fmt::Write;

mod dot_bf16;

use crate::kernel::{Access, BinOp, CmpOp, Elem, Expr, Kernel, ReduceOp, Scalar, Stmt, UnOp, Var};

/// Name of the inlined `tanh` helper.
const TANH: &str = "gemma4c.tanh";

/// Prints `kernels` (in the order given) as one module.
pub fn print_module<'a>(header: &str, kernels: impl IntoIterator<Item = &'a Kernel>) -> String {
    let mut decls = BTreeSet::new();
    let mut globals = String::new();
    let mut bodies = String::new();
    let mut uses_tanh = false;
    let mut count = 0;
    for k in kernels {
        count += 1;
        // A kernel, then its variants for CPU extensions (the JIT keeps one).
        let variants = k.variants.iter().map(|(f, v)| (Some(*f), v));
        for (feature, k) in std::iter::once((None, k)).chain(variants) {
            uses_tanh |= k.unary_ops().contains(&UnOp::Tanh);
            for t in &k.tables {
                let values: Vec<String> = t.values.iter().map(|&v| format!("float {}", f32_lit(v))).collect();
                let _ = writeln!(
                    globals,
                    "@{}.{} = private unnamed_addr constant [{} x float] [{}], align 4",
                    k.name,
                    t.name,
                    t.values.len(),
                    values.join(", ")
                );
            }
            bodies.push('\n');
            if let Some(f) = feature {
                let _ = writeln!(
                    bodies,
                    "; for hosts with {}: the JIT runs it there instead",
                    f.llvm_feature()
                );
            }
            bodies.push_str(&FnPrinter::new(k, &mut decls).print());
        }
    }
    if uses_tanh {
        decls.insert("declare float @llvm.minnum.f32(float, float)".into());
        decls.insert("declare float @llvm.maxnum.f32(float, float)".into());
        decls.insert("declare float @llvm.fabs.f32(float)".into());
        bodies.push('\n');
        bodies.push_str(&tanh_helper());
    }
    let mut out = String::new();
    for line in header.lines() {
        let _ = writeln!(out, "; {line}");
    }
    let _ = writeln!(out, "; {count} kernels\n");
    out.push_str("source_filename = \"kernels\"\n");
    if !globals.is_empty() {
        out.push('\n');
        out.push_str(&globals);
    }
    out.push_str(&bodies);
    out.push('\n');
    for d in &decls {
        let _ = writeln!(out, "{d}");
    }
    out.push_str("\nattributes #0 = { nounwind }\nattributes #1 = { alwaysinline nounwind }\n");
    out
}

/// An f32 constant in LLVM's exact form (the double with the same value).
fn f32_lit(x: f32) -> String {
    format!("0x{:016X}", (x as f64).to_bits())
}

/// Alignment of a local of this type.
fn align(s: Scalar) -> u32 {
    match s {
        Scalar::I64 => 8,
        Scalar::F32 => 4,
        Scalar::Bool => 1,
    }
}

fn ty(s: Scalar) -> &'static str {
    match s {
        Scalar::F32 => "float",
        Scalar::I64 => "i64",
        Scalar::Bool => "i1",
    }
}

struct FnPrinter<'k, 'd> {
    k: &'k Kernel,
    decls: &'d mut BTreeSet<String>,
    out: String,
    tmp: usize,
    label: usize,
    /// Inside `Expr::Exact`: float arithmetic without `contract`.
    exact: bool,
}

impl<'k, 'd> FnPrinter<'k, 'd> {
    fn new(k: &'k Kernel, decls: &'d mut BTreeSet<String>) -> Self {
        FnPrinter {
            k,
            decls,
            out: String::new(),
            tmp: 0,
            label: 0,
            exact: false,
        }
    }

    fn param_name(&self, i: usize) -> String {
        format!("%a{i}.{}", self.k.params[i].name)
    }

    fn local(&self, v: Var) -> String {
        format!("%v{}.{}", v.0, self.k.local(v).name)
    }

    fn tile(&self, i: usize) -> String {
        format!("%tile{i}.{}", self.k.tiles[i].name)
    }

    /// Address of element `idx` of tile `i`.
    fn tile_gep(&mut self, i: usize, idx: &str) -> String {
        let (len, base) = (self.k.tiles[i].len, self.tile(i));
        let ptr = self.fresh();
        self.line(&format!(
            "{ptr} = getelementptr inbounds [{len} x float], ptr {base}, i64 0, i64 {idx}"
        ));
        ptr
    }

    fn fresh(&mut self) -> String {
        self.tmp += 1;
        format!("%t{}", self.tmp)
    }

    fn fresh_label(&mut self, what: &str) -> String {
        self.label += 1;
        format!("{what}{}", self.label)
    }

    fn line(&mut self, s: &str) {
        self.out.push_str("  ");
        self.out.push_str(s);
        self.out.push('\n');
    }

    fn block(&mut self, label: &str) {
        let _ = writeln!(self.out, "{label}:");
    }

    fn print(mut self) -> String {
        let k = self.k;
        let params: Vec<String> = (0..k.params.len())
            .map(|i| {
                let attrs = match k.params[i].access {
                    Access::Read => "noalias nocapture readonly",
                    Access::Write => "noalias nocapture writeonly",
                    Access::ReadWrite => "noalias nocapture",
                };
                format!("ptr {attrs} {}", self.param_name(i))
            })
            .collect();
        let mut head = String::new();
        let _ = writeln!(head, "; {} rows: {}", k.rows, k.params_summary());
        let _ = writeln!(
            head,
            "define void @{}({}, i64 %begin, i64 %end) #0 {{",
            k.name,
            params.join(", ")
        );
        head.push_str("entry:\n");
        self.out = head;
        for (i, l) in k.locals.iter().enumerate() {
            let name = self.local(Var(i as u32));
            self.line(&format!("{name} = alloca {}, align {}", ty(l.ty), align(l.ty)));
        }
        for i in 0..k.tiles.len() {
            let name = self.tile(i);
            self.line(&format!("{name} = alloca [{} x float], align 64", k.tiles[i].len));
        }
        let row = self.local(crate::kernel::ROW);
        self.line(&format!("store i64 %begin, ptr {row}, align 8"));
        self.line("br label %grid.head");
        self.block("grid.head");
        let r = self.fresh();
        self.line(&format!("{r} = load i64, ptr {row}, align 8"));
        let c = self.fresh();
        self.line(&format!("{c} = icmp slt i64 {r}, %end"));
        self.line(&format!("br i1 {c}, label %grid.body, label %grid.exit"));
        self.block("grid.body");
        self.stmts(&k.body);
        let r = self.fresh();
        self.line(&format!("{r} = load i64, ptr {row}, align 8"));
        let n = self.fresh();
        self.line(&format!("{n} = add nsw i64 {r}, 1"));
        self.line(&format!("store i64 {n}, ptr {row}, align 8"));
        self.line("br label %grid.head");
        self.block("grid.exit");
        self.line("ret void");
        self.out.push_str("}\n");
        self.out
    }

    fn stmts(&mut self, body: &[Stmt]) {
        for s in body {
            self.stmt(s);
        }
    }

    fn stmt(&mut self, s: &Stmt) {
        match s {
            Stmt::Set(v, e) => {
                let (val, t) = self.expr(e);
                let name = self.local(*v);
                self.line(&format!("store {} {val}, ptr {name}, align {}", ty(t), align(t)));
            }
            Stmt::Reduce(v, op, e) => {
                let (val, t) = self.expr(e);
                let name = self.local(*v);
                let old = self.fresh();
                self.line(&format!("{old} = load {}, ptr {name}, align {}", ty(t), align(t)));
                let new = self.fresh();
                match (op, t) {
                    (ReduceOp::Add, Scalar::F32) => {
                        self.line(&format!("{new} = fadd reassoc contract nsz float {old}, {val}"))
                    }
                    (ReduceOp::Add, _) => self.line(&format!("{new} = add nsw i64 {old}, {val}")),
                    (ReduceOp::Max, _) => {
                        self.decls.insert("declare float @llvm.maxnum.f32(float, float)".into());
                        self.line(&format!(
                            "{new} = call reassoc nsz float @llvm.maxnum.f32(float {old}, float {val})"
                        ));
                    }
                }
                self.line(&format!("store {} {new}, ptr {name}, align {}", ty(t), align(t)));
            }
            Stmt::Store { param, index, value } => {
                let (idx, _) = self.expr(index);
                let (val, _) = self.expr(value);
                let elem = self.k.params[*param].elem;
                let ptr = self.gep(*param, &idx);
                match elem {
                    Elem::F32 => self.line(&format!("store float {val}, ptr {ptr}, align 4")),
                    Elem::I32 => {
                        let t = self.fresh();
                        self.line(&format!("{t} = trunc i64 {val} to i32"));
                        self.line(&format!("store i32 {t}, ptr {ptr}, align 4"));
                    }
                    Elem::BF16 | Elem::F16 | Elem::Block(_) => unreachable!("verify rejects 16-bit and block stores"),
                }
            }
            Stmt::TileStore { tile, index, value } => {
                let (idx, _) = self.expr(index);
                let (val, _) = self.expr(value);
                let ptr = self.tile_gep(*tile, &idx);
                self.line(&format!("store float {val}, ptr {ptr}, align 4"));
            }
            Stmt::For { var, start, end, body } => {
                let (s, _) = self.expr(start);
                let (e, _) = self.expr(end);
                let name = self.local(*var);
                let l = self.fresh_label("loop");
                self.line(&format!("store i64 {s}, ptr {name}, align 8"));
                self.line(&format!("br label %{l}.head"));
                self.block(&format!("{l}.head"));
                let i = self.fresh();
                self.line(&format!("{i} = load i64, ptr {name}, align 8"));
                let c = self.fresh();
                self.line(&format!("{c} = icmp slt i64 {i}, {e}"));
                self.line(&format!("br i1 {c}, label %{l}.body, label %{l}.exit"));
                self.block(&format!("{l}.body"));
                self.stmts(body);
                let i = self.fresh();
                self.line(&format!("{i} = load i64, ptr {name}, align 8"));
                let n = self.fresh();
                self.line(&format!("{n} = add nsw i64 {i}, 1"));
                self.line(&format!("store i64 {n}, ptr {name}, align 8"));
                self.line(&format!("br label %{l}.head"));
                self.block(&format!("{l}.exit"));
            }
            Stmt::DotBf16 {
                x,
                xs,
                w,
                ws,
                len,
                accs,
            } => self.dot_bf16(*x, xs, *w, ws, *len, accs),
            Stmt::If { cond, then, els } => {
                let (c, _) = self.expr(cond);
                let l = self.fresh_label("if");
                self.line(&format!("br i1 {c}, label %{l}.then, label %{l}.else"));
                self.block(&format!("{l}.then"));
                self.stmts(then);
                self.line(&format!("br label %{l}.end"));
                self.block(&format!("{l}.else"));
                self.stmts(els);
                self.line(&format!("br label %{l}.end"));
                self.block(&format!("{l}.end"));
            }
        }
    }

    /// Address of element `idx` of parameter `p`.
    fn gep(&mut self, p: usize, idx: &str) -> String {
        let elem = match self.k.params[p].elem {
            Elem::F32 => "float",
            Elem::BF16 => "i16",
            Elem::F16 => "half",
            Elem::I32 => "i32",
            Elem::Block(_) => "i8",
        };
        let ptr = self.fresh();
        let base = self.param_name(p);
        self.line(&format!("{ptr} = getelementptr inbounds {elem}, ptr {base}, i64 {idx}"));
        ptr
    }

    fn call1(&mut self, f: &str, arg: &str) -> String {
        self.decls.insert(format!("declare float @{f}(float)"));
        let t = self.fresh();
        self.line(&format!("{t} = call float @{f}(float {arg})"));
        t
    }

    fn expr(&mut self, e: &Expr) -> (String, Scalar) {
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

/// `tanh` as a clamped odd rational function (the 13/6 minimax form Eigen uses
/// for `float`, a few ulp from libm's `tanhf`), inlined where it is called.
/// Arithmetic only, so loops that call it still vectorize.
fn tanh_helper() -> String {
    const ALPHA: [f32; 7] = [
        4.893_524_6e-3,
        6.372_619_3e-4,
        1.485_722_4e-5,
        5.122_297e-8,
        -8.604_672e-11,
        2.000_188e-13,
        -2.760_768_5e-16,
    ];
    const BETA: [f32; 4] = [4.893_525e-3, 2.268_434_6e-3, 1.185_347_1e-4, 1.198_258_4e-6];
    let mut s = String::new();
    let _ = writeln!(
        s,
        "; tanh(x) = x * P(x^2) / Q(x^2) on x clamped to [-7.9053, 7.9053]; x itself when |x| < 4e-4"
    );
    let _ = writeln!(s, "define internal float @{TANH}(float %x) #1 {{");
    s.push_str("entry:\n");
    let clamp = f32_lit(7.905_311);
    let _ = writeln!(s, "  %lo = call float @llvm.minnum.f32(float %x, float {clamp})");
    let _ = writeln!(
        s,
        "  %c = call float @llvm.maxnum.f32(float %lo, float {})",
        f32_lit(-7.905_311)
    );
    s.push_str("  %x2 = fmul contract float %c, %c\n");
    // Horner's rule for the numerator (odd: x * P(x^2)) and denominator.
    let _ = writeln!(s, "  %p6 = fmul contract float %x2, {}", f32_lit(ALPHA[6]));
    for i in (0..6).rev() {
        let _ = writeln!(s, "  %pa{i} = fadd contract float %p{}, {}", i + 1, f32_lit(ALPHA[i]));
        if i > 0 {
            let _ = writeln!(s, "  %p{i} = fmul contract float %pa{i}, %x2");
        }
    }
    s.push_str("  %num = fmul contract float %pa0, %c\n");
    let _ = writeln!(s, "  %q3 = fmul contract float %x2, {}", f32_lit(BETA[3]));
    for i in (0..3).rev() {
        let _ = writeln!(s, "  %qa{i} = fadd contract float %q{}, {}", i + 1, f32_lit(BETA[i]));
        if i > 0 {
            let _ = writeln!(s, "  %q{i} = fmul contract float %qa{i}, %x2");
        }
    }
    s.push_str("  %ratio = fdiv contract float %num, %qa0\n");
    s.push_str("  %ax = call float @llvm.fabs.f32(float %x)\n");
    let _ = writeln!(s, "  %tiny = fcmp olt float %ax, {}", f32_lit(4e-4));
    s.push_str("  %r = select i1 %tiny, float %x, float %ratio\n");
    s.push_str("  ret float %r\n}\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::ops;

    #[test]
    fn f32_constants_are_exact_hex_doubles() {
        assert_eq!(f32_lit(1.0), "0x3FF0000000000000");
        assert_eq!(f32_lit(0.1), format!("0x{:016X}", (0.1f32 as f64).to_bits()));
        assert_eq!(f32_lit(f32::NEG_INFINITY), "0xFFF0000000000000");
    }

    #[test]
    fn matvec_has_what_the_vectorizer_needs() {
        let k = ops::matmul(1, 8, 16, Elem::BF16, Some(30.0));
        let ll = print_module("test", [&k]);
        assert!(ll.contains("define void @matmul_bf16_m1_n8_k16_cap3e1(ptr noalias nocapture readonly %a0.x"));
        assert!(
            ll.contains("fadd reassoc contract nsz float"),
            "reductions are reassociable"
        );
        assert!(ll.contains("shl i32"), "bf16 widens by a shift");
        assert!(
            ll.contains("define internal float @gemma4c.tanh"),
            "soft-cap uses the inline tanh"
        );
        assert!(!ll.contains("@tanhf"));
    }

    #[test]
    fn printing_is_deterministic() {
        let ks = [
            ops::attention(2, 4, 2, 8, 16, Some(4), 1.0),
            ops::moe_route(2, 8, 2, Elem::F32),
        ];
        assert_eq!(print_module("x", ks.iter()), print_module("x", ks.iter()));
    }
}
