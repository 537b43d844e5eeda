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
mod expr;
mod tanh;

use crate::kernel::{Access, Elem, Kernel, ReduceOp, Scalar, Stmt, UnOp, Var};

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
        bodies.push_str(&tanh::helper());
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
