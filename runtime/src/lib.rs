//! gemma4c runtime: executors, KV cache, sampling, tokenizer, generation loop.

pub mod error;
pub mod generate;
pub mod npy;
pub mod sampler;
pub mod session;
pub mod tokenizer;
pub mod weights;

pub use error::RuntimeError;
pub use generate::{generate, Generation};
pub use session::{Executor, ReferenceSession};
