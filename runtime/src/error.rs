//! Runtime errors: bad requests (token ids, lengths, flags) and failures of the
//! layers below, each with what was expected.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Frontend(#[from] gemma4c_frontend::FrontendError),
    #[error(transparent)]
    Ir(#[from] gemma4c_ir::IrError),
    /// A request the model cannot serve (id outside the vocabulary, too long).
    #[error("{0}")]
    Request(String),
    #[error("{0}")]
    Other(String),
}
