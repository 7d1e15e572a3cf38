//! Pre-tokenization: cutting text into chunks with a regex before BPE, so that merges never
//! cross chunk boundaries (words, numbers, punctuation runs, whitespace).
//!
//! The pattern is data (saved in the tokenizer file). Two are built in: [`GPT4_PATTERN`]
//! (cl100k, the default for training) and [`GPT2_PATTERN`]. Patterns are compiled with
//! `fancy-regex` because both use a look-ahead (`\s+(?!\S)`).
//!
//! When the pattern is byte for byte one of the two built-in ones, a hand-written matcher
//! (`fast`, over the character classes of `classes`) replaces the regex engine: same chunks,
//! about 15 times faster on English text. Any other pattern goes through `fancy-regex`.
//!
//! The splitter never loses text: stretches the pattern does not match become chunks of
//! their own, and if the regex engine gives up on some input (fancy-regex's backtracking limit),
//! the rest of the current search window becomes a chunk and matching resumes after it. Chunking only
//! decides where merges may happen, so `decode(encode(s)) == s` holds either way.

mod classes;
mod fast;

use crate::error::{Error, Result};
use fast::FastSplitter;

/// The GPT-4 (cl100k_base) split pattern, as published in OpenAI's tiktoken.
pub const GPT4_PATTERN: &str = r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+";

/// The GPT-2 split pattern, as published in OpenAI's `encoder.py`.
pub const GPT2_PATTERN: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// Backtracking budget per match. fancy-regex's default (1e6) is far more than the built-in
/// patterns need (their look-ahead backtracks at most one character), so hitting it means a
/// hostile pattern; the splitter then falls back to one-character chunks.
const BACKTRACK_LIMIT: usize = 1_000_000;

/// Bytes of text one regex search may look at (see [`Splitter::for_each_chunk`]).
pub const WINDOW: usize = 1 << 16;

/// A compiled pre-tokenization pattern.
#[derive(Debug, Clone)]
pub struct Splitter {
    regex: fancy_regex::Regex,
    /// The hand-written matcher, for the built-in patterns.
    fast: Option<FastSplitter>,
}

impl Splitter {
    /// Compiles `pattern`.
    pub fn new(pattern: &str) -> Result<Splitter> {
        let regex = fancy_regex::RegexBuilder::new(pattern)
            .backtrack_limit(BACKTRACK_LIMIT)
            .build()
            .map_err(|e| Error::Pattern {
                pattern: pattern.to_string(),
                message: e.to_string(),
            })?;
        Ok(Splitter {
            regex,
            fast: FastSplitter::for_pattern(pattern),
        })
    }

    /// Whether chunks come from the hand-written matcher of a built-in pattern
    /// ([`GPT2_PATTERN`], [`GPT4_PATTERN`]) rather than from the regex engine.
    pub fn is_builtin_fast_path(&self) -> bool {
        self.fast.is_some()
    }

    /// The pattern's source text.
    pub fn pattern(&self) -> &str {
        self.regex.as_str()
    }

    /// Calls `f` on each chunk of `text`, in order; the chunks concatenate to `text`.
    ///
    /// For the built-in patterns the chunks are exactly those of an unbounded match of the
    /// pattern over the whole text (what tiktoken produces), found by a linear scan.
    ///
    /// For other patterns, matching runs on windows of at most [`WINDOW`] bytes, so the
    /// backtracking engine's work and stack per step are bounded and long inputs stay linear.
    /// The window's end looks like the end of the text to the regex, so a match that reaches it
    /// is not trusted: it is retried in a window starting where it starts, and only a match
    /// that fills a whole window is cut there. Chunks longer than a window (64 KiB of one
    /// letter, say) are therefore cut where an unbounded regex would not cut them. A pattern
    /// whose every alternative a truncated text can only shorten (such as the built-in ones
    /// spelled differently) chunks other text exactly as the regex says; a pattern whose choice
    /// depends on more than the next character may, rarely, chunk differently at a window
    /// boundary (encoding still round-trips).
    pub fn for_each_chunk<'t>(&self, text: &'t str, mut f: impl FnMut(&'t str)) {
        if let Some(fast) = &self.fast {
            return fast.for_each_chunk(text, f);
        }
        let mut pos = 0;
        while pos < text.len() {
            let end = floor_char_boundary(text, (pos + WINDOW).min(text.len()));
            let end = if end > pos {
                end
            } else {
                next_char_end(text, pos)
            };
            let window_cut = end < text.len();
            // A slice, not a `RegexInput` range: with a range, fancy-regex lets delegated
            // sub-matches run to the end of the whole text and then backtracks, which is
            // quadratic on a long run of letters.
            match self.regex.find_from_pos(&text[..end], pos) {
                Ok(Some(m)) => {
                    let (start, stop) = (m.start(), m.end());
                    if start > pos {
                        f(&text[pos..start]); // text the pattern does not match
                        if window_cut && stop == end {
                            pos = start; // the match may continue past the window: retry
                            continue;
                        }
                    }
                    let stop = if stop > start {
                        stop
                    } else {
                        next_char_end(text, start)
                    };
                    f(&text[start..stop]);
                    pos = stop;
                }
                Ok(None) if window_cut => {
                    // No match starts in this window; one may start in its second half and
                    // end past it, so only the first half is given up as unmatched text.
                    let half = floor_char_boundary(text, pos + WINDOW / 2);
                    let half = if half > pos { half } else { end };
                    f(&text[pos..half]);
                    pos = half;
                }
                Ok(None) => {
                    f(&text[pos..]);
                    pos = text.len();
                }
                Err(_) => {
                    // The engine gave up (backtracking limit): the window is one chunk.
                    f(&text[pos..end]);
                    pos = end;
                }
            }
        }
    }

    /// The chunks of `text`, in order.
    pub fn split<'t>(&self, text: &'t str) -> Vec<&'t str> {
        let mut out = Vec::new();
        self.for_each_chunk(text, |c| out.push(c));
        out
    }
}

/// The largest char boundary `<= at` (`at <= text.len()`).
fn floor_char_boundary(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// Byte offset just past the character starting at `pos` (`pos < text.len()`).
fn next_char_end(text: &str, pos: usize) -> usize {
    text[pos..]
        .chars()
        .next()
        .map_or(text.len(), |c| pos + c.len_utf8())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt4_chunks() {
        let s = Splitter::new(GPT4_PATTERN).unwrap();
        assert_eq!(
            s.split("Hello world's 12345 tokens!!\n\n  x  "),
            ["Hello", " world", "'s", " ", "123", "45", " tokens", "!!\n\n", " ", " x", "  "]
        );
    }

    #[test]
    fn gpt2_chunks() {
        let s = Splitter::new(GPT2_PATTERN).unwrap();
        assert_eq!(
            s.split("Hello world's 12345 tokens!!\n\n  x  "),
            ["Hello", " world", "'s", " 12345", " tokens", "!!", "\n\n ", " x", "  "]
        );
    }

    #[test]
    fn gaps_and_empty_matches_keep_text() {
        let s = Splitter::new("a+").unwrap();
        assert_eq!(s.split("xaay"), ["x", "aa", "y"]);
        let s = Splitter::new("a*").unwrap();
        assert_eq!(s.split("xaéy").concat(), "xaéy");
    }

    #[test]
    fn bad_pattern_is_an_error() {
        assert!(matches!(
            Splitter::new("(unclosed"),
            Err(Error::Pattern { .. })
        ));
    }
}
