//! Matrix-vector and matrix-matrix products against weights stored `[out, in]`
//! (bf16, f16 or f32, widened in the inner loop; block-quantized ones go to
//! `qmatmul.rs`), f32 accumulation. One grid
//! row per output feature: a row reads one weight row once, for all `m` input
//! rows, which is what makes decode run at memory bandwidth.

use gemma4c_ir::{math, Op};

use super::gelu;
use crate::kernel::build::KernelBuilder;
use crate::kernel::launches::{LaunchArg, StepCx};
use crate::kernel::ops::{self, UnaryKind};
use crate::kernel::{name_f32, Access, CpuFeature, Elem, Expr, Kernel, Scalar, Tiles};

/// `out[m, n] = sum_k x[m, k] * w[n, k]` (`MatMul`), optionally soft-capped
/// (`cap * tanh(y / cap)`, the tail of `LogitsHead`). Params: `x, w, out`.
///
/// A grid row computes `R` adjacent output features (4 when `n` allows), so
/// each loaded `x[k]` serves `R` weight rows and `x` is read from cache `R`
/// times less often; prefill (`m > 1`) also blocks 4 input rows, 16 dot
/// products per pass over `R` weight rows.
pub fn matmul(m: usize, n: usize, k: usize, w: Elem, cap: Option<f32>) -> Kernel {
    // Decode: while `x` fits in L1 one weight row per grid row keeps each
    // thread's reads one sequential stream (the fastest pattern for the
    // prefetchers); past that, blocks of 4 rows cut the re-reads of `x`.
    // Prefill always blocks (it is compute-bound).
    let r_block = if (m == 1 && k * 4 <= 32 * 1024) || (m > 1 && matches!(w, Elem::Block(_))) {
        // Quantized prefill: one weight row, dequantized once per 8 input
        // rows (`qmatmul.rs`), is cheaper than 4 rows per 4 input rows.
        1
    } else {
        [4, 2, 1].into_iter().find(|&r| n.is_multiple_of(r)).unwrap_or(1)
    };
    matmul_blocked(m, n, k, w, cap, r_block, "")
}

/// `matmul` for a target: with `Tiles::Local`, prefill (`m > 1`) converts
/// each weight once per tile of input rows (`tiled.rs`); a long bf16 prefill
/// also gets the variant for CPUs with AVX-512 BF16 (`dot_bf16.rs`).
pub fn matmul_for(tiles: Tiles, m: usize, n: usize, k: usize, w: Elem, cap: Option<f32>) -> Kernel {
    if tiles == Tiles::Local && m > 1 {
        let r_block = [4, 2, 1].into_iter().find(|&r| n.is_multiple_of(r)).unwrap_or(1);
        let mut kern = ops::matmul_tiled(m, n, k, w, cap, r_block);
        if ops::has_dot_bf16(m, k, w) {
            let v = ops::matmul_dot_bf16(&kern.name, m, n, k, cap, r_block);
            kern.variants.push((CpuFeature::Avx512Bf16, v));
        }
        return kern;
    }
    matmul(m, n, k, w, cap)
}

/// `matmul` with `r_block` output features per grid row (`n % r_block == 0`);
/// `tag` distinguishes variants in the kernel name.
pub fn matmul_blocked(m: usize, n: usize, k: usize, w: Elem, cap: Option<f32>, r_block: usize, tag: &str) -> Kernel {
    if let Elem::Block(q) = w {
        return ops::matmul_quant(m, n, k, q, cap, r_block, tag);
    }
    assert!(
        r_block > 0 && n.is_multiple_of(r_block),
        "{n} rows do not split into blocks of {r_block}"
    );
    let cap_name = cap.map_or(String::new(), |c| format!("_cap{}", name_f32(c)));
    let mut b = KernelBuilder::new(
        format!("matmul{tag}_{}_m{m}_n{n}_k{k}{cap_name}", w.name()),
        n / r_block,
    );
    let x = b.param("x", Elem::F32, Access::Read);
    let wt = b.param("w", w, Access::Read);
    let out = b.param("out", Elem::F32, Access::Write);
    let n0 = Expr::Var(b.let_i64("n0", b.row() * r_block));
    let epilogue = |v: Expr| match cap {
        Some(c) => math::softcap(v, c),
        None => v,
    };
    const M_BLOCK: usize = 4;
    // One pass over R weight rows for `mb` input rows starting at `m0`.
    let block = |b: &mut KernelBuilder, m0: Expr, mb: usize| {
        let accs: Vec<Vec<_>> = (0..mb)
            .map(|i| {
                (0..r_block)
                    .map(|j| b.let_f32(&format!("acc{i}_{j}"), 0.0f32))
                    .collect()
            })
            .collect();
        b.for_range("k", 0usize, k, |b, kk| {
            let xs: Vec<_> = (0..mb)
                .map(|i| b.let_f32(&format!("x{i}"), x.at((&m0 + i) * k + &kk)))
                .collect();
            let ws: Vec<_> = (0..r_block)
                .map(|j| b.let_f32(&format!("w{j}"), wt.at((&n0 + j) * k + &kk)))
                .collect();
            for (i, row) in accs.iter().enumerate() {
                for (j, &a) in row.iter().enumerate() {
                    b.sum(a, Expr::Var(xs[i]) * ws[j]);
                }
            }
        });
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

/// First half of `MoeExperts`: for token `t`, slot `s` (expert `e`) and
/// intermediate feature `j`, `act = gelu(gate_e[j] · x_t) * (up_e[j] · x_t)`.
/// Grid rows: `t, s, j`. Params: `x [S,H], experts i32 [S,K], gate_up [E,2I,H], act [S,K,I]`.
pub fn moe_gate_up(s: usize, k: usize, i: usize, h: usize, w: Elem) -> Kernel {
    if let Elem::Block(q) = w {
        return ops::moe_gate_up_quant(s, k, i, h, q);
    }
    let mut b = KernelBuilder::new(format!("moe_gate_up_{}_s{s}_k{k}_i{i}_h{h}", w.name()), s * k * i);
    let x = b.param("x", Elem::F32, Access::Read);
    let experts = b.param("experts", Elem::I32, Access::Read);
    let gate_up = b.param("gate_up", w, Access::Read);
    let act = b.param("act", Elem::F32, Access::Write);
    let r = b.row();
    let t = b.let_i64("t", &r / (k * i));
    let slot = b.let_i64("slot", (&r / i) % k);
    let j = b.let_i64("j", &r % i);
    let e = b.let_i64("e", experts.at(Expr::Var(t) * k + slot));
    let gate_base = b.let_i64("gate_base", (Expr::Var(e) * (2 * i) + j) * h);
    let up_base = b.let_i64("up_base", (Expr::Var(e) * (2 * i) + i + j) * h);
    let g = b.let_f32("g", 0.0f32);
    let u = b.let_f32("u", 0.0f32);
    b.for_range("c", 0usize, h, |b, c| {
        let xv = b.let_f32("xv", x.at(Expr::Var(t) * h + &c));
        b.sum(g, Expr::Var(xv) * gate_up.at(Expr::Var(gate_base) + &c));
        b.sum(u, Expr::Var(xv) * gate_up.at(Expr::Var(up_base) + &c));
    });
    b.store(act, r, gelu(&Expr::Var(g)) * u);
    b.finish()
}

/// Second half of `MoeExperts`: `out[t, c] = sum_s weights[t,s] * (down_e[c] · act[t,s])`,
/// slots in order. Grid rows: `t, c`. Params: `weights [S,K], experts [S,K], down [E,H,I], act, out [S,H]`.
pub fn moe_down(s: usize, k: usize, i: usize, h: usize, w: Elem) -> Kernel {
    if let Elem::Block(q) = w {
        return ops::moe_down_quant(s, k, i, h, q);
    }
    let mut b = KernelBuilder::new(format!("moe_down_{}_s{s}_k{k}_i{i}_h{h}", w.name()), s * h);
    let weights = b.param("weights", Elem::F32, Access::Read);
    let experts = b.param("experts", Elem::I32, Access::Read);
    let down = b.param("down", w, Access::Read);
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
        let down_base = b.let_i64("down_base", (Expr::Var(e) * h + c) * i);
        b.set(dot, 0.0f32);
        b.for_range("j", 0usize, i, |b, j| {
            b.sum(dot, act.at(Expr::Var(ts) * i + &j) * down.at(Expr::Var(down_base) + &j));
        });
        b.set(acc, Expr::Var(acc) + weights.at(ts) * dot);
    });
    b.store(out, r, acc);
    b.finish()
}

/// Launches of the matmul, routed-expert and logits-head steps of a plan.
pub(crate) fn launches(cx: &mut StepCx, op: &Op) -> Result<(), String> {
    match op {
        Op::MatMul => {
            let (x, w) = (cx.input(0)?, cx.input(1)?);
            let (n, kd) = (cx.shape(w)[0], cx.shape(w)[1]);
            let m = cx.numel(x) / kd;
            if cx.elem(x) != Elem::F32 {
                return Err("the left operand of a matmul must be an f32 activation".into());
            }
            let mm = ops::matmul_for(cx.tiles, m, n, kd, cx.elem(w), None);
            cx.launch(mm, cx.io_args(), None)
        }
        Op::MoeExperts => {
            let ins: Vec<usize> = (0..5).map(|i| cx.input(i)).collect::<Result<_, _>>()?;
            let (x, weights, experts, gate_up, down) = (ins[0], ins[1], ins[2], ins[3], ins[4]);
            let (s, h) = (cx.shape(x)[0], cx.shape(x)[1]);
            let (i2, topk) = (cx.shape(gate_up)[1], cx.shape(weights)[1]);
            let i = i2 / 2;
            let out = cx.step.outputs[0];
            let act = cx.scratch(s * topk * i * 4);
            // Bytes of the expert rows one call reads (block formats: whole rows).
            let rows_bytes = |w: usize, rows: usize, cols: usize| cx.dtype(w).bytes_for(&[rows, cols]);
            let gate_up_bytes = rows_bytes(gate_up, s * topk * i2, h);
            let down_bytes = rows_bytes(down, s * topk * h, i);
            let gu = ops::moe_gate_up(s, topk, i, h, cx.elem(gate_up));
            let args = vec![
                LaunchArg::Buffer(x),
                LaunchArg::Buffer(experts),
                LaunchArg::Buffer(gate_up),
                act,
            ];
            cx.launch(gu, args, gate_up_bytes)?;
            let dn = ops::moe_down(s, topk, i, h, cx.elem(down));
            let args = vec![
                LaunchArg::Buffer(weights),
                LaunchArg::Buffer(experts),
                LaunchArg::Buffer(down),
                act,
                LaunchArg::Buffer(out),
            ];
            cx.launch(dn, args, down_bytes)
        }
        Op::LogitsHead { eps, cap } => {
            let (x, w, table) = (cx.input(0)?, cx.input(1)?, cx.input(2)?);
            let h = cx.last_dim(x);
            let m = cx.numel(x) / h;
            let v = cx.shape(table)[0];
            let normed = cx.scratch(m * h * 4);
            let norm = ops::rms_norm(m, h, cx.elem(x), Some(cx.elem(w)), *eps, None);
            cx.launch(norm, vec![LaunchArg::Buffer(x), LaunchArg::Buffer(w), normed], None)?;
            let out = LaunchArg::Buffer(cx.step.outputs[0]);
            let welem = cx.elem(table);
            match cap {
                // The soft-cap as its own elementwise pass vectorizes its tanh
                // (as a matmul epilogue it runs once per output, scalar).
                Some(c) => {
                    let raw = cx.scratch(m * v * 4);
                    cx.launch(
                        ops::matmul_for(cx.tiles, m, v, h, welem, None),
                        vec![normed, LaunchArg::Buffer(table), raw],
                        None,
                    )?;
                    cx.launch(
                        ops::unary(UnaryKind::Softcap(*c), m * v, v, Elem::F32),
                        vec![raw, out],
                        None,
                    )
                }
                None => cx.launch(
                    ops::matmul_for(cx.tiles, m, v, h, welem, None),
                    vec![normed, LaunchArg::Buffer(table), out],
                    None,
                ),
            }
        }
        other => Err(format!("{other} is not a linear op")),
    }
}
