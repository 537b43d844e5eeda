//! A model to run: its config, its tensors, and the check that the tensors are
//! exactly what the config says the model reads. Opened from a Hugging Face
//! checkpoint directory or a GGUF file.

use std::path::{Path, PathBuf};

use gemma4c_ir::{DType, Graph};

use crate::checkpoint::Checkpoint;
use crate::config::{Family, Gemma4Config};
use crate::error::FrontendError;
use crate::gemma4::{build, weight_manifest, BuildOptions};
use crate::gguf::GgufFile;
use crate::store::WeightStore;

pub struct Model {
    /// The checkpoint directory, or the GGUF file.
    pub dir: PathBuf,
    pub config: Gemma4Config,
    pub checkpoint: WeightStore,
}

impl Model {
    /// Opens a Hugging Face checkpoint directory (config.json + safetensors) or a
    /// GGUF file, and checks every weight the model reads for presence, shape and
    /// a float dtype.
    pub fn open(path: &Path) -> Result<Model, FrontendError> {
        if path.is_file() && GgufFile::sniff(path) {
            return Self::open_gguf(path);
        }
        let dir = path;
        let config_path = dir.join("config.json");
        if !dir.is_dir() {
            return Err(FrontendError::Io {
                path: dir.to_path_buf(),
                message: "not a directory (expected a Hugging Face checkpoint directory or a GGUF file)".into(),
            });
        }
        let mut config = Gemma4Config::from_file(&config_path)?;
        let checkpoint = Checkpoint::open(dir)?;
        // transformers does not tie a stored `lm_head.weight` to the embedding,
        // whatever `tie_word_embeddings` says: a stored head is the head.
        if checkpoint.get("lm_head.weight").is_some() {
            config.tie_word_embeddings = false;
        }
        let mut store = WeightStore::from_checkpoint(checkpoint);
        if config.family == Family::Gemma3 {
            // Gemma 3's RMSNorm scales by `1 + w`; the graph multiplies by the
            // weight it is given, so the store serves `1 + w`.
            let norms: Vec<String> = store
                .keys()
                .filter(|k| k.ends_with("norm.weight"))
                .map(String::from)
                .collect();
            for k in norms {
                store.add_one(&k);
            }
        }
        let model = Model {
            dir: dir.to_path_buf(),
            config,
            checkpoint: store,
        };
        model.check_weights()?;
        Ok(model)
    }

    /// A GGUF file: config from its metadata, tensors under Hugging Face names.
    fn open_gguf(path: &Path) -> Result<Model, FrontendError> {
        let file = GgufFile::open(path)?;
        let config = crate::gguf::gemma::config(&file)?;
        let store = WeightStore::from_gguf(file, &crate::gguf::gemma::hf_key)?;
        let model = Model {
            dir: path.to_path_buf(),
            config,
            checkpoint: store,
        };
        model.check_weights()?;
        Ok(model)
    }

    /// Text-model tensors of the checkpoint that the config does not read
    /// (e.g. `layers.6.*` with `num_hidden_layers: 6`): usually a config that
    /// does not match its checkpoint. Vision and audio towers are not counted.
    pub fn unused_tensors(&self) -> Result<Vec<String>, FrontendError> {
        let used: std::collections::HashSet<String> =
            weight_manifest(&self.config)?.into_iter().map(|(k, _)| k).collect();
        Ok(self
            .checkpoint
            .keys()
            .filter(|k| !used.contains(*k) && *k != "lm_head.weight")
            .filter(|k| !["vision", "audio"].iter().any(|m| k.contains(m)))
            .map(str::to_string)
            .collect())
    }

    fn check_weights(&self) -> Result<(), FrontendError> {
        let unused = self.unused_tensors()?;
        if let Some(first) = unused.first() {
            eprintln!(
                "warning: {}: {} tensor(s) are not read by this config, e.g. `{first}` (does num_hidden_layers or another size in config.json match the checkpoint?)",
                self.dir.display(),
                unused.len()
            );
        }
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
