//! Dequantization of every GGUF block format against gguf-py's
//! `gguf.quants.dequantize` (fixtures from tools/make_quant_fixtures.py):
//! bit-exact, compared as f32 bit patterns. The `--quant` quantizers against
//! gguf-py's `quantize` (q8_0, q4_0) and llama.cpp's own reference quantizers
//! (q4_K, q6_K: tools/make_kquant_reference.py), byte for byte.

use std::path::PathBuf;

use gemma4c_ir::QuantFormat;

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/quant")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_format_matches_gguf_py_bit_for_bit() {
    for q in QuantFormat::ALL {
        let blocks = fixture(&format!("{}.blocks", q.name()));
        let expected: Vec<u32> = fixture(&format!("{}.f32", q.name()))
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_eq!(blocks.len() / q.block_bytes() * q.block_elems(), expected.len(), "{q}");
        let mut got = vec![0f32; expected.len()];
        q.dequantize(&blocks, &mut got).unwrap();
        let mismatches: Vec<_> = got
            .iter()
            .zip(&expected)
            .enumerate()
            .filter(|(_, (g, e))| g.to_bits() != **e)
            .map(|(i, (g, e))| (i, *g, f32::from_bits(*e)))
            .take(5)
            .collect();
        assert!(mismatches.is_empty(), "{q}: (index, got, gguf-py) {mismatches:?}");
        // Not a degenerate fixture: many distinct values.
        let mut distinct: Vec<u32> = expected.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(distinct.len() > 32, "{q}: only {} distinct values", distinct.len());
    }
}

/// `--quant`'s quantizers against gguf-py's `quantize` (q8_0, q4_0) and
/// llama.cpp's `ggml_quantize_chunk` (q4_K, q6_K) on the same f32 values
/// (random rows at several scales, zero and constant blocks, ties for the
/// largest magnitude, values on rounding ties, scales that underflow f16,
/// one-sided rows, outliers): byte for byte.
#[test]
fn quantizers_match_reference_byte_for_byte() {
    for q in gemma4c_ir::quantize::QUANTIZERS {
        let input: Vec<f32> = fixture(&format!("{}.input.f32", q.name()))
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let expected = fixture(&format!("{}.quantized", q.name()));
        let got = q.quantize(&input).unwrap();
        assert_eq!(got.len(), expected.len(), "{q}");
        let bad: Vec<usize> = (0..got.len()).filter(|&i| got[i] != expected[i]).take(8).collect();
        assert!(
            bad.is_empty(),
            "{q}: bytes differ at {bad:?} (block {})",
            bad.first().map_or(0, |b| b / q.block_bytes())
        );
    }
}
