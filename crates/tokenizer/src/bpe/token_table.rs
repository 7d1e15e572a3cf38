//! A lookup from a chunk's bytes to the single token it encodes to, so that the common case
//! (most words of ordinary text are one token) skips the merge loop.
//!
//! Only tokens whose own bytes BPE-encode to exactly that one token are stored, which the
//! caller checks by running the merge loop on each token once when the tokenizer is built. A
//! chunk equal to such a token's bytes therefore encodes to it, and the lookup changes no
//! output: it is a cache with every possible hit precomputed, not an approximation (tiktoken
//! takes the same shortcut for every token, checked or not).

use rayon::prelude::*;

/// Tokens longer than this are not stored: chunks that long are rare, and the build-time check
/// stays cheap even for a hostile vocabulary.
pub(crate) const MAX_WHOLE_BYTES: usize = 32;

const EMPTY: u32 = u32::MAX;
const MUL: u64 = 0x9e37_79b9_7f4a_7c15;

/// One slot. Tokens of up to 8 bytes are stored inline (`key` holds the bytes, zero-padded),
/// so a hit needs no second memory access; longer ones store their hash and are compared with
/// the token's bytes on a hit.
#[derive(Debug, Clone, Copy)]
struct Slot {
    key: u64,
    id: u32,
    len: u32,
}

/// Open-addressing hash table (linear probing, load at most 1/2) from bytes to token id.
#[derive(Debug, Clone)]
pub(crate) struct TokenTable {
    slots: Vec<Slot>,
    /// `64 - log2(slots.len())`: the top bits of a hash pick the first slot.
    shift: u32,
}

impl TokenTable {
    /// Stores every token `id` of 2 to [`MAX_WHOLE_BYTES`] bytes for which
    /// `self_encodes(id, bytes)` holds (evaluated in parallel).
    pub(crate) fn build(
        tokens: &[Vec<u8>],
        self_encodes: impl Fn(u32, &[u8]) -> bool + Sync,
    ) -> TokenTable {
        let ids: Vec<u32> = (0..tokens.len())
            .into_par_iter()
            .filter(|&id| {
                let bytes = &tokens[id];
                (2..=MAX_WHOLE_BYTES).contains(&bytes.len()) && self_encodes(id as u32, bytes)
            })
            .map(|id| id as u32)
            .collect();
        let bits = (ids.len() * 2).max(16).next_power_of_two().trailing_zeros();
        let mut table = TokenTable {
            slots: vec![
                Slot {
                    key: 0,
                    id: EMPTY,
                    len: 0,
                };
                1 << bits
            ],
            shift: 64 - bits,
        };
        for id in ids {
            let bytes = &tokens[id as usize];
            let (key, hash) = key_and_hash(bytes);
            let mut i = table.first_slot(hash);
            while table.slots[i].id != EMPTY {
                i = (i + 1) & (table.slots.len() - 1);
            }
            table.slots[i] = Slot {
                key,
                id,
                len: bytes.len() as u32,
            };
        }
        table
    }

    #[inline(always)]
    fn first_slot(&self, hash: u64) -> usize {
        (hash >> self.shift) as usize
    }

    /// The id of the token whose bytes are exactly `bytes`, if it is stored. `tokens` must be
    /// the slice the table was built from.
    #[inline]
    pub(crate) fn get(&self, tokens: &[Vec<u8>], bytes: &[u8]) -> Option<u32> {
        if bytes.len() > MAX_WHOLE_BYTES {
            return None;
        }
        let (key, hash) = key_and_hash(bytes);
        let len = bytes.len() as u32;
        let mask = self.slots.len() - 1;
        let mut i = self.first_slot(hash);
        loop {
            let slot = self.slots[i];
            if slot.id == EMPTY {
                return None;
            }
            if slot.key == key
                && slot.len == len
                && (len <= 8 || tokens.get(slot.id as usize).map(Vec::as_slice) == Some(bytes))
            {
                return Some(slot.id);
            }
            i = (i + 1) & mask;
        }
    }
}

/// The slot key (inline bytes, or the hash for long tokens) and the hash of `bytes`.
#[inline(always)]
fn key_and_hash(bytes: &[u8]) -> (u64, u64) {
    if bytes.len() <= 8 {
        let word = le_word(bytes);
        let hash = (word ^ ((bytes.len() as u64) << 59)).wrapping_mul(MUL);
        (word, hash ^ (hash >> 29).wrapping_mul(MUL))
    } else {
        let mut h = bytes.len() as u64;
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            h = (h.rotate_left(23) ^ le_word(w)).wrapping_mul(MUL);
        }
        h = (h.rotate_left(23) ^ le_word(words.remainder())).wrapping_mul(MUL);
        (h, h)
    }
}

/// Up to 8 bytes as a little-endian word, zero-padded. Reads two overlapping fixed-size
/// pieces (the first and the last 4 or 2 bytes) instead of copying a variable length, which
/// would be a `memcpy` call and a store-forwarding stall on this hot path.
#[inline(always)]
fn le_word(b: &[u8]) -> u64 {
    let n = b.len();
    let u32_at = |i: usize| u64::from(u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]));
    let u16_at = |i: usize| u64::from(u16::from_le_bytes([b[i], b[i + 1]]));
    match n {
        0 => 0,
        1 => u64::from(b[0]),
        2..=3 => u16_at(0) | u16_at(n - 2) << ((n - 2) * 8),
        4..=7 => u32_at(0) | u32_at(n - 4) << ((n - 4) * 8),
        _ => u32_at(0) | u32_at(4) << 32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn le_word_is_the_zero_padded_bytes() {
        let bytes = [0x11u8, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88];
        for n in 0..=8 {
            let mut padded = [0u8; 8];
            padded[..n].copy_from_slice(&bytes[..n]);
            assert_eq!(
                le_word(&bytes[..n]),
                u64::from_le_bytes(padded),
                "{n} bytes"
            );
        }
    }

    #[test]
    fn finds_exactly_the_kept_tokens() {
        let mut tokens: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        let words: [&[u8]; 7] = [
            b"ab",
            b"a\0",
            b"abcdefgh",
            b"abcdefghi",
            b"abcdefghj",
            b"0123456789abcdef0123456789abcdef",
            b"0123456789abcdef0123456789abcdefX",
        ];
        tokens.extend(words.iter().map(|w| w.to_vec()));
        // Keep all but "abcdefghj" (id 260), as if it did not encode to itself.
        let table = TokenTable::build(&tokens, |id, _| id != 260);
        assert_eq!(table.get(&tokens, b"ab"), Some(256));
        assert_eq!(table.get(&tokens, b"a\0"), Some(257));
        assert_eq!(
            table.get(&tokens, b"a"),
            None,
            "single bytes are not stored"
        );
        assert_eq!(
            table.get(&tokens, b"a\0\0"),
            None,
            "length is part of the key"
        );
        assert_eq!(table.get(&tokens, b"abcdefgh"), Some(258));
        assert_eq!(table.get(&tokens, b"abcdefghi"), Some(259));
        assert_eq!(table.get(&tokens, b"abcdefghj"), None, "not kept");
        assert_eq!(table.get(&tokens, b"abcdefghk"), None, "not a token");
        assert_eq!(table.get(&tokens, words[5]), Some(261));
        assert_eq!(
            table.get(&tokens, words[6]),
            None,
            "longer than MAX_WHOLE_BYTES"
        );
        assert_eq!(table.get(&tokens, b""), None);
    }
}
