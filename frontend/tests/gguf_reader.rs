//! The GGUF reader on files written in the test: every value type round-trips,
//! and hostile files (truncated, huge counts, bad offsets, unknown types) give
//! errors that name the field or tensor, never a panic or a huge allocation.

use gemma4c_frontend::gguf::write::GgufWriter;
use gemma4c_frontend::gguf::{type_id, GgmlType, GgufError, GgufHeader, MetaArray, MetaValue};
use gemma4c_ir::QuantFormat;

fn sample() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.meta("general.architecture", MetaValue::String("gemma3".into()))
        .meta("a.u8", MetaValue::U8(200))
        .meta("a.i8", MetaValue::I8(-5))
        .meta("a.u16", MetaValue::U16(60000))
        .meta("a.i16", MetaValue::I16(-30000))
        .meta("a.u32", MetaValue::U32(4_000_000_000))
        .meta("a.i32", MetaValue::I32(-2_000_000_000))
        .meta("a.u64", MetaValue::U64(u64::MAX))
        .meta("a.i64", MetaValue::I64(i64::MIN))
        .meta("a.f32", MetaValue::F32(1.5))
        .meta("a.f64", MetaValue::F64(-2.25))
        .meta("a.bool", MetaValue::Bool(true))
        .meta(
            "a.strings",
            MetaValue::Array(MetaArray {
                elem_type: type_id::STRING,
                items: vec![MetaValue::String("▁the".into()), MetaValue::String(String::new())],
            }),
        )
        .meta(
            "a.nested",
            MetaValue::Array(MetaArray {
                elem_type: type_id::ARRAY,
                items: vec![MetaValue::Array(MetaArray {
                    elem_type: type_id::I32,
                    items: vec![MetaValue::I32(1), MetaValue::I32(-2)],
                })],
            }),
        )
        .tensor_f32("norm.weight", &[3], &[1.0, 2.0, 3.0]);
    let mut q8 = vec![0u8; 2 * 34];
    q8[..2].copy_from_slice(&half::f16::from_f32(0.25).to_le_bytes());
    q8[2] = 4;
    w.tensor("blk.0.attn_v.weight", &[2, 32], 8, q8);
    w.to_bytes()
}

#[test]
fn every_value_type_and_tensor_round_trips() {
    let bytes = sample();
    let h = GgufHeader::parse(&bytes).unwrap();
    assert_eq!(h.version, 3);
    assert_eq!(h.alignment, 32);
    let m = &h.metadata;
    assert_eq!(m["general.architecture"].as_str(), Some("gemma3"));
    assert_eq!(m["a.u8"], MetaValue::U8(200));
    assert_eq!(m["a.i8"], MetaValue::I8(-5));
    assert_eq!(m["a.u16"], MetaValue::U16(60000));
    assert_eq!(m["a.i16"], MetaValue::I16(-30000));
    assert_eq!(m["a.u32"].as_u64(), Some(4_000_000_000));
    assert_eq!(m["a.i32"].as_i64(), Some(-2_000_000_000));
    assert_eq!(m["a.u64"].as_u64(), Some(u64::MAX));
    assert_eq!(m["a.i64"].as_i64(), Some(i64::MIN));
    assert_eq!(m["a.f32"].as_f64(), Some(1.5));
    assert_eq!(m["a.f64"].as_f64(), Some(-2.25));
    assert_eq!(m["a.bool"].as_bool(), Some(true));
    let strings = m["a.strings"].as_array().unwrap();
    assert_eq!(strings[0].as_str(), Some("▁the"));
    assert_eq!(strings[1].as_str(), Some(""));
    let inner = m["a.nested"].as_array().unwrap()[0].as_array().unwrap();
    assert_eq!(inner, &[MetaValue::I32(1), MetaValue::I32(-2)]);

    assert_eq!(h.tensors.len(), 2);
    let norm = &h.tensors[0];
    assert_eq!((norm.shape(), norm.ggml_type), (vec![3], GgmlType::F32));
    assert_eq!(norm.start % 32, 0);
    assert_eq!(&bytes[norm.start..norm.start + 4], &1.0f32.to_le_bytes());
    let v = &h.tensors[1];
    assert_eq!(v.shape(), vec![2, 32]);
    assert_eq!(v.ggml_type, GgmlType::Quant(QuantFormat::Q8_0));
    assert_eq!(v.len, 68);
    let mut out = vec![0f32; 64];
    QuantFormat::Q8_0
        .dequantize(&bytes[v.start..v.start + v.len], &mut out)
        .unwrap();
    assert_eq!(out[0], 1.0);
}

fn message(bytes: &[u8]) -> String {
    GgufHeader::parse(bytes)
        .expect_err("a broken file must be rejected")
        .to_string()
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = sample();
    for len in 0..bytes.len() - 1 {
        // The last tensor's bytes end before the final padding.
        let h = GgufHeader::parse(&bytes[..len]);
        if let Ok(h) = h {
            let end = h.tensors.iter().map(|t| t.start + t.len).max().unwrap();
            assert!(end <= len, "accepted {len} bytes with a tensor ending at {end}");
        }
    }
    assert!(message(&bytes[..10]).contains("tensor_count"));
    assert!(message(&bytes[..3]).contains("magic"));
}

/// Little-endian header pieces for hand-made files.
struct Raw(Vec<u8>);

impl Raw {
    fn header(tensors: u64, kvs: u64) -> Raw {
        let mut r = Raw(b"GGUF".to_vec());
        r.u32(3).u64(tensors).u64(kvs);
        r
    }
    fn u32(&mut self, x: u32) -> &mut Raw {
        self.0.extend_from_slice(&x.to_le_bytes());
        self
    }
    fn u64(&mut self, x: u64) -> &mut Raw {
        self.0.extend_from_slice(&x.to_le_bytes());
        self
    }
    fn str(&mut self, s: &str) -> &mut Raw {
        self.u64(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    /// A tensor info record.
    fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> &mut Raw {
        self.str(name).u32(dims.len() as u32);
        for &d in dims {
            self.u64(d);
        }
        self.u32(ty).u64(offset)
    }
    fn pad(&mut self, to: usize) -> &mut Raw {
        self.0.resize(to, 0);
        self
    }
}

#[test]
fn huge_counts_are_bounded_by_the_file_size() {
    assert!(message(&Raw::header(0, u64::MAX).0).contains("metadata_kv_count"));
    assert!(message(&Raw::header(u64::MAX / 2, 0).0).contains("tensor_count"));
    let mut r = Raw::header(0, 1);
    r.str("tokenizer.ggml.tokens")
        .u32(type_id::ARRAY)
        .u32(type_id::STRING)
        .u64(1 << 60);
    let m = message(&r.0);
    assert!(m.contains("tokenizer.ggml.tokens") && m.contains("array length"), "{m}");
    let mut r = Raw::header(0, 1);
    r.str("general.name").u32(type_id::STRING).u64(u64::MAX);
    let m = message(&r.0);
    assert!(m.contains("general.name") && m.contains("more bytes are needed"), "{m}");
}

#[test]
fn unknown_types_name_the_key_or_tensor() {
    let mut r = Raw::header(0, 1);
    r.str("weird.key").u32(99);
    let m = message(&r.0);
    assert!(m.contains("weird.key") && m.contains("unknown value type 99"), "{m}");

    let mut r = Raw::header(0, 1);
    r.str("weird.array").u32(type_id::ARRAY).u32(77).u64(1);
    let m = message(&r.0);
    assert!(m.contains("weird.array") && m.contains("element type 77"), "{m}");

    let mut r = Raw::header(1, 0);
    r.tensor("blk.0.ffn_up.weight", &[32], 1234, 0).pad(256);
    let m = message(&r.0);
    assert!(
        m.contains("blk.0.ffn_up.weight") && m.contains("unknown tensor type 1234"),
        "{m}"
    );
}

#[test]
fn bad_tensor_geometry_names_the_tensor() {
    let cases: [(&[u64], u32, u64, &str); 7] = [
        (&[1 << 62], 0, 0, "byte size overflows"),
        (&[64], 0, 1 << 40, "run past the end"),
        (&[64], 0, 8, "not a multiple of the alignment"),
        (&[u64::MAX, u64::MAX], 0, 0, "overflow"),
        (&[1 << 40], 0, 0, "run past the end"),
        (&[33], 8, 0, "block size 32"),
        (&[0], 0, 0, "dimension is 0"),
    ];
    for (dims, ty, offset, want) in cases {
        let mut r = Raw::header(1, 0);
        r.tensor("token_embd.weight", dims, ty, offset).pad(512);
        let m = message(&r.0);
        assert!(m.contains("token_embd.weight") && m.contains(want), "{dims:?}: {m}");
    }
    let mut r = Raw::header(1, 0);
    r.tensor("t", &[1, 1, 1, 1, 1], 0, 0).pad(256);
    assert!(message(&r.0).contains("5 dimensions"));
}

#[test]
fn header_fields_are_checked() {
    let mut r = Raw(b"GGML".to_vec());
    r.u32(3).u64(0).u64(0);
    assert!(message(&r.0).contains("not a GGUF file"));
    let mut r = Raw(b"GGUF".to_vec());
    r.u32(1).u64(0).u64(0);
    assert!(message(&r.0).contains("version 1"));

    let mut r = Raw::header(0, 1);
    r.str("general.alignment").u32(type_id::U32).u32(48);
    assert!(message(&r.0).contains("general.alignment"));

    let mut r = Raw::header(0, 2);
    r.str("k").u32(type_id::U8).0.push(1);
    r.str("k").u32(type_id::U8).0.push(2);
    assert!(message(&r.0).contains("appears twice"));

    let mut r = Raw::header(2, 0);
    r.tensor("t", &[8], 0, 0).tensor("t", &[8], 0, 32).pad(256);
    assert!(message(&r.0).contains("`t`: name appears twice"));

    let mut r = Raw::header(0, 1);
    r.str("flag").u32(type_id::BOOL).0.push(7);
    assert!(message(&r.0).contains("flag"));

    let mut r = Raw::header(0, 1);
    r.str("deep").u32(type_id::ARRAY);
    for _ in 0..6 {
        r.u32(type_id::ARRAY).u64(1);
    }
    r.u32(type_id::U8).u64(0).pad(512);
    assert!(message(&r.0).contains("nested deeper"));

    let mut r = Raw::header(0, 1);
    r.str("bad.utf8").u32(type_id::STRING).u64(2);
    r.0.extend_from_slice(&[0xff, 0xfe]);
    assert!(message(&r.0).contains("UTF-8"));
}

#[test]
fn errors_are_typed() {
    let e = GgufHeader::parse(b"GGUF").unwrap_err();
    assert!(matches!(e, GgufError::Truncated { .. }), "{e:?}");
}
