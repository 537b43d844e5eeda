//! Validation of a plan read from disk, before anything is allocated or run.
//!
//! A plan directory is something users copy between machines, so `plan.json`
//! is untrusted input: executors bind raw pointers at the planned offsets and
//! generated kernels index buffers by the planned shapes. `check` accepts only
//! plans that `lower` could have produced for some model: every index in range,
//! every size recomputed from shape and dtype (the stored `bytes` must agree),
//! every activation inside the arena, each step's result types re-inferred
//! from its operands, steps reading only what earlier steps wrote, lifetimes
//! recomputed and live activations disjoint, and KV caches large enough for
//! the context (the runtime checks that the target is known). Errors name the program, step or buffer.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use gemma4c_ir::infer::infer;
use gemma4c_ir::limits::{check_fits, tensor_bytes};
use gemma4c_ir::{DType, Op, TensorType};

use crate::plan::{lifetimes, storage_root, BufferKind, Plan, Program, ARENA_ALIGN, PLAN_FORMAT};

/// Checks everything an executor relies on; see the module docs.
pub fn check(plan: &Plan) -> Result<(), String> {
    if plan.format != PLAN_FORMAT {
        return Err(format!(
            "plan format {} is not supported (this gemma4c reads format {PLAN_FORMAT}); recompile",
            plan.format
        ));
    }
    let m = &plan.model;
    if m.vocab_size == 0 {
        return Err("field `model.vocab_size` is 0".into());
    }
    if m.max_context == 0 {
        return Err("field `model.max_context` is 0".into());
    }
    let mut keys = HashSet::new();
    for (i, w) in plan.weights.iter().enumerate() {
        let what = format!("weights[{i}] `{}`", w.key);
        if !keys.insert(w.key.as_str()) {
            return Err(format!("{what} is bound twice"));
        }
        if !w.dtype.is_float() {
            return Err(format!("{what}: dtype {} is not a float type", w.dtype));
        }
        if let Some(q) = w.dtype.block() {
            // Only the CPU kernels dequantize block formats; a GPU or TT plan
            // naming one was not written by `compile`.
            if plan.target != "cpu" {
                return Err(format!(
                    "{what}: {q} weights run only on the cpu target, this plan is for `{}`",
                    plan.target
                ));
            }
            // Matrices, or [experts, rows, cols] expert weights.
            if !(2..=3).contains(&w.shape.len()) {
                return Err(format!(
                    "{what}: a {q} weight must be a matrix or [experts, rows, cols], got shape {:?}",
                    w.shape
                ));
            }
        }
        // Block formats: rows * (cols / block) * block bytes, whole blocks only.
        w.dtype.bytes_for(&w.shape).ok_or_else(|| {
            format!(
                "{what}: {} {:?} overflows or is not whole {} blocks",
                w.dtype, w.shape, w.dtype
            )
        })?;
    }
    let mut state_bytes = 0usize;
    for (i, s) in plan.state.iter().enumerate() {
        let what = format!("state[{i}] `{}`", s.name);
        if s.dtype != DType::F32 || s.shape.len() != 3 {
            return Err(format!(
                "{what}: a KV cache must be f32 [kv_heads, capacity, head_dim], got {} {:?}",
                s.dtype, s.shape
            ));
        }
        let bytes = tensor_bytes(&s.shape, 4).ok_or_else(|| format!("{what}: shape {:?} overflows", s.shape))?;
        if s.bytes != bytes {
            return Err(format!(
                "{what}: `bytes` is {} but f32 {:?} takes {bytes}",
                s.bytes, s.shape
            ));
        }
        state_bytes = state_bytes
            .checked_add(bytes)
            .ok_or_else(|| format!("{what}: the KV caches' total size overflows"))?;
    }
    check_fits("the plan's KV caches", state_bytes)?;

    if plan.programs.is_empty() {
        return Err("the plan has no programs".into());
    }
    let mut names = HashSet::new();
    let mut decode = 0;
    for p in &plan.programs {
        if !names.insert(p.name.as_str()) {
            return Err(format!("program `{}` appears twice", p.name));
        }
        match p.seq_len {
            0 => return Err(format!("program `{}`: seq_len is 0", p.name)),
            1 => decode += 1,
            n if n != m.prefill_chunk => {
                return Err(format!(
                    "program `{}`: seq_len {n} differs from model.prefill_chunk {}",
                    p.name, m.prefill_chunk
                ))
            }
            _ => {}
        }
        if p.seq_len > m.max_context {
            return Err(format!(
                "program `{}`: seq_len {} exceeds model.max_context {}",
                p.name, p.seq_len, m.max_context
            ));
        }
    }
    if decode != 1 {
        return Err(format!(
            "a plan has one decode program (seq_len 1), this one has {decode}"
        ));
    }
    if plan.programs.len() > 2 {
        return Err(format!(
            "a plan has a decode and at most one prefill program, this one has {}",
            plan.programs.len()
        ));
    }
    for p in &plan.programs {
        check_program(plan, p).map_err(|e| format!("program `{}`: {e}", p.name))?;
    }
    let arena = plan.programs.iter().map(|p| p.arena_bytes).max().unwrap_or(0);
    check_fits(
        "the plan's arena and KV caches",
        arena.checked_add(state_bytes).ok_or("the arena size overflows")?,
    )?;
    Ok(())
}

fn check_program(plan: &Plan, p: &Program) -> Result<(), String> {
    check_fits("the arena", p.arena_bytes)?;
    for (i, b) in p.buffers.iter().enumerate() {
        let what = format!("buffer {i}");
        if b.id != i {
            return Err(format!("{what} has id {}", b.id));
        }
        let bytes = b
            .dtype
            .bytes_for(&b.shape)
            .ok_or_else(|| format!("{what}: {} {:?} overflows or is not whole blocks", b.dtype, b.shape))?;
        if b.bytes != bytes {
            return Err(format!(
                "{what}: `bytes` is {} but {} {:?} takes {bytes}",
                b.bytes, b.dtype, b.shape
            ));
        }
        let ty = TensorType::new(b.dtype, b.shape.clone());
        match &b.kind {
            BufferKind::Weight { index } => {
                let w = plan.weights.get(*index).ok_or_else(|| {
                    format!(
                        "{what}: weight index {index} is out of range ({} weights)",
                        plan.weights.len()
                    )
                })?;
                if w.dtype != b.dtype || w.shape != b.shape {
                    return Err(format!(
                        "{what}: {ty} differs from weight `{}` ({} {:?})",
                        w.key, w.dtype, w.shape
                    ));
                }
            }
            BufferKind::State { index } => {
                let s = plan.state.get(*index).ok_or_else(|| {
                    format!(
                        "{what}: state index {index} is out of range ({} state buffers)",
                        plan.state.len()
                    )
                })?;
                if s.dtype != b.dtype || s.shape != b.shape {
                    return Err(format!(
                        "{what}: {ty} differs from state `{}` ({} {:?})",
                        s.name, s.dtype, s.shape
                    ));
                }
            }
            BufferKind::Input { name } => {
                let want = match name.as_str() {
                    "token_ids" => TensorType::i32([p.seq_len]),
                    "position" => TensorType::i32([1]),
                    other => {
                        return Err(format!(
                            "{what}: unknown input `{other}` (expected token_ids or position)"
                        ))
                    }
                };
                if ty != want {
                    return Err(format!("{what}: input `{name}` must be {want}, got {ty}"));
                }
            }
            BufferKind::Activation { offset, .. } => {
                if b.dtype.block().is_some() || b.dtype.size_bytes() != 4 {
                    return Err(format!("{what}: an activation must be f32 or i32, got {}", b.dtype));
                }
                if offset % ARENA_ALIGN != 0 {
                    return Err(format!("{what}: offset {offset} is not a multiple of {ARENA_ALIGN}"));
                }
                let end = offset
                    .checked_add(bytes)
                    .filter(|&e| e <= p.arena_bytes)
                    .ok_or_else(|| {
                        format!(
                            "{what}: [{offset}, {offset} + {bytes}) lies outside the arena of {} bytes",
                            p.arena_bytes
                        )
                    })?;
                let _ = end;
            }
            BufferKind::View { of } => {
                // Only earlier buffers, so views form no cycles.
                if *of >= i {
                    return Err(format!("{what}: a view must be of an earlier buffer, got {of}"));
                }
                let o = &p.buffers[*of];
                if o.dtype != b.dtype || o.bytes != b.bytes {
                    return Err(format!(
                        "{what}: a view {ty} of buffer {of} ({} {:?}) must have its dtype and size",
                        o.dtype, o.shape
                    ));
                }
            }
        }
    }
    let logits = check_outputs(plan, p)?;
    check_steps(plan, p)?;
    if !p.steps.iter().any(|s| s.outputs.contains(&logits)) {
        return Err(format!("no step writes the logits (buffer {logits})"));
    }
    check_lifetimes(p)
}

/// Named outputs are unique activations; `logits` is f32 `[.., vocab]`.
fn check_outputs(plan: &Plan, p: &Program) -> Result<usize, String> {
    let mut seen = BTreeSet::new();
    for b in &p.buffers {
        if let BufferKind::Activation { output: Some(n), .. } = &b.kind {
            if !seen.insert(n.as_str()) {
                return Err(format!("output `{n}` is named twice"));
            }
        }
    }
    let logits = p.output("logits").ok_or("no `logits` output")?;
    let b = &p.buffers[logits];
    if b.dtype != DType::F32 || b.shape.last() != Some(&plan.model.vocab_size) {
        return Err(format!(
            "the logits (buffer {logits}) are {} {:?}, expected f32 [.., {}] (model.vocab_size)",
            b.dtype, b.shape, plan.model.vocab_size
        ));
    }
    Ok(logits)
}

/// Every step: in-range buffers, operands written before, results as inferred.
fn check_steps(plan: &Plan, p: &Program) -> Result<(), String> {
    let n = p.buffers.len();
    // Step that wrote each activation (by storage buffer).
    let mut written: Vec<Option<usize>> = vec![None; n];
    for (si, s) in p.steps.iter().enumerate() {
        let e = |m: String| format!("step {si} `{}` ({}): {m}", s.name, s.op);
        if s.op.is_leaf() || s.op.is_view() {
            return Err(e("is not a kernel".into()));
        }
        if let Some(&bad) = s.inputs.iter().chain(&s.outputs).find(|&&b| b >= n) {
            return Err(e(format!("buffer {bad} is out of range ({n} buffers)")));
        }
        for &b in &s.inputs {
            let r = storage_root(&p.buffers, b);
            if matches!(p.buffers[r].kind, BufferKind::Activation { .. }) && written[r].is_none() {
                return Err(e(format!("reads buffer {b} before any step writes it")));
            }
        }
        let types: Vec<TensorType> = s
            .inputs
            .iter()
            .map(|&b| TensorType::new(p.buffers[b].dtype, p.buffers[b].shape.clone()))
            .collect();
        let refs: Vec<&TensorType> = types.iter().collect();
        let results = infer(&s.op, &refs).map_err(&e)?;
        if s.op.updates_cache() {
            let cache = s.inputs[0];
            if s.outputs != [cache] || !matches!(p.buffers[cache].kind, BufferKind::State { .. }) {
                return Err(e(
                    "a cache update writes its first operand, a state buffer, in place".into()
                ));
            }
            continue;
        }
        if results.len() != s.outputs.len() {
            return Err(e(format!(
                "has {} results, the plan lists {}",
                results.len(),
                s.outputs.len()
            )));
        }
        for (&o, want) in s.outputs.iter().zip(&results) {
            let b = &p.buffers[o];
            if !matches!(b.kind, BufferKind::Activation { .. }) {
                return Err(e(format!("writes buffer {o}, which is not an activation")));
            }
            if b.dtype != want.dtype || b.shape != want.shape {
                return Err(e(format!(
                    "computes {want} but its output buffer {o} is {} {:?}",
                    b.dtype, b.shape
                )));
            }
            if let Some(prev) = written[o].replace(si) {
                return Err(e(format!("buffer {o} was already written by step {prev}")));
            }
        }
        if let Op::Attention { window, .. } = &s.op {
            check_cache_capacity(plan, p, &types[1], *window).map_err(&e)?;
        }
    }
    Ok(())
}

/// A ring cache must hold every key a query of this program can see, and the
/// keys the call itself writes, without overwriting any of them.
fn check_cache_capacity(plan: &Plan, p: &Program, cache: &TensorType, window: Option<usize>) -> Result<(), String> {
    let ctx = plan.model.max_context;
    let need = match window {
        None => ctx,
        Some(w) => ctx.min(w.saturating_sub(1).saturating_add(p.seq_len)),
    };
    let capacity = cache.shape[1];
    if capacity < need {
        return Err(format!(
            "its cache {cache} holds {capacity} positions, but a context of {ctx} (model.max_context) needs {need}"
        ));
    }
    Ok(())
}

/// Recomputes lifetimes from the step order (as the allocator does), compares
/// them with the recorded ones, and checks that activations alive at the same
/// time do not share bytes.
fn check_lifetimes(p: &Program) -> Result<(), String> {
    let life = lifetimes(&p.buffers, &p.steps);
    for (i, b) in p.buffers.iter().enumerate() {
        if let BufferKind::Activation { .. } = b.kind {
            let want = life.get(&i).copied();
            if b.lifetime != want {
                return Err(format!(
                    "buffer {i}: recorded lifetime {:?} differs from the steps' {:?}",
                    b.lifetime, want
                ));
            }
        }
    }
    // Sweep the steps in order: a buffer born at a step must not overlap any
    // buffer still alive then. Live blocks are disjoint, so comparing with the
    // neighbours by offset is enough.
    let mut born: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (&r, &(first, _)) in &life {
        if matches!(p.buffers[r].kind, BufferKind::Activation { .. }) {
            born.entry(first).or_default().push(r);
        }
    }
    // offset -> (end, last step, buffer)
    let mut live: BTreeMap<usize, (usize, usize, usize)> = BTreeMap::new();
    for (step, ids) in born {
        live.retain(|_, &mut (_, last, _)| last >= step);
        for r in ids {
            let BufferKind::Activation { offset, .. } = p.buffers[r].kind else {
                continue;
            };
            let end = offset + p.buffers[r].bytes.max(1);
            let before = live.range(..=offset).next_back().map(|(&o, &v)| (o, v));
            let after = live.range(offset..).next().map(|(&o, &v)| (o, v));
            for (o, (e, _, other)) in before.into_iter().chain(after) {
                if o < end && offset < e {
                    return Err(format!(
                        "buffers {other} and {r} are alive at the same time (step {step}) and overlap in the arena ([{o}, {e}) and [{offset}, {end}))",
                    ));
                }
            }
            live.insert(offset, (end, life[&r].1, r));
        }
    }
    Ok(())
}
