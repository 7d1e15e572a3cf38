//! Saving and loading tokenizers as JSON, and the tokenizer's content hash.
//!
//! Format (`"format": "chatforge-bpe"`, `"version": 1`), one merge per line so that files diff
//! well:
//!
//! ```text
//! {"format":"chatforge-bpe","version":1,
//! "pattern":"'(?i:[sdmt]|ll|ve|re)|...",
//! "byte_ids":[0,1,2,...,255],
//! "merges":[
//! [32,116],
//! ...
//! [256,104]],
//! "specials":[
//! {"id":4352,"text":"<|bos|>","role":"bos"},
//! ...]}
//! ```
//!
//! `byte_ids[b]` is the id of byte `b`; merges are `[left id, right id]` in rank order, merge `r`
//! creating id `256 + r` (ids rather than byte strings: exact even if two tokens share bytes, and
//! the bytes of every token follow from them); specials list id, exact text and role (or
//! `null`). The writer's output is canonical: the same tokenizer always gives the same bytes,
//! and [`Tokenizer::hash`] is the SHA-256 of them (so `sha256sum tokenizer.json` matches it).
//!
//! Loading checks everything [`Tokenizer::from_parts`] checks and rejects unknown fields; a
//! hostile file gives a typed error, never a panic, and nothing is allocated in proportion to a
//! number read from the file (only to the file's own size, which is capped).

use std::fmt::Write as _;
use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::special::SpecialToken;
use crate::tokenizer::Tokenizer;

/// The `format` field of tokenizer files.
pub const FORMAT: &str = "chatforge-bpe";
/// Largest tokenizer file accepted.
pub const MAX_FILE_BYTES: u64 = 1 << 28;

#[derive(Deserialize)]
struct Header {
    format: String,
    version: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[allow(dead_code)]
    format: String,
    #[allow(dead_code)]
    version: u64,
    pattern: String,
    byte_ids: Vec<u32>,
    merges: Vec<(u32, u32)>,
    specials: Vec<SpecialToken>,
}

impl Tokenizer {
    /// The canonical JSON text of this tokenizer (what [`Tokenizer::save`] writes).
    pub fn to_json(&self) -> String {
        let mut s = String::with_capacity(64 + self.merges.len() * 14 + self.specials.len() * 48);
        let _ = write!(
            s,
            "{{\"format\":{},\"version\":1,\n\"pattern\":{},\n\"byte_ids\":{},\n\"merges\":[",
            json(FORMAT),
            json(self.pattern()),
            json(self.byte_ids.as_slice()),
        );
        for (i, (l, r)) in self.merges.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(s, "{sep}\n[{l},{r}]");
        }
        s.push_str("],\n\"specials\":[");
        for (i, sp) in self.specials.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(s, "{sep}\n{}", json(sp));
        }
        s.push_str("]}\n");
        s
    }

    /// Parses and validates a tokenizer from JSON text.
    pub fn from_json(text: &str) -> Result<Tokenizer> {
        let header: Header = serde_json::from_str(text)?;
        if header.format != FORMAT || header.version != 1 {
            return Err(Error::UnsupportedFormat {
                format: header.format,
                version: header.version,
                expected: FORMAT,
            });
        }
        let file: File = serde_json::from_str(text)?;
        let byte_ids: [u32; 256] =
            file.byte_ids
                .as_slice()
                .try_into()
                .map_err(|_| Error::ByteIds {
                    reason: format!("{} entries, expected 256", file.byte_ids.len()),
                })?;
        Tokenizer::from_parts(&file.pattern, byte_ids, file.merges, file.specials)
    }

    /// Writes the tokenizer to `path` atomically (temporary file, fsync, rename).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        chatforge_data::atomic::write_atomic(path, self.to_json().as_bytes()).map_err(|source| {
            Error::Io {
                path: path.to_path_buf(),
                source,
            }
        })
    }

    /// Reads and validates a tokenizer file written by [`Tokenizer::save`].
    pub fn load(path: impl AsRef<Path>) -> Result<Tokenizer> {
        let path = path.as_ref();
        let text = read_capped(path)?;
        Tokenizer::from_json(&text).map_err(|e| e.in_file(path))
    }

    /// SHA-256 (lower-case hex) of the canonical JSON: equal hashes mean equal tokenizers.
    pub fn hash(&self) -> String {
        let digest = Sha256::digest(self.to_json().as_bytes());
        digest.iter().fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    }
}

/// Reads a UTF-8 text file of at most [`MAX_FILE_BYTES`].
pub(crate) fn read_capped(path: &Path) -> Result<String> {
    let io_err = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let size = std::fs::metadata(path).map_err(io_err)?.len();
    if size > MAX_FILE_BYTES {
        return Err(Error::FileTooLarge {
            size,
            max: MAX_FILE_BYTES,
        }
        .in_file(path));
    }
    std::fs::read_to_string(path).map_err(io_err)
}

/// JSON text of a value. serde_json cannot fail on the types written here (strings, integer
/// slices, plain structs with string keys); were it ever to, `null` is written, which the
/// reader rejects, rather than panicking.
fn json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_string())
}
