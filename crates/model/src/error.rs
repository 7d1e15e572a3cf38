//! The crate's one error type. Every variant carries what a caller needs to act on it: the file,
//! the parameter key, the shapes, the lengths.

use std::path::PathBuf;

/// Everything that can go wrong in `chatforge-model`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Saving, verifying or loading a checkpoint, or parsing safetensors, failed.
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),

    /// A tensor operation failed (shape mismatch inside an op, unsupported dtype, device error).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A JSON file could not be parsed (or a value could not be serialised).
    #[error("{}: invalid JSON: {source}", path.display())]
    Json {
        /// The file involved.
        path: PathBuf,
        /// The underlying error, with line and column.
        #[source]
        source: serde_json::Error,
    },

    /// A model configuration is inconsistent (the message says which fields and why).
    #[error("invalid model config: {0}")]
    Config(String),

    /// A parameter the model needs is absent.
    #[error("missing parameter `{key}`")]
    MissingKey {
        /// The parameter name, e.g. `blocks.0.attn.q_proj.weight`.
        key: String,
    },

    /// A parameter is present that the model does not have.
    #[error("unexpected parameter `{key}`")]
    UnexpectedKey {
        /// The parameter name.
        key: String,
    },

    /// Two parameter sets that are being merged both have this key.
    #[error("duplicate parameter `{key}`")]
    DuplicateKey {
        /// The parameter name.
        key: String,
    },

    /// A parameter has the wrong shape.
    #[error("parameter `{key}`: expected shape {expected:?}, got {got:?}")]
    Shape {
        /// The parameter name.
        key: String,
        /// The shape the config implies.
        expected: Vec<usize>,
        /// The shape that was found.
        got: Vec<usize>,
    },

    /// A parameter is stored in a dtype that cannot be trained (an integer type).
    #[error("parameter `{key}`: dtype {dtype:?} is not a floating-point type")]
    DType {
        /// The parameter name.
        key: String,
        /// The dtype that was found.
        dtype: candle_core::DType,
    },

    /// Two parameters live on different devices.
    #[error("parameter `{key}` is on {got}, the others are on {expected}")]
    Device {
        /// The parameter name.
        key: String,
        /// The device of the other parameters.
        expected: String,
        /// The device of this one.
        got: String,
    },

    /// The tokens of a forward pass do not fit in the context window.
    #[error(
        "{new_tokens} new tokens after {cached} cached exceed the context length {context_length}"
    )]
    ContextOverflow {
        /// Tokens already in the KV cache (0 without a cache).
        cached: usize,
        /// Tokens in this forward pass.
        new_tokens: usize,
        /// The model's `context_length`.
        context_length: usize,
    },

    /// A KV cache built for a different number of layers was passed to the model.
    #[error("KV cache has {got} layers, the model has {expected}")]
    CacheLayers {
        /// The model's `n_layer`.
        expected: usize,
        /// The cache's number of layers.
        got: usize,
    },

    /// An input tensor is unusable (empty sequence, wrong rank); the message says which and why.
    #[error("invalid input: {0}")]
    Input(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
