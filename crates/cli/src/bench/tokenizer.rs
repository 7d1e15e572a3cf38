//! `chatforge bench tokenizer`: BPE training on the built-in world's corpus and encoding
//! throughput, next to `tiktoken-rs` encoding the same text with the same vocabularies (GPT-2 r50k
//! and cl100k, which our tokenizer loads from tiktoken's own rank tables), after checking that both
//! produce identical ids on that text.

use anyhow::{bail, Result};
use base64::Engine as _;
use chatforge_data::world::{corpus_documents, World, WorldConfig};
use chatforge_tokenizer::{Tokenizer, TrainConfig, GPT2_PATTERN, GPT4_PATTERN};
use tiktoken_rs::CoreBPE;

use super::median_secs;

/// Arguments of `chatforge bench tokenizer`.
#[derive(clap::Args, Debug)]
pub struct TokenizerBenchArgs {
    /// Bytes of built-in world text to train and encode.
    #[arg(long, default_value_t = 4_000_000)]
    corpus_bytes: usize,
    /// Vocabulary size of the trained tokenizer (the built-in world's small vocabulary of words
    /// is exhausted at about 2,000 tokens; training stops early there).
    #[arg(long, default_value_t = 2048)]
    vocab_size: usize,
    /// Benchmark on this text file instead of the built-in world (e.g. tinyshakespeare).
    #[arg(long)]
    input: Option<std::path::PathBuf>,
    /// Timed repetitions; the median is reported.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
}

/// Our tokenizer over the exact vocabulary of a tiktoken encoding (ranks read back through
/// tiktoken's public decoder).
fn ours_from_tiktoken(bpe: &CoreBPE, n_ranks: u32, pattern: &str) -> Result<Tokenizer> {
    let mut text = String::new();
    for rank in 0..n_ranks {
        let bytes = bpe
            .decode_bytes(&[rank])
            .map_err(|e| anyhow::anyhow!("tiktoken has no rank {rank}: {e:?}"))?;
        text.push_str(&base64::engine::general_purpose::STANDARD.encode(bytes));
        text.push(' ');
        text.push_str(&rank.to_string());
        text.push('\n');
    }
    Ok(Tokenizer::from_tiktoken_str(&text, pattern)?)
}

/// Runs `chatforge bench tokenizer`.
pub fn run(a: TokenizerBenchArgs) -> Result<()> {
    let docs = match &a.input {
        Some(path) => {
            let (docs, _) = chatforge_data::corpus::read_documents(
                std::slice::from_ref(path),
                &chatforge_data::corpus::ReadOptions::default(),
            )?;
            docs
        }
        None => corpus_documents(&World::generate(&WorldConfig::default()), a.corpus_bytes, 1),
    };
    let mb = docs.iter().map(|d| d.len()).sum::<usize>() as f64 / 1e6;
    let threads = rayon::current_num_threads();
    eprintln!(
        "corpus: {} documents, {mb:.2} MB of {}; {threads} threads; median of {}",
        docs.len(),
        a.input
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "built-in world text".into()),
        a.repeats
    );

    let mut rows: Vec<(String, String, String, String)> = Vec::new();
    let cfg = TrainConfig::with_vocab_size(a.vocab_size);
    let mut trained = None;
    let t_train = median_secs(a.repeats, || trained = Some(Tokenizer::train(&docs, &cfg)));
    let ours = match trained {
        Some(r) => r?,
        None => bail!("training did not run"),
    };
    rows.push((
        format!(
            "BPE training, vocab {} (learned {})",
            a.vocab_size,
            ours.vocab_size()
        ),
        format!("{t_train:.2} s ({:.2} MB/s)", mb / t_train),
        "no trainer".into(),
        "-".into(),
    ));
    let t = median_secs(a.repeats, || {
        for d in &docs {
            std::hint::black_box(ours.encode(d));
        }
    });
    rows.push((
        format!("encode, our {}-token vocab, 1 thread", ours.vocab_size()),
        format!("{:.2} MB/s", mb / t),
        "-".into(),
        "-".into(),
    ));

    for (name, bpe, n_ranks, pattern) in [
        (
            "GPT-2 r50k",
            tiktoken_rs::r50k_base()?,
            50_256u32,
            GPT2_PATTERN,
        ),
        (
            "cl100k",
            tiktoken_rs::cl100k_base()?,
            100_256u32,
            GPT4_PATTERN,
        ),
    ] {
        let ours = ours_from_tiktoken(&bpe, n_ranks, pattern)?;
        let same = docs
            .iter()
            .all(|d| ours.encode(d) == bpe.encode_ordinary(d));
        if !same {
            bail!("{name}: our ids differ from tiktoken-rs on the benchmark text");
        }
        let t_ours = median_secs(a.repeats, || {
            for d in &docs {
                std::hint::black_box(ours.encode(d));
            }
        });
        let t_tik = median_secs(a.repeats, || {
            for d in &docs {
                std::hint::black_box(bpe.encode_ordinary(d));
            }
        });
        rows.push((
            format!("encode, {name} vocab, 1 thread (ids identical)"),
            format!("{:.2} MB/s", mb / t_ours),
            format!("{:.2} MB/s", mb / t_tik),
            format!("{:.2}x", t_tik / t_ours),
        ));
        let t_ours_par = median_secs(a.repeats, || {
            std::hint::black_box(ours.encode_batch(&docs));
        });
        let t_tik_par = median_secs(a.repeats, || {
            use rayon::prelude::*;
            let v: Vec<Vec<u32>> = docs.par_iter().map(|d| bpe.encode_ordinary(d)).collect();
            std::hint::black_box(v);
        });
        rows.push((
            format!("encode, {name} vocab, {threads} threads"),
            format!("{:.2} MB/s", mb / t_ours_par),
            format!("{:.2} MB/s", mb / t_tik_par),
            format!("{:.2}x", t_tik_par / t_ours_par),
        ));
    }
    println!("| benchmark | chatforge | tiktoken-rs | speed-up |");
    println!("|---|---|---|---|");
    for (a, b, c, d) in rows {
        println!("| {a} | {b} | {c} | {d} |");
    }
    Ok(())
}
