//! Errors of graph construction, verification and evaluation.

use thiserror::Error;

#[derive(Debug, Error, PartialEq)]
pub enum IrError {
    /// An op whose operands do not fit it.
    #[error("node `{node}` ({op}): {message}")]
    Type { node: String, op: String, message: String },
    /// A structural defect of the graph (found by the verifier).
    #[error("graph `{graph}`: {message}")]
    Structure { graph: String, message: String },
    /// A failure while computing a node's reference semantics.
    #[error("evaluating node `{node}` ({op}): {message}")]
    Eval { node: String, op: String, message: String },
}
