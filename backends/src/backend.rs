//! What every target provides, and the registry of targets.
//!
//! A target is one row of [`BACKENDS`]: the name `--target` accepts, the cost model fusion
//! extracts with, and `emit`, which writes the target's code for a plan into the artifact
//! directory (plan.json and stats.json are the caller's). `gemma4c compile`, its `--help` and
//! its errors all read this table, so adding a target is adding a row.

use std::fmt;
use std::ops::Range;
use std::path::Path;

use gemma4c_ir::DType;
use gemma4c_passes::{CostModel, Plan};
use serde_json::{Map, Value};

use crate::cpu::CpuBackend;
use crate::cuda::CudaBackend;
use crate::metal::MetalBackend;
use crate::tt::backend::TtBackend;
use crate::tt::TtTarget;
use crate::wgsl::WgpuBackend;

/// Read access to the checkpoint a plan was compiled from, for targets that ship prepared
/// weights (Tenstorrent's weights.safetensors). Errors are messages naming the tensor.
pub trait Checkpoint {
    /// A whole tensor as f32 (row-major, checkpoint shape).
    fn tensor_f32(&self, key: &str) -> Result<Vec<f32>, String>;
    /// Rows `rows` of a tensor (its first axis) as f32, so a huge embedding table can be
    /// converted a block at a time.
    fn rows_f32(&self, key: &str, rows: Range<usize>) -> Result<Vec<f32>, String>;
    /// The stored dtype of a tensor (None: not in the checkpoint).
    fn dtype(&self, key: &str) -> Option<DType>;
}

/// What `emit` wrote.
#[derive(Debug, Default)]
pub struct Emitted {
    /// File names written into the artifact directory, sorted.
    pub files: Vec<String>,
    /// Entries the target adds to stats.json (e.g. `"tt": {...}`).
    pub stats: Map<String, Value>,
}

/// An error of a backend: the plan has something the target cannot generate, a hardware limit
/// is exceeded, or writing a file failed. The message names the kernel, step or file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendError(pub String);

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BackendError {}

impl From<String> for BackendError {
    fn from(msg: String) -> BackendError {
        BackendError(msg)
    }
}

/// Options of `compile` that only some targets take.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EmitOptions {
    /// `--weights`: how the device stores matmul weights (Tenstorrent: `bf16` or `bfp8`).
    pub weights: Option<String>,
}

/// One compilation target.
pub trait Backend: Sync {
    /// The `--target` name (also recorded in plan.json).
    fn name(&self) -> &'static str;
    /// One line for `--help`.
    fn describe(&self) -> &'static str;
    /// What fusion's extraction minimizes for this target.
    fn cost_model(&self) -> CostModel;
    /// The prefill chunk when `--prefill-chunk` is not given (`None`: the model's sliding window).
    fn default_prefill_chunk(&self) -> Option<usize> {
        None
    }
    /// Writes the target's files for `plan` into `out` (which exists). `checkpoint` is absent
    /// when compiling from a config alone.
    fn emit(&self, plan: &Plan, out: &Path, checkpoint: Option<&dyn Checkpoint>) -> Result<Emitted, BackendError>;
    /// `emit` with target options. Targets that take none refuse them by name.
    fn emit_with(
        &self,
        plan: &Plan,
        out: &Path,
        checkpoint: Option<&dyn Checkpoint>,
        options: &EmitOptions,
    ) -> Result<Emitted, BackendError> {
        if let Some(w) = &options.weights {
            return Err(BackendError(format!(
                "--weights {w}: only the Tenstorrent targets take --weights; {} keeps the checkpoint's dtypes",
                self.name()
            )));
        }
        self.emit(plan, out, checkpoint)
    }
}

/// Every implemented target, in the order `--help` lists them.
pub static BACKENDS: [&dyn Backend; 8] = [
    &CpuBackend,
    &CudaBackend::SM80,
    &CudaBackend::SM90,
    &MetalBackend,
    &WgpuBackend,
    &TtBackend(TtTarget::P300),
    &TtBackend(TtTarget::P150),
    &TtBackend(TtTarget::N150),
];

/// Targets that are planned but not generated yet: naming one is a "not implemented yet" error
/// rather than an unknown target.
pub const PLANNED: [&str; 0] = [];

/// The backend for a `--target` name; the error lists the available targets.
pub fn lookup(name: &str) -> Result<&'static dyn Backend, BackendError> {
    if let Some(b) = BACKENDS.iter().find(|b| b.name() == name) {
        return Ok(*b);
    }
    let available = target_names().join(", ");
    if PLANNED.contains(&name) {
        Err(BackendError(format!(
            "target `{name}` is not implemented yet (available: {available})"
        )))
    } else {
        Err(BackendError(format!(
            "unknown target `{name}` (expected one of: {available})"
        )))
    }
}

/// Names of the implemented targets.
pub fn target_names() -> Vec<&'static str> {
    BACKENDS.iter().map(|b| b.name()).collect()
}

/// The `--target` help text: one line per target, then the planned ones.
pub fn targets_help() -> String {
    let mut text = String::from("Target to generate code for:");
    for b in BACKENDS {
        text.push_str(&format!("\n  {:<10} {}", b.name(), b.describe()));
    }
    for p in PLANNED {
        text.push_str(&format!("\n  {p:<10} (not implemented yet)"));
    }
    text
}

/// Writes `text` to `out/name`; the error names the file.
pub(crate) fn write_file(out: &Path, name: &str, text: &str) -> Result<(), BackendError> {
    let path = out.join(name);
    std::fs::write(&path, text).map_err(|e| BackendError(format!("writing {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_lookup_finds_each() {
        let names = target_names();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len(), "{names:?}");
        for n in &names {
            assert_eq!(lookup(n).unwrap().name(), *n);
        }
        for p in PLANNED {
            assert!(!names.contains(&p), "{p} is both planned and implemented");
        }
    }

    #[test]
    fn unknown_targets_are_clear_errors() {
        let e = lookup("tpu-v5").err().unwrap().0;
        assert!(
            e.starts_with("unknown target `tpu-v5`") && e.contains("cpu, cuda-sm80"),
            "{e}"
        );
    }

    #[test]
    fn cpu_extracts_with_the_cpu_cost_model() {
        assert_eq!(lookup("cpu").unwrap().cost_model(), CostModel::cpu());
        assert_eq!(lookup("tt-p300").unwrap().cost_model(), CostModel::accelerator());
        assert_eq!(lookup("cuda-sm90").unwrap().cost_model(), CostModel::accelerator());
    }
}
