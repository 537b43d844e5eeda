//! Finding a GPU through wgpu: the adapter, a device with subgroup operations, and errors that
//! say what is missing instead of panicking.

use crate::error::RuntimeError;

/// A device and its queue, with the adapter's description.
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    /// "llvmpipe (Vulkan)" and the like.
    pub adapter: String,
    pub limits: wgpu::Limits,
    pub backend: wgpu::Backend,
    /// The features the device was opened with.
    pub features: wgpu::Features,
}

/// The error when no adapter can run the kernels (no Vulkan/Metal/DX12 driver, or no
/// subgroup operations): says how to get one.
fn no_adapter(why: &str) -> RuntimeError {
    RuntimeError::Other(format!(
        "no GPU adapter for the wgpu runtime: {why} (on Debian, `apt-get install mesa-vulkan-drivers libvulkan1` \
         provides lavapipe, a Vulkan driver on the CPU; scripts/setup.sh installs it)"
    ))
}

impl Gpu {
    /// The first adapter wgpu offers (set `WGPU_ADAPTER_NAME` / `WGPU_BACKEND` to choose).
    pub fn new() -> Result<Gpu, RuntimeError> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            ..Default::default()
        }))
        .map_err(|e| no_adapter(&e.to_string()))?;
        let info = adapter.get_info();
        let name = format!("{} ({:?})", info.name, info.backend);
        if !adapter.features().contains(wgpu::Features::SUBGROUP) {
            return Err(no_adapter(&format!("adapter {name} has no subgroup operations")));
        }
        let limits = adapter.limits();
        // Metal plans hand kernels.metal to Metal unchanged where wgpu allows it.
        let passthrough = wgpu::Features::PASSTHROUGH_SHADERS;
        let features = if info.backend == wgpu::Backend::Metal && adapter.features().contains(passthrough) {
            wgpu::Features::SUBGROUP | passthrough
        } else {
            wgpu::Features::SUBGROUP
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("gemma4c"),
            required_features: features,
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| RuntimeError::Other(format!("opening the GPU {name}: {e}")))?;
        Ok(Gpu {
            device,
            queue,
            adapter: name,
            limits,
            backend: info.backend,
            features,
        })
    }

    /// Runs `f` and turns any validation error it raised into a `RuntimeError` naming `what`.
    pub fn checked<T>(&self, what: &str, f: impl FnOnce(&wgpu::Device) -> T) -> Result<T, RuntimeError> {
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let out = f(&self.device);
        match pollster::block_on(scope.pop()) {
            None => Ok(out),
            Some(e) => Err(RuntimeError::Other(format!("{what}: {e}"))),
        }
    }

    /// A bind group giving `buffers` to a kernel's bindings in order (binding `i` = buffer
    /// `i`, the order every kernel lists its parameters in).
    pub fn bind_buffers(
        &self,
        what: &str,
        label: Option<&str>,
        layout: &wgpu::BindGroupLayout,
        buffers: &[&wgpu::Buffer],
    ) -> Result<wgpu::BindGroup, RuntimeError> {
        let entries: Vec<wgpu::BindGroupEntry> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            })
            .collect();
        self.checked(what, |d| {
            d.create_bind_group(&wgpu::BindGroupDescriptor {
                label,
                layout,
                entries: &entries,
            })
        })
    }
}
