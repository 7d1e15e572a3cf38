//! Hand-written matchers for the two built-in split patterns, about 15 times faster than the
//! backtracking regex and producing exactly the chunks that an unbounded leftmost-first
//! (backtracking) match of the pattern produces, which is what `fancy-regex` and tiktoken do.
//!
//! Both patterns match some alternative at every position (every character is a letter, a
//! number, white space or "other"), so chunks are contiguous and each one is decided by
//! trying the alternatives in order at the current position. How each alternative reduces to
//! a scan is written next to it below; the property and whole-corpus tests in
//! `tests/pretokenize_parity.rs` compare every chunk with `fancy-regex`.
//!
//! Unlike the generic regex path, nothing here looks at a bounded window, so a 1 MB run of one
//! letter is one chunk, as tiktoken makes it. Every scan moves forward only, so splitting is
//! linear in the text.

use super::classes::{Class, ClassTable};
use super::{GPT2_PATTERN, GPT4_PATTERN};

/// Which built-in pattern a [`FastSplitter`] implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Builtin {
    /// [`GPT2_PATTERN`].
    Gpt2,
    /// [`GPT4_PATTERN`].
    Gpt4,
}

/// A hand-written matcher for one of the built-in patterns.
#[derive(Clone, Copy)]
pub(crate) struct FastSplitter {
    kind: Builtin,
    table: &'static ClassTable,
}

impl std::fmt::Debug for FastSplitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastSplitter")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl FastSplitter {
    /// The matcher for `pattern` if it is (byte for byte) one of the built-in patterns.
    pub(crate) fn for_pattern(pattern: &str) -> Option<FastSplitter> {
        let kind = if pattern == GPT2_PATTERN {
            Builtin::Gpt2
        } else if pattern == GPT4_PATTERN {
            Builtin::Gpt4
        } else {
            return None;
        };
        Some(FastSplitter {
            kind,
            table: ClassTable::get()?,
        })
    }

    /// Calls `f` on each chunk of `text`, in order; the chunks concatenate to `text`.
    #[inline]
    pub(crate) fn for_each_chunk<'t>(&self, text: &'t str, mut f: impl FnMut(&'t str)) {
        let t = self.table;
        let mut pos = 0;
        while pos < text.len() {
            let end = match self.kind {
                Builtin::Gpt2 => gpt2_end(t, text, pos),
                Builtin::Gpt4 => gpt4_end(t, text, pos),
            };
            // Every branch consumes at least one character; the guard keeps a bug from
            // turning into an endless loop.
            let end = if end > pos {
                end
            } else {
                pos + t.at(text, pos).1
            };
            f(&text[pos..end]);
            pos = end;
        }
    }
}

/// End of the chunk starting at `i` under
/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`.
#[inline]
fn gpt2_end(t: &ClassTable, s: &str, i: usize) -> usize {
    let bytes = s.as_bytes();
    let b = bytes[i];
    // `'s|'t|'re|'ve|'m|'ll|'d`, case-sensitive; no two of them match at once.
    if b == b'\'' {
        let n = match bytes.get(i + 1..i + 3).unwrap_or(&bytes[i + 1..]) {
            [b's' | b't' | b'm' | b'd', ..] => 1,
            [b'r' | b'v', b'e'] | [b'l', b'l'] => 2,
            _ => 0,
        };
        if n > 0 {
            return i + 1 + n;
        }
    }
    // ` ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+`: the three classes are disjoint and none holds
    // the space, so an optional space then a maximal run of the class of the character after
    // it. Without the space the same holds for the character at `i`.
    let start = if b == b' ' && i + 1 < bytes.len() {
        i + 1
    } else {
        i
    };
    let (class, _) = t.at(s, start);
    if class != Class::Space {
        return run_end(t, s, start, class);
    }
    // Here the character at `i` is white space (a lone space before white space or the end
    // falls through too).
    let run = SpaceRun::scan(t, s, i);
    run.lookahead_end(s.len())
}

/// End of the chunk starting at `i` under [`GPT4_PATTERN`]:
/// `'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+`.
#[inline]
fn gpt4_end(t: &ClassTable, s: &str, i: usize) -> usize {
    let bytes = s.as_bytes();
    let b = bytes[i];
    if b == b'\'' {
        if let Some(n) = gpt4_contraction(&bytes[i + 1..]) {
            return i + 1 + n;
        }
    }
    let (class, len) = t.at(s, i);
    match class {
        // `[^\r\n\p{L}\p{N}]?+\p{L}+` with the optional part empty (it cannot take a letter).
        Class::Letter => return run_end(t, s, i, Class::Letter),
        // `\p{N}{1,3}` (the letter alternative needs a letter at `i` or `i + 1`, and a number
        // is neither taken by `[^\r\n\p{L}\p{N}]` nor a letter).
        Class::Number => return number_end(t, s, i),
        Class::Other | Class::Space => {}
    }
    let next = i + len;
    let next_class = (next < bytes.len()).then(|| t.at(s, next).0);
    // `[^\r\n\p{L}\p{N}]?+\p{L}+`: one non-letter, non-number, non-newline character, then
    // letters. Possessiveness changes nothing: giving the character back would need it to be
    // a letter.
    if b != b'\r' && b != b'\n' && next_class == Some(Class::Letter) {
        return run_end(t, s, next, Class::Letter);
    }
    // ` ?[^\s\p{L}\p{N}]++[\r\n]*`: a maximal run of "other" (after an optional space), then
    // a maximal run of CR/LF (disjoint from "other", so possessiveness changes nothing).
    let other_start = if class == Class::Other {
        Some(i)
    } else if b == b' ' && next_class == Some(Class::Other) {
        Some(next)
    } else {
        None
    };
    if let Some(start) = other_start {
        let end = run_end(t, s, start, Class::Other);
        let newlines = bytes[end..]
            .iter()
            .take_while(|&&b| b == b'\r' || b == b'\n')
            .count();
        return end + newlines;
    }
    // The character at `i` is white space.
    let run = SpaceRun::scan(t, s, i);
    // `\s*[\r\n]`: `\s*` takes the whole run and backs off to its last CR or LF.
    if let Some(end) = run.newline_end {
        return end;
    }
    run.lookahead_end(s.len())
}

/// The length of a GPT-4 contraction suffix at the start of `rest` (the bytes after an
/// apostrophe): `(?i:[sdmt]|ll|ve|re)` under Unicode simple case folding, where the only
/// non-ASCII character involved is U+017F LATIN SMALL LETTER LONG S, which folds to `s`
/// (checked against `fancy-regex` for every character by a test).
#[inline]
fn gpt4_contraction(rest: &[u8]) -> Option<usize> {
    let first = *rest.first()?;
    match first.to_ascii_lowercase() {
        b's' | b'd' | b'm' | b't' => Some(1),
        b'l' | b'v' | b'r' => {
            let second = rest.get(1)?.to_ascii_lowercase();
            let ok = matches!(
                (first.to_ascii_lowercase(), second),
                (b'l', b'l') | (b'v', b'e') | (b'r', b'e')
            );
            ok.then_some(2)
        }
        _ if rest.starts_with("\u{17f}".as_bytes()) => Some(2),
        _ => None,
    }
}

/// End of the maximal run of `class` characters starting at `i`.
#[inline(always)]
fn run_end(t: &ClassTable, s: &str, mut i: usize, class: Class) -> usize {
    let bytes = s.as_bytes();
    while let Some(&b) = bytes.get(i) {
        if b < 0x80 {
            if t.ascii(b) != class {
                break;
            }
            i += 1;
        } else {
            let (c, n) = t.at(s, i);
            if c != class {
                break;
            }
            i += n;
        }
    }
    i
}

/// End of `\p{N}{1,3}` at `i` (the character at `i` is a number).
#[inline]
fn number_end(t: &ClassTable, s: &str, mut i: usize) -> usize {
    for _ in 0..3 {
        if i >= s.len() {
            break;
        }
        let (c, n) = t.at(s, i);
        if c != Class::Number {
            break;
        }
        i += n;
    }
    i
}

/// A maximal run of white space starting at a white-space character.
struct SpaceRun {
    /// Byte offset of the run's first character.
    start: usize,
    /// Byte offset just past the run.
    end: usize,
    /// Byte offset of the run's last character.
    last: usize,
    /// Byte offset just past the run's last CR or LF, if it has one.
    newline_end: Option<usize>,
}

impl SpaceRun {
    #[inline]
    fn scan(t: &ClassTable, s: &str, start: usize) -> SpaceRun {
        let bytes = s.as_bytes();
        let (mut i, mut last, mut newline_end) = (start, start, None);
        while let Some(&b) = bytes.get(i) {
            let (c, n) = t.at(s, i);
            if c != Class::Space {
                break;
            }
            if b == b'\r' || b == b'\n' {
                newline_end = Some(i + 1);
            }
            last = i;
            i += n;
        }
        SpaceRun {
            start,
            end: i,
            last,
            newline_end,
        }
    }

    /// End under `\s+(?!\S)|\s+`: the whole run if it reaches the end of the text (where
    /// `(?!\S)` holds); otherwise a non-space follows, so `\s+` backs off one character, which
    /// leaves a match if the run has two or more characters; else `\s+` takes the one.
    #[inline]
    fn lookahead_end(&self, text_len: usize) -> usize {
        if self.end < text_len && self.last > self.start {
            self.last
        } else {
            self.end
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(kind: Builtin, text: &str) -> Vec<&str> {
        let pattern = match kind {
            Builtin::Gpt2 => GPT2_PATTERN,
            Builtin::Gpt4 => GPT4_PATTERN,
        };
        let fast = FastSplitter::for_pattern(pattern).unwrap();
        let mut out = Vec::new();
        fast.for_each_chunk(text, |c| out.push(c));
        out
    }

    #[test]
    fn only_the_exact_builtin_patterns_are_taken() {
        assert!(FastSplitter::for_pattern(GPT2_PATTERN).is_some());
        assert!(FastSplitter::for_pattern(GPT4_PATTERN).is_some());
        assert!(FastSplitter::for_pattern(&format!("{GPT4_PATTERN}|x")).is_none());
        assert!(FastSplitter::for_pattern("").is_none());
    }

    /// Chunks worked out by hand from the patterns.
    #[test]
    fn hand_checked_chunks() {
        use Builtin::{Gpt2, Gpt4};
        let cases: &[(Builtin, &str, &[&str])] = &[
            (Gpt2, "I'm 'S x's", &["I", "'m", " '", "S", " x", "'s"]),
            (
                Gpt4,
                "I'M 'Sx 'll'LL",
                &["I", "'M", " '", "Sx", " '", "ll", "'LL"],
            ),
            (Gpt4, "'\u{17f}s", &["'\u{17f}", "s"]),
            (Gpt2, "a  \n b", &["a", "  \n", " b"]),
            (Gpt4, "a  \n b", &["a", "  \n", " b"]),
            (Gpt4, "a \n\r\n  \tb", &["a", " \n\r\n", "  ", "\tb"]),
            (Gpt4, "1234567 12", &["123", "456", "7", " ", "12"]),
            (Gpt2, "1234567 12", &["1234567", " 12"]),
            (
                Gpt4,
                "x!!\r\n\r\ny ?!\n",
                &["x", "!!\r\n\r\n", "y", " ?!\n"],
            ),
            (
                Gpt2,
                "x!!\r\n\r\ny ?!\n",
                &["x", "!!", "\r\n\r", "\n", "y", " ?!", "\n"],
            ),
            (
                Gpt2,
                "\u{3000}\u{3000}x  ",
                &["\u{3000}", "\u{3000}", "x", "  "],
            ),
            (
                Gpt4,
                "\u{3000}\u{3000}x  ",
                &["\u{3000}", "\u{3000}x", "  "],
            ),
            (Gpt4, "\nx", &["\n", "x"]),
            (Gpt4, "é\u{301}e", &["é", "\u{301}e"]),
            (Gpt2, "é\u{301}e", &["é", "\u{301}", "e"]),
            (Gpt2, " ", &[" "]),
            (Gpt4, " 😀👍 ", &[" 😀👍", " "]),
        ];
        for &(kind, text, expect) in cases {
            assert_eq!(split(kind, text), expect, "{kind:?} on {text:?}");
        }
    }

    /// The case-insensitive contraction letters: every character that `(?i:[sdmtlver])`
    /// matches in `fancy-regex` is an ASCII letter of that set in either case, or U+017F.
    #[test]
    fn contraction_case_folding_is_complete() {
        let re = fancy_regex::Regex::new(r"\A(?i:[sdmtlver])\z").unwrap();
        let mut buf = [0u8; 4];
        let mut matched = Vec::new();
        for c in (0..0x11_0000).filter_map(char::from_u32) {
            if re.is_match(c.encode_utf8(&mut buf)).unwrap() {
                matched.push(c);
            }
        }
        let mut expect: Vec<char> = "sdmtlverSDMTLVER\u{17f}".chars().collect();
        expect.sort_unstable();
        assert_eq!(matched, expect);
    }
}
