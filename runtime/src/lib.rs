//! gemma4c runtime: executors, KV cache, sampling, tokenizer, generation loop.

pub mod artifact;
pub mod chat_template;
pub mod conversation;
#[cfg(feature = "cuda")]
pub mod cuda_exec;
pub mod error;
pub mod generate;
pub mod gguf_tokenizer;
pub mod gpu_executor;
pub mod gpu_launch;
#[cfg(feature = "jit")]
pub mod jit;
pub mod npy;
pub mod plan_session;
pub mod sampler;
pub mod session;
pub mod stop;
pub mod tokenizer;
pub mod weights;
#[cfg(feature = "wgpu")]
pub mod wgpu_exec;

pub use error::RuntimeError;
pub use generate::{generate, Flow, Generation, Output, StopReason, Timings};
pub use plan_session::PlanSession;
pub use session::{Executor, ReferenceSession};
