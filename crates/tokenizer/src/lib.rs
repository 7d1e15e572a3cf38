//! chatforge-tokenizer: byte-level BPE. Training, encoding, decoding, special tokens, streaming
//! decode, and loading GPT-2 / tiktoken vocabularies. No tensors.
//! Chat templates ([`chat`]) render conversations to ids and an SFT loss mask.
//!
//! ```
//! use chatforge_tokenizer::{Special, Tokenizer, TrainConfig};
//!
//! let docs = ["the cat sat on the mat", "the dog sat on the log"];
//! let tok = Tokenizer::train(&docs, &TrainConfig::with_vocab_size(300)).unwrap();
//! let ids = tok.encode("the cat sat on the log");
//! assert_eq!(tok.decode(&ids).unwrap(), "the cat sat on the log");
//! // Special-token text typed by a user is ordinary text...
//! assert!(!tok.encode("<|eot|>").contains(&tok.special(Special::Eot)));
//! // ...unless the caller asks for special tokens to be recognised.
//! assert_eq!(tok.encode_with_special("<|eot|>"), [tok.special(Special::Eot)]);
//! ```

#![warn(missing_docs)]

mod bpe;
pub mod chat;
pub mod error;
pub mod gpt2;
mod io;
pub mod pretokenize;
pub mod special;
pub mod stream;
mod tokenizer;
pub mod trainer;

pub use chat::{
    add_chatml_specials, assistant_end, render, render_prompt, ChatTemplate, Rendered, IM_END,
    IM_START,
};
pub use error::{Error, Result};
pub use pretokenize::{Splitter, GPT2_PATTERN, GPT4_PATTERN};
pub use special::{Special, SpecialToken};
pub use stream::StreamDecoder;
pub use tokenizer::{
    default_specials, Tokenizer, MAX_MERGES, MAX_SPECIALS, MAX_TOKEN_BYTES, MAX_VOCAB_BYTES,
};
pub use trainer::TrainConfig;
