//! The character classes the built-in split patterns test: `\p{L}` (letters), `\p{N}`
//! (numbers) and `\s` (white space), as one lookup from a code point to a [`Class`].
//!
//! The sets are not transcribed by hand: they are read from `regex-syntax`, the same crate (and,
//! through Cargo's version unification, the same Unicode tables) that `fancy-regex` compiles
//! the patterns with, so the hand-written matchers and the regex agree on every character. A
//! test compares the lookup with `fancy-regex` on every Unicode scalar value.

use std::collections::HashMap;
use std::sync::OnceLock;

use regex_syntax::hir::{Class as HirClass, HirKind};

/// What a built-in pattern can tell about one character. The three named sets are disjoint
/// (letters and numbers are different general categories; white space is Zs/Zl/Zp/Cc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Class {
    /// None of the below: punctuation, symbols, marks, controls, unassigned code points.
    Other = 0,
    /// `\p{L}`: general category Lu, Ll, Lt, Lm or Lo.
    Letter = 1,
    /// `\p{N}`: general category Nd, Nl or No.
    Number = 2,
    /// `\s`: the Unicode `White_Space` property.
    Space = 3,
}

impl Class {
    fn from_u8(v: u8) -> Class {
        match v {
            1 => Class::Letter,
            2 => Class::Number,
            3 => Class::Space,
            _ => Class::Other,
        }
    }
}

/// Code points per second-level block.
const SHIFT: u32 = 7;
const BLOCK: usize = 1 << SHIFT;
/// One past the largest code point.
const CODE_POINTS: u32 = 0x11_0000;

/// A two-level table from code point to [`Class`]: `blocks[index[cp >> SHIFT]][cp & mask]`.
/// Identical blocks are stored once (a few hundred distinct blocks, about 60 KB in all).
#[derive(Debug)]
pub(crate) struct ClassTable {
    ascii: [Class; 128],
    index: Vec<u16>,
    blocks: Vec<u8>,
}

impl ClassTable {
    /// The shared table, built on first use; `None` only if `regex-syntax` cannot parse the
    /// three classes (callers then keep using the regex).
    pub(crate) fn get() -> Option<&'static ClassTable> {
        static TABLE: OnceLock<Option<ClassTable>> = OnceLock::new();
        TABLE.get_or_init(ClassTable::build).as_ref()
    }

    fn build() -> Option<ClassTable> {
        // Later sets win on overlap; the sets are disjoint, which the exhaustive test checks.
        let mut ranges: Vec<(u32, u32, Class)> = Vec::new();
        for (pattern, class) in [
            (r"\p{L}", Class::Letter),
            (r"\p{N}", Class::Number),
            (r"\s", Class::Space),
        ] {
            ranges.extend(
                unicode_ranges(pattern)?
                    .into_iter()
                    .map(|(a, b)| (a, b, class)),
            );
        }
        ranges.sort_unstable_by_key(|&(start, _, _)| start);

        let mut flat = vec![Class::Other as u8; CODE_POINTS as usize];
        for (start, end, class) in ranges {
            flat[start as usize..=end as usize].fill(class as u8);
        }
        let mut ascii = [Class::Other; 128];
        for (b, slot) in ascii.iter_mut().enumerate() {
            *slot = Class::from_u8(flat[b]);
        }
        let mut seen: HashMap<&[u8], u16> = HashMap::new();
        let mut index = Vec::with_capacity(flat.len() / BLOCK);
        let mut blocks = Vec::new();
        for block in flat.chunks_exact(BLOCK) {
            let next = u16::try_from(seen.len()).ok()?;
            let id = *seen.entry(block).or_insert_with(|| {
                blocks.extend_from_slice(block);
                next
            });
            index.push(id);
        }
        Some(ClassTable {
            ascii,
            index,
            blocks,
        })
    }

    /// The class of an ASCII byte (`b < 128`; other bytes read as [`Class::Other`]).
    #[inline(always)]
    pub(crate) fn ascii(&self, b: u8) -> Class {
        self.ascii.get(b as usize).copied().unwrap_or(Class::Other)
    }

    /// The class of a character.
    #[inline]
    pub(crate) fn of(&self, c: char) -> Class {
        let cp = c as u32;
        let block = self.index[(cp >> SHIFT) as usize] as usize;
        Class::from_u8(self.blocks[block * BLOCK + (cp as usize & (BLOCK - 1))])
    }

    /// The class and UTF-8 length of the character starting at byte `i` of `s` (`i` a char
    /// boundary before the end).
    #[inline(always)]
    pub(crate) fn at(&self, s: &str, i: usize) -> (Class, usize) {
        let b = s.as_bytes()[i];
        if b < 0x80 {
            (self.ascii(b), 1)
        } else {
            self.at_multibyte(s, i)
        }
    }

    #[inline(never)]
    fn at_multibyte(&self, s: &str, i: usize) -> (Class, usize) {
        match s[i..].chars().next() {
            Some(c) => (self.of(c), c.len_utf8()),
            None => (Class::Other, 1),
        }
    }
}

/// The code point ranges (inclusive) of a one-class pattern, as `regex-syntax` parses it.
fn unicode_ranges(pattern: &str) -> Option<Vec<(u32, u32)>> {
    let hir = regex_syntax::Parser::new().parse(pattern).ok()?;
    match hir.kind() {
        HirKind::Class(HirClass::Unicode(class)) => Some(
            class
                .ranges()
                .iter()
                .map(|r| (r.start() as u32, r.end() as u32))
                .collect(),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every Unicode scalar value, classified by the table and by `fancy-regex` itself.
    #[test]
    fn table_agrees_with_fancy_regex_on_every_char() {
        let table = ClassTable::get().unwrap();
        let re = |p: &str| fancy_regex::Regex::new(&format!(r"\A{p}\z")).unwrap();
        let (letter, number, space) = (re(r"\p{L}"), re(r"\p{N}"), re(r"\s"));
        let mut counts = [0usize; 4];
        let mut buf = [0u8; 4];
        for c in (0..CODE_POINTS).filter_map(char::from_u32) {
            let s = &*c.encode_utf8(&mut buf);
            let flags = (
                letter.is_match(s).unwrap(),
                number.is_match(s).unwrap(),
                space.is_match(s).unwrap(),
            );
            let expect = match flags {
                (true, false, false) => Class::Letter,
                (false, true, false) => Class::Number,
                (false, false, true) => Class::Space,
                (false, false, false) => Class::Other,
                _ => panic!("{c:?} is in two classes: {flags:?}"),
            };
            assert_eq!(table.of(c), expect, "{c:?} (U+{:04X})", c as u32);
            assert_eq!(table.at(s, 0), (expect, s.len()), "{c:?}");
            counts[expect as usize] += 1;
        }
        // Sizes of the sets in Unicode 15/16 (regex-syntax 0.8): pinned loosely so that a
        // table that is empty or everything fails, while a Unicode update does not.
        assert!(
            (130_000..200_000).contains(&counts[Class::Letter as usize]),
            "{counts:?}"
        );
        assert!(
            (1_500..2_500).contains(&counts[Class::Number as usize]),
            "{counts:?}"
        );
        assert_eq!(
            counts[Class::Space as usize],
            25,
            "White_Space has 25 characters"
        );
    }

    #[test]
    fn ascii_classes() {
        let t = ClassTable::get().unwrap();
        assert_eq!(t.ascii(b'a'), Class::Letter);
        assert_eq!(t.ascii(b'Z'), Class::Letter);
        assert_eq!(t.ascii(b'7'), Class::Number);
        for b in [b' ', b'\t', b'\n', b'\r', 0x0b, 0x0c] {
            assert_eq!(t.ascii(b), Class::Space, "{b:#x}");
        }
        for b in [b'\'', b'_', b'!', 0u8, 0x7f] {
            assert_eq!(t.ascii(b), Class::Other, "{b:#x}");
        }
        assert_eq!(
            t.of('\u{301}'),
            Class::Other,
            "combining acute is Mn, not L"
        );
        assert_eq!(t.of('\u{2163}'), Class::Number, "Roman numeral four is Nl");
        assert_eq!(t.of('\u{3000}'), Class::Space);
        assert_eq!(
            t.of('\u{200b}'),
            Class::Other,
            "zero width space is not White_Space"
        );
    }
}
