//! The executors `run`, `bench`, `chat` and `serve` build, behind the cargo features that
//! provide them (`jit`, `wgpu`, `cuda`): a binary built without one says so instead.

use anyhow::Result;
use gemma4c_frontend::Model;
use gemma4c_passes::plan::Plan;
use gemma4c_runtime::Executor;

#[cfg(feature = "jit")]
pub use gemma4c_runtime::jit::JitOptions;

/// Stands in for the JIT's options in a build without it (nothing to set).
#[cfg(not(feature = "jit"))]
#[derive(Debug, Clone, Default)]
pub struct JitOptions;

#[cfg(not(feature = "jit"))]
const NO_JIT: &str = "this gemma4c was built without the LLVM JIT (cargo feature `jit`): use --executor reference, \
                      or a GPU plan (`compile --target cuda-sm90` / `wgpu`)";

/// The JIT executor on a plan's kernels.ll.
#[cfg(feature = "jit")]
pub fn jit_plan<'m>(plan: Plan, model: &'m Model, ll: &str, jit: &JitOptions) -> Result<Box<dyn Executor + 'm>> {
    let _spinner = super::textgen::spinner("compiling CPU kernels (LLVM JIT)");
    Ok(Box::new(gemma4c_runtime::jit::JitSession::new(plan, model, ll, jit)?))
}

#[cfg(not(feature = "jit"))]
pub fn jit_plan<'m>(_: Plan, _: &'m Model, _: &str, _: &JitOptions) -> Result<Box<dyn Executor + 'm>> {
    anyhow::bail!(NO_JIT)
}

/// The JIT executor on a plan compiled here for the CPU.
#[cfg(feature = "jit")]
pub fn jit_compiled<'m>(plan: Plan, model: &'m Model, jit: &JitOptions) -> Result<Box<dyn Executor + 'm>> {
    let ll = gemma4c_backends::cpu::kernels_ll(&plan).map_err(anyhow::Error::msg)?;
    Ok(Box::new(gemma4c_runtime::jit::JitSession::new(plan, model, &ll, jit)?))
}

#[cfg(not(feature = "jit"))]
pub fn jit_compiled<'m>(_: Plan, _: &'m Model, _: &JitOptions) -> Result<Box<dyn Executor + 'm>> {
    anyhow::bail!(NO_JIT)
}

/// A GPU executor with what `bench` reports about it.
pub struct Gpu<'m> {
    pub exec: Box<dyn Executor + 'm>,
    /// "llvmpipe (Vulkan)", "NVIDIA H200 (sm_90, 150 GB)".
    pub device: String,
    /// Weight bytes one decode step reads.
    pub decode_weight_bytes: usize,
    /// Device-to-device copy bandwidth (GB/s, bytes read + written), measured when asked for
    /// and the runtime can time one.
    pub copy_gb_s: Option<f64>,
}

/// A wgpu session on a plan's kernels: kernels.wgsl, or kernels.metal (`metal`: passed through
/// to Metal on a Mac, the same plan's WGSL elsewhere).
#[cfg(feature = "wgpu")]
pub fn wgpu_plan<'m>(plan: Plan, model: &'m Model, text: String, metal: bool, measure_copy: bool) -> Result<Gpu<'m>> {
    use gemma4c_runtime::wgpu_exec::{KernelSource, WgpuSession};
    let source = if metal {
        KernelSource::Metal(text)
    } else {
        KernelSource::Wgsl(text)
    };
    let session = WgpuSession::new(plan, model, source)?;
    let copy_gb_s = if measure_copy {
        Some(session.copy_bandwidth(WGPU_COPY_BYTES, 10)?)
    } else {
        None
    };
    Ok(Gpu {
        device: format!("{}, {}", session.adapter(), session.shader_path().describe()),
        decode_weight_bytes: session.weight_bytes("decode"),
        copy_gb_s,
        exec: Box::new(session),
    })
}

/// Bytes of each buffer of the copy `bench` times on wgpu (capped at the adapter's buffer
/// limit: 256 MiB on lavapipe).
#[cfg(feature = "wgpu")]
const WGPU_COPY_BYTES: usize = 1 << 30;

#[cfg(not(feature = "wgpu"))]
pub fn wgpu_plan<'m>(_: Plan, _: &'m Model, _: String, _: bool, _: bool) -> Result<Gpu<'m>> {
    anyhow::bail!("this gemma4c was built without the wgpu runtime (cargo feature `wgpu`)")
}

/// Bytes of each buffer of the copy `bench` times: large enough to stream from device memory
/// rather than cache (the H200's L2 is 50 MB).
#[cfg(feature = "cuda")]
const COPY_BYTES: usize = 1 << 30;

#[cfg(feature = "cuda")]
pub fn cuda_plan<'m>(plan: Plan, model: &'m Model, ptx: &str, measure_copy: bool) -> Result<Gpu<'m>> {
    let session = gemma4c_runtime::cuda_exec::CudaSession::new(plan, model, ptx)?;
    let info = session.device();
    let device = format!(
        "{} (sm_{}{}, {:.0} GB)",
        info.name,
        info.compute_capability.0,
        info.compute_capability.1,
        info.memory_bytes as f64 / 1e9
    );
    let copy_gb_s = if measure_copy {
        Some(session.copy_bandwidth(COPY_BYTES.min(info.memory_bytes / 8), 10)?)
    } else {
        None
    };
    Ok(Gpu {
        device,
        decode_weight_bytes: session.weight_bytes("decode"),
        copy_gb_s,
        exec: Box::new(session),
    })
}

#[cfg(not(feature = "cuda"))]
pub fn cuda_plan<'m>(_: Plan, _: &'m Model, _: &str, _: bool) -> Result<Gpu<'m>> {
    anyhow::bail!("this gemma4c was built without the CUDA runtime (cargo feature `cuda`)")
}

/// `kernels.ptx` for `kernels.cu` (NVRTC, loaded at run time), or why not.
#[cfg(feature = "cuda")]
pub fn ptx_of(cu: &str, arch: &'static str) -> std::result::Result<String, String> {
    gemma4c_runtime::cuda_exec::compile_ptx(cu, arch)
}

#[cfg(not(feature = "cuda"))]
pub fn ptx_of(_: &str, _: &'static str) -> std::result::Result<String, String> {
    Err("this gemma4c was built without the cargo feature `cuda` (NVRTC)".into())
}
