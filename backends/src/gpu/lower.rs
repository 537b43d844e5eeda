//! Plan → GPU kernels and launches: the kernel IR lowering (`kernel::kernel_plan`) with each
//! kernel given its GPU schedule, attention replaced by its GPU forms (online softmax for
//! prefill, flash-decode split along the cache for decode) and a greedy argmax per program.
//! Launch arguments, scratch areas and weight accounting are the kernel IR's.

use std::collections::BTreeMap;

use gemma4c_ir::Op;
use gemma4c_passes::plan::{Plan, Program, Step};

use super::argmax::argmax;
use super::attention::{attention_merge, attention_online, attention_split, decode_splits};
use super::matmul::matmul_tiled;
use super::schedule::derive;
use super::GpuKernel;
use crate::kernel::{self, ops, Elem, Kernel, KernelLaunch, LaunchArg, ProgramLaunches};

/// The on-device greedy pick of a program: `kernel` reads plan buffer `logits` (its last
/// `vocab` values) and writes `[index, NaN count]` (f32) into a buffer of the runtime's.
#[derive(Debug, Clone, PartialEq)]
pub struct ArgmaxLaunch {
    pub kernel: String,
    pub logits: usize,
}

/// A plan's GPU kernels and launches. Every GPU printer prints `kernels`; the runtime binds
/// `programs`.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuPlan {
    /// Kernels by name (sorted: the order printers emit them in).
    pub kernels: BTreeMap<String, GpuKernel>,
    /// Same order as `plan.programs`; launch kernel names refer to `kernels`.
    pub programs: Vec<ProgramLaunches>,
    /// Same order as `plan.programs`: the launch after `programs[i]` that samples greedily.
    pub argmax: Vec<ArgmaxLaunch>,
}

impl GpuPlan {
    pub fn program(&self, name: &str) -> Option<&ProgramLaunches> {
        self.programs.iter().find(|p| p.name == name)
    }
}

pub fn lower_plan(plan: &Plan) -> Result<GpuPlan, String> {
    let kp = kernel::kernel_plan(plan, kernel::Tiles::None)?;
    let mut kernels = BTreeMap::new();
    let mut add = |g: GpuKernel| {
        let name = g.kernel.name.clone();
        kernels.entry(name.clone()).or_insert(g);
        name
    };
    let mut programs = Vec::new();
    let mut samplers = Vec::new();
    for (p, lp) in plan.programs.iter().zip(kp.programs) {
        let mut launches = Vec::with_capacity(lp.launches.len());
        let mut scratch_bytes = lp.scratch_bytes;
        for mut l in lp.launches {
            let step = &p.steps[l.step];
            let Op::Attention { window, scale } = &step.op else {
                let cpu = &kp.kernels[&l.kernel];
                let g = prefill_matmul(p, step, &l, cpu).unwrap_or_else(|| derive(cpu));
                l.rows = g.kernel.rows;
                l.kernel = add(g);
                launches.push(l);
                continue;
            };
            let (qs, ks) = (&p.buffers[step.inputs[0]].shape, &p.buffers[step.inputs[1]].shape);
            let (s, heads, d, kv_heads, cap) = (qs[0], qs[1], qs[2], ks[0], ks[1]);
            if s > 1 {
                l.kernel = add(derive(&attention_online(s, heads, kv_heads, d, cap, *window, *scale)));
                launches.push(l);
                continue;
            }
            // Decode: flash-decode through two scratch areas (the step's only launches, so
            // they start at offset 0 of the program's scratch).
            let splits = decode_splits(cap);
            let part_out = LaunchArg::Scratch {
                offset: 0,
                bytes: 4 * heads * splits * d,
            };
            let part_ml = LaunchArg::Scratch {
                offset: 4 * heads * splits * d,
                bytes: 4 * heads * splits * 2,
            };
            scratch_bytes = scratch_bytes.max(4 * heads * splits * (d + 2));
            let io = &l.args;
            if io.len() != 5 {
                return Err(format!("step `{}`: attention takes q, k, v, position, out", step.name));
            }
            let split = attention_split(heads, kv_heads, d, cap, *window, *scale, splits);
            launches.push(KernelLaunch {
                kernel: add(derive(&split)),
                args: vec![io[0], io[1], io[2], io[3], part_out, part_ml],
                rows: heads * splits,
                ..l.clone()
            });
            let out = l.args[4];
            launches.push(KernelLaunch {
                kernel: add(derive(&attention_merge(heads, d, splits))),
                args: vec![part_out, part_ml, out],
                rows: heads,
                weight_bytes: 0,
                ..l
            });
        }
        let logits = p
            .output("logits")
            .ok_or_else(|| format!("program `{}` has no logits output", p.name))?;
        let n: usize = p.buffers[logits].shape.iter().product();
        let vocab = plan.model.vocab_size;
        if vocab == 0 || vocab > n || vocab >= 1 << 24 {
            return Err(format!(
                "program `{}`: {n} logits for a vocabulary of {vocab} (the GPU argmax takes 1..2^24)",
                p.name
            ));
        }
        samplers.push(ArgmaxLaunch {
            kernel: add(derive(&argmax(n, vocab))),
            logits,
        });
        programs.push(ProgramLaunches {
            name: lp.name,
            launches,
            scratch_bytes,
        });
    }
    Ok(GpuPlan {
        kernels,
        programs,
        argmax: samplers,
    })
}

/// The tiled form of a prefill matmul launch (`m > 1` input rows), when the launch runs
/// exactly the CPU matmul `kernel::ops::matmul` of a 2-D bf16/f16/f32 weight (its name
/// says everything its code depends on, so equal names mean the same arithmetic).
fn prefill_matmul(p: &Program, step: &Step, l: &KernelLaunch, cpu: &Kernel) -> Option<GpuKernel> {
    if !matches!(step.op, Op::MatMul | Op::LogitsHead { .. } | Op::MoeRouter { .. }) || l.args.len() != 3 {
        return None;
    }
    let LaunchArg::Buffer(w) = l.args[1] else { return None };
    let [n, k] = p.buffers.get(w)?.shape[..] else {
        return None;
    };
    let elem = Elem::from_dtype(p.buffers[w].dtype);
    let x_numel: usize = p.buffers.get(*step.inputs.first()?)?.shape.iter().product();
    if matches!(elem, Elem::Block(_) | Elem::I32) || k == 0 || !x_numel.is_multiple_of(k) {
        return None;
    }
    let m = x_numel / k;
    if m < 2 {
        return None;
    }
    let cap = match step.op {
        Op::LogitsHead { cap, .. } => cap,
        _ => None,
    };
    [None, cap]
        .into_iter()
        .find(|&c| ops::matmul(m, n, k, elem, c).name == cpu.name)
        .map(|c| matmul_tiled(m, n, k, elem, c))
}
