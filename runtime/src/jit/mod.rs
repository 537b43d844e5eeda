//! The LLVM JIT executor: runs a plan with the generated CPU kernels.
//!
//! It mirrors `PlanSession` (the reference executor over the same arena
//! layout), with the steps replaced by launches of JIT-compiled kernels:
//! weights are read straight from the memory-mapped checkpoint (bf16/f16/f32,
//! widened inside the kernels), activations live in one 64-byte aligned arena
//! at the planned offsets, KV caches are state buffers updated in place, and
//! large launches split their grid rows over a thread pool.

mod bandwidth;
mod engine;
mod memory;
pub mod pool;
mod session;

pub use bandwidth::measure_bandwidth;
pub use engine::{JitModule, Variants};
pub use session::{check_threads, JitOptions, JitSession, StepProfile, MAX_THREADS, PARALLEL_BYTES};

/// Most buffer parameters a kernel takes.
pub const MAX_ARGS: usize = 8;

/// A kernel bound to its arguments: `f(args..., begin, end)`.
#[derive(Clone, Copy)]
pub struct Kernel {
    f: usize,
    args: [usize; MAX_ARGS],
    nargs: usize,
}

type P = *mut u8;

impl Kernel {
    /// Binds a JIT-compiled kernel (`JitModule::function`) to argument addresses.
    pub fn new(f: usize, args: &[usize]) -> Kernel {
        assert!(args.len() <= MAX_ARGS, "kernels take at most {MAX_ARGS} buffers");
        let mut a = [0; MAX_ARGS];
        a[..args.len()].copy_from_slice(args);
        Kernel {
            f,
            args: a,
            nargs: args.len(),
        }
    }

    /// Runs grid rows `[begin, end)`.
    ///
    /// # Safety
    /// `f` must be a kernel of `nargs` pointer parameters whose arguments point
    /// to live buffers of the sizes the kernel indexes.
    pub unsafe fn call(&self, begin: usize, end: usize) {
        let a = self.args.map(|x| x as P);
        let (b, e) = (begin as i64, end as i64);
        // SAFETY (all arms): the caller guarantees `f` has this signature.
        unsafe {
            match self.nargs {
                1 => std::mem::transmute::<usize, extern "C" fn(P, i64, i64)>(self.f)(a[0], b, e),
                2 => std::mem::transmute::<usize, extern "C" fn(P, P, i64, i64)>(self.f)(a[0], a[1], b, e),
                3 => std::mem::transmute::<usize, extern "C" fn(P, P, P, i64, i64)>(self.f)(a[0], a[1], a[2], b, e),
                4 => std::mem::transmute::<usize, extern "C" fn(P, P, P, P, i64, i64)>(self.f)(
                    a[0], a[1], a[2], a[3], b, e,
                ),
                5 => std::mem::transmute::<usize, extern "C" fn(P, P, P, P, P, i64, i64)>(self.f)(
                    a[0], a[1], a[2], a[3], a[4], b, e,
                ),
                6 => std::mem::transmute::<usize, extern "C" fn(P, P, P, P, P, P, i64, i64)>(self.f)(
                    a[0], a[1], a[2], a[3], a[4], a[5], b, e,
                ),
                7 => std::mem::transmute::<usize, extern "C" fn(P, P, P, P, P, P, P, i64, i64)>(self.f)(
                    a[0], a[1], a[2], a[3], a[4], a[5], a[6], b, e,
                ),
                8 => std::mem::transmute::<usize, extern "C" fn(P, P, P, P, P, P, P, P, i64, i64)>(self.f)(
                    a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], b, e,
                ),
                n => panic!("kernels take 1..={MAX_ARGS} buffers, not {n}"),
            }
        }
    }
}
