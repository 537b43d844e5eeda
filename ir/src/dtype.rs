//! Element types and tensor types.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::quant::QuantFormat;

/// Element type of a tensor.
///
/// `Block` is a weight stored in one of GGUF's block formats: each row of the
/// last dimension is `cols / block_elems` blocks of `block_bytes`, read as
/// stored (from the memory map) and dequantized where it is used. Activations
/// are never block-quantized. Serialized as its name (`"f32"`, `"q4_K"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DType {
    F32,
    BF16,
    F16,
    I32,
    Block(QuantFormat),
}

impl DType {
    /// Bytes per element of an element type; for a block format, the bytes
    /// of one block (use `TensorType::size_bytes` or `bytes_for` for shapes).
    pub fn size_bytes(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::BF16 | DType::F16 => 2,
            DType::Block(q) => q.block_bytes(),
        }
    }

    /// Bytes of a tensor of this type and `shape`, or `None` when the sizes
    /// overflow or (block formats) the last dimension is not whole blocks.
    pub fn bytes_for(self, shape: &[usize]) -> Option<usize> {
        match self {
            DType::Block(q) => {
                let cols = *shape.last()?;
                if !cols.is_multiple_of(q.block_elems()) {
                    return None;
                }
                let rows = shape[..shape.len() - 1]
                    .iter()
                    .try_fold(1usize, |a, &d| a.checked_mul(d))?;
                rows.checked_mul(cols / q.block_elems())?.checked_mul(q.block_bytes())
            }
            _ => crate::limits::tensor_bytes(shape, self.size_bytes()),
        }
    }

    /// Alignment a buffer of this type needs (block formats are read bytewise).
    pub fn align(self) -> usize {
        match self {
            DType::Block(_) => 1,
            d => d.size_bytes(),
        }
    }

    pub fn is_float(self) -> bool {
        !matches!(self, DType::I32)
    }

    /// The block format of a block-quantized type.
    pub fn block(self) -> Option<QuantFormat> {
        match self {
            DType::Block(q) => Some(q),
            _ => None,
        }
    }

    /// Round an f32 to this dtype and back, as a value stored in it would be.
    /// Used where Hugging Face casts a Python-float constant to the weight dtype
    /// (the embedding scale `sqrt(H)` becomes 39.25 in bf16 for E2B).
    pub fn round_f32(self, x: f32) -> f32 {
        match self {
            DType::F32 | DType::I32 => x,
            DType::BF16 => half::bf16::from_f32(x).to_f32(),
            DType::F16 => half::f16::from_f32(x).to_f32(),
            DType::Block(_) => x,
        }
    }

    /// Little-endian stored values widened to f32 (exact for bf16 and f16;
    /// block formats are dequantized as gguf-py does, whole blocks only);
    /// `None` for an integer type or bytes that are not whole blocks.
    pub fn widen_le(self, bytes: &[u8]) -> Option<Vec<f32>> {
        Some(match self {
            DType::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            DType::BF16 => bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            DType::F16 => bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            DType::I32 => return None,
            DType::Block(q) => {
                let mut out = vec![0f32; bytes.len() / q.block_bytes() * q.block_elems()];
                q.dequantize(bytes, &mut out).ok()?;
                out
            }
        })
    }

    /// Parse the spellings used by Hugging Face configs and safetensors headers.
    pub fn parse(s: &str) -> Option<DType> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" | "float" => Some(DType::F32),
            "bf16" | "bfloat16" => Some(DType::BF16),
            "f16" | "float16" | "half" => Some(DType::F16),
            "i32" | "int32" => Some(DType::I32),
            other => QuantFormat::ALL
                .into_iter()
                .find(|q| q.name().eq_ignore_ascii_case(other))
                .map(DType::Block),
        }
    }
}

impl TryFrom<String> for DType {
    type Error = String;
    fn try_from(s: String) -> Result<DType, String> {
        DType::parse(&s).ok_or_else(|| format!("unknown dtype `{s}`"))
    }
}

impl From<DType> for String {
    fn from(d: DType) -> String {
        d.to_string()
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::BF16 => "bf16",
            DType::F16 => "f16",
            DType::I32 => "i32",
            DType::Block(q) => q.name(),
        })
    }
}

/// Shape and element type of one value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TensorType {
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl TensorType {
    pub fn new(dtype: DType, shape: impl Into<Vec<usize>>) -> Self {
        TensorType {
            dtype,
            shape: shape.into(),
        }
    }

    pub fn f32(shape: impl Into<Vec<usize>>) -> Self {
        Self::new(DType::F32, shape)
    }

    pub fn i32(shape: impl Into<Vec<usize>>) -> Self {
        Self::new(DType::I32, shape)
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Bytes as stored. Callers build types only through `infer` and the
    /// plan checker, which reject shapes whose size overflows or that are not
    /// whole blocks; such a type would report `usize::MAX`.
    pub fn size_bytes(&self) -> usize {
        self.dtype.bytes_for(&self.shape).unwrap_or(usize::MAX)
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Last dimension (1 for scalars).
    pub fn last_dim(&self) -> usize {
        self.shape.last().copied().unwrap_or(1)
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[", self.dtype)?;
        for (i, d) in self.shape.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}
