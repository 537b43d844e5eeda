//! weights.safetensors: the checkpoint tensors in the layouts the kernels read (transposed for
//! `x @ W`, tile padded, segment padded), plus precomputed tables (RoPE cos/sin, rotate-half,
//! KV selection tiles, MoE expansion). Written tensor by tensor, so only one prepared tensor is in
//! memory at a time.

use std::collections::BTreeMap;
use std::io::Write;

use gemma4c_ir::eval::rope_angles;
use gemma4c_ir::DType;

use super::lower::{Prepared, Source};
use super::{bfp8, TtError, TtTarget, WeightFormat};

/// Reads a checkpoint tensor as f32 values (row-major, checkpoint shape).
pub type WeightReader<'a> = &'a dyn Fn(&str) -> Result<Vec<f32>, String>;

/// The checkpoint dtype of a tensor (None: not in the checkpoint).
pub type DtypeOf<'a> = &'a dyn Fn(&str) -> Option<DType>;

/// Rows `range` of a 2-D checkpoint tensor as f32 (row-major).
pub type RowReader<'a> = &'a dyn Fn(&str, std::ops::Range<usize>) -> Result<Vec<f32>, String>;

/// Where weight values come from when writing weights.safetensors.
#[derive(Clone, Copy)]
pub struct Weights<'a> {
    pub tensor: WeightReader<'a>,
    /// Row ranges: lets embedding tables (PLE's is 262144 x 10752 in E4B) be converted a
    /// block of rows at a time instead of whole in f32.
    pub rows: Option<RowReader<'a>>,
    pub dtype_of: DtypeOf<'a>,
}

/// Rows converted per block when an embedding table is streamed.
const GATHER_ROWS: usize = 2048;

fn encode(v: &[f32], dt: DType, buf: &mut Vec<u8>) {
    buf.clear();
    if dt == DType::BF16 {
        for x in v {
            buf.extend_from_slice(&half::bf16::from_f32(*x).to_le_bytes());
        }
    } else {
        for x in v {
            buf.extend_from_slice(&x.to_le_bytes());
        }
    }
}

/// Storage dtype of a prepared tensor: bf16 where its checkpoint tensor is bf16 (all released
/// Gemma 4 checkpoints) or where it is a bfloat8_b weight (rounded to bfp8 values, which bf16
/// holds exactly), f32 otherwise (f32 test fixtures keep their exact values; tables).
fn stored_dtype(p: &Prepared, t: &TtTarget, dtype_of: DtypeOf) -> DType {
    if p.format(t) == WeightFormat::Bfp8 {
        return DType::BF16;
    }
    match p.source.key().and_then(dtype_of) {
        Some(DType::BF16) => DType::BF16,
        _ => DType::F32,
    }
}

fn read(reader: WeightReader, key: &str) -> Result<Vec<f32>, TtError> {
    reader(key).map_err(|e| TtError::new(format!("reading weight `{key}`: {e}")))
}

/// Values of one prepared tensor, `rows x cols` row-major.
pub fn values(p: &Prepared, reader: WeightReader) -> Result<Vec<f32>, TtError> {
    let (rows, cols) = (p.rows, p.cols);
    let mut out = vec![0.0f32; rows * cols];
    match &p.source {
        Source::Transposed { key, xin, out: lo } => {
            let w = read(reader, key)?;
            let (n, k) = (lo.cols(), xin.cols());
            if w.len() != n * k {
                return Err(TtError::new(format!(
                    "`{key}` has {} values, expected {n}x{k}",
                    w.len()
                )));
            }
            for o in 0..n {
                let c = lo.dev_col(o);
                for i in 0..k {
                    out[xin.dev_col(i) * cols + c] = w[o * k + i];
                }
            }
        }
        Source::Row { key, layout } => {
            let v = read(reader, key)?;
            for c in 0..layout.cols() {
                out[layout.dev_col(c)] = v[c % v.len()];
            }
        }
        Source::Scalar { key } => {
            let v = read(reader, key)?;
            out[0] = v[0];
        }
        Source::Gather { key, vocab, layout } => {
            let v = read(reader, key)?;
            let h = layout.cols();
            for r in 0..*vocab {
                for c in 0..h {
                    out[r * cols + layout.dev_col(c)] = v[r * h + c];
                }
            }
        }
        Source::Rope { spec, context, sin } => {
            let inv = spec.inv_freq();
            let half = spec.head_dim / 2;
            for pos in 0..*context {
                let (c, s) = rope_angles(&inv, pos as i64);
                let src = if *sin { s } else { c };
                for i in 0..half {
                    out[pos * cols + i] = src[i];
                    out[pos * cols + i + half] = src[i];
                }
            }
        }
        Source::RotateHalf { d } => {
            let half = d / 2;
            for j in 0..half {
                out[(j + half) * cols + j] = -1.0;
                out[j * cols + j + half] = 1.0;
            }
        }
        Source::Index { value } => out[0] = *value as f32,
        Source::KvSelect => {
            for r in 0..32 {
                out[(r * 32 + r) * cols] = 1.0;
            }
        }
        Source::KvKeep => {
            for r in 0..32 {
                for i in 0..32 {
                    if i != r {
                        out[(r * 32 + i) * cols] = 1.0;
                    }
                }
            }
        }
        Source::MoeGateUp {
            key,
            experts,
            inter,
            xin,
        } => {
            // [e, 2i, h]: rows 0..i gate, i..2i up.
            let w = read(reader, key)?;
            let (h, it) = (xin.cols(), inter.div_ceil(32) * 32);
            for e in 0..*experts {
                for j in 0..2 * inter {
                    let (part, jj) = (j / inter, j % inter);
                    let c = e * 2 * it + part * it + jj;
                    for x in 0..h {
                        out[xin.dev_col(x) * cols + c] = w[(e * 2 * inter + j) * h + x];
                    }
                }
            }
        }
        Source::MoeDown {
            key,
            experts,
            inter,
            out: lo,
        } => {
            // [e, h, i] -> rows e*it + j, columns like `lo`.
            let w = read(reader, key)?;
            let (h, it) = (lo.cols(), inter.div_ceil(32) * 32);
            for e in 0..*experts {
                for o in 0..h {
                    let c = lo.dev_col(o);
                    for j in 0..*inter {
                        out[(e * it + j) * cols + c] = w[(e * h + o) * inter + j];
                    }
                }
            }
        }
        Source::MoeExpand { experts, inter } => {
            let it = inter.div_ceil(32) * 32;
            for e in 0..*experts {
                for j in 0..*inter {
                    out[e * cols + e * it + j] = 1.0;
                }
            }
        }
        Source::MoePad { experts } => {
            for v in out.iter_mut().skip(*experts) {
                *v = -1.0e9;
            }
        }
        Source::Concat { parts } => {
            let mut c0 = 0;
            for (pc, src) in parts {
                let part = Prepared {
                    name: p.name.clone(),
                    rows,
                    cols: *pc,
                    host: false,
                    source: src.clone(),
                };
                let v = values(&part, reader)?;
                for r in 0..rows {
                    out[r * cols + c0..r * cols + c0 + pc].copy_from_slice(&v[r * pc..(r + 1) * pc]);
                }
                c0 += pc;
            }
            if c0 != cols {
                return Err(TtError::new(format!(
                    "`{}`: parts cover {c0} of {cols} columns",
                    p.name
                )));
            }
        }
    }
    Ok(out)
}

/// Writes `prepared` (sorted by name) as a safetensors file.
pub fn write(
    path: &std::path::Path,
    t: &TtTarget,
    prepared: &[Prepared],
    weights: Weights,
    metadata: &BTreeMap<String, String>,
) -> Result<usize, TtError> {
    let dtype_of = weights.dtype_of;
    let mut sorted: Vec<&Prepared> = prepared.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut header = serde_json::Map::new();
    header.insert(
        "__metadata__".into(),
        serde_json::to_value(metadata).expect("strings serialize"),
    );
    let mut offset = 0usize;
    let mut dtypes = Vec::new();
    for p in &sorted {
        let dt = stored_dtype(p, t, dtype_of);
        let bytes = p.rows * p.cols * if dt == DType::BF16 { 2 } else { 4 };
        header.insert(
            p.name.clone(),
            serde_json::json!({
                "dtype": if dt == DType::BF16 { "BF16" } else { "F32" },
                "shape": [p.rows, p.cols],
                "data_offsets": [offset, offset + bytes],
            }),
        );
        offset += bytes;
        dtypes.push(dt);
    }
    let mut text = serde_json::to_string(&serde_json::Value::Object(header)).expect("header serializes");
    while !(text.len() + 8).is_multiple_of(8) {
        text.push(' ');
    }
    let io = |e: std::io::Error| TtError::new(format!("writing {}: {e}", path.display()));
    let file = std::fs::File::create(path).map_err(io)?;
    let mut f = std::io::BufWriter::new(file);
    f.write_all(&(text.len() as u64).to_le_bytes()).map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)?;
    let mut buf = Vec::new();
    for (p, dt) in sorted.iter().zip(dtypes) {
        if let (Source::Gather { key, vocab, layout }, Some(rows)) = (&p.source, weights.rows) {
            // Block of rows at a time: never the whole table in f32.
            let h = layout.cols();
            let mut r0 = 0;
            while r0 < *vocab {
                let r1 = (r0 + GATHER_ROWS).min(*vocab);
                let src = rows(key, r0..r1).map_err(|e| TtError::new(format!("reading rows of `{key}`: {e}")))?;
                let mut out = vec![0.0f32; (r1 - r0) * p.cols];
                for r in 0..r1 - r0 {
                    for c in 0..h {
                        out[r * p.cols + layout.dev_col(c)] = src[r * h + c];
                    }
                }
                encode(&out, dt, &mut buf);
                f.write_all(&buf).map_err(io)?;
                r0 = r1;
            }
            continue;
        }
        let mut v = values(p, weights.tensor)?;
        if p.format(t) == WeightFormat::Bfp8 {
            // The values the device's bfloat8_b tiles hold, so the simulator computes with them.
            bfp8::round_matrix(&mut v, p.cols);
        }
        encode(&v, dt, &mut buf);
        f.write_all(&buf).map_err(io)?;
    }
    f.flush().map_err(io)?;
    Ok(8 + text.len() + offset)
}
