//! The wgpu executor: runs a `--target wgpu` plan (kernels.wgsl, the GPU schedule of
//! `gemma4c_backends::gpu`) on any GPU wgpu drives — Vulkan (in CI: Mesa's lavapipe, a Vulkan
//! driver on the CPU), Metal, DX12.

mod device;
mod session;

pub use device::Gpu;
pub use session::WgpuSession;
