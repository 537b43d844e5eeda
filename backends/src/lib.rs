//! Code generation for targets.
