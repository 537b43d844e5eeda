//! Errors a user can cause by pointing gemma4c at a bad checkpoint or config.
//! Every message names the file, field or tensor and what was expected.

use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum FrontendError {
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("{path}: not valid JSON: {message}")]
    Json { path: PathBuf, message: String },
    /// A config field that is missing, has the wrong type, or an unusable value.
    #[error("{path}: field `{field}`: {message}")]
    Config {
        path: PathBuf,
        field: String,
        message: String,
    },
    #[error("{path}: unknown model_type `{found}`: gemma4c supports `gemma4_text`/`gemma3_text` (text configs) and `gemma4`/`gemma3` (multimodal configs with `text_config`)")]
    UnknownModelType { path: PathBuf, found: String },
    /// A safetensors file that cannot be read as one.
    #[error("{path}: not a readable safetensors file: {message}")]
    Safetensors { path: PathBuf, message: String },
    /// A GGUF file that cannot be read as one (the message names the field or tensor).
    #[error("{path}: not a readable GGUF file: {message}")]
    Gguf { path: PathBuf, message: String },
    /// A tensor that the model needs is not in the checkpoint.
    #[error("{dir}: tensor `{key}` is missing (looked for `{tried}`)")]
    MissingTensor { dir: PathBuf, key: String, tried: String },
    /// A tensor whose shape or dtype differs from what the config implies.
    #[error("{path}: tensor `{key}` is {found}, expected {expected}")]
    TensorMismatch {
        path: PathBuf,
        key: String,
        found: String,
        expected: String,
    },
    #[error("graph construction failed: {0}")]
    Ir(#[from] gemma4c_ir::IrError),
}
