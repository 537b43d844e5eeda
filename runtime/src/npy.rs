//! Minimal NumPy `.npy` support for float32 arrays.
//!
//! The runtime dumps logits and activations as `.npy` so they can be compared
//! with the PyTorch reference using nothing more than `numpy.load`. Only what
//! that needs is implemented: format version 1.0, little-endian `<f4`,
//! C order. The reader accepts exactly that (and the 2.0/3.0 header-length
//! variants, which differ only in a wider length field) so tests can
//! round-trip; anything else is rejected with an error saying what was found.
//!
//! Format reference: `numpy/lib/format.py` (the NEP 1 `.npy` description).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Every `.npy` file starts with these six bytes.
const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// numpy aligns the start of the array data to this many bytes so that the
/// data can be memory-mapped with any element alignment.
const ALIGN: usize = 64;
/// Magic (6) + version (2) + the u16 header length of format 1.0 (2).
const PREAMBLE_V1: usize = 10;

/// Errors from writing or reading `.npy` files.
#[derive(Debug, Error)]
pub enum NpyError {
    /// The shape's element count does not match the data length.
    #[error("npy shape {shape:?} holds {expected} elements, but {actual} values were given")]
    ShapeMismatch {
        shape: Vec<usize>,
        expected: usize,
        actual: usize,
    },
    /// The shape's element count (or byte size) overflows `usize`.
    #[error("npy shape {shape:?} is too large: its element count overflows usize")]
    ShapeOverflow { shape: Vec<usize> },
    /// The header would not fit the 16-bit length field of format 1.0.
    #[error("npy header for shape {shape:?} is {len} bytes, but format version 1.0 allows at most 65535")]
    HeaderTooLong { shape: Vec<usize>, len: usize },
    /// Filesystem error while reading or writing `path`.
    #[error("cannot {action} npy file {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not a float32 C-order `.npy` as produced by [`write_npy_f32`].
    #[error("{path} is not a little-endian float32 C-order .npy file: {reason}")]
    Format { path: PathBuf, reason: String },
}

/// Number of elements in `shape` (1 for a 0-d scalar), or `None` on overflow.
fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// The Python-literal shape tuple numpy writes: `()`, `(3,)`, `(2, 3)`.
fn shape_literal(shape: &[usize]) -> String {
    match shape {
        [] => "()".to_string(),
        [d] => format!("({d},)"),
        dims => {
            let parts: Vec<String> = dims.iter().map(ToString::to_string).collect();
            format!("({})", parts.join(", "))
        }
    }
}

/// Builds the complete preamble + header for a version 1.0 file: the header
/// dict is padded with spaces and terminated by `\n` so that the array data
/// starts at a multiple of [`ALIGN`] bytes, as numpy itself does.
fn header_bytes(shape: &[usize]) -> Result<Vec<u8>, NpyError> {
    let dict = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': {}, }}",
        shape_literal(shape)
    );
    // +1 for the terminating newline, then round up to the alignment.
    let unpadded = PREAMBLE_V1 + dict.len() + 1;
    let total = unpadded.div_ceil(ALIGN) * ALIGN;
    let header_len = total - PREAMBLE_V1;
    let header_len_u16 = u16::try_from(header_len).map_err(|_| NpyError::HeaderTooLong {
        shape: shape.to_vec(),
        len: header_len,
    })?;

    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&header_len_u16.to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.resize(total - 1, b' ');
    out.push(b'\n');
    Ok(out)
}

/// Writes `data` (C order) with the given `shape` as a float32 `.npy` file
/// that `numpy.load` reads back as `dtype('float32')`.
pub fn write_npy_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<(), NpyError> {
    let expected = element_count(shape).ok_or_else(|| NpyError::ShapeOverflow { shape: shape.to_vec() })?;
    if expected != data.len() {
        return Err(NpyError::ShapeMismatch {
            shape: shape.to_vec(),
            expected,
            actual: data.len(),
        });
    }
    let header = header_bytes(shape)?;

    let io_err = |source| NpyError::Io {
        action: "write",
        path: path.to_path_buf(),
        source,
    };
    let file = File::create(path).map_err(io_err)?;
    let mut writer = BufWriter::new(file);
    writer.write_all(&header).map_err(io_err)?;
    // Converted in chunks: one `write_all` per float would be slow for
    // vocabulary-sized rows, and a single full copy would double memory.
    let mut buf = Vec::with_capacity(4 * 4096);
    for chunk in data.chunks(4096) {
        buf.clear();
        buf.extend(chunk.iter().flat_map(|v| v.to_le_bytes()));
        writer.write_all(&buf).map_err(io_err)?;
    }
    // Flushing explicitly surfaces errors that `Drop` would swallow.
    writer.flush().map_err(io_err)?;
    Ok(())
}

/// Reads a float32 `.npy` file as written by [`write_npy_f32`], returning its
/// shape and its data in C order.
pub fn read_npy_f32(path: &Path) -> Result<(Vec<usize>, Vec<f32>), NpyError> {
    let bytes = std::fs::read(path).map_err(|source| NpyError::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    })?;
    parse_npy_f32(&bytes).map_err(|reason| NpyError::Format {
        path: path.to_path_buf(),
        reason,
    })
}

/// Parses the bytes of a `.npy` file; the error is a human-readable reason
/// that the caller attaches to the path.
fn parse_npy_f32(bytes: &[u8]) -> Result<(Vec<usize>, Vec<f32>), String> {
    if bytes.len() < 8 || &bytes[..6] != MAGIC {
        return Err("missing the \\x93NUMPY magic bytes at the start".to_string());
    }
    let (major, minor) = (bytes[6], bytes[7]);
    // Versions 2.0 and 3.0 only widen the length field (3.0 also allows UTF-8
    // in the header, which a float32 header never contains).
    let (len_size, utf8_ok) = match (major, minor) {
        (1, 0) => (2usize, false),
        (2, 0) => (4, false),
        (3, 0) => (4, true),
        _ => {
            return Err(format!(
                "unsupported format version {major}.{minor}, expected 1.0 (or 2.0/3.0)"
            ))
        }
    };
    let len_end = 8 + len_size;
    let len_bytes = bytes
        .get(8..len_end)
        .ok_or_else(|| "file ends inside the header length field".to_string())?;
    let header_len = len_bytes
        .iter()
        .rev()
        .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
    let data_start = len_end
        .checked_add(header_len)
        .ok_or_else(|| "header length overflows".to_string())?;
    let header = bytes.get(len_end..data_start).ok_or_else(|| {
        format!(
            "header claims {header_len} bytes but the file has only {} after the preamble",
            bytes.len() - len_end
        )
    })?;
    let header = std::str::from_utf8(header)
        .ok()
        .filter(|h| utf8_ok || h.is_ascii())
        .ok_or_else(|| "header is not ASCII text".to_string())?;

    let fields = parse_header_dict(header)?;
    let descr = fields.descr.ok_or_else(|| "header has no 'descr' entry".to_string())?;
    if descr != "<f4" {
        return Err(format!("dtype is '{descr}', expected '<f4' (little-endian float32)"));
    }
    match fields.fortran_order {
        Some(false) => {}
        Some(true) => return Err("array is in Fortran order, expected C order".to_string()),
        None => return Err("header has no 'fortran_order' entry".to_string()),
    }
    let shape = fields.shape.ok_or_else(|| "header has no 'shape' entry".to_string())?;

    let count = element_count(&shape).ok_or_else(|| format!("shape {shape:?} overflows the element count"))?;
    let data = &bytes[data_start..];
    if Some(data.len()) != count.checked_mul(4) {
        return Err(format!(
            "shape {shape:?} needs {count} float32 values ({} bytes) but the file holds {} data bytes",
            count.saturating_mul(4),
            data.len()
        ));
    }
    let values = data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok((shape, values))
}

/// The entries of an `.npy` header dict that matter for float32 arrays.
#[derive(Debug, Default)]
struct HeaderFields {
    descr: Option<String>,
    fortran_order: Option<bool>,
    shape: Option<Vec<usize>>,
}

/// Parses the Python dict literal of an `.npy` header, e.g.
/// `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`.
///
/// This is a small hand-written parser for the subset numpy emits (string
/// keys; string, boolean and integer-tuple values), not a Python evaluator.
fn parse_header_dict(header: &str) -> Result<HeaderFields, String> {
    let mut p = Cursor {
        rest: header.trim_end(),
    };
    p.expect('{')?;
    let mut fields = HeaderFields::default();
    loop {
        p.skip_ws();
        if p.eat('}') {
            break;
        }
        let key = p.string()?;
        p.expect(':')?;
        match key.as_str() {
            "descr" => fields.descr = Some(p.string()?),
            "fortran_order" => fields.fortran_order = Some(p.boolean()?),
            "shape" => fields.shape = Some(p.int_tuple()?),
            other => return Err(format!("unexpected header key '{other}'")),
        }
        p.skip_ws();
        if !p.eat(',') {
            p.expect('}')?;
            break;
        }
    }
    p.skip_ws();
    if !p.rest.is_empty() {
        return Err(format!("unexpected text after the header dict: {:?}", p.rest));
    }
    Ok(fields)
}

/// Character cursor over the header text.
struct Cursor<'a> {
    rest: &'a str,
}

impl Cursor<'_> {
    fn skip_ws(&mut self) {
        self.rest = self.rest.trim_start();
    }

    /// Consumes `c` (after whitespace) if it is next.
    fn eat(&mut self, c: char) -> bool {
        self.skip_ws();
        match self.rest.strip_prefix(c) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    fn expect(&mut self, c: char) -> Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!("malformed header: expected '{c}' at {:?}", self.rest))
        }
    }

    /// A single- or double-quoted string without escapes (numpy never
    /// needs escapes for the keys and dtype strings used here).
    fn string(&mut self) -> Result<String, String> {
        self.skip_ws();
        let quote = match self.rest.chars().next() {
            Some(q @ ('\'' | '"')) => q,
            _ => return Err(format!("malformed header: expected a string at {:?}", self.rest)),
        };
        let body = &self.rest[1..];
        let end = body
            .find(quote)
            .ok_or_else(|| "malformed header: unterminated string".to_string())?;
        let s = body[..end].to_string();
        self.rest = &body[end + 1..];
        Ok(s)
    }

    fn boolean(&mut self) -> Result<bool, String> {
        self.skip_ws();
        for (word, value) in [("True", true), ("False", false)] {
            if let Some(rest) = self.rest.strip_prefix(word) {
                self.rest = rest;
                return Ok(value);
            }
        }
        Err(format!("malformed header: expected True or False at {:?}", self.rest))
    }

    /// `()`, `(3,)`, `(2, 3)` or `(2, 3,)`.
    fn int_tuple(&mut self) -> Result<Vec<usize>, String> {
        self.expect('(')?;
        let mut dims = Vec::new();
        loop {
            if self.eat(')') {
                return Ok(dims);
            }
            self.skip_ws();
            let digits = self.rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(self.rest.len());
            if digits == 0 {
                return Err(format!("malformed header: expected a dimension at {:?}", self.rest));
            }
            let dim = self.rest[..digits]
                .parse::<usize>()
                .map_err(|e| format!("bad shape dimension {:?}: {e}", &self.rest[..digits]))?;
            dims.push(dim);
            self.rest = &self.rest[digits..];
            if !self.eat(',') {
                self.expect(')')?;
                return Ok(dims);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh file path in a per-test temporary directory.
    fn temp_path(name: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = match tempfile::tempdir() {
            Ok(d) => d,
            Err(e) => panic!("cannot create temp dir: {e}"),
        };
        let path = dir.path().join(name);
        (dir, path)
    }

    fn must<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
        match r {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn header_bytes_for_2x3_match_numpy() {
        let (_dir, path) = temp_path("a.npy");
        let data = [0.0f32, 1.0, 2.0, 3.0, 4.0, 5.0];
        must(write_npy_f32(&path, &[2, 3], &data));
        let bytes = must(std::fs::read(&path));

        let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
        let mut expected = b"\x93NUMPY\x01\x00".to_vec();
        // 10 + 118 = 128: the data starts on a 64-byte boundary.
        expected.extend_from_slice(&118u16.to_le_bytes());
        expected.extend_from_slice(dict.as_bytes());
        expected.resize(127, b' ');
        expected.push(b'\n');
        assert_eq!(&bytes[..128], &expected[..]);
        assert_eq!(bytes.len(), 128 + 6 * 4);
        assert_eq!(&bytes[128 + 4..128 + 8], &1.0f32.to_le_bytes());
    }

    #[test]
    fn round_trips_various_shapes() {
        let cases: Vec<(Vec<usize>, Vec<f32>)> = vec![
            (vec![], vec![3.5]),
            (vec![0], vec![]),
            (vec![5], vec![1.0, -2.5, f32::INFINITY, f32::MIN_POSITIVE, -0.0]),
            (vec![2, 3], (0..6).map(|i| i as f32 * 0.25).collect()),
            (vec![2, 1, 4, 3], (0..24).map(|i| (i as f32).sin()).collect()),
            (vec![1, 262_144], (0..262_144).map(|i| i as f32).collect()),
        ];
        for (shape, data) in cases {
            let (_dir, path) = temp_path("r.npy");
            must(write_npy_f32(&path, &shape, &data));
            let bytes = must(std::fs::read(&path));
            let header_end = bytes.len() - 4 * data.len();
            assert_eq!(header_end % ALIGN, 0, "shape {shape:?}");
            assert_eq!(bytes[header_end - 1], b'\n');
            let (got_shape, got_data) = must(read_npy_f32(&path));
            assert_eq!(got_shape, shape);
            assert_eq!(
                got_data.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                data.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn nan_survives_round_trip() {
        let (_dir, path) = temp_path("nan.npy");
        must(write_npy_f32(&path, &[1], &[f32::NAN]));
        let (_, data) = must(read_npy_f32(&path));
        assert!(data[0].is_nan());
    }

    #[test]
    fn shape_mismatch_is_an_error() {
        let (_dir, path) = temp_path("bad.npy");
        let err = write_npy_f32(&path, &[2, 3], &[1.0; 5]);
        assert!(
            matches!(
                err,
                Err(NpyError::ShapeMismatch {
                    expected: 6,
                    actual: 5,
                    ..
                })
            ),
            "{err:?}"
        );
        assert!(!path.exists(), "nothing should be written on a bad shape");
        let err = write_npy_f32(&path, &[usize::MAX, 2], &[]);
        assert!(matches!(err, Err(NpyError::ShapeOverflow { .. })), "{err:?}");
    }

    #[test]
    fn io_errors_name_the_path() {
        let (dir, _) = temp_path("x");
        let path = dir.path().join("no_such_dir").join("out.npy");
        let msg = match write_npy_f32(&path, &[1], &[1.0]) {
            Err(e @ NpyError::Io { .. }) => e.to_string(),
            other => panic!("expected an IO error, got {other:?}"),
        };
        assert!(msg.contains("out.npy") && msg.contains("write"), "{msg}");
        let msg = match read_npy_f32(&path) {
            Err(e @ NpyError::Io { .. }) => e.to_string(),
            other => panic!("expected an IO error, got {other:?}"),
        };
        assert!(msg.contains("out.npy") && msg.contains("read"), "{msg}");
    }

    #[test]
    fn rejects_other_files_with_reasons() {
        let header = |dict: &str, version: u8| {
            let mut b = MAGIC.to_vec();
            b.extend_from_slice(&[version, 0]);
            let mut h = dict.to_string();
            h.push('\n');
            b.extend_from_slice(&(h.len() as u16).to_le_bytes());
            b.extend_from_slice(h.as_bytes());
            b
        };
        let good = "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }";
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"not numpy at all".to_vec(), "magic"),
            (header(good, 9), "version 9.0"),
            (
                header("{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }", 1),
                "'<f8'",
            ),
            (
                header("{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }", 1),
                "'>f4'",
            ),
            (
                header("{'descr': '<f4', 'fortran_order': True, 'shape': (1,), }", 1),
                "Fortran",
            ),
            (header("{'descr': '<f4', 'shape': (1,), }", 1), "fortran_order"),
            (
                header("{'descr': '<f4', 'fortran_order': False, 'shape': (1,x), }", 1),
                "malformed",
            ),
            // Header is fine but the 4 data bytes are missing.
            (header(good, 1), "needs 1 float32"),
        ];
        for (bytes, needle) in cases {
            let (_dir, path) = temp_path("in.npy");
            must(std::fs::write(&path, &bytes));
            let msg = match read_npy_f32(&path) {
                Err(e @ NpyError::Format { .. }) => e.to_string(),
                other => panic!("expected a format error for {needle}, got {other:?}"),
            };
            assert!(msg.contains(needle), "{msg:?} should mention {needle:?}");
            assert!(msg.contains("in.npy"), "{msg}");
        }
    }

    #[test]
    fn reads_version_2_headers() {
        let (_dir, path) = temp_path("v2.npy");
        let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }\n";
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&[2, 0]);
        b.extend_from_slice(&(dict.len() as u32).to_le_bytes());
        b.extend_from_slice(dict.as_bytes());
        b.extend_from_slice(&1.5f32.to_le_bytes());
        b.extend_from_slice(&(-2.0f32).to_le_bytes());
        must(std::fs::write(&path, &b));
        assert_eq!(must(read_npy_f32(&path)), (vec![2], vec![1.5, -2.0]));
    }
}
