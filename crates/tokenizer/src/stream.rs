//! Streaming decode: turn ids into text one at a time without ever emitting half a character.
//!
//! A token can end in the middle of a UTF-8 character (byte-level BPE splits emoji and CJK
//! freely). [`StreamDecoder::push`] appends the token's bytes to a small buffer and returns only
//! complete characters; the bytes of a character still being spelled out wait for the next
//! token.
//!
//! Policy for bytes that are not valid UTF-8: a byte sequence that can no longer become a valid
//! character (e.g. a lone continuation byte, or a started character followed by ASCII) is
//! emitted as one U+FFFD REPLACEMENT CHARACTER per maximal invalid sequence, the same rule as
//! `String::from_utf8_lossy`; [`StreamDecoder::finish`] does the same for an unfinished
//! character at the end. [`StreamDecoder::replacements`] counts the U+FFFD emitted for that
//! reason, so a caller that wants strict decoding can check it. With this policy the
//! concatenation of everything emitted equals `String::from_utf8_lossy(decode_bytes(ids))`.

use std::borrow::Borrow;

use crate::error::Result;
use crate::tokenizer::Tokenizer;

/// Incremental decoder over a tokenizer held by reference, `Arc`, or value.
#[derive(Debug, Clone)]
pub struct StreamDecoder<T: Borrow<Tokenizer>> {
    tokenizer: T,
    /// Bytes of an unfinished character (at most 3).
    pending: Vec<u8>,
    replacements: usize,
}

impl<T: Borrow<Tokenizer>> StreamDecoder<T> {
    /// A decoder with nothing pending.
    pub fn new(tokenizer: T) -> Self {
        StreamDecoder {
            tokenizer,
            pending: Vec::new(),
            replacements: 0,
        }
    }

    /// Adds one id; returns the text it completes (often empty while a character is
    /// unfinished). An unknown id is an error and leaves the decoder unchanged.
    pub fn push(&mut self, id: u32) -> Result<String> {
        let bytes = self.tokenizer.borrow().id_bytes(id)?;
        self.pending.extend_from_slice(bytes);
        let mut out = String::with_capacity(self.pending.len());
        let mut keep = 0;
        let mut chunks = self.pending.utf8_chunks().peekable();
        while let Some(chunk) = chunks.next() {
            out.push_str(chunk.valid());
            let invalid = chunk.invalid();
            if invalid.is_empty() {
                continue;
            }
            let at_end = chunks.peek().is_none();
            // An invalid run at the very end is either garbage or an unfinished character;
            // `from_utf8` tells them apart (`error_len() == None` means "input ended early").
            let unfinished = at_end
                && std::str::from_utf8(invalid)
                    .err()
                    .is_some_and(|e| e.error_len().is_none());
            if unfinished {
                keep = invalid.len();
            } else {
                out.push('\u{FFFD}');
                self.replacements += 1;
            }
        }
        let start = self.pending.len() - keep;
        self.pending.drain(..start);
        Ok(out)
    }

    /// Adds several ids; returns the text they complete.
    pub fn push_all(&mut self, ids: &[u32]) -> Result<String> {
        let mut out = String::new();
        for &id in ids {
            out.push_str(&self.push(id)?);
        }
        Ok(out)
    }

    /// Bytes of an unfinished character waiting for more tokens.
    pub fn pending(&self) -> &[u8] {
        &self.pending
    }

    /// Number of U+FFFD emitted so far for invalid or unfinished UTF-8.
    pub fn replacements(&self) -> usize {
        self.replacements
    }

    /// Ends the stream: returns U+FFFD if a character was left unfinished, else "". The decoder
    /// can be reused afterwards.
    pub fn finish(&mut self) -> String {
        if self.pending.is_empty() {
            String::new()
        } else {
            self.pending.clear();
            self.replacements += 1;
            "\u{FFFD}".to_string()
        }
    }
}
