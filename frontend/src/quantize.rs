//! `--quant FORMAT`: a Hugging Face checkpoint's matmul weights quantized at
//! load (`gemma4c_ir::quantize`: gguf-py's quantizers for q8_0/q4_0,
//! llama.cpp's reference quantizers for q4_K/q6_K), then read by the kernels
//! as if they came from a GGUF file.
//!
//! Which weights: those the model multiplies activations by (`MatMul`'s right
//! operand in the decode graph, plus an untied LM head, and the MoE expert
//! weights), except the token embedding (also the tied LM head), everything
//! of the per-layer inputs (PLE table, its projection and gate: users of other
//! Gemma 4 ports found that quantizing PLE badly hurts quality) and the MoE
//! router (small, and its scores pick the experts; llama.cpp keeps it in f32
//! too). Norm weights are vectors and stay as stored too. A weight whose rows
//! are not whole blocks stays as stored.

use std::collections::BTreeSet;

use gemma4c_ir::{Op, QuantFormat};

use crate::error::FrontendError;
use crate::gemma4::BuildOptions;
use crate::model::Model;

/// What `--quant` asks for: the format, and whether the token embedding (also
/// the tied LM head) is quantized too (`--quant-embedding`; kept by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuantSpec {
    pub format: QuantFormat,
    pub embedding: bool,
}

/// What `quantize` did, for `inspect` and logs.
#[derive(Debug, Default)]
pub struct QuantReport {
    pub format: Option<QuantFormat>,
    /// Quantized keys.
    pub quantized: Vec<String>,
    /// Matmul weights kept as stored, with why.
    pub kept: Vec<(String, String)>,
}

/// The `--quant` spellings: `q8_0`, `q4_0`, `q4_k`, `q6_k` (any case).
pub fn parse_quant(s: &str) -> Result<QuantFormat, String> {
    gemma4c_ir::quantize::QUANTIZERS
        .into_iter()
        .find(|q| q.name().eq_ignore_ascii_case(s))
        .ok_or_else(|| {
            let names = gemma4c_ir::quantize::QUANTIZERS
                .map(|q| q.name().to_ascii_lowercase())
                .join(", ");
            format!("--quant `{s}` is not supported; expected one of {names}")
        })
}

impl Model {
    /// Quantizes this checkpoint's matmul weights to `q` (see the module docs).
    /// Only Hugging Face checkpoints: a GGUF file is already in its formats.
    pub fn quantize(&mut self, spec: QuantSpec) -> Result<QuantReport, FrontendError> {
        let q = spec.format;
        if self.checkpoint.gguf().is_some() {
            return Err(FrontendError::Gguf {
                path: self.dir.clone(),
                message: "--quant applies to Hugging Face checkpoints; a GGUF file is used in its own formats".into(),
            });
        }
        let graph = self.graph(&BuildOptions::new(&self.config, 1, 2, 1))?;
        let mut matmul = BTreeSet::new();
        let mut tables = BTreeSet::new();
        for (id, node) in graph.nodes() {
            let operands = graph.operands(id);
            let key_of = |i: usize| match operands.get(i).map(|v| &graph.node(v.node).op) {
                Some(Op::Weight { key }) => Some(key.clone()),
                _ => None,
            };
            match node.op {
                Op::MatMul => matmul.extend(key_of(1)),
                Op::MoeExperts => matmul.extend(key_of(3).into_iter().chain(key_of(4))),
                Op::Embedding => tables.extend(key_of(0)),
                _ => {}
            }
        }
        let mut report = QuantReport {
            format: Some(q),
            ..QuantReport::default()
        };
        if spec.embedding {
            // An untied model's embedding is no matmul weight; the PLE table is kept below.
            matmul.extend(tables.iter().cloned());
        }
        for key in matmul {
            let info = self.checkpoint.require(&key)?.clone();
            let why = if tables.contains(&key) && !spec.embedding {
                Some("embedding table (tied LM head)".to_string())
            } else if key.contains("per_layer") {
                Some("per-layer input (PLE)".to_string())
            } else if key.contains(".router.") {
                Some("MoE router".to_string())
            } else if !crate::store::reads_blocks(&key, info.shape.len())
                || !info.shape.last().is_some_and(|c| c.is_multiple_of(q.block_elems()))
            {
                Some(format!(
                    "rows of {} are not whole {q} blocks",
                    info.shape.last().unwrap_or(&0)
                ))
            } else {
                None
            };
            match why {
                Some(why) => report.kept.push((key, why)),
                None => {
                    self.checkpoint.quantize(&key, q);
                    report.quantized.push(key);
                }
            }
        }
        Ok(report)
    }
}
