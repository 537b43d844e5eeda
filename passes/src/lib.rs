//! Rewrites (fusion) and planning: the middle of the compiler.

pub mod cost;
pub mod fusion;

pub use cost::CostModel;
pub use fusion::{fuse, FusionReport, Limits};
