//! The CUDA executor: runs a `--target cuda-*` plan's kernels.ptx through the driver API
//! (`cudarc`, libcuda loaded at run time), and NVRTC (loaded at run time too) for `compile`
//! to write that PTX. The launch sequence is the wgpu executor's (`crate::gpu_launch`).

mod nvrtc;
mod session;

pub use nvrtc::compile_ptx;
pub use session::{CudaSession, DeviceInfo};

use crate::error::RuntimeError;

/// Whether the CUDA driver library can be loaded; `cudarc`'s `CudaContext::new` panics
/// without it, so every entry point asks first.
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen libcuda by its usual names.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// The error when there is no CUDA driver.
pub fn no_driver() -> RuntimeError {
    RuntimeError::Other(
        "no CUDA driver: libcuda.so could not be loaded (this machine has no NVIDIA driver); \
         a --target wgpu plan runs on any Vulkan/Metal GPU, a --target cpu plan on the CPU"
            .into(),
    )
}

fn cuda_err(what: &str) -> impl Fn(cudarc::driver::DriverError) -> RuntimeError + '_ {
    move |e| RuntimeError::Other(format!("CUDA: {what}: {e}"))
}
