//! Executes a compiled plan with the reference semantics, step by step, over a
//! real arena: activations are read from and written to their planned offsets,
//! so a wrong buffer reuse in the plan shows up as wrong tokens.

use std::collections::HashMap;

use gemma4c_frontend::Model;
use gemma4c_ir::eval::{eval, update_cache};
use gemma4c_ir::{DType, Data, Op, Tensor};
use gemma4c_passes::plan::{BufferKind, Plan, Program};

use crate::error::RuntimeError;
use crate::session::Executor;

pub struct PlanSession {
    plan: Plan,
    weights: Vec<Tensor>,
    state: Vec<Tensor>,
    /// The arena as 4-byte words (f32 and i32 values are stored by bits).
    arena: Vec<u32>,
    position: usize,
}

/// Validates a plan (see `Plan::check`) and that its target is one this
/// gemma4c knows, before anything is allocated.
pub fn check_plan(plan: &Plan) -> Result<(), RuntimeError> {
    plan.check()
        .map_err(|e| RuntimeError::Request(format!("invalid plan: {e}")))?;
    gemma4c_backends::backend::lookup(&plan.target)
        .map_err(|e| RuntimeError::Request(format!("invalid plan: field `target`: {e}")))?;
    Ok(())
}

/// Checks that `model` is the checkpoint `plan` was compiled for: the same
/// configuration fingerprint, and every bound tensor with the planned shape and dtype.
pub(crate) fn check_model(plan: &Plan, model: &Model) -> Result<(), RuntimeError> {
    let fingerprint = model.config.fingerprint();
    if fingerprint != plan.model.fingerprint {
        return Err(RuntimeError::Request(format!(
            "the plan was compiled for a different model (fingerprint {} vs {} for {})",
            plan.model.fingerprint,
            fingerprint,
            model.dir.display()
        )));
    }
    for w in &plan.weights {
        let info = model.checkpoint.require(&w.key)?;
        if info.shape != w.shape || info.dtype != w.dtype {
            return Err(RuntimeError::Request(format!(
                "tensor `{}` in {} is {} {:?}, the plan expects {} {:?} (recompile the plan for this checkpoint)",
                w.key,
                model.dir.display(),
                info.dtype,
                info.shape,
                w.dtype,
                w.shape
            )));
        }
    }
    Ok(())
}

impl PlanSession {
    /// Binds `model`'s tensors to the plan's weights, after checking that the
    /// model is the one the plan was compiled for.
    pub fn new(plan: Plan, model: &Model) -> Result<PlanSession, RuntimeError> {
        check_plan(&plan)?;
        check_model(&plan, model)?;
        let mut weights = Vec::with_capacity(plan.weights.len());
        for w in &plan.weights {
            weights.push(Tensor::f32(w.shape.clone(), model.checkpoint.load_f32(&w.key)?));
        }
        let state = plan
            .state
            .iter()
            .map(|s| Tensor::f32(s.shape.clone(), vec![0.0; s.shape.iter().product()]))
            .collect();
        let words = plan.programs.iter().map(|p| p.arena_bytes / 4).max().unwrap_or(0);
        Ok(PlanSession {
            plan,
            weights,
            state,
            arena: vec![0; words],
            position: 0,
        })
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    fn read(&self, p: &Program, id: usize, inputs: &HashMap<&str, Tensor>) -> Result<Tensor, RuntimeError> {
        let buf = &p.buffers[id];
        let storage = p.storage(id);
        let t = match &storage.kind {
            BufferKind::Weight { index } => self.weights[*index].clone(),
            BufferKind::State { index } => self.state[*index].clone(),
            BufferKind::Input { name } => inputs
                .get(name.as_str())
                .cloned()
                .ok_or_else(|| RuntimeError::Other(format!("input `{name}` not bound")))?,
            BufferKind::Activation { offset, .. } => {
                let n: usize = buf.shape.iter().product();
                let words = &self.arena[offset / 4..offset / 4 + n];
                return Ok(match buf.dtype {
                    DType::I32 => Tensor::i32(buf.shape.clone(), words.iter().map(|&w| w as i32).collect()),
                    _ => Tensor::f32(buf.shape.clone(), words.iter().map(|&w| f32::from_bits(w)).collect()),
                });
            }
            BufferKind::View { .. } => unreachable!("storage() resolves views"),
        };
        // A view of a non-arena buffer: same data, this buffer's shape.
        Ok(Tensor {
            shape: buf.shape.clone(),
            data: t.data,
        })
    }

    fn write(&mut self, p: &Program, id: usize, t: Tensor) -> Result<(), RuntimeError> {
        match &p.storage(id).kind {
            BufferKind::Activation { offset, .. } => {
                let base = offset / 4;
                match t.data {
                    Data::F32(v) => {
                        for (i, x) in v.into_iter().enumerate() {
                            self.arena[base + i] = x.to_bits();
                        }
                    }
                    Data::I32(v) => {
                        for (i, x) in v.into_iter().enumerate() {
                            self.arena[base + i] = x as u32;
                        }
                    }
                }
                Ok(())
            }
            BufferKind::State { index } => {
                self.state[*index] = t;
                Ok(())
            }
            other => Err(RuntimeError::Other(format!("a step writes a {other:?} buffer"))),
        }
    }

    /// Runs `program` on `ids` at the current position; returns the logits.
    fn call(&mut self, program: usize, ids: &[u32]) -> Result<Vec<f32>, RuntimeError> {
        let p = self.plan.programs[program].clone();
        let vocab = self.plan.model.vocab_size;
        if let Some(&bad) = ids.iter().find(|&&t| t as usize >= vocab) {
            return Err(RuntimeError::Request(format!(
                "token id {bad} is out of range: the vocabulary has {vocab} tokens"
            )));
        }
        let mut inputs = HashMap::new();
        inputs.insert(
            "token_ids",
            Tensor::i32([ids.len()], ids.iter().map(|&t| t as i32).collect()),
        );
        inputs.insert("position", Tensor::i32([1], vec![self.position as i32]));
        for step in &p.steps {
            let err = |m: String| RuntimeError::Other(format!("step `{}` ({}): {m}", step.name, step.op));
            if step.op.updates_cache() {
                let BufferKind::State { index } = p.storage(step.inputs[0]).kind else {
                    return Err(err("cache is not a state buffer".into()));
                };
                let rest: Vec<Tensor> = step.inputs[1..]
                    .iter()
                    .map(|&b| self.read(&p, b, &inputs))
                    .collect::<Result<_, _>>()?;
                let refs: Vec<&Tensor> = rest.iter().collect();
                update_cache(&step.op, &mut self.state[index], &refs).map_err(err)?;
                continue;
            }
            let args: Vec<Tensor> = step
                .inputs
                .iter()
                .map(|&b| self.read(&p, b, &inputs))
                .collect::<Result<_, _>>()?;
            let refs: Vec<&Tensor> = args.iter().collect();
            let results = eval(&step.op, &refs).map_err(err)?;
            for (&out, t) in step.outputs.iter().zip(results) {
                self.write(&p, out, t)?;
            }
        }
        self.position += ids.len();
        let logits = p
            .output("logits")
            .ok_or_else(|| RuntimeError::Other(format!("program `{}` has no logits output", p.name)))?;
        let t = self.read(&p, logits, &inputs)?;
        let v = t
            .as_f32()
            .ok_or_else(|| RuntimeError::Other("logits are not f32".into()))?;
        Ok(v[v.len() - vocab..].to_vec())
    }
}

/// Rows of the smallest embedding table indexed by the program's token ids
/// (the PLE table may be smaller than the vocabulary).
pub fn id_limit(plan: &Plan, p: &Program) -> Option<(usize, String)> {
    p.steps
        .iter()
        .filter(|s| matches!(s.op, Op::Embedding))
        .filter(|s| matches!(&p.storage(s.inputs[1]).kind, BufferKind::Input { name } if name == "token_ids"))
        .filter_map(|s| match p.storage(s.inputs[0]).kind {
            BufferKind::Weight { index } => Some((plan.weights[index].shape[0], plan.weights[index].key.clone())),
            _ => None,
        })
        .min()
}

/// Which program of a plan serves which part of a forward call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schedule {
    max_context: usize,
    decode: usize,
    /// (program index, tokens per call)
    prefill: Option<(usize, usize)>,
}

impl Schedule {
    pub(crate) fn of(plan: &Plan) -> Result<Schedule, RuntimeError> {
        let decode = plan.programs.iter().position(|p| p.seq_len == 1);
        let decode = decode.ok_or_else(|| RuntimeError::Other("plan has no decode program".into()))?;
        let prefill = plan
            .programs
            .iter()
            .position(|p| p.seq_len > 1)
            .map(|i| (i, plan.programs[i].seq_len));
        Ok(Schedule {
            max_context: plan.model.max_context,
            decode,
            prefill,
        })
    }

    /// Feeds `ids` at `position`: full prefill chunks run the prefill program,
    /// the rest (and decode) the single-token program. `call` runs one program
    /// (by index) on some ids and returns the logits.
    pub(crate) fn feed<T>(
        self,
        position: usize,
        ids: &[u32],
        mut call: impl FnMut(usize, &[u32]) -> Result<T, RuntimeError>,
    ) -> Result<T, RuntimeError> {
        let max = self.max_context;
        if position + ids.len() > max {
            return Err(RuntimeError::Request(format!(
                "position {position} + {} tokens exceeds the plan's context of {max} tokens (compile with a larger --max-context)",
                ids.len()
            )));
        }
        let mut rest = ids;
        let mut logits = None;
        if let Some((program, chunk)) = self.prefill {
            while rest.len() >= chunk {
                logits = Some(call(program, &rest[..chunk])?);
                rest = &rest[chunk..];
            }
        }
        for &t in rest {
            logits = Some(call(self.decode, &[t])?);
        }
        logits.ok_or_else(|| RuntimeError::Request("no tokens to feed".into()))
    }
}

impl Executor for PlanSession {
    fn forward(&mut self, ids: &[u32]) -> Result<Vec<f32>, RuntimeError> {
        let schedule = Schedule::of(&self.plan)?;
        schedule.feed(self.position, ids, |program, chunk| self.call(program, chunk))
    }

    fn position(&self) -> usize {
        self.position
    }

    fn reset(&mut self) {
        for s in &mut self.state {
            match &mut s.data {
                Data::F32(v) => v.fill(0.0),
                Data::I32(v) => v.fill(0),
            }
        }
        self.position = 0;
    }
}
