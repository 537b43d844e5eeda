//! Every formula of the model, written once.
//!
//! The reference semantics (`eval.rs`) call these with `f32`; the kernel builders
//! (`gemma4c_backends::kernel`) call the same functions with kernel-IR expressions, so the
//! generated code has the reference's constants and order of operations by construction.
//! Backends that print another language (TT-Lang's Python) use the constants below.

use std::ops::{Add, Div, Mul, Sub};

/// `sqrt(2 / pi)` of `gelu_pytorch_tanh`, as PyTorch writes it (`M_SQRT2 * M_2_SQRTPI * 0.5`).
pub const GELU_SQRT_2_OVER_PI: f64 = 0.7978845608028654;

/// The cubic coefficient of `gelu_pytorch_tanh`.
pub const GELU_CUBIC: f32 = 0.044715;

/// A number type the formulas can be written over: `f32` on the host, an expression tree in a
/// code generator. Operations build left to right exactly as written in each formula.
pub trait Real: Clone + Add<Output = Self> + Sub<Output = Self> + Mul<Output = Self> + Div<Output = Self> {
    /// An f32 constant.
    fn lit(x: f32) -> Self;
    fn tanh(self) -> Self;
    fn sqrt(self) -> Self;
}

impl Real for f32 {
    fn lit(x: f32) -> f32 {
        x
    }

    fn tanh(self) -> f32 {
        f32::tanh(self)
    }

    fn sqrt(self) -> f32 {
        f32::sqrt(self)
    }
}

/// `gelu_pytorch_tanh`: `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`.
pub fn gelu_tanh<T: Real>(x: T) -> T {
    let inner = x.clone() + T::lit(GELU_CUBIC) * x.clone() * x.clone() * x.clone();
    T::lit(0.5) * x * (T::lit(1.0) + (T::lit(GELU_SQRT_2_OVER_PI as f32) * inner).tanh())
}

/// Gemma's logit soft-cap: `tanh(x / cap) * cap`.
pub fn softcap<T: Real>(x: T, cap: f32) -> T {
    (x / T::lit(cap)).tanh() * T::lit(cap)
}

/// The RMSNorm factor of a row, `1 / sqrt(mean(x^2) + eps)`: eps is added to the mean of the
/// squares, inside the root. (Gemma 4 then multiplies by the weight as is, not `1 + w`.)
pub fn inv_rms<T: Real>(mean_square: T, eps: f32) -> T {
    T::lit(1.0) / (mean_square + T::lit(eps)).sqrt()
}

/// RoPE inverse frequencies in f32 like Hugging Face
/// (`1.0 / theta ** (arange(0, dim, 2).float() / dim)`, then `/ factor` for linear scaling);
/// pairs past `rotated_pairs` get 0 (not rotated).
pub fn rope_inv_freq(theta: f64, head_dim: usize, rotated_pairs: usize, factor: f64) -> Vec<f32> {
    (0..head_dim / 2)
        .map(|i| {
            if i < rotated_pairs {
                let exponent = (2 * i) as f32 / head_dim as f32;
                let f = 1.0f32 / (theta as f32).powf(exponent);
                (f as f64 / factor) as f32
            } else {
                0.0
            }
        })
        .collect()
}

/// The RoPE angle of a pair at a position (in f32, like Hugging Face).
pub fn rope_angle<T: Real>(position: T, inv_freq: T) -> T {
    position * inv_freq
}

/// cos/sin of `pos * inv_freq` for every pair.
pub fn rope_angles(inv_freq: &[f32], pos: i64) -> (Vec<f32>, Vec<f32>) {
    let angles: Vec<f32> = inv_freq.iter().map(|&f| rope_angle(pos as f32, f)).collect();
    (
        angles.iter().map(|a| a.cos()).collect(),
        angles.iter().map(|a| a.sin()).collect(),
    )
}

/// Half-split rotation of one pair: element `a` (lane `i`) and `b` (lane `i + D/2`) become
/// `(a cos - b sin, b cos + a sin)`.
pub fn rotate_pair<T: Real>(a: T, b: T, cos: T, sin: T) -> (T, T) {
    (a.clone() * cos.clone() - b.clone() * sin.clone(), b * cos + a * sin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gelu_constant_is_sqrt_2_over_pi() {
        assert_eq!(GELU_SQRT_2_OVER_PI, (2.0 / std::f64::consts::PI).sqrt());
        // The f32 the kernels use is the one the reference always used.
        assert_eq!(GELU_SQRT_2_OVER_PI as f32, 0.797_884_6f32);
    }

    #[test]
    fn formulas_give_known_values() {
        assert_eq!(gelu_tanh(0.0f32), 0.0);
        // torch.nn.functional.gelu(torch.tensor(1.0), approximate="tanh") = 0.8411920070648193
        assert!((gelu_tanh(1.0f32) - 0.841_192).abs() < 1e-6);
        assert!((softcap(1000.0f32, 30.0) - 30.0).abs() < 1e-5);
        assert_eq!(inv_rms(3.0f32, 1.0), 0.5);
        let (a, b) = rotate_pair(1.0f32, 0.0, 0.0, 1.0);
        assert_eq!((a, b), (0.0, 1.0));
        assert_eq!(rope_inv_freq(10000.0, 8, 2, 1.0), vec![1.0, 0.1, 0.0, 0.0]);
    }
}
