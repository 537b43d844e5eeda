//! The device tensors a TT program reads, and how each is made from the checkpoint (or from
//! constants) when `weights.safetensors` is written.

use gemma4c_ir::RopeSpec;

use crate::tt::layout::DevLayout;
use crate::tt::target::{TtTarget, WeightFormat};

/// How a prepared tensor is made from the checkpoint (or from constants).
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// `nn.Linear` weight `[n, k]` as `W^T [k, n]`, rows laid out like `xin`, columns like `out`.
    Transposed {
        key: String,
        xin: DevLayout,
        out: DevLayout,
    },
    /// A vector repeated to fill `layout`'s columns, one row.
    Row { key: String, layout: DevLayout },
    /// One value in a `[1, 1]` tensor.
    Scalar { key: String },
    /// Embedding table `[vocab, h]` with its rows laid out like `layout` (host side).
    Gather {
        key: String,
        vocab: usize,
        layout: DevLayout,
    },
    /// `cos`/`sin` of every position `[max_context, head_dim]`.
    Rope { spec: RopeSpec, context: usize, sin: bool },
    /// `R [d, d]` with `x @ R == rotate_half(x)`.
    RotateHalf { d: usize },
    /// A run-time index kernels read with `ttl.read_index` (element (0, 0) of one float32 tile):
    /// a slice's start tile column.
    Index { value: usize },
    /// 32 selection tiles `[32 * 32, 32]`: tile r has a 1 at (r, 0).
    KvSelect,
    /// 32 keep tiles `[32 * 32, 32]`: tile r is 1 in column 0 except at row r.
    KvKeep,
    /// Experts' `gate_up [e, 2i, h]` as `[h rows like xin, e x (gate i | up i) padded]`.
    MoeGateUp {
        key: String,
        experts: usize,
        inter: usize,
        xin: DevLayout,
    },
    /// Experts' `down [e, h, i]` as `[e x i padded, h columns like out]`.
    MoeDown {
        key: String,
        experts: usize,
        inter: usize,
        out: DevLayout,
    },
    /// 0/1 `[experts, experts x i padded]` that repeats lane e over expert e's columns.
    MoeExpand { experts: usize, inter: usize },
    /// `[1, experts]` of zeros (padding lanes -1e9).
    MoePad { experts: usize },
    /// Prepared matrices side by side, `(columns, source)` each (the fused q/k/v projection);
    /// every part starts on a tile column.
    Concat { parts: Vec<(usize, Source)> },
}

impl Source {
    /// The checkpoint tensor it is made from (the first part's, for a concatenation).
    pub fn key(&self) -> Option<&str> {
        match self {
            Source::Transposed { key, .. }
            | Source::Row { key, .. }
            | Source::Scalar { key }
            | Source::Gather { key, .. }
            | Source::MoeGateUp { key, .. }
            | Source::MoeDown { key, .. } => Some(key),
            Source::Concat { parts } => parts.first().and_then(|(_, s)| s.key()),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    pub name: String,
    pub rows: usize,
    pub cols: usize,
    /// Kept on the host (embedding tables, RoPE tables) rather than uploaded.
    pub host: bool,
    pub source: Source,
}

impl Prepared {
    /// How the tensor is stored on the device. With `--weights bfp8` the matmul weights are
    /// bfloat8_b, except on the per-layer-input (PLE) path and the MoE router, which stay bf16
    /// with the embeddings and norms (quantizing the PLE path is known to hurt quality badly).
    pub fn format(&self, t: &TtTarget) -> WeightFormat {
        format_of(&self.source, t)
    }
}

fn format_of(source: &Source, t: &TtTarget) -> WeightFormat {
    match source {
        Source::Transposed { key, .. } | Source::MoeGateUp { key, .. } | Source::MoeDown { key, .. }
            if !key.contains("per_layer") && !key.contains("router") =>
        {
            t.weights
        }
        Source::Concat { parts } if parts.iter().all(|(_, s)| format_of(s, t) == t.weights) => t.weights,
        _ => WeightFormat::Bf16,
    }
}
