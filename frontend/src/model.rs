//! A checkpoint directory: its config, its tensors, and the check that the
//! tensors are exactly what the config says the model reads.

use std::path::{Path, PathBuf};

use gemma4c_ir::{DType, Graph};

use crate::checkpoint::Checkpoint;
use crate::config::Gemma4Config;
use crate::error::FrontendError;
use crate::gemma4::{build, weight_manifest, BuildOptions};

pub struct Model {
    pub dir: PathBuf,
    pub config: Gemma4Config,
    pub checkpoint: Checkpoint,
}

impl Model {
    /// Opens `dir` (config.json + safetensors) and checks every weight the model
    /// reads for presence, shape and a float dtype.
    pub fn open(dir: &Path) -> Result<Model, FrontendError> {
        let config_path = dir.join("config.json");
        if !dir.is_dir() {
            return Err(FrontendError::Io {
                path: dir.to_path_buf(),
                message: "not a directory (expected a Hugging Face checkpoint directory)".into(),
            });
        }
        let mut config = Gemma4Config::from_file(&config_path)?;
        let checkpoint = Checkpoint::open(dir)?;
        // transformers does not tie a stored `lm_head.weight` to the embedding,
        // whatever `tie_word_embeddings` says: a stored head is the head.
        if checkpoint.get("lm_head.weight").is_some() {
            config.tie_word_embeddings = false;
        }
        let model = Model {
            dir: dir.to_path_buf(),
            config,
            checkpoint,
        };
        model.check_weights()?;
        Ok(model)
    }

    fn check_weights(&self) -> Result<(), FrontendError> {
        for (key, shape) in weight_manifest(&self.config)? {
            let info = self.checkpoint.require(&key)?;
            let path = self.checkpoint.file_of(&key).unwrap_or(&self.dir).to_path_buf();
            if info.shape != shape {
                return Err(FrontendError::TensorMismatch {
                    path,
                    key,
                    found: format!("shape {:?}", info.shape),
                    expected: format!("shape {shape:?} (from {})", self.config.path.display()),
                });
            }
            if !info.dtype.is_float() {
                return Err(FrontendError::TensorMismatch {
                    path,
                    key,
                    found: format!("dtype {}", info.dtype),
                    expected: "f32, bf16 or f16".into(),
                });
            }
        }
        Ok(())
    }

    /// dtype of a checkpoint tensor (the config's dtype for tensors it lacks).
    pub fn dtype_of(&self, key: &str) -> DType {
        self.checkpoint.get(key).map_or(self.config.dtype, |t| t.dtype)
    }

    /// Builds a call graph with the checkpoint's dtypes.
    pub fn graph(&self, opts: &BuildOptions) -> Result<Graph, FrontendError> {
        Ok(build(&self.config, opts, &|k| self.dtype_of(k))?)
    }
}
