use std::time::Instant;
use chatforge_data::Rng;
use chatforge_tokenizer::{Tokenizer, TrainConfig, Splitter, GPT4_PATTERN};
fn main() {
    let mut docs = mixed_corpus(3, 200);
    docs.push(format!("{} {} {} {}", "x".repeat(3000), "^".repeat(3000), " ".repeat(3000), "7".repeat(300)));
    let tok = Tokenizer::train(&docs, &TrainConfig::with_vocab_size(800)).unwrap();
    let sp = Splitter::new(GPT4_PATTERN).unwrap();
    let _ = &sp;
    for unit in ["😀", "x"] {
        let small = unit.repeat(250_000);
        let big = unit.repeat(500_000);
        let (mut t1, mut t2) = (f64::MAX, f64::MAX);
        for _ in 0..7 {
            let t = Instant::now(); std::hint::black_box(tok.encode(&small)); t1 = t1.min(t.elapsed().as_secs_f64());
            let t = Instant::now(); std::hint::black_box(tok.encode(&big)); t2 = t2.min(t.elapsed().as_secs_f64());
        }
        let ids = tok.encode(&big);
        println!("{unit}: {t1:.4} {t2:.4} ratio {:.2}; {} ids for {} bytes", t2 / t1, ids.len(), big.len());
    }
}

pub fn mixed_corpus(seed: u64, n_docs: usize) -> Vec<String> {
    let words = [
        "the",
        "cat",
        "sat",
        "on",
        "mat",
        "and",
        "dog",
        "ran",
        "to",
        "a",
        "tree",
        "I'm",
        "we've",
        "café",
        "naïve",
        "日本語",
        "中文",
        "😀",
        "👍🏽",
        "ß",
        "λx",
        "fn",
        "main()",
        "{",
        "}",
        "x",
        "^^",
        "<|",
        "|>",
        "eot",
        "12",
        "345",
        "\n",
        "\n\n",
        "  ",
        "\t",
    ];
    let mut rng = Rng::new(seed);
    (0..n_docs)
        .map(|_| {
            let len = 5 + rng.below(60) as usize;
            let mut s = String::new();
            for _ in 0..len {
                s.push_str(words[rng.below(words.len() as u64) as usize]);
                if rng.below(3) > 0 {
                    s.push(' ');
                }
            }
            s
        })
        .collect()
}

