//! Prefill `MatMul` (`m > 1` input rows) on targets with tiles (`Tiles::Local`:
//! the CPU). A grid row computes `R` adjacent output features. Their weights
//! are converted to f32 — bf16/f16 widened, quantized blocks dequantized
//! bit-exactly as in `dequant.rs` — once per chunk of `KC` columns into a tile
//! (`R × KC`, a few KiB: it stays in L1), and every input row of a chunk of up
//! to `MC` rows reads them from there. The untiled kernels convert each weight
//! once per 4 (bf16) or 8 (quantized) input rows, and the conversion (shifts,
//! byte unpacking) competes with the multiply-adds for the same ALU ports.
//!
//! The dot products run as 4 × `R` register blocks (4 input rows × `R`
//! features: 4 + `R` loads per 4·`R` multiply-adds, no conversion in the inner
//! loop) whose per-chunk sums are added into a second tile, `MC × R`, and
//! stored once at the end. Activations stay f32, so the products are the
//! untiled kernel's (and the reference's); only the summation order differs,
//! as it may in any `Stmt::Reduce`.

use gemma4c_ir::{math, QuantFormat};

use super::dequant::{for_row_values, row_bytes, RowVisitor};
use crate::kernel::build::{KernelBuilder, TileRef};
use crate::kernel::{name_f32, Access, Elem, Expr, Kernel};

/// Input rows per register block.
const M_BLOCK: usize = 4;
/// Input rows per chunk: bounds the partial-sum tile (`MC × R` f32) whatever
/// the prompt length; the weights are converted once per chunk.
const MC: usize = 256;
/// Preferred columns per chunk: the weight tile (`R × KC` f32, 8 KiB for
/// `R = 4`) and the 4 input rows a block reads (8 KiB) fit in L1 together.
const KC: usize = 512;

/// Columns per chunk: the largest divisor of `k` up to `KC` that is a whole
/// number of `unit`s (quantized blocks), or all of `k` when only small
/// divisors exist (a chunk of a few columns would cost more than it saves).
pub fn chunk_cols(k: usize, unit: usize) -> usize {
    let units = k / unit;
    let best = (1..=units)
        .rev()
        .find(|d| units.is_multiple_of(*d) && d * unit <= KC.max(unit))
        .map_or(k, |d| d * unit);
    if best * 4 < KC.min(k) {
        k
    } else {
        best
    }
}

/// Writes the dequantized values of the `R` rows into the weight tile.
struct Fill {
    tile: TileRef,
    kc: usize,
}

impl RowVisitor for Fill {
    fn value(&mut self, b: &mut KernelBuilder, col: &Expr, _lane: &Expr, values: &[Expr]) {
        for (j, v) in values.iter().enumerate() {
            b.tile_store(self.tile, col + j * self.kc, v.clone());
        }
    }
}

/// `out[m, n] = sum_k x[m, k] * w[n, k]`, optionally soft-capped, with
/// `r_block` features per grid row (`n % r_block == 0`; quantized `w` needs
/// whole blocks per row). Params: `x, w, out`.
pub fn matmul_tiled(m: usize, n: usize, k: usize, w: Elem, cap: Option<f32>, r_block: usize) -> Kernel {
    let unit = match w {
        Elem::Block(q) => q.block_elems(),
        _ => 1,
    };
    assert!(
        r_block > 0 && n.is_multiple_of(r_block) && k.is_multiple_of(unit),
        "{n} x {k} does not split into blocks of {r_block} rows and {unit} columns"
    );
    let kc = chunk_cols(k, unit);
    let cap_name = cap.map_or(String::new(), |c| format!("_cap{}", name_f32(c)));
    let mut b = KernelBuilder::new(
        format!("matmul_tiled_r{r_block}_{}_m{m}_n{n}_k{k}{cap_name}", w.name()),
        n / r_block,
    );
    let x = b.param("x", Elem::F32, Access::Read);
    let wt = b.param("w", w, Access::Read);
    let out = b.param("out", Elem::F32, Access::Write);
    let mc_max = m.min(MC);
    let wtile = b.tile("wtile", r_block * kc);
    let acc = b.tile("acc", mc_max * r_block);
    let n0 = Expr::Var(b.let_i64("n0", b.row() * r_block));
    // Quantized rows are addressed by byte.
    let rows: Vec<Expr> = match w {
        Elem::Block(q) => (0..r_block)
            .map(|j| Expr::Var(b.let_i64(&format!("row{j}"), (&n0 + j) * row_bytes(q, k))))
            .collect(),
        _ => Vec::new(),
    };
    let epilogue = |v: Expr| match cap {
        Some(c) => math::softcap(v, c),
        None => v,
    };

    // Converts columns `c0 .. c0 + kc` of the R weight rows into the tile.
    let fill = |b: &mut KernelBuilder, chunk: &Expr| match w {
        Elem::Block(q) => {
            let at: Vec<Expr> = rows.iter().map(|r| r + chunk * row_bytes(q, kc)).collect();
            fill_quant(b, q, wt, &at, kc, wtile);
        }
        _ => {
            for j in 0..r_block {
                b.for_range("c", 0usize, kc, |b, c| {
                    let v = wt.at((&n0 + j) * k + chunk * kc + &c);
                    b.tile_store(wtile, c + j * kc, v);
                });
            }
        }
    };
    // `mb` input rows from `m0 + i0` against the tile, added into `acc`.
    let block = |b: &mut KernelBuilder, m0: &Expr, i0: Expr, mb: usize, chunk: &Expr| {
        let regs: Vec<Vec<_>> = (0..mb)
            .map(|i| (0..r_block).map(|j| b.let_f32(&format!("s{i}_{j}"), 0.0f32)).collect())
            .collect();
        let x0 = Expr::Var(b.let_i64("x0", (m0 + &i0) * k + chunk * kc));
        b.for_range("c", 0usize, kc, |b, c| {
            let xs: Vec<_> = (0..mb)
                .map(|i| b.let_f32(&format!("x{i}"), x.at(&x0 + i * k + &c)))
                .collect();
            let ws: Vec<_> = (0..r_block)
                .map(|j| b.let_f32(&format!("w{j}"), wtile.at(&c + j * kc)))
                .collect();
            for (i, row) in regs.iter().enumerate() {
                for (j, &s) in row.iter().enumerate() {
                    b.sum(s, Expr::Var(xs[i]) * ws[j]);
                }
            }
        });
        for (i, row) in regs.iter().enumerate() {
            for (j, &s) in row.iter().enumerate() {
                let at = (&i0 + i) * r_block + j;
                b.tile_store(acc, at.clone(), acc.at(at) + s);
            }
        }
    };
    // Input rows `m0 .. m0 + mc`.
    let chunk_rows = |b: &mut KernelBuilder, m0: Expr, mc: usize| {
        b.for_range("a", 0usize, mc * r_block, |b, a| b.tile_store(acc, a, 0.0f32));
        b.for_range("kc", 0usize, k / kc, |b, chunk| {
            fill(b, &chunk);
            let blocks = mc / M_BLOCK;
            if blocks > 0 {
                b.for_range("mb", 0usize, blocks, |b, mb| {
                    block(b, &m0, mb * M_BLOCK, M_BLOCK, &chunk)
                });
            }
            if blocks * M_BLOCK < mc {
                b.for_range("mi", blocks * M_BLOCK, mc, |b, mi| block(b, &m0, mi, 1, &chunk));
            }
        });
        b.for_range("i", 0usize, mc, |b, i| {
            for j in 0..r_block {
                let v = epilogue(acc.at(&i * r_block + j));
                b.store(out, (&m0 + &i) * n + &n0 + j, v);
            }
        });
    };
    let full = m / mc_max;
    b.for_range("mc", 0usize, full, |b, mc| chunk_rows(b, mc * mc_max, mc_max));
    if full * mc_max < m {
        chunk_rows(&mut b, Expr::I64((full * mc_max) as i64), m - full * mc_max);
    }
    b.finish()
}

fn fill_quant(b: &mut KernelBuilder, q: QuantFormat, w: crate::kernel::Buf, rows: &[Expr], kc: usize, tile: TileRef) {
    for_row_values(b, q, w, rows, kc, &mut Fill { tile, kc });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_divide_k_in_whole_blocks() {
        assert_eq!(chunk_cols(1536, 1), 512);
        assert_eq!(chunk_cols(6144, 256), 512);
        assert_eq!(chunk_cols(640, 32), 320);
        assert_eq!(chunk_cols(2560, 256), 512);
        assert_eq!(chunk_cols(256, 256), 256);
        assert_eq!(chunk_cols(64, 1), 64);
        assert_eq!(chunk_cols(1031, 1), 1031, "a prime: one chunk");
    }
}
