//! gemma4c frontend: Hugging Face Gemma 4 checkpoints and configs to graph IR.

pub mod bounds;
pub mod checkpoint;
pub mod config;
pub mod error;
mod fields;
pub mod gemma3;
mod gemma3_config;
pub mod gemma4;
mod gemma4_config;
pub mod gguf;
pub mod model;
pub mod quantize;
pub mod store;
pub mod summary;

pub use checkpoint::Checkpoint;
pub use config::{Family, Gemma4Config, LayerConfig, LayerType};
pub use error::FrontendError;
pub use gemma4::{build, BuildOptions, LogitRows};
pub use model::Model;
pub use store::{Conversion, StoredTensor, WeightStore};
