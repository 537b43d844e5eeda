//! Compilation targets.

use std::fmt;
use std::str::FromStr;

use crate::cost::CostModel;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The host CPU via LLVM.
    Cpu,
    /// Tenstorrent Blackhole p300 / p150, Wormhole n150.
    TtP300,
    TtP150,
    TtN150,
    /// NVIDIA Hopper via generated CUDA C.
    CudaSm90,
    /// Apple GPUs via generated Metal Shading Language.
    Metal,
}

impl Target {
    pub const ALL: [Target; 6] = [
        Target::Cpu,
        Target::TtP300,
        Target::TtP150,
        Target::TtN150,
        Target::CudaSm90,
        Target::Metal,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Target::Cpu => "cpu",
            Target::TtP300 => "tt-p300",
            Target::TtP150 => "tt-p150",
            Target::TtN150 => "tt-n150",
            Target::CudaSm90 => "cuda-sm90",
            Target::Metal => "metal",
        }
    }

    pub fn is_tenstorrent(self) -> bool {
        matches!(self, Target::TtP300 | Target::TtP150 | Target::TtN150)
    }

    /// Extraction cost model.
    pub fn cost_model(self) -> CostModel {
        match self {
            Target::Cpu => CostModel::cpu(),
            _ => CostModel::accelerator(),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Target, String> {
        Target::ALL.into_iter().find(|t| t.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Target::ALL.iter().map(|t| t.name()).collect();
            format!("unknown target `{s}` (expected one of: {})", names.join(", "))
        })
    }
}
