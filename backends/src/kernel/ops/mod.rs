//! Kernel builders, one per op kind of the plan (fused ops included), grouped by
//! op family; each family's file also holds `launches`, which turns a plan step
//! of that family into kernel launches. Each builder's name spells out
//! everything its code depends on (shapes, element types, constants), so a
//! plan's identical steps share one kernel.
//!
//! Semantics are those of `gemma4c_ir::eval` (the reference): same formulas,
//! same order of operations, except that reductions are `Stmt::Reduce` (a
//! target may reassociate them) and accumulate in f32.

pub(crate) mod attention;
pub(crate) mod dequant;
pub(crate) mod dot_bf16;
pub(crate) mod elementwise;
pub(crate) mod linear;
pub(crate) mod norm;
pub(crate) mod qmatmul;
pub(crate) mod qmoe;
pub(crate) mod tiled;

pub use attention::{attention, moe_route};
pub use dot_bf16::{has_dot_bf16, matmul_dot_bf16};
pub use elementwise::{binary, embedding, replace_ids, slice, unary, BinaryKind, UnaryKind};
pub use linear::{matmul, matmul_blocked, matmul_for, moe_down, moe_gate_up};
pub use norm::{add_rms_norm, head_rows, norm_add, norm_add_norm, rms_norm, HeadDest, HeadNorm};
pub use qmatmul::{embedding_quant, matmul_quant};
pub use qmoe::{moe_down_quant, moe_gate_up_quant};
pub use tiled::matmul_tiled;

use gemma4c_ir::math;

use super::build::KernelBuilder;
use super::{Expr, Scalar};

/// `gelu_pytorch_tanh` of `x`, which should be a local or a constant (it is used four times).
pub fn gelu(x: &Expr) -> Expr {
    math::gelu_tanh(x.clone())
}

/// A local holding the RMSNorm factor (`math::inv_rms`) of a row of `d` whose squares sum to `ss`.
pub(crate) fn inv_rms(b: &mut KernelBuilder, name: &str, ss: Expr, d: usize, eps: f32) -> Expr {
    let v = b.local(name, Scalar::F32);
    b.set(v, math::inv_rms(ss / Expr::F32(d as f32), eps));
    Expr::Var(v)
}
