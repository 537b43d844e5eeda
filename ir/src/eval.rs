//! Reference semantics of every op, in f32 on the host.
//!
//! This is the definition the other backends are tested against, so it favours
//! clarity over speed; reductions accumulate in f64 where Hugging Face's f32
//! result is itself the rounded value of a longer sum (norm means, softmax sums).

use crate::math;
use crate::op::Op;
use crate::tensor::Tensor;

/// Computes the results of a non-leaf op. Operand types were checked when the
/// graph was built; errors here are about values (an id outside the vocabulary).
pub fn eval(op: &Op, operands: &[&Tensor]) -> Result<Vec<Tensor>, String> {
    let f = |i: usize| -> Result<&[f32], String> {
        operands
            .get(i)
            .and_then(|t| t.as_f32())
            .ok_or_else(|| format!("operand {i} must be a float tensor"))
    };
    let shape0 = || operands[0].shape.clone();
    let one = |t: Tensor| Ok(vec![t]);
    match op {
        Op::Input { .. } | Op::Weight { .. } => Err("leaves are bound, not evaluated".to_string()),
        Op::Add => one(Tensor::f32(shape0(), broadcast(f(0)?, f(1)?, |a, b| a + b))),
        Op::Mul => one(Tensor::f32(shape0(), broadcast(f(0)?, f(1)?, |a, b| a * b))),
        Op::Scale { factor } => one(Tensor::f32(shape0(), f(0)?.iter().map(|x| x * factor).collect())),
        Op::GeluTanh => one(Tensor::f32(shape0(), f(0)?.iter().map(|&x| gelu_tanh(x)).collect())),
        Op::Softcap { cap } => one(Tensor::f32(
            shape0(),
            f(0)?.iter().map(|&x| math::softcap(x, *cap)).collect(),
        )),
        Op::Reshape { shape } => {
            let mut t = operands[0].clone();
            t.shape = shape.clone();
            one(t)
        }
        Op::Slice { axis, start, end } => one(slice(operands[0], *axis, *start, *end)),
        Op::ReplaceIds { ids, with } => {
            let v = operands[0].as_i32().ok_or("ids must be i32")?;
            let out = v.iter().map(|x| if ids.contains(x) { *with } else { *x }).collect();
            one(Tensor::i32(shape0(), out))
        }
        Op::Embedding => embedding(f(0)?, &operands[0].shape, operands[1]).map(|t| vec![t]),
        Op::MatMul => {
            let (x, w) = (f(0)?, f(1)?);
            let (n, k) = (operands[1].shape[0], operands[1].shape[1]);
            let mut shape = shape0();
            *shape.last_mut().ok_or("matmul of a scalar")? = n;
            one(Tensor::f32(shape, matmul(x, w, n, k)))
        }
        Op::RmsNorm { eps } => {
            let w = if operands.len() == 2 { Some(f(1)?) } else { None };
            one(Tensor::f32(
                shape0(),
                rms_norm(f(0)?, w, operands[0].shape.last().copied().unwrap_or(1), *eps),
            ))
        }
        Op::Rope { rope } => {
            let pos = position(operands[1])?;
            let mut x = f(0)?.to_vec();
            let (s, heads, d) = (operands[0].shape[0], operands[0].shape[1], operands[0].shape[2]);
            let inv_freq = rope.inv_freq();
            for t in 0..s {
                let (cos, sin) = rope_angles(&inv_freq, pos + t as i64);
                for h in 0..heads {
                    let row = &mut x[(t * heads + h) * d..(t * heads + h + 1) * d];
                    rotate(row, &cos, &sin);
                }
            }
            one(Tensor::f32(shape0(), x))
        }
        Op::KvWrite | Op::RopeKvWrite { .. } | Op::NormKvWrite { .. } => {
            let mut cache = operands[0].clone();
            update_cache(op, &mut cache, &operands[1..])?;
            one(cache)
        }
        Op::Attention { window, scale } => attention(operands, *window, *scale).map(|t| vec![t]),
        Op::MoeRoute { top_k } => moe_route(f(0)?, f(1)?, operands[0].shape[1], *top_k),
        Op::MoeExperts => moe_experts(operands).map(|t| vec![t]),
        // Fused ops are defined as their unfused chains, so a rewrite can never
        // change the meaning of a graph.
        Op::GeluMul => {
            let g = eval(&Op::GeluTanh, &operands[..1])?.remove(0);
            eval(&Op::Mul, &[&g, operands[1]])
        }
        Op::AddRmsNorm { eps } => {
            let sum = eval(&Op::Add, &operands[..2])?.remove(0);
            let normed = eval(&Op::RmsNorm { eps: *eps }, &[&sum, operands[2]])?.remove(0);
            Ok(vec![normed, sum])
        }
        Op::NormAddNorm { eps } => {
            let branch = eval(&Op::RmsNorm { eps: *eps }, &[operands[1], operands[2]])?.remove(0);
            eval(&Op::AddRmsNorm { eps: *eps }, &[operands[0], &branch, operands[3]])
        }
        Op::NormRope { eps, rope } => {
            let normed = eval(&Op::RmsNorm { eps: *eps }, &operands[..2])?.remove(0);
            eval(&Op::Rope { rope: rope.clone() }, &[&normed, operands[2]])
        }
        Op::NormAdd { eps } => {
            let branch = eval(&Op::RmsNorm { eps: *eps }, &operands[1..3])?.remove(0);
            eval(&Op::Add, &[operands[0], &branch])
        }
        Op::MoeRouter { eps, scalar, top_k } => {
            let normed = eval(&Op::RmsNorm { eps: *eps }, &operands[..1])?.remove(0);
            let scaled = eval(&Op::Mul, &[&normed, operands[1]])?.remove(0);
            let scaled = eval(&Op::Scale { factor: *scalar }, &[&scaled])?.remove(0);
            let scores = eval(&Op::MatMul, &[&scaled, operands[2]])?.remove(0);
            eval(&Op::MoeRoute { top_k: *top_k }, &[&scores, operands[3]])
        }
        Op::LogitsHead { eps, cap } => {
            let normed = eval(&Op::RmsNorm { eps: *eps }, &operands[..2])?.remove(0);
            let logits = eval(&Op::MatMul, &[&normed, operands[2]])?.remove(0);
            match cap {
                Some(c) => eval(&Op::Softcap { cap: *c }, &[&logits]),
                None => Ok(vec![logits]),
            }
        }
    }
}

/// `gelu_pytorch_tanh` of one value.
pub fn gelu_tanh(x: f32) -> f32 {
    math::gelu_tanh(x)
}

fn broadcast(a: &[f32], b: &[f32], op: impl Fn(f32, f32) -> f32) -> Vec<f32> {
    if b.len() == 1 {
        a.iter().map(|&x| op(x, b[0])).collect()
    } else {
        a.iter().zip(b.iter().cycle()).map(|(&x, &y)| op(x, y)).collect()
    }
}

fn slice(t: &Tensor, axis: usize, start: usize, end: usize) -> Tensor {
    let outer: usize = t.shape[..axis].iter().product();
    let inner: usize = t.shape[axis + 1..].iter().product();
    let dim = t.shape[axis];
    let mut shape = t.shape.clone();
    shape[axis] = end - start;
    fn pick<T: Copy>(src: &[T], outer: usize, dim: usize, inner: usize, start: usize, end: usize) -> Vec<T> {
        let mut out = Vec::with_capacity(outer * (end - start) * inner);
        for o in 0..outer {
            out.extend_from_slice(&src[(o * dim + start) * inner..(o * dim + end) * inner]);
        }
        out
    }
    match &t.data {
        crate::tensor::Data::F32(v) => Tensor::f32(shape, pick(v, outer, dim, inner, start, end)),
        crate::tensor::Data::I32(v) => Tensor::i32(shape, pick(v, outer, dim, inner, start, end)),
    }
}

fn embedding(table: &[f32], table_shape: &[usize], ids: &Tensor) -> Result<Tensor, String> {
    let (v, h) = (table_shape[0], table_shape[1]);
    let ids = ids.as_i32().ok_or("ids must be i32")?;
    let mut out = Vec::with_capacity(ids.len() * h);
    for &id in ids {
        if id < 0 || id as usize >= v {
            return Err(format!("token id {id} is outside the table of {v} rows"));
        }
        out.extend_from_slice(&table[id as usize * h..(id as usize + 1) * h]);
    }
    Ok(Tensor::f32([ids.len(), h], out))
}

/// Dot product with 8 independent partial sums (the order a vectorized f32
/// kernel uses; closer to a blocked BLAS sum than a single running total).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = a.len() / 8;
    for c in 0..chunks {
        for l in 0..8 {
            acc[l] += a[c * 8 + l] * b[c * 8 + l];
        }
    }
    let mut tail = 0.0f32;
    for i in chunks * 8..a.len() {
        tail += a[i] * b[i];
    }
    acc.iter().sum::<f32>() + tail
}

/// `x [M, K] @ w[N, K]^T`.
pub fn matmul(x: &[f32], w: &[f32], n: usize, k: usize) -> Vec<f32> {
    let m = x.len() / k;
    let mut out = Vec::with_capacity(m * n);
    for row in x.chunks_exact(k).take(m) {
        out.extend(w.chunks_exact(k).map(|wr| dot(row, wr)));
    }
    out
}

pub fn rms_norm(x: &[f32], w: Option<&[f32]>, d: usize, eps: f32) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks_exact(d) {
        let ms = row.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / d as f64;
        let inv = math::inv_rms(ms as f32, eps);
        match w {
            Some(w) => out.extend(row.iter().zip(w).map(|(&v, &g)| v * inv * g)),
            None => out.extend(row.iter().map(|&v| v * inv)),
        }
    }
    out
}

fn position(t: &Tensor) -> Result<i64, String> {
    let p = t
        .as_i32()
        .and_then(|p| p.first().copied())
        .ok_or("position must be i32[1]")?;
    if p < 0 {
        return Err(format!("negative position {p}"));
    }
    Ok(p as i64)
}

pub use crate::math::rope_angles;

/// Half-split rotation of one head: lane `i` pairs with lane `i + D/2`.
pub fn rotate(row: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = row.len() / 2;
    for i in 0..half {
        (row[i], row[i + half]) = math::rotate_pair(row[i], row[i + half], cos[i], sin[i]);
    }
}

/// The cache-writing ops (`kv_write` and its fused forms) applied in place:
/// `cache` is operand 0, `rest` the other operands.
pub fn update_cache(op: &Op, cache: &mut Tensor, rest: &[&Tensor]) -> Result<(), String> {
    match op {
        Op::KvWrite => kv_write(cache, rest[0], rest[1]),
        Op::RopeKvWrite { eps, rope } => {
            let k = eval(
                &Op::NormRope {
                    eps: *eps,
                    rope: rope.clone(),
                },
                rest,
            )?
            .remove(0);
            kv_write(cache, &k, rest[2])
        }
        Op::NormKvWrite { eps } => {
            let v = eval(&Op::RmsNorm { eps: *eps }, &rest[..1])?.remove(0);
            kv_write(cache, &v, rest[1])
        }
        other => Err(format!("{other} does not update a cache")),
    }
}

/// Writes `new [S, kv_heads, D]` into `cache [kv_heads, C, D]` at slots `(pos + s) mod C`.
pub fn kv_write(cache: &mut Tensor, new: &Tensor, pos: &Tensor) -> Result<(), String> {
    let pos = position(pos)?;
    let (heads, cap, d) = (cache.shape[0], cache.shape[1], cache.shape[2]);
    let s = new.shape[0];
    let src = new.as_f32().ok_or("new keys must be f32")?;
    let dst = cache.as_f32_mut().ok_or("cache must be f32")?;
    for t in 0..s {
        let slot = ((pos + t as i64) % cap as i64) as usize;
        for h in 0..heads {
            dst[(h * cap + slot) * d..(h * cap + slot + 1) * d]
                .copy_from_slice(&src[(t * heads + h) * d..(t * heads + h + 1) * d]);
        }
    }
    Ok(())
}

/// Position held by each cache slot after this call wrote positions up to `last`
/// (None: never written).
pub fn slot_positions(cap: usize, last: i64) -> Vec<Option<i64>> {
    (0..cap as i64)
        .map(|j| {
            let t = last - (last - j).rem_euclid(cap as i64);
            (t >= 0).then_some(t)
        })
        .collect()
}

fn attention(operands: &[&Tensor], window: Option<usize>, scale: f32) -> Result<Tensor, String> {
    let (q, k, v) = (operands[0], operands[1], operands[2]);
    let pos = position(operands[3])?;
    let (s, heads, d) = (q.shape[0], q.shape[1], q.shape[2]);
    let (kv_heads, cap) = (k.shape[0], k.shape[1]);
    let group = heads / kv_heads;
    let (qd, kd, vd) = (
        q.as_f32().ok_or("q must be f32")?,
        k.as_f32().ok_or("k must be f32")?,
        v.as_f32().ok_or("v must be f32")?,
    );
    let positions = slot_positions(cap, pos + s as i64 - 1);
    let mut out = vec![0.0f32; s * heads * d];
    let mut scores = vec![0.0f32; cap];
    for t in 0..s {
        let qpos = pos + t as i64;
        let visible = |p: Option<i64>| match p {
            Some(p) => p <= qpos && window.is_none_or(|w| qpos - p < w as i64),
            None => false,
        };
        for h in 0..heads {
            let kvh = h / group;
            let qrow = &qd[(t * heads + h) * d..(t * heads + h + 1) * d];
            let mut max = f32::NEG_INFINITY;
            for (j, p) in positions.iter().enumerate() {
                scores[j] = if visible(*p) {
                    let krow = &kd[(kvh * cap + j) * d..(kvh * cap + j + 1) * d];
                    dot(qrow, krow) * scale
                } else {
                    f32::NEG_INFINITY
                };
                max = max.max(scores[j]);
            }
            let mut sum = 0.0f64;
            for sc in scores.iter_mut() {
                *sc = if sc.is_finite() { (*sc - max).exp() } else { 0.0 };
                sum += *sc as f64;
            }
            let o = &mut out[(t * heads + h) * d..(t * heads + h + 1) * d];
            for (j, &p) in scores.iter().enumerate() {
                if p == 0.0 {
                    continue;
                }
                let p = (p as f64 / sum) as f32;
                let vrow = &vd[(kvh * cap + j) * d..(kvh * cap + j + 1) * d];
                for (oi, &vi) in o.iter_mut().zip(vrow) {
                    *oi += p * vi;
                }
            }
        }
    }
    Ok(Tensor::f32([s, heads, d], out))
}

fn moe_route(scores: &[f32], per_expert_scale: &[f32], e: usize, k: usize) -> Result<Vec<Tensor>, String> {
    let s = scores.len() / e;
    let (mut weights, mut experts) = (Vec::with_capacity(s * k), Vec::with_capacity(s * k));
    for row in scores.chunks_exact(e) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exps: Vec<f64> = row.iter().map(|&x| ((x - max) as f64).exp()).collect();
        let total: f64 = exps.iter().sum();
        let probs: Vec<f32> = exps.iter().map(|&x| (x / total) as f32).collect();
        // Top-k by probability; ties go to the lower expert index.
        let mut order: Vec<usize> = (0..e).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
        let chosen = &order[..k];
        let sum: f32 = chosen.iter().map(|&i| probs[i]).sum();
        for &i in chosen {
            weights.push(probs[i] / sum * per_expert_scale[i]);
            experts.push(i as i32);
        }
    }
    Ok(vec![Tensor::f32([s, k], weights), Tensor::i32([s, k], experts)])
}

fn moe_experts(operands: &[&Tensor]) -> Result<Tensor, String> {
    let err = |what: &str| format!("{what} has the wrong element type");
    let x = operands[0].as_f32().ok_or_else(|| err("x"))?;
    let w = operands[1].as_f32().ok_or_else(|| err("routing weights"))?;
    let idx = operands[2].as_i32().ok_or_else(|| err("experts"))?;
    let gu = operands[3].as_f32().ok_or_else(|| err("gate_up"))?;
    let down = operands[4].as_f32().ok_or_else(|| err("down"))?;
    let (s, h) = (operands[0].shape[0], operands[0].shape[1]);
    let (e, i2) = (operands[3].shape[0], operands[3].shape[1]);
    let (i, k) = (i2 / 2, operands[1].shape[1]);
    let mut out = vec![0.0f32; s * h];
    for t in 0..s {
        let xr = &x[t * h..(t + 1) * h];
        for slot in 0..k {
            let ex = idx[t * k + slot];
            if ex < 0 || ex as usize >= e {
                return Err(format!("expert index {ex} outside 0..{e}"));
            }
            let ex = ex as usize;
            let gate_up = matmul(xr, &gu[ex * i2 * h..(ex + 1) * i2 * h], i2, h);
            let act: Vec<f32> = (0..i).map(|j| gelu_tanh(gate_up[j]) * gate_up[i + j]).collect();
            let y = matmul(&act, &down[ex * h * i..(ex + 1) * h * i], h, i);
            let wt = w[t * k + slot];
            for (o, yv) in out[t * h..(t + 1) * h].iter_mut().zip(y) {
                *o += wt * yv;
            }
        }
    }
    Ok(Tensor::f32([s, h], out))
}
