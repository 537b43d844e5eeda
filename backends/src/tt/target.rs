//! The device model of the Tenstorrent targets: what one board offers the generated program
//! (compute grid, L1 per core, DRAM per chip, chips, dispatch cost, DRAM bandwidth), and the
//! compile-time checks against it.
//!
//! Sources of the figures (read from the public tt-metal / tt-lang sources and Tenstorrent's
//! board specifications; none of it was measured here):
//! * grid: tt-lang's `ttl.operation(grid=(x, y))` is `(cols, rows)`, compared against
//!   `device.compute_with_storage_grid_size()` (tt-lang `python/ttl/ttl_api.py`: "Grid is
//!   (cols, rows) = (x, y), matching tt-metal CoreCoord convention"). Blackhole's worker grid
//!   is 13 x 10 (one Tensix column of the 14 x 10 array is kept for dispatch); Wormhole n150's
//!   is 8 x 8.
//! * L1: 1536 KiB per Blackhole Tensix core, 1464 KiB per Wormhole core. Firmware, kernel
//!   binaries, runtime arguments and dispatch take the first part: tt-metal's Gemma 4 bring-up
//!   on Blackhole runs with `worker_l1_size` of about 1.36 MB (176 KiB reserved); the same
//!   reserve is assumed on Wormhole. Of what is left we budget dataflow buffers only up to
//!   `L1_HEADROOM` less, for the temporaries the TT-Lang compiler adds (register spills of block
//!   expressions, reduce scalers, matmul partials).
//! * DRAM: 32 GB GDDR6 per Blackhole chip (p150: one chip, p300: two), 12 GB on a Wormhole n150;
//!   bandwidth 512 GB/s per Blackhole chip, 288 GB/s on n150.
//! * dispatch: about 0.23 ms per untraced TT-Lang launch end to end (measured by Tenstorrent on
//!   a hand-written TT-Lang Gemma port); a traced launch (replayed command queue) costs about
//!   10 us of device-side dispatch. The performance model (`perf.rs`) uses both.

use super::TtError;

/// Bytes of one 32x32 bf16 tile (what every dataflow buffer of the generated kernels holds).
pub const TILE_BYTES: usize = 32 * 32 * 2;

const KIB: usize = 1024;
const GB: u64 = 1_000_000_000;

/// Chip-to-chip bandwidth of an all-reduce: two 400 Gb/s Ethernet links between adjacent
/// Blackhole chips (tt-metal's Gemma 4 `ccl.py` uses 2 links on Blackhole), 50 GB/s each.
/// On paper: not measured.
pub const LINK_BW: f64 = 2.0 * 50e9;
/// Fixed cost of one decode-sized all-reduce (a few tiles): an assumption of 20 us (fabric
/// round trip, the CCL op's own dispatch and synchronisation); no published per-op figure for
/// Blackhole was found, so this is the number to measure first on a p300.
pub const ALL_REDUCE_S: f64 = 20e-6;

/// L1 reserved below the worker area (firmware, kernel config, dispatch): Blackhole's
/// 1536 KiB minus tt-metal's `worker_l1_size` of ~1.36 MB.
pub const L1_RESERVED: usize = 176 * KIB;
/// L1 kept free for the compiler's own temporaries on top of the declared dataflow buffers.
pub const L1_HEADROOM: usize = 96 * KIB;

/// How matmul weights are stored on the device (`compile --weights`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightFormat {
    /// bfloat16: 2048 bytes per tile.
    #[default]
    Bf16,
    /// bfloat8_b block floating point (`bfp8.rs`): 1088 bytes per tile. Matmul weights only;
    /// embeddings, the per-layer-input (PLE) path, norms and the MoE router stay bf16.
    Bfp8,
}

impl WeightFormat {
    /// `bf16` or `bfp8`, as `--weights` spells them.
    pub fn parse(s: &str) -> Result<WeightFormat, TtError> {
        match s {
            "bf16" => Ok(WeightFormat::Bf16),
            "bfp8" => Ok(WeightFormat::Bfp8),
            _ => Err(TtError::new(format!("--weights `{s}`: expected bf16 or bfp8"))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            WeightFormat::Bf16 => "bf16",
            WeightFormat::Bfp8 => "bfp8",
        }
    }

    /// The TT-NN dtype of such a device tensor.
    pub fn ttnn(self) -> &'static str {
        match self {
            WeightFormat::Bf16 => "bfloat16",
            WeightFormat::Bfp8 => "bfloat8_b",
        }
    }

    /// Bytes of one 32x32 tile in DRAM and L1.
    pub fn tile_bytes(self) -> usize {
        match self {
            WeightFormat::Bf16 => TILE_BYTES,
            WeightFormat::Bfp8 => super::bfp8::TILE_BYTES,
        }
    }
}

/// A compute grid in tt-lang's convention: `grid=(cols, rows)`, node `(x, y)` with `x < cols`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    pub cols: usize,
    pub rows: usize,
}

impl Grid {
    pub fn cores(self) -> usize {
        self.cols * self.rows
    }

    /// Whether a kernel grid fits inside this (device) grid, as tt-lang checks at launch.
    pub fn contains(self, g: Grid) -> bool {
        g.cols <= self.cols && g.rows <= self.rows
    }
}

/// Hardware of one Tenstorrent board, as the code generator models it.
#[derive(Debug, Clone, PartialEq)]
pub struct TtTarget {
    pub name: &'static str,
    /// Worker-core grid of one chip, `(cols, rows)`.
    pub grid: Grid,
    /// L1 bytes per core (the whole SRAM).
    pub l1_total: usize,
    /// L1 bytes per core the generated dataflow buffers may use (total - reserved - headroom).
    pub l1_bytes: usize,
    /// Dataflow buffers per operation.
    pub max_dfbs: usize,
    /// DRAM bytes per chip.
    pub dram_per_chip: u64,
    /// The board's chips as a TT-NN mesh `(rows, cols)`; the program shards the large matmul
    /// weights over all of them (`lower/mesh.rs`) and replicates the rest.
    pub mesh: (usize, usize),
    /// Chip-to-chip (Ethernet) bandwidth one all-reduce can use, bytes/s.
    pub link_bw: f64,
    /// Fixed cost of one all-reduce of a small (decode-sized) tensor across the mesh, seconds.
    pub all_reduce_s: f64,
    /// DRAM bandwidth per chip, bytes/s.
    pub dram_bw: f64,
    /// Sustained bf16 matmul throughput per core, FLOP/s (approximate: about 195 TFLOP/s over
    /// Blackhole's 130 workers, 64 TFLOP/s over Wormhole's 64; decode is bandwidth bound, so this
    /// only matters for prefill-sized matmuls).
    pub flops_per_core: f64,
    /// Seconds per launch, untraced (host dispatch of every operation).
    pub dispatch_untraced_s: f64,
    /// Seconds per launch when the decode step is replayed from a captured trace.
    pub dispatch_traced_s: f64,
    /// Storage of the matmul weights (`--weights`; bf16 unless asked).
    pub weights: WeightFormat,
}

/// Blackhole chips; `mesh` is the board's chip grid.
const fn blackhole(name: &'static str, mesh: (usize, usize)) -> TtTarget {
    TtTarget {
        name,
        grid: Grid { cols: 13, rows: 10 },
        l1_total: 1536 * KIB,
        l1_bytes: 1536 * KIB - L1_RESERVED - L1_HEADROOM,
        max_dfbs: 32,
        dram_per_chip: 32 * GB,
        mesh,
        link_bw: LINK_BW,
        all_reduce_s: ALL_REDUCE_S,
        dram_bw: 512e9,
        flops_per_core: 1.5e12,
        dispatch_untraced_s: 230e-6,
        dispatch_traced_s: 10e-6,
        weights: WeightFormat::Bf16,
    }
}

impl TtTarget {
    /// Blackhole p300: two chips, a (1, 2) mesh.
    pub const P300: TtTarget = blackhole("tt-p300", (1, 2));
    /// Blackhole p150: one chip.
    pub const P150: TtTarget = blackhole("tt-p150", (1, 1));
    /// Wormhole n150: one chip, 8 x 8 workers with 1464 KiB of L1 each, 12 GB of DRAM.
    pub const N150: TtTarget = TtTarget {
        name: "tt-n150",
        grid: Grid { cols: 8, rows: 8 },
        l1_total: 1464 * KIB,
        l1_bytes: 1464 * KIB - L1_RESERVED - L1_HEADROOM,
        max_dfbs: 32,
        dram_per_chip: 12 * GB,
        mesh: (1, 1),
        link_bw: LINK_BW,
        all_reduce_s: ALL_REDUCE_S,
        dram_bw: 288e9,
        flops_per_core: 1.0e12,
        dispatch_untraced_s: 230e-6,
        dispatch_traced_s: 10e-6,
        weights: WeightFormat::Bf16,
    };

    /// The device named `name` (`tt-p300`, `tt-p150`, `tt-n150`).
    pub fn named(name: &str) -> Result<TtTarget, TtError> {
        [TtTarget::P300, TtTarget::P150, TtTarget::N150]
            .into_iter()
            .find(|t| t.name == name)
            .ok_or_else(|| TtError::new(format!("`{name}` is not a Tenstorrent target")))
    }

    /// The same board with matmul weights stored as `weights`.
    pub fn with_weights(&self, weights: WeightFormat) -> TtTarget {
        TtTarget {
            weights,
            ..self.clone()
        }
    }

    pub fn cores(&self) -> usize {
        self.grid.cores()
    }

    /// Chips on the board (all of them run the program).
    pub fn chips(&self) -> usize {
        self.mesh.0 * self.mesh.1
    }

    /// DRAM of one chip: every chip holds the replicated tensors and its share of the sharded ones.
    pub fn dram_available(&self) -> u64 {
        self.dram_per_chip
    }

    /// Grid for `n_blocks` equal blocks: `(grid, per_node)`. Nodes take contiguous ranges of
    /// `per_node` blocks; the grid fills whole rows of `cols` nodes first and has as few nodes
    /// as that needs (at least one).
    pub fn grid_for(&self, n_blocks: usize) -> (Grid, usize) {
        let n = n_blocks.max(1);
        let per_node = n.div_ceil(self.cores().min(n));
        let nodes = n.div_ceil(per_node);
        let cols = self.grid.cols;
        if nodes <= cols {
            (Grid { cols: nodes, rows: 1 }, per_node)
        } else {
            (
                Grid {
                    cols,
                    rows: nodes.div_ceil(cols),
                },
                per_node,
            )
        }
    }

    /// Refuses a program whose device tensors do not fit one chip's DRAM (`needed`: the bytes on
    /// each chip, sharded weights counted by their share).
    pub fn check_dram(&self, needed: u64, what: &str) -> Result<(), TtError> {
        let avail = self.dram_available();
        if needed <= avail {
            return Ok(());
        }
        let gb = |b: u64| b as f64 / GB as f64;
        let board = if self.chips() > 1 {
            format!(
                " per chip (the large matmul weights are sharded over the board's {} chips, the rest is replicated)",
                self.chips()
            )
        } else {
            String::new()
        };
        Err(TtError::new(format!(
            "{what} needs {needed} bytes ({:.1} GB) of device DRAM{board}; one chip of {} has {avail} bytes ({:.1} GB). \
             {}, or lower --max-context if the KV caches dominate",
            gb(needed),
            self.name,
            gb(avail),
            match self.weights {
                WeightFormat::Bf16 =>
                    "Use smaller weights (`--weights bfp8`: matmul weights in 1088 of bf16's 2048 bytes per tile) \
                     or a bigger mesh (more chips)",
                WeightFormat::Bfp8 =>
                    "The matmul weights are bfp8 already (`--weights bfp8`): use a bigger mesh (more chips)",
            }
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blackhole_grid_is_13_columns_by_10_rows() {
        for t in [TtTarget::P300, TtTarget::P150] {
            assert_eq!(t.grid, Grid { cols: 13, rows: 10 });
            assert_eq!(t.cores(), 130);
            // tt-metal's worker_l1_size ~1.36 MB, less headroom for compiler temporaries.
            assert_eq!(t.l1_bytes, 1264 * 1024);
        }
        let n150 = TtTarget::N150;
        assert_eq!(n150.grid, Grid { cols: 8, rows: 8 });
    }

    #[test]
    fn the_mesh_is_a_property_of_the_board() {
        assert_eq!(TtTarget::P300.mesh, (1, 2));
        assert_eq!(TtTarget::P300.chips(), 2);
        assert_eq!(TtTarget::P150.mesh, (1, 1));
        assert_eq!(TtTarget::N150.mesh, (1, 1));
        assert_eq!(TtTarget::named("tt-p300").unwrap().mesh, (1, 2));
    }

    #[test]
    fn grids_fill_whole_rows_of_columns_and_fit_the_device() {
        let t = TtTarget::P150;
        assert_eq!(t.grid_for(5), (Grid { cols: 5, rows: 1 }, 1));
        assert_eq!(t.grid_for(13), (Grid { cols: 13, rows: 1 }, 1));
        assert_eq!(t.grid_for(14), (Grid { cols: 13, rows: 2 }, 1));
        assert_eq!(t.grid_for(130), (Grid { cols: 13, rows: 10 }, 1));
        assert_eq!(t.grid_for(320), (Grid { cols: 13, rows: 9 }, 3));
        for n in 1..2000 {
            let (g, per_node) = t.grid_for(n);
            assert!(t.grid.contains(g), "{n}: {g:?} exceeds the device grid");
            assert!(g.cores() * per_node >= n, "{n}: not covered");
            // Only the last row of a multi-row grid may hold idle nodes.
            assert!(n.div_ceil(per_node) > (g.rows - 1) * g.cols, "{n}: a whole idle row");
        }
    }

    #[test]
    fn dram_refusal_names_the_figures_and_a_hint() {
        let t = TtTarget::P300;
        assert!(t.check_dram(31 * GB, "model").is_ok());
        let e = t.check_dram(59 * GB, "Gemma 4 31B").unwrap_err();
        assert!(
            e.0.contains("59000000000 bytes") && e.0.contains("32000000000 bytes"),
            "{e}"
        );
        assert!(
            e.0.contains("--weights bfp8") && e.0.contains("per chip") && e.0.contains("2 chips"),
            "{e}"
        );
    }
}
