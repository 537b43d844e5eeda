//! gemma4c's dataflow graph IR.
//!
//! A decode step (or a prefill of S tokens) is a functional SSA graph: inputs are
//! token ids, the position and the KV caches; outputs are logits and the new
//! caches. Every node carries the Hugging Face-style name of what it computes so
//! dumps and divergence reports line up with `transformers`.

pub mod builder;
pub mod dtype;
pub mod error;
pub mod eval;
pub mod graph;
pub mod infer;
pub mod interpret;
mod kquantize;
pub mod limits;
pub mod math;
pub mod op;
pub mod parse;
pub mod print;
pub mod quant;
pub mod quantize;
pub mod tensor;
pub mod verify;

pub use builder::GraphBuilder;
pub use dtype::{DType, TensorType};
pub use error::IrError;
pub use graph::{Graph, Node, NodeId, Output, Value};
pub use interpret::{interpret, Observer, WeightSource};
pub use op::{InputRole, Op, OpProps, RopeSpec};
pub use parse::{parse, ParseError};
pub use print::print;
pub use quant::QuantFormat;
pub use tensor::{Data, Tensor};
pub use verify::verify;
