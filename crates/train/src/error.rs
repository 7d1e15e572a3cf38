//! Errors of the training stages.

use std::path::PathBuf;

/// Everything that can stop a training stage, with what is needed to act on it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {msg}")]
    File { path: PathBuf, msg: String },
    #[error("config: {0}")]
    Config(String),
    #[error("data: {0}")]
    Data(String),
    #[error("training state: {0}")]
    State(String),
    #[error("parameter {0} received no gradient (an op in its path records no backward)")]
    NoGradient(String),
    #[error("training diverged at step {step}: {reason}")]
    Diverged { step: u64, reason: String },
    #[error("refusing to save a checkpoint: tensor {0} is not finite")]
    NonFiniteTensor(String),
    #[error("plot: {0}")]
    Plot(String),
    #[error(transparent)]
    Model(#[from] chatforge_model::Error),
    #[error(transparent)]
    Checkpoint(#[from] chatforge_model::checkpoint::CheckpointError),
    #[error(transparent)]
    DataCrate(#[from] chatforge_data::Error),
    #[error(transparent)]
    Tokenizer(#[from] chatforge_tokenizer::Error),
    #[error(transparent)]
    Engine(#[from] chatforge_engine::Error),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

/// Attaches a path to an I/O error.
pub(crate) fn io_at(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { path, source }
}
