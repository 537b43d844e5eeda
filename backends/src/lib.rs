//! Code generation for targets.
pub mod backend;
pub mod cpu;
pub mod cstyle;
pub mod cuda;
pub mod gpu;
pub mod kernel;
pub mod metal;
pub mod tt;
pub mod wgsl;

pub use backend::{lookup, Backend, BackendError, Checkpoint, Emitted, BACKENDS};
