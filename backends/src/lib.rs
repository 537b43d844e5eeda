//! Code generation for targets.
pub mod cpu;
pub mod cuda;
pub mod kernel;
pub mod tt;
