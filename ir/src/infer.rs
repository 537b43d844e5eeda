//! Type rules: result types of an op from its operand types, with messages that
//! say what was expected. Used by the builder (as ops are added) and by the
//! verifier (re-checked on a finished or deserialized graph).

use crate::dtype::{DType, TensorType};
use crate::op::Op;

/// Block-quantized weights are read only where a kernel dequantizes them:
/// the table of `Embedding`, the weight of `MatMul`, the LM-head table of
/// `LogitsHead` (matrices) and the expert weights of `MoeExperts` (`[E, rows,
/// cols]`), and only in whole blocks per row.
fn block_operands(op: &Op, operands: &[&TensorType]) -> Result<(), String> {
    for (i, t) in operands.iter().enumerate() {
        let Some(q) = t.dtype.block() else { continue };
        let rank = match (op, i) {
            (Op::Embedding, 0) | (Op::MatMul, 1) | (Op::LogitsHead { .. }, 2) => 2,
            (Op::MoeExperts, 3 | 4) => 3,
            _ => {
                return Err(format!(
                    "operand {i} of {} is block-quantized ({t}); only embedding tables, matmul weights, the LM head and MoE expert weights may be",
                    op.mnemonic()
                ))
            }
        };
        if t.rank() != rank || !t.last_dim().is_multiple_of(q.block_elems()) {
            let what = if rank == 2 {
                "a matrix"
            } else {
                "an [experts, rows, cols] tensor"
            };
            return Err(format!(
                "operand {i} of {} is {t}: a {q} tensor must be {what} whose rows are whole blocks of {}",
                op.mnemonic(),
                q.block_elems()
            ));
        }
    }
    Ok(())
}

/// Result types of `op` applied to `operands`, or why it is ill-typed.
pub fn infer(op: &Op, operands: &[&TensorType]) -> Result<Vec<TensorType>, String> {
    let arity = |n: usize| -> Result<(), String> {
        if operands.len() == n {
            Ok(())
        } else {
            Err(format!(
                "{} takes {n} operand(s), got {}",
                op.mnemonic(),
                operands.len()
            ))
        }
    };
    let float = |i: usize, what: &str| -> Result<(), String> {
        if operands[i].dtype.is_float() {
            Ok(())
        } else {
            Err(format!("{what} must be a float tensor, got {}", operands[i]))
        }
    };
    let rank = |i: usize, r: usize, what: &str| -> Result<(), String> {
        if operands[i].rank() == r {
            Ok(())
        } else {
            Err(format!("{what} must have rank {r}, got {}", operands[i]))
        }
    };
    let position = |i: usize| -> Result<(), String> {
        if operands[i].dtype == DType::I32 && operands[i].numel() == 1 {
            Ok(())
        } else {
            Err(format!("position must be i32[1], got {}", operands[i]))
        }
    };

    block_operands(op, operands)?;
    match op {
        Op::Input { .. } | Op::Weight { .. } => {
            Err(format!("{} is a leaf: its type is given, not inferred", op.mnemonic()))
        }
        Op::Add | Op::Mul => {
            arity(2)?;
            float(0, "lhs")?;
            float(1, "rhs")?;
            let (a, b) = (operands[0], operands[1]);
            let suffix = b.shape.len() <= a.shape.len() && a.shape[a.shape.len() - b.shape.len()..] == b.shape[..];
            if suffix || b.numel() == 1 {
                Ok(vec![TensorType::f32(a.shape.clone())])
            } else {
                Err(format!("cannot broadcast {b} onto {a}"))
            }
        }
        Op::Scale { .. } | Op::GeluTanh | Op::Softcap { .. } => {
            arity(1)?;
            float(0, "input")?;
            Ok(vec![TensorType::f32(operands[0].shape.clone())])
        }
        Op::Reshape { shape } => {
            arity(1)?;
            let n: usize = shape.iter().product();
            if n != operands[0].numel() {
                return Err(format!(
                    "cannot reshape {} ({} elements) to {shape:?} ({n} elements)",
                    operands[0],
                    operands[0].numel()
                ));
            }
            Ok(vec![TensorType::new(operands[0].dtype, shape.clone())])
        }
        Op::Slice { axis, start, end } => {
            arity(1)?;
            let t = operands[0];
            if *axis >= t.rank() || start >= end || *end > t.shape[*axis] {
                return Err(format!("slice axis {axis} [{start}, {end}) out of range for {t}"));
            }
            let mut shape = t.shape.clone();
            shape[*axis] = end - start;
            Ok(vec![TensorType::new(t.dtype, shape)])
        }
        Op::ReplaceIds { .. } => {
            arity(1)?;
            if operands[0].dtype != DType::I32 || operands[0].rank() != 1 {
                return Err(format!("ids must be i32[S], got {}", operands[0]));
            }
            Ok(vec![operands[0].clone()])
        }
        Op::Embedding => {
            arity(2)?;
            float(0, "table")?;
            rank(0, 2, "table")?;
            if operands[1].dtype != DType::I32 || operands[1].rank() != 1 {
                return Err(format!("ids must be i32[S], got {}", operands[1]));
            }
            Ok(vec![TensorType::f32([operands[1].shape[0], operands[0].shape[1]])])
        }
        Op::MatMul => {
            arity(2)?;
            float(0, "x")?;
            float(1, "w")?;
            rank(1, 2, "w")?;
            let (x, w) = (operands[0], operands[1]);
            if x.rank() == 0 || x.last_dim() != w.shape[1] {
                return Err(format!(
                    "x {x} @ w^T needs x's last dim = w's dim 1 (w is [out, in] = {w})"
                ));
            }
            let mut shape = x.shape.clone();
            *shape.last_mut().expect("rank checked") = w.shape[0];
            Ok(vec![TensorType::f32(shape)])
        }
        Op::RmsNorm { .. } => {
            if operands.is_empty() || operands.len() > 2 {
                return Err(format!(
                    "rms_norm takes (x) or (x, weight), got {} operands",
                    operands.len()
                ));
            }
            float(0, "x")?;
            if let Some(w) = operands.get(1) {
                if w.shape != [operands[0].last_dim()] {
                    return Err(format!(
                        "norm weight must be [{}] for x {}, got {w}",
                        operands[0].last_dim(),
                        operands[0]
                    ));
                }
            }
            Ok(vec![TensorType::f32(operands[0].shape.clone())])
        }
        Op::Rope { rope } => {
            arity(2)?;
            float(0, "x")?;
            rank(0, 3, "x [S, heads, head_dim]")?;
            position(1)?;
            if operands[0].shape[2] != rope.head_dim {
                return Err(format!(
                    "rope built for head_dim {} applied to {}",
                    rope.head_dim, operands[0]
                ));
            }
            if rope.rotated_pairs > rope.head_dim / 2 {
                return Err(format!(
                    "rope rotates {} pairs but head_dim {} has only {}",
                    rope.rotated_pairs,
                    rope.head_dim,
                    rope.head_dim / 2
                ));
            }
            Ok(vec![TensorType::f32(operands[0].shape.clone())])
        }
        Op::KvWrite => {
            arity(3)?;
            rank(0, 3, "cache [kv_heads, C, D]")?;
            rank(1, 3, "new [S, kv_heads, D]")?;
            position(2)?;
            let (c, n) = (operands[0], operands[1]);
            if c.shape[0] != n.shape[1] || c.shape[2] != n.shape[2] {
                return Err(format!("cannot write {n} into cache {c}"));
            }
            if n.shape[0] > c.shape[1] {
                return Err(format!(
                    "writing {} tokens into a cache of capacity {}",
                    n.shape[0], c.shape[1]
                ));
            }
            Ok(vec![c.clone()])
        }
        Op::Attention { .. } => {
            arity(4)?;
            rank(0, 3, "q [S, heads, D]")?;
            rank(1, 3, "k_cache [kv_heads, C, D]")?;
            rank(2, 3, "v_cache [kv_heads, C, D]")?;
            position(3)?;
            let (q, k, v) = (operands[0], operands[1], operands[2]);
            if k.shape != v.shape {
                return Err(format!("k cache {k} and v cache {v} differ"));
            }
            if q.shape[2] != k.shape[2] {
                return Err(format!("q {q} and k cache {k} differ in head_dim"));
            }
            if k.shape[0] == 0 || q.shape[1] % k.shape[0] != 0 {
                return Err(format!(
                    "{} query heads cannot be grouped over {} kv heads",
                    q.shape[1], k.shape[0]
                ));
            }
            Ok(vec![TensorType::f32(q.shape.clone())])
        }
        Op::MoeRoute { top_k } => {
            arity(2)?;
            rank(0, 2, "scores [S, E]")?;
            let (s, e) = (operands[0].shape[0], operands[0].shape[1]);
            if operands[1].shape != [e] {
                return Err(format!("per_expert_scale must be [{e}], got {}", operands[1]));
            }
            if *top_k == 0 || *top_k > e {
                return Err(format!("top_k {top_k} must be in 1..={e}"));
            }
            Ok(vec![TensorType::f32([s, *top_k]), TensorType::i32([s, *top_k])])
        }
        Op::MoeExperts => {
            arity(5)?;
            rank(0, 2, "x [S, H]")?;
            rank(3, 3, "gate_up [E, 2I, H]")?;
            rank(4, 3, "down [E, H, I]")?;
            let (x, w, idx, gu, down) = (operands[0], operands[1], operands[2], operands[3], operands[4]);
            let (s, h) = (x.shape[0], x.shape[1]);
            let (e, i2) = (gu.shape[0], gu.shape[1]);
            if w.rank() != 2 || w.shape[0] != s || idx.shape != w.shape || idx.dtype != DType::I32 {
                return Err(format!(
                    "routing weights {w} and experts {idx} must both be [S={s}, K] (experts i32)"
                ));
            }
            if gu.shape[2] != h || i2 % 2 != 0 || down.shape != [e, h, i2 / 2] {
                return Err(format!(
                    "expert weights gate_up {gu} / down {down} do not fit hidden {h}"
                ));
            }
            Ok(vec![TensorType::f32([s, h])])
        }
        Op::GeluMul => {
            arity(2)?;
            same_shape(operands[0], operands[1])?;
            Ok(vec![TensorType::f32(operands[0].shape.clone())])
        }
        Op::AddRmsNorm { eps } => {
            arity(3)?;
            same_shape(operands[0], operands[1])?;
            let sum = infer(&Op::Add, &operands[..2])?.remove(0);
            let normed = infer(&Op::RmsNorm { eps: *eps }, &[&sum, operands[2]])?.remove(0);
            Ok(vec![normed, sum])
        }
        Op::NormAddNorm { eps } => {
            arity(4)?;
            let branch = infer(&Op::RmsNorm { eps: *eps }, &[operands[1], operands[2]])?.remove(0);
            infer(&Op::AddRmsNorm { eps: *eps }, &[operands[0], &branch, operands[3]])
        }
        Op::NormRope { eps, rope } => {
            arity(3)?;
            let normed = infer(&Op::RmsNorm { eps: *eps }, &[operands[0], operands[1]])?.remove(0);
            infer(&Op::Rope { rope: rope.clone() }, &[&normed, operands[2]])
        }
        Op::RopeKvWrite { eps, rope } => {
            arity(4)?;
            let k = infer(
                &Op::NormRope {
                    eps: *eps,
                    rope: rope.clone(),
                },
                &operands[1..],
            )?
            .remove(0);
            infer(&Op::KvWrite, &[operands[0], &k, operands[3]])
        }
        Op::NormKvWrite { eps } => {
            arity(3)?;
            let v = infer(&Op::RmsNorm { eps: *eps }, &[operands[1]])?.remove(0);
            infer(&Op::KvWrite, &[operands[0], &v, operands[2]])
        }
        Op::NormAdd { eps } => {
            arity(3)?;
            let branch = infer(&Op::RmsNorm { eps: *eps }, &[operands[1], operands[2]])?.remove(0);
            same_shape(operands[0], &branch)?;
            infer(&Op::Add, &[operands[0], &branch])
        }
        Op::MoeRouter { eps, top_k, .. } => {
            arity(4)?;
            let normed = infer(&Op::RmsNorm { eps: *eps }, &[operands[0]])?.remove(0);
            let scaled = infer(&Op::Mul, &[&normed, operands[1]])?.remove(0);
            let scores = infer(&Op::MatMul, &[&scaled, operands[2]])?.remove(0);
            infer(&Op::MoeRoute { top_k: *top_k }, &[&scores, operands[3]])
        }
        Op::LogitsHead { eps, cap } => {
            arity(3)?;
            let normed = infer(&Op::RmsNorm { eps: *eps }, &[operands[0], operands[1]])?.remove(0);
            let logits = infer(&Op::MatMul, &[&normed, operands[2]])?.remove(0);
            match cap {
                Some(c) => infer(&Op::Softcap { cap: *c }, &[&logits]),
                None => Ok(vec![logits]),
            }
        }
    }
}

fn same_shape(a: &TensorType, b: &TensorType) -> Result<(), String> {
    if a.shape == b.shape {
        Ok(())
    } else {
        Err(format!("operands {a} and {b} must have the same shape"))
    }
}
