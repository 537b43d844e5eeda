//! Prefill `MatMul` against bf16 weights on CPUs with bf16 pair instructions
//! (AVX-512 BF16): the `Avx512Bf16` variant of the tiled kernel (`tiled.rs`),
//! which the JIT runs instead where the host has the feature.
//!
//! `vdpbf16ps` multiplies 32 bf16 pairs and adds them into 16 f32 lanes, twice
//! the multiply-adds per instruction of an f32 FMA, and reads the weights as
//! stored (no widening pass). The weights are bf16 already; the activations
//! are rounded to bf16 (to nearest, ties to even) as they are loaded, so each
//! product carries a relative error of at most 2^-9 from that rounding (the
//! products themselves are exact in f32 and accumulate in f32). That is what
//! Hugging Face does when it runs a bf16 checkpoint in bf16 (its matmul inputs
//! are bf16 activations), and what llama.cpp does with a bf16 GGUF; it is not
//! the f32 compute of the parity references, which is why short prompts keep
//! the f32 kernel (`MIN_ROWS`).
//!
//! A grid row computes `R` adjacent output features; input rows go in blocks
//! of 4 (4 × `R` vector accumulators), each over all `k` columns, the `R`
//! weight rows staying in cache while the input rows stream past.

use gemma4c_ir::math;

use crate::kernel::build::KernelBuilder;
use crate::kernel::{Access, CpuFeature, Elem, Expr, Kernel};

/// Input rows per register block.
const M_BLOCK: usize = 4;

/// Fewest input rows that take the bf16 variant. Below it the prompt is short
/// (a chat turn, every parity fixture's prompt), prefill time is small either
/// way, and the f32 kernel keeps the reference's f32 activations.
pub const MIN_ROWS: usize = 32;

/// Whether a prefill matmul of `m` rows against `w` has a bf16 variant.
pub fn has_dot_bf16(m: usize, k: usize, w: Elem) -> bool {
    w == Elem::BF16 && m >= MIN_ROWS && k.is_multiple_of(32)
}

/// The `Avx512Bf16` variant of the kernel `base` (`x, w, out`, `n / r_block`
/// grid rows): `out[m, n] = sum_k bf16(x[m, k]) * w[n, k]`, optionally soft-capped.
pub fn matmul_dot_bf16(base: &str, m: usize, n: usize, k: usize, cap: Option<f32>, r_block: usize) -> Kernel {
    assert!(
        r_block > 0 && n.is_multiple_of(r_block) && k.is_multiple_of(32),
        "{n} x {k} does not split into blocks of {r_block} rows and 32 columns"
    );
    let feature = CpuFeature::Avx512Bf16;
    let mut b = KernelBuilder::new(format!("{base}__{}", feature.suffix()), n / r_block);
    let x = b.param("x", Elem::F32, Access::Read);
    let w = b.param("w", Elem::BF16, Access::Read);
    let out = b.param("out", Elem::F32, Access::Write);
    let n0 = Expr::Var(b.let_i64("n0", b.row() * r_block));
    let epilogue = |v: Expr| match cap {
        Some(c) => math::softcap(v, c),
        None => v,
    };
    let ws: Vec<Expr> = (0..r_block).map(|j| (&n0 + j) * k).collect();
    let block = |b: &mut KernelBuilder, m0: Expr, mb: usize| {
        let accs: Vec<Vec<_>> = (0..mb)
            .map(|i| (0..r_block).map(|j| b.let_f32(&format!("s{i}_{j}"), 0.0f32)).collect())
            .collect();
        let xs = (0..mb).map(|i| (&m0 + i) * k).collect();
        b.dot_bf16(x, xs, w, ws.clone(), k, accs.clone());
        for (i, row) in accs.iter().enumerate() {
            for (j, &s) in row.iter().enumerate() {
                b.store(out, (&m0 + i) * n + &n0 + j, epilogue(Expr::Var(s)));
            }
        }
    };
    let blocks = m / M_BLOCK;
    if blocks > 0 {
        b.for_range("mb", 0usize, blocks, |b, mb| block(b, mb * M_BLOCK, M_BLOCK));
    }
    if blocks * M_BLOCK < m {
        b.for_range("mi", blocks * M_BLOCK, m, |b, mi| block(b, mi, 1));
    }
    b.finish()
}
