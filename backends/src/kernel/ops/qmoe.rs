//! The routed experts (`MoeExperts`) against block-quantized expert weights
//! (GGUF `ffn_gate_up_exps` / `ffn_down_exps`, or `--quant` on an MoE
//! checkpoint): each expert row is read as stored and dequantized in the inner
//! loop (`dequant.rs`), bit-exact with `gemma4c_ir::quant`, with the same grid
//! and f32 accumulation as the bf16 kernels of `linear.rs`. The `[E, rows,
//! cols]` tensors are `E * rows` quantized rows, expert after expert.

use gemma4c_ir::QuantFormat;

use super::dequant::{for_row_values, row_bytes, RowVisitor};
use super::gelu;
use crate::kernel::build::{Buf, KernelBuilder};
use crate::kernel::{Access, Elem, Expr, Kernel, Scalar, Var};

/// Dot products of one activation row (`x[x_row + col]`) with the rows being
/// dequantized, summed per sub-block into `parts`, then into `accs`.
struct RowDot {
    x: Buf,
    x_row: Expr,
    accs: Vec<Var>,
    parts: Vec<Var>,
}

impl RowVisitor for RowDot {
    fn begin(&mut self, b: &mut KernelBuilder) {
        self.parts = (0..self.accs.len())
            .map(|j| b.let_f32(&format!("part{j}"), 0.0f32))
            .collect();
    }

    fn value(&mut self, b: &mut KernelBuilder, col: &Expr, _lane: &Expr, values: &[Expr]) {
        let xv = b.let_f32("xv", self.x.at(&self.x_row + col));
        for (&p, v) in self.parts.iter().zip(values) {
            b.sum(p, Expr::Var(xv) * v.clone());
        }
    }

    fn end(&mut self, b: &mut KernelBuilder) {
        for (&a, &p) in self.accs.iter().zip(&self.parts) {
            b.sum(a, Expr::Var(p));
        }
    }
}

/// `moe_gate_up` with a `q` gate_up `[E, 2I, H]`: for token `t`, slot `s`
/// (expert `e`) and intermediate feature `j`, `act = gelu(gate_e[j] · x_t) *
/// (up_e[j] · x_t)`, both rows dequantized in one pass over `x_t`.
/// Grid rows: `t, s, j`. Params: `x [S,H], experts i32 [S,K], gate_up, act [S,K,I]`.
pub fn moe_gate_up_quant(s: usize, k: usize, i: usize, h: usize, q: QuantFormat) -> Kernel {
    assert!(
        h.is_multiple_of(q.block_elems()),
        "rows of {h} are not whole {q} blocks"
    );
    let mut b = KernelBuilder::new(format!("moe_gate_up_{}_s{s}_k{k}_i{i}_h{h}", q.name()), s * k * i);
    let x = b.param("x", Elem::F32, Access::Read);
    let experts = b.param("experts", Elem::I32, Access::Read);
    let gate_up = b.param("gate_up", Elem::Block(q), Access::Read);
    let act = b.param("act", Elem::F32, Access::Write);
    let r = b.row();
    let t = b.let_i64("t", &r / (k * i));
    let slot = b.let_i64("slot", (&r / i) % k);
    let j = b.let_i64("j", &r % i);
    let e = b.let_i64("e", experts.at(Expr::Var(t) * k + slot));
    let rb = row_bytes(q, h);
    let gate_row = Expr::Var(b.let_i64("gate_row", (Expr::Var(e) * (2 * i) + j) * rb));
    let up_row = Expr::Var(b.let_i64("up_row", (Expr::Var(e) * (2 * i) + i + j) * rb));
    let g = b.let_f32("g", 0.0f32);
    let u = b.let_f32("u", 0.0f32);
    let mut dot = RowDot {
        x,
        x_row: Expr::Var(t) * h,
        accs: vec![g, u],
        parts: Vec::new(),
    };
    for_row_values(&mut b, q, gate_up, &[gate_row, up_row], h, &mut dot);
    b.store(act, r, gelu(&Expr::Var(g)) * u);
    b.finish()
}

/// `moe_down` with a `q` down `[E, H, I]`: `out[t, c] = sum_s weights[t,s] *
/// (down_e[c] · act[t,s])`, slots in order. Grid rows: `t, c`.
/// Params: `weights [S,K], experts [S,K], down, act, out [S,H]`.
pub fn moe_down_quant(s: usize, k: usize, i: usize, h: usize, q: QuantFormat) -> Kernel {
    assert!(
        i.is_multiple_of(q.block_elems()),
        "rows of {i} are not whole {q} blocks"
    );
    let mut b = KernelBuilder::new(format!("moe_down_{}_s{s}_k{k}_i{i}_h{h}", q.name()), s * h);
    let weights = b.param("weights", Elem::F32, Access::Read);
    let experts = b.param("experts", Elem::I32, Access::Read);
    let down = b.param("down", Elem::Block(q), Access::Read);
    let act = b.param("act", Elem::F32, Access::Read);
    let out = b.param("out", Elem::F32, Access::Write);
    let r = b.row();
    let t = b.let_i64("t", &r / h);
    let c = b.let_i64("c", &r % h);
    let acc = b.let_f32("acc", 0.0f32);
    let dot = b.local("dot", Scalar::F32);
    b.for_range("slot", 0usize, k, |b, slot| {
        let ts = b.let_i64("ts", Expr::Var(t) * k + &slot);
        let e = b.let_i64("e", experts.at(ts));
        let down_row = Expr::Var(b.let_i64("down_row", (Expr::Var(e) * h + c) * row_bytes(q, i)));
        b.set(dot, 0.0f32);
        let mut visit = RowDot {
            x: act,
            x_row: Expr::Var(ts) * i,
            accs: vec![dot],
            parts: Vec::new(),
        };
        for_row_values(b, q, down, &[down_row], i, &mut visit);
        b.set(acc, Expr::Var(acc) + weights.at(ts) * dot);
    });
    b.store(out, r, acc);
    b.finish()
}
