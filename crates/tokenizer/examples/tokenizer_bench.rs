//! Throughput of training and encoding, on a text file (default: tinyshakespeare from the
//! shared data folder) repeated to a target size.
//!
//! ```text
//! cargo run --release -p chatforge-tokenizer --example tokenizer_bench -- [FILE] [MB] [VOCAB]
//! ```

use std::time::Instant;

use chatforge_tokenizer::{Tokenizer, TrainConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).cloned().unwrap_or_else(|| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/data/tinyshakespeare/input.txt"
        )
        .to_string()
    });
    let mb: f64 = args.get(2).map_or(Ok(4.0), |s| s.parse())?;
    let vocab: usize = args.get(3).map_or(Ok(8192), |s| s.parse())?;
    let text = std::fs::read_to_string(&path)?;
    // Documents: paragraphs, repeated until the corpus reaches the target size.
    let paragraphs: Vec<&str> = text.split("\n\n").collect();
    let mut docs: Vec<&str> = Vec::new();
    let mut bytes = 0usize;
    while (bytes as f64) < mb * 1e6 {
        for p in &paragraphs {
            docs.push(p);
            bytes += p.len();
        }
    }
    let total_mb = bytes as f64 / 1e6;
    println!(
        "corpus: {total_mb:.2} MB in {} documents from {path}",
        docs.len()
    );

    let t = Instant::now();
    let tok = Tokenizer::train(&docs, &TrainConfig::with_vocab_size(vocab))?;
    let dt = t.elapsed().as_secs_f64();
    println!("train  vocab {vocab}: {dt:.2} s, {:.2} MB/s", total_mb / dt);

    let t = Instant::now();
    let mut n_tokens = 0usize;
    for d in &docs {
        n_tokens += tok.encode(d).len();
    }
    let dt = t.elapsed().as_secs_f64();
    println!(
        "encode (one thread): {dt:.2} s, {:.2} MB/s, {:.2} bytes/token",
        total_mb / dt,
        bytes as f64 / n_tokens as f64
    );

    let t = Instant::now();
    let batch = tok.encode_batch(&docs);
    let dt = t.elapsed().as_secs_f64();
    println!(
        "encode_batch ({} threads): {dt:.2} s, {:.2} MB/s ({} tokens)",
        rayon::current_num_threads(),
        total_mb / dt,
        batch.iter().map(Vec::len).sum::<usize>()
    );

    let t = Instant::now();
    let mut n = 0usize;
    for ids in &batch {
        n += tok.decode_bytes(ids)?.len();
    }
    let dt = t.elapsed().as_secs_f64();
    println!("decode: {dt:.3} s, {:.1} MB/s", n as f64 / 1e6 / dt);

    for (name, unit) in [
        ("x", "x"),
        ("^", "^"),
        ("space", " "),
        ("digit", "7"),
        ("newline", "\n"),
        ("' a", "' a"),
    ] {
        let mut times = Vec::new();
        for n in [500_000usize, 1_000_000, 2_000_000] {
            let s = unit.repeat(n / unit.len());
            let t = Instant::now();
            let ids = tok.encode(&s);
            times.push(t.elapsed().as_secs_f64());
            assert_eq!(tok.decode(&ids)?, s);
        }
        println!(
            "1e6 x {name:7}: {:.3} s (0.5e6: {:.3}, 2e6: {:.3}; ratio 2e6/1e6 {:.2})",
            times[1],
            times[0],
            times[2],
            times[2] / times[1]
        );
    }
    Ok(())
}
