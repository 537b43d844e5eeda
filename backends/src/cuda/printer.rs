//! Kernel IR → CUDA C text.
//!
//! One `extern "C" __global__` function per kernel; each CUDA thread runs one
//! row of the launch grid (`row = blockIdx.x * blockDim.x + threadIdx.x`,
//! threads past `rows` return at once). Locals are C scalars (`float`,
//! `long long`, `bool`), loops are C `for` loops over `long long` whose end is
//! evaluated once, reductions are plain sequential updates of the thread's
//! accumulator. bf16 and f16 loads widen with `__bfloat162float` /
//! `__half2float`; i32 loads sign-extend to `long long`. Float constants are
//! printed in shortest round-trip scientific form, so they are exact.

use std::fmt::Write;

use crate::kernel::{Access, BinOp, CmpOp, Elem, Expr, Kernel, ReduceOp, Scalar, Stmt, UnOp, Var, ROW};

/// Prints `kernels` (in the order given) as one translation unit.
pub fn print_module<'a>(header: &str, kernels: impl IntoIterator<Item = &'a Kernel>) -> String {
    let mut tables = String::new();
    let mut bodies = String::new();
    let mut count = 0;
    for k in kernels {
        count += 1;
        for t in &k.tables {
            let values: Vec<String> = t.values.iter().map(|&v| f32_lit(v)).collect();
            let _ = writeln!(
                tables,
                "__constant__ float {}[{}] = {{{}}};",
                table_name(k, &t.name),
                t.values.len(),
                values.join(", ")
            );
        }
        bodies.push('\n');
        bodies.push_str(&FnPrinter::new(k).print());
    }
    let mut out = String::new();
    for line in header.lines() {
        let _ = writeln!(out, "// {line}");
    }
    let _ = writeln!(out, "// {count} kernels\n");
    out.push_str("#include <cuda_bf16.h>\n#include <cuda_fp16.h>\n\n");
    // Integer min/max helpers, only where a body calls them (NVRTC warns otherwise).
    for (f, op) in [("g4_min_i64", '<'), ("g4_max_i64", '>')] {
        if bodies.contains(&format!("{f}(")) {
            let _ = writeln!(
                out,
                "static __device__ __forceinline__ long long {f}(long long a, long long b) {{ return a {op} b ? a : b; }}"
            );
        }
    }
    if !tables.is_empty() {
        out.push('\n');
        out.push_str(&tables);
    }
    out.push_str(&bodies);
    out
}

fn table_name(k: &Kernel, t: &str) -> String {
    format!("{}_{}", k.name, t)
}

/// An f32 constant as an exact C literal.
fn f32_lit(x: f32) -> String {
    if x.is_nan() {
        "__int_as_float(0x7fc00000)".into()
    } else if x.is_infinite() {
        if x > 0.0 {
            "__int_as_float(0x7f800000)".into()
        } else {
            "__int_as_float(0xff800000)".into()
        }
    } else if x.is_sign_negative() {
        format!("(-{:e}f)", -x)
    } else {
        format!("{x:e}f")
    }
}

fn i64_lit(x: i64) -> String {
    if x == i64::MIN {
        "(-9223372036854775807LL - 1)".into()
    } else if x < 0 {
        format!("({x}LL)")
    } else {
        format!("{x}LL")
    }
}

fn ty(s: Scalar) -> &'static str {
    match s {
        Scalar::F32 => "float",
        Scalar::I64 => "long long",
        Scalar::Bool => "bool",
    }
}

fn zero(s: Scalar) -> &'static str {
    match s {
        Scalar::F32 => "0.0f",
        Scalar::I64 => "0LL",
        Scalar::Bool => "false",
    }
}

fn elem_ty(e: Elem) -> &'static str {
    match e {
        Elem::F32 => "float",
        Elem::BF16 => "__nv_bfloat16",
        Elem::F16 => "__half",
        Elem::I32 => "int",
    }
}

struct FnPrinter<'k> {
    k: &'k Kernel,
    out: String,
    depth: usize,
    loops: usize,
}

impl<'k> FnPrinter<'k> {
    fn new(k: &'k Kernel) -> Self {
        FnPrinter {
            k,
            out: String::new(),
            depth: 1,
            loops: 0,
        }
    }

    fn param_name(&self, i: usize) -> String {
        format!("a{i}_{}", self.k.params[i].name)
    }

    fn local(&self, v: Var) -> String {
        format!("v{}_{}", v.0, self.k.local(v).name)
    }

    fn line(&mut self, s: &str) {
        for _ in 0..self.depth {
            self.out.push_str("    ");
        }
        self.out.push_str(s);
        self.out.push('\n');
    }

    fn print(mut self) -> String {
        let k = self.k;
        let params: Vec<String> = k
            .params
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let c = if p.access == Access::Read { "const " } else { "" };
                format!("{c}{}* __restrict__ {}", elem_ty(p.elem), self.param_name(i))
            })
            .collect();
        let _ = writeln!(self.out, "// {} rows: {}", k.rows, k.params_summary());
        let _ = writeln!(
            self.out,
            "extern \"C\" __global__ void {}({}) {{",
            k.name,
            params.join(", ")
        );
        self.line("const long long row = blockIdx.x * (long long)blockDim.x + threadIdx.x;");
        self.line(&format!("if (row >= {}LL) return;", k.rows));
        for (i, l) in k.locals.iter().enumerate() {
            let v = Var(i as u32);
            let init = if v == ROW { "row" } else { zero(l.ty) };
            let name = self.local(v);
            self.line(&format!("{} {name} = {init};", ty(l.ty)));
        }
        self.stmts(&k.body);
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
                let val = self.expr(e).0;
                let name = self.local(*v);
                self.line(&format!("{name} = {val};"));
            }
            Stmt::Reduce(v, op, e) => {
                let (val, t) = self.expr(e);
                let name = self.local(*v);
                match (op, t) {
                    (ReduceOp::Add, _) => self.line(&format!("{name} += {val};")),
                    (ReduceOp::Max, Scalar::I64) => self.line(&format!("{name} = g4_max_i64({name}, {val});")),
                    (ReduceOp::Max, _) => self.line(&format!("{name} = fmaxf({name}, {val});")),
                }
            }
            Stmt::Store { param, index, value } => {
                let idx = self.expr(index).0;
                let val = self.expr(value).0;
                let p = self.param_name(*param);
                let val = match self.k.params[*param].elem {
                    Elem::F32 => val,
                    Elem::I32 => format!("(int)({val})"),
                    Elem::BF16 => format!("__float2bfloat16({val})"),
                    Elem::F16 => format!("__float2half({val})"),
                };
                self.line(&format!("{p}[{idx}] = {val};"));
            }
            Stmt::For { var, start, end, body } => {
                let s = self.expr(start).0;
                let e = self.expr(end).0;
                let name = self.local(*var);
                self.loops += 1;
                let end_name = format!("end{}", self.loops);
                self.line("{");
                self.depth += 1;
                self.line(&format!("const long long {end_name} = {e};"));
                self.line(&format!("for ({name} = {s}; {name} < {end_name}; ++{name}) {{"));
                self.depth += 1;
                self.stmts(body);
                self.depth -= 1;
                self.line("}");
                self.depth -= 1;
                self.line("}");
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

    fn expr(&self, e: &Expr) -> (String, Scalar) {
        match e {
            Expr::F32(x) => (f32_lit(*x), Scalar::F32),
            Expr::I64(x) => (i64_lit(*x), Scalar::I64),
            Expr::Bool(b) => (b.to_string(), Scalar::Bool),
            Expr::Var(v) => (self.local(*v), self.k.local(*v).ty),
            Expr::Load { param, index } => {
                let idx = self.expr(index).0;
                let p = self.param_name(*param);
                match self.k.params[*param].elem {
                    Elem::F32 => (format!("{p}[{idx}]"), Scalar::F32),
                    Elem::BF16 => (format!("__bfloat162float({p}[{idx}])"), Scalar::F32),
                    Elem::F16 => (format!("__half2float({p}[{idx}])"), Scalar::F32),
                    Elem::I32 => (format!("((long long){p}[{idx}])"), Scalar::I64),
                }
            }
            Expr::Table { table, index } => {
                let idx = self.expr(index).0;
                let name = table_name(self.k, &self.k.tables[*table].name);
                (format!("{name}[{idx}]"), Scalar::F32)
            }
            Expr::Bin(op, a, b) => {
                let (a, t) = self.expr(a);
                let b = self.expr(b).0;
                let s = match (t, op) {
                    (_, BinOp::Add) => format!("({a} + {b})"),
                    (_, BinOp::Sub) => format!("({a} - {b})"),
                    (_, BinOp::Mul) => format!("({a} * {b})"),
                    (_, BinOp::Div) => format!("({a} / {b})"),
                    (Scalar::I64, BinOp::Rem) => format!("({a} % {b})"),
                    (Scalar::F32, BinOp::Min) => format!("fminf({a}, {b})"),
                    (Scalar::F32, BinOp::Max) => format!("fmaxf({a}, {b})"),
                    (Scalar::I64, BinOp::Min) => format!("g4_min_i64({a}, {b})"),
                    (Scalar::I64, BinOp::Max) => format!("g4_max_i64({a}, {b})"),
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
                    UnOp::ToF32 => (format!("((float){a})"), Scalar::F32),
                    UnOp::Exp => (format!("expf({a})"), t),
                    UnOp::Tanh => (format!("tanhf({a})"), t),
                    UnOp::Cos => (format!("cosf({a})"), t),
                    UnOp::Sin => (format!("sinf({a})"), t),
                    UnOp::Sqrt => (format!("sqrtf({a})"), t),
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
            Expr::Select(c, a, b) => {
                let c = self.expr(c).0;
                let (a, t) = self.expr(a);
                let b = self.expr(b).0;
                (format!("({c} ? {a} : {b})"), t)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::ops;

    #[test]
    fn float_literals_round_trip() {
        assert_eq!(f32_lit(1.0), "1e0f");
        assert_eq!(f32_lit(0.5), "5e-1f");
        assert_eq!(f32_lit(-2.5), "(-2.5e0f)");
        assert_eq!(f32_lit(f32::NEG_INFINITY), "__int_as_float(0xff800000)");
        for x in [0.1f32, 1e-6, 3.4e38, 1.17e-38] {
            let s = f32_lit(x);
            assert_eq!(s.trim_end_matches('f').parse::<f32>().unwrap(), x);
        }
    }

    #[test]
    fn matvec_is_one_global_function_per_kernel() {
        let k = ops::matmul(1, 8, 16, Elem::BF16, Some(30.0));
        let cu = print_module("test", [&k]);
        assert!(cu.contains("extern \"C\" __global__ void matmul_bf16_m1_n8_k16_cap3e1("));
        assert!(cu.contains("const __nv_bfloat16* __restrict__"));
        assert!(cu.contains("__bfloat162float("));
        assert!(cu.contains("tanhf("));
        assert!(cu.contains("if (row >= "));
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
