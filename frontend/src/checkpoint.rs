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
        // `exists()` follows symlinks and says "no" for a loop; an entry that is
        // there but unreadable must be reported as such, not as missing.
        let present = |p: &Path| p.symlink_metadata().is_ok();
        let (file_names, weight_map): (Vec<PathBuf>, Option<BTreeMap<String, String>>) = if present(&index_path) {
            let (files, map) = shard_files(&index_path)?;
            (files, Some(map))
        } else if present(&single) {
            (vec![single], None)
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
            check_header(&mmap).map_err(|message| FrontendError::Safetensors {
                path: path.clone(),
                message,
            })?;
            let st = SafeTensors::deserialize(&mmap).map_err(|e| FrontendError::Safetensors {
                path: path.clone(),
                message: e.to_string(),
            })?;
            let file_name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            for (name, view) in st.tensors() {
                if let Some(map) = &weight_map {
                    match map.get(&name) {
                        Some(f) if *f != file_name => {
                            return Err(FrontendError::Safetensors {
                                path: path.clone(),
                                message: format!(
                                    "holds tensor `{name}`, which model.safetensors.index.json places in `{f}`"
                                ),
                            })
                        }
                        Some(_) => {}
                        None => {
                            return Err(FrontendError::Safetensors {
                                path: path.clone(),
                                message: format!(
                                    "holds tensor `{name}`, which model.safetensors.index.json does not list"
                                ),
                            })
                        }
                    }
                }
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
                if let Some(prev) = tensors.get(&key) {
                    let prev: &TensorInfo = prev;
                    let other = if prev.file == fi {
                        path.clone()
                    } else {
                        files
                            .get(prev.file)
                            .map_or(path.clone(), |(p, _): &(PathBuf, Mmap)| p.clone())
                    };
                    return Err(FrontendError::Safetensors {
                        path: path.clone(),
                        message: format!(
                            "tensor `{key}` is stored twice (as `{}` in {} and as `{name}` here)",
                            prev.stored_key,
                            other.display()
                        ),
                    });
                }
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
        if let Some(map) = &weight_map {
            let stored: std::collections::HashSet<&str> = tensors.values().map(|t| t.stored_key.as_str()).collect();
            for (name, file) in map {
                if !stored.contains(name.as_str()) {
                    return Err(FrontendError::Safetensors {
                        path: dir.join(file),
                        message: format!("has no tensor `{name}`, which model.safetensors.index.json places in it"),
                    });
                }
            }
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

/// Shard files of an HF index (sorted, deduplicated) and its weight map
/// (stored tensor name -> shard file name).
type ShardIndex = (Vec<PathBuf>, BTreeMap<String, String>);

fn shard_files(index_path: &Path) -> Result<ShardIndex, FrontendError> {
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
    let mut weight_map = BTreeMap::new();
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
        weight_map.insert(name.clone(), file.to_string());
    }
    files.sort();
    Ok((files, weight_map))
}

/// Checks the framing of a safetensors file before the safetensors crate
/// parses it, so the messages say what is wrong and name the tensor: the
/// header length against the file size, and each tensor's byte range against
/// its dtype and shape and the data that follows the header.
pub fn check_header(bytes: &[u8]) -> Result<(), String> {
    let Some(len) = bytes.get(..8) else {
        return Err(format!("{} bytes: too short for the 8-byte header length", bytes.len()));
    };
    let n = u64::from_le_bytes(len.try_into().expect("8 bytes"));
    let rest = (bytes.len() - 8) as u64;
    if n > rest {
        return Err(format!(
            "the header length {n} exceeds the {rest} bytes after it (a truncated or corrupt file)"
        ));
    }
    let header = &bytes[8..8 + n as usize];
    let data = rest - n;
    let v: Value = serde_json::from_slice(header).map_err(|e| format!("the header is not valid JSON: {e}"))?;
    let obj = v.as_object().ok_or("the header is not a JSON object")?;
    for (name, t) in obj {
        if name == "__metadata__" {
            continue;
        }
        let elem = match t.get("dtype").and_then(Value::as_str) {
            Some("F64" | "I64" | "U64") => 8,
            Some("F32" | "I32" | "U32") => 4,
            Some("F16" | "BF16" | "I16" | "U16") => 2,
            Some("I8" | "U8" | "BOOL" | "F8_E4M3" | "F8_E5M2") => 1,
            // Other dtypes are reported by the loader by name.
            _ => continue,
        };
        let shape: Option<Vec<u64>> = t
            .get("shape")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().map(Value::as_u64).collect());
        let offsets: Option<Vec<u64>> = t
            .get("data_offsets")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().map(Value::as_u64).collect());
        let (Some(shape), Some(offsets)) = (shape, offsets) else {
            return Err(format!(
                "tensor `{name}`: missing or malformed `shape` or `data_offsets`"
            ));
        };
        let [begin, end] = offsets[..] else {
            return Err(format!("tensor `{name}`: `data_offsets` must be [begin, end]"));
        };
        let need = shape.iter().try_fold(elem, |a: u64, &d| a.checked_mul(d));
        if end < begin || end > data {
            return Err(format!(
                "tensor `{name}`: data_offsets [{begin}, {end}] lie outside the {data} data bytes"
            ));
        }
        if need != Some(end - begin) {
            return Err(format!(
                "tensor `{name}`: data_offsets [{begin}, {end}] hold {} bytes, but shape {shape:?} needs {}",
                end - begin,
                need.map_or("more than 2^64".to_string(), |n| n.to_string())
            ));
        }
    }
    Ok(())
}
