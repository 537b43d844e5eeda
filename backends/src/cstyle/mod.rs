//! Kernel IR → C-family source text (CUDA C, Metal Shading Language and WGSL dialects; the
//! GPU schedule's form is printed by `gpu.rs`), with everything a dialect decides behind
//! [`Dialect`] (and [`GpuDialect`]).
//!
//! The printer owns the structure every C-like language shares: one function per kernel whose
//! body runs one row of the launch grid (`row`), locals declared up front, `for` loops over
//! 64-bit integers whose end is evaluated once, reductions as plain sequential updates of the
//! thread's accumulator, and float constants in shortest round-trip scientific form (exact).
//! A dialect supplies the words: qualifiers, how a thread finds its row, buffer element types
//! and how bf16/f16 widen and narrow, math function names, and helper definitions.

mod body;
mod gpu;

pub use gpu::{print_gpu_module, GpuDialect};

use std::fmt::Write;

use crate::kernel::{Access, Elem, Kernel, Scalar, UnOp, BLOCK_CPU_ONLY};

/// What differs between C-like kernel languages.
///
/// Methods with a default print ISO C; a dialect overrides what its language spells otherwise.
pub trait Dialect {
    /// Text after the header comment and kernel count (includes, helper definitions the
    /// dialect always needs), ending with a blank line.
    fn prelude(&self) -> &str;
    /// A kernel's opening line up to and including `{`, given its printed parameters.
    fn signature(&self, name: &str, params: &[String]) -> String;
    /// Statements at the top of a kernel body that define `row` (an integer of the grid) and
    /// leave threads past `rows` rows.
    fn row_index(&self, rows: usize) -> Vec<String>;
    /// The type of a buffer element as stored (bf16 and f16 are dialect types).
    fn elem_type(&self, e: Elem) -> &str;
    /// A stored bf16 or f16 value (`stored`, an lvalue) widened to f32.
    fn widen(&self, e: Elem, stored: &str) -> String;
    /// An f32 value narrowed to a bf16 or f16 element for a store.
    fn narrow(&self, e: Elem, value: &str) -> String;
    /// A non-finite f32 constant (NaN, ±infinity), which C has no literal for.
    fn non_finite(&self, x: f32) -> String;
    /// Qualifiers of a kernel's constant table (`__constant__ `, `static const `).
    fn table_qualifiers(&self) -> &str;
    /// Qualifiers of a small helper function (`static inline`).
    fn helper_qualifiers(&self) -> &str;

    /// One buffer parameter (`index` is its position, for languages that bind by slot).
    fn param(&self, index: usize, e: Elem, access: Access, name: &str) -> String {
        let _ = index;
        let c = if access == Access::Read { "const " } else { "" };
        format!("{c}{}* restrict {name}", self.elem_type(e))
    }

    /// The type of a kernel-local scalar.
    fn scalar_type(&self, s: Scalar) -> &str {
        match s {
            Scalar::F32 => "float",
            Scalar::I64 => "long long",
            Scalar::Bool => "bool",
        }
    }

    /// The f32 math function for a unary op (`Exp`, `Tanh`, `Cos`, `Sin`, `Sqrt`).
    fn math(&self, op: UnOp) -> &str {
        match op {
            UnOp::Exp => "expf",
            UnOp::Tanh => "tanhf",
            UnOp::Cos => "cosf",
            UnOp::Sin => "sinf",
            UnOp::Sqrt => "sqrtf",
            UnOp::Neg | UnOp::ToF32 | UnOp::Not | UnOp::F16Bits | UnOp::Sext8 => {
                unreachable!("{op:?} is an operator, not a function")
            }
        }
    }

    /// The f32 minimum and maximum functions.
    fn min_max_f32(&self) -> (&str, &str) {
        ("fminf", "fmaxf")
    }

    // ---- spellings of statements and expressions (ISO C by default; WGSL overrides) ----

    /// A mutable local with its initial value.
    fn declare(&self, ty: Scalar, name: &str, init: &str) -> String {
        format!("{} {name} = {init};", self.scalar_type(ty))
    }

    /// An immutable integer local (a loop's end, evaluated once).
    fn declare_const_int(&self, name: &str, value: &str) -> String {
        format!("const {} {name} = {value};", self.scalar_type(Scalar::I64))
    }

    /// The opening line of `for (var = start; var < end; var += step)`; `step` None is 1.
    fn for_header(&self, var: &str, start: &str, end: &str, step: Option<&str>) -> String {
        match step {
            None => format!("for ({var} = {start}; {var} < {end}; ++{var}) {{"),
            Some(s) => format!("for ({var} = {start}; {var} < {end}; {var} += {s}) {{"),
        }
    }

    /// An integer constant of the kernel IR's i64 type.
    fn int_lit(&self, x: i64) -> String {
        i64_lit(x)
    }

    /// `c ? a : b`.
    fn select(&self, c: &str, a: &str, b: &str) -> String {
        format!("({c} ? {a} : {b})")
    }

    /// An integer converted to f32.
    fn int_to_f32(&self, a: &str) -> String {
        format!("(({}){a})", self.scalar_type(Scalar::F32))
    }

    /// Element `index` of buffer `param` (of element type `e`), as f32 or the integer type.
    fn load(&self, e: Elem, param: &str, index: &str) -> String {
        match e {
            Elem::F32 => format!("{param}[{index}]"),
            Elem::BF16 | Elem::F16 => self.widen(e, &format!("{param}[{index}]")),
            Elem::I32 => format!("(({}){param}[{index}])", self.scalar_type(Scalar::I64)),
            Elem::Block(_) => unreachable!("{BLOCK_CPU_ONLY}"),
        }
    }

    /// The statement `param[index] = value` (value is f32, or the integer type for i32).
    fn store(&self, e: Elem, param: &str, index: &str, value: &str) -> String {
        let value = match e {
            Elem::F32 => value.to_string(),
            Elem::I32 => format!("({})({value})", self.elem_type(Elem::I32)),
            Elem::BF16 | Elem::F16 => self.narrow(e, value),
            Elem::Block(_) => unreachable!("{BLOCK_CPU_ONLY}"),
        };
        format!("{param}[{index}] = {value};")
    }

    /// The name a kernel's buffer parameter `i` is printed with (unique within the kernel;
    /// WGSL, whose buffers are module-level, prefixes the kernel's name).
    fn param_name(&self, kernel: &str, i: usize, name: &str) -> String {
        let _ = kernel;
        format!("a{i}_{name}")
    }

    /// A constant f32 table definition.
    fn table(&self, name: &str, values: &[String]) -> String {
        format!(
            "{}{} {name}[{}] = {{{}}};",
            self.table_qualifiers(),
            self.scalar_type(Scalar::F32),
            values.len(),
            values.join(", ")
        )
    }

    /// The integer min (`op` '<') or max (`op` '>') helper `name`.
    fn int_helper(&self, name: &str, op: char) -> String {
        let int = self.scalar_type(Scalar::I64);
        format!(
            "{} {int} {name}({int} a, {int} b) {{ return a {op} b ? a : b; }}",
            self.helper_qualifiers()
        )
    }
}

/// Prints `kernels` (in the order given) as one translation unit: `header` as comment lines,
/// the dialect's prelude, integer helpers the bodies call, constant tables, then the kernels.
pub fn print_module<'a>(dialect: &dyn Dialect, header: &str, kernels: impl IntoIterator<Item = &'a Kernel>) -> String {
    let mut tables = String::new();
    let mut bodies = String::new();
    let mut count = 0;
    for k in kernels {
        count += 1;
        for t in &k.tables {
            let values: Vec<String> = t.values.iter().map(|&v| f32_lit(dialect, v)).collect();
            let _ = writeln!(tables, "{}", dialect.table(&table_name(k, &t.name), &values));
        }
        bodies.push('\n');
        bodies.push_str(&body::FnPrinter::new(dialect, k).print());
    }
    let mut out = String::new();
    for line in header.lines() {
        let _ = writeln!(out, "// {line}");
    }
    let _ = writeln!(out, "// {count} kernels\n");
    out.push_str(dialect.prelude());
    // Integer min/max helpers, only where a body calls them (compilers warn about unused ones).
    for (f, op) in [(MIN_I64, '<'), (MAX_I64, '>')] {
        if bodies.contains(&format!("{f}(")) {
            let _ = writeln!(out, "{}", dialect.int_helper(f, op));
        }
    }
    if !tables.is_empty() {
        out.push('\n');
        out.push_str(&tables);
    }
    out.push_str(&bodies);
    out
}

/// Names of the integer min/max helpers.
const MIN_I64: &str = "g4_min_i64";
const MAX_I64: &str = "g4_max_i64";

fn table_name(k: &Kernel, t: &str) -> String {
    format!("{}_{}", k.name, t)
}

/// An f32 constant as an exact C literal.
pub(crate) fn f32_lit(d: &dyn Dialect, x: f32) -> String {
    if !x.is_finite() {
        d.non_finite(x)
    } else if x.is_sign_negative() {
        format!("(-{:e}f)", -x)
    } else {
        format!("{x:e}f")
    }
}

/// An i64 constant (`LL`: at least 64 bits in every C dialect).
pub fn i64_lit(x: i64) -> String {
    if x == i64::MIN {
        "(-9223372036854775807LL - 1)".into()
    } else if x < 0 {
        format!("({x}LL)")
    } else {
        format!("{x}LL")
    }
}

fn zero(d: &dyn Dialect, s: Scalar) -> String {
    match s {
        Scalar::F32 => "0.0f".into(),
        Scalar::I64 => d.int_lit(0),
        Scalar::Bool => "false".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuda::printer::Cuda;

    #[test]
    fn float_literals_round_trip() {
        assert_eq!(f32_lit(&Cuda, 1.0), "1e0f");
        assert_eq!(f32_lit(&Cuda, 0.5), "5e-1f");
        assert_eq!(f32_lit(&Cuda, -2.5), "(-2.5e0f)");
        for x in [0.1f32, 1e-6, 3.4e38, 1.17e-38] {
            let s = f32_lit(&Cuda, x);
            assert_eq!(s.trim_end_matches('f').parse::<f32>().unwrap(), x);
        }
    }
}
