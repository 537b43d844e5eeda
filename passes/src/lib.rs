//! Rewrites (fusion) and planning: the middle of the compiler.
