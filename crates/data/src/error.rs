//! The one error type of `chatforge-data`. Every variant carries what a user needs to act on it:
//! the file, the line, the byte offset, the field, the numbers that disagree.

use std::path::PathBuf;

/// `Result` with this crate's [`enum@Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong reading or writing corpora, shards and worlds.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An input path does not exist.
    #[error("{}: no such file or directory", path.display())]
    NotFound {
        /// The missing path.
        path: PathBuf,
    },

    /// Any other I/O failure, with the path it happened on.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory being read or written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A corpus input is neither `.txt`, `.jsonl` nor a directory.
    #[error("{}: unsupported corpus file (expected a .txt or .jsonl file, or a directory)", path.display())]
    UnsupportedFormat {
        /// The offending path.
        path: PathBuf,
    },

    /// A corpus directory holds no `.txt` or `.jsonl` file.
    #[error("{}: directory holds no .txt or .jsonl files", path.display())]
    NoInputFiles {
        /// The directory.
        path: PathBuf,
    },

    /// Bytes that are not UTF-8. `offset` counts bytes from the start of the file.
    #[error("{}:{line}: invalid UTF-8 at byte offset {offset}", path.display())]
    InvalidUtf8 {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// 0-based byte offset of the first invalid byte, from the start of the file.
        offset: u64,
    },

    /// A JSONL line that is not a JSON object.
    #[error("{}:{line}: bad JSON: {message}", path.display())]
    BadJson {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// The parser's message.
        message: String,
    },

    /// A JSONL record without a `"text"` field.
    #[error("{}:{line}: record has no \"text\" field", path.display())]
    MissingText {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
    },

    /// A JSONL record whose `"text"` is not a string.
    #[error("{}:{line}: \"text\" is {found}, expected a string", path.display())]
    TextNotString {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// The JSON type that was found ("a number", "null", ...).
        found: &'static str,
    },

    /// A document handed to the `.txt` writer that would not read back as itself.
    #[error("document {index}: {reason}")]
    UnwritableDocument {
        /// Index of the document in the slice given to the writer.
        index: usize,
        /// Why it cannot be written.
        reason: &'static str,
    },

    /// A shard file shorter than its fixed header.
    #[error("{}: truncated shard header ({len} bytes, need {need})", path.display())]
    ShardTruncatedHeader {
        /// The shard.
        path: PathBuf,
        /// The file's length in bytes.
        len: u64,
        /// The header's length in bytes.
        need: u64,
    },

    /// A shard file that does not start with the shard magic.
    #[error("{}: not a chatforge shard (magic {found:?})", path.display())]
    ShardBadMagic {
        /// The shard.
        path: PathBuf,
        /// The first eight bytes found.
        found: [u8; 8],
    },

    /// A shard format version this build cannot read.
    #[error("{}: unsupported shard version {version} (this build reads {supported})", path.display())]
    ShardVersion {
        /// The shard.
        path: PathBuf,
        /// The version in the header.
        version: u32,
        /// The version this build reads.
        supported: u32,
    },

    /// A shard token width other than 2 (u16) or 4 (u32) bytes.
    #[error("{}: unsupported shard dtype {dtype} (expected 2 for u16 or 4 for u32)", path.display())]
    ShardDtype {
        /// The shard.
        path: PathBuf,
        /// The dtype field of the header.
        dtype: u32,
    },

    /// The header's token count disagrees with the size of the body.
    #[error(
        "{}: header says {count} tokens of {dtype} bytes but the body holds {body_bytes} bytes",
        path.display()
    )]
    ShardSizeMismatch {
        /// The shard.
        path: PathBuf,
        /// Token count from the header.
        count: u64,
        /// Bytes per token from the header.
        dtype: u32,
        /// Bytes after the header.
        body_bytes: u64,
    },

    /// A token id that does not fit the vocabulary given to the shard writer.
    #[error("token {token} at position {index} is out of range for vocab_size {vocab_size}")]
    TokenOutOfRange {
        /// Position in the token slice.
        index: usize,
        /// The token id.
        token: u32,
        /// The vocabulary size given.
        vocab_size: usize,
    },

    /// A vocabulary size of zero, or one too large for u32 token ids.
    #[error("invalid vocab_size {vocab_size} (must be 1..=2^32)")]
    InvalidVocabSize {
        /// The vocabulary size given.
        vocab_size: usize,
    },

    /// A token range outside a shard.
    #[error("token range {start}..{end} is out of bounds for a shard of {len} tokens")]
    RangeOutOfBounds {
        /// Range start.
        start: usize,
        /// Range end (exclusive).
        end: usize,
        /// Number of tokens in the shard.
        len: usize,
    },

    /// A `WorldConfig` field outside its allowed range.
    #[error("invalid world config: {field} {reason}")]
    InvalidWorldConfig {
        /// The field name as written in the config file.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// A `world.json` that is not valid JSON for a [`crate::world::World`].
    #[error("{}: {source}", path.display())]
    WorldJson {
        /// The file.
        path: PathBuf,
        /// The parser's error (with line and column).
        #[source]
        source: serde_json::Error,
    },

    /// A world whose facts contradict each other (an index out of range, a one-sided friendship).
    #[error("invalid world: {what}")]
    InvalidWorld {
        /// What is inconsistent.
        what: String,
    },

    /// A conversation that breaks the rules of
    /// [`Conversation::validate`](crate::conversation::Conversation::validate).
    #[error("invalid conversation: {reason}")]
    InvalidConversation {
        /// What is wrong, naming the message by its 0-based index.
        reason: String,
    },

    /// A JSONL conversation record that is not usable: no `"messages"`, a malformed message,
    /// an unknown role, empty content, or messages in the wrong order.
    #[error("{}:{line}: {reason}", path.display())]
    BadConversation {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        reason: String,
    },

    /// A conversation handed to the writer that would not read back (it is not valid).
    #[error("conversation {index}: {reason}")]
    UnwritableConversation {
        /// Index of the conversation in the slice given to the writer.
        index: usize,
        /// What is wrong.
        reason: String,
    },

    /// A line of a task file that is not a task.
    #[error("{}:{line}: bad task: {message}", path.display())]
    BadTask {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// The parser's message.
        message: String,
    },
    /// A JSONL ranking record that is not usable: a missing or mistyped field, an unknown
    /// field, a bad prompt, an empty response, K outside 2..=9, a ranking that is not a
    /// permutation of the responses, `"chosen"` equal to `"rejected"`.
    #[error("{}:{line}: {reason}", path.display())]
    BadRanking {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        reason: String,
    },

    /// A ranking handed to the writer that would not read back (it is not valid).
    #[error("ranking record not written: {reason}")]
    UnwritableRanking {
        /// What is wrong.
        reason: String,
    },

    /// A JSONL prompt record that is not usable: a missing or mistyped field, an unknown
    /// field, a bad prompt, an empty reference, a task that does not parse.
    #[error("{}:{line}: {reason}", path.display())]
    BadPrompt {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        reason: String,
    },

    /// A prompt record handed to the writer that would not read back (it is not valid).
    #[error("prompt {index}: {reason}")]
    UnwritablePrompt {
        /// Index of the record in the slice given to the writer.
        index: usize,
        /// What is wrong.
        reason: String,
    },
}

impl Error {
    /// Wraps an I/O error with its path, turning "not found" into [`Error::NotFound`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if source.kind() == std::io::ErrorKind::NotFound {
            Error::NotFound { path }
        } else {
            Error::Io { path, source }
        }
    }
}
