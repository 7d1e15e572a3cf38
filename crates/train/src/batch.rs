//! Packed next-token rows from a token shard, in a seeded order that can be resumed exactly.
//!
//! The shard is one stream of documents joined by the end-of-text token. It is cut into
//! `n = (len - 1) / T` non-overlapping windows of `T + 1` tokens (input = first T, target = last
//! T). Each epoch visits every window once in an order drawn from `Rng::derive(seed, epoch)`, so the
//! whole cursor is two integers: the epoch and the index into that epoch's permutation.

use chatforge_data::{shard::Shard, Rng};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Where the loader is: saved in every checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Cursor {
    pub epoch: u64,
    pub index: u64,
}

/// One batch of packed rows, flattened row-major.
///
/// # Shapes
/// - `inputs`, `targets`: `B * T` ids, to be viewed as `(B, T)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub inputs: Vec<u32>,
    pub targets: Vec<u32>,
    pub rows: usize,
    pub seq_len: usize,
}

/// A resumable shuffled visiting order over `n` items: each epoch is a permutation drawn from
/// the seed and the epoch number, so the whole state is the [`Cursor`].
#[derive(Debug)]
pub struct EpochOrder {
    n: usize,
    seed: u64,
    cursor: Cursor,
    perm: Vec<u64>,
}

impl EpochOrder {
    /// An order over `n > 0` items positioned at `cursor`.
    pub fn new(n: usize, seed: u64, cursor: Cursor) -> Result<Self> {
        if n == 0 {
            return Err(Error::Data("nothing to iterate over".into()));
        }
        if cursor.index > n as u64 {
            return Err(Error::State(format!(
                "data cursor {} is past the {n} items of the data",
                cursor.index
            )));
        }
        let perm = permutation(n, seed, cursor.epoch);
        Ok(Self {
            n,
            seed,
            cursor,
            perm,
        })
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    pub fn cursor(&self) -> Cursor {
        self.cursor
    }

    /// The next item, moving to a fresh permutation at each epoch boundary.
    pub fn next_index(&mut self) -> usize {
        if self.cursor.index as usize >= self.n {
            self.cursor = Cursor {
                epoch: self.cursor.epoch + 1,
                index: 0,
            };
            self.perm = permutation(self.n, self.seed, self.cursor.epoch);
        }
        let i = self.perm[self.cursor.index as usize] as usize;
        self.cursor.index += 1;
        i
    }
}

fn permutation(n: usize, seed: u64, epoch: u64) -> Vec<u64> {
    let mut perm: Vec<u64> = (0..n as u64).collect();
    Rng::derive(seed ^ epoch.wrapping_mul(0x9E37_79B9), "rows").shuffle(&mut perm);
    perm
}

/// Yields batches of rows from a shard in a resumable shuffled order.
#[derive(Debug)]
pub struct RowLoader {
    shard: Shard,
    seq_len: usize,
    order: EpochOrder,
}

impl RowLoader {
    /// A loader over `shard` with rows of `seq_len + 1` tokens, positioned at `cursor`.
    pub fn new(shard: Shard, seq_len: usize, seed: u64, cursor: Cursor) -> Result<Self> {
        let n = shard.len().saturating_sub(1) / seq_len.max(1);
        if n == 0 {
            return Err(Error::Data(format!(
                "the training shard has {} tokens, fewer than one row of {} (context + 1); \
                 use more text or a shorter context",
                shard.len(),
                seq_len + 1
            )));
        }
        Ok(Self {
            shard,
            seq_len,
            order: EpochOrder::new(n, seed, cursor)?,
        })
    }

    /// Number of rows in one epoch.
    pub fn rows_per_epoch(&self) -> usize {
        self.order.len()
    }

    pub fn cursor(&self) -> Cursor {
        self.order.cursor()
    }

    /// The next `rows` rows.
    pub fn next_batch(&mut self, rows: usize) -> Result<Batch> {
        let t = self.seq_len;
        let mut inputs = Vec::with_capacity(rows * t);
        let mut targets = Vec::with_capacity(rows * t);
        for _ in 0..rows {
            let row = self.order.next_index();
            let toks = self.shard.tokens(row * t..row * t + t + 1)?;
            inputs.extend_from_slice(&toks[..t]);
            targets.extend_from_slice(&toks[1..]);
        }
        Ok(Batch {
            inputs,
            targets,
            rows,
            seq_len: t,
        })
    }
}

/// Consecutive, non-overlapping evaluation rows from the start of a shard (the same rows at
/// every evaluation), at most `max_rows`.
pub fn eval_rows(shard: &Shard, seq_len: usize, max_rows: usize) -> Result<Vec<Batch>> {
    let n = (shard.len().saturating_sub(1) / seq_len.max(1)).min(max_rows);
    let mut out = Vec::with_capacity(n);
    for r in 0..n {
        let toks = shard.tokens(r * seq_len..r * seq_len + seq_len + 1)?;
        out.push(Batch {
            inputs: toks[..seq_len].to_vec(),
            targets: toks[1..].to_vec(),
            rows: 1,
            seq_len,
        });
    }
    Ok(out)
}
