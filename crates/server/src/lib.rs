//! chatforge-server: the web side of chatforge, on axum and tokio.
//!
//! - [`label`]: the labelling page where people rank K sampled responses to a prompt
//!   (InstructGPT's comparison data); every submission is appended durably to a rankings file.
//!
//! The crate speaks text and [`chatforge_data`] records only: generation is behind the
//! [`label::Responder`] trait, which the CLI implements with the engine, so tests can serve the
//! page with a fake responder. Like every library here it never prints; it emits `tracing`
//! events.

pub mod label;

/// `Result` with this crate's [`enum@Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// What can go wrong setting up a server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or opening a data file (the rankings file, with its path and line).
    #[error(transparent)]
    Data(#[from] chatforge_data::Error),

    /// A prompt that cannot be ranked (empty, or not ending with a user message).
    #[error("prompt {index}: {msg}")]
    InvalidPrompt {
        /// 0-based position in the prompt list given to the server.
        index: usize,
        /// What is wrong.
        msg: String,
    },

    /// A setting out of range (K, the prompt list).
    #[error("{0}")]
    Config(String),

    /// Binding or serving a socket.
    #[error("{}: {source}", what)]
    Io {
        /// What was being done ("serving on 127.0.0.1:8080").
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}
