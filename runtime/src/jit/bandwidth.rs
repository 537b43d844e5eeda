//! Memory bandwidth as the JIT's own code sees it: a generated streaming-read
//! kernel (a vectorized f32 sum, like the matvec inner loop without the
//! multiply) over a buffer much larger than the caches, on the same thread
//! pool. Decode of a dense model is bound by this number.

use std::time::Instant;

use gemma4c_backends::cpu::llvm::print_module;
use gemma4c_backends::kernel::{Access, Elem, Expr, KernelBuilder};

use super::engine::JitModule;
use super::memory::AlignedBuf;
use super::pool::{Job, Pool};
use super::Kernel;

/// Floats summed per grid row (64 KiB).
const ROW: usize = 16 * 1024;

/// Best streaming-read bandwidth in GB/s over `passes` passes of `bytes`, with `threads` threads.
pub fn measure_bandwidth(threads: usize, bytes: usize, passes: usize) -> Result<f64, String> {
    let rows = (bytes / 4 / ROW).max(1);
    let mut b = KernelBuilder::new("stream_sum", rows);
    let x = b.param("x", Elem::F32, Access::Read);
    let out = b.param("out", Elem::F32, Access::Write);
    let base = Expr::Var(b.let_i64("base", b.row() * ROW));
    let acc = b.let_f32("acc", 0.0f32);
    b.for_range("j", 0usize, ROW, |b, j| b.sum(acc, x.at(&base + &j)));
    b.store(out, b.row(), acc);
    let kernel = b.finish();
    let jit = JitModule::compile(&print_module("bandwidth", [&kernel]), None, 1)?;
    let f = jit.function("stream_sum")?;
    let buf = AlignedBuf::zeroed(rows * ROW * 4);
    // Real pages (not the shared zero page): write every page.
    for i in (0..buf.len()).step_by(4096) {
        // SAFETY: `i` is inside the buffer.
        unsafe { *buf.ptr().add(i) = 1 };
    }
    let sums = AlignedBuf::zeroed(rows * 4);
    let mut pool = Pool::new(threads);
    let k = Kernel::new(f, &[buf.ptr() as usize, sums.ptr() as usize]);
    let mut best = 0.0f64;
    for _ in 0..passes.max(1) {
        let t = Instant::now();
        // SAFETY: the kernel reads `rows * ROW` floats of `buf` and writes `rows` floats of `sums`.
        unsafe {
            pool.run(Job {
                kernel: k,
                rows,
                block: rows.div_ceil(threads.max(1) * 4).max(1),
            })
        };
        best = best.max((rows * ROW * 4) as f64 / t.elapsed().as_secs_f64() / 1e9);
    }
    Ok(best)
}
