//! `MatMul` against a block-quantized weight (GGUF Q8_0, Q4_K, ...): the
//! weight rows are read as stored and dequantized in the inner loop
//! (`dequant.rs`), activations stay f32 and products accumulate in f32, as in
//! the bf16 kernel of `linear.rs`, whose grid this follows: a grid row computes
//! `r_block` output features; decode keeps per-lane sums in a tile
//! (`matvec_quant`), blocked prefill (targets without tiles) 8 input rows.

use gemma4c_ir::{math, QuantFormat};

use super::dequant::{for_row_values, row_bytes, sub_elems, RowVisitor};
use crate::kernel::build::{Buf, KernelBuilder, TileRef};
use crate::kernel::{name_f32, Access, Elem, Expr, Kernel, Var};

/// Dot products of `mb` input rows with the weight rows, summed per
/// sub-block into `parts` and then into `accs[i][j]`.
struct Dot<'a> {
    x: Buf,
    k: usize,
    m0: Expr,
    accs: &'a [Vec<Var>],
    parts: Vec<Vec<Var>>,
}

impl RowVisitor for Dot<'_> {
    fn begin(&mut self, b: &mut KernelBuilder) {
        self.parts = self
            .accs
            .iter()
            .enumerate()
            .map(|(i, row)| {
                (0..row.len())
                    .map(|j| b.let_f32(&format!("part{i}_{j}"), 0.0f32))
                    .collect()
            })
            .collect();
    }

    fn value(&mut self, b: &mut KernelBuilder, col: &Expr, _lane: &Expr, values: &[Expr]) {
        let xs: Vec<_> = (0..self.accs.len())
            .map(|i| b.let_f32(&format!("x{i}"), self.x.at((&self.m0 + i) * self.k + col)))
            .collect();
        let ws: Vec<_> = values
            .iter()
            .enumerate()
            .map(|(j, v)| b.let_f32(&format!("w{j}"), v))
            .collect();
        for (i, row) in self.parts.iter().enumerate() {
            for (j, &p) in row.iter().enumerate() {
                b.sum(p, Expr::Var(xs[i]) * ws[j]);
            }
        }
    }

    fn end(&mut self, b: &mut KernelBuilder) {
        for (acc_row, part_row) in self.accs.iter().zip(&self.parts) {
            for (&a, &p) in acc_row.iter().zip(part_row) {
                b.sum(a, Expr::Var(p));
            }
        }
    }
}

/// `out[m, n] = sum_k x[m, k] * dequant(w)[n, k]`, optionally soft-capped.
/// Params: `x, w, out`.
pub fn matmul_quant(
    m: usize,
    n: usize,
    k: usize,
    q: QuantFormat,
    cap: Option<f32>,
    r_block: usize,
    tag: &str,
) -> Kernel {
    assert!(
        r_block > 0 && n.is_multiple_of(r_block) && k.is_multiple_of(q.block_elems()),
        "{n} x {k} does not split into blocks of {r_block} rows and {q} blocks"
    );
    let cap_name = cap.map_or(String::new(), |c| format!("_cap{}", name_f32(c)));
    if m == 1 {
        return matvec_quant(
            n,
            k,
            q,
            cap,
            r_block,
            &format!("matmul{tag}_{}_lanes_m1_n{n}_k{k}{cap_name}", q.name()),
        );
    }
    let mut b = KernelBuilder::new(
        format!("matmul{tag}_{}_m{m}_n{n}_k{k}{cap_name}", q.name()),
        n / r_block,
    );
    let x = b.param("x", Elem::F32, Access::Read);
    let w = b.param("w", Elem::Block(q), Access::Read);
    let out = b.param("out", Elem::F32, Access::Write);
    let n0 = Expr::Var(b.let_i64("n0", b.row() * r_block));
    let rows: Vec<Expr> = (0..r_block)
        .map(|j| Expr::Var(b.let_i64(&format!("row{j}"), (&n0 + j) * row_bytes(q, k))))
        .collect();
    let epilogue = |v: Expr| match cap {
        Some(c) => math::softcap(v, c),
        None => v,
    };
    // Each weight value is dequantized once per block of input rows: 8 rows
    // amortize the unpacking (prefill), and with one weight row per grid row
    // the 8 partial sums still fit in vector registers.
    const M_BLOCK: usize = 8;
    let block = |b: &mut KernelBuilder, m0: Expr, mb: usize| {
        let accs: Vec<Vec<_>> = (0..mb)
            .map(|i| {
                (0..r_block)
                    .map(|j| b.let_f32(&format!("acc{i}_{j}"), 0.0f32))
                    .collect()
            })
            .collect();
        let mut dot = Dot {
            x,
            k,
            m0: m0.clone(),
            accs: &accs,
            parts: Vec::new(),
        };
        for_row_values(b, q, w, &rows, k, &mut dot);
        for (i, row) in accs.iter().enumerate() {
            for (j, &a) in row.iter().enumerate() {
                b.store(out, (&m0 + i) * n + &n0 + j, epilogue(Expr::Var(a)));
            }
        }
    };
    let blocks = if m >= M_BLOCK { m / M_BLOCK } else { 0 };
    if blocks > 0 {
        b.for_range("mb", 0usize, blocks, |b, mb| block(b, mb * M_BLOCK, M_BLOCK));
    }
    if blocks * M_BLOCK < m {
        b.for_range("m", blocks * M_BLOCK, m, |b, mi| block(b, mi, 1));
    }
    b.finish()
}

/// Accumulates `x · value` of each weight row into lane `lane` of that row's
/// slice of `lanes` (`sub_elems` f32 per row).
struct LaneDot {
    x: Buf,
    lanes: TileRef,
    se: usize,
}

impl RowVisitor for LaneDot {
    fn value(&mut self, b: &mut KernelBuilder, col: &Expr, lane: &Expr, values: &[Expr]) {
        let xv = b.let_f32("xv", self.x.at(col));
        for (j, v) in values.iter().enumerate() {
            let at = lane + j * self.se;
            b.tile_store(self.lanes, at.clone(), self.lanes.at(at) + Expr::Var(xv) * v.clone());
        }
    }
}

/// Decode (`m = 1`): each weight row keeps one f32 accumulator per position
/// of a sub-block (a tile of `sub_elems` lanes, 16 or 32: one or two vector
/// registers once LLVM promotes the tile) and adds `x · value` to it for
/// every sub-block of the row; the lanes are summed once, at the end of the
/// row. Summing each sub-block on its own (`Dot`) costs a horizontal vector
/// reduction per 16 or 32 weights, which made the quantized matvecs
/// compute-bound far below memory bandwidth. Tiles are CPU-only, as block
/// formats are. The values are `dequant.rs`'s (bit-exact), the products
/// fused multiply-adds: only the summation order differs from the reference.
fn matvec_quant(n: usize, k: usize, q: QuantFormat, cap: Option<f32>, r_block: usize, name: &str) -> Kernel {
    let se = sub_elems(q);
    let mut b = KernelBuilder::new(name, n / r_block);
    let x = b.param("x", Elem::F32, Access::Read);
    let w = b.param("w", Elem::Block(q), Access::Read);
    let out = b.param("out", Elem::F32, Access::Write);
    let lanes = b.tile("lanes", r_block * se);
    let n0 = Expr::Var(b.let_i64("n0", b.row() * r_block));
    let rows: Vec<Expr> = (0..r_block)
        .map(|j| Expr::Var(b.let_i64(&format!("row{j}"), (&n0 + j) * row_bytes(q, k))))
        .collect();
    b.for_range("a", 0usize, r_block * se, |b, a| b.tile_store(lanes, a, 0.0f32));
    for_row_values(&mut b, q, w, &rows, k, &mut LaneDot { x, lanes, se });
    for j in 0..r_block {
        let acc = b.let_f32(&format!("acc{j}"), 0.0f32);
        b.for_range("l", 0usize, se, |b, l| b.sum(acc, lanes.at(l + j * se)));
        let v = match cap {
            Some(c) => math::softcap(Expr::Var(acc), c),
            None => Expr::Var(acc),
        };
        b.store(out, &n0 + j, v);
    }
    b.finish()
}

/// `Embedding` from a block-quantized table: `out[s, :] = dequant(table)[ids[s], :]`.
/// Params: `table, ids, out`.
pub fn embedding_quant(s: usize, h: usize, q: QuantFormat) -> Kernel {
    let mut b = KernelBuilder::new(format!("embedding_{}_s{s}_h{h}", q.name()), s);
    let table = b.param("table", Elem::Block(q), Access::Read);
    let ids = b.param("ids", Elem::I32, Access::Read);
    let out = b.param("out", Elem::F32, Access::Write);
    let src = Expr::Var(b.let_i64("src", ids.at(b.row()) * row_bytes(q, h)));
    let dst = Expr::Var(b.let_i64("dst", b.row() * h));
    struct Gather {
        out: Buf,
        dst: Expr,
    }
    impl RowVisitor for Gather {
        fn value(&mut self, b: &mut KernelBuilder, col: &Expr, _lane: &Expr, values: &[Expr]) {
            b.store(self.out, &self.dst + col, values[0].clone());
        }
    }
    for_row_values(&mut b, q, table, &[src], h, &mut Gather { out, dst });
    b.finish()
}
