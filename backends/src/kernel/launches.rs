//! Plan → kernels and launches. Every plan step becomes one or more launches
//! (multi-phase ops such as `MoeExperts` and `LogitsHead` use a scratch buffer
//! between phases); identical kernels are shared by name. The per-op lowering
//! lives with the op family's kernel builders (`ops/*.rs`, `launches`); this
//! file holds what they share (`StepCx`) and the exhaustive dispatch.
//!
//! Argument order is the kernel's parameter order: for most steps the step's
//! inputs then its outputs; for cache updates (in place) the inputs alone, the
//! cache first.

use std::collections::BTreeMap;

use gemma4c_ir::{DType, Op};
use gemma4c_passes::plan::{BufferKind, Plan, Program, Step};

use super::ops;
use super::{Elem, Kernel, Tiles};

/// What a kernel parameter is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaunchArg {
    /// A plan buffer of the program (views resolve to their storage).
    Buffer(usize),
    /// `bytes` at `offset` of the program's scratch area.
    Scratch { offset: usize, bytes: usize },
}

#[derive(Debug, Clone, PartialEq)]
pub struct KernelLaunch {
    pub kernel: String,
    pub args: Vec<LaunchArg>,
    /// Grid rows (the kernel's `rows`).
    pub rows: usize,
    /// Index of the plan step.
    pub step: usize,
    /// Weight bytes this launch reads (for bandwidth accounting).
    pub weight_bytes: usize,
    /// Bytes it touches in all (a scheduling hint: small launches stay on one thread).
    pub bytes: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProgramLaunches {
    pub name: String,
    pub launches: Vec<KernelLaunch>,
    /// Scratch bytes the program needs (phases of one step share it; steps reuse it).
    pub scratch_bytes: usize,
}

impl ProgramLaunches {
    pub fn weight_bytes(&self) -> usize {
        self.launches.iter().map(|l| l.weight_bytes).sum()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct KernelPlan {
    /// Kernels by name (sorted: the order printers emit them in).
    pub kernels: BTreeMap<String, Kernel>,
    /// Same order as `plan.programs`.
    pub programs: Vec<ProgramLaunches>,
}

impl KernelPlan {
    pub fn program(&self, name: &str) -> Option<&ProgramLaunches> {
        self.programs.iter().find(|p| p.name == name)
    }
}

/// The kernels and launches of every program of `plan`; `tiles` says whether
/// the target places per-row tiles (`Tiles::Local`: the CPU).
pub fn kernel_plan(plan: &Plan, tiles: Tiles) -> Result<KernelPlan, String> {
    let mut kernels = BTreeMap::new();
    let mut programs = Vec::new();
    for p in &plan.programs {
        let mut lp = ProgramLaunches {
            name: p.name.clone(),
            launches: Vec::new(),
            scratch_bytes: 0,
        };
        for (i, step) in p.steps.iter().enumerate() {
            let mut cx = StepCx {
                p,
                step,
                index: i,
                out: &mut lp,
                kernels: &mut kernels,
                scratch: 0,
                tiles,
            };
            step_launches(&mut cx)
                .map_err(|e| format!("program `{}`, step `{}` ({}): {e}", p.name, step.name, step.op))?;
        }
        programs.push(lp);
    }
    Ok(KernelPlan { kernels, programs })
}

/// One plan step being turned into launches: what the family lowerings (`ops/*.rs`) read and call.
pub(crate) struct StepCx<'a> {
    p: &'a Program,
    pub(crate) step: &'a Step,
    index: usize,
    out: &'a mut ProgramLaunches,
    kernels: &'a mut BTreeMap<String, Kernel>,
    /// Scratch bytes used by this step so far.
    scratch: usize,
    pub(crate) tiles: Tiles,
}

impl StepCx<'_> {
    pub(crate) fn shape(&self, id: usize) -> &[usize] {
        &self.p.buffers[id].shape
    }

    pub(crate) fn numel(&self, id: usize) -> usize {
        self.shape(id).iter().product()
    }

    pub(crate) fn dtype(&self, id: usize) -> DType {
        self.p.buffers[id].dtype
    }

    pub(crate) fn elem(&self, id: usize) -> Elem {
        Elem::from_dtype(self.dtype(id))
    }

    pub(crate) fn input(&self, i: usize) -> Result<usize, String> {
        self.step
            .inputs
            .get(i)
            .copied()
            .ok_or_else(|| format!("missing operand {i}"))
    }

    pub(crate) fn last_dim(&self, id: usize) -> usize {
        self.shape(id).last().copied().unwrap_or(1)
    }

    fn is_weight(&self, id: usize) -> bool {
        matches!(self.p.storage(id).kind, BufferKind::Weight { .. })
    }

    fn bytes(&self, id: usize) -> usize {
        self.p.buffers[id].bytes
    }

    /// A scratch area of `bytes` for this step (64-byte aligned).
    pub(crate) fn scratch(&mut self, bytes: usize) -> LaunchArg {
        let offset = self.scratch;
        self.scratch += bytes.div_ceil(64) * 64;
        self.out.scratch_bytes = self.out.scratch_bytes.max(self.scratch);
        LaunchArg::Scratch { offset, bytes }
    }

    /// Adds a launch of `k`. `weight_bytes`: None = all weight arguments in full.
    pub(crate) fn launch(
        &mut self,
        k: Kernel,
        args: Vec<LaunchArg>,
        weight_bytes: Option<usize>,
    ) -> Result<(), String> {
        if k.params.len() != args.len() {
            return Err(format!(
                "kernel {} takes {} arguments, got {}",
                k.name,
                k.params.len(),
                args.len()
            ));
        }
        let mut touched = 0;
        let mut weights = 0;
        for a in &args {
            if let LaunchArg::Buffer(id) = a {
                if self.is_weight(*id) {
                    weights += self.bytes(*id);
                } else {
                    touched += self.bytes(*id);
                }
            }
        }
        let weight_bytes = weight_bytes.unwrap_or(weights);
        let launch = KernelLaunch {
            kernel: k.name.clone(),
            args,
            rows: k.rows,
            step: self.index,
            weight_bytes,
            bytes: touched + weight_bytes,
        };
        match self.kernels.get(&k.name) {
            Some(existing) if *existing != k => return Err(format!("two different kernels are named {}", k.name)),
            Some(_) => {}
            None => {
                self.kernels.insert(k.name.clone(), k);
            }
        }
        self.out.launches.push(launch);
        Ok(())
    }

    /// Inputs then outputs, as buffer args.
    pub(crate) fn io_args(&self) -> Vec<LaunchArg> {
        self.step
            .inputs
            .iter()
            .chain(&self.step.outputs)
            .map(|&b| LaunchArg::Buffer(b))
            .collect()
    }

    pub(crate) fn in_args(&self) -> Vec<LaunchArg> {
        self.step.inputs.iter().map(|&b| LaunchArg::Buffer(b)).collect()
    }
}

fn step_launches(cx: &mut StepCx) -> Result<(), String> {
    let op = cx.step.op.clone();
    for &o in &cx.step.outputs {
        if !matches!(cx.dtype(o), DType::F32 | DType::I32) {
            return Err(format!("output of dtype {} (activations are f32 or i32)", cx.dtype(o)));
        }
    }
    // Every op belongs to one family, whose file holds its kernel builders and this lowering.
    match &op {
        Op::Input { .. } | Op::Weight { .. } | Op::Reshape { .. } => Err("not a kernel".into()),
        Op::ReplaceIds { .. }
        | Op::Scale { .. }
        | Op::GeluTanh
        | Op::Softcap { .. }
        | Op::Add
        | Op::Mul
        | Op::GeluMul
        | Op::Slice { .. }
        | Op::Embedding => ops::elementwise::launches(cx, &op),
        Op::MatMul | Op::MoeExperts | Op::LogitsHead { .. } => ops::linear::launches(cx, &op),
        Op::RmsNorm { .. }
        | Op::AddRmsNorm { .. }
        | Op::NormAddNorm { .. }
        | Op::NormAdd { .. }
        | Op::Rope { .. }
        | Op::NormRope { .. }
        | Op::KvWrite
        | Op::NormKvWrite { .. }
        | Op::RopeKvWrite { .. } => ops::norm::launches(cx, &op),
        Op::Attention { .. } | Op::MoeRoute { .. } | Op::MoeRouter { .. } => ops::attention::launches(cx, &op),
    }
}
