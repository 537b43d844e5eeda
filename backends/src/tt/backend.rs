//! The Tenstorrent rows of the backend registry: glue from [`Backend`] to [`write_artifact`].

use std::path::Path;

use gemma4c_passes::{CostModel, Plan};

use super::{write_artifact, TtTarget, WeightFormat, Weights};
use crate::backend::{Backend, BackendError, Checkpoint, EmitOptions, Emitted};

/// One Tenstorrent device as a compilation target.
pub struct TtBackend(pub TtTarget);

impl Backend for TtBackend {
    fn name(&self) -> &'static str {
        self.0.name
    }

    fn describe(&self) -> &'static str {
        match self.0.name {
            "tt-n150" => "Tenstorrent Wormhole n150: TT-Lang kernels.py, TTNN model.py, weights",
            _ => "Tenstorrent Blackhole: TT-Lang kernels.py, TTNN model.py, weights",
        }
    }

    fn cost_model(&self) -> CostModel {
        CostModel::accelerator()
    }

    /// One tile row of tokens (`lower::PREFILL_CHUNK`).
    fn default_prefill_chunk(&self) -> Option<usize> {
        Some(super::lower::PREFILL_CHUNK)
    }

    fn emit(&self, plan: &Plan, out: &Path, checkpoint: Option<&dyn Checkpoint>) -> Result<Emitted, BackendError> {
        self.emit_with(plan, out, checkpoint, &EmitOptions::default())
    }

    fn emit_with(
        &self,
        plan: &Plan,
        out: &Path,
        checkpoint: Option<&dyn Checkpoint>,
        options: &EmitOptions,
    ) -> Result<Emitted, BackendError> {
        let format = match &options.weights {
            Some(w) => WeightFormat::parse(w).map_err(|e| BackendError(e.0))?,
            None => WeightFormat::Bf16,
        };
        let target = self.0.with_weights(format);
        let tensor = |k: &str| checkpoint.ok_or("no checkpoint")?.tensor_f32(k);
        let rows = |k: &str, r: std::ops::Range<usize>| checkpoint.ok_or("no checkpoint")?.rows_f32(k, r);
        let dtype_of = |k: &str| checkpoint.and_then(|c| c.dtype(k));
        let weights = checkpoint.map(|_| Weights {
            tensor: &tensor,
            rows: Some(&rows),
            dtype_of: &dtype_of,
        });
        let stats = write_artifact(out, plan, &target, weights).map_err(|e| BackendError(e.0))?;
        let mut files: Vec<String> = ["kernels.py", "model.py", "run.py", "sim_support.py", "README.md"]
            .map(String::from)
            .to_vec();
        if checkpoint.is_some() {
            files.push("weights.safetensors".into());
        }
        files.sort();
        let mut emitted = Emitted {
            files,
            ..Emitted::default()
        };
        emitted.stats.insert("tt".into(), stats);
        Ok(emitted)
    }
}
