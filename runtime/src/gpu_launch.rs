//! The launch sequence of a GPU plan, shared by every GPU executor (wgpu, CUDA): which device
//! buffer each kernel argument is, how many workgroups each launch needs, which buffers a
//! program allocates, where its logits are and how its greedy argmax is launched. An executor
//! maps [`Slot`]s to its own buffers and walks [`ProgramLaunches::launches`] in order.

use std::collections::BTreeSet;

use gemma4c_backends::gpu::{lower_plan, GpuPlan};
use gemma4c_backends::kernel::{Access, LaunchArg};
use gemma4c_passes::plan::{BufferKind, Plan};

use crate::error::RuntimeError;

/// The device buffer behind one kernel argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Slot {
    /// `plan.weights[i]`, uploaded once.
    Weight(usize),
    /// `plan.state[i]` (a KV cache), kept on the device between calls.
    State(usize),
    /// The `token_ids` input (i32, room for the longest program).
    TokenIds,
    /// The `position` input (one i32).
    Position,
    /// An activation: the program's buffer of this storage id.
    Activation(usize),
    /// A scratch area of the program (launches of one step share it).
    Scratch { offset: usize, bytes: usize },
    /// The argmax result: `[index, NaN count]` as f32.
    Sampled,
}

/// One kernel launch with its arguments resolved.
#[derive(Debug, Clone)]
pub struct Launch {
    pub kernel: String,
    pub args: Vec<Slot>,
    /// Whether each argument is only read (from the kernel's parameters).
    pub read_only: Vec<bool>,
    /// Workgroups (CUDA blocks) and threads per workgroup.
    pub workgroups: usize,
    pub threads: usize,
    /// The plan step it comes from (for error messages).
    pub step: String,
}

/// Everything an executor needs to run one program of a plan.
#[derive(Debug, Clone)]
pub struct ProgramLaunches {
    pub name: String,
    pub seq_len: usize,
    pub launches: Vec<Launch>,
    /// The greedy argmax of the last row of logits, after `launches`.
    pub argmax: Launch,
    /// Activation storages (id, bytes) and scratch areas the program uses.
    pub activations: Vec<(usize, usize)>,
    pub scratch: Vec<(usize, usize)>,
    /// The logits storage and the byte offset of their last row.
    pub logits: (usize, usize),
    /// Weight bytes one call reads.
    pub weight_bytes: usize,
}

/// A plan's kernels and, per program, its launches.
pub struct LaunchPlan {
    pub gpu: GpuPlan,
    pub programs: Vec<ProgramLaunches>,
}

fn slot(plan: &Plan, program: usize, arg: &LaunchArg) -> Result<Slot, RuntimeError> {
    let p = &plan.programs[program];
    Ok(match *arg {
        LaunchArg::Scratch { offset, bytes } => Slot::Scratch { offset, bytes },
        LaunchArg::Buffer(id) => {
            if id >= p.buffers.len() {
                return Err(RuntimeError::Other(format!(
                    "program `{}`: launch argument names buffer {id} of {}",
                    p.name,
                    p.buffers.len()
                )));
            }
            let s = p.storage(id);
            match &s.kind {
                BufferKind::Weight { index } => Slot::Weight(*index),
                BufferKind::State { index } => Slot::State(*index),
                BufferKind::Input { name } if name == "token_ids" => Slot::TokenIds,
                BufferKind::Input { name } if name == "position" => Slot::Position,
                BufferKind::Activation { .. } => Slot::Activation(s.id),
                other => {
                    return Err(RuntimeError::Other(format!(
                        "program `{}`: cannot bind buffer {id} ({other:?}) to a GPU kernel",
                        p.name
                    )))
                }
            }
        }
    })
}

impl LaunchPlan {
    /// Lowers `plan` to GPU kernels and resolves every launch of every program.
    pub fn new(plan: &Plan) -> Result<LaunchPlan, RuntimeError> {
        let gpu = lower_plan(plan).map_err(RuntimeError::Other)?;
        let vocab = plan.model.vocab_size;
        let mut programs = Vec::with_capacity(plan.programs.len());
        for (i, (p, lp)) in plan.programs.iter().zip(&gpu.programs).enumerate() {
            let resolve = |kernel: &str, args: Vec<Slot>, step: String| -> Result<Launch, RuntimeError> {
                let g = gpu
                    .kernels
                    .get(kernel)
                    .ok_or_else(|| RuntimeError::Other(format!("no kernel {kernel} for step `{step}`")))?;
                if g.kernel.params.len() != args.len() {
                    return Err(RuntimeError::Other(format!(
                        "kernel {kernel} takes {} buffers, step `{step}` passes {}",
                        g.kernel.params.len(),
                        args.len()
                    )));
                }
                Ok(Launch {
                    kernel: kernel.to_string(),
                    read_only: g.kernel.params.iter().map(|p| p.access == Access::Read).collect(),
                    args,
                    workgroups: g.workgroups(),
                    threads: g.threads,
                    step,
                })
            };
            let mut launches = Vec::with_capacity(lp.launches.len());
            let mut acts = BTreeSet::new();
            let mut scratch = BTreeSet::new();
            for l in &lp.launches {
                let args = l.args.iter().map(|a| slot(plan, i, a)).collect::<Result<Vec<_>, _>>()?;
                for a in &args {
                    match *a {
                        Slot::Activation(id) => {
                            acts.insert((id, p.buffers[id].bytes));
                        }
                        Slot::Scratch { offset, bytes } => {
                            scratch.insert((offset, bytes));
                        }
                        _ => {}
                    }
                }
                launches.push(resolve(&l.kernel, args, p.steps[l.step].name.clone())?);
            }
            let am = &gpu.argmax[i];
            let logits = p.storage(am.logits).id;
            let n: usize = p.buffers[am.logits].shape.iter().product();
            if !acts.iter().any(|&(id, _)| id == logits) || n < vocab {
                return Err(RuntimeError::Other(format!(
                    "program `{}`: the logits are not an activation of {vocab} values or more",
                    p.name
                )));
            }
            let argmax = resolve(
                &am.kernel,
                vec![Slot::Activation(logits), Slot::Sampled],
                "greedy argmax".into(),
            )?;
            programs.push(ProgramLaunches {
                name: p.name.clone(),
                seq_len: p.seq_len,
                launches,
                argmax,
                activations: acts.into_iter().collect(),
                scratch: scratch.into_iter().collect(),
                logits: (logits, 4 * (n - vocab)),
                weight_bytes: lp.weight_bytes(),
            });
        }
        Ok(LaunchPlan { gpu, programs })
    }

    /// Weight bytes one call of `program` reads.
    pub fn weight_bytes(&self, program: &str) -> usize {
        self.programs
            .iter()
            .find(|p| p.name == program)
            .map_or(0, |p| p.weight_bytes)
    }
}

/// Checks a call of `program` on `ids` before anything is written to the device: ids inside
/// the vocabulary and the embedding tables they index (`id_limit`), the program's length.
pub fn check_call(
    plan: &Plan,
    program: usize,
    ids: &[u32],
    id_limit: &Option<(usize, String)>,
) -> Result<(), RuntimeError> {
    let vocab = plan.model.vocab_size;
    if let Some(&bad) = ids.iter().find(|&&t| t as usize >= vocab) {
        return Err(RuntimeError::Request(format!(
            "token id {bad} is out of range: the vocabulary has {vocab} tokens"
        )));
    }
    if let Some((rows, key)) = id_limit {
        if let Some(&bad) = ids.iter().find(|&&t| t as usize >= *rows) {
            return Err(RuntimeError::Request(format!(
                "token id {bad} is out of range: `{key}` has {rows} rows"
            )));
        }
    }
    let p = &plan.programs[program];
    if ids.len() != p.seq_len {
        return Err(RuntimeError::Other(format!(
            "program `{}` takes {} tokens",
            p.name, p.seq_len
        )));
    }
    Ok(())
}

/// The greedy id from the argmax kernel's `[index, NaN count]`; NaN logits are the error the
/// host sampler's caller gives (`generate::check_logits`).
pub fn sampled_id(values: [f32; 2], vocab: usize) -> Result<u32, RuntimeError> {
    let [index, nan] = values;
    if nan != 0.0 {
        return Err(RuntimeError::Request(format!(
            "the logits are NaN ({nan} of {vocab}): the checkpoint's weights (or its activations) hold NaN or infinite values"
        )));
    }
    if !(0.0..vocab as f32).contains(&index) || index.fract() != 0.0 {
        return Err(RuntimeError::Other(format!(
            "the device argmax returned {index}, not an id below {vocab}"
        )));
    }
    Ok(index as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampled_ids_are_checked() {
        assert_eq!(sampled_id([7.0, 0.0], 10).unwrap(), 7);
        assert!(sampled_id([7.0, 2.0], 10).unwrap_err().to_string().contains("NaN"));
        assert!(sampled_id([10.0, 0.0], 10).is_err());
        assert!(sampled_id([1.5, 0.0], 10).is_err());
        assert!(sampled_id([f32::INFINITY, 0.0], 10).is_err());
    }
}
