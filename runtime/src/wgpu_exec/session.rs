//! `WgpuSession`: a plan's GPU kernels (kernels.wgsl) on a wgpu device. Mirrors `JitSession`:
//! weights are uploaded once, every activation and scratch area is a device buffer, KV caches
//! stay on the device between calls, and a call encodes the program's launches in one compute
//! pass (wgpu orders dispatches of a pass) and reads back only the last row of logits.

use std::collections::BTreeMap;

use gemma4c_backends::gpu::argmax::SAMPLED_VALUES;
use gemma4c_backends::kernel::Access;
use gemma4c_frontend::Model;
use gemma4c_passes::plan::Plan;

use super::device::Gpu;
use super::shader::{self, KernelSource, ShaderPath};
use crate::error::RuntimeError;
use crate::gpu_executor::GpuCall;
use crate::gpu_launch::{check_call, LaunchPlan, Slot};
use crate::plan_session::{check_model, id_limit};

struct Dispatch {
    pipeline: usize,
    bind_group: wgpu::BindGroup,
    groups: (u32, u32),
}

struct Program {
    dispatches: Vec<Dispatch>,
    /// The greedy argmax of the last row of logits into `sampled`.
    argmax: Dispatch,
    /// The logits buffer and the byte offset of the last row.
    logits: (wgpu::Buffer, u64),
}

pub struct WgpuSession {
    plan: Plan,
    gpu: Gpu,
    launches: LaunchPlan,
    pipelines: Vec<wgpu::ComputePipeline>,
    programs: Vec<Program>,
    id_limits: Vec<Option<(usize, String)>>,
    state: Vec<wgpu::Buffer>,
    ids: wgpu::Buffer,
    pos: wgpu::Buffer,
    readback: wgpu::Buffer,
    sampled: wgpu::Buffer,
    position: usize,
    shader_path: ShaderPath,
}

fn storage_buffer(dev: &wgpu::Device, label: &str, bytes: usize, extra: wgpu::BufferUsages) -> wgpu::Buffer {
    dev.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: (bytes.max(4).div_ceil(4) * 4) as u64,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | extra,
        mapped_at_creation: false,
    })
}

impl WgpuSession {
    /// Uploads `model`'s weights for `plan` and builds the pipelines of its kernels
    /// (kernels.wgsl, or kernels.metal: `shader.rs`) on the first GPU adapter.
    pub fn new(plan: Plan, model: &Model, kernels: KernelSource) -> Result<WgpuSession, RuntimeError> {
        check_model(&plan, model)?;
        let launches = LaunchPlan::new(&plan)?;
        let gpu = Gpu::new()?;
        let dev = &gpu.device;
        let max_binding = gpu.limits.max_storage_buffer_binding_size as usize;
        let fits = |what: &str, bytes: usize| -> Result<(), RuntimeError> {
            if bytes > max_binding || bytes >= 1 << 31 {
                return Err(RuntimeError::Other(format!(
                    "{what} is {bytes} bytes: more than a storage buffer of {} holds ({max_binding} bytes)",
                    gpu.adapter
                )));
            }
            Ok(())
        };

        let mut weights = Vec::with_capacity(plan.weights.len());
        for w in &plan.weights {
            let bytes = model.checkpoint.bytes(&w.key)?;
            fits(&format!("weight `{}`", w.key), bytes.len())?;
            let mut padded = bytes.to_vec();
            padded.resize(bytes.len().max(4).div_ceil(4) * 4, 0);
            let buf = storage_buffer(dev, &w.key, padded.len(), wgpu::BufferUsages::empty());
            gpu.queue.write_buffer(&buf, 0, &padded);
            weights.push(buf);
        }
        let state: Vec<wgpu::Buffer> = plan
            .state
            .iter()
            .map(|s| {
                fits(&format!("state `{}`", s.name), s.bytes)?;
                Ok(storage_buffer(dev, &s.name, s.bytes, wgpu::BufferUsages::empty()))
            })
            .collect::<Result<_, RuntimeError>>()?;
        let max_seq = plan.programs.iter().map(|p| p.seq_len).max().unwrap_or(1);
        let ids = storage_buffer(dev, "token_ids", 4 * max_seq, wgpu::BufferUsages::empty());
        let pos = storage_buffer(dev, "position", 4, wgpu::BufferUsages::empty());
        let vocab = plan.model.vocab_size;
        let readback = dev.create_buffer(&wgpu::BufferDescriptor {
            label: Some("logits readback"),
            size: (4 * vocab) as u64,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });

        let (module, shader_path) = shader::module(&gpu, &kernels, &launches.gpu)?;
        // One pipeline per kernel, with an explicit layout: binding i = parameter i.
        let mut pipelines = Vec::new();
        let mut layouts = Vec::new();
        let mut index = BTreeMap::new();
        for (name, g) in &launches.gpu.kernels {
            let entries: Vec<wgpu::BindGroupLayoutEntry> = g
                .kernel
                .params
                .iter()
                .enumerate()
                .map(|(i, p)| wgpu::BindGroupLayoutEntry {
                    binding: i as u32,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Storage {
                            read_only: p.access == Access::Read,
                        },
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                })
                .collect();
            let (pipeline, layout) = gpu.checked(&format!("building kernel {name} of kernels.wgsl"), |d| {
                let bgl = d.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                    label: Some(name),
                    entries: &entries,
                });
                let pl = d.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                    label: Some(name),
                    bind_group_layouts: &[Some(&bgl)],
                    immediate_size: 0,
                });
                let pipeline = d.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(name),
                    layout: Some(&pl),
                    module: &module,
                    entry_point: Some(name),
                    compilation_options: Default::default(),
                    cache: None,
                });
                (pipeline, bgl)
            })?;
            index.insert(name.clone(), pipelines.len());
            pipelines.push(pipeline);
            layouts.push(layout);
        }

        let max_dim = gpu.limits.max_compute_workgroups_per_dimension as usize;
        let sampled = storage_buffer(dev, "sampled", 4 * SAMPLED_VALUES, wgpu::BufferUsages::COPY_SRC);
        let mut programs = Vec::new();
        let mut id_limits = Vec::new();
        for (p, lp) in plan.programs.iter().zip(&launches.programs) {
            // One device buffer per activation storage and per scratch area of the program.
            let mut acts: BTreeMap<usize, wgpu::Buffer> = BTreeMap::new();
            let mut scratch: BTreeMap<(usize, usize), wgpu::Buffer> = BTreeMap::new();
            for &(id, bytes) in &lp.activations {
                fits(&format!("activation {id} of program `{}`", p.name), bytes)?;
                acts.insert(
                    id,
                    storage_buffer(dev, "activation", bytes, wgpu::BufferUsages::COPY_SRC),
                );
            }
            for &(offset, bytes) in &lp.scratch {
                fits(&format!("scratch of program `{}`", p.name), bytes)?;
                scratch.insert(
                    (offset, bytes),
                    storage_buffer(dev, "scratch", bytes, wgpu::BufferUsages::empty()),
                );
            }
            let mut dispatches = Vec::with_capacity(lp.launches.len() + 1);
            for l in lp.launches.iter().chain([&lp.argmax]) {
                let bufs: Vec<&wgpu::Buffer> = l
                    .args
                    .iter()
                    .map(|a| match *a {
                        Slot::Weight(i) => &weights[i],
                        Slot::State(i) => &state[i],
                        Slot::TokenIds => &ids,
                        Slot::Position => &pos,
                        Slot::Activation(id) => &acts[&id],
                        Slot::Scratch { offset, bytes } => &scratch[&(offset, bytes)],
                        Slot::Sampled => &sampled,
                    })
                    .collect();
                let pipeline = index[&l.kernel];
                let bind_group = gpu.bind_buffers(
                    &format!("binding the buffers of step `{}`", l.step),
                    Some(&l.kernel),
                    &layouts[pipeline],
                    &bufs,
                )?;
                let n = l.workgroups;
                let x = n.clamp(1, max_dim);
                let y = n.div_ceil(x).max(1);
                if y > max_dim {
                    return Err(RuntimeError::Other(format!(
                        "kernel {} needs {n} workgroups, more than {} can dispatch",
                        l.kernel, gpu.adapter
                    )));
                }
                dispatches.push(Dispatch {
                    pipeline,
                    bind_group,
                    groups: (x as u32, y as u32),
                });
            }
            let argmax = dispatches.pop().expect("the argmax dispatch");
            let buf = acts
                .remove(&lp.logits.0)
                .ok_or_else(|| RuntimeError::Other("logits are not an activation".into()))?;
            // Buffers bound in bind groups stay alive through them.
            programs.push(Program {
                dispatches,
                argmax,
                logits: (buf, lp.logits.1 as u64),
            });
            id_limits.push(id_limit(&plan, p));
        }
        Ok(WgpuSession {
            plan,
            gpu,
            launches,
            pipelines,
            programs,
            id_limits,
            state,
            ids,
            pos,
            readback,
            sampled,
            position: 0,
            shader_path,
        })
    }

    /// The adapter the kernels run on.
    pub fn adapter(&self) -> &str {
        &self.gpu.adapter
    }

    /// How the kernels reached the device.
    pub fn shader_path(&self) -> ShaderPath {
        self.shader_path
    }

    /// Device-to-device copy bandwidth in GB/s (bytes read + written per second) over
    /// `bytes`-sized buffers (capped at the adapter's buffer limit), best of `reps`: the
    /// roofline `bench` divides by. Each copy is its own submission, timed to completion.
    pub fn copy_bandwidth(&self, bytes: usize, reps: usize) -> Result<f64, RuntimeError> {
        let bytes = (bytes.min(self.gpu.limits.max_buffer_size as usize) / 4 * 4).max(4) as u64;
        let dev = &self.gpu.device;
        let buf = |usage| {
            dev.create_buffer(&wgpu::BufferDescriptor {
                label: Some("copy bandwidth"),
                size: bytes,
                usage,
                mapped_at_creation: false,
            })
        };
        let (src, dst) = (buf(wgpu::BufferUsages::COPY_SRC), buf(wgpu::BufferUsages::COPY_DST));
        let wait = || {
            dev.poll(wgpu::PollType::wait_indefinitely())
                .map_err(|e| RuntimeError::Other(format!("waiting for the GPU: {e}")))
        };
        let mut best = f64::INFINITY;
        // One untimed copy first: the buffers' first touch.
        for i in 0..=reps.max(1) {
            let mut enc = dev.create_command_encoder(&Default::default());
            enc.copy_buffer_to_buffer(&src, 0, &dst, 0, bytes);
            wait()?;
            let t = std::time::Instant::now();
            self.gpu.queue.submit([enc.finish()]);
            wait()?;
            if i > 0 {
                best = best.min(t.elapsed().as_secs_f64());
            }
        }
        Ok(2.0 * bytes as f64 / best / 1e9)
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Weight bytes one call of `program` reads.
    pub fn weight_bytes(&self, program: &str) -> usize {
        self.launches.weight_bytes(program)
    }
}

impl GpuCall for WgpuSession {
    fn plan(&self) -> &Plan {
        &self.plan
    }

    fn position(&self) -> usize {
        self.position
    }

    /// Forgets the context: zeroes the KV caches, position 0.
    fn clear(&mut self) {
        let mut enc = self.gpu.device.create_command_encoder(&Default::default());
        for s in &self.state {
            enc.clear_buffer(s, 0, None);
        }
        self.gpu.queue.submit([enc.finish()]);
        self.position = 0;
    }

    fn call(&mut self, program: usize, ids: &[u32], greedy: bool) -> Result<Vec<f32>, RuntimeError> {
        check_call(&self.plan, program, ids, &self.id_limits[program])?;
        let id_bytes: Vec<u8> = ids.iter().flat_map(|&t| (t as i32).to_le_bytes()).collect();
        self.gpu.queue.write_buffer(&self.ids, 0, &id_bytes);
        self.gpu
            .queue
            .write_buffer(&self.pos, 0, &(self.position as i32).to_le_bytes());
        let prog = &self.programs[program];
        let mut enc = self.gpu.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            let argmax = greedy.then_some(&prog.argmax);
            for d in prog.dispatches.iter().chain(argmax) {
                pass.set_pipeline(&self.pipelines[d.pipeline]);
                pass.set_bind_group(0, &d.bind_group, &[]);
                pass.dispatch_workgroups(d.groups.0, d.groups.1, 1);
            }
        }
        let bytes = if greedy {
            enc.copy_buffer_to_buffer(&self.sampled, 0, &self.readback, 0, (4 * SAMPLED_VALUES) as u64);
            4 * SAMPLED_VALUES
        } else {
            let (logits, offset) = &prog.logits;
            let bytes = 4 * self.plan.model.vocab_size;
            enc.copy_buffer_to_buffer(logits, *offset, &self.readback, 0, bytes as u64);
            bytes
        };
        self.gpu.queue.submit([enc.finish()]);
        let slice = self.readback.slice(..bytes as u64);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.gpu
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| RuntimeError::Other(format!("waiting for the GPU: {e}")))?;
        rx.recv()
            .map_err(|_| RuntimeError::Other("the GPU readback was dropped".into()))?
            .map_err(|e| RuntimeError::Other(format!("reading the results back: {e}")))?;
        let out = {
            let view = slice
                .get_mapped_range()
                .map_err(|e| RuntimeError::Other(format!("reading the results back: {e}")))?;
            view.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        };
        self.readback.unmap();
        self.position += ids.len();
        Ok(out)
    }
}
