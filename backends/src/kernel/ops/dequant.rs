//! Dequantization of GGUF block formats inside kernels, as kernel IR.
//!
//! The formulas are `gemma4c_ir::quant`'s (gguf-py's `dequantize`), bit for
//! bit: every f16 scale is widened exactly, and each product and difference is
//! rounded on its own (`Expr::Exact`, so no FMA contracts `d * q - m`). Only
//! the dot products that consume the values are reassociated, as for bf16.
//!
//! A block is cut into *sub-blocks* that share one scale (and min) and whose
//! packed integers are consecutive bytes under one shift: unpacking the scales
//! once per sub-block leaves an inner loop of byte loads, shifts, masks and
//! one or two multiplies, which LLVM vectorizes. Sub-blocks are unrolled when
//! the kernel is built, so every offset and shift is a constant.

use gemma4c_ir::QuantFormat;

use crate::kernel::build::{bit_and, exact, f16_bits, sext8, shr, to_f32, Buf, KernelBuilder};
use crate::kernel::Expr;

/// Values per sub-block (one scale; consecutive bytes under one shift).
pub fn sub_elems(q: QuantFormat) -> usize {
    match q {
        // Low nibbles then high nibbles of the same 16 bytes.
        QuantFormat::Q4_0 | QuantFormat::Q4_1 | QuantFormat::Q5_0 | QuantFormat::Q5_1 => 16,
        QuantFormat::Q8_0 | QuantFormat::Q4K | QuantFormat::Q5K => 32,
        QuantFormat::Q6K => 16,
    }
}

/// One sub-block of one row, with its scales in locals.
pub(crate) struct SubBlock {
    q: QuantFormat,
    w: Buf,
    /// Byte where the block starts.
    base: Expr,
    sub: usize,
    /// The (first) scale: `d`, `d * sc` (k-quants) or `d * scale` (Q6_K).
    d: Expr,
    /// What is subtracted (Q4_K, Q5_K) or added (Q4_1, Q5_1).
    m: Option<Expr>,
    /// Q5_0/Q5_1: the 16 high bits of this sub-block.
    qh: Option<Expr>,
}

fn byte(w: Buf, at: Expr) -> Expr {
    w.at(at)
}

/// The f16 at byte `at`.
fn f16_at(w: Buf, at: Expr) -> Expr {
    f16_bits(byte(w, at.clone()) + byte(w, at + 1usize) * 256usize)
}

/// A byte read as a signed 8-bit integer.
fn signed(v: Expr) -> Expr {
    sext8(v)
}

/// The packed (scale, min) pair `j` of a Q4_K/Q5_K super-block whose 12 scale
/// bytes start at `s` (`scale_min_k4` in `gemma4c_ir::quant`).
fn scale_min_k4(w: Buf, s: &Expr, j: usize) -> (Expr, Expr) {
    let at = |i: usize| byte(w, s + i);
    if j < 4 {
        (bit_and(at(j), 63usize), bit_and(at(j + 4), 63usize))
    } else {
        let hi = |i: usize| shr(at(i), 6usize) * 16usize;
        (bit_and(at(j + 4), 15usize) + hi(j - 4), shr(at(j + 4), 4usize) + hi(j))
    }
}

/// Unpacks the scales of sub-block `sub` of the block at byte `base` into
/// locals (named with `tag`).
pub(crate) fn sub_block(b: &mut KernelBuilder, q: QuantFormat, w: Buf, base: Expr, sub: usize, tag: &str) -> SubBlock {
    let mut local = |name: &str, e: Expr| Expr::Var(b.let_f32(&format!("{name}{tag}"), e));
    let (d, m) = match q {
        QuantFormat::Q4_0 | QuantFormat::Q5_0 | QuantFormat::Q8_0 => (local("d", f16_at(w, base.clone())), None),
        QuantFormat::Q4_1 | QuantFormat::Q5_1 => (
            local("d", f16_at(w, base.clone())),
            Some(local("m", f16_at(w, &base + 2usize))),
        ),
        QuantFormat::Q4K | QuantFormat::Q5K => {
            let (sc, m) = scale_min_k4(w, &(&base + 4usize), sub);
            let d = exact(f16_at(w, base.clone()) * to_f32(sc));
            let m = exact(f16_at(w, &base + 2usize) * to_f32(m));
            (local("dl", d), Some(local("ml", m)))
        }
        QuantFormat::Q6K => {
            let scale = to_f32(signed(byte(w, &base + (192 + sub))));
            (local("ds", exact(f16_at(w, &base + 208usize) * scale)), None)
        }
    };
    let qh = match q {
        QuantFormat::Q5_0 | QuantFormat::Q5_1 => {
            let at = if q == QuantFormat::Q5_0 { 2 } else { 4 } + 2 * sub;
            let bits = byte(w, &base + at) + byte(w, &base + (at + 1)) * 256usize;
            Some(Expr::Var(b.let_i64(&format!("qh{tag}"), bits)))
        }
        _ => None,
    };
    SubBlock {
        q,
        w,
        base,
        sub,
        d,
        m,
        qh,
    }
}

impl SubBlock {
    /// Value `l` (`0..sub_elems`) of the sub-block, dequantized.
    pub(crate) fn value(&self, l: &Expr) -> Expr {
        let (w, base, sub, d) = (self.w, &self.base, self.sub, &self.d);
        let nibble = |at: usize, shift: usize| bit_and(shr(byte(w, base + at + l), shift), 15usize);
        match self.q {
            QuantFormat::Q8_0 => exact(d * to_f32(signed(byte(w, base + 2usize + l)))),
            QuantFormat::Q4_0 => exact(d * to_f32(nibble(2, 4 * sub) - 8usize)),
            QuantFormat::Q4_1 => exact(d * to_f32(nibble(4, 4 * sub)) + self.m.clone().expect("q4_1 min")),
            QuantFormat::Q5_0 | QuantFormat::Q5_1 => {
                let qs = if self.q == QuantFormat::Q5_0 { 6 } else { 8 };
                let high = bit_and(shr(self.qh.clone().expect("q5 high bits"), l), 1usize);
                let q = nibble(qs, 4 * sub) + high * 16usize;
                match &self.m {
                    None => exact(d * to_f32(q - 16usize)),
                    Some(m) => exact(d * to_f32(q) + m),
                }
            }
            QuantFormat::Q4K | QuantFormat::Q5K => {
                let (qs, qh) = if self.q == QuantFormat::Q4K {
                    (16, None)
                } else {
                    (48, Some(16usize))
                };
                let mut q = nibble(qs + 32 * (sub / 2), 4 * (sub % 2));
                if let Some(qh) = qh {
                    q = q + bit_and(shr(byte(w, base + qh + l), sub), 1usize) * 16usize;
                }
                exact(d * to_f32(q) - self.m.clone().expect("k-quant min"))
            }
            QuantFormat::Q6K => {
                // Value e = 16 sub + l of 256: half e/128, r = e % 128; the low
                // nibble is byte 64 half + r % 64 shifted by 4 (r / 64), the high
                // two bits byte 128 + 32 half + r % 32 shifted by 2 (r / 32).
                let (half, s8) = (sub / 8, sub % 8);
                let low = nibble(64 * half + 16 * (sub % 4), 4 * (s8 / 4));
                let high = bit_and(
                    shr(byte(w, base + (128 + 32 * half + 16 * (sub % 2)) + l), 2 * (s8 / 2)),
                    3usize,
                );
                exact(d * to_f32(low + high * 16usize - 32usize))
            }
        }
    }
}

/// What a kernel does with the values of one or more quantized rows: per
/// sub-block, `begin` (e.g. zero partial sums), `value` for each column with
/// its position `lane` in the sub-block (`0..sub_elems`) and each row's
/// dequantized value, then `end` (fold the partial sums). Partial sums per
/// sub-block keep the vectorized inner loop's horizontal add off the
/// dependency chain between sub-blocks.
pub(crate) trait RowVisitor {
    fn begin(&mut self, _b: &mut KernelBuilder) {}
    fn value(&mut self, b: &mut KernelBuilder, col: &Expr, lane: &Expr, values: &[Expr]);
    fn end(&mut self, _b: &mut KernelBuilder) {}
}

/// Loops over the `cols` values of the rows of `w` whose blocks start at the
/// bytes `rows` (all read together, for blocked matmuls).
pub(crate) fn for_row_values(
    b: &mut KernelBuilder,
    q: QuantFormat,
    w: Buf,
    rows: &[Expr],
    cols: usize,
    visit: &mut dyn RowVisitor,
) {
    let (be, bb, se) = (q.block_elems(), q.block_bytes(), sub_elems(q));
    b.for_range("blk", 0usize, cols / be, |b, blk| {
        for sub in 0..be / se {
            let subs: Vec<SubBlock> = rows
                .iter()
                .enumerate()
                .map(|(j, r)| sub_block(b, q, w, r + &blk * bb, sub, &format!("{j}_{sub}")))
                .collect();
            visit.begin(b);
            b.for_range("l", 0usize, se, |b, l| {
                let col = Expr::Var(b.let_i64("col", &blk * be + sub * se + &l));
                let values: Vec<Expr> = subs.iter().map(|s| s.value(&l)).collect();
                visit.value(b, &col, &l, &values);
            });
            visit.end(b);
        }
    });
}

/// Bytes of one row of `cols` values.
pub fn row_bytes(q: QuantFormat, cols: usize) -> usize {
    cols / q.block_elems() * q.block_bytes()
}
