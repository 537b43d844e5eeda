//! Block-quantized storage formats of GGUF files (llama.cpp's `ggml` types) and
//! their reference dequantization.
//!
//! A quantized tensor is stored as rows of blocks; each block holds
//! `block_elems` values in `block_bytes` bytes (scales plus packed integers).
//! The reference semantics are those of gguf-py's `gguf.quants.dequantize`,
//! bit for bit: every scale is widened from f16 to f32 and every product is one
//! f32 multiply (no fused multiply-add), in the order gguf-py computes it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A block-quantized format (the `ggml_type` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum QuantFormat {
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q4K,
    Q5K,
    Q6K,
}

/// Values per super-block of the k-quants.
pub const QK_K: usize = 256;

impl QuantFormat {
    pub const ALL: [QuantFormat; 8] = [
        QuantFormat::Q4_0,
        QuantFormat::Q4_1,
        QuantFormat::Q5_0,
        QuantFormat::Q5_1,
        QuantFormat::Q8_0,
        QuantFormat::Q4K,
        QuantFormat::Q5K,
        QuantFormat::Q6K,
    ];

    /// Values per block.
    pub fn block_elems(self) -> usize {
        match self {
            QuantFormat::Q4_0 | QuantFormat::Q4_1 | QuantFormat::Q5_0 | QuantFormat::Q5_1 | QuantFormat::Q8_0 => 32,
            QuantFormat::Q4K | QuantFormat::Q5K | QuantFormat::Q6K => QK_K,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            QuantFormat::Q4_0 => 2 + 16,
            QuantFormat::Q4_1 => 2 + 2 + 16,
            QuantFormat::Q5_0 => 2 + 4 + 16,
            QuantFormat::Q5_1 => 2 + 2 + 4 + 16,
            QuantFormat::Q8_0 => 2 + 32,
            QuantFormat::Q4K => 2 + 2 + 12 + QK_K / 2,
            QuantFormat::Q5K => 2 + 2 + 12 + QK_K / 8 + QK_K / 2,
            QuantFormat::Q6K => QK_K / 2 + QK_K / 4 + QK_K / 16 + 2,
        }
    }

    /// The `ggml_type` name (`q4_K`, ...).
    pub fn name(self) -> &'static str {
        match self {
            QuantFormat::Q4_0 => "q4_0",
            QuantFormat::Q4_1 => "q4_1",
            QuantFormat::Q5_0 => "q5_0",
            QuantFormat::Q5_1 => "q5_1",
            QuantFormat::Q8_0 => "q8_0",
            QuantFormat::Q4K => "q4_K",
            QuantFormat::Q5K => "q5_K",
            QuantFormat::Q6K => "q6_K",
        }
    }

    /// Dequantizes whole blocks: `bytes.len()` must be a multiple of
    /// `block_bytes` and `out.len()` the matching number of values.
    pub fn dequantize(self, bytes: &[u8], out: &mut [f32]) -> Result<(), String> {
        let (bb, be) = (self.block_bytes(), self.block_elems());
        if !bytes.len().is_multiple_of(bb) || bytes.len() / bb * be != out.len() {
            return Err(format!(
                "{self}: {} bytes do not hold {} values ({be} values per {bb}-byte block)",
                bytes.len(),
                out.len()
            ));
        }
        for (block, out) in bytes.chunks_exact(bb).zip(out.chunks_exact_mut(be)) {
            match self {
                QuantFormat::Q4_0 => q4_0(block, out),
                QuantFormat::Q4_1 => q4_1(block, out),
                QuantFormat::Q5_0 => q5_0(block, out),
                QuantFormat::Q5_1 => q5_1(block, out),
                QuantFormat::Q8_0 => q8_0(block, out),
                QuantFormat::Q4K => q4_k(block, out),
                QuantFormat::Q5K => q5_k(block, out),
                QuantFormat::Q6K => q6_k(block, out),
            }
        }
        Ok(())
    }
}

impl fmt::Display for QuantFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn f16_at(b: &[u8], at: usize) -> f32 {
    half::f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// `d * (q - 8)`: 16 bytes of nibbles, low nibbles are values 0..16, high 16..32.
fn q4_0(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    for (j, &q) in b[2..18].iter().enumerate() {
        out[j] = d * ((q & 0x0f) as i8 - 8) as f32;
        out[j + 16] = d * ((q >> 4) as i8 - 8) as f32;
    }
}

/// `d * q + m`.
fn q4_1(b: &[u8], out: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    for (j, &q) in b[4..20].iter().enumerate() {
        out[j] = d * (q & 0x0f) as f32 + m;
        out[j + 16] = d * (q >> 4) as f32 + m;
    }
}

/// Nibble plus a fifth bit from the 32-bit `qh` (bit `j` for value `j`).
fn five_bit(qs: &[u8], qh: u32, j: usize) -> u8 {
    let nibble = if j < 16 { qs[j] & 0x0f } else { qs[j - 16] >> 4 };
    nibble | ((((qh >> j) & 1) as u8) << 4)
}

/// `d * (q - 16)` with 5-bit `q`.
fn q5_0(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    for (j, o) in out.iter_mut().enumerate() {
        *o = d * (five_bit(&b[6..22], qh, j) as i8 - 16) as f32;
    }
}

/// `d * q + m` with 5-bit `q`.
fn q5_1(b: &[u8], out: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    for (j, o) in out.iter_mut().enumerate() {
        *o = d * five_bit(&b[8..24], qh, j) as f32 + m;
    }
}

/// `d * q` with signed 8-bit `q`.
fn q8_0(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    for (o, &q) in out.iter_mut().zip(&b[2..34]) {
        *o = d * (q as i8) as f32;
    }
}

/// The eight 6-bit (scale, min) pairs of a Q4_K/Q5_K super-block, packed in 12 bytes.
pub(crate) fn scale_min_k4(s: &[u8]) -> ([u8; 8], [u8; 8]) {
    let (mut sc, mut m) = ([0u8; 8], [0u8; 8]);
    for j in 0..4 {
        sc[j] = s[j] & 0x3f;
        m[j] = s[j + 4] & 0x3f;
        sc[j + 4] = (s[j + 8] & 0x0f) | ((s[j] >> 2) & 0x30);
        m[j + 4] = (s[j + 8] >> 4) | ((s[j + 4] >> 2) & 0x30);
    }
    (sc, m)
}

/// Eight sub-blocks of 32: `(d * sc) * q - (dmin * m)`; sub-block `2c` is the low
/// nibbles of bytes `32c..32c+32`, sub-block `2c+1` their high nibbles.
fn q4_k(b: &[u8], out: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let (sc, m) = scale_min_k4(&b[4..16]);
    let qs = &b[16..144];
    for (j, sub) in out.chunks_exact_mut(32).enumerate() {
        let (dl, ml) = (d * sc[j] as f32, dmin * m[j] as f32);
        let bytes = &qs[32 * (j / 2)..32 * (j / 2) + 32];
        let shift = 4 * (j % 2);
        for (o, &q) in sub.iter_mut().zip(bytes) {
            *o = dl * ((q >> shift) & 0x0f) as f32 - ml;
        }
    }
}

/// Q4_K plus a fifth bit: bit `j` of `qh[l]` for value `l` of sub-block `j`.
fn q5_k(b: &[u8], out: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let (sc, m) = scale_min_k4(&b[4..16]);
    let qh = &b[16..48];
    let qs = &b[48..176];
    for (j, sub) in out.chunks_exact_mut(32).enumerate() {
        let (dl, ml) = (d * sc[j] as f32, dmin * m[j] as f32);
        let bytes = &qs[32 * (j / 2)..32 * (j / 2) + 32];
        let shift = 4 * (j % 2);
        for (l, o) in sub.iter_mut().enumerate() {
            let q = ((bytes[l] >> shift) & 0x0f) | (((qh[l] >> j) & 1) << 4);
            *o = dl * q as f32 - ml;
        }
    }
}

/// Sixteen sub-blocks of 16 with signed 8-bit scales: `(d * scale) * (q - 32)`,
/// `q` = 4 low bits from `ql` and 2 high bits from `qh`.
fn q6_k(b: &[u8], out: &mut [f32]) {
    let (ql, qh, scales) = (&b[0..128], &b[128..192], &b[192..208]);
    let d = f16_at(b, 208);
    for (e, o) in out.iter_mut().enumerate() {
        let (half, r) = (e / 128, e % 128);
        let low = (ql[64 * half + r % 64] >> (4 * (r / 64))) & 0x0f;
        let high = (qh[32 * half + r % 32] >> (2 * (r / 32))) & 0x03;
        let q = (low | (high << 4)) as i8 - 32;
        *o = (d * (scales[e / 16] as i8) as f32) * q as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_geometry_matches_ggml() {
        let sizes: Vec<_> = QuantFormat::ALL
            .iter()
            .map(|q| (q.block_elems(), q.block_bytes()))
            .collect();
        assert_eq!(
            sizes,
            [
                (32, 18),
                (32, 20),
                (32, 22),
                (32, 24),
                (32, 34),
                (256, 144),
                (256, 176),
                (256, 210)
            ]
        );
    }

    #[test]
    fn q8_0_is_scale_times_int8() {
        let mut block = vec![0u8; 34];
        block[..2].copy_from_slice(&half::f16::from_f32(0.5).to_le_bytes());
        block[2] = 0xff; // -1
        block[3] = 7;
        let mut out = [0f32; 32];
        QuantFormat::Q8_0.dequantize(&block, &mut out).unwrap();
        assert_eq!(&out[..3], &[-0.5, 3.5, 0.0]);
    }

    #[test]
    fn wrong_lengths_are_errors() {
        let mut out = [0f32; 32];
        let err = QuantFormat::Q4K.dequantize(&[0u8; 100], &mut out).unwrap_err();
        assert!(err.contains("q4_K"), "{err}");
    }
}
