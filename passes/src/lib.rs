//! Rewrites (fusion) and planning: the middle of the compiler.

pub mod cost;
pub mod fusion;
pub mod pipeline;
pub mod plan;
pub mod plan_check;

pub use cost::CostModel;
pub use fusion::{fuse, Extraction, FusionReport, Limits};
pub use pipeline::{compile, CallGraph, Compiled};
pub use plan::{Plan, Program};
