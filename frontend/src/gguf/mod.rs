//! GGUF files (llama.cpp's format): a memory-mapped file, its parsed header,
//! typed metadata access and tensor data (borrowed from the mapping, or
//! dequantized to f32).
//!
//! The parser's entry point is [`GgufHeader::parse`] on plain bytes, so it can
//! be tested and fuzzed without files.

pub mod gemma;
mod gemma3;
mod gemma4;
mod reader;
mod value;
pub mod write;

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

pub use reader::{GgufError, GgufHeader, GgufTensorInfo, DEFAULT_ALIGNMENT};
pub use value::{type_id, GgmlType, MetaArray, MetaValue};

use crate::error::FrontendError;

pub struct GgufFile {
    pub path: PathBuf,
    mmap: Mmap,
    pub header: GgufHeader,
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<GgufFile, FrontendError> {
        let io = |message: String| FrontendError::Io {
            path: path.to_path_buf(),
            message,
        };
        // A FIFO would block `open`, a device would map endlessly.
        gemma4c_ir::limits::check_regular_file(path).map_err(io)?;
        let file = File::open(path).map_err(|e| io(format!("cannot open: {e}")))?;
        // SAFETY: read-only mapping; a file modified while gemma4c runs is outside
        // what any loader can defend against.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| io(format!("cannot map: {e}")))?;
        let header = GgufHeader::parse(&mmap).map_err(|e| FrontendError::Gguf {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(GgufFile {
            path: path.to_path_buf(),
            mmap,
            header,
        })
    }

    /// True when `path` starts with the GGUF magic.
    pub fn sniff(path: &Path) -> bool {
        use std::io::Read;
        let mut magic = [0u8; 4];
        File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && &magic == b"GGUF"
    }

    pub fn tensor(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.header.tensors.iter().find(|t| t.name == name)
    }

    /// The tensor's stored bytes, straight from the mapping (validated at parse).
    pub fn bytes(&self, t: &GgufTensorInfo) -> &[u8] {
        &self.mmap[t.start..t.start + t.len]
    }

    /// The tensor's values as f32: plain float types widen exactly, block
    /// formats dequantize as gguf-py does.
    pub fn dequantize(&self, t: &GgufTensorInfo) -> Result<Vec<f32>, FrontendError> {
        let bytes = self.bytes(t);
        let unsupported = || FrontendError::Gguf {
            path: self.path.clone(),
            message: format!(
                "tensor `{}`: element type {} cannot be read as floats (supported: f32, f16, bf16, {})",
                t.name,
                t.ggml_type.name(),
                gemma4c_ir::QuantFormat::ALL.map(|q| q.name()).join(", ")
            ),
        };
        let widen = |d: gemma4c_ir::DType| d.widen_le(bytes).ok_or_else(unsupported);
        match t.ggml_type {
            GgmlType::F32 => widen(gemma4c_ir::DType::F32),
            GgmlType::F16 => widen(gemma4c_ir::DType::F16),
            GgmlType::BF16 => widen(gemma4c_ir::DType::BF16),
            GgmlType::Quant(q) => {
                let mut out = vec![0f32; t.numel()];
                q.dequantize(bytes, &mut out).map_err(|m| FrontendError::Gguf {
                    path: self.path.clone(),
                    message: format!("tensor `{}`: {m}", t.name),
                })?;
                Ok(out)
            }
            _ => Err(unsupported()),
        }
    }

    pub fn meta(&self, key: &str) -> Option<&MetaValue> {
        self.header.metadata.get(key)
    }

    fn meta_error(&self, key: &str, message: String) -> FrontendError {
        FrontendError::Config {
            path: self.path.clone(),
            field: key.to_string(),
            message,
        }
    }

    /// A required metadata value, converted by `get` (which names what it expects).
    fn required<'a, T>(
        &'a self,
        key: &str,
        what: &str,
        get: impl Fn(&'a MetaValue) -> Option<T>,
    ) -> Result<T, FrontendError> {
        match self.meta(key) {
            None => Err(self.meta_error(key, format!("missing (expected {what})"))),
            Some(v) => get(v).ok_or_else(|| self.meta_error(key, format!("is {}, expected {what}", v.kind()))),
        }
    }

    pub fn str(&self, key: &str) -> Result<&str, FrontendError> {
        self.required(key, "a string", |v| v.as_str())
    }

    pub fn usize(&self, key: &str) -> Result<usize, FrontendError> {
        self.required(key, "a non-negative integer", |v| {
            v.as_u64().and_then(|x| usize::try_from(x).ok())
        })
    }

    pub fn usize_or(&self, key: &str, default: usize) -> Result<usize, FrontendError> {
        if self.meta(key).is_none() {
            return Ok(default);
        }
        self.usize(key)
    }

    pub fn f64(&self, key: &str) -> Result<f64, FrontendError> {
        self.required(key, "a number", |v| v.as_f64())
    }

    pub fn f64_or(&self, key: &str, default: f64) -> Result<f64, FrontendError> {
        if self.meta(key).is_none() {
            return Ok(default);
        }
        self.f64(key)
    }

    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool, FrontendError> {
        if self.meta(key).is_none() {
            return Ok(default);
        }
        self.required(key, "a bool", |v| v.as_bool())
    }

    pub fn array(&self, key: &str) -> Result<&[MetaValue], FrontendError> {
        self.required(key, "an array", |v| v.as_array())
    }
}
