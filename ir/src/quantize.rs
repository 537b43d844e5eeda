//! Quantizers for the block formats `gemma4c compile/run --quant` writes.
//! Q8_0 and Q4_0 are bit-compatible with gguf-py's `gguf.quants.quantize`
//! (which gguf-py says is bit-exact with ggml's reference quantizers): f32
//! arithmetic in gguf-py's order, `np_roundf` (round half away from zero) and
//! f16 scales rounded to nearest even. gguf-py only dequantizes the k-quants;
//! Q4_K and Q6_K follow llama.cpp's own reference quantizers (`kquantize`).

use crate::quant::QuantFormat;

/// Formats `quantize` can write.
pub const QUANTIZERS: [QuantFormat; 4] = [QuantFormat::Q8_0, QuantFormat::Q4_0, QuantFormat::Q4K, QuantFormat::Q6K];

impl QuantFormat {
    /// `values` (whole blocks) in this format, as gguf-py would write them;
    /// an error for a format without a quantizer or a partial block.
    pub fn quantize(self, values: &[f32]) -> Result<Vec<u8>, String> {
        let be = self.block_elems();
        if !values.len().is_multiple_of(be) {
            return Err(format!("{} values are not whole {self} blocks of {be}", values.len()));
        }
        let mut out = Vec::with_capacity(values.len() / be * self.block_bytes());
        for block in values.chunks_exact(be) {
            match self {
                QuantFormat::Q8_0 => q8_0(block, &mut out),
                QuantFormat::Q4_0 => q4_0(block, &mut out),
                QuantFormat::Q4K => crate::kquantize::q4_k(block, &mut out),
                QuantFormat::Q6K => crate::kquantize::q6_k(block, &mut out),
                other => {
                    return Err(format!(
                        "no quantizer for {other} (supported: {})",
                        QUANTIZERS.map(|q| q.name()).join(", ")
                    ))
                }
            }
        }
        Ok(out)
    }
}

fn f16_bytes(x: f32) -> [u8; 2] {
    half::f16::from_f32(x).to_le_bytes()
}

/// `d = max|x| / 127`, `q = roundf(x / d)` (as `x * (1/d)`).
fn q8_0(x: &[f32], out: &mut Vec<u8>) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d == 0.0 { 0.0 } else { 1.0 / d };
    out.extend_from_slice(&f16_bytes(d));
    // f32::round rounds half away from zero, as np_roundf does; |x * id| <= 127.
    out.extend(x.iter().map(|v| (v * id).round() as i8 as u8));
}

/// `d = x[argmax |x|] / -8` (the signed value of largest magnitude, first one
/// on ties), `q = min(15, trunc(x / d + 8.5))`, low nibbles values 0..16.
fn q4_0(x: &[f32], out: &mut Vec<u8>) {
    let mut max = 0f32;
    for &v in x {
        if v.abs() > max.abs() {
            max = v;
        }
    }
    let d = max / -8.0;
    let id = if d == 0.0 { 0.0 } else { 1.0 / d };
    out.extend_from_slice(&f16_bytes(d));
    let q = |v: f32| ((v * id + 8.5).trunc() as u8).min(15);
    out.extend((0..16).map(|j| q(x[j]) | (q(x[j + 16]) << 4)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantize_then_dequantize_is_close() {
        for q in QUANTIZERS {
            let n = 2 * q.block_elems();
            let x: Vec<f32> = (0..n).map(|i| ((i * 37 % 64) as f32 - 31.5) / 10.0).collect();
            let bytes = q.quantize(&x).unwrap();
            assert_eq!(bytes.len(), 2 * q.block_bytes());
            let mut back = vec![0f32; n];
            q.dequantize(&bytes, &mut back).unwrap();
            let step = if q == QuantFormat::Q8_0 { 3.2 / 127.0 } else { 3.2 / 8.0 };
            for (a, b) in x.iter().zip(&back) {
                assert!((a - b).abs() <= step, "{q}: {a} -> {b}");
            }
        }
    }

    #[test]
    fn zero_blocks_and_unsupported_formats() {
        let bytes = QuantFormat::Q8_0.quantize(&[0.0; 32]).unwrap();
        assert!(bytes.iter().all(|&b| b == 0));
        let err = QuantFormat::Q5K.quantize(&[0.0; 256]).unwrap_err();
        assert!(err.contains("no quantizer for q5_K"), "{err}");
        assert!(QuantFormat::Q8_0.quantize(&[0.0; 31]).is_err());
    }
}
