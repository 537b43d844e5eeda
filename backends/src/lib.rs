//! Code generation for targets.
pub mod backend;
pub mod cpu;
pub mod cstyle;
pub mod cuda;
pub mod kernel;
pub mod tt;

pub use backend::{lookup, Backend, BackendError, Checkpoint, Emitted, BACKENDS};
