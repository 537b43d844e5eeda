//! The GGUF container (v2 and v3): header, metadata, tensor infos, data section.
//!
//! Every count, length and offset comes from an untrusted file, so each is
//! checked against the bytes that remain before anything is allocated or read:
//! an array of N values needs at least N times its element's smallest encoding,
//! a tensor's bytes must lie inside the file. All arithmetic is checked.

use std::collections::BTreeMap;

use thiserror::Error;

use super::value::{min_encoded_size, type_id, GgmlType, MetaArray, MetaValue};

/// "GGUF" read as a little-endian u32.
const MAGIC: u32 = 0x4655_4747;
/// Data section alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Tensors have at most this many dimensions (`GGML_MAX_DIMS`).
const MAX_DIMS: u32 = 4;
/// Arrays of arrays nest at most this deep (a hostile file could otherwise
/// recurse until the stack overflows).
const MAX_NESTING: usize = 4;

/// Why a GGUF file was rejected. `field` names the metadata key, the tensor or
/// the header field being read.
#[derive(Debug, Error, PartialEq)]
pub enum GgufError {
    #[error("{field}: file ends at byte {len}, but {need} more bytes are needed at byte {at}")]
    Truncated {
        field: String,
        at: usize,
        need: u64,
        len: usize,
    },
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> GgufError {
    GgufError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// Where a tensor's bytes are and how to read them.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensorInfo {
    pub name: String,
    /// GGUF dimension order: `dims[0]` varies fastest (columns).
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Absolute byte range in the file.
    pub start: usize,
    pub len: usize,
}

impl GgufTensorInfo {
    /// Row-major shape, slowest dimension first (`[rows, cols]` for a matrix),
    /// the order PyTorch and the IR use.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    pub fn numel(&self) -> usize {
        self.dims.iter().product::<u64>() as usize
    }
}

/// A parsed header: everything but the tensor data, which stays in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufHeader {
    pub version: u32,
    pub metadata: BTreeMap<String, MetaValue>,
    /// In file order.
    pub tensors: Vec<GgufTensorInfo>,
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_start: usize,
}

impl GgufHeader {
    /// Parses and validates the header of the GGUF file held in `bytes`: each
    /// tensor's byte range is checked to lie inside `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<GgufHeader, GgufError> {
        let mut c = Cursor { bytes, at: 0 };
        let magic = c.u32("magic")?;
        if magic != MAGIC {
            return Err(invalid(
                "magic",
                format!("not a GGUF file (starts with {:02x?}, expected \"GGUF\")", &bytes[..4]),
            ));
        }
        let version = c.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(invalid(
                "version",
                format!("GGUF version {version} is not supported (2 and 3 are)"),
            ));
        }
        let tensor_count = c.u64("tensor_count")?;
        let kv_count = c.u64("metadata_kv_count")?;

        let mut metadata = BTreeMap::new();
        c.bound_count(kv_count, 8 + 4 + 1, "metadata_kv_count")?;
        for i in 0..kv_count {
            let key = c.string(&format!("metadata key #{i}"))?;
            let vtype = c.u32(&format!("metadata `{key}` type"))?;
            let value = c.value(vtype, &key, 0)?;
            if metadata.insert(key.clone(), value).is_some() {
                return Err(invalid(format!("metadata `{key}`"), "key appears twice"));
            }
        }

        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() => a,
                _ => {
                    return Err(invalid(
                        "metadata `general.alignment`",
                        format!("expected a power of two, found {v:?}"),
                    ))
                }
            },
        };

        c.bound_count(tensor_count, 8 + 4 + 8 + 4 + 8, "tensor_count")?;
        let mut raw = Vec::new();
        for i in 0..tensor_count {
            raw.push(c.tensor_info(i)?);
        }
        let data_start = align_up(c.at as u64, alignment)
            .and_then(|d| usize::try_from(d).ok())
            .filter(|&d| d <= bytes.len())
            .ok_or_else(|| {
                invalid(
                    "data section",
                    format!("its start (aligned to {alignment}) is past the end of the file"),
                )
            })?;

        let mut tensors = Vec::with_capacity(raw.len());
        let mut names = std::collections::HashSet::new();
        for (name, dims, ggml_type, offset) in raw {
            let field = format!("tensor `{name}`");
            if !names.insert(name.clone()) {
                return Err(invalid(field, "name appears twice"));
            }
            if offset % alignment != 0 {
                return Err(invalid(
                    field,
                    format!("data offset {offset} is not a multiple of the alignment {alignment}"),
                ));
            }
            let numel = dims
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .ok_or_else(|| invalid(&field, format!("dimensions {dims:?} overflow")))?;
            let (block_elems, block_bytes) = ggml_type.block();
            if dims[0] % block_elems as u64 != 0 {
                return Err(invalid(
                    &field,
                    format!(
                        "first dimension {} is not a multiple of the {} block size {block_elems}",
                        dims[0],
                        ggml_type.name()
                    ),
                ));
            }
            let len = (numel / block_elems as u64)
                .checked_mul(block_bytes as u64)
                .ok_or_else(|| invalid(&field, "byte size overflows"))?;
            let end = (data_start as u64).checked_add(offset).and_then(|s| s.checked_add(len));
            match end {
                Some(end) if end <= bytes.len() as u64 => {}
                _ => {
                    return Err(invalid(
                        &field,
                        format!(
                            "{len} bytes of {} at data offset {offset} run past the end of the file ({} bytes, data section at {data_start})",
                            ggml_type.name(),
                            bytes.len()
                        ),
                    ))
                }
            }
            tensors.push(GgufTensorInfo {
                name,
                dims,
                ggml_type,
                start: data_start + offset as usize,
                len: len as usize,
            });
        }
        Ok(GgufHeader {
            version,
            metadata,
            tensors,
            alignment,
            data_start,
        })
    }
}

fn align_up(x: u64, a: u64) -> Option<u64> {
    x.checked_add(a - 1).map(|v| v / a * a)
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: u64, field: &str) -> Result<&[u8], GgufError> {
        let left = (self.bytes.len() - self.at) as u64;
        if n > left {
            return Err(GgufError::Truncated {
                field: field.to_string(),
                at: self.at,
                need: n,
                len: self.bytes.len(),
            });
        }
        let s = &self.bytes[self.at..self.at + n as usize];
        self.at += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, field: &str) -> Result<[u8; N], GgufError> {
        let s = self.take(N as u64, field)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, field: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    fn u64(&mut self, field: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    /// Fails unless `count` items of at least `min_size` bytes each fit in the
    /// rest of the file, so no loop or allocation can exceed the file's size.
    fn bound_count(&self, count: u64, min_size: u64, field: &str) -> Result<(), GgufError> {
        let left = (self.bytes.len() - self.at) as u64;
        if count.checked_mul(min_size).is_none_or(|need| need > left) {
            return Err(invalid(
                field,
                format!("count {count} cannot fit in the {left} bytes left in the file"),
            ));
        }
        Ok(())
    }

    fn string(&mut self, field: &str) -> Result<String, GgufError> {
        let len = self.u64(&format!("{field} (string length)"))?;
        let bytes = self.take(len, field)?;
        String::from_utf8(bytes.to_vec()).map_err(|e| invalid(field, format!("string is not UTF-8: {e}")))
    }

    fn value(&mut self, vtype: u32, key: &str, depth: usize) -> Result<MetaValue, GgufError> {
        use type_id::*;
        let field = format!("metadata `{key}`");
        Ok(match vtype {
            U8 => MetaValue::U8(self.array::<1>(&field)?[0]),
            I8 => MetaValue::I8(self.array::<1>(&field)?[0] as i8),
            U16 => MetaValue::U16(u16::from_le_bytes(self.array(&field)?)),
            I16 => MetaValue::I16(i16::from_le_bytes(self.array(&field)?)),
            U32 => MetaValue::U32(self.u32(&field)?),
            I32 => MetaValue::I32(i32::from_le_bytes(self.array(&field)?)),
            U64 => MetaValue::U64(self.u64(&field)?),
            I64 => MetaValue::I64(i64::from_le_bytes(self.array(&field)?)),
            F32 => MetaValue::F32(f32::from_le_bytes(self.array(&field)?)),
            F64 => MetaValue::F64(f64::from_le_bytes(self.array(&field)?)),
            BOOL => match self.array::<1>(&field)?[0] {
                0 => MetaValue::Bool(false),
                1 => MetaValue::Bool(true),
                b => return Err(invalid(field, format!("bool byte is {b}, expected 0 or 1"))),
            },
            STRING => MetaValue::String(self.string(&field)?),
            ARRAY => {
                if depth >= MAX_NESTING {
                    return Err(invalid(field, format!("arrays nested deeper than {MAX_NESTING}")));
                }
                let elem_type = self.u32(&format!("{field} (array element type)"))?;
                let min = min_encoded_size(elem_type)
                    .ok_or_else(|| invalid(&field, format!("unknown array element type {elem_type}")))?;
                let count = self.u64(&format!("{field} (array length)"))?;
                self.bound_count(count, min as u64, &format!("{field} (array length)"))?;
                let mut items = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    items.push(self.value(elem_type, key, depth + 1)?);
                }
                MetaValue::Array(MetaArray { elem_type, items })
            }
            other => return Err(invalid(field, format!("unknown value type {other}"))),
        })
    }

    #[allow(clippy::type_complexity)]
    fn tensor_info(&mut self, i: u64) -> Result<(String, Vec<u64>, GgmlType, u64), GgufError> {
        let name = self.string(&format!("tensor #{i} name"))?;
        let field = format!("tensor `{name}`");
        let n_dims = self.u32(&format!("{field} dimension count"))?;
        if !(1..=MAX_DIMS).contains(&n_dims) {
            return Err(invalid(
                field,
                format!("{n_dims} dimensions (expected 1 to {MAX_DIMS})"),
            ));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            let d = self.u64(&format!("{field} dimensions"))?;
            if d == 0 {
                return Err(invalid(&field, "a dimension is 0"));
            }
            dims.push(d);
        }
        let type_id = self.u32(&format!("{field} type"))?;
        let ggml_type =
            GgmlType::from_id(type_id).ok_or_else(|| invalid(&field, format!("unknown tensor type {type_id}")))?;
        let offset = self.u64(&format!("{field} data offset"))?;
        Ok((name, dims, ggml_type, offset))
    }
}
