//! The KV cache: the row write at a run-time slot and single-query attention over it.

use serde::Serialize;

use super::{
    bc, divisor_le, matmul_flops, py_f32, Cost, Dfb, Family, GridCtx, Kernel, KernelCtx, KvMode, POS_DFB_TILES,
};
use crate::tt::target::{TtTarget, WeightFormat, TILE_BYTES};
use crate::tt::TtError;

/// What kv_write.py.tera reads: one block per KV head, rows of `dt` tiles written at the slot
/// in tile `pos_tile` of the position tensor; `inv_n`, `eps` (Python literals) for the norm modes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KvWriteCtx {
    pub doc: String,
    pub mode: KvMode,
    pub kv_heads: usize,
    pub capacity: usize,
    pub cap_t: usize,
    pub dt: usize,
    pub bc: usize,
    pub inv_n: String,
    pub eps: String,
    pub pos_tile: usize,
    /// The V path written by the same launch (`kv_write_pair`).
    pub pair: bool,
    /// A prefill chunk: the whole tile row is written (`chunk.rs`).
    pub chunk: bool,
    #[serde(flatten)]
    pub grid: GridCtx,
}

/// What attention.py.tera reads: one block per KV head and its `group` query heads, the cache
/// streamed in `(sb, dt)` chunks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttentionCtx {
    pub doc: String,
    pub heads: usize,
    pub kv_heads: usize,
    pub group: usize,
    pub cap_t: usize,
    pub dt: usize,
    pub sb: usize,
    pub n_chunks: usize,
    pub bc_q: usize,
    pub bc_kv: usize,
    pub scale: String,
    /// The q norm + RoPE folded in (`attention_norm_rope`).
    pub rope: Option<QRope>,
    /// One query head per block, 32 positions (`chunk.rs`, attention_chunk.py.tera).
    pub chunk: bool,
    /// The layer's K and V cache writes folded in (`attention_kv_write`).
    pub fresh: Option<FreshKv>,
    #[serde(flatten)]
    pub grid: GridCtx,
}

/// The K and V row writes folded into attention: the K norm (`inv_n`, `eps` as Python literals,
/// shared by the weightless V norm, as in `kv_write_pair`) and the position tensor's tile that
/// holds the slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FreshKv {
    pub inv_n: String,
    pub eps: String,
    pub pos_tile: usize,
}

/// The K/V write of `attention_kv_write`: the norms' real lanes `n`, their `eps`, and the
/// position tensor's tile holding the slot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KvFold {
    pub n: usize,
    pub eps: f32,
    pub pos_tile: usize,
}

/// The q norm + RoPE folded into attention (`attention_norm_rope`): the norm's `inv_n` (1 / real
/// lanes) and `eps` as Python literals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QRope {
    pub inv_n: String,
    pub eps: String,
}

/// KV-cache row write (`KvMode`: plain, after the V norm, after the K norm + RoPE). The slot is read at run time from tile `pos_tile` of the position tensor.
#[allow(clippy::too_many_arguments)]
pub fn kv_write(
    t: &TtTarget,
    doc: &str,
    mode: KvMode,
    kv_heads: usize,
    capacity: usize,
    dt: usize,
    n: usize,
    eps: f32,
    pos_tile: usize,
) -> Result<Kernel, TtError> {
    let (grid, per_node) = t.grid_for(kv_heads);
    let b = bc(per_node);
    let cap_t = capacity.div_ceil(32);
    let fam = mode.prefix();
    let ctx = KvWriteCtx {
        doc: doc.to_string(),
        mode,
        kv_heads,
        capacity,
        cap_t,
        dt,
        bc: b,
        inv_n: py_f32(1.0 / n as f32),
        eps: py_f32(eps),
        pos_tile,
        pair: false,
        chunk: false,
        grid: GridCtx::new(grid, per_node, kv_heads),
    };
    let mut dfbs = vec![Dfb::new("cache", dt, b), Dfb::new("new", dt, b)];
    if mode == KvMode::Rope {
        dfbs.extend([
            Dfb::new("w", dt, b),
            Dfb::new("cos", dt, b),
            Dfb::new("sin", dt, b),
            Dfb::new("rot", dt * dt, b),
            Dfb::new("rope_sel", 1, b),
        ]);
    }
    dfbs.extend([
        Dfb::new("sel", 1, b),
        Dfb::new("keep", 1, b),
        Dfb::new("out", dt, b),
        Dfb::new("reader_pos", POS_DFB_TILES, 1),
        Dfb::new("writer_pos", POS_DFB_TILES, 1),
    ]);
    Kernel {
        name: String::new(),
        family: Family::KvWrite,
        base: format!("{fam}_{kv_heads}x{capacity}x{n}"),
        ctx: KernelCtx::KvWrite(ctx),
        weights: WeightFormat::Bf16,
        dfbs,
        grid,
        cost: Cost::new(
            kv_heads * (3 * dt + 2)
                + if mode == KvMode::Rope {
                    kv_heads * (4 * dt + dt * dt + 1)
                } else {
                    0
                },
            kv_heads
                * (matmul_flops(1, 1, dt)
                    + if mode == KvMode::Rope {
                        matmul_flops(1, dt, dt) + 2 * matmul_flops(1, 1, dt)
                    } else {
                        0
                    }),
        ),
    }
    .checked(t)
}

/// The K path (rms_norm * w, RoPE) and the V path (weightless rms_norm) of one layer written into
/// their caches at the same run-time slot in one launch (one block per KV head does both).
#[allow(clippy::too_many_arguments)]
pub fn kv_write_pair(
    t: &TtTarget,
    doc: &str,
    kv_heads: usize,
    capacity: usize,
    dt: usize,
    n: usize,
    eps: f32,
    pos_tile: usize,
) -> Result<Kernel, TtError> {
    let mut k = kv_write(t, doc, KvMode::Rope, kv_heads, capacity, dt, n, eps, pos_tile)?;
    let KernelCtx::KvWrite(c) = &mut k.ctx else {
        unreachable!("kv_write makes a kv_write context")
    };
    c.pair = true;
    let b = c.bc;
    k.dfbs.extend([
        Dfb::new("cache_v", dt, b),
        Dfb::new("new_v", dt, b),
        Dfb::new("out_v", dt, b),
    ]);
    k.base = format!("kv_write_pair_{kv_heads}x{capacity}x{n}");
    k.cost.dram_bytes += (kv_heads * 3 * dt * TILE_BYTES) as u64;
    k.cost.flops += (kv_heads * matmul_flops(1, 1, dt)) as u64;
    k.checked(t)
}

/// Decode attention over a head-major cache.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    t: &TtTarget,
    doc: &str,
    heads: usize,
    kv_heads: usize,
    capacity: usize,
    dt: usize,
    scale: f32,
    window: Option<usize>,
) -> Result<Kernel, TtError> {
    attention_with(t, doc, heads, kv_heads, capacity, dt, scale, window, None, None)
}

/// Decode attention whose query heads are normalized and rotated in the kernel (the q_norm +
/// RoPE step folded in): `q_h = rope(rms_norm(q_h) * w)` over the `n` real lanes of each head,
/// the position's cos/sin rows gathered at run time. Saves one launch per layer. With `kv`, the
/// layer's K and V rows are normalized (K also rotated, with the same cos/sin rows), used as the
/// first online-softmax step and written into the caches by the same launch (the mask must hide
/// the slot being written): one launch fewer per layer that writes K/V.
#[allow(clippy::too_many_arguments)]
pub fn attention_norm_rope(
    t: &TtTarget,
    doc: &str,
    heads: usize,
    kv_heads: usize,
    capacity: usize,
    dt: usize,
    scale: f32,
    window: Option<usize>,
    n: usize,
    eps: f32,
    kv: Option<KvFold>,
) -> Result<Kernel, TtError> {
    attention_with(t, doc, heads, kv_heads, capacity, dt, scale, window, Some((n, eps)), kv)
}

#[allow(clippy::too_many_arguments)]
fn attention_with(
    t: &TtTarget,
    doc: &str,
    heads: usize,
    kv_heads: usize,
    capacity: usize,
    dt: usize,
    scale: f32,
    window: Option<usize>,
    q_rope: Option<(usize, f32)>,
    kv: Option<KvFold>,
) -> Result<Kernel, TtError> {
    if kv.is_some() && q_rope.is_none() {
        return Err(TtError::new(
            "attention: the K/V write is folded in only with the q norm + RoPE (its cos/sin rows)",
        ));
    }
    // One block per KV head (GQA-packed: its query heads share every K/V chunk read).
    let group = heads / kv_heads;
    let (grid, per_node) = t.grid_for(kv_heads);
    let cap_t = capacity.div_ceil(32);
    let bq = bc(per_node * group);
    // The q norm + RoPE operands, held once per KV head: weight, cos, sin rows, rotate_half,
    // the row-select tile and the position tile.
    let rope_tiles = if q_rope.is_some() {
        3 * dt + dt * dt + 1 + POS_DFB_TILES
    } else {
        0
    };
    // The K/V write: new K/V rows, k_norm weight, the fresh row's mask tile, the slot's two cache
    // tiles, sel/keep, the two written tiles and the writer's position tile.
    let fresh_tiles = if kv.is_some() { 7 * dt + 3 + POS_DFB_TILES } else { 0 };
    let (sb, bkv) = cache_stream(t, cap_t, dt, per_node, 2 * dt * bq + 2 + rope_tiles + fresh_tiles);
    let mut ctx = AttentionCtx {
        doc: doc.to_string(),
        heads,
        kv_heads,
        group,
        cap_t,
        dt,
        sb,
        n_chunks: cap_t / sb,
        bc_q: bq,
        bc_kv: bkv,
        scale: py_f32(scale),
        rope: None,
        chunk: false,
        fresh: None,
        grid: GridCtx::new(grid, per_node, kv_heads),
    };
    let w = match window {
        Some(w) => format!("_w{w}"),
        None => String::new(),
    };
    let mut dfbs = vec![
        Dfb::new("q", dt, bq),
        Dfb::new("sel", 1, 2),
        Dfb::new("k", sb * dt, bkv),
        Dfb::new("v", sb * dt, bkv),
        Dfb::new("mask", sb, bkv),
        Dfb::new("o", dt, bq),
    ];
    let mut cost = Cost::new(
        kv_heads * (2 * cap_t * dt + cap_t) + 2 * heads * dt + 2 * heads,
        kv_heads * 2 * matmul_flops(1, dt, cap_t),
    );
    let mut base = format!("attention_{heads}x{}_{kv_heads}x{capacity}{w}", dt * 32);
    if let Some((n, eps)) = q_rope {
        ctx.rope = Some(QRope {
            inv_n: py_f32(1.0 / n as f32),
            eps: py_f32(eps),
        });
        dfbs.extend([
            Dfb::new("qw", dt, 1),
            Dfb::new("cos", dt, 1),
            Dfb::new("sin", dt, 1),
            Dfb::new("rot", dt * dt, 1),
            Dfb::new("rope_sel", 1, 1),
            Dfb::new("pos", POS_DFB_TILES, 1),
        ]);
        cost.dram_bytes += (kv_heads * (3 * dt + dt * dt + 1 + POS_DFB_TILES) * TILE_BYTES) as u64;
        cost.flops += (heads * (matmul_flops(1, dt, dt) + 2 * matmul_flops(1, 1, dt))) as u64;
        base = format!("norm_rope_{base}");
    }
    if let Some(f) = kv {
        ctx.fresh = Some(FreshKv {
            inv_n: py_f32(1.0 / f.n as f32),
            eps: py_f32(f.eps),
            pos_tile: f.pos_tile,
        });
        dfbs.extend([
            Dfb::new("new_k", dt, 1),
            Dfb::new("k_norm", dt, 1),
            Dfb::new("new_v", dt, 1),
            Dfb::new("fresh_mask", 1, 1),
            Dfb::new("cache_k", dt, 1),
            Dfb::new("cache_v", dt, 1),
            Dfb::new("slot_sel", 1, 1),
            Dfb::new("slot_keep", 1, 1),
            Dfb::new("out_k", dt, 1),
            Dfb::new("out_v", dt, 1),
            Dfb::new("writer_pos", POS_DFB_TILES, 1),
        ]);
        // Per KV head: the new rows, the weight, the two slot tiles read and written, sel/keep,
        // the mask tile; the K rope and both norms, the fresh score and its weighted V row.
        cost.dram_bytes += (kv_heads * (7 * dt + 3) * TILE_BYTES) as u64;
        cost.flops +=
            (kv_heads * (matmul_flops(1, dt, dt) + 2 * matmul_flops(1, 1, dt) + 2 * matmul_flops(1, dt, 1))) as u64;
        base = format!("{base}_kv_write");
    }
    Kernel {
        name: String::new(),
        family: Family::Attention,
        base,
        ctx: KernelCtx::Attention(ctx),
        weights: WeightFormat::Bf16,
        dfbs,
        grid,
        cost,
    }
    .checked(t)
}

/// How an attention kernel streams a KV head's cache: `sb` tile rows per K/V/mask block (a
/// divisor of the `cap_t` tile rows, at most 8) and the blocks' buffer depth, the largest `sb`
/// whose buffers fit L1 beside the kernel's `fixed_tiles` (the query, output and operand tiles).
pub(super) fn cache_stream(
    t: &TtTarget,
    cap_t: usize,
    dt: usize,
    per_node: usize,
    fixed_tiles: usize,
) -> (usize, usize) {
    let mut sb = divisor_le(cap_t, 8);
    loop {
        let bkv = bc(per_node * (cap_t / sb));
        let bytes = (fixed_tiles + (2 * sb * dt + sb) * bkv) * TILE_BYTES;
        if bytes <= t.l1_bytes || sb == 1 {
            return (sb, bkv);
        }
        sb = divisor_le(cap_t, sb - 1);
    }
}
