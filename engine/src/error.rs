//! The engine's error type: every message names the file, key or value at fault.

use std::path::PathBuf;

/// Errors of loading, tokenizing and running a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },

    #[error("{path}: invalid JSON: {error}")]
    Json { path: PathBuf, error: serde_json::Error },

    #[error("{path}: field `{field}`: {message}")]
    Config { path: PathBuf, field: String, message: String },

    #[error("{path}: unsupported model_type {model_type:?} (herd serves `llama4_text` and `llama4`)")]
    UnsupportedModelType { path: PathBuf, model_type: String },

    #[error("{path}: no weights found: expected `model.safetensors` or `model.safetensors.index.json`")]
    NoWeights { path: PathBuf },

    #[error("{path}: invalid safetensors file: {message}")]
    Safetensors { path: PathBuf, message: String },

    #[error("{path}: missing tensor `{key}`")]
    MissingTensor { path: PathBuf, key: String },

    #[error("{path}: tensor `{key}` has shape {actual:?}, expected {expected:?}")]
    Shape { path: PathBuf, key: String, expected: Vec<usize>, actual: Vec<usize> },

    #[error("{path}: tensor `{key}` has dtype {dtype}, herd reads F32, BF16 and F16")]
    Dtype { path: PathBuf, key: String, dtype: String },

    #[error("{path}: tokenizer: {message}")]
    Tokenizer { path: PathBuf, message: String },

    #[error("chat template: {0}")]
    Template(String),

    #[error("invalid request: {0}")]
    Request(String),

    #[error("tensor error: {0}")]
    Tensor(#[from] candle_core::Error),

    #[error("generation cancelled")]
    Cancelled,

    #[error("overloaded: {0} requests already waiting")]
    Overloaded(usize),

    #[error("the KV cache is full: all {0} blocks are in use")]
    KvExhausted(usize),

    /// The device cannot do what was asked (a dtype it does not hold, a shape its kernels do not
    /// take, a KV cache of another device).
    #[error("{device}: {message}")]
    Device { device: String, message: String },

    /// The CUDA device layer failed (no driver, no NVRTC, out of memory, a failed launch).
    #[cfg(feature = "cuda")]
    #[error(transparent)]
    Cuda(#[from] herd_kernels::cuda::Error),
}

/// Result alias of the engine.
pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn config_err(path: &std::path::Path, field: &str, message: impl Into<String>) -> Error {
    Error::Config { path: path.to_path_buf(), field: field.to_string(), message: message.into() }
}
