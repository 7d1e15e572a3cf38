use std::time::Instant;
use chatforge_tokenizer::{Tokenizer, TrainConfig};
fn main() {
    let docs = vec!["😀 😀😀 a b 😀 xx".to_string(); 50];
    let tok = Tokenizer::train(&docs, &TrainConfig::with_vocab_size(270)).unwrap();
    let k: usize = std::env::args().nth(1).unwrap().parse().unwrap();
    let s = "😀".repeat(k);
    let mut best = f64::MAX;
    for _ in 0..10 { let t = Instant::now(); std::hint::black_box(tok.encode(&s)); best = best.min(t.elapsed().as_secs_f64()); }
    println!("{k}: {best:.4} s, {:.2} ns/byte", best * 1e9 / s.len() as f64);
}
