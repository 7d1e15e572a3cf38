//! TESTING.md family 12: encoding huge degenerate inputs neither overflows the stack nor goes
//! quadratic. t(2n)/t(n) <= 2.5 for n = 1e6 units, measured as the minimum over repeats so that
//! a loaded machine does not fail the test (a quadratic encoder gives a ratio near 4 however
//! often it is repeated).

mod common;

use std::time::Instant;

use chatforge_tokenizer::{Splitter, Tokenizer, TrainConfig, GPT4_PATTERN};

fn tokenizer() -> Tokenizer {
    // Runs in the corpus give merges like "xx", "^^^^", "    ", so the long-chunk merge path is
    // exercised, not only single bytes.
    let mut docs = common::mixed_corpus(3, 200);
    docs.push(format!(
        "{} {} {} {}",
        "x".repeat(3000),
        "^".repeat(3000),
        " ".repeat(3000),
        "7".repeat(300)
    ));
    Tokenizer::train(&docs, &TrainConfig::with_vocab_size(800)).unwrap()
}

fn time_encode(tok: &Tokenizer, s: &str) -> f64 {
    let t = Instant::now();
    let n = tok.encode(s).len();
    assert!(n > 0);
    t.elapsed().as_secs_f64()
}

#[test]
fn huge_degenerate_inputs_are_linear() {
    let tok = tokenizer();
    // The two inputs TESTING.md names at 1e6 units; other shapes (whitespace runs, 4-byte
    // characters, many tiny chunks) at 2.5e5 units to keep the test quick.
    let cases = [
        ("x", 1_000_000),
        ("^", 1_000_000),
        (" ", 250_000),
        ("\n", 250_000),
        ("😀", 250_000),
        ("' a", 250_000),
    ];
    for (unit, n) in cases {
        let small = unit.repeat(n);
        let big = unit.repeat(2 * n);
        // Correctness once (and no stack overflow).
        let ids = tok.encode(&big);
        assert_eq!(
            tok.decode(&ids).unwrap(),
            big,
            "round trip of {} x {unit:?}",
            2 * n
        );
        let (mut t1, mut t2) = (f64::INFINITY, f64::INFINITY);
        for round in 0..25 {
            t1 = t1.min(time_encode(&tok, &small));
            t2 = t2.min(time_encode(&tok, &big));
            if round >= 1 && t2 / t1 <= 2.5 {
                break;
            }
        }
        eprintln!(
            "{n} x {unit:?}: {t1:.4} s, twice as long: {t2:.4} s, ratio {:.2}",
            t2 / t1
        );
        assert!(
            t2 / t1 <= 2.5,
            "{unit:?}: t(2n)/t(n) = {:.2} ({t1:.4} s, {t2:.4} s)",
            t2 / t1
        );
    }
}

/// The regex path (any pattern but the two built-in ones, here the GPT-4 pattern spelled
/// differently) stays linear too: its 64 KiB windows bound each search.
#[test]
fn regex_path_is_linear() {
    let splitter = Splitter::new(&format!("(?:{GPT4_PATTERN})")).unwrap();
    assert!(!splitter.is_builtin_fast_path());
    let time_split = |s: &str| {
        let t = Instant::now();
        let mut n = 0usize;
        splitter.for_each_chunk(s, |_| n += 1);
        assert!(n > 0);
        t.elapsed().as_secs_f64()
    };
    for (unit, n) in [("x", 1_000_000), ("^", 1_000_000), (" ", 250_000)] {
        let (small, big) = (unit.repeat(n), unit.repeat(2 * n));
        assert_eq!(splitter.split(&big).concat(), big);
        let (mut t1, mut t2) = (f64::INFINITY, f64::INFINITY);
        for round in 0..25 {
            t1 = t1.min(time_split(&small));
            t2 = t2.min(time_split(&big));
            if round >= 1 && t2 / t1 <= 2.5 {
                break;
            }
        }
        eprintln!("regex path, {n} x {unit:?}: {t1:.4} s, twice as long: {t2:.4} s");
        assert!(
            t2 / t1 <= 2.5,
            "{unit:?}: t(2n)/t(n) = {:.2} ({t1:.4} s, {t2:.4} s)",
            t2 / t1
        );
    }
}

#[test]
fn huge_input_in_a_small_stack() {
    // 256 KiB of stack is plenty: nothing recurses on input length.
    let tok = tokenizer();
    let handle = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || {
            let s = format!(
                "{}{}{}",
                "x".repeat(500_000),
                " ".repeat(500_000),
                "^".repeat(500_000)
            );
            tok.decode(&tok.encode(&s)).unwrap() == s
        })
        .unwrap();
    assert!(handle.join().unwrap());
}
