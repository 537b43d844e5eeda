//! `bfloat8_b`: Tenstorrent's block floating point for weights, emulated bit for bit so that the
//! simulator computes with the values the device would hold.
//!
//! The format (tt-metal `tt_metal/impl/data_format/blockfloat_common.cpp`, `pack_as_bfp_tiles`
//! with `Bfp8_b`, `is_exp_a = false`): a 32x32 tile is four 16x16 faces; each row of a face, i.e.
//! 16 consecutive elements of one tile row, shares one 8-bit exponent, the largest biased f32
//! exponent among them. Each element keeps a sign and a 7-bit mantissa: its 24-bit significand
//! (hidden one included) shifted right by `shared - own exponent`, then rounded to 7 bits, to
//! nearest with ties to even, and saturated at 127. It decodes to
//! `mantissa * 2^(shared - 127 - 6)`. A tile is 1024 mantissa bytes + 64 exponent bytes.
//!
//! Every decoded value has at most 7 significant bits, so it is exact in bf16: the generated
//! weights.safetensors stores the rounded values as bf16, and `ttnn.from_torch(...,
//! dtype=ttnn.bfloat8_b)` on the device packs them again without further change (same shared
//! exponent, every mantissa already representable).

/// Elements sharing one exponent (one row of a 16x16 face).
pub const BLOCK: usize = 16;

/// Bytes of one bfloat8_b 32x32 tile: 1024 mantissas + 64 shared exponents.
pub const TILE_BYTES: usize = 32 * 32 + 64;

/// The 8-bit sign+mantissa of `x` under shared exponent `shared` (tt-metal's
/// `convert_u32_to_bfp<Bfp8_b, false>`).
pub fn mantissa(x: f32, shared: u32) -> u8 {
    let bits = x.to_bits();
    if bits & 0x7fff_ffff == 0 {
        return 0;
    }
    let exp = (bits >> 23) & 0xff;
    let sign = bits >> 31;
    let mut m = (1u32 << 23) | (bits & 0x007f_ffff);
    if shared > exp {
        let diff = shared - exp;
        m = if diff > 31 { 0 } else { m >> diff };
    }
    const SHIFT: u32 = 24 - 7;
    const TIE: u32 = 1 << (SHIFT - 1);
    let round = m & ((1 << SHIFT) - 1);
    m >>= SHIFT;
    if round > TIE || (round == TIE && m & 1 == 1) {
        m += 1;
    }
    m = m.min(0x7f);
    let sign = if m == 0 { 0 } else { sign };
    ((sign << 7) | m) as u8
}

/// The value of sign+mantissa `q` under shared exponent `shared`.
pub fn decode(q: u8, shared: u32) -> f32 {
    let m = (q & 0x7f) as f32;
    let v = m * 2f32.powi(shared as i32 - 127 - 6);
    if q & 0x80 != 0 {
        -v
    } else {
        v
    }
}

/// Rounds a row-major matrix with `cols` columns (a multiple of 16, as every tile-padded device
/// tensor is) to the values its bfloat8_b tiles hold: each run of 16 columns of a row is one block.
pub fn round_matrix(values: &mut [f32], cols: usize) {
    assert!(cols.is_multiple_of(BLOCK), "bfloat8_b rows are whole 16-element blocks");
    for block in values.chunks_mut(BLOCK) {
        let shared = block.iter().map(|x| (x.to_bits() >> 23) & 0xff).max().unwrap_or(0);
        for x in block.iter_mut() {
            *x = decode(mantissa(*x, shared), shared);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// tt-metal's own rounding cases (tests/tt_metal/tt_metal/api/test_blockfloat_common.cpp):
    /// the shared exponent is the value's own, and the four rounding cases of the 17 dropped bits.
    #[test]
    fn rounding_matches_tt_metal_cases() {
        for (x, m, y) in [
            (64.75f32, 0x41u8, 65.0f32),
            (65.25, 0x41, 65.0),
            (64.5, 0x40, 64.0),
            (65.5, 0x42, 66.0),
        ] {
            for s in [1.0f32, -1.0] {
                let shared = ((s * x).to_bits() >> 23) & 0xff;
                let q = mantissa(s * x, shared);
                let want = if s < 0.0 { m | 0x80 } else { m };
                assert_eq!(q, want, "{}", s * x);
                assert_eq!(decode(q, shared), s * y);
            }
        }
    }

    #[test]
    fn blocks_share_the_largest_exponent_and_saturate() {
        // 1.0 and 0.01 in one block: 0.01 keeps only the bits above 2^-6.
        let mut v = vec![0.0f32; 32];
        v[0] = 1.0;
        v[1] = 0.01;
        v[2] = -0.3;
        v[3] = 1.999; // rounds up past 127/64: saturates
        v[16] = 0.01; // the second block has its own exponent
        round_matrix(&mut v, 32);
        assert_eq!(v[0], 1.0);
        assert_eq!(v[1], 1.0 / 64.0);
        assert_eq!(v[2], -19.0 / 64.0);
        assert_eq!(v[3], 127.0 / 64.0);
        assert_eq!(v[16], 82.0 / 8192.0);
        assert_eq!(v[4], 0.0);
        // Rounded values are fixed points, and exact in bf16.
        let again = {
            let mut w = v.clone();
            round_matrix(&mut w, 32);
            w
        };
        assert_eq!(v, again);
        for x in v {
            assert_eq!(half::bf16::from_f32(x).to_f32(), x);
        }
    }
}
