//! The prefill matmul in the form GPUs want: tiled in shared memory.
//!
//! `out[m, n] = epilogue(sum_k x[m, k] * w[n, k])` with the CPU matmul's parameters and
//! epilogue (`kernel::ops::matmul`: optional soft-cap). Each workgroup computes a `TILE_M` ×
//! `TILE_N` tile of the output. It walks K in steps of `TILE_K`: the lanes first stage the
//! tile's `TILE_M` input rows and `TILE_N` weight rows (`TILE_K` columns each) in shared
//! memory, each lane loading a few elements with neighbouring lanes on neighbouring `k`
//! (coalesced); after a barrier every lane accumulates its `MICRO` × `MICRO` outputs from the
//! shared tiles, so each value loaded from device memory serves `TILE_M` (or `TILE_N`)
//! products instead of one. Ragged edges (M, N or K not a multiple of the tile) load zeros
//! and skip the stores, so any shape works.
//!
//! Lane `t` owns rows `ty + 16 i` and columns `tx + 16 j` of the tile (`ty = t / 16`,
//! `tx = t % 16`): in a subgroup neighbouring lanes store neighbouring outputs (coalesced)
//! and read neighbouring shared elements. The shared tiles are stored k-major with a padded
//! stride (`TILE_M + 1`), so the staging writes of one k column land in different banks.

use gemma4c_ir::math;

use super::{Body, GStmt, GpuKernel, SharedTile};
use crate::kernel::build::{and, lt, KernelBuilder};
use crate::kernel::{name_f32, Access, Elem, Expr, ReduceOp, Stmt, Var};

/// Output rows (input rows `m`) and columns (output features `n`) of a workgroup's tile.
pub const TILE_M: usize = 64;
pub const TILE_N: usize = 64;
/// K columns staged per step.
pub const TILE_K: usize = 16;
/// Outputs per lane along each side: 16 × 16 lanes × 4 × 4 = the 64 × 64 tile.
const MICRO: usize = 4;
const SIDE: usize = TILE_M / MICRO;
/// Lanes per workgroup.
pub const THREADS: usize = SIDE * SIDE;
/// Row stride of the k-major shared tiles (one float of padding against bank conflicts).
const STRIDE: usize = TILE_M + 1;

/// Workgroups of the tiled `m × n` matmul.
pub fn tiles(m: usize, n: usize) -> usize {
    m.div_ceil(TILE_M) * n.div_ceil(TILE_N)
}

/// The tiled matmul: same parameters (`x, w, out`) and results as
/// `kernel::ops::matmul(m, n, k, w, cap)` (to summation order). `w` is bf16, f16 or f32.
pub fn matmul_tiled(m: usize, n: usize, k: usize, w: Elem, cap: Option<f32>) -> GpuKernel {
    assert!(!matches!(w, Elem::Block(_)), "{}", crate::kernel::BLOCK_CPU_ONLY);
    let cap_name = cap.map_or(String::new(), |c| format!("_cap{}", name_f32(c)));
    let m_tiles = m.div_ceil(TILE_M);
    let mut b = KernelBuilder::new(
        format!("matmul_tiled_{}_m{m}_n{n}_k{k}{cap_name}", w.name()),
        tiles(m, n),
    );
    let x = b.param("x", Elem::F32, Access::Read);
    let wt = b.param("w", w, Access::Read);
    let out = b.param("out", Elem::F32, Access::Write);
    let i64v = |b: &mut KernelBuilder, name: &str| b.local(name, crate::kernel::Scalar::I64);
    let f32v = |b: &mut KernelBuilder, name: &str| b.local(name, crate::kernel::Scalar::F32);
    let var = Expr::Var;

    // Uniform: which tile this workgroup computes. Neighbouring workgroups share weight
    // columns (the larger operand), so they meet in the cache.
    let (m0, n0) = (i64v(&mut b, "m0"), i64v(&mut b, "n0"));
    let row = b.row();
    let mut body = vec![
        GStmt::All(Stmt::Set(m0, (&row % m_tiles) * TILE_M)),
        GStmt::All(Stmt::Set(n0, (&row / m_tiles) * TILE_N)),
    ];
    // Per lane: its place in the tile and its accumulators.
    let (t, ty, tx) = (i64v(&mut b, "t"), i64v(&mut b, "ty"), i64v(&mut b, "tx"));
    body.push(GStmt::LaneIndex(t));
    let accs: Vec<Vec<Var>> = (0..MICRO)
        .map(|i| (0..MICRO).map(|j| f32v(&mut b, &format!("acc{i}_{j}"))).collect())
        .collect();
    let mut init = vec![Stmt::Set(ty, var(t) / SIDE), Stmt::Set(tx, var(t) % SIDE)];
    init.extend(accs.iter().flatten().map(|&a| Stmt::Set(a, Expr::F32(0.0))));
    body.push(GStmt::Own(init));

    // One K step: stage both tiles, barrier, accumulate, barrier.
    let (k0, kt, s, kk) = (
        i64v(&mut b, "k0"),
        i64v(&mut b, "kt"),
        i64v(&mut b, "s"),
        i64v(&mut b, "kk"),
    );
    let (e, r, c, v) = (
        i64v(&mut b, "e"),
        i64v(&mut b, "r"),
        i64v(&mut b, "c"),
        f32v(&mut b, "v"),
    );
    // Staging: element `e = t + s * THREADS` of a tile is (row r, column c) = (e / TILE_K,
    // e % TILE_K); lanes t, t+1 read neighbouring k of one row.
    let stage = |tile: usize, base: Var, rows: usize, load: &dyn Fn(Expr) -> Expr| GStmt::Seq {
        var: s,
        start: Expr::I64(0),
        end: Expr::I64((TILE_M * TILE_K / THREADS) as i64),
        body: vec![
            GStmt::Own(vec![
                Stmt::Set(e, var(t) + var(s) * THREADS),
                Stmt::Set(r, var(e) / TILE_K),
                Stmt::Set(c, var(e) % TILE_K),
                Stmt::If {
                    cond: and(lt(var(base) + var(r), rows), lt(var(k0) + var(c), k)),
                    then: vec![Stmt::Set(v, load((var(base) + var(r)) * k + var(k0) + var(c)))],
                    els: vec![Stmt::Set(v, Expr::F32(0.0))],
                },
            ]),
            GStmt::ToShared {
                tile,
                index: var(c) * STRIDE + var(r),
                value: var(v),
            },
        ],
    };
    let a: Vec<Var> = (0..MICRO).map(|i| f32v(&mut b, &format!("a{i}"))).collect();
    let bw: Vec<Var> = (0..MICRO).map(|j| f32v(&mut b, &format!("b{j}"))).collect();
    let mut step = vec![
        GStmt::All(Stmt::Set(k0, var(kt) * TILE_K)),
        stage(0, m0, m, &|i| x.at(i)),
        stage(1, n0, n, &|i| wt.at(i)),
        GStmt::Barrier,
    ];
    let mut inner = Vec::new();
    for (i, &ai) in a.iter().enumerate() {
        inner.push(GStmt::FromShared {
            var: ai,
            tile: 0,
            index: var(kk) * STRIDE + var(ty) + (i * SIDE),
        });
    }
    for (j, &bj) in bw.iter().enumerate() {
        inner.push(GStmt::FromShared {
            var: bj,
            tile: 1,
            index: var(kk) * STRIDE + var(tx) + (j * SIDE),
        });
    }
    let mut fma = Vec::new();
    for (i, row_accs) in accs.iter().enumerate() {
        for (j, &acc) in row_accs.iter().enumerate() {
            fma.push(Stmt::Reduce(acc, ReduceOp::Add, var(a[i]) * bw[j]));
        }
    }
    inner.push(GStmt::Own(fma));
    step.push(GStmt::Seq {
        var: kk,
        start: Expr::I64(0),
        end: Expr::I64(TILE_K as i64),
        body: inner,
    });
    // The next step overwrites the tiles every lane is reading.
    step.push(GStmt::Barrier);
    body.push(GStmt::Seq {
        var: kt,
        start: Expr::I64(0),
        end: Expr::I64(k.div_ceil(TILE_K) as i64),
        body: step,
    });

    // Epilogue: each lane stores its outputs inside the matrix.
    let epilogue = |v: Expr| match cap {
        Some(c) => math::softcap(v, c),
        None => v,
    };
    let mut stores = Vec::new();
    for (i, row_accs) in accs.iter().enumerate() {
        for (j, &acc) in row_accs.iter().enumerate() {
            let gm = var(m0) + var(ty) + (i * SIDE);
            let gn = var(n0) + var(tx) + (j * SIDE);
            stores.push(Stmt::If {
                cond: and(lt(gm.clone(), m), lt(gn.clone(), n)),
                then: vec![Stmt::Store {
                    param: out.0,
                    index: gm * n + gn,
                    value: epilogue(var(acc)),
                }],
                els: vec![],
            });
        }
    }
    body.push(GStmt::Own(stores));

    GpuKernel {
        kernel: b.finish(),
        threads: THREADS,
        body: Body::Workgroup(body),
        shared: vec![
            SharedTile {
                name: "x_tile".into(),
                len: TILE_K * STRIDE,
            },
            SharedTile {
                name: "w_tile".into(),
                len: TILE_K * STRIDE,
            },
        ],
    }
}
