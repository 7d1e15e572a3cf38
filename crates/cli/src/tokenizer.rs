//! `chatforge tokenizer train`: train a byte-level BPE tokenizer on text files.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use chatforge_data::corpus::{read_documents, ReadOptions};
use chatforge_tokenizer::{Tokenizer, TrainConfig};

#[derive(clap::Subcommand, Debug)]
pub enum TokenizerCommand {
    /// Train a tokenizer on .txt / .jsonl files (or directories of them).
    Train(TrainArgs),
}

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// Text files or directories (.txt, or .jsonl with {"text": ...}).
    #[arg(long = "input", required = true, num_args = 1..)]
    inputs: Vec<PathBuf>,
    /// Vocabulary size including the special tokens.
    #[arg(long, default_value_t = 2048)]
    vocab_size: usize,
    /// Skip malformed JSONL records (counted) instead of stopping at the first.
    #[arg(long)]
    skip_bad_records: bool,
    /// Where to write the tokenizer JSON.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(c: TokenizerCommand) -> Result<()> {
    match c {
        TokenizerCommand::Train(a) => train(a),
    }
}

fn train(a: TrainArgs) -> Result<()> {
    train_to(&a.inputs, a.vocab_size, a.skip_bad_records, &a.out)
}

/// Trains a tokenizer of `vocab_size` on `inputs` and writes it to `out`.
pub fn train_to(
    inputs: &[PathBuf],
    vocab_size: usize,
    skip_bad_records: bool,
    out: &std::path::Path,
) -> Result<()> {
    let (docs, stats) = read_documents(inputs, &ReadOptions { skip_bad_records })?;
    let start = Instant::now();
    let refs: Vec<&str> = docs.iter().map(String::as_str).collect();
    let tok = Tokenizer::train(
        &refs,
        &TrainConfig {
            vocab_size,
            ..TrainConfig::default()
        },
    )?;
    let secs = start.elapsed().as_secs_f64();
    tok.save(out)
        .with_context(|| format!("writing {}", out.display()))?;
    eprintln!(
        "trained a {}-token tokenizer on {} documents ({:.1} MB, {} skipped) in {secs:.1}s -> {}",
        tok.vocab_size(),
        stats.documents,
        stats.bytes as f64 / 1e6,
        stats.skipped_bad + stats.skipped_empty,
        out.display()
    );
    Ok(())
}
