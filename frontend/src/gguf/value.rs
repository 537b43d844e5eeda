//! GGUF metadata values and tensor element types.

use gemma4c_ir::QuantFormat;

/// One metadata value. Arrays keep their element type so an empty array still
/// says what it would hold.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(MetaArray),
}

#[derive(Debug, Clone, PartialEq)]
pub struct MetaArray {
    /// The GGUF value type id of the elements.
    pub elem_type: u32,
    pub items: Vec<MetaValue>,
}

/// GGUF metadata value type ids.
pub mod type_id {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}

/// Fewest bytes one value of a type occupies in the file (used to bound array
/// counts by the bytes left); `None` for an unknown type.
pub fn min_encoded_size(type_id: u32) -> Option<usize> {
    use type_id::*;
    Some(match type_id {
        U8 | I8 | BOOL => 1,
        U16 | I16 => 2,
        U32 | I32 | F32 => 4,
        U64 | I64 | F64 => 8,
        STRING => 8,
        ARRAY => 12,
        _ => return None,
    })
}

impl MetaValue {
    /// Any integer type that fits `u64` (negative values do not).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::U8(v) => Some(v.into()),
            MetaValue::U16(v) => Some(v.into()),
            MetaValue::U32(v) => Some(v.into()),
            MetaValue::U64(v) => Some(v),
            MetaValue::I8(v) => u64::try_from(v).ok(),
            MetaValue::I16(v) => u64::try_from(v).ok(),
            MetaValue::I32(v) => u64::try_from(v).ok(),
            MetaValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            MetaValue::I8(v) => Some(v.into()),
            MetaValue::I16(v) => Some(v.into()),
            MetaValue::I32(v) => Some(v.into()),
            MetaValue::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    /// Any float or integer, as f64.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(v) => Some(v.into()),
            MetaValue::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetaValue::Bool(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            MetaValue::Array(a) => Some(&a.items),
            _ => None,
        }
    }

    /// A short description for messages (`u32`, `array of string`, ...).
    pub fn kind(&self) -> String {
        match self {
            MetaValue::U8(_) => "u8".into(),
            MetaValue::I8(_) => "i8".into(),
            MetaValue::U16(_) => "u16".into(),
            MetaValue::I16(_) => "i16".into(),
            MetaValue::U32(_) => "u32".into(),
            MetaValue::I32(_) => "i32".into(),
            MetaValue::U64(_) => "u64".into(),
            MetaValue::I64(_) => "i64".into(),
            MetaValue::F32(_) => "f32".into(),
            MetaValue::F64(_) => "f64".into(),
            MetaValue::Bool(_) => "bool".into(),
            MetaValue::String(_) => "string".into(),
            MetaValue::Array(a) => format!("array of {}", type_name(a.elem_type)),
        }
    }
}

fn type_name(id: u32) -> &'static str {
    use type_id::*;
    match id {
        U8 => "u8",
        I8 => "i8",
        U16 => "u16",
        I16 => "i16",
        U32 => "u32",
        I32 => "i32",
        F32 => "f32",
        BOOL => "bool",
        STRING => "string",
        ARRAY => "array",
        U64 => "u64",
        I64 => "i64",
        F64 => "f64",
        _ => "unknown",
    }
}

/// Element type of a stored tensor (`ggml_type`). Only types whose storage size
/// is known are accepted; the others are rejected by the reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    F64,
    I8,
    I16,
    I32,
    I64,
    Quant(QuantFormat),
    /// Known block geometry, but gemma4c has no dequantization for it.
    Other {
        id: u32,
        name: &'static str,
        block_elems: usize,
        block_bytes: usize,
    },
}

impl GgmlType {
    pub fn from_id(id: u32) -> Option<GgmlType> {
        let other = |name, block_elems, block_bytes| GgmlType::Other {
            id,
            name,
            block_elems,
            block_bytes,
        };
        Some(match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Quant(QuantFormat::Q4_0),
            3 => GgmlType::Quant(QuantFormat::Q4_1),
            6 => GgmlType::Quant(QuantFormat::Q5_0),
            7 => GgmlType::Quant(QuantFormat::Q5_1),
            8 => GgmlType::Quant(QuantFormat::Q8_0),
            9 => other("q8_1", 32, 36),
            10 => other("q2_K", 256, 84),
            11 => other("q3_K", 256, 110),
            12 => GgmlType::Quant(QuantFormat::Q4K),
            13 => GgmlType::Quant(QuantFormat::Q5K),
            14 => GgmlType::Quant(QuantFormat::Q6K),
            15 => other("q8_K", 256, 292),
            24 => GgmlType::I8,
            25 => GgmlType::I16,
            26 => GgmlType::I32,
            27 => GgmlType::I64,
            28 => GgmlType::F64,
            30 => GgmlType::BF16,
            _ => return None,
        })
    }

    /// (values per block, bytes per block); 1 value per "block" for plain types.
    pub fn block(self) -> (usize, usize) {
        match self {
            GgmlType::F32 | GgmlType::I32 => (1, 4),
            GgmlType::F16 | GgmlType::BF16 | GgmlType::I16 => (1, 2),
            GgmlType::F64 | GgmlType::I64 => (1, 8),
            GgmlType::I8 => (1, 1),
            GgmlType::Quant(q) => (q.block_elems(), q.block_bytes()),
            GgmlType::Other {
                block_elems,
                block_bytes,
                ..
            } => (block_elems, block_bytes),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "f32",
            GgmlType::F16 => "f16",
            GgmlType::BF16 => "bf16",
            GgmlType::F64 => "f64",
            GgmlType::I8 => "i8",
            GgmlType::I16 => "i16",
            GgmlType::I32 => "i32",
            GgmlType::I64 => "i64",
            GgmlType::Quant(q) => q.name(),
            GgmlType::Other { name, .. } => name,
        }
    }
}
