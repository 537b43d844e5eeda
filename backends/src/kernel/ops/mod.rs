//! Kernel builders, one per op kind of the plan (fused ops included). Each
//! builder's name spells out everything its code depends on (shapes, element
//! types, constants), so a plan's identical steps share one kernel.
//!
//! Semantics are those of `gemma4c_ir::eval` (the reference): same formulas,
//! same order of operations, except that reductions are `Stmt::Reduce` (a
//! target may reassociate them) and accumulate in f32.

mod attention;
mod elementwise;
mod linear;
mod norm;

pub use attention::{attention, moe_route};
pub use elementwise::{binary, embedding, replace_ids, slice, unary, BinaryKind, UnaryKind};
pub use linear::{matmul, matmul_blocked, moe_down, moe_gate_up};
pub use norm::{add_rms_norm, head_rows, norm_add, norm_add_norm, rms_norm, HeadDest, HeadNorm};

use super::build::{tanh, KernelBuilder};
use super::{Expr, Scalar};

/// `gelu_pytorch_tanh`, written like `gemma4c_ir::eval::gelu_tanh`; `x` should
/// be a local or a constant (it is used four times).
pub fn gelu(x: &Expr) -> Expr {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let inner = x + Expr::F32(0.044715) * x * x * x;
    Expr::F32(0.5) * x * (Expr::F32(1.0) + tanh(Expr::F32(SQRT_2_OVER_PI) * inner))
}

/// `1 / sqrt(sum / d + eps)`, the RMSNorm factor of a row whose squares sum to `ss`.
pub(crate) fn inv_rms(b: &mut KernelBuilder, name: &str, ss: Expr, d: usize, eps: f32) -> Expr {
    let v = b.local(name, Scalar::F32);
    b.set(v, Expr::F32(1.0) / super::build::sqrt(ss / Expr::F32(d as f32) + eps));
    Expr::Var(v)
}
