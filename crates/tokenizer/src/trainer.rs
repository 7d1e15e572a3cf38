//! Training a byte-level BPE vocabulary.
//!
//! 1. Every document is cut into chunks by the split pattern (default: GPT-4's), in parallel
//!    with rayon, and distinct chunks are counted. Merges never cross chunk boundaries.
//! 2. Each distinct chunk is a "word": its byte ids and its count. Adjacent pairs are counted
//!    over all words (overlapping pairs count: `aaa` holds two `(a, a)`), and the words each
//!    pair occurs in are indexed.
//! 3. Merges: a max-heap of candidate pairs with lazily refreshed counts (a pair's count only
//!    falls until it is merged, so a popped entry whose count is stale is pushed back with the
//!    true count). The winner is the pair with the **highest count; on a tie, the
//!    lexicographically smallest `(left bytes, right bytes)`; then the smallest `(left id,
//!    right id)`** (only reachable if two tokens have the same bytes). Only the words that
//!    contain the winner are rewritten (occurrences merged left to right, as encoding does), and
//!    pair counts are updated by the difference.
//!
//! The result depends only on the chunk counts and this tie-break, so it is the same for any
//! number of threads and any document order. Training stops early, with fewer tokens than
//! `vocab_size`, when no pair is left whose count reaches `min_frequency` and whose merged token
//! fits in `max_token_bytes`; `Tokenizer::vocab_size()` then reports the actual size.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::rc::Rc;

use rayon::prelude::*;

use crate::bpe::{pair_key, FxMap, PairMap};
use crate::error::{Error, Result};
use crate::pretokenize::{Splitter, GPT4_PATTERN};
use crate::special::Special;
use crate::tokenizer::{default_specials, Tokenizer, MAX_MERGES, MAX_TOKEN_BYTES};

/// Settings for [`Tokenizer::train`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Final vocabulary size, including the 256 byte tokens and the special tokens.
    pub vocab_size: usize,
    /// The pre-tokenization pattern (default [`GPT4_PATTERN`]).
    pub pattern: String,
    /// A pair seen fewer times than this over the corpus is never merged (default 1).
    pub min_frequency: u64,
    /// Merges that would create a token longer than this many bytes are skipped (default 64).
    pub max_token_bytes: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            vocab_size: 4096,
            pattern: GPT4_PATTERN.to_string(),
            min_frequency: 1,
            max_token_bytes: 64,
        }
    }
}

impl TrainConfig {
    /// The default settings with the given vocabulary size.
    pub fn with_vocab_size(vocab_size: usize) -> TrainConfig {
        TrainConfig {
            vocab_size,
            ..TrainConfig::default()
        }
    }

    /// Number of merges this configuration asks for.
    pub fn num_merges(&self) -> usize {
        self.vocab_size.saturating_sub(256 + Special::COUNT)
    }

    fn validate(&self) -> Result<()> {
        let min = 256 + Special::COUNT;
        if self.vocab_size < min {
            return Err(Error::TrainConfig(format!(
                "vocab_size {} is below {min} (256 bytes + {} special tokens)",
                self.vocab_size,
                Special::COUNT
            )));
        }
        if self.num_merges() > MAX_MERGES {
            return Err(Error::TrainConfig(format!(
                "vocab_size {} asks for more than {MAX_MERGES} merges",
                self.vocab_size
            )));
        }
        if self.max_token_bytes < 2 || self.max_token_bytes > MAX_TOKEN_BYTES {
            return Err(Error::TrainConfig(format!(
                "max_token_bytes {} must be in 2..={MAX_TOKEN_BYTES}",
                self.max_token_bytes
            )));
        }
        if self.min_frequency == 0 {
            return Err(Error::TrainConfig(
                "min_frequency must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

impl Tokenizer {
    /// Trains a tokenizer on `docs` (see the [module docs](crate::trainer) for the algorithm).
    /// Special tokens get the ids after the merges, in [`Special::ALL`] order.
    pub fn train<S: AsRef<str> + Sync>(docs: &[S], config: &TrainConfig) -> Result<Tokenizer> {
        config.validate()?;
        let splitter = Splitter::new(&config.pattern)?;
        let chunks = count_chunks(&splitter, docs);
        let merges = learn_merges(&chunks, config);
        if merges.len() < config.num_merges() {
            tracing::warn!(
                wanted = config.num_merges(),
                learned = merges.len(),
                "training ran out of pairs; the vocabulary is smaller than vocab_size"
            );
        }
        let mut byte_ids = [0u32; 256];
        for (b, id) in byte_ids.iter_mut().enumerate() {
            *id = b as u32;
        }
        let first_special = (256 + merges.len()) as u32;
        Tokenizer::from_parts(
            &config.pattern,
            byte_ids,
            merges,
            default_specials(first_special),
        )
    }
}

/// Distinct chunks of all documents with their counts, sorted by bytes.
fn count_chunks<'d, S: AsRef<str> + Sync>(
    splitter: &Splitter,
    docs: &'d [S],
) -> Vec<(&'d str, u64)> {
    let counts = docs
        .par_iter()
        .fold(FxMap::<&'d str, u64>::default, |mut map, doc| {
            splitter.for_each_chunk(doc.as_ref(), |c| *map.entry(c).or_insert(0) += 1);
            map
        })
        .reduce(FxMap::default, |a, b| {
            let (mut big, small) = if a.len() >= b.len() { (a, b) } else { (b, a) };
            for (k, v) in small {
                *big.entry(k).or_insert(0) += v;
            }
            big
        });
    let mut chunks: Vec<(&str, u64)> = counts.into_iter().collect();
    chunks.par_sort_unstable_by(|a, b| a.0.cmp(b.0));
    chunks
}

/// A candidate merge in the heap. Ordered so that the heap's maximum is the winner.
struct Candidate {
    count: i64,
    pair: u64,
    left: Rc<[u8]>,
    right: Rc<[u8]>,
}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        self.count
            .cmp(&other.count)
            .then_with(|| (&other.left, &other.right).cmp(&(&self.left, &self.right)))
            .then_with(|| other.pair.cmp(&self.pair))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Candidate {}

/// The merge loop. Returns the merges in rank order (merge `r` creates id `256 + r`).
fn learn_merges(chunks: &[(&str, u64)], config: &TrainConfig) -> Vec<(u32, u32)> {
    let target = config.num_merges();
    let mut words: Vec<Vec<u32>> = chunks
        .iter()
        .map(|(c, _)| c.bytes().map(u32::from).collect())
        .collect();
    let freq: Vec<i64> = chunks
        .iter()
        .map(|&(_, n)| n.min(i64::MAX as u64) as i64)
        .collect();

    let mut counts: PairMap<i64> = PairMap::default();
    let mut where_: PairMap<Vec<u32>> = PairMap::default();
    for (w, ids) in words.iter().enumerate() {
        for p in ids.windows(2) {
            let key = pair_key(p[0], p[1]);
            *counts.entry(key).or_insert(0) += freq[w];
            let list = where_.entry(key).or_default();
            if list.last() != Some(&(w as u32)) {
                list.push(w as u32);
            }
        }
    }

    let mut vocab: Vec<Rc<[u8]>> = (0..=255u8).map(|b| Rc::from(vec![b])).collect();
    let candidate = |vocab: &[Rc<[u8]>], key: u64, count: i64| -> Option<Candidate> {
        let (l, r) = ((key >> 32) as usize, (key & 0xffff_ffff) as usize);
        (vocab[l].len() + vocab[r].len() <= config.max_token_bytes).then(|| Candidate {
            count,
            pair: key,
            left: vocab[l].clone(),
            right: vocab[r].clone(),
        })
    };
    let mut heap: BinaryHeap<Candidate> = counts
        .iter()
        .filter_map(|(&key, &count)| candidate(&vocab, key, count))
        .collect();

    let mut merges = Vec::with_capacity(target);
    let mut stamp = vec![u32::MAX; words.len()];
    let mut delta: PairMap<i64> = PairMap::default();
    let mut merged = Vec::new();
    while merges.len() < target {
        let Some(top) = heap.pop() else { break };
        let current = counts.get(&top.pair).copied().unwrap_or(0);
        if current != top.count {
            if current > 0 {
                heap.push(Candidate {
                    count: current,
                    ..top
                });
            }
            continue;
        }
        if (current as u64) < config.min_frequency {
            break;
        }
        let (left, right) = ((top.pair >> 32) as u32, (top.pair & 0xffff_ffff) as u32);
        let new_id = 256 + merges.len() as u32;
        merges.push((left, right));
        vocab.push(Rc::from([&top.left[..], &top.right[..]].concat()));

        delta.clear();
        for w in where_.remove(&top.pair).unwrap_or_default() {
            if stamp[w as usize] == new_id {
                continue;
            }
            stamp[w as usize] = new_id;
            let ids = &mut words[w as usize];
            if !ids.windows(2).any(|p| p[0] == left && p[1] == right) {
                continue; // stale index entry: the pair left this word in an earlier merge
            }
            let c = freq[w as usize];
            for p in ids.windows(2) {
                *delta.entry(pair_key(p[0], p[1])).or_insert(0) -= c;
            }
            merged.clear();
            let mut i = 0;
            while i < ids.len() {
                if i + 1 < ids.len() && ids[i] == left && ids[i + 1] == right {
                    merged.push(new_id);
                    i += 2;
                } else {
                    merged.push(ids[i]);
                    i += 1;
                }
            }
            ids.clear();
            ids.extend_from_slice(&merged);
            for p in ids.windows(2) {
                let key = pair_key(p[0], p[1]);
                *delta.entry(key).or_insert(0) += c;
                if p[0] == new_id || p[1] == new_id {
                    let list = where_.entry(key).or_default();
                    if list.last() != Some(&w) {
                        list.push(w);
                    }
                }
            }
        }
        for (&key, &d) in &delta {
            if d == 0 {
                continue;
            }
            let entry = counts.entry(key).or_insert(0);
            *entry += d;
            let count = *entry;
            if count <= 0 {
                counts.remove(&key);
            } else if ((key >> 32) as u32 == new_id || key as u32 == new_id) && key != top.pair {
                if let Some(c) = candidate(&vocab, key, count) {
                    heap.push(c);
                }
            }
        }
    }
    merges
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wikipedia_example() {
        // en.wikipedia.org/wiki/Byte_pair_encoding: "aaabdaaabac" -> Z=aa, Y=ab, X=ZY.
        // Counts after Z: (Z,a)=2, (a,b)=2 tie; ("a","b") < ("aa","a") byte-wise, so Y=ab first.
        let cfg = TrainConfig::with_vocab_size(256 + Special::COUNT + 3);
        let tok = Tokenizer::train(&["aaabdaaabac"], &cfg).unwrap();
        let (a, b) = (u32::from(b'a'), u32::from(b'b'));
        assert_eq!(tok.merges(), &[(a, a), (a, b), (256, 257)]);
        assert_eq!(
            tok.encode("aaabdaaabac"),
            [258, u32::from(b'd'), 258, a, u32::from(b'c')]
        );
        assert_eq!(tok.vocab_size(), 256 + 3 + Special::COUNT);
        assert_eq!(tok.special(Special::Bos), 259);
    }

    #[test]
    fn too_small_vocab_is_an_error() {
        let cfg = TrainConfig::with_vocab_size(260);
        assert!(matches!(
            Tokenizer::train(&["x"], &cfg),
            Err(Error::TrainConfig(_))
        ));
    }

    #[test]
    fn stops_when_out_of_pairs() {
        let cfg = TrainConfig::with_vocab_size(1000);
        let tok = Tokenizer::train(&["ab ab"], &cfg).unwrap();
        // Chunks "ab", " ab": merges (a,b), then (" ", ab).
        assert_eq!(tok.num_merges(), 2);
        assert_eq!(tok.vocab_size(), 258 + Special::COUNT);
    }

    #[test]
    fn max_token_bytes_is_respected() {
        let cfg = TrainConfig {
            max_token_bytes: 4,
            ..TrainConfig::with_vocab_size(400)
        };
        let tok = Tokenizer::train(&["x".repeat(1000)], &cfg).unwrap();
        assert!(tok.tokens.iter().all(|t| t.len() <= 4));
        assert_eq!(tok.num_merges(), 2); // xx, xxxx
    }
}
