//! `JitSession`: binds a plan's buffers to memory, JIT-compiles its kernels and
//! runs its programs, keeping KV caches and the position between calls.

use std::marker::PhantomData;
use std::time::Instant;

use gemma4c_backends::kernel::{kernel_plan, Access, KernelPlan, LaunchArg, Tiles};
use gemma4c_frontend::Model;
use gemma4c_passes::plan::{BufferKind, Plan, Program};

use super::engine::JitModule;
use super::memory::AlignedBuf;
use super::pool::{Job, Pool};
use super::{Kernel, MAX_ARGS};
use crate::error::RuntimeError;
use crate::plan_session::{check_model, check_plan, id_limit, Schedule};
use crate::session::Executor;

/// By default, launches touching fewer bytes than this run on the calling thread alone.
pub const PARALLEL_BYTES: usize = 96 * 1024;

#[derive(Debug, Clone)]
pub struct JitOptions {
    /// Threads in all (the caller included).
    pub threads: usize,
    /// Compile for this CPU instead of the host's (e.g. `x86-64` for portable code).
    pub cpu: Option<String>,
    /// Record the time of every launch (see `JitSession::profile`).
    pub profile: bool,
    /// Launches touching fewer bytes run on the calling thread alone
    /// (`GEMMA4C_PARALLEL_BYTES`; 0 splits every launch of more than one row).
    pub parallel_bytes: usize,
}

/// Most threads a session may use (each is an OS thread spinning on work).
pub const MAX_THREADS: usize = 1024;

/// Checks a thread count from a flag or GEMMA4C_THREADS.
pub fn check_threads(what: &str, n: usize) -> Result<usize, RuntimeError> {
    if n == 0 || n > MAX_THREADS {
        // `--threads 0`, but `GEMMA4C_THREADS=0`.
        let sep = if what.ends_with('=') { "" } else { " " };
        return Err(request(format!(
            "{what}{sep}{n}: expected a thread count in 1..={MAX_THREADS} (this machine has {} cores)",
            std::thread::available_parallelism().map_or(1, |n| n.get())
        )));
    }
    Ok(n)
}

impl JitOptions {
    /// All cores, or `GEMMA4C_THREADS`; a value that is not a thread count
    /// (`0`, `-1`, `abc`, `100000`) is an error.
    pub fn from_env() -> Result<JitOptions, RuntimeError> {
        let threads = match std::env::var("GEMMA4C_THREADS") {
            Ok(v) => {
                let n: usize = v.trim().parse().map_err(|_| {
                    request(format!(
                        "GEMMA4C_THREADS={v}: expected a thread count in 1..={MAX_THREADS}"
                    ))
                })?;
                check_threads("GEMMA4C_THREADS=", n)?
            }
            Err(_) => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let parallel_bytes = match std::env::var("GEMMA4C_PARALLEL_BYTES") {
            Ok(v) => v
                .trim()
                .parse()
                .map_err(|_| request(format!("GEMMA4C_PARALLEL_BYTES={v}: expected a number of bytes")))?,
            Err(_) => PARALLEL_BYTES,
        };
        Ok(JitOptions {
            threads,
            cpu: None,
            profile: false,
            parallel_bytes,
        })
    }
}

impl Default for JitOptions {
    /// `from_env`, or all cores when the environment holds no valid setting.
    fn default() -> Self {
        JitOptions::from_env().unwrap_or(JitOptions {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu: None,
            profile: false,
            parallel_bytes: PARALLEL_BYTES,
        })
    }
}

#[derive(Clone, Copy)]
struct Resolved {
    kernel: Kernel,
    rows: usize,
    block: usize,
    parallel: bool,
}

/// Time spent in one kind of kernel.
#[derive(Debug, Clone)]
pub struct StepProfile {
    pub kernel: String,
    /// Launches per call of the program.
    pub launches: usize,
    /// Calls of the program measured.
    pub calls: usize,
    pub seconds: f64,
    pub weight_bytes: usize,
}

pub struct JitSession<'m> {
    plan: Plan,
    kernels: KernelPlan,
    programs: Vec<Vec<Resolved>>,
    /// Smallest table indexed by token ids, per program: `(rows, key)`.
    id_limits: Vec<Option<(usize, String)>>,
    /// Per program, `(offset, floats)` of the hidden state the LM head reads:
    /// checked for NaN after each call, since the fast-math head kernel would
    /// turn NaN into finite logits.
    head_inputs: Vec<Option<(usize, usize)>>,
    module: JitModule,
    pool: Pool,
    arena: AlignedBuf,
    _scratch: AlignedBuf,
    state: Vec<AlignedBuf>,
    ids: AlignedBuf,
    pos: AlignedBuf,
    /// Copies of weights whose mapping is not aligned to their element size.
    _owned: Vec<AlignedBuf>,
    position: usize,
    profile: Option<Vec<Vec<f64>>>,
    /// Calls of each program (for the profile).
    calls: Vec<usize>,
    /// Weight pointers borrow the model's memory map.
    _model: PhantomData<&'m Model>,
}

fn request(m: String) -> RuntimeError {
    RuntimeError::Request(m)
}

impl<'m> JitSession<'m> {
    /// Binds `model`'s tensors (memory-mapped, not copied) to the plan, and
    /// JIT-compiles `kernels_ll` (the plan's `kernels.ll`).
    pub fn new(plan: Plan, model: &'m Model, kernels_ll: &str, opts: &JitOptions) -> Result<Self, RuntimeError> {
        check_plan(&plan)?;
        check_model(&plan, model)?;
        check_threads("threads", opts.threads)?;
        let mut owned = Vec::new();
        let mut weights = Vec::with_capacity(plan.weights.len());
        for w in &plan.weights {
            let bytes = model.checkpoint.bytes(&w.key)?;
            if (bytes.as_ptr() as usize).is_multiple_of(w.dtype.align()) {
                weights.push(bytes.as_ptr() as usize);
            } else {
                let b = AlignedBuf::from_bytes(bytes);
                weights.push(b.ptr() as usize);
                owned.push(b);
            }
        }
        let kernels = kernel_plan(&plan, Tiles::Local).map_err(RuntimeError::Other)?;
        let module =
            JitModule::compile(kernels_ll, opts.cpu.as_deref(), opts.threads.max(1)).map_err(RuntimeError::Other)?;
        let state: Vec<AlignedBuf> = plan.state.iter().map(|s| AlignedBuf::zeroed(s.bytes)).collect();
        let arena = AlignedBuf::zeroed(plan.programs.iter().map(|p| p.arena_bytes).max().unwrap_or(0));
        let scratch = AlignedBuf::zeroed(kernels.programs.iter().map(|p| p.scratch_bytes).max().unwrap_or(0));
        let ids = AlignedBuf::zeroed(4 * plan.programs.iter().map(|p| p.seq_len).max().unwrap_or(1));
        let pos = AlignedBuf::zeroed(4);
        let threads = opts.threads.max(1);

        let mut programs = Vec::new();
        let mut id_limits = Vec::new();
        let mut head_inputs = Vec::new();
        for (p, lp) in plan.programs.iter().zip(&kernels.programs) {
            let ptr = |a: &LaunchArg| -> Result<(usize, usize), RuntimeError> {
                Ok(match a {
                    LaunchArg::Scratch { offset, bytes } => (scratch.ptr() as usize + offset, *bytes),
                    LaunchArg::Buffer(id) => {
                        let bytes = p.buffers[*id].bytes;
                        let base = match &p.storage(*id).kind {
                            BufferKind::Weight { index } => weights[*index],
                            BufferKind::State { index } => state[*index].ptr() as usize,
                            BufferKind::Input { name } if name == "token_ids" => ids.ptr() as usize,
                            BufferKind::Input { name } if name == "position" => pos.ptr() as usize,
                            BufferKind::Activation { offset, .. } => arena.ptr() as usize + offset,
                            other => return Err(RuntimeError::Other(format!("cannot bind buffer {other:?}"))),
                        };
                        (base, bytes)
                    }
                })
            };
            let mut resolved = Vec::with_capacity(lp.launches.len());
            for l in &lp.launches {
                let k = &kernels.kernels[&l.kernel];
                if l.args.len() > MAX_ARGS {
                    return Err(RuntimeError::Other(format!(
                        "kernel {} takes too many buffers",
                        l.kernel
                    )));
                }
                let spans: Vec<(usize, usize)> = l.args.iter().map(&ptr).collect::<Result<_, _>>()?;
                // `noalias`: a buffer a kernel writes must not overlap any other argument.
                for (i, a) in spans.iter().enumerate() {
                    if k.params[i].access == Access::Read {
                        continue;
                    }
                    for (j, b) in spans.iter().enumerate() {
                        if i != j && a.0 < b.0 + b.1 && b.0 < a.0 + a.1 {
                            return Err(RuntimeError::Other(format!(
                                "step `{}`: kernel {} writes `{}`, which overlaps `{}`",
                                p.steps[l.step].name, l.kernel, k.params[i].name, k.params[j].name
                            )));
                        }
                    }
                }
                let mut args = [0usize; MAX_ARGS];
                for (slot, s) in args.iter_mut().zip(&spans) {
                    *slot = s.0;
                }
                let f = module.kernel(&l.kernel, l.args.len()).map_err(RuntimeError::Other)?;
                resolved.push(Resolved {
                    kernel: Kernel {
                        f,
                        args,
                        nargs: l.args.len(),
                    },
                    rows: l.rows,
                    block: l.rows.div_ceil(threads * 4).max(1),
                    parallel: threads > 1 && l.rows > 1 && l.bytes >= opts.parallel_bytes,
                });
            }
            programs.push(resolved);
            id_limits.push(id_limit(&plan, p));
            head_inputs.push(head_input(p));
        }
        let n_programs = programs.len();
        Ok(JitSession {
            profile: opts
                .profile
                .then(|| programs.iter().map(|p| vec![0.0; p.len()]).collect()),
            plan,
            kernels,
            programs,
            id_limits,
            head_inputs,
            module,
            pool: Pool::new(threads),
            arena,
            _scratch: scratch,
            state,
            ids,
            pos,
            _owned: owned,
            position: 0,
            calls: vec![0; n_programs],
            _model: PhantomData,
        })
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// Milliseconds spent optimizing and compiling the kernels.
    pub fn compile_ms(&self) -> f64 {
        self.module.compile_ms
    }

    pub fn cpu(&self) -> &str {
        &self.module.cpu
    }

    /// Weight bytes one call of `program` reads.
    pub fn weight_bytes(&self, program: &str) -> usize {
        self.kernels.program(program).map_or(0, |p| p.weight_bytes())
    }

    /// Forgets the context: zeroes the KV caches, position 0.
    pub fn reset(&mut self) {
        for s in &mut self.state {
            s.fill_zero();
        }
        self.position = 0;
        if let Some(p) = &mut self.profile {
            p.iter_mut().for_each(|v| v.iter_mut().for_each(|t| *t = 0.0));
        }
        self.calls.iter_mut().for_each(|c| *c = 0);
    }

    /// Time per kernel of `program` since the last reset (with `JitOptions::profile`).
    pub fn profile(&self, program: &str) -> Vec<StepProfile> {
        let (Some(prof), Some(i)) = (&self.profile, self.plan.programs.iter().position(|p| p.name == program)) else {
            return Vec::new();
        };
        let mut by_kernel: std::collections::BTreeMap<&str, StepProfile> = Default::default();
        for (l, &t) in self.kernels.programs[i].launches.iter().zip(&prof[i]) {
            let e = by_kernel.entry(&l.kernel).or_insert_with(|| StepProfile {
                kernel: l.kernel.clone(),
                launches: 0,
                calls: self.calls[i],
                seconds: 0.0,
                weight_bytes: 0,
            });
            e.launches += 1;
            e.seconds += t;
            e.weight_bytes += l.weight_bytes;
        }
        let mut v: Vec<StepProfile> = by_kernel.into_values().collect();
        v.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
        v
    }

    /// Runs `program` on `ids` at the current position; returns the logits.
    fn call(&mut self, program: usize, ids: &[u32]) -> Result<Vec<f32>, RuntimeError> {
        let vocab = self.plan.model.vocab_size;
        if let Some(&bad) = ids.iter().find(|&&t| t as usize >= vocab) {
            return Err(request(format!(
                "token id {bad} is out of range: the vocabulary has {vocab} tokens"
            )));
        }
        if let Some((rows, key)) = &self.id_limits[program] {
            if let Some(&bad) = ids.iter().find(|&&t| t as usize >= *rows) {
                return Err(request(format!(
                    "token id {bad} is out of range: `{key}` has {rows} rows"
                )));
            }
        }
        let p = &self.plan.programs[program];
        if ids.len() != p.seq_len {
            return Err(RuntimeError::Other(format!(
                "program `{}` takes {} tokens",
                p.name, p.seq_len
            )));
        }
        for (slot, &t) in self.ids.as_i32_mut(ids.len()).iter_mut().zip(ids) {
            *slot = t as i32;
        }
        self.pos.as_i32_mut(1)[0] = self.position as i32;
        for (i, r) in self.programs[program].iter().enumerate() {
            let start = self.profile.is_some().then(Instant::now);
            // SAFETY: arguments were bound to live buffers of the planned sizes in `new`.
            unsafe {
                if r.parallel {
                    self.pool.run(Job {
                        kernel: r.kernel,
                        rows: r.rows,
                        block: r.block,
                    });
                } else {
                    r.kernel.call(0, r.rows);
                }
            }
            if let (Some(start), Some(prof)) = (start, &mut self.profile) {
                prof[program][i] += start.elapsed().as_secs_f64();
            }
        }
        if let Some((offset, n)) = self.head_inputs[program] {
            let bad = self.arena.as_f32(offset, n).iter().filter(|x| !x.is_finite()).count();
            if bad > 0 {
                return Err(request(format!(
                    "the logits are NaN: {bad} of {n} values of the final hidden state are NaN or infinite \
                     (the checkpoint's weights hold NaN or infinite values)"
                )));
            }
        }
        self.position += ids.len();
        self.calls[program] += 1;
        let p = &self.plan.programs[program];
        let logits = p
            .output("logits")
            .ok_or_else(|| RuntimeError::Other(format!("program `{}` has no logits output", p.name)))?;
        let BufferKind::Activation { offset, .. } = p.storage(logits).kind else {
            return Err(RuntimeError::Other("logits are not an arena buffer".into()));
        };
        let n: usize = p.buffers[logits].shape.iter().product();
        let v = self.arena.as_f32(offset, n);
        Ok(v[n - vocab..].to_vec())
    }
}

/// The arena span of the hidden state read by the step that writes the logits.
fn head_input(p: &Program) -> Option<(usize, usize)> {
    let logits = p.output("logits")?;
    let step = p.steps.iter().find(|s| s.outputs.contains(&logits))?;
    let x = *step.inputs.first()?;
    match p.storage(x).kind {
        BufferKind::Activation { offset, .. } if p.buffers[x].dtype == gemma4c_ir::DType::F32 => {
            Some((offset, p.buffers[x].shape.iter().product()))
        }
        _ => None,
    }
}

impl Executor for JitSession<'_> {
    fn forward(&mut self, ids: &[u32]) -> Result<Vec<f32>, RuntimeError> {
        let schedule = Schedule::of(&self.plan)?;
        schedule.feed(self.position, ids, |program, chunk| self.call(program, chunk))
    }

    fn position(&self) -> usize {
        self.position
    }

    fn reset(&mut self) {
        JitSession::reset(self);
    }
}
