//! The shader module of a wgpu session: kernels.wgsl as it is, or, for a Metal plan,
//! kernels.metal handed to Metal unchanged (`Device::create_shader_module_passthrough`, when
//! the adapter is Metal and offers `Features::PASSTHROUGH_SHADERS`), else the same GPU plan
//! printed as WGSL, which wgpu translates with naga for whatever backend it runs on (MSL on a
//! Mac, SPIR-V on Vulkan). Every other part of a Metal run — buffers, bind groups, dispatches,
//! the argmax readback — is the WGSL path's, so CI exercises it on lavapipe.
//!
//! Passthrough MSL gets no help from wgpu: its buffers are bound in bind-group-layout order,
//! which is `[[buffer(i)]]` = parameter `i` because every pipeline's layout lists its
//! parameters in order; threadgroup memory must be declared inside the kernel body (wgpu
//! allocates none for `[[threadgroup(n)]]` parameters), which the Metal dialect does; and the
//! grid is 2-D past 65535 workgroups, which the Metal kernels fold back into one row index.

use gemma4c_backends::gpu::GpuPlan;

use super::device::Gpu;
use crate::error::RuntimeError;

/// The kernels of a plan, as its artifact holds them.
pub enum KernelSource {
    /// kernels.wgsl (`--target wgpu`).
    Wgsl(String),
    /// kernels.metal (`--target metal`).
    Metal(String),
}

/// How the session's kernels reached the device (for `bench` and errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShaderPath {
    /// kernels.wgsl through naga.
    Wgsl,
    /// kernels.metal compiled by Metal itself.
    MslPassthrough,
    /// A Metal plan on an adapter without MSL passthrough: the plan's WGSL through naga.
    MetalAsWgsl,
}

impl ShaderPath {
    pub fn describe(self) -> &'static str {
        match self {
            ShaderPath::Wgsl => "kernels.wgsl",
            ShaderPath::MslPassthrough => "kernels.metal (MSL passthrough)",
            ShaderPath::MetalAsWgsl => "Metal plan run as WGSL (no MSL passthrough on this adapter)",
        }
    }
}

/// Which path `source` takes on an adapter with `backend` and `features`.
pub fn path_for(source: &KernelSource, backend: wgpu::Backend, features: wgpu::Features) -> ShaderPath {
    match source {
        KernelSource::Wgsl(_) => ShaderPath::Wgsl,
        KernelSource::Metal(_)
            if backend == wgpu::Backend::Metal && features.contains(wgpu::Features::PASSTHROUGH_SHADERS) =>
        {
            ShaderPath::MslPassthrough
        }
        KernelSource::Metal(_) => ShaderPath::MetalAsWgsl,
    }
}

/// The shader module holding every kernel of `gp` (entry point = kernel name), and the path
/// the kernels took.
pub fn module(
    gpu: &Gpu,
    source: &KernelSource,
    gp: &GpuPlan,
) -> Result<(wgpu::ShaderModule, ShaderPath), RuntimeError> {
    let path = path_for(source, gpu.backend, gpu.features);
    let wgsl_module = |text: &str, what: &str| {
        gpu.checked(&format!("compiling {what}"), |d| {
            d.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(what),
                source: wgpu::ShaderSource::Wgsl(text.into()),
            })
        })
    };
    let module = match (source, path) {
        (KernelSource::Wgsl(text), _) => wgsl_module(text, "kernels.wgsl"),
        (KernelSource::Metal(msl), ShaderPath::MslPassthrough) => {
            let entry_points: Vec<wgpu::PassthroughShaderEntryPoint> = gp
                .kernels
                .values()
                .map(|g| wgpu::PassthroughShaderEntryPoint {
                    name: g.kernel.name.as_str().into(),
                    workgroup_size: (g.threads as u32, 1, 1),
                })
                .collect();
            let desc = wgpu::ShaderModuleDescriptorPassthrough {
                label: Some("kernels.metal"),
                entry_points: entry_points.into(),
                msl: Some(msl.as_str().into()),
                ..Default::default()
            };
            // SAFETY: kernels.metal is the Metal dialect's print of the same GPU plan the
            // session binds (the artifact's plan checker refuses an edited kernels file): every
            // kernel indexes only inside the buffers its launch binds, as on the WGSL path.
            gpu.checked("compiling kernels.metal (MSL passthrough)", |d| unsafe {
                d.create_shader_module_passthrough(desc)
            })
        }
        (KernelSource::Metal(_), _) => {
            let text = gemma4c_backends::wgsl::print(gp).map_err(RuntimeError::Other)?;
            wgsl_module(&text, "the Metal plan's kernels as WGSL")
        }
    }?;
    Ok((module, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metal_plans_pass_through_only_on_metal_adapters_that_allow_it() {
        let metal = KernelSource::Metal(String::new());
        let all = wgpu::Features::SUBGROUP | wgpu::Features::PASSTHROUGH_SHADERS;
        assert_eq!(path_for(&metal, wgpu::Backend::Metal, all), ShaderPath::MslPassthrough);
        assert_eq!(
            path_for(&metal, wgpu::Backend::Metal, wgpu::Features::SUBGROUP),
            ShaderPath::MetalAsWgsl
        );
        assert_eq!(path_for(&metal, wgpu::Backend::Vulkan, all), ShaderPath::MetalAsWgsl);
        let wgsl = KernelSource::Wgsl(String::new());
        assert_eq!(path_for(&wgsl, wgpu::Backend::Metal, all), ShaderPath::Wgsl);
    }
}
