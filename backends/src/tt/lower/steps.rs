//! One plan step of the decode program → its device launches (dense ops; MoE in `moe.rs`). The
//! dispatch is an exhaustive match over `Op`: an op added to the IR fails to build here until it
//! has a Tenstorrent lowering.

use gemma4c_ir::{Op, RopeSpec};
use gemma4c_passes::plan::{BufferKind, Step};

use super::ctx::{transposed, Ctx};
use super::{moe, slice, Arg, Call, Item, MaskUse, Source};
use crate::tt::kernels::{self, gelu_expr, py_f32, softcap_expr, KvMode, Mode, NormKind};
use crate::tt::layout::DevLayout;
use crate::tt::TtError;

/// Which KV-cache write: the plain row write, or fused with the V norm / the K norm + RoPE.
#[derive(Clone, Copy)]
enum KvKind<'a> {
    Plain,
    Norm { eps: f32 },
    Rope { eps: f32, rope: &'a RopeSpec },
}

pub(super) fn lower_step(c: &mut Ctx, s: &Step, comment: String, items: &mut Vec<Item>) -> Result<(), TtError> {
    match &s.op {
        Op::Input { .. } | Op::Weight { .. } | Op::Reshape { .. } => Ok(()),
        Op::ReplaceIds { ids, with } => replace_ids(c, s, comment, items, ids, *with),
        Op::Embedding => embedding(c, s, comment, items),
        Op::Scale { factor } => {
            let base = format!("scale_{}", py_f32(*factor).replace(['.', '-'], "_"));
            let expr = format!("a_v * ttl.block.fill({}, shp)", py_f32(*factor));
            eltwise(c, s, comment, items, base, expr)
        }
        Op::GeluTanh => eltwise(c, s, comment, items, "gelu_tanh".into(), gelu_expr("a_v")),
        Op::Softcap { cap } => {
            let base = format!("softcap_{}", py_f32(*cap).replace('.', "_"));
            eltwise(c, s, comment, items, base, softcap_expr("a_v", *cap))
        }
        Op::Add => eltwise(c, s, comment, items, "add".into(), "a_v + b_v".into()),
        Op::Mul => eltwise(c, s, comment, items, "mul".into(), "a_v * b_v".into()),
        Op::GeluMul => {
            let expr = format!("{} * b_v", gelu_expr("a_v"));
            eltwise(c, s, comment, items, "gelu_mul".into(), expr)
        }
        Op::MatMul => matmul(c, s, comment, items),
        Op::RmsNorm { eps } => rms_norm(c, s, comment, items, eps),
        Op::AddRmsNorm { eps } => norm_family(
            c,
            s,
            comment,
            items,
            eps,
            NormKind::AddRmsNorm,
            "residual add + rms_norm",
        ),
        Op::NormAddNorm { eps } => norm_family(
            c,
            s,
            comment,
            items,
            eps,
            NormKind::NormAddNorm,
            "post-norm + residual add + pre-norm",
        ),
        Op::NormAdd { eps } => norm_family(c, s, comment, items, eps, NormKind::NormAdd, "post-norm + residual add"),
        Op::NormRope { eps, rope } => norm_rope(c, s, comment, items, Some(*eps), rope),
        Op::Rope { rope } => norm_rope(c, s, comment, items, None, rope),
        Op::KvWrite => kv_write(c, s, comment, items, KvKind::Plain),
        Op::NormKvWrite { eps } => kv_write(c, s, comment, items, KvKind::Norm { eps: *eps }),
        Op::RopeKvWrite { eps, rope } => kv_write(c, s, comment, items, KvKind::Rope { eps: *eps, rope }),
        Op::Attention { window, scale } => attention(c, s, comment, items, window, scale),
        Op::LogitsHead { eps, cap } => logits_head(c, s, comment, items, eps, cap),
        Op::Slice { axis, start, end } => slice::lower(c, s, comment, items, *axis, *start, *end),
        Op::MoeRouter { eps, scalar, top_k } => moe::router(c, s, comment, items, eps, scalar, top_k),
        Op::MoeRoute { top_k } => moe::route(c, s, comment, items, top_k),
        Op::MoeExperts => moe::experts(c, s, comment, items),
    }
}

fn replace_ids(
    c: &mut Ctx,
    s: &Step,
    comment: String,
    items: &mut Vec<Item>,
    ids: &[i32],
    with: i32,
) -> Result<(), TtError> {
    // The decode step's token is a host integer: map it before the row fetch.
    if !matches!(c.p.buffers[s.inputs[0]].kind, BufferKind::Input { .. }) {
        return Err(c.err(s, "only the step's token ids can be remapped"));
    }
    let code = if c.prefill {
        format!("tokens = [{with} if t in {} else t for t in tokens]", py_tuple(ids))
    } else {
        format!("token = {with} if token in {} else token", py_tuple(ids))
    };
    items.push(Item {
        comment,
        call: Call::Host { code },
        reads: vec![],
        writes: vec![],
    });
    Ok(())
}

fn embedding(c: &mut Ctx, s: &Step, comment: String, items: &mut Vec<Item>) -> Result<(), TtError> {
    let (key, wshape) = c
        .weight(s.inputs[0])
        .ok_or_else(|| c.err(s, "the table is not a checkpoint tensor"))?;
    let (key, vocab) = (key.to_string(), wshape[0]);
    let out = s.outputs[0];
    let l = DevLayout { rows: 1, ..c.lay(out)? }.canonical();
    let tag = l.tag();
    let name = if tag.is_empty() {
        key.clone()
    } else {
        format!("{key}@{tag}")
    };
    let table = c.prep(
        name,
        vocab,
        l.col_tiles() * 32,
        true,
        Source::Gather { key, vocab, layout: l },
    )?;
    items.push(Item {
        comment,
        call: Call::Gather { table, out },
        reads: vec![],
        writes: vec![out],
    });
    Ok(())
}

fn eltwise(
    c: &mut Ctx,
    s: &Step,
    comment: String,
    items: &mut Vec<Item>,
    base: String,
    expr: String,
) -> Result<(), TtError> {
    let t = c.t;
    let kcall = |kernel: usize, args: Vec<Arg>, reads: Vec<usize>, writes: Vec<usize>| {
        Item::kernel(comment.clone(), kernel, args, reads, writes)
    };
    let out = s.outputs[0];
    let l = c.lay(out)?;
    let a = s.inputs[0];
    if c.weight(a).is_some() {
        return Err(c.err(s, "a weight as the first operand is not supported"));
    }
    let mut modes = vec![Mode::Full];
    let mut args = vec![Arg::Buf(a)];
    let mut reads = vec![a];
    if let Some(&b) = s.inputs.get(1) {
        let numel = c.shape(b).iter().product::<usize>();
        if let Some((key, _)) = c.weight(b) {
            let key = key.to_string();
            if numel == 1 {
                let n = c.prep(key.clone(), 1, 32, false, Source::Scalar { key })?;
                modes.push(Mode::Scalar);
                args.push(Arg::W(n));
            } else if l.cols() % numel == 0 && numel % l.width.min(numel) == 0 {
                let n = c.row(&key, l)?;
                modes.push(Mode::Row);
                args.push(Arg::W(n));
            } else {
                return Err(c.err(s, format!("cannot broadcast weight {key} ({numel} values) over {l:?}")));
            }
        } else {
            if numel != l.rows * l.cols() || c.lay(b)? != l {
                return Err(c.err(s, "operands of different shapes or layouts"));
            }
            modes.push(Mode::Full);
            args.push(Arg::Buf(b));
            reads.push(b);
        }
    }
    let suffix = match modes.get(1) {
        Some(Mode::Row) => "_row",
        Some(Mode::Scalar) => "_scalar",
        _ => "",
    };
    let doc = format!("{}: elementwise", s.op.mnemonic());
    let k = kernels::eltwise(
        t,
        format!("{base}{suffix}_{}", l.col_tiles() * 32),
        &doc,
        expr,
        &modes,
        l.row_tiles(),
        l.col_tiles(),
    )?;
    let k = c.kernel(k);
    args.push(Arg::Buf(out));
    items.push(kcall(k, args, reads, vec![out]));
    Ok(())
}

fn matmul(c: &mut Ctx, s: &Step, comment: String, items: &mut Vec<Item>) -> Result<(), TtError> {
    let t = c.t;
    let kcall = |kernel: usize, args: Vec<Arg>, reads: Vec<usize>, writes: Vec<usize>| {
        Item::kernel(comment.clone(), kernel, args, reads, writes)
    };
    let (x, out) = (s.inputs[0], s.outputs[0]);
    let (lx, lo) = (c.lay(x)?, c.lay(out)?);
    let w = transposed(c, s, s.inputs[1], lx, lo)?;
    let k = kernels::matmul(
        t,
        "decode matmul: y = x @ W",
        lx.row_tiles(),
        lx.col_tiles(),
        lo.col_tiles(),
        None,
    )?;
    let k = c.weight_kernel(k, &w)?;
    items.push(kcall(
        k,
        vec![Arg::Buf(x), Arg::W(w), Arg::Buf(out)],
        vec![x],
        vec![out],
    ));
    Ok(())
}

fn rms_norm(c: &mut Ctx, s: &Step, comment: String, items: &mut Vec<Item>, eps: &f32) -> Result<(), TtError> {
    let t = c.t;
    let kcall = |kernel: usize, args: Vec<Arg>, reads: Vec<usize>, writes: Vec<usize>| {
        Item::kernel(comment.clone(), kernel, args, reads, writes)
    };
    let (x, out) = (s.inputs[0], s.outputs[0]);
    let l = c.lay(x)?;
    let n = *c.shape(x).last().unwrap_or(&1);
    let (groups, st, wl) = c.norm_segments(s, l, n)?;
    let mut args = vec![Arg::Buf(x)];
    if let Some(&w) = s.inputs.get(1) {
        let (key, _) = c
            .weight(w)
            .ok_or_else(|| c.err(s, "the norm weight is not a checkpoint tensor"))?;
        let key = key.to_string();
        args.push(Arg::W(c.row(&key, wl)?));
    }
    let k = kernels::norm(
        t,
        NormKind::RmsNorm,
        "rms_norm",
        l.row_tiles(),
        groups,
        st,
        n,
        *eps,
        s.inputs.len() == 2,
    )?;
    let k = c.kernel(k);
    args.push(Arg::Buf(out));
    items.push(kcall(k, args, vec![x], vec![out]));
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn norm_family(
    c: &mut Ctx,
    s: &Step,
    comment: String,
    items: &mut Vec<Item>,
    eps: &f32,
    family: NormKind,
    doc: &str,
) -> Result<(), TtError> {
    let t = c.t;
    let kcall = |kernel: usize, args: Vec<Arg>, reads: Vec<usize>, writes: Vec<usize>| {
        Item::kernel(comment.clone(), kernel, args, reads, writes)
    };
    let acts = 2;
    let l = c.lay(s.inputs[0])?;
    let n = *c.shape(s.inputs[0]).last().unwrap_or(&1);
    let (groups, st, wl) = c.norm_segments(s, l, n)?;
    let mut args: Vec<Arg> = s.inputs[..acts].iter().map(|&b| Arg::Buf(b)).collect();
    for &w in &s.inputs[acts..] {
        let (key, _) = c
            .weight(w)
            .ok_or_else(|| c.err(s, "a norm weight is not a checkpoint tensor"))?;
        let key = key.to_string();
        args.push(Arg::W(c.row(&key, wl)?));
    }
    let k = kernels::norm(t, family, doc, l.row_tiles(), groups, st, n, *eps, true)?;
    let k = c.kernel(k);
    args.extend(s.outputs.iter().map(|&o| Arg::Buf(o)));
    items.push(kcall(k, args, s.inputs[..acts].to_vec(), s.outputs.clone()));
    Ok(())
}

fn norm_rope(
    c: &mut Ctx,
    s: &Step,
    comment: String,
    items: &mut Vec<Item>,
    eps: Option<f32>,
    rope: &RopeSpec,
) -> Result<(), TtError> {
    let t = c.t;
    let kcall = |kernel: usize, args: Vec<Arg>, reads: Vec<usize>, writes: Vec<usize>| {
        Item::kernel(comment.clone(), kernel, args, reads, writes)
    };
    let (x, out) = (s.inputs[0], s.outputs[0]);
    let shape = c.shape(x).to_vec();
    let (heads, d) = (shape[1], shape[2]);
    let dt = head_tiles(c, s, x, d)?;
    let mut args = vec![Arg::Buf(x)];
    if eps.is_some() {
        let (key, _) = c
            .weight(s.inputs[1])
            .ok_or_else(|| c.err(s, "the norm weight is not a checkpoint tensor"))?;
        let key = key.to_string();
        args.push(Arg::W(c.row(&key, DevLayout::flat(1, d))?));
    }
    let (cos, sin) = c.rope(rope)?;
    let rot = c.rotate_half(d)?;
    args.extend([
        Arg::W(cos),
        Arg::W(sin),
        Arg::W(rot),
        Arg::W("kv.select".into()),
        Arg::Pos,
        Arg::Buf(out),
    ]);
    let doc = if eps.is_some() { "q/k rms_norm + RoPE" } else { "RoPE" };
    let k = kernels::norm_rope(t, doc, heads, dt, d, eps)?;
    let k = if c.prefill { k.over_chunk(t)? } else { k };
    let k = c.kernel(k);
    items.push(kcall(k, args, vec![x], vec![out]));
    Ok(())
}

fn kv_write(c: &mut Ctx, s: &Step, comment: String, items: &mut Vec<Item>, kind: KvKind) -> Result<(), TtError> {
    let t = c.t;
    let cache = s.inputs[0];
    let si = c
        .state(cache)
        .ok_or_else(|| c.err(s, "the cache is not a state buffer"))?;
    let (kv, capacity, d) = c.ring(si);
    let new = s.inputs[1];
    let dt = head_tiles(c, s, new, d)?;
    let ci = c.cap(capacity);
    let mut args = vec![Arg::State(si), Arg::Buf(new)];
    let (mode, eps, doc) = match kind {
        KvKind::Rope { eps, rope } => {
            let (key, _) = c
                .weight(s.inputs[2])
                .ok_or_else(|| c.err(s, "k_norm weight is not a checkpoint tensor"))?;
            let key = key.to_string();
            args.push(Arg::W(c.row(&key, DevLayout::flat(1, d))?));
            let (cos, sin) = c.rope(rope)?;
            let rot = c.rotate_half(d)?;
            args.extend([Arg::W(cos), Arg::W(sin), Arg::W(rot)]);
            (
                KvMode::Rope,
                eps,
                "K path into the cache: rms_norm * w, RoPE, row write",
            )
        }
        KvKind::Norm { eps } => (
            KvMode::Norm,
            eps,
            "V path into the cache: rms_norm (no weight), row write",
        ),
        KvKind::Plain => (KvMode::Plain, 0.0, "KV-cache row write"),
    };
    args.extend([Arg::W("kv.select".into()), Arg::W("kv.keep".into()), Arg::Pos]);
    let k = kernels::kv_write(t, doc, mode, kv, capacity, dt, d, eps, 1 + ci)?;
    let k = if c.prefill { k.over_chunk(t)? } else { k };
    let k = c.kernel(k);
    items.push(Item::kernel(comment, k, args, vec![new], vec![]));
    Ok(())
}

fn attention(
    c: &mut Ctx,
    s: &Step,
    comment: String,
    items: &mut Vec<Item>,
    window: &Option<usize>,
    scale: &f32,
) -> Result<(), TtError> {
    let t = c.t;
    let kcall = |kernel: usize, args: Vec<Arg>, reads: Vec<usize>, writes: Vec<usize>| {
        Item::kernel(comment.clone(), kernel, args, reads, writes)
    };
    let (q, out) = (s.inputs[0], s.outputs[0]);
    let AttnGeometry {
        ks,
        vs,
        heads,
        kv,
        capacity,
        dt,
        mask: m,
        ..
    } = attention_geometry(c, s, s, q, *window, false)?;
    let k = if c.prefill {
        kernels::attention_chunk(
            t,
            "prefill attention over the cache (32 queries per head)",
            heads,
            kv,
            capacity,
            dt,
            *scale,
            *window,
            None,
        )?
    } else {
        kernels::attention(
            t,
            "decode attention (GQA, online softmax)",
            heads,
            kv,
            capacity,
            dt,
            *scale,
            *window,
        )?
    };
    let k = c.kernel(k);
    items.push(kcall(
        k,
        vec![
            Arg::Buf(q),
            Arg::State(ks),
            Arg::State(vs),
            Arg::Mask(m),
            Arg::W("kv.select".into()),
            Arg::Buf(out),
        ],
        vec![q],
        vec![out],
    ));
    Ok(())
}

fn logits_head(
    c: &mut Ctx,
    s: &Step,
    comment: String,
    items: &mut Vec<Item>,
    eps: &f32,
    cap: &Option<f32>,
) -> Result<(), TtError> {
    let t = c.t;
    let kcall = |kernel: usize, args: Vec<Arg>, reads: Vec<usize>, writes: Vec<usize>| {
        Item::kernel(comment.clone(), kernel, args, reads, writes)
    };
    let (x, out) = (s.inputs[0], s.outputs[0]);
    let (lx, lo) = (c.lay(x)?, c.lay(out)?);
    let n = *c.shape(x).last().unwrap_or(&1);
    if lx.groups != 1 || lx.width != n {
        return Err(c.err(s, "the final norm input must be one unsegmented row"));
    }
    let (gkey, _) = c
        .weight(s.inputs[1])
        .ok_or_else(|| c.err(s, "the norm weight is not a checkpoint tensor"))?;
    let gkey = gkey.to_string();
    let g = c.row(&gkey, DevLayout::flat(1, n))?;
    let w = transposed(c, s, s.inputs[2], lx, lo)?;
    let epilogue = cap.map(|c| ("softcap", softcap_expr("acc", c)));
    let k = kernels::logits_head(
        t,
        "final rms_norm + LM head + soft-cap",
        lx.row_tiles(),
        lx.col_tiles(),
        lo.col_tiles(),
        n,
        *eps,
        epilogue,
    )?;
    let k = c.weight_kernel(k, &w)?;
    items.push(kcall(
        k,
        vec![Arg::Buf(x), Arg::W(g), Arg::W(w), Arg::Buf(out)],
        vec![x],
        vec![out],
    ));
    Ok(())
}

/// What a decode attention launch needs to know of its step: the K/V cache states, heads,
/// KV heads, cache capacity, head_dim (and its tiles) and the mask for its window.
pub(super) struct AttnGeometry {
    pub(super) ks: usize,
    pub(super) vs: usize,
    pub(super) heads: usize,
    pub(super) kv: usize,
    pub(super) capacity: usize,
    pub(super) d: usize,
    pub(super) dt: usize,
    pub(super) mask: usize,
}

/// The geometry of the attention step `s` whose queries are buffer `q` (laid out by step
/// `q_step`, which a tile-layout error names).
pub(super) fn attention_geometry(
    c: &mut Ctx,
    s: &Step,
    q_step: &Step,
    q: usize,
    window: Option<usize>,
    fresh: bool,
) -> Result<AttnGeometry, TtError> {
    let (ks, vs) = (
        c.state(s.inputs[1]).ok_or_else(|| c.err(s, "K is not a cache"))?,
        c.state(s.inputs[2]).ok_or_else(|| c.err(s, "V is not a cache"))?,
    );
    let shape = c.shape(q).to_vec();
    let (heads, d) = (shape[1], shape[2]);
    let (kv, capacity, _) = c.ring(ks);
    let dt = head_tiles(c, q_step, q, d)?;
    if heads % kv != 0 {
        return Err(c.err(
            s,
            format!("unsupported attention geometry: {heads} heads, {kv} kv heads, head_dim {d}"),
        ));
    }
    // A launch that also writes this step's K/V row reads the mask that hides its slot, plus one
    // tile for the fresh row (see `MaskUse::fresh`).
    let mask = c.mask(MaskUse {
        rows: if c.prefill { 32 } else { 1 },
        capacity,
        window,
        width: (capacity.div_ceil(32) + usize::from(fresh)) * 32,
        fresh,
    });
    Ok(AttnGeometry {
        ks,
        vs,
        heads,
        kv,
        capacity,
        d,
        dt,
        mask,
    })
}

/// Tiles per head of a `[tokens, heads, d]` activation. A head_dim that is not a multiple of 32
/// (16, 48, ...) is exact when each head is its own zero-padded segment: norms divide by the real
/// `d`, RoPE tables and rotate_half are zero in the padding columns, and zero K/V/Q padding adds
/// nothing to dot products or attention outputs.
pub(super) fn head_tiles(c: &Ctx, s: &Step, x: usize, d: usize) -> Result<usize, TtError> {
    let l = c.lay(x)?;
    let per_head = if d.is_multiple_of(32) {
        l.width.is_multiple_of(32) || l.width == d
    } else {
        l.width == d
    };
    if !per_head {
        return Err(c.err(s, format!("head_dim {d} does not match the tile layout {l:?}")));
    }
    Ok(d.div_ceil(32))
}

fn py_tuple(ids: &[i32]) -> String {
    let mut s = ids.iter().map(|i| format!("{i}, ")).collect::<String>();
    s.pop();
    format!("({s})")
}
