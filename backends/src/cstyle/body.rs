//! One kernel as a C-like function: the structure every dialect shares.

use std::fmt::Write;

use super::{f32_lit, table_name, zero, Dialect, MAX_I64, MIN_I64};
use crate::kernel::{BinOp, CmpOp, Expr, Kernel, ReduceOp, Scalar, Stmt, UnOp, Var, BLOCK_CPU_ONLY, ROW};

pub(super) struct FnPrinter<'k> {
    pub(super) d: &'k dyn Dialect,
    pub(super) k: &'k Kernel,
    pub(super) out: String,
    pub(super) depth: usize,
    pub(super) loops: usize,
}

impl<'k> FnPrinter<'k> {
    pub(super) fn new(d: &'k dyn Dialect, k: &'k Kernel) -> Self {
        FnPrinter {
            d,
            k,
            out: String::new(),
            depth: 1,
            loops: 0,
        }
    }

    pub(super) fn param_name(&self, i: usize) -> String {
        self.d.param_name(&self.k.name, i, &self.k.params[i].name)
    }

    pub(super) fn local(&self, v: Var) -> String {
        format!("v{}_{}", v.0, self.k.local(v).name)
    }

    pub(super) fn line(&mut self, s: &str) {
        for _ in 0..self.depth {
            self.out.push_str("    ");
        }
        self.out.push_str(s);
        self.out.push('\n');
    }

    pub(super) fn print(mut self) -> String {
        let k = self.k;
        let params: Vec<String> = k
            .params
            .iter()
            .enumerate()
            .map(|(i, p)| self.d.param(i, p.elem, p.access, &self.param_name(i)))
            .collect();
        let _ = writeln!(self.out, "// {} rows: {}", k.rows, k.params_summary());
        let _ = writeln!(self.out, "{}", self.d.signature(&k.name, &params));
        for l in self.d.row_index(k.rows) {
            self.line(&l);
        }
        self.declare_locals();
        self.stmts(&k.body);
        self.out.push_str("}\n");
        self.out
    }

    /// Every local, initialized (`row` from the dialect's `row`).
    pub(super) fn declare_locals(&mut self) {
        for (i, l) in self.k.locals.iter().enumerate() {
            let v = Var(i as u32);
            let init = if v == ROW {
                "row".to_string()
            } else {
                zero(self.d, l.ty)
            };
            let name = self.local(v);
            let decl = self.d.declare(l.ty, &name, &init);
            self.line(&decl);
        }
    }

    pub(super) fn stmts(&mut self, body: &[Stmt]) {
        for s in body {
            self.stmt(s);
        }
    }

    pub(super) fn stmt(&mut self, s: &Stmt) {
        match s {
            Stmt::Set(v, e) => {
                let val = self.expr(e).0;
                let name = self.local(*v);
                self.line(&format!("{name} = {val};"));
            }
            Stmt::Reduce(v, op, e) => {
                let (val, t) = self.expr(e);
                let name = self.local(*v);
                match (op, t) {
                    (ReduceOp::Add, _) => self.line(&format!("{name} += {val};")),
                    (ReduceOp::Max, Scalar::I64) => self.line(&format!("{name} = {MAX_I64}({name}, {val});")),
                    (ReduceOp::Max, _) => {
                        let max = self.d.min_max_f32().1;
                        self.line(&format!("{name} = {max}({name}, {val});"))
                    }
                }
            }
            Stmt::Store { param, index, value } => {
                let idx = self.expr(index).0;
                let val = self.expr(value).0;
                let p = self.param_name(*param);
                let st = self.d.store(self.k.params[*param].elem, &p, &idx, &val);
                self.line(&st);
            }
            Stmt::TileStore { .. } => unreachable!("{}", crate::kernel::TILES_CPU_ONLY),
            Stmt::DotBf16 { .. } => unreachable!("{}", crate::kernel::DOT_BF16_CPU_ONLY),
            Stmt::For { var, start, end, body } => {
                self.for_loop(*var, start, end, None, |me| me.stmts(body));
            }
            Stmt::If { cond, then, els } => {
                let c = self.expr(cond).0;
                self.line(&format!("if ({c}) {{"));
                self.depth += 1;
                self.stmts(then);
                self.depth -= 1;
                if els.is_empty() {
                    self.line("}");
                } else {
                    self.line("} else {");
                    self.depth += 1;
                    self.stmts(els);
                    self.depth -= 1;
                    self.line("}");
                }
            }
        }
    }

    /// `{ const end = ...; for (var = start (+ offset); var < end; var += step) { body } }`.
    pub(super) fn for_loop(
        &mut self,
        var: Var,
        start: &Expr,
        end: &Expr,
        lanes: Option<(&str, &str)>,
        body: impl FnOnce(&mut Self),
    ) {
        let s = self.expr(start).0;
        let e = self.expr(end).0;
        let name = self.local(var);
        self.loops += 1;
        let end_name = format!("end{}", self.loops);
        self.line("{");
        self.depth += 1;
        let decl = self.d.declare_const_int(&end_name, &e);
        self.line(&decl);
        let header = match lanes {
            None => self.d.for_header(&name, &s, &end_name, None),
            Some((lane, step)) => self
                .d
                .for_header(&name, &format!("{s} + {lane}"), &end_name, Some(step)),
        };
        self.line(&header);
        self.depth += 1;
        body(self);
        self.depth -= 1;
        self.line("}");
        self.depth -= 1;
        self.line("}");
    }

    pub(super) fn expr(&self, e: &Expr) -> (String, Scalar) {
        match e {
            Expr::F32(x) => (f32_lit(self.d, *x), Scalar::F32),
            Expr::I64(x) => (self.d.int_lit(*x), Scalar::I64),
            Expr::Bool(b) => (b.to_string(), Scalar::Bool),
            Expr::Var(v) => (self.local(*v), self.k.local(*v).ty),
            Expr::Load { param, index } => {
                let idx = self.expr(index).0;
                let p = self.param_name(*param);
                let e = self.k.params[*param].elem;
                (self.d.load(e, &p, &idx), e.value())
            }
            Expr::Table { table, index } => {
                let idx = self.expr(index).0;
                let name = table_name(self.k, &self.k.tables[*table].name);
                (format!("{name}[{idx}]"), Scalar::F32)
            }
            Expr::Tile { .. } => unreachable!("{}", crate::kernel::TILES_CPU_ONLY),
            Expr::Bin(op, a, b) => {
                let (a, t) = self.expr(a);
                let b = self.expr(b).0;
                let s = match (t, op) {
                    (_, BinOp::Add) => format!("({a} + {b})"),
                    (_, BinOp::Sub) => format!("({a} - {b})"),
                    (_, BinOp::Mul) => format!("({a} * {b})"),
                    (_, BinOp::Div) => format!("({a} / {b})"),
                    (Scalar::I64, BinOp::Rem) => format!("({a} % {b})"),
                    (Scalar::I64, BinOp::Shr) => format!("({a} >> {b})"),
                    (Scalar::I64, BinOp::BitAnd) => format!("({a} & {b})"),
                    (Scalar::F32, BinOp::Min) => format!("{}({a}, {b})", self.d.min_max_f32().0),
                    (Scalar::F32, BinOp::Max) => format!("{}({a}, {b})", self.d.min_max_f32().1),
                    (Scalar::I64, BinOp::Min) => format!("{MIN_I64}({a}, {b})"),
                    (Scalar::I64, BinOp::Max) => format!("{MAX_I64}({a}, {b})"),
                    (Scalar::Bool, BinOp::And) => format!("({a} && {b})"),
                    (Scalar::Bool, BinOp::Or) => format!("({a} || {b})"),
                    (t, op) => unreachable!("verify rejects {op:?} on {t:?}"),
                };
                (s, t)
            }
            Expr::Un(op, a) => {
                let (a, t) = self.expr(a);
                match op {
                    UnOp::Neg => (format!("(-{a})"), t),
                    UnOp::Not => (format!("(!{a})"), t),
                    UnOp::ToF32 => (self.d.int_to_f32(&a), Scalar::F32),
                    UnOp::F16Bits | UnOp::Sext8 => unreachable!("{BLOCK_CPU_ONLY}"),
                    UnOp::Exp | UnOp::Tanh | UnOp::Cos | UnOp::Sin | UnOp::Sqrt => {
                        (format!("{}({a})", self.d.math(*op)), t)
                    }
                }
            }
            Expr::Cmp(op, a, b) => {
                let a = self.expr(a).0;
                let b = self.expr(b).0;
                let c = match op {
                    CmpOp::Lt => "<",
                    CmpOp::Le => "<=",
                    CmpOp::Gt => ">",
                    CmpOp::Ge => ">=",
                    CmpOp::Eq => "==",
                    CmpOp::Ne => "!=",
                };
                (format!("({a} {c} {b})"), Scalar::Bool)
            }
            // C-style targets may contract; they never see block-quantized
            // weights, the only users of `Exact`.
            Expr::Exact(a) => self.expr(a),
            Expr::Select(c, a, b) => {
                let c = self.expr(c).0;
                let (a, t) = self.expr(a);
                let b = self.expr(b).0;
                (self.d.select(&c, &a, &b), t)
            }
        }
    }
}
