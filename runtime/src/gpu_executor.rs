//! What the GPU executors (wgpu, CUDA) have in common above their launches: a prompt is fed
//! through the plan's programs in chunks (`plan_session::Schedule`), each chunk one `call` of
//! the device, and the greedy id is picked on the device so only it crosses to the host. An
//! executor supplies `call`; [`Executor`] follows.

use gemma4c_passes::plan::Plan;

use crate::error::RuntimeError;
use crate::gpu_launch::sampled_id;
use crate::plan_session::Schedule;
use crate::session::Executor;

/// A GPU executor's device side.
pub trait GpuCall {
    fn plan(&self) -> &Plan;
    /// Tokens consumed so far.
    fn position(&self) -> usize;
    /// Runs `program` on `ids` at the current position and advances it. `greedy`: also launch
    /// the argmax and return only its `[index, NaN count]`; otherwise the last row of logits.
    fn call(&mut self, program: usize, ids: &[u32], greedy: bool) -> Result<Vec<f32>, RuntimeError>;
    /// Zeroes the KV caches and the position.
    fn clear(&mut self);
}

impl<T: GpuCall> Executor for T {
    fn forward(&mut self, ids: &[u32]) -> Result<Vec<f32>, RuntimeError> {
        let schedule = Schedule::of(self.plan())?;
        schedule.feed(GpuCall::position(self), ids, |program, chunk| {
            self.call(program, chunk, false)
        })
    }

    fn forward_greedy(&mut self, ids: &[u32]) -> Result<u32, RuntimeError> {
        let schedule = Schedule::of(self.plan())?;
        let v = schedule.feed(GpuCall::position(self), ids, |program, chunk| {
            self.call(program, chunk, true)
        })?;
        sampled_id([v[0], v[1]], self.plan().model.vocab_size)
    }

    fn position(&self) -> usize {
        GpuCall::position(self)
    }

    fn reset(&mut self) {
        self.clear();
    }
}
