//! Safetensors checkpoints: one file or HF shards (`model.safetensors.index.json`),
//! memory-mapped, read lazily. Keys are exposed without the model prefix
//! (`model.` for `Gemma4ForCausalLM`, `model.language_model.` for the released
//! multimodal checkpoints), so the frontend names tensors the way the text model does.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use gemma4c_ir::DType;
use memmap2::Mmap;
use safetensors::{Dtype as StDtype, SafeTensors};
use serde_json::Value;

use crate::error::FrontendError;

/// Prefixes of the text model's tensors, most specific first.
const PREFIXES: [&str; 2] = ["model.language_model.", "model."];

#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub dtype: DType,
    pub shape: Vec<usize>,
    file: usize,
    /// Key as stored in the file (with prefix).
    stored_key: String,
}

pub struct Checkpoint {
    dir: PathBuf,
    files: Vec<(PathBuf, Mmap)>,
    tensors: BTreeMap<String, TensorInfo>,
}

impl Checkpoint {
    /// Opens `dir/model.safetensors` or the shards listed in
    /// `dir/model.safetensors.index.json`.
    pub fn open(dir: &Path) -> Result<Checkpoint, FrontendError> {
        let index_path = dir.join("model.safetensors.index.json");
        let single = dir.join("model.safetensors");
        let file_names: Vec<PathBuf> = if index_path.exists() {
            shard_files(&index_path)?
        } else if single.exists() {
            vec![single]
        } else {
            return Err(FrontendError::Io {
                path: dir.to_path_buf(),
                message: "no model.safetensors or model.safetensors.index.json in this directory".into(),
            });
        };

        let mut files = Vec::new();
        let mut tensors = BTreeMap::new();
        for (fi, path) in file_names.into_iter().enumerate() {
            // A FIFO would block `open`, a device would map endlessly.
            gemma4c_ir::limits::check_regular_file(&path).map_err(|message| FrontendError::Io {
                path: path.clone(),
                message,
            })?;
            let file = File::open(&path).map_err(|e| FrontendError::Io {
                path: path.clone(),
                message: format!("cannot open: {e}"),
            })?;
            // SAFETY: the mapping is read-only; a checkpoint modified while gemma4c
            // runs is outside what any loader can defend against.
            let mmap = unsafe { Mmap::map(&file) }.map_err(|e| FrontendError::Io {
                path: path.clone(),
                message: format!("cannot map: {e}"),
            })?;
            let st = SafeTensors::deserialize(&mmap).map_err(|e| FrontendError::Safetensors {
                path: path.clone(),
                message: e.to_string(),
            })?;
            for (name, view) in st.tensors() {
                let dtype = match view.dtype() {
                    StDtype::F32 => DType::F32,
                    StDtype::BF16 => DType::BF16,
                    StDtype::F16 => DType::F16,
                    StDtype::I32 => DType::I32,
                    other => {
                        return Err(FrontendError::TensorMismatch {
                            path: path.clone(),
                            key: name,
                            found: format!("dtype {other:?}"),
                            expected: "F32, BF16 or F16".into(),
                        })
                    }
                };
                let key = PREFIXES
                    .iter()
                    .find_map(|p| name.strip_prefix(p))
                    .unwrap_or(&name)
                    .to_string();
                tensors.insert(
                    key,
                    TensorInfo {
                        dtype,
                        shape: view.shape().to_vec(),
                        file: fi,
                        stored_key: name.clone(),
                    },
                );
            }
            drop(st);
            files.push((path, mmap));
        }
        Ok(Checkpoint {
            dir: dir.to_path_buf(),
            files,
            tensors,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn get(&self, key: &str) -> Option<&TensorInfo> {
        self.tensors.get(key)
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    pub fn file_of(&self, key: &str) -> Option<&Path> {
        self.get(key).map(|t| self.files[t.file].0.as_path())
    }

    /// Total bytes of all tensors.
    pub fn total_bytes(&self) -> usize {
        self.tensors
            .values()
            .map(|t| t.shape.iter().product::<usize>() * t.dtype.size_bytes())
            .sum()
    }

    /// Raw little-endian bytes of a tensor, straight from the mapping.
    pub fn bytes(&self, key: &str) -> Result<&[u8], FrontendError> {
        let info = self.require(key)?;
        let (path, mmap) = &self.files[info.file];
        let st = SafeTensors::deserialize(mmap).map_err(|e| FrontendError::Safetensors {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let view = st.tensor(&info.stored_key).map_err(|e| FrontendError::Safetensors {
            path: path.clone(),
            message: e.to_string(),
        })?;
        // The view borrows from the mapping, which outlives `st`.
        let data = view.data();
        let start = data.as_ptr() as usize - mmap.as_ptr() as usize;
        Ok(&mmap[start..start + data.len()])
    }

    /// A tensor converted to f32 (bf16 and f16 are widened exactly).
    pub fn load_f32(&self, key: &str) -> Result<Vec<f32>, FrontendError> {
        let info = self.require(key)?;
        let bytes = self.bytes(key)?;
        info.dtype.widen_le(bytes).ok_or_else(|| FrontendError::TensorMismatch {
            path: self.files[info.file].0.clone(),
            key: key.to_string(),
            found: "i32".into(),
            expected: "a float tensor".into(),
        })
    }

    /// The tensor's entry, or an error naming the keys that were looked for.
    pub fn require(&self, key: &str) -> Result<&TensorInfo, FrontendError> {
        self.get(key).ok_or_else(|| FrontendError::MissingTensor {
            dir: self.dir.clone(),
            key: key.to_string(),
            tried: PREFIXES
                .iter()
                .map(|p| format!("{p}{key}"))
                .collect::<Vec<_>>()
                .join("` or `"),
        })
    }
}

/// Shard file names from an HF index, in first-appearance order (deduplicated).
fn shard_files(index_path: &Path) -> Result<Vec<PathBuf>, FrontendError> {
    let text = gemma4c_ir::limits::read_text(index_path, gemma4c_ir::limits::MAX_JSON_BYTES).map_err(|e| {
        FrontendError::Io {
            path: index_path.to_path_buf(),
            message: format!("cannot read: {e}"),
        }
    })?;
    let v: Value = serde_json::from_str(&text).map_err(|e| FrontendError::Json {
        path: index_path.to_path_buf(),
        message: e.to_string(),
    })?;
    let map = v
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| FrontendError::Config {
            path: index_path.to_path_buf(),
            field: "weight_map".into(),
            message: "missing or not an object of tensor name -> shard file".into(),
        })?;
    let mut seen = HashMap::new();
    let mut files = Vec::new();
    for (name, file) in map {
        let file = file.as_str().ok_or_else(|| FrontendError::Config {
            path: index_path.to_path_buf(),
            field: format!("weight_map.{name}"),
            message: "expected a file name".into(),
        })?;
        if file.contains('/') || file.contains("..") {
            return Err(FrontendError::Config {
                path: index_path.to_path_buf(),
                field: format!("weight_map.{name}"),
                message: format!("shard `{file}` must be a plain file name in the checkpoint directory"),
            });
        }
        if seen.insert(file.to_string(), ()).is_none() {
            files.push(index_path.with_file_name(file));
        }
    }
    files.sort();
    Ok(files)
}
