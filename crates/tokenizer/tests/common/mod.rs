//! Shared helpers for the integration tests.
#![allow(dead_code)]

use chatforge_data::Rng;
use chatforge_tokenizer::{Tokenizer, TrainConfig};

/// A deterministic corpus mixing English-like words, numbers, punctuation, whitespace runs,
/// accented letters, CJK and emoji (so that some merges end inside multi-byte characters).
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

/// A small trained tokenizer over [`mixed_corpus`].
pub fn trained(vocab_size: usize) -> Tokenizer {
    let docs = mixed_corpus(1, 400);
    Tokenizer::train(&docs, &TrainConfig::with_vocab_size(vocab_size)).unwrap()
}
