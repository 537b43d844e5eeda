//! Host tensors for the reference semantics: f32 or i32 data, row-major.

use crate::dtype::{DType, TensorType};

#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    F32(Vec<f32>),
    I32(Vec<i32>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Data,
}

impl Tensor {
    /// An f32 tensor; panics if `data` does not have `shape`'s element count
    /// (a programming error, never user input).
    pub fn f32(shape: impl Into<Vec<usize>>, data: Vec<f32>) -> Tensor {
        let shape = shape.into();
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "tensor data does not fit shape {shape:?}"
        );
        Tensor {
            shape,
            data: Data::F32(data),
        }
    }

    pub fn i32(shape: impl Into<Vec<usize>>, data: Vec<i32>) -> Tensor {
        let shape = shape.into();
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "tensor data does not fit shape {shape:?}"
        );
        Tensor {
            shape,
            data: Data::I32(data),
        }
    }

    pub fn zeros(ty: &TensorType) -> Tensor {
        match ty.dtype {
            DType::I32 => Tensor::i32(ty.shape.clone(), vec![0; ty.numel()]),
            _ => Tensor::f32(ty.shape.clone(), vec![0.0; ty.numel()]),
        }
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            Data::F32(v) => Some(v),
            Data::I32(_) => None,
        }
    }

    pub fn as_f32_mut(&mut self) -> Option<&mut [f32]> {
        match &mut self.data {
            Data::F32(v) => Some(v),
            Data::I32(_) => None,
        }
    }

    pub fn as_i32(&self) -> Option<&[i32]> {
        match &self.data {
            Data::I32(v) => Some(v),
            Data::F32(_) => None,
        }
    }

    /// Whether this tensor can stand for a value of type `ty` in the reference
    /// semantics (all float types are held as f32).
    pub fn fits(&self, ty: &TensorType) -> bool {
        self.shape == ty.shape
            && match self.data {
                Data::I32(_) => ty.dtype == DType::I32,
                Data::F32(_) => ty.dtype.is_float(),
            }
    }

    pub fn describe(&self) -> String {
        let dtype = match self.data {
            Data::F32(_) => "f32",
            Data::I32(_) => "i32",
        };
        format!("{dtype}{:?}", self.shape)
    }
}
