//! chatforge-engine: sampling and generation over token ids. One engine serves the CLI, the
//! evals and (later) the server and PPO rollouts.

pub mod generate;
pub mod sampler;

pub use generate::{generate, FinishReason, Generation};
pub use sampler::{Pick, Sampler, SamplingParams};

/// Errors of the engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("bad sampling request: {0}")]
    Params(String),
    #[error("the model produced non-finite logits")]
    NonFinite,
    #[error(transparent)]
    Model(#[from] chatforge_model::Error),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, Error>;
