//! One GPU kernel run on its own (kernel-level tests of the GPU schedule): the kernel printed
//! as WGSL, its parameters bound to buffers made from bytes, one dispatch of
//! `GpuKernel::workgroups()` workgroups, and every buffer read back.

use gemma4c_backends::gpu::GpuKernel;
use gemma4c_backends::wgsl;

use super::device::Gpu;
use crate::error::RuntimeError;

/// Runs `k` with parameter `i` bound to a buffer holding `buffers[i]` (padded to 4 bytes);
/// returns each buffer's contents afterwards (same lengths as given).
pub fn run_kernel(gpu: &Gpu, k: &GpuKernel, buffers: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, RuntimeError> {
    if buffers.len() != k.kernel.params.len() {
        return Err(RuntimeError::Other(format!(
            "kernel {} takes {} buffers, {} given",
            k.kernel.name,
            k.kernel.params.len(),
            buffers.len()
        )));
    }
    let source = wgsl::print_kernels([k]);
    let dev = &gpu.device;
    let module = gpu.checked("compiling the kernel's WGSL", |d| {
        d.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(&k.kernel.name),
            source: wgpu::ShaderSource::Wgsl(source.as_str().into()),
        })
    })?;
    let pipeline = gpu.checked(&format!("building kernel {}", k.kernel.name), |d| {
        d.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&k.kernel.name),
            layout: None,
            module: &module,
            entry_point: Some(&k.kernel.name),
            compilation_options: Default::default(),
            cache: None,
        })
    })?;
    let padded = |b: &Vec<u8>| (b.len().max(4).div_ceil(4) * 4) as u64;
    let bufs: Vec<wgpu::Buffer> = buffers
        .iter()
        .map(|b| {
            let buf = dev.create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size: padded(b),
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            let mut bytes = b.clone();
            bytes.resize(padded(b) as usize, 0);
            gpu.queue.write_buffer(&buf, 0, &bytes);
            buf
        })
        .collect();
    // Bindings the shader never uses are absent from the derived layout.
    let layout = pipeline.get_bind_group_layout(0);
    let bound: Vec<&wgpu::Buffer> = bufs.iter().collect();
    let bind_group = gpu.bind_buffers("binding the kernel's buffers", None, &layout, &bound)?;
    let readback: Vec<wgpu::Buffer> = buffers
        .iter()
        .map(|b| {
            dev.create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size: padded(b),
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        })
        .collect();
    let groups = k.workgroups();
    let max_dim = gpu.limits.max_compute_workgroups_per_dimension as usize;
    let (x, y) = (groups.clamp(1, max_dim), groups.div_ceil(max_dim).max(1));
    let mut enc = dev.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(x as u32, y as u32, 1);
    }
    for ((b, r), given) in bufs.iter().zip(&readback).zip(buffers) {
        enc.copy_buffer_to_buffer(b, 0, r, 0, padded(given));
    }
    gpu.queue.submit([enc.finish()]);
    let mut out = Vec::with_capacity(buffers.len());
    for (r, given) in readback.iter().zip(buffers) {
        let slice = r.slice(..);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |res| {
            let _ = tx.send(res);
        });
        dev.poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| RuntimeError::Other(format!("waiting for the GPU: {e}")))?;
        rx.recv()
            .map_err(|_| RuntimeError::Other("the GPU readback was dropped".into()))?
            .map_err(|e| RuntimeError::Other(format!("reading the results back: {e}")))?;
        let view = slice
            .get_mapped_range()
            .map_err(|e| RuntimeError::Other(format!("reading the results back: {e}")))?;
        out.push(view[..given.len()].to_vec());
        drop(view);
        r.unmap();
    }
    Ok(out)
}
