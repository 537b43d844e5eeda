//! The operation set of the graph IR.
//!
//! Three layers of ops, kept deliberately small:
//! - leaves (`Input`, `Weight`) that bring values into the graph;
//! - primitives (elementwise math, reshape, slice);
//! - library ops every target has a fast path for (`MatMul`, `RmsNorm`, `Rope`,
//!   `KvWrite`, `Attention`, ...).
//!
//! Fused ops are created only by passes. Type rules live in `infer.rs`, reference
//! semantics in `eval.rs`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What a graph input carries. The runtime binds inputs by name; the role says
/// how the value is produced and whether an output of the same name replaces it
/// after each step (state).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputRole {
    /// Token ids of this call, `i32[S]`.
    TokenIds,
    /// Absolute position of the first token of this call, `i32[1]`.
    Position,
    /// A KV-cache tensor `[kv_heads, capacity, head_dim]`, threaded through the
    /// step: the output with the same name is its new value.
    KvCache,
}

/// Rotary embedding frequencies for one layer type.
///
/// `inv_freq[i] = 1 / theta^(2i / head_dim) / factor` for `i < rotated_pairs`, and
/// 0 (identity) for the remaining `head_dim/2 - rotated_pairs` pairs. Element `i`
/// rotates with element `i + head_dim/2` (Hugging Face half-split layout).
/// The "default" RoPE rotates all pairs; Gemma 4's "proportional" RoPE on full
/// layers rotates `partial_rotary_factor * head_dim / 2` pairs but keeps the full
/// `head_dim` in the exponent's denominator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RopeSpec {
    pub theta: f64,
    pub head_dim: usize,
    pub rotated_pairs: usize,
    pub factor: f64,
}

impl RopeSpec {
    /// Inverse frequencies, computed with f32 arithmetic like Hugging Face
    /// (`1.0 / theta ** (arange(0, dim, 2).float() / dim)`).
    pub fn inv_freq(&self) -> Vec<f32> {
        crate::math::rope_inv_freq(self.theta, self.head_dim, self.rotated_pairs, self.factor)
    }
}

/// Operation kinds. Operand order is part of each op's contract (documented per
/// variant); `infer.rs` checks it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// A graph input (token ids, position, state). No operands.
    Input { role: InputRole },
    /// A checkpoint tensor, by its Hugging Face key without the model prefix
    /// (`layers.3.self_attn.q_proj.weight`). No operands.
    Weight { key: String },

    /// `a + b`; `b` is either the same shape, a suffix of `a`'s shape, or one element.
    Add,
    /// `a * b`, broadcasting like `Add`.
    Mul,
    /// `x * factor` with an f32 constant.
    Scale { factor: f32 },
    /// `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))` (`gelu_pytorch_tanh`).
    GeluTanh,
    /// `cap * tanh(x / cap)`.
    Softcap { cap: f32 },
    /// Same elements, new shape.
    Reshape { shape: Vec<usize> },
    /// Elements `[start, end)` along `axis`.
    Slice { axis: usize, start: usize, end: usize },

    /// Ids in `ids` become `with`: operands `(ids i32[S])` → `i32[S]`. Multimodal
    /// checkpoints map image/video/audio placeholders to pad before embedding.
    ReplaceIds { ids: Vec<i32>, with: i32 },
    /// `table[ids]`: operands `(table [V, H], ids i32[S])` → `f32[S, H]`.
    Embedding,
    /// `x @ w^T`: operands `(x [.., K], w [N, K])` → `f32[.., N]`. Weights are
    /// stored `[out, in]` as in PyTorch's `nn.Linear`.
    MatMul,
    /// `x * (mean(x^2) + eps)^-0.5 [* w]` over the last dim: operands `(x)` or
    /// `(x, w [last])`. The weight is used as is (Gemma 4), not `1 + w`.
    RmsNorm { eps: f32 },
    /// Rotary embedding: operands `(x [S, heads, head_dim], pos i32[1])`; token `s`
    /// is at position `pos + s`.
    Rope { rope: RopeSpec },
    /// Write `new` into a ring-buffer cache: operands
    /// `(cache [kv_heads, C, D], new [S, kv_heads, D], pos i32[1])` → new cache.
    /// Position `p` lives in slot `p mod C`.
    KvWrite,
    /// Causal single-call attention over a cache that already holds this call's
    /// keys: operands `(q [S, heads, D], k_cache [kv_heads, C, D],
    /// v_cache [kv_heads, C, D], pos i32[1])` → `f32[S, heads, D]`. Query `s`
    /// (position `pos + s`) sees cached position `t` iff `t <= pos + s` and, with a
    /// window `W`, `pos + s - t < W`. GQA: query head `h` reads kv head
    /// `h / (heads / kv_heads)`. Scores are multiplied by `scale` (1.0 in Gemma 4).
    Attention { window: Option<usize>, scale: f32 },
    /// MoE routing: operands `(scores [S, E], per_expert_scale [E])` →
    /// `(weights f32[S, K], experts i32[S, K])`: softmax over all experts, top-K,
    /// renormalize over the K, times the per-expert scale.
    MoeRoute { top_k: usize },
    /// Routed experts: operands `(x [S, H], weights [S, K], experts i32[S, K],
    /// gate_up [E, 2I, H], down [E, H, I])` → `f32[S, H]` =
    /// `sum_k weights_k * down_e(gelu_tanh(gate_e x) * up_e x)`.
    MoeExperts,

    // ---- fused ops: created only by passes; each equals the unfused chain ----
    /// `gelu_tanh(a) * b` (MLP gate·up and the PLE gate·per-layer input).
    GeluMul,
    /// `(a, b, w)` → `(rms_norm(a + b) * w, a + b)`: the normed value and the sum,
    /// which is the next residual.
    AddRmsNorm { eps: f32 },
    /// The Gemma sandwich `post_norm → add → pre_norm`:
    /// `(residual, x, w_post, w_pre)` → `(rms_norm(s) * w_pre, s)` with
    /// `s = residual + rms_norm(x) * w_post`.
    NormAddNorm { eps: f32 },
    /// q/k RMSNorm then RoPE: `(x [S, heads, D], w [D], pos)` → `rope(rms_norm(x) * w)`.
    NormRope { eps: f32, rope: RopeSpec },
    /// K path into the cache in one op: `(cache, k [S, kv_heads, D], w [D], pos)` →
    /// cache with `rope(rms_norm(k) * w)` written at `pos` (the rotated K is never
    /// materialized on its own).
    RopeKvWrite { eps: f32, rope: RopeSpec },
    /// V path into the cache: `(cache, v, pos)` → cache with `rms_norm(v)` (no
    /// weight) written at `pos`.
    NormKvWrite { eps: f32 },
    /// Sandwich post-norm and residual add: `(residual, x, w)` →
    /// `residual + rms_norm(x) * w` (MLP and PLE branches).
    NormAdd { eps: f32 },
    /// The whole MoE router: `(x [S, H], scale [H], proj [E, H], per_expert_scale [E])`
    /// → `moe_route(rms_norm(x) * scale * scalar @ proj^T, per_expert_scale)`
    /// (the norm has no weight; `scalar` is `H^-0.5`).
    MoeRouter { eps: f32, scalar: f32, top_k: usize },
    /// Final norm, tied LM head and soft-cap: `(x, w_norm, table [V, H])` →
    /// `softcap(rms_norm(x) * w_norm @ table^T)`.
    LogitsHead { eps: f32, cap: Option<f32> },
}

impl Op {
    /// The op's name in the text form and in statistics.
    pub fn mnemonic(&self) -> &'static str {
        match self {
            Op::Input { .. } => "input",
            Op::Weight { .. } => "weight",
            Op::Add => "add",
            Op::Mul => "mul",
            Op::Scale { .. } => "scale",
            Op::GeluTanh => "gelu_tanh",
            Op::Softcap { .. } => "softcap",
            Op::Reshape { .. } => "reshape",
            Op::Slice { .. } => "slice",
            Op::ReplaceIds { .. } => "replace_ids",
            Op::Embedding => "embedding",
            Op::MatMul => "matmul",
            Op::RmsNorm { .. } => "rms_norm",
            Op::Rope { .. } => "rope",
            Op::KvWrite => "kv_write",
            Op::Attention { .. } => "attention",
            Op::MoeRoute { .. } => "moe_route",
            Op::MoeExperts => "moe_experts",
            Op::GeluMul => "gelu_mul",
            Op::AddRmsNorm { .. } => "add_rms_norm",
            Op::NormAddNorm { .. } => "norm_add_norm",
            Op::NormRope { .. } => "norm_rope",
            Op::RopeKvWrite { .. } => "rope_kv_write",
            Op::NormKvWrite { .. } => "norm_kv_write",
            Op::LogitsHead { .. } => "logits_head",
            Op::NormAdd { .. } => "norm_add",
            Op::MoeRouter { .. } => "moe_router",
        }
    }

    /// What passes and backends may assume about this op (one exhaustive table, so a new op
    /// must say what it is).
    pub fn props(&self) -> OpProps {
        const LEAF: OpProps = OpProps::NONE.leaf();
        const ELEMENTWISE: OpProps = OpProps::NONE.elementwise();
        const ROW_WISE: OpProps = OpProps::NONE.preserves_layout();
        const OTHER: OpProps = OpProps::NONE;
        match self {
            Op::Input { .. } | Op::Weight { .. } => LEAF,
            Op::Add | Op::Mul | Op::Scale { .. } | Op::GeluTanh | Op::Softcap { .. } => ELEMENTWISE,
            Op::Reshape { .. } => OpProps::NONE.view(),
            Op::RmsNorm { .. } | Op::Rope { .. } => ROW_WISE,
            Op::Slice { .. }
            | Op::ReplaceIds { .. }
            | Op::Embedding
            | Op::MatMul
            | Op::Attention { .. }
            | Op::MoeRoute { .. }
            | Op::MoeExperts => OTHER,
            Op::KvWrite => OpProps::NONE.updates_cache(),
            Op::GeluMul => ELEMENTWISE.fused(),
            Op::AddRmsNorm { .. } | Op::NormAddNorm { .. } | Op::NormAdd { .. } | Op::NormRope { .. } => {
                ROW_WISE.fused()
            }
            Op::RopeKvWrite { .. } | Op::NormKvWrite { .. } => OpProps::NONE.updates_cache().fused(),
            Op::MoeRouter { .. } | Op::LogitsHead { .. } => OTHER.fused(),
        }
    }

    /// Leaves have no operands and cost no kernel launch.
    pub fn is_leaf(&self) -> bool {
        self.props().leaf
    }

    /// Ops that only passes create.
    pub fn is_fused(&self) -> bool {
        self.props().fused
    }

    /// Ops whose result is operand 0 (a KV cache) updated in place.
    pub fn updates_cache(&self) -> bool {
        self.props().updates_cache
    }

    /// Ops that only reinterpret memory (no kernel on any target).
    pub fn is_view(&self) -> bool {
        self.props().view
    }

    /// Ops computed element by element (broadcast operands allowed).
    pub fn is_elementwise(&self) -> bool {
        self.props().elementwise
    }

    /// Ops whose activation operands and results map element for element, so a backend can give
    /// them one device layout: elementwise ops and row-wise ones over the last dimension.
    pub fn preserves_layout(&self) -> bool {
        self.props().preserves_layout
    }
}

/// Properties of an op kind (see [`Op::props`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpProps {
    /// No operands: binds a graph input or a checkpoint tensor; no kernel.
    pub leaf: bool,
    /// Only reinterprets memory (same elements, new shape); no kernel.
    pub view: bool,
    /// Each result element is computed from the operand elements at the same index
    /// (broadcast operands allowed).
    pub elementwise: bool,
    /// Activation operands and results map element for element (elementwise ops, and row-wise
    /// ops over the last dimension such as RMSNorm and RoPE).
    pub preserves_layout: bool,
    /// Created only by fusion; equal to its unfused chain (`eval.rs` defines it so).
    pub fused: bool,
    /// Result 0 is operand 0, a KV cache, updated in place (state).
    pub updates_cache: bool,
}

impl OpProps {
    pub const NONE: OpProps = OpProps {
        leaf: false,
        view: false,
        elementwise: false,
        preserves_layout: false,
        fused: false,
        updates_cache: false,
    };

    const fn leaf(self) -> OpProps {
        OpProps { leaf: true, ..self }
    }

    const fn view(self) -> OpProps {
        OpProps {
            view: true,
            preserves_layout: false,
            ..self
        }
    }

    const fn elementwise(self) -> OpProps {
        OpProps {
            elementwise: true,
            preserves_layout: true,
            ..self
        }
    }

    const fn preserves_layout(self) -> OpProps {
        OpProps {
            preserves_layout: true,
            ..self
        }
    }

    const fn fused(self) -> OpProps {
        OpProps { fused: true, ..self }
    }

    const fn updates_cache(self) -> OpProps {
        OpProps {
            updates_cache: true,
            ..self
        }
    }
}

/// Prints attributes in a fixed order, e.g. `rms_norm[eps=1e-6]`.
impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.mnemonic())?;
        match self {
            Op::Input { role } => write!(f, "[{}]", role_name(role)),
            Op::Weight { key } => write!(f, "[{key}]"),
            Op::Scale { factor } => write!(f, "[factor={}]", fmt_f32(*factor)),
            Op::Softcap { cap } => write!(f, "[cap={}]", fmt_f32(*cap)),
            Op::Reshape { shape } => write!(f, "[shape={shape:?}]"),
            Op::Slice { axis, start, end } => write!(f, "[axis={axis},{start}..{end}]"),
            Op::RmsNorm { eps } => write!(f, "[eps={}]", fmt_f32(*eps)),
            Op::Rope { rope } => write!(f, "[{}]", rope_attrs(rope)),
            Op::MoeRouter { eps, scalar, top_k } => {
                write!(f, "[eps={},scalar={},top_k={top_k}]", fmt_f32(*eps), fmt_f32(*scalar))
            }
            Op::AddRmsNorm { eps } | Op::NormAddNorm { eps } | Op::NormKvWrite { eps } | Op::NormAdd { eps } => {
                write!(f, "[eps={}]", fmt_f32(*eps))
            }
            Op::NormRope { eps, rope } | Op::RopeKvWrite { eps, rope } => {
                write!(f, "[eps={},{}]", fmt_f32(*eps), rope_attrs(rope))
            }
            Op::LogitsHead { eps, cap } => match cap {
                Some(c) => write!(f, "[eps={},cap={}]", fmt_f32(*eps), fmt_f32(*c)),
                None => write!(f, "[eps={}]", fmt_f32(*eps)),
            },
            Op::Attention { window, scale } => match window {
                Some(w) => write!(f, "[window={w},scale={}]", fmt_f32(*scale)),
                None => write!(f, "[causal,scale={}]", fmt_f32(*scale)),
            },
            Op::MoeRoute { top_k } => write!(f, "[top_k={top_k}]"),
            Op::ReplaceIds { ids, with } => write!(f, "[ids={ids:?},with={with}]"),
            _ => Ok(()),
        }
    }
}

fn rope_attrs(rope: &RopeSpec) -> String {
    format!(
        "theta={},pairs={}/{},factor={}",
        rope.theta,
        rope.rotated_pairs,
        rope.head_dim / 2,
        rope.factor
    )
}

fn role_name(role: &InputRole) -> &'static str {
    match role {
        InputRole::TokenIds => "token_ids",
        InputRole::Position => "position",
        InputRole::KvCache => "kv_cache",
    }
}

/// Shortest round-trip decimal form: deterministic and exact.
fn fmt_f32(x: f32) -> String {
    format!("{x:?}")
}
