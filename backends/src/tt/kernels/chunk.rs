//! The prefill-chunk variants of the position-dependent kernels. A chunk is one tile row: 32
//! consecutive positions starting at a multiple of 32, every row real. Row-wise kernels (matmuls,
//! norms, elementwise) already compute whole tiles and serve decode and prefill alike; these three
//! differ: RoPE takes whole cos/sin tiles (tile row `start / 32` of the tables: row r is position
//! start + r), the KV write replaces a whole cache tile row (ring capacities are multiples of 32,
//! so a chunk never straddles the ring's end), and attention has 32 queries per head, each row
//! with its own mask row.

use super::{bc, matmul_flops, py_f32, Cost, Dfb, Family, GridCtx, Kernel, KernelCtx, QRope, POS_DFB_TILES};
use crate::tt::target::{TtTarget, WeightFormat, TILE_BYTES};
use crate::tt::TtError;

use super::cache::{cache_stream, AttentionCtx};

impl Kernel {
    /// The same KV write or RoPE kernel over a prefill chunk (`chunk` in its template): no row
    /// select, no read-modify-write of the cache tile.
    pub fn over_chunk(mut self, t: &TtTarget) -> Result<Kernel, TtError> {
        let drop: &[&str] = match &mut self.ctx {
            KernelCtx::KvWrite(c) => {
                c.chunk = true;
                &["cache", "rope_sel", "sel", "keep", "cache_v"]
            }
            KernelCtx::NormRope(c) => {
                c.chunk = true;
                &["sel"]
            }
            _ => {
                return Err(TtError::new(format!(
                    "kernel `{}` has no prefill-chunk variant",
                    self.base
                )))
            }
        };
        // Tiles no longer read: the cache tile rows (one per head and cache), the select tiles.
        let dropped: usize = self
            .dfbs
            .iter()
            .filter(|d| drop.contains(&d.name))
            .map(|d| d.tiles * self.ctx.grid().n_blocks)
            .sum();
        self.dfbs.retain(|d| !drop.contains(&d.name));
        self.cost.dram_bytes = self.cost.dram_bytes.saturating_sub((dropped * TILE_BYTES) as u64);
        self.base = format!("prefill_{}", self.base);
        self.checked(t)
    }
}

/// Prefill attention of one chunk over a head-major cache (its own rows written first): one
/// block per query head, whose 32 rows are the chunk's positions; with `q_rope`, each head is
/// normalized and rotated first (`q_h = rope(rms_norm(q_h) * w)` over `n` real lanes).
#[allow(clippy::too_many_arguments)]
pub fn attention_chunk(
    t: &TtTarget,
    doc: &str,
    heads: usize,
    kv_heads: usize,
    capacity: usize,
    dt: usize,
    scale: f32,
    window: Option<usize>,
    q_rope: Option<(usize, f32)>,
) -> Result<Kernel, TtError> {
    let group = heads / kv_heads;
    let (grid, per_node) = t.grid_for(heads);
    let cap_t = capacity.div_ceil(32);
    let bq = bc(per_node);
    let rope_tiles = if q_rope.is_some() {
        (3 * dt + dt * dt) * bq + POS_DFB_TILES
    } else {
        0
    };
    let (sb, bkv) = cache_stream(t, cap_t, dt, per_node, 2 * dt * bq + rope_tiles);
    let ctx = AttentionCtx {
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
        rope: q_rope.map(|(n, eps)| QRope {
            inv_n: py_f32(1.0 / n as f32),
            eps: py_f32(eps),
        }),
        chunk: true,
        fresh: None,
        grid: GridCtx::new(grid, per_node, heads),
    };
    let mut dfbs = vec![
        Dfb::new("q", dt, bq),
        Dfb::new("k", sb * dt, bkv),
        Dfb::new("v", sb * dt, bkv),
        Dfb::new("mask", sb, bkv),
        Dfb::new("o", dt, bq),
    ];
    // Every query head streams its KV head's cache and the chunk's mask rows; q and o once.
    let mut cost = Cost::new(
        heads * (2 * cap_t * dt + cap_t) + 2 * heads * dt,
        heads * 2 * matmul_flops(1, dt, cap_t),
    );
    if q_rope.is_some() {
        dfbs.extend([
            Dfb::new("qw", dt, bq),
            Dfb::new("cos", dt, bq),
            Dfb::new("sin", dt, bq),
            Dfb::new("rot", dt * dt, bq),
            Dfb::new("pos", POS_DFB_TILES, 1),
        ]);
        cost.dram_bytes += (heads * (3 * dt + dt * dt) * TILE_BYTES) as u64;
        cost.flops += (heads * matmul_flops(1, dt, dt)) as u64;
    }
    let w = window.map_or(String::new(), |w| format!("_w{w}"));
    let rope = if q_rope.is_some() { "norm_rope_" } else { "" };
    Kernel {
        name: String::new(),
        family: Family::Attention,
        base: format!("prefill_{rope}attention_{heads}x{}_{kv_heads}x{capacity}{w}", dt * 32),
        ctx: KernelCtx::Attention(ctx),
        weights: WeightFormat::Bf16,
        dfbs,
        grid,
        cost,
    }
    .checked(t)
}
