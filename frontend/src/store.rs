//! The tensors a model reads, by Hugging Face key, from either source:
//! a safetensors checkpoint or a GGUF file.
//!
//! Tensors are borrowed from the memory map as stored: safetensors f32/bf16/f16
//! and GGUF f32/f16/bf16 and block formats (dtype `Block`, dequantized inside
//! the kernels that read them; `load_f32` dequantizes as gguf-py does).
//! Converted once, on first use: Gemma 3's Hugging Face norm weights (to
//! `1 + w` in f32), `--quant` weights (to their block format) and a GGUF
//! block-quantized MoE router (to f32: the router kernel does not dequantize;
//! llama.cpp keeps routers in f32, so this is rare).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use gemma4c_ir::{DType, QuantFormat};

use crate::checkpoint::Checkpoint;
use crate::error::FrontendError;
use crate::gguf::{GgmlType, GgufFile};

/// dtype and shape of a stored tensor, as the graph sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredTensor {
    pub dtype: DType,
    pub shape: Vec<usize>,
}

enum Location {
    /// Safetensors tensor under this key.
    Safetensors,
    /// GGUF tensor at this index, read in place.
    GgufMapped(usize),
    /// `1 + w` of the stored tensor in f32 (Gemma 3 norms from Hugging
    /// Face), converted on first use.
    PlusOne(OnceLock<Vec<f32>>),
    /// The safetensors tensor quantized to a block format (`--quant`) on
    /// first use.
    Quantized(QuantFormat, OnceLock<Vec<u8>>),
    /// A GGUF block-quantized tensor the kernels cannot read in its format
    /// (the MoE router, or a vector): dequantized to f32 on first use.
    Dequantized(usize, OnceLock<Vec<f32>>),
}

struct Entry {
    info: StoredTensor,
    loc: Location,
}

enum Source {
    Safetensors(Checkpoint),
    Gguf(GgufFile),
}

pub struct WeightStore {
    source: Source,
    tensors: BTreeMap<String, Entry>,
}

impl WeightStore {
    pub fn from_checkpoint(checkpoint: Checkpoint) -> WeightStore {
        let tensors = checkpoint
            .keys()
            .filter_map(|k| checkpoint.get(k).map(|t| (k, t)))
            .map(|(k, t)| {
                let info = StoredTensor {
                    dtype: t.dtype,
                    shape: t.shape.clone(),
                };
                let entry = Entry {
                    info,
                    loc: Location::Safetensors,
                };
                (k.to_string(), entry)
            })
            .collect();
        WeightStore {
            source: Source::Safetensors(checkpoint),
            tensors,
        }
    }

    /// A GGUF file's tensors under the Hugging Face keys `hf_key` gives them
    /// (tensors it maps to `None` are not exposed).
    pub fn from_gguf(file: GgufFile, hf_key: &dyn Fn(&str) -> Option<String>) -> Result<WeightStore, FrontendError> {
        let mut tensors = BTreeMap::new();
        for (i, t) in file.header.tensors.iter().enumerate() {
            let Some(key) = hf_key(&t.name) else { continue };
            let (dtype, loc) = match t.ggml_type {
                GgmlType::F32 => (DType::F32, Location::GgufMapped(i)),
                GgmlType::F16 => (DType::F16, Location::GgufMapped(i)),
                GgmlType::BF16 => (DType::BF16, Location::GgufMapped(i)),
                // Matrices are read in their block format by the matmul and
                // embedding kernels, [E, rows, cols] expert weights by the MoE
                // expert kernels; the router kernel does not dequantize.
                GgmlType::Quant(q) if reads_blocks(&key, t.shape().len()) => (DType::Block(q), Location::GgufMapped(i)),
                GgmlType::Quant(_) => (DType::F32, Location::Dequantized(i, OnceLock::new())),
                other => {
                    return Err(FrontendError::Gguf {
                        path: file.path.clone(),
                        message: format!(
                            "tensor `{}`: element type {} is not supported for weights",
                            t.name,
                            other.name()
                        ),
                    })
                }
            };
            let entry = Entry {
                info: StoredTensor {
                    dtype,
                    shape: t.shape(),
                },
                loc,
            };
            tensors.insert(key, entry);
        }
        Ok(WeightStore {
            source: Source::Gguf(file),
            tensors,
        })
    }

    /// Serves `key` as `1 + w` (f32) from now on.
    pub(crate) fn add_one(&mut self, key: &str) {
        if let Some(e) = self.tensors.get_mut(key) {
            e.info.dtype = DType::F32;
            e.loc = Location::PlusOne(OnceLock::new());
        }
    }

    /// Serves `key` in block format `q` from now on (quantized on first use).
    /// The caller checks that it is a matrix of whole blocks.
    pub(crate) fn quantize(&mut self, key: &str, q: QuantFormat) {
        if let Some(e) = self.tensors.get_mut(key) {
            e.info.dtype = DType::Block(q);
            e.loc = Location::Quantized(q, OnceLock::new());
        }
    }

    /// The GGUF file, when this store reads one.
    pub fn gguf(&self) -> Option<&GgufFile> {
        match &self.source {
            Source::Gguf(g) => Some(g),
            Source::Safetensors(_) => None,
        }
    }

    pub fn dir(&self) -> &Path {
        match &self.source {
            Source::Safetensors(c) => c.dir(),
            Source::Gguf(g) => g.path.parent().unwrap_or(Path::new(".")),
        }
    }

    pub fn get(&self, key: &str) -> Option<&StoredTensor> {
        self.tensors.get(key).map(|e| &e.info)
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    pub fn file_of(&self, key: &str) -> Option<&Path> {
        match &self.source {
            Source::Safetensors(c) => c.file_of(key),
            Source::Gguf(g) => self.tensors.get(key).map(|_| g.path.as_path()),
        }
    }

    /// Total bytes of all tensors as the graph reads them.
    pub fn total_bytes(&self) -> usize {
        self.tensors
            .values()
            .map(|e| e.info.dtype.bytes_for(&e.info.shape).unwrap_or(0))
            .sum()
    }

    /// The tensor's entry, or an error naming the key that was looked for.
    pub fn require(&self, key: &str) -> Result<&StoredTensor, FrontendError> {
        match &self.source {
            Source::Safetensors(c) => {
                c.require(key)?;
            }
            Source::Gguf(g) if !self.tensors.contains_key(key) => {
                return Err(FrontendError::MissingTensor {
                    dir: g.path.clone(),
                    key: key.to_string(),
                    tried: crate::gguf::gemma::gguf_name(key).unwrap_or_else(|| "(no GGUF name)".into()),
                })
            }
            Source::Gguf(_) => {}
        }
        self.get(key).ok_or_else(|| FrontendError::MissingTensor {
            dir: self.dir().to_path_buf(),
            key: key.to_string(),
            tried: key.to_string(),
        })
    }

    /// Little-endian bytes of a tensor in its `dtype` (block formats: whole
    /// blocks, row after row): borrowed from the memory map, or from the f32
    /// conversion (made now if this is the first use).
    pub fn bytes(&self, key: &str) -> Result<&[u8], FrontendError> {
        self.require(key)?;
        let entry = &self.tensors[key];
        match (&entry.loc, &self.source) {
            (Location::Safetensors, Source::Safetensors(c)) => c.bytes(key),
            (Location::GgufMapped(i), Source::Gguf(g)) => Ok(g.bytes(&g.header.tensors[*i])),
            (Location::PlusOne(cell), Source::Safetensors(c)) => {
                let values = match cell.get() {
                    Some(v) => v,
                    None => {
                        // Hugging Face computes `1.0 + self.weight.float()` in f32.
                        let v = c.load_f32(key)?.into_iter().map(|w| 1.0 + w).collect();
                        // Another thread may have won the race; either value is the same.
                        let _ = cell.set(v);
                        cell.get().expect("set above")
                    }
                };
                Ok(f32_bytes(values))
            }
            (Location::Dequantized(i, cell), Source::Gguf(g)) => {
                if cell.get().is_none() {
                    let _ = cell.set(g.dequantize(&g.header.tensors[*i])?);
                }
                Ok(f32_bytes(cell.get().expect("set above")))
            }
            (Location::Quantized(q, cell), Source::Safetensors(c)) => {
                if let Some(b) = cell.get() {
                    return Ok(b);
                }
                let path = || c.file_of(key).unwrap_or(c.dir()).to_path_buf();
                let bytes = q
                    .quantize(&c.load_f32(key)?)
                    .map_err(|m| FrontendError::TensorMismatch {
                        path: path(),
                        key: key.to_string(),
                        found: m,
                        expected: format!("a matrix of whole {q} blocks"),
                    })?;
                let _ = cell.set(bytes);
                Ok(cell.get().expect("set above"))
            }
            _ => unreachable!("a location always belongs to its store's source"),
        }
    }

    /// A tensor converted to f32 (bf16 and f16 are widened exactly).
    pub fn load_f32(&self, key: &str) -> Result<Vec<f32>, FrontendError> {
        let info = self.require(key)?;
        let bytes = self.bytes(key)?;
        info.dtype.widen_le(bytes).ok_or_else(|| FrontendError::TensorMismatch {
            path: self.file_of(key).unwrap_or(self.dir()).to_path_buf(),
            key: key.to_string(),
            found: "i32".into(),
            expected: "a float tensor".into(),
        })
    }
}

/// Whether the kernels read the tensor under `key` of this rank in its block
/// format: matrices other than the MoE router, and MoE expert weights.
pub(crate) fn reads_blocks(key: &str, rank: usize) -> bool {
    match rank {
        2 => !key.contains(".router."),
        3 => key.contains(".experts."),
        _ => false,
    }
}

/// What `WeightStore::convert` does to a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conversion {
    /// `--quant`: a Hugging Face tensor quantized to this block format.
    Quantize(QuantFormat),
    /// A GGUF block-quantized tensor the kernels read as f32 (an MoE router).
    Dequantize,
    /// Gemma 3's Hugging Face norm weight, served as `1 + w`.
    PlusOne,
}

impl WeightStore {
    /// The tensors served through a conversion that has not run yet, in key
    /// order, with the stored bytes each reads: what `convert` will do (so a
    /// caller can show progress; otherwise each converts on first use).
    pub fn unconverted(&self) -> Vec<(&str, usize, Conversion)> {
        self.tensors
            .iter()
            .filter_map(|(key, e)| {
                let (conversion, done) = match &e.loc {
                    Location::Quantized(q, cell) => (Conversion::Quantize(*q), cell.get().is_some()),
                    Location::Dequantized(_, cell) => (Conversion::Dequantize, cell.get().is_some()),
                    Location::PlusOne(cell) => (Conversion::PlusOne, cell.get().is_some()),
                    Location::Safetensors | Location::GgufMapped(_) => return None,
                };
                let stored = match (&e.loc, &self.source) {
                    (Location::Dequantized(i, _), Source::Gguf(g)) => g.header.tensors[*i].len,
                    (_, Source::Safetensors(c)) => c.bytes(key).map_or(0, <[u8]>::len),
                    _ => 0,
                };
                (!done).then_some((key.as_str(), stored, conversion))
            })
            .collect()
    }

    /// Converts `key` now if it is served through a conversion (see `unconverted`).
    pub fn convert(&self, key: &str) -> Result<(), FrontendError> {
        self.bytes(key).map(|_| ())
    }
}

/// The bytes of f32 values. gemma4c reads tensors as little-endian, which is
/// the host order on every target it runs on (x86-64, aarch64).
fn f32_bytes(v: &[f32]) -> &[u8] {
    // SAFETY: any f32 is 4 initialized bytes; u8 has alignment 1; the length is
    // the slice's size in bytes, and the borrow keeps the values alive.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
}
