//! Code generation for targets.
pub mod cpu;
pub mod kernel;
pub mod tt;
