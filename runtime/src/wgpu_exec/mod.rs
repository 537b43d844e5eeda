//! The wgpu executor: runs a `--target wgpu` plan (kernels.wgsl, the GPU schedule of
//! `gemma4c_backends::gpu`) on any GPU wgpu drives — Vulkan (in CI: Mesa's lavapipe, a Vulkan
//! driver on the CPU), Metal, DX12. A `--target metal` plan runs here too: kernels.metal passed
//! through to Metal on a Mac (`shader.rs`), the same plan's WGSL elsewhere.

mod device;
mod kernel_run;
mod session;
mod shader;

pub use device::Gpu;
pub use kernel_run::run_kernel;
pub use session::WgpuSession;
pub use shader::{KernelSource, ShaderPath};
