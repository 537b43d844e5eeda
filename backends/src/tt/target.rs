//! Figures of the Tenstorrent targets that the generated kernels are sized for.

use super::TtError;

/// Bytes of one 32x32 bf16 tile (what every dataflow buffer of the generated kernels holds).
pub const TILE_BYTES: usize = 32 * 32 * 2;

/// Hardware limits of one Tenstorrent device, as the code generator models them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TtTarget {
    pub name: &'static str,
    /// Worker-core grid used for operations: (rows, cols).
    pub grid: (usize, usize),
    /// L1 bytes per core available to dataflow buffers.
    pub l1_bytes: usize,
    /// Dataflow buffers per operation.
    pub max_dfbs: usize,
}

impl TtTarget {
    /// Blackhole p300 (the generated code drives one of its chips): 1.5 MB of L1 per Tensix core.
    pub const P300: TtTarget = TtTarget {
        name: "tt-p300",
        grid: (10, 13),
        l1_bytes: 1536 * 1024,
        max_dfbs: 32,
    };
    /// Blackhole p150: one Blackhole chip, sized as the p300.
    pub const P150: TtTarget = TtTarget {
        name: "tt-p150",
        grid: (10, 13),
        l1_bytes: 1536 * 1024,
        max_dfbs: 32,
    };
    /// Wormhole n150: 8x8 cores with 1464 KiB each.
    pub const N150: TtTarget = TtTarget {
        name: "tt-n150",
        grid: (8, 8),
        l1_bytes: 1464 * 1024,
        max_dfbs: 32,
    };

    /// The device named `name` (`tt-p300`, `tt-p150`, `tt-n150`).
    pub fn named(name: &str) -> Result<TtTarget, TtError> {
        [TtTarget::P300, TtTarget::P150, TtTarget::N150]
            .into_iter()
            .find(|t| t.name == name)
            .ok_or_else(|| TtError::new(format!("`{name}` is not a Tenstorrent target")))
    }

    pub fn cores(&self) -> usize {
        self.grid.0 * self.grid.1
    }

    /// Grid for `n_blocks` equal blocks: `(grid, per_node)`. Nodes take contiguous ranges of
    /// `per_node` blocks; the grid has as few nodes as that needs (at least one).
    pub fn grid_for(&self, n_blocks: usize) -> ((usize, usize), usize) {
        let n = n_blocks.max(1);
        let per_node = n.div_ceil(self.cores().min(n));
        let nodes = n.div_ceil(per_node);
        let cols = self.grid.1;
        if nodes <= cols {
            ((1, nodes), per_node)
        } else {
            ((nodes.div_ceil(cols), cols), per_node)
        }
    }
}
