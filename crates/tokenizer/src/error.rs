//! The crate's error type: every failure carries what a caller needs to act on it.

use std::path::PathBuf;

/// Errors from training, loading, encoding and decoding.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file that could not be read or written.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// A file was rejected; `source` says why.
    #[error("{}: {source}", path.display())]
    File {
        /// The offending file.
        path: PathBuf,
        /// What was wrong with it.
        source: Box<Error>,
    },
    /// A file is larger than this loader accepts.
    #[error("file is {size} bytes, more than the {max} bytes accepted for a tokenizer file")]
    FileTooLarge {
        /// Size of the file in bytes.
        size: u64,
        /// The largest size accepted.
        max: u64,
    },
    /// The tokenizer JSON is malformed or has the wrong shape.
    #[error("invalid tokenizer JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The tokenizer file names a format or version this build does not read.
    #[error("unsupported tokenizer format {format:?} version {version} (this build reads {expected:?} version 1)")]
    UnsupportedFormat {
        /// The `format` field found.
        format: String,
        /// The `version` field found.
        version: u64,
        /// The format name this build reads.
        expected: &'static str,
    },
    /// The pre-tokenization pattern does not compile.
    #[error("pre-tokenization pattern {pattern:?} does not compile: {message}")]
    Pattern {
        /// The pattern as given.
        pattern: String,
        /// The regex engine's message.
        message: String,
    },
    /// `byte_ids` is not a permutation of 0..256.
    #[error("byte_ids must be a permutation of 0..256: {reason}")]
    ByteIds {
        /// What is wrong (length, duplicate, out of range).
        reason: String,
    },
    /// A merge refers to a token that does not exist (yet) at its rank.
    #[error("merge {rank} ({left}, {right}): {reason}")]
    BadMerge {
        /// Rank (0-based position) of the merge; it creates id 256 + rank.
        rank: usize,
        /// Left token id.
        left: u32,
        /// Right token id.
        right: u32,
        /// What is wrong.
        reason: String,
    },
    /// A merge would create a token longer than the loader accepts.
    #[error("merge {rank} creates a token of {len} bytes; the limit is {max}")]
    TokenTooLong {
        /// Rank of the merge.
        rank: usize,
        /// Length in bytes of the token it would create.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// More tokens than this crate accepts.
    #[error("{count} {what}; at most {max} are accepted")]
    TooMany {
        /// What was counted (merges, special tokens, bytes of vocabulary).
        what: &'static str,
        /// How many were found.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A special token is defined twice, or has an empty text.
    #[error("special token {text:?}: {reason}")]
    BadSpecial {
        /// The special token's text.
        text: String,
        /// What is wrong (duplicate text, duplicate role, empty).
        reason: String,
    },
    /// Special-token ids must follow the merges without gaps.
    #[error("special token {text:?} has id {id}, expected {expected} (ids must follow the merges, without gaps)")]
    SpecialId {
        /// The special token's text.
        text: String,
        /// Its id in the file.
        id: u64,
        /// The id it must have.
        expected: u64,
    },
    /// A role of [`crate::Special`] has no token.
    #[error("no special token has the role {role}")]
    MissingRole {
        /// The missing role, as written in files.
        role: &'static str,
    },
    /// An id passed to decode is not in the vocabulary.
    #[error("token id {id} is out of range for a vocabulary of {vocab_size}")]
    UnknownId {
        /// The offending id.
        id: u32,
        /// The vocabulary size (ids are `0..vocab_size`).
        vocab_size: usize,
    },
    /// Decoded bytes are not valid UTF-8.
    #[error("decoded bytes are not valid UTF-8 (valid up to byte {valid_up_to})")]
    InvalidUtf8 {
        /// Length of the longest valid prefix.
        valid_up_to: usize,
    },
    /// A training configuration that cannot work.
    #[error("bad training config: {0}")]
    TrainConfig(String),
    /// A GPT-2 `encoder.json` / `vocab.bpe` or a tiktoken rank file is malformed.
    #[error("line {line}: {message}")]
    Vocab {
        /// 1-based line in the file (0 when it concerns the file as a whole).
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A conversation (or prompt) that a chat template cannot render: it breaks the rules of
    /// `chatforge_data::conversation::Conversation::validate` (empty, roles out of order, empty
    /// content, a training conversation not ending with the assistant, a prompt not ending with
    /// the user).
    #[error("cannot render conversation: {reason}")]
    InvalidConversation {
        /// What is wrong, naming the message by its 0-based index.
        reason: String,
    },
    /// A chat template needs a special token this tokenizer does not have.
    #[error(
        "the {template} chat template needs the special token {text:?}, which this tokenizer \
         lacks (add it as an extra special token, or use the native template)"
    )]
    MissingTemplateToken {
        /// The template's name as written in configs (`"chatml"`).
        template: &'static str,
        /// The exact text of the missing special token.
        text: &'static str,
    },
}

impl Error {
    /// Attaches a path to an error raised while reading that file.
    pub(crate) fn in_file(self, path: impl Into<PathBuf>) -> Error {
        match self {
            e @ (Error::Io { .. } | Error::File { .. }) => e,
            e => Error::File {
                path: path.into(),
                source: Box::new(e),
            },
        }
    }
}

/// Result with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
