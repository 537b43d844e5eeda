//! Quantizers for the k-quant super-blocks `--quant q4_k|q6_k` writes, byte for
//! byte what llama.cpp's reference quantizers write (`quantize_row_q4_K_ref`,
//! `quantize_row_q6_K_ref` in ggml-quants.c, which `llama-quantize` uses when no
//! importance matrix is given). gguf-py only dequantizes k-quants, so the
//! reference here is llama.cpp itself (`tools/make_kquant_reference.py`).
//!
//! Byte equality needs llama.cpp's f32 arithmetic in its order: every sum is
//! accumulated left to right, `a*b*c` is `(a*b)*c`, nothing is fused into an
//! FMA (Rust never contracts; llama.cpp's ggml-base is built without FMA), and
//! rounding goes through ggml's `nearest_int`.

use crate::quant::QK_K;

/// ggml's `GROUP_MAX_EPS`: a group whose largest magnitude is below this is all zero.
const GROUP_MAX_EPS: f32 = 1e-15;

/// ggml's `nearest_int`: adds 1.5 * 2^23 so the f32 addition rounds to an
/// integer (ties to even) and reads it from the mantissa. Written bit for bit,
/// including what it does outside its asserted range |x| <= 2^22 (ggml's
/// release builds do not check), so even odd inputs quantize as llama.cpp's.
fn nearest_int(x: f32) -> i32 {
    let bits = (x + 12_582_912.0).to_bits() as i32;
    (bits & 0x007f_ffff) - 0x0040_0000
}

fn f16_round(x: f32) -> half::f16 {
    half::f16::from_f32(x)
}

/// One Q4_K super-block (256 values → 144 bytes): f16 `d`, f16 `dmin`, twelve
/// bytes of 6-bit sub-block scales and mins, 128 bytes of 4-bit values. Each
/// sub-block of 32 gets a scale and min fitted by `fit_scale_min`, weighted
/// by `rms + |x|`; the scales and mins are then quantized to 6 bits against
/// the block's largest, and the values requantized with the rounded ones.
pub(crate) fn q4_k(x: &[f32], out: &mut Vec<u8>) {
    debug_assert_eq!(x.len(), QK_K);
    let mut levels = [0u8; QK_K];
    let mut scales = [0f32; QK_K / 32];
    let mut mins = [0f32; QK_K / 32];
    let mut max_scale = 0f32; // scales are positive: the min is subtracted
    let mut max_min = 0f32;
    for j in 0..QK_K / 32 {
        let sub = &x[32 * j..32 * j + 32];
        let mut sum_x2 = 0f32;
        for &v in sub {
            sum_x2 += v * v;
        }
        let rms = (sum_x2 / 32.0).sqrt();
        let mut weights = [0f32; 32];
        for (w, &v) in weights.iter_mut().zip(sub) {
            *w = rms + v.abs();
        }
        let (scale, min) = fit_scale_min(15, sub, &weights, &mut levels[32 * j..32 * j + 32]);
        scales[j] = scale;
        mins[j] = min;
        if scale > max_scale {
            max_scale = scale;
        }
        if min > max_min {
            max_min = min;
        }
    }
    let inv_scale = if max_scale > 0.0 { 63.0 / max_scale } else { 0.0 };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut packed = [0u8; 12];
    for j in 0..QK_K / 32 {
        // ggml stores nearest_int's result in a uint8_t, then clamps to 63.
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        if j < 4 {
            packed[j] = ls;
            packed[j + 4] = lm;
        } else {
            packed[j + 4] = (ls & 0xf) | ((lm & 0xf) << 4);
            packed[j - 4] |= (ls >> 4) << 6;
            packed[j] |= (lm >> 4) << 6;
        }
    }
    let d = f16_round(max_scale / 63.0);
    let dmin = f16_round(max_min / 63.0);
    let (sc, m) = crate::quant::scale_min_k4(&packed);
    for j in 0..QK_K / 32 {
        let d = d.to_f32() * sc[j] as f32;
        if d == 0.0 {
            continue; // ggml keeps the first fit's levels here
        }
        let dm = dmin.to_f32() * m[j] as f32;
        for i in 0..32 {
            levels[32 * j + i] = nearest_int((x[32 * j + i] + dm) / d).clamp(0, 15) as u8;
        }
    }
    out.extend_from_slice(&d.to_le_bytes());
    out.extend_from_slice(&dmin.to_le_bytes());
    out.extend_from_slice(&packed);
    for chunk in levels.chunks_exact(64) {
        out.extend((0..32).map(|l| chunk[l] | (chunk[l + 32] << 4)));
    }
}

/// ggml's `make_qkx2_quants` with Q4_K's settings (rmin -1, rdelta 0.1, 20
/// steps, squared error): levels `l` in 0..=nmax with `x ≈ scale * l - min`.
/// Starts from the min/max fit, then tries 21 slightly different scales, each
/// followed by the weighted least-squares scale and min for its levels, and
/// keeps the one with the smallest weighted error. Returns `(scale, min)` with
/// `min >= 0` meaning `-min` is added back (ggml's `the_min`).
fn fit_scale_min(nmax: i32, x: &[f32], weights: &[f32], levels: &mut [u8]) -> (f32, f32) {
    const RMIN: f32 = -1.0;
    const RDELTA: f32 = 0.1;
    const NSTEP: i32 = 20;
    let n = x.len();
    let (mut min, mut max) = (x[0], x[0]);
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        sum_w += weights[i];
        sum_x += weights[i] * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        levels.fill(0);
        return (0.0, -min);
    }
    let nmax_f = nmax as f32;
    let mut iscale = nmax_f / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        levels[i] = l as u8;
        let diff = scale * l as f32 + min - x[i];
        best_error += weights[i] * (diff * diff);
    }
    let mut trial = [0u8; 32];
    for step in 0..=NSTEP {
        iscale = (RMIN + RDELTA * step as f32 + nmax_f) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
        for i in 0..n {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            trial[i] = l as u8;
            let (w, l) = (weights[i], l as f32);
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut error = 0f32;
            for i in 0..n {
                let diff = this_scale * trial[i] as f32 + this_min - x[i];
                error += weights[i] * (diff * diff);
            }
            if error < best_error {
                levels[..n].copy_from_slice(&trial[..n]);
                best_error = error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// One Q6_K super-block (256 values → 210 bytes): 128 bytes of low nibbles, 64
/// of high 2-bit pairs, sixteen i8 sub-block scales, f16 `d`. Each sub-block
/// of 16 gets a signed scale from `fit_signed_scale`; the scales are quantized
/// to i8 against the one of largest magnitude (mapped to -128), and the values
/// requantized to -32..=31 with the rounded scales.
pub(crate) fn q6_k(x: &[f32], out: &mut Vec<u8>) {
    debug_assert_eq!(x.len(), QK_K);
    let mut levels = [0u8; QK_K];
    let mut scales = [0f32; QK_K / 16];
    let (mut max_scale, mut max_abs_scale) = (0f32, 0f32);
    for (ib, scale) in scales.iter_mut().enumerate() {
        *scale = fit_signed_scale(32, &x[16 * ib..16 * ib + 16], &mut levels[16 * ib..16 * ib + 16]);
        if scale.abs() > max_abs_scale {
            max_abs_scale = scale.abs();
            max_scale = *scale;
        }
    }
    if max_abs_scale < GROUP_MAX_EPS {
        out.extend(std::iter::repeat_n(0u8, QK_K / 2 + QK_K / 4 + QK_K / 16 + 2));
        return;
    }
    let iscale = -128.0 / max_scale;
    let d = f16_round(1.0 / iscale);
    let mut qscales = [0i8; QK_K / 16];
    for (q, &s) in qscales.iter_mut().zip(&scales) {
        *q = nearest_int(iscale * s).min(127) as i8;
    }
    for (j, &q) in qscales.iter().enumerate() {
        let d = d.to_f32() * q as f32;
        if d == 0.0 {
            continue; // ggml keeps the first fit's levels here
        }
        for i in 0..16 {
            levels[16 * j + i] = (nearest_int(x[16 * j + i] / d).clamp(-32, 31) + 32) as u8;
        }
    }
    let mut ql = [0u8; QK_K / 2];
    let mut qh = [0u8; QK_K / 4];
    for (half, l) in levels.chunks_exact(128).enumerate() {
        let (ql, qh) = (&mut ql[64 * half..64 * half + 64], &mut qh[32 * half..32 * half + 32]);
        for i in 0..32 {
            let [a, b, c, e] = [l[i], l[i + 32], l[i + 64], l[i + 96]];
            ql[i] = (a & 0xf) | ((c & 0xf) << 4);
            ql[i + 32] = (b & 0xf) | ((e & 0xf) << 4);
            qh[i] = (a >> 4) | ((b >> 4) << 2) | ((c >> 4) << 4) | ((e >> 4) << 6);
        }
    }
    out.extend_from_slice(&ql);
    out.extend_from_slice(&qh);
    out.extend(qscales.iter().map(|&s| s as u8));
    out.extend_from_slice(&d.to_le_bytes());
}

/// ggml's `make_qx_quants` with Q6_K's settings (rmse_type 1: weights `x²`,
/// no importance matrix): symmetric levels `l + nmax` with `l` in
/// -nmax..nmax, from the scale that maps the value of largest magnitude to
/// -nmax, then 18 nearby scales, keeping the best weighted least-squares fit.
fn fit_signed_scale(nmax: i32, x: &[f32], levels: &mut [u8]) -> f32 {
    let (mut max, mut amax) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        levels.fill(0);
        return 0.0;
    }
    let nmax_f = nmax as f32;
    let level = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let sums = |iscale: f32| {
        let (mut sumlx, mut suml2) = (0f32, 0f32);
        for &v in x {
            let l = level(iscale, v) as f32;
            let w = v * v;
            sumlx += w * v * l;
            suml2 += w * l * l;
        }
        (sumlx, suml2)
    };
    let mut iscale = -nmax_f / max;
    for (q, &v) in levels.iter_mut().zip(x) {
        *q = (level(iscale, v) + nmax) as u8;
    }
    let (sumlx, suml2) = sums(iscale);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax_f + 0.1 * is as f32) / max;
        let (sumlx, suml2) = sums(iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (q, &v) in levels.iter_mut().zip(x) {
                *q = (level(iscale, v) + nmax) as u8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_ties_to_even() {
        for (x, n) in [
            (0.5, 0),
            (1.5, 2),
            (2.5, 2),
            (-0.5, 0),
            (-1.5, -2),
            (3.49, 3),
            (-7.6, -8),
        ] {
            assert_eq!(nearest_int(x), n, "{x}");
        }
    }
}
