//! The tiled prefill matmul (`gemma4c_backends::gpu::matmul`) executed on the first wgpu
//! adapter (in CI: lavapipe) against a Rust reference, on shapes that are not multiples of the
//! tile (ragged M, N and K edges), with f32, bf16 and f16 weights and the soft-cap epilogue.
//!
//! Tolerance: the reference sums in f64 from the same (rounded) inputs; the kernel sums each
//! product in f32, so the error is bounded by about `k * 2^-24 * sum |x w|`. We allow
//! `1e-6 * sum |x w| + 1e-6` (k ≤ 200 here gives ≤ 1.2e-5 relative at worst): a wrong tile
//! index, a missed edge or a stale shared tile moves outputs by O(|x w|).

use gemma4c_backends::gpu::matmul::{matmul_tiled, tiles, TILE_K, TILE_M, TILE_N};
use gemma4c_backends::kernel::Elem;
use gemma4c_runtime::wgpu_exec::{run_kernel, Gpu};
use half::{bf16, f16};
use rand::{rngs::StdRng, Rng, SeedableRng};

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// `w` as stored (bytes) and as the kernel reads it (widened to f32).
fn weights(elem: Elem, values: &[f32]) -> (Vec<u8>, Vec<f32>) {
    match elem {
        Elem::F32 => (values.iter().flat_map(|v| v.to_le_bytes()).collect(), values.to_vec()),
        Elem::BF16 => {
            let h: Vec<bf16> = values.iter().map(|&v| bf16::from_f32(v)).collect();
            (
                h.iter().flat_map(|v| v.to_le_bytes()).collect(),
                h.iter().map(|v| v.to_f32()).collect(),
            )
        }
        Elem::F16 => {
            let h: Vec<f16> = values.iter().map(|&v| f16::from_f32(v)).collect();
            (
                h.iter().flat_map(|v| v.to_le_bytes()).collect(),
                h.iter().map(|v| v.to_f32()).collect(),
            )
        }
        other => panic!("no {other:?} weights here"),
    }
}

#[test]
fn tiled_matmul_matches_a_rust_reference_on_ragged_shapes() {
    let gpu = match Gpu::new() {
        Ok(g) => g,
        Err(e) => {
            eprintln!("SKIPPED: {e}");
            return;
        }
    };
    // (m, n, k): below one tile, ragged on every side, exact multiples, many tiles.
    let cases = [
        (2, 3, 1, Elem::F32, None),
        (5, 70, 37, Elem::BF16, None),
        (TILE_M, TILE_N, TILE_K, Elem::F32, None),
        (67, 130, 50, Elem::F16, None),
        (130, 65, 200, Elem::BF16, Some(3.0)),
        (3, 200, 17, Elem::F32, Some(30.0)),
    ];
    let mut rng = StdRng::seed_from_u64(10);
    for (m, n, k, elem, cap) in cases {
        let x: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let wv: Vec<f32> = (0..n * k).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let (w_bytes, w) = weights(elem, &wv);
        let g = matmul_tiled(m, n, k, elem, cap);
        assert_eq!(g.workgroups(), tiles(m, n));
        // `out` starts as NaN: every element must be written.
        let out0: Vec<u8> = (0..m * n).flat_map(|_| f32::NAN.to_le_bytes()).collect();
        let x_bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
        let got = run_kernel(&gpu, &g, &[x_bytes, w_bytes, out0]).unwrap_or_else(|e| panic!("{}: {e}", g.kernel.name));
        let got = f32s(&got[2]);
        let mut worst = 0.0f64;
        for i in 0..m {
            for j in 0..n {
                let (mut dot, mut mag) = (0.0f64, 0.0f64);
                for c in 0..k {
                    let p = x[i * k + c] as f64 * w[j * k + c] as f64;
                    dot += p;
                    mag += p.abs();
                }
                let want = match cap {
                    Some(c) => (c as f64) * (dot / c as f64).tanh(),
                    None => dot,
                };
                let err = (got[i * n + j] as f64 - want).abs();
                let tol = 1e-6 * mag + 1e-6;
                assert!(
                    err <= tol,
                    "{} out[{i}, {j}] = {} want {want} (|err| {err:e} > {tol:e})",
                    g.kernel.name,
                    got[i * n + j]
                );
                worst = worst.max(err);
            }
        }
        eprintln!("{} on {}: max |err| {worst:e}", g.kernel.name, gpu.adapter);
    }
}
