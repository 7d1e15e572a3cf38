//! chatforge-engine: sampling and generation over token ids. One engine serves the CLI, the
//! evals and (later) the server and PPO rollouts.

pub mod batch;
pub mod generate;
pub mod sampler;

pub use batch::{generate_batch, generate_n, FinishReason, GenerateRequest, Sample};
pub use generate::{generate, Generation};
pub use sampler::{Pick, Sampler, SamplingParams};

/// Errors of the engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request or the sampling settings are invalid (the message says which value).
    #[error("bad sampling request: {0}")]
    Params(String),
    /// The model produced NaN logits.
    #[error("the model produced non-finite logits")]
    NonFinite,
    /// An error of the model (shapes, ids, context).
    #[error(transparent)]
    Model(#[from] chatforge_model::Error),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// The engine's result type.
pub type Result<T> = std::result::Result<T, Error>;
