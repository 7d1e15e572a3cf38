//! chatforge-data: text only. Corpora and token shards, the built-in world, and (later)
//! conversations, rankings and prompt sets. No tensors.

pub mod atomic;
pub mod conversation;
pub mod corpus;
mod error;
pub mod rng;
pub mod shard;
pub mod world;

pub use error::{Error, Result};
pub use rng::Rng;
