//! Per-target cost models for extraction: a kernel launch costs `launch`, each
//! byte an op reads costs `per_byte` (both in the same abstract unit).

/// Launch overhead expressed in bytes-equivalent, per target.
#[derive(Debug, Clone, PartialEq)]
pub struct CostModel {
    pub launch: f64,
    pub per_byte: f64,
}

impl CostModel {
    /// CPU: a "launch" is a parallel region (thread-pool dispatch, ~2 us at
    /// ~40 GB/s is ~80 KB of traffic).
    pub fn cpu() -> Self {
        CostModel {
            launch: 80_000.0,
            per_byte: 1.0,
        }
    }

    /// GPUs and Tenstorrent: ~5 us per launch/program dispatch at ~1 TB/s.
    pub fn accelerator() -> Self {
        CostModel {
            launch: 5_000_000.0,
            per_byte: 1.0,
        }
    }
}
