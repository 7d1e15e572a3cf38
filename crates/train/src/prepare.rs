//! Corpus → token shards. Every document is encoded as plain text (special-token strings typed
//! in the corpus stay text) and followed by the end-of-text token; the shards are cached beside
//! the run and rebuilt only when the tokenizer or the text changes.

use std::path::{Path, PathBuf};

use chatforge_data::corpus::{read_documents, ReadOptions, ReadStats};
use chatforge_data::shard::{write_shard, Shard};
use chatforge_tokenizer::{Special, Tokenizer};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::io_at;
use crate::{Error, Result};

/// Where the text comes from. Without `val`, the last `val_fraction` of the training
/// documents (at least one) is held out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CorpusSpec {
    pub train: Vec<PathBuf>,
    pub val: Vec<PathBuf>,
    pub val_fraction: f64,
    pub skip_bad_records: bool,
}

/// The prepared shards and what went into them.
#[derive(Debug)]
pub struct Prepared {
    pub train: Shard,
    pub val: Shard,
    pub stats: ReadStats,
    pub reused: bool,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct ShardMeta {
    tokenizer_hash: String,
    text_sha256: String,
    train_tokens: usize,
    val_tokens: usize,
}

/// Tokenizes `spec` into `dir/train.bin` and `dir/val.bin`, or reuses them when they were made
/// from the same text with the same tokenizer.
pub fn prepare_shards(spec: &CorpusSpec, tok: &Tokenizer, dir: &Path) -> Result<Prepared> {
    let opts = ReadOptions {
        skip_bad_records: spec.skip_bad_records,
    };
    let (mut train_docs, mut stats) = read_documents(&spec.train, &opts)?;
    let val_docs = if spec.val.is_empty() {
        if train_docs.len() < 2 {
            return Err(Error::Data(
                "need at least two documents to hold one out for validation (or pass --val)".into(),
            ));
        }
        let n_val = ((train_docs.len() as f64 * spec.val_fraction).ceil() as usize)
            .clamp(1, train_docs.len() - 1);
        train_docs.split_off(train_docs.len() - n_val)
    } else {
        let (v, s) = read_documents(&spec.val, &opts)?;
        stats.documents += s.documents;
        stats.bytes += s.bytes;
        stats.skipped_bad += s.skipped_bad;
        stats.skipped_empty += s.skipped_empty;
        v
    };
    if train_docs.is_empty() || val_docs.is_empty() {
        return Err(Error::Data("no training or validation documents".into()));
    }
    let mut h = Sha256::new();
    for d in train_docs
        .iter()
        .chain([&String::from("\u{0}val\u{0}")])
        .chain(&val_docs)
    {
        h.update((d.len() as u64).to_le_bytes());
        h.update(d.as_bytes());
    }
    let text_sha256 = format!("{:x}", h.finalize());
    let meta_path = dir.join("shards.json");
    let (train_path, val_path) = (dir.join("train.bin"), dir.join("val.bin"));
    if let Ok(bytes) = std::fs::read(&meta_path) {
        if let Ok(meta) = serde_json::from_slice::<ShardMeta>(&bytes) {
            if meta.tokenizer_hash == tok.hash() && meta.text_sha256 == text_sha256 {
                if let (Ok(train), Ok(val)) = (Shard::open(&train_path), Shard::open(&val_path)) {
                    if train.len() == meta.train_tokens && val.len() == meta.val_tokens {
                        return Ok(Prepared {
                            train,
                            val,
                            stats,
                            reused: true,
                        });
                    }
                }
            }
        }
    }
    std::fs::create_dir_all(dir).map_err(io_at(dir))?;
    let eot = tok.special(Special::Eot);
    let encode_all = |docs: &[String]| -> Vec<u32> {
        let parts: Vec<Vec<u32>> = docs
            .par_iter()
            .map(|d| {
                let mut ids = tok.encode(d);
                ids.push(eot);
                ids
            })
            .collect();
        parts.concat()
    };
    let train_ids = encode_all(&train_docs);
    let val_ids = encode_all(&val_docs);
    write_shard(&train_path, &train_ids, tok.vocab_size())?;
    write_shard(&val_path, &val_ids, tok.vocab_size())?;
    let meta = ShardMeta {
        tokenizer_hash: tok.hash(),
        text_sha256,
        train_tokens: train_ids.len(),
        val_tokens: val_ids.len(),
    };
    let bytes = serde_json::to_vec_pretty(&meta).map_err(|e| Error::State(e.to_string()))?;
    chatforge_data::atomic::write_atomic(&meta_path, &bytes).map_err(io_at(&meta_path))?;
    Ok(Prepared {
        train: Shard::open(&train_path)?,
        val: Shard::open(&val_path)?,
        stats,
        reused: false,
    })
}
