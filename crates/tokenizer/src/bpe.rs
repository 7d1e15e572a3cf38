//! Applying merges to one pre-tokenized chunk.
//!
//! Token ids are laid out so that merge number `rank` (0-based, in training order) creates id
//! `256 + rank`; ids `0..256` are the single bytes (in an order given by the tokenizer's
//! `byte_ids`). Encoding a chunk starts from its bytes and repeatedly applies the adjacent pair
//! with the lowest merge rank, the leftmost one on a tie; this is GPT-2's `bpe()` and what
//! minbpe/nanochat do, and it reproduces the training-time segmentation exactly.
//!
//! Short chunks use a scan over cached pair ranks (O(n·m) for n bytes and m merges applied, with
//! tiny constants). Long chunks (a 1 MB run of one letter is a single chunk) use a linked list
//! plus per-rank buckets of candidate pairs, O(n log n), so input size cannot make encoding
//! quadratic.
//!
//! Speed: pairs of two single bytes (every pair a chunk starts with) are ranked from a dense
//! 256×256 array, other pairs from `pair_table`'s open-addressing table; the tokenizer looks
//! a chunk up in `token_table` before merging at all, since most chunks of ordinary text are
//! one token.

mod pair_table;
mod token_table;

pub(crate) use token_table::TokenTable;

use pair_table::PairTable;

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

/// Chunks with more bytes than this use the bucketed merge loop.
const LONG_THRESHOLD: usize = 128;

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
#[derive(Debug, Clone)]
pub(crate) struct Merges {
    /// Ranks of pairs of two single bytes, `byte_pairs[left << 8 | right]` (`NONE` if no merge):
    /// every pair a chunk starts with, looked up without hashing.
    byte_pairs: Box<[u32]>,
    /// Ranks of all pairs.
    ranks: PairTable,
    /// The pair of each rank.
    pairs: Vec<(u32, u32)>,
}

const NONE: u32 = u32::MAX;

/// Buffers reused across the chunks of one encode call.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    /// The chunk's ids, being merged.
    pub(crate) ids: Vec<u32>,
    /// Pair ranks for the short-chunk loop.
    ranks: Vec<u32>,
}

impl Merges {
    /// Builds the table from merges in rank order. Later duplicates of a pair are ignored
    /// (the lowest rank wins, as in GPT-2's `bpe_ranks`); callers validate beforehand.
    pub(crate) fn new(merges: &[(u32, u32)]) -> Merges {
        let mut byte_pairs = vec![NONE; 1 << 16].into_boxed_slice();
        for (rank, &(l, r)) in merges.iter().enumerate() {
            if l < 256 && r < 256 {
                let slot = &mut byte_pairs[(l << 8 | r) as usize];
                *slot = (*slot).min(rank as u32);
            }
        }
        Merges {
            byte_pairs,
            ranks: PairTable::new(merges),
            pairs: merges.to_vec(),
        }
    }

    #[inline]
    fn rank(&self, left: u32, right: u32) -> u32 {
        if (left | right) < 256 {
            return self.byte_pairs[(left << 8 | right) as usize];
        }
        self.ranks.get(left, right)
    }

    /// Encodes one chunk whose bytes have already been mapped to their byte ids
    /// (`scratch.ids`); appends the resulting ids to `out`.
    pub(crate) fn encode_chunk(&self, scratch: &mut Scratch, out: &mut Vec<u32>) {
        let ids = &mut scratch.ids;
        if ids.len() < 2 {
            out.extend_from_slice(ids);
        } else if ids.len() <= LONG_THRESHOLD {
            self.encode_scan(ids, &mut scratch.ranks);
            out.extend_from_slice(ids);
        } else {
            self.encode_long(ids, out);
        }
    }

    /// The O(n·m) loop: `ranks[i]` is the rank of the pair `(ids[i], ids[i+1])`. (Removing
    /// merged ids by shifting measured faster than leaving tombstones, at these lengths.)
    fn encode_scan(&self, ids: &mut Vec<u32>, ranks: &mut Vec<u32>) {
        ranks.clear();
        ranks.extend(ids.windows(2).map(|w| self.rank(w[0], w[1])));
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

    /// The loop for long chunks, over a doubly linked list, processing one rank at a time.
    ///
    /// A merge only ever creates pairs of a higher rank than its own (merge `r` creates id
    /// `256 + r`, and a merge may only use ids created before it), so ranks are applied in
    /// increasing order and no pair of the rank being applied appears while it is applied.
    /// Each rank therefore keeps a bucket of the left positions where its pair formed; applying
    /// it sorts the bucket and merges left to right, skipping positions whose pair is gone.
    /// That is exactly "lowest rank, leftmost on a tie", because positions keep their
    /// left-to-right order (a merge keeps the left node). Cost: O(n log n) at worst, and
    /// sequential memory access, unlike a heap of every pair (which is cache-bound on a
    /// megabyte-long chunk).
    fn encode_long(&self, ids: &[u32], out: &mut Vec<u32>) {
        let n = ids.len();
        // One array of nodes rather than three parallel ones: a merge touches a node and its
        // neighbours, so each visited node is one cache line, not three.
        let mut nodes: Vec<Node> = ids
            .iter()
            .enumerate()
            .map(|(i, &tok)| Node {
                tok,
                prev: (i as u32).wrapping_sub(1),
                next: if i + 1 < n { i as u32 + 1 } else { NONE },
            })
            .collect();
        let mut queue = RankQueue::default();
        for (i, w) in ids.windows(2).enumerate() {
            let r = self.rank(w[0], w[1]);
            if r != NONE {
                queue.push(r, i as u32);
            }
        }
        while let Some((rank, mut positions)) = queue.pop() {
            let Some(&(left, right)) = self.pairs.get(rank as usize) else {
                continue;
            };
            let merged = 256 + rank;
            positions.sort_unstable();
            for &pos in &positions {
                let p = pos as usize;
                let q = nodes[p].next;
                if nodes[p].tok != left || q == NONE || nodes[q as usize].tok != right {
                    continue; // stale: the pair was merged away (or this is a duplicate)
                }
                let after = nodes[q as usize].next;
                nodes[q as usize].tok = NONE;
                nodes[p].tok = merged;
                nodes[p].next = after;
                if after != NONE {
                    let a = &mut nodes[after as usize];
                    a.prev = pos;
                    let r = self.rank(merged, a.tok);
                    if r != NONE {
                        queue.push(r, pos);
                    }
                }
                let before = nodes[p].prev;
                if before != NONE {
                    let r = self.rank(nodes[before as usize].tok, merged);
                    if r != NONE {
                        queue.push(r, before);
                    }
                }
            }
            queue.recycle(positions);
        }
        let mut i = 0u32;
        while i != NONE {
            let node = nodes[i as usize];
            out.push(node.tok);
            i = node.next;
        }
    }
}

/// A token in the long-chunk loop's doubly linked list (`NONE` ends it).
#[derive(Clone, Copy)]
struct Node {
    tok: u32,
    prev: u32,
    next: u32,
}

/// Buckets of positions keyed by rank, popped lowest rank first.
#[derive(Default)]
struct RankQueue {
    buckets: FxMap<u32, Vec<u32>>,
    ranks: BinaryHeap<Reverse<u32>>,
    spare: Vec<Vec<u32>>,
}

impl RankQueue {
    #[inline]
    fn push(&mut self, rank: u32, pos: u32) {
        match self.buckets.entry(rank) {
            Entry::Occupied(e) => e.into_mut().push(pos),
            Entry::Vacant(e) => {
                let mut v = self.spare.pop().unwrap_or_default();
                v.push(pos);
                e.insert(v);
                self.ranks.push(Reverse(rank));
            }
        }
    }

    /// The lowest rank with its positions (unsorted, possibly repeated).
    fn pop(&mut self) -> Option<(u32, Vec<u32>)> {
        while let Some(Reverse(rank)) = self.ranks.pop() {
            if let Some(v) = self.buckets.remove(&rank) {
                return Some((rank, v));
            }
        }
        None
    }

    /// Returns a bucket's storage for reuse.
    fn recycle(&mut self, mut v: Vec<u32>) {
        v.clear();
        self.spare.push(v);
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

    fn check_against_naive(merges: &Merges, ids: &[u32]) {
        let expect = naive(merges, ids);
        let mut scan = ids.to_vec();
        merges.encode_scan(&mut scan, &mut Vec::new());
        assert_eq!(scan, expect, "scan, input {ids:?}");
        if ids.len() >= 2 {
            let mut long = Vec::new();
            merges.encode_long(ids, &mut long);
            assert_eq!(long, expect, "long, input {ids:?}");
        }
    }

    #[test]
    fn scan_and_long_agree_with_naive() {
        // Merges over bytes 'a'=97, 'b'=98: ab=256, aa=257, (ab)(ab)=258, (aa)a=259, b(ab)=260.
        let merges = Merges::new(&[(97, 98), (97, 97), (256, 256), (257, 97), (98, 256)]);
        let mut rng = chatforge_data::Rng::new(7);
        for len in [0usize, 1, 2, 3, 5, 17, 130, 300, 1000] {
            for _ in 0..20 {
                let ids: Vec<u32> = (0..len).map(|_| 97 + rng.below(2) as u32).collect();
                check_against_naive(&merges, &ids);
            }
        }
    }

    /// Random valid merge tables (each merge uses ids defined before it) over three bytes.
    #[test]
    fn random_tables_agree_with_naive() {
        let mut rng = chatforge_data::Rng::new(11);
        for _ in 0..40 {
            let mut merges: Vec<(u32, u32)> = Vec::new();
            let mut seen = std::collections::HashSet::new();
            let alphabet = [97u32, 98, 99];
            while merges.len() < 30 {
                let n_ids = 3 + merges.len() as u64;
                let pick = |r: u64| {
                    if r < 3 {
                        alphabet[r as usize]
                    } else {
                        256 + (r - 3) as u32
                    }
                };
                let pair = (pick(rng.below(n_ids)), pick(rng.below(n_ids)));
                if seen.insert(pair) {
                    merges.push(pair);
                }
            }
            let merges = Merges::new(&merges);
            for len in [2usize, 7, 40, 200] {
                let ids: Vec<u32> = (0..len).map(|_| 97 + rng.below(3) as u32).collect();
                check_against_naive(&merges, &ids);
            }
        }
    }

    #[test]
    fn leftmost_on_tie() {
        // "aaa" with only (a,a): the leftmost pair merges first.
        let merges = Merges::new(&[(97, 97)]);
        let mut ids = vec![97, 97, 97];
        merges.encode_scan(&mut ids, &mut Vec::new());
        assert_eq!(ids, [256, 97]);
        let mut out = Vec::new();
        merges.encode_long(&[97, 97, 97], &mut out);
        assert_eq!(out, [256, 97]);
    }
}
