//! The JIT-compiled dequantizing kernels against `gemma4c_ir::quant` (gguf-py's
//! dequantization, checked bit for bit in ir/tests/quant_gguf_py.rs), for every
//! block format: the embedding gather must reproduce each value exactly (so the
//! kernels' unpacking and rounding are gguf-py's), and the matmul (decode and
//! prefill blocking, soft-cap epilogue) must equal an f64 dot product of the
//! dequantized weights within f32 summation error. The tiled prefill matmul
//! (weights converted once per tile of input rows) is checked the same way for
//! every block format and for bf16.

use gemma4c_backends::cpu::llvm::print_module;
use gemma4c_backends::kernel::{ops, Elem};
use gemma4c_ir::QuantFormat;
use gemma4c_runtime::jit::JitModule;
use rand::{Rng, SeedableRng};

/// Random blocks whose f16 scales are finite and modest (random bytes would
/// include NaN and infinity scales, which no quantizer writes).
fn random_blocks(q: QuantFormat, blocks: usize, rng: &mut impl Rng) -> Vec<u8> {
    let bb = q.block_bytes();
    let mut bytes: Vec<u8> = (0..blocks * bb).map(|_| rng.random()).collect();
    let scale_at: &[usize] = match q {
        QuantFormat::Q4_1 | QuantFormat::Q5_1 | QuantFormat::Q4K | QuantFormat::Q5K => &[0, 2],
        QuantFormat::Q6K => &[208],
        _ => &[0],
    };
    for block in bytes.chunks_exact_mut(bb) {
        for &at in scale_at {
            let s = half::f16::from_f32(rng.random_range(-0.05f32..0.05));
            block[at..at + 2].copy_from_slice(&s.to_le_bytes());
        }
    }
    bytes
}

fn call(jit: &JitModule, name: &str, args: [*mut u8; 3], rows: usize) {
    let f = jit.kernel(name, 3).unwrap();
    type K = extern "C" fn(*mut u8, *mut u8, *mut u8, i64, i64);
    // SAFETY: `kernel` checked the signature (three buffers, begin, end) and
    // the buffers are sized for `rows` grid rows by the callers.
    let f: K = unsafe { std::mem::transmute::<usize, K>(f) };
    f(args[0], args[1], args[2], 0, rows as i64);
}

#[test]
fn embedding_kernels_dequantize_bit_exactly() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for q in QuantFormat::ALL {
        let (v, h) = (5, 2 * q.block_elems());
        let table = random_blocks(q, v * h / q.block_elems(), &mut rng);
        let mut want = vec![0f32; v * h];
        q.dequantize(&table, &mut want).unwrap();
        let ids: Vec<i32> = vec![3, 0, 4, 3];
        let k = ops::embedding_quant(ids.len(), h, q);
        let jit = JitModule::compile(&print_module("test", [&k]), None, 1).unwrap();
        let mut out = vec![0f32; ids.len() * h];
        call(
            &jit,
            &k.name,
            [
                table.as_ptr() as *mut u8,
                ids.as_ptr() as *mut u8,
                out.as_mut_ptr().cast(),
            ],
            ids.len(),
        );
        for (s, &id) in ids.iter().enumerate() {
            let row = &want[id as usize * h..(id as usize + 1) * h];
            let got = &out[s * h..(s + 1) * h];
            let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(got), bits(row), "{q}: row {id}");
        }
    }
}

#[test]
fn matmul_kernels_match_dequantized_dot_products() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    for q in QuantFormat::ALL {
        let (n, k) = (8, 2 * q.block_elems());
        let w = random_blocks(q, n * k / q.block_elems(), &mut rng);
        let mut wf = vec![0f32; n * k];
        q.dequantize(&w, &mut wf).unwrap();
        // Decode (one row, one output feature per grid row; Q8_0 decode has its
        // own kernel, so also with a soft-cap), and prefill with 4-row blocks
        // plus a remainder and a soft-cap epilogue.
        for (m, r_block, cap) in [(1, 1, None), (1, 4, None), (1, 2, Some(3.0f32)), (6, 4, Some(3.0f32))] {
            let x: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            let kern = ops::matmul_quant(m, n, k, q, cap, r_block, "");
            let jit = JitModule::compile(&print_module("test", [&kern]), None, 1).unwrap();
            let mut out = vec![0f32; m * n];
            call(
                &jit,
                &kern.name,
                [x.as_ptr() as *mut u8, w.as_ptr() as *mut u8, out.as_mut_ptr().cast()],
                n / r_block,
            );
            for i in 0..m {
                for j in 0..n {
                    let dot: f64 = (0..k).map(|c| x[i * k + c] as f64 * wf[j * k + c] as f64).sum();
                    let want = cap.map_or(dot, |c| c as f64 * (dot / c as f64).tanh());
                    let scale: f64 = (0..k).map(|c| (x[i * k + c] * wf[j * k + c]).abs() as f64).sum();
                    // f32 accumulation of k products, and the kernels' tanh (a few ulp).
                    let tol = 1e-6 * scale.max(1.0) + 1e-6;
                    let got = out[i * n + j] as f64;
                    assert!(
                        (got - want).abs() <= tol,
                        "{q} m{m} r{r_block}: [{i},{j}] {got} vs {want}"
                    );
                }
            }
        }
    }
}

/// Calls a kernel of `N` buffer parameters over grid rows `0..rows`.
fn call_n<const N: usize>(jit: &JitModule, name: &str, args: [*mut u8; N], rows: usize) {
    let f = jit.kernel(name, N).unwrap();
    let (b, e) = (0i64, rows as i64);
    // SAFETY: `kernel` checked the signature (N buffers, begin, end) and the
    // buffers are sized for `rows` grid rows by the caller.
    unsafe {
        match N {
            4 => std::mem::transmute::<usize, extern "C" fn(*mut u8, *mut u8, *mut u8, *mut u8, i64, i64)>(f)(
                args[0], args[1], args[2], args[3], b, e,
            ),
            5 => std::mem::transmute::<usize, extern "C" fn(*mut u8, *mut u8, *mut u8, *mut u8, *mut u8, i64, i64)>(f)(
                args[0], args[1], args[2], args[3], args[4], b, e,
            ),
            _ => unreachable!("no test kernel takes {N} buffers"),
        }
    }
}

/// The routed-expert kernels on block-quantized expert weights against the
/// same kernels on those weights dequantized to f32 (`ir::quant`): the
/// dequantized values are bit-exact (embedding test above), so only the f32
/// summation order differs.
#[test]
fn moe_expert_kernels_match_their_f32_kernels_on_dequantized_weights() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(13);
    let ptr = |v: &[f32]| v.as_ptr() as *mut u8;
    for q in QuantFormat::ALL {
        // 2 tokens, top-2 of 3 experts; H and I one or two blocks.
        let (s, topk, e, h, i) = (2, 2, 3, 2 * q.block_elems(), q.block_elems());
        let gate_up = random_blocks(q, e * 2 * i * h / q.block_elems(), &mut rng);
        let down = random_blocks(q, e * h * i / q.block_elems(), &mut rng);
        let (mut gate_up_f, mut down_f) = (vec![0f32; e * 2 * i * h], vec![0f32; e * h * i]);
        q.dequantize(&gate_up, &mut gate_up_f).unwrap();
        q.dequantize(&down, &mut down_f).unwrap();
        let x: Vec<f32> = (0..s * h).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let experts: Vec<i32> = vec![2, 0, 1, 2];
        let weights: Vec<f32> = vec![0.7, 0.3, 0.4, 0.6];
        let kernels = [
            ops::moe_gate_up(s, topk, i, h, Elem::Block(q)),
            ops::moe_gate_up(s, topk, i, h, Elem::F32),
            ops::moe_down(s, topk, i, h, Elem::Block(q)),
            ops::moe_down(s, topk, i, h, Elem::F32),
        ];
        let jit = JitModule::compile(&print_module("test", kernels.iter()), None, 1).unwrap();
        let mut acts = [vec![0f32; s * topk * i], vec![0f32; s * topk * i]];
        for (act, (k, w)) in acts
            .iter_mut()
            .zip([(&kernels[0], gate_up.as_ptr()), (&kernels[1], ptr(&gate_up_f))])
        {
            let ids = experts.as_ptr() as *mut u8;
            call_n(
                &jit,
                &k.name,
                [ptr(&x), ids, w as *mut u8, act.as_mut_ptr().cast()],
                s * topk * i,
            );
        }
        let close = |a: &[f32], b: &[f32], what: &str| {
            let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1.0);
            for (j, (g, w)) in a.iter().zip(b).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-5 * scale,
                    "{q} {what}[{j}]: {g} vs {w} (f32 kernel)"
                );
            }
        };
        close(&acts[0], &acts[1], "act");
        assert!(acts[1].iter().any(|&v| v != 0.0), "{q}: degenerate activations");
        let mut outs = [vec![0f32; s * h], vec![0f32; s * h]];
        for (out, (k, w)) in outs
            .iter_mut()
            .zip([(&kernels[2], down.as_ptr()), (&kernels[3], ptr(&down_f))])
        {
            let ids = experts.as_ptr() as *mut u8;
            call_n(
                &jit,
                &k.name,
                [ptr(&weights), ids, w as *mut u8, ptr(&acts[1]), out.as_mut_ptr().cast()],
                s * h,
            );
        }
        close(&outs[0], &outs[1], "out");
    }
}

/// `out` against f64 dot products of `x [m, k]` and `wf [n, k]` (soft-capped).
fn check_dots(what: &str, out: &[f32], x: &[f32], wf: &[f32], k: usize, cap: Option<f32>) {
    let (m, n) = (x.len() / k, wf.len() / k);
    for i in 0..m {
        for j in 0..n {
            let dot: f64 = (0..k).map(|c| x[i * k + c] as f64 * wf[j * k + c] as f64).sum();
            let want = cap.map_or(dot, |c| c as f64 * (dot / c as f64).tanh());
            let scale: f64 = (0..k).map(|c| (x[i * k + c] * wf[j * k + c]).abs() as f64).sum();
            // f32 accumulation of k products, and the kernels' tanh (a few ulp).
            let tol = 1e-6 * scale.max(1.0) + 1e-6;
            let got = out[i * n + j] as f64;
            assert!((got - want).abs() <= tol, "{what}: [{i},{j}] {got} vs {want}");
        }
    }
}

#[test]
fn tiled_prefill_matmul_matches_dot_products() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(14);
    // k = 1024 is two column chunks for every format; m = 261 is a full chunk
    // of 256 input rows (64 register blocks) and a remainder of 5 (one block
    // and one single row); m = 3 is single rows only.
    let (n, k) = (8, 1024);
    let formats = QuantFormat::ALL.into_iter().map(Elem::Block).chain([Elem::BF16]);
    for w in formats {
        let (bytes, wf) = match w {
            Elem::Block(q) => {
                let bytes = random_blocks(q, n * k / q.block_elems(), &mut rng);
                let mut wf = vec![0f32; n * k];
                q.dequantize(&bytes, &mut wf).unwrap();
                (bytes, wf)
            }
            _ => {
                let wf: Vec<f32> = (0..n * k)
                    .map(|_| half::bf16::from_f32(rng.random_range(-0.1f32..0.1)).to_f32())
                    .collect();
                let bytes = wf.iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect();
                (bytes, wf)
            }
        };
        for (m, r_block, cap) in [(261, 4, None), (3, 2, Some(3.0f32))] {
            let x: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            let kern = ops::matmul_tiled(m, n, k, w, cap, r_block);
            let jit = JitModule::compile(&print_module("test", [&kern]), None, 1).unwrap();
            let mut out = vec![0f32; m * n];
            call(
                &jit,
                &kern.name,
                [
                    x.as_ptr() as *mut u8,
                    bytes.as_ptr() as *mut u8,
                    out.as_mut_ptr().cast(),
                ],
                n / r_block,
            );
            check_dots(&kern.name, &out, &x, &wf, k, cap);
        }
    }
}
