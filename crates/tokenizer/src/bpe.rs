//! Applying merges to one pre-tokenized chunk.
//!
//! Token ids are laid out so that merge number `rank` (0-based, in training order) creates id
//! `256 + rank`; ids `0..256` are the single bytes (in an order given by the tokenizer's
//! `byte_ids`). Encoding a chunk starts from its bytes and repeatedly applies the adjacent pair
//! with the lowest merge rank, the leftmost one on a tie; this is GPT-2's `bpe()` and what
//! minbpe/nanochat do, and it reproduces the training-time segmentation exactly.
//!
//! Short chunks use a scan over cached pair ranks (O(n·m) for n bytes and m merges applied, with
//! tiny constants). Long chunks (a 1 MB run of one letter is a single regex match) use a linked
//! list plus a binary heap of candidate pairs, O(n log n), so input size cannot make encoding
//! quadratic.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

/// Chunks with more bytes than this use the heap-based merge loop.
const HEAP_THRESHOLD: usize = 128;

/// Packs an id pair into one hash key.
#[inline]
pub(crate) fn pair_key(left: u32, right: u32) -> u64 {
    (u64::from(left) << 32) | u64::from(right)
}

/// FxHash (rustc's hasher): a fast, non-cryptographic multiplicative hash. Pair lookups and
/// chunk counting are the hot loops; keys are not attacker-chosen in a way that matters here
/// (a collision flood only slows one call down).
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher(u64);

impl Hasher for FxHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            self.write_u64(u64::from_le_bytes(b));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            self.write_u64(u64::from_le_bytes(b) ^ ((rest.len() as u64) << 59));
        }
    }
    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }
    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// Hash map keyed by [`pair_key`].
pub(crate) type PairMap<V> = HashMap<u64, V, BuildHasherDefault<FxHasher>>;
/// Hash map with [`FxHasher`] for any key.
pub(crate) type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// The merge table: pair of ids → rank.
#[derive(Debug, Clone, Default)]
pub(crate) struct Merges {
    ranks: PairMap<u32>,
}

const NONE: u32 = u32::MAX;

impl Merges {
    /// Builds the table from merges in rank order. Later duplicates of a pair are ignored
    /// (the lowest rank wins, as in GPT-2's `bpe_ranks`); callers validate beforehand.
    pub(crate) fn new(merges: &[(u32, u32)]) -> Merges {
        let mut ranks = PairMap::default();
        ranks.reserve(merges.len());
        for (rank, &(l, r)) in merges.iter().enumerate() {
            ranks.entry(pair_key(l, r)).or_insert(rank as u32);
        }
        Merges { ranks }
    }

    #[inline]
    fn rank(&self, left: u32, right: u32) -> u32 {
        self.ranks
            .get(&pair_key(left, right))
            .copied()
            .unwrap_or(NONE)
    }

    /// Encodes one chunk whose bytes have already been mapped to their byte ids; appends the
    /// resulting ids to `out`.
    pub(crate) fn encode_chunk(&self, ids: &mut Vec<u32>, out: &mut Vec<u32>) {
        if ids.len() < 2 {
            out.extend_from_slice(ids);
        } else if ids.len() <= HEAP_THRESHOLD {
            self.encode_scan(ids);
            out.extend_from_slice(ids);
        } else {
            self.encode_heap(ids, out);
        }
    }

    /// The O(n·m) loop: `ranks[i]` is the rank of the pair `(ids[i], ids[i+1])`.
    fn encode_scan(&self, ids: &mut Vec<u32>) {
        let mut ranks: Vec<u32> = ids.windows(2).map(|w| self.rank(w[0], w[1])).collect();
        loop {
            let mut best = NONE;
            let mut at = 0;
            for (i, &r) in ranks.iter().enumerate() {
                if r < best {
                    best = r;
                    at = i;
                }
            }
            if best == NONE {
                return;
            }
            ids[at] = 256 + best;
            ids.remove(at + 1);
            ranks.remove(at);
            if at > 0 {
                ranks[at - 1] = self.rank(ids[at - 1], ids[at]);
            }
            if at < ranks.len() {
                ranks[at] = self.rank(ids[at], ids[at + 1]);
            }
        }
    }

    /// The O(n log n) loop over a doubly linked list. Heap entries are
    /// `(rank, left position, left id, right id)`; an entry is stale (skipped) unless the node at
    /// `left position` still holds `left id` and its successor still holds `right id`. Popping
    /// the smallest `(rank, position)` is exactly "lowest rank, leftmost on a tie", because
    /// positions keep their left-to-right order (a merge keeps the left node).
    fn encode_heap(&self, ids: &[u32], out: &mut Vec<u32>) {
        let n = ids.len();
        let mut tok = ids.to_vec();
        let mut prev: Vec<u32> = (0..n as u32).map(|i| i.wrapping_sub(1)).collect();
        let mut next: Vec<u32> = (1..=n as u32).collect();
        next[n - 1] = NONE;
        let mut heap: BinaryHeap<Reverse<(u32, u32, u32, u32)>> = BinaryHeap::with_capacity(n);
        for i in 0..n - 1 {
            let r = self.rank(tok[i], tok[i + 1]);
            if r != NONE {
                heap.push(Reverse((r, i as u32, tok[i], tok[i + 1])));
            }
        }
        while let Some(Reverse((rank, pos, left, right))) = heap.pop() {
            let p = pos as usize;
            let q = next[p];
            if tok[p] != left || q == NONE || tok[q as usize] != right {
                continue;
            }
            let merged = 256 + rank;
            tok[p] = merged;
            tok[q as usize] = NONE;
            let after = next[q as usize];
            next[p] = after;
            if after != NONE {
                prev[after as usize] = pos;
                let r = self.rank(merged, tok[after as usize]);
                if r != NONE {
                    heap.push(Reverse((r, pos, merged, tok[after as usize])));
                }
            }
            let before = prev[p];
            if before != NONE {
                let r = self.rank(tok[before as usize], merged);
                if r != NONE {
                    heap.push(Reverse((r, before, tok[before as usize], merged)));
                }
            }
        }
        let mut i = 0u32;
        while i != NONE {
            out.push(tok[i as usize]);
            i = next[i as usize];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference: recompute every pair's rank each step, apply the lowest, leftmost on ties.
    fn naive(merges: &Merges, ids: &[u32]) -> Vec<u32> {
        let mut ids = ids.to_vec();
        loop {
            let best = (0..ids.len().saturating_sub(1))
                .map(|i| (merges.rank(ids[i], ids[i + 1]), i))
                .min();
            match best {
                Some((r, i)) if r != NONE => {
                    ids[i] = 256 + r;
                    ids.remove(i + 1);
                }
                _ => return ids,
            }
        }
    }

    #[test]
    fn scan_and_heap_agree_with_naive() {
        // Merges over bytes 'a'=97, 'b'=98: ab=256, aa=257, (ab)(ab)=258, (aa)a=259, b(ab)=260.
        let merges = Merges::new(&[(97, 98), (97, 97), (256, 256), (257, 97), (98, 256)]);
        let mut rng = chatforge_data::Rng::new(7);
        for len in [0usize, 1, 2, 3, 5, 17, 130, 300, 1000] {
            for _ in 0..20 {
                let ids: Vec<u32> = (0..len).map(|_| 97 + rng.below(2) as u32).collect();
                let expect = naive(&merges, &ids);
                let mut scan = ids.clone();
                merges.encode_scan(&mut scan);
                assert_eq!(scan, expect, "scan, input {ids:?}");
                if len >= 2 {
                    let mut heap = Vec::new();
                    merges.encode_heap(&ids, &mut heap);
                    assert_eq!(heap, expect, "heap, input {ids:?}");
                }
            }
        }
    }

    #[test]
    fn leftmost_on_tie() {
        // "aaa" with only (a,a): the leftmost pair merges first.
        let merges = Merges::new(&[(97, 97)]);
        let mut ids = vec![97, 97, 97];
        merges.encode_scan(&mut ids);
        assert_eq!(ids, [256, 97]);
        let mut out = Vec::new();
        merges.encode_heap(&[97, 97, 97], &mut out);
        assert_eq!(out, [256, 97]);
    }
}
