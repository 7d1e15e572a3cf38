use std::time::Instant;
use base64::Engine as _;
use chatforge_data::world::{corpus_documents, World, WorldConfig};
use chatforge_tokenizer::{Tokenizer, GPT2_PATTERN, GPT4_PATTERN};
fn main() {
    let which = std::env::args().nth(1).unwrap_or("r50k".into());
    let reps: usize = std::env::args().nth(2).map(|s| s.parse().unwrap()).unwrap_or(5);
    let docs = corpus_documents(&World::generate(&WorldConfig::default()), 4_000_000, 1);
    let (bpe, n, pat) = if which == "r50k" { (tiktoken_rs::r50k_base().unwrap(), 50256u32, GPT2_PATTERN) } else { (tiktoken_rs::cl100k_base().unwrap(), 100256, GPT4_PATTERN) };
    let mut text = String::new();
    for r in 0..n { text.push_str(&base64::engine::general_purpose::STANDARD.encode(bpe.decode_bytes(&[r]).unwrap())); text.push_str(&format!(" {r}\n")); }
    let t0 = Instant::now();
    let tok = Tokenizer::from_tiktoken_str(&text, pat).unwrap();
    eprintln!("load {:.3}s", t0.elapsed().as_secs_f64());
    let mb = docs.iter().map(|d| d.len()).sum::<usize>() as f64 / 1e6;
    let mut best = f64::MAX;
    for _ in 0..reps {
        let t = Instant::now();
        let mut n = 0;
        for d in &docs { n += tok.encode(d).len(); }
        let dt = t.elapsed().as_secs_f64();
        best = best.min(dt);
        std::hint::black_box(n);
    }
    println!("{which}: best {:.2} MB/s", mb / best);
    if std::env::var("STATS").is_ok() {
        let sp = chatforge_tokenizer::Splitter::new(pat).unwrap();
        let (mut chunks, mut single, mut bytes_multi, mut lens) = (0usize, 0usize, 0usize, std::collections::BTreeMap::<usize, usize>::new());
        for d in &docs { sp.for_each_chunk(d, |c| { chunks += 1; let k = tok.encode(c).len(); if k == 1 { single += 1 } else { bytes_multi += c.len(); *lens.entry(c.len()).or_default() += 1; } }); }
        println!("chunks {chunks}, single-token {single} ({:.1}%), multi bytes {bytes_multi}; multi lens {:?}", 100.0 * single as f64 / chunks as f64, lens);
    }
    if std::env::args().nth(3).is_some() {
        let t = Instant::now();
        for d in &docs { std::hint::black_box(bpe.encode_ordinary(d)); }
        println!("tiktoken {:.2} MB/s", mb / t.elapsed().as_secs_f64());
    }
}
#[allow(dead_code)]
fn unused() {}
