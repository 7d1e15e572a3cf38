//! chatforge-data: text only. Corpora and token shards, conversations, rankings and prompt
//! sets, and the built-in world with its gold judge. No tensors.

pub mod atomic;
pub mod conversation;
pub mod corpus;
mod error;
pub mod prompts;
pub mod ranking;
pub mod rng;
pub mod shard;
pub mod world;

pub use error::{Error, Result};
pub use rng::Rng;
