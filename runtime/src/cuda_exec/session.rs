//! `CudaSession`: a CUDA plan's kernels (kernels.ptx, loaded with cuModuleLoadData) on an
//! NVIDIA GPU. Weights are uploaded once; KV caches, activations and scratch areas are device
//! buffers; a call writes the token ids and the position (a few bytes), replays the program's
//! launches — the decode program as a CUDA graph captured on its first call, since its
//! launches and buffers never change — and reads back the sampled id (greedy) or the last row
//! of logits. The launch sequence is `crate::gpu_launch`'s, as for the wgpu executor.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaGraph, CudaSlice, CudaStream, DevicePtr, LaunchConfig, PushKernelArg,
};
use cudarc::nvrtc::Ptx;
use gemma4c_backends::gpu::argmax::SAMPLED_VALUES;
use gemma4c_frontend::Model;
use gemma4c_passes::plan::Plan;

use super::{cuda_err, driver_present, no_driver};
use crate::error::RuntimeError;
use crate::gpu_executor::GpuCall;
use crate::gpu_launch::{check_call, Launch, LaunchPlan, Slot};
use crate::plan_session::{check_model, id_limit};

/// A launch bound to device addresses.
struct Bound {
    function: usize,
    ptrs: Vec<u64>,
    config: LaunchConfig,
}

struct Program {
    launches: Vec<Bound>,
    argmax: Bound,
    /// Device address of the last row of logits.
    logits: u64,
    /// The captured launches (decode only), made on the first call.
    graph: Option<CudaGraph>,
    capture: bool,
    _buffers: Vec<CudaSlice<u8>>,
}

/// What `bench` reports about the device.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    pub name: String,
    pub compute_capability: (i32, i32),
    pub memory_bytes: usize,
}

pub struct CudaSession {
    plan: Plan,
    stream: Arc<CudaStream>,
    functions: Vec<CudaFunction>,
    programs: Vec<Program>,
    launches: LaunchPlan,
    id_limits: Vec<Option<(usize, String)>>,
    _weights: Vec<CudaSlice<u8>>,
    state: Vec<CudaSlice<u8>>,
    ids: CudaSlice<u8>,
    pos: CudaSlice<u8>,
    sampled: CudaSlice<u8>,
    info: DeviceInfo,
    position: usize,
}

fn addr(s: &CudaSlice<u8>, stream: &Arc<CudaStream>) -> u64 {
    s.device_ptr(stream).0
}

impl CudaSession {
    /// Uploads `model`'s weights for `plan` and loads `ptx` (the plan's kernels.ptx) on GPU 0.
    pub fn new(plan: Plan, model: &Model, ptx: &str) -> Result<CudaSession, RuntimeError> {
        check_model(&plan, model)?;
        let launches = LaunchPlan::new(&plan)?;
        if !driver_present() {
            return Err(no_driver());
        }
        let ctx = CudaContext::new(0).map_err(cuda_err("opening GPU 0"))?;
        // One stream, in order: no per-buffer events (they would also break graph capture).
        // SAFETY: called before any buffer exists; every launch goes to `stream`.
        unsafe { ctx.disable_event_tracking() };
        let info = DeviceInfo {
            name: ctx.name().map_err(cuda_err("device name"))?,
            compute_capability: ctx.compute_capability().map_err(cuda_err("compute capability"))?,
            memory_bytes: ctx.total_mem().map_err(cuda_err("device memory"))?,
        };
        // A stream of our own: the legacy default stream cannot be captured into a graph.
        let stream = ctx.new_stream().map_err(cuda_err("creating a stream"))?;
        let module = ctx.load_module(Ptx::from_src(ptx)).map_err(cuda_err(
            "loading kernels.ptx (cuModuleLoadData; PTX 8.8 needs driver R575 or newer)",
        ))?;
        let mut index = BTreeMap::new();
        let mut functions = Vec::new();
        for name in launches.gpu.kernels.keys() {
            let f = module
                .load_function(name)
                .map_err(|e| RuntimeError::Other(format!("CUDA: kernel {name} is not in kernels.ptx: {e}")))?;
            index.insert(name.clone(), functions.len());
            functions.push(f);
        }
        let alloc = |bytes: usize, what: &str| -> Result<CudaSlice<u8>, RuntimeError> {
            stream
                .alloc_zeros::<u8>(bytes.max(4).div_ceil(4) * 4)
                .map_err(|e| RuntimeError::Other(format!("CUDA: allocating {bytes} bytes for {what}: {e}")))
        };
        let mut weights = Vec::with_capacity(plan.weights.len());
        for w in &plan.weights {
            let bytes = model.checkpoint.bytes(&w.key)?;
            let mut buf = alloc(bytes.len(), &format!("weight `{}`", w.key))?;
            stream
                .memcpy_htod(bytes, &mut buf)
                .map_err(cuda_err("uploading the weights"))?;
            weights.push(buf);
        }
        let state = plan
            .state
            .iter()
            .map(|s| alloc(s.bytes, &format!("state `{}`", s.name)))
            .collect::<Result<Vec<_>, _>>()?;
        let max_seq = plan.programs.iter().map(|p| p.seq_len).max().unwrap_or(1);
        let ids = alloc(4 * max_seq, "token ids")?;
        let pos = alloc(4, "position")?;
        let sampled = alloc(4 * SAMPLED_VALUES, "the sampled id")?;

        let mut programs = Vec::new();
        let mut id_limits = Vec::new();
        for (p, lp) in plan.programs.iter().zip(&launches.programs) {
            let mut acts = BTreeMap::new();
            let mut scratch = BTreeMap::new();
            let mut buffers = Vec::new();
            for &(id, bytes) in &lp.activations {
                let b = alloc(bytes, &format!("activation {id} of program `{}`", p.name))?;
                acts.insert(id, addr(&b, &stream));
                buffers.push(b);
            }
            for &(offset, bytes) in &lp.scratch {
                let b = alloc(bytes, &format!("scratch of program `{}`", p.name))?;
                scratch.insert((offset, bytes), addr(&b, &stream));
                buffers.push(b);
            }
            let bind = |l: &Launch| -> Bound {
                let ptrs = l
                    .args
                    .iter()
                    .map(|a| match *a {
                        Slot::Weight(i) => addr(&weights[i], &stream),
                        Slot::State(i) => addr(&state[i], &stream),
                        Slot::TokenIds => addr(&ids, &stream),
                        Slot::Position => addr(&pos, &stream),
                        Slot::Activation(id) => acts[&id],
                        Slot::Scratch { offset, bytes } => scratch[&(offset, bytes)],
                        Slot::Sampled => addr(&sampled, &stream),
                    })
                    .collect();
                Bound {
                    function: index[&l.kernel],
                    ptrs,
                    config: LaunchConfig {
                        grid_dim: (l.workgroups as u32, 1, 1),
                        block_dim: (l.threads as u32, 1, 1),
                        shared_mem_bytes: 0,
                    },
                }
            };
            for l in lp.launches.iter().chain([&lp.argmax]) {
                if l.workgroups == 0 || l.workgroups > i32::MAX as usize {
                    return Err(RuntimeError::Other(format!(
                        "kernel {} needs {} blocks",
                        l.kernel, l.workgroups
                    )));
                }
            }
            programs.push(Program {
                launches: lp.launches.iter().map(bind).collect(),
                argmax: bind(&lp.argmax),
                logits: acts[&lp.logits.0] + lp.logits.1 as u64,
                graph: None,
                capture: p.seq_len == 1,
                _buffers: buffers,
            });
            id_limits.push(id_limit(&plan, p));
        }
        stream.synchronize().map_err(cuda_err("uploading the weights"))?;
        Ok(CudaSession {
            plan,
            stream,
            functions,
            programs,
            launches,
            id_limits,
            _weights: weights,
            state,
            ids,
            pos,
            sampled,
            info,
            position: 0,
        })
    }

    pub fn device(&self) -> &DeviceInfo {
        &self.info
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Weight bytes one call of `program` reads.
    pub fn weight_bytes(&self, program: &str) -> usize {
        self.launches.weight_bytes(program)
    }

    fn launch(&self, b: &Bound) -> Result<(), RuntimeError> {
        let mut builder = self.stream.launch_builder(&self.functions[b.function]);
        for p in &b.ptrs {
            builder.arg(p);
        }
        // SAFETY: the arguments are the device buffers of the kernel's parameters, in order,
        // each as large as the plan says the kernel indexes (checked by the plan checker).
        unsafe { builder.launch(b.config) }
            .map(|_| ())
            .map_err(cuda_err("launching a kernel"))
    }

    /// Enqueues the launches of `program`: its graph if it has one (capturing it first).
    fn enqueue(&mut self, program: usize) -> Result<(), RuntimeError> {
        if self.programs[program].graph.is_none() && self.programs[program].capture {
            self.stream
                .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
                .map_err(cuda_err("capturing the decode step"))?;
            let launched: Result<(), RuntimeError> =
                self.programs[program].launches.iter().try_for_each(|b| self.launch(b));
            let graph = self
                .stream
                .end_capture(CUgraphInstantiate_flags(0))
                .map_err(cuda_err("capturing the decode step"))?;
            launched?;
            self.programs[program].graph = graph;
            self.programs[program].capture = false;
        }
        match &self.programs[program].graph {
            Some(g) => g.launch().map_err(cuda_err("replaying the decode step")),
            None => self.programs[program].launches.iter().try_for_each(|b| self.launch(b)),
        }
    }

    /// Device-to-device copy bandwidth in GB/s (bytes read + written per second) over
    /// `bytes`-sized buffers, best of `reps`: the roofline `bench` divides by.
    pub fn copy_bandwidth(&self, bytes: usize, reps: usize) -> Result<f64, RuntimeError> {
        let src = self.stream.alloc_zeros::<u8>(bytes).map_err(cuda_err("allocating"))?;
        let mut dst = self.stream.alloc_zeros::<u8>(bytes).map_err(cuda_err("allocating"))?;
        let mut best = f64::INFINITY;
        for _ in 0..reps.max(1) {
            self.stream.synchronize().map_err(cuda_err("copying"))?;
            let t = Instant::now();
            self.stream.memcpy_dtod(&src, &mut dst).map_err(cuda_err("copying"))?;
            self.stream.synchronize().map_err(cuda_err("copying"))?;
            best = best.min(t.elapsed().as_secs_f64());
        }
        Ok(2.0 * bytes as f64 / best / 1e9)
    }
}

impl GpuCall for CudaSession {
    fn plan(&self) -> &Plan {
        &self.plan
    }

    fn position(&self) -> usize {
        self.position
    }

    fn call(&mut self, program: usize, ids: &[u32], greedy: bool) -> Result<Vec<f32>, RuntimeError> {
        check_call(&self.plan, program, ids, &self.id_limits[program])?;
        let id_bytes: Vec<u8> = ids.iter().flat_map(|&t| (t as i32).to_le_bytes()).collect();
        let pos_bytes = (self.position as i32).to_le_bytes();
        self.stream
            .memcpy_htod(&id_bytes[..], &mut self.ids)
            .map_err(cuda_err("writing the token ids"))?;
        self.stream
            .memcpy_htod(&pos_bytes[..], &mut self.pos)
            .map_err(cuda_err("writing the position"))?;
        self.enqueue(program)?;
        let n = if greedy {
            self.launch(&self.programs[program].argmax)?;
            SAMPLED_VALUES
        } else {
            self.plan.model.vocab_size
        };
        let mut host = vec![0u8; 4 * n];
        let src = if greedy {
            addr(&self.sampled, &self.stream)
        } else {
            self.programs[program].logits
        };
        // SAFETY: `src` is a device buffer of at least `4 * n` bytes (the sampled pair, or
        // the last logits row inside the logits activation); the copy is synchronous.
        unsafe { cudarc::driver::result::memcpy_dtoh_async(&mut host, src, self.stream.cu_stream()) }
            .map_err(cuda_err("reading the results back"))?;
        self.stream.synchronize().map_err(cuda_err("running the kernels"))?;
        self.position += ids.len();
        Ok(host
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }

    fn clear(&mut self) {
        for s in &mut self.state {
            let _ = self.stream.memset_zeros(s);
        }
        let _ = self.stream.synchronize();
        self.position = 0;
    }
}
