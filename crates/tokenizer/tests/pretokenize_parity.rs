//! TESTING.md family 11: the hand-written pre-tokenizers of the two built-in patterns cut text
//! exactly where `fancy-regex` does when it matches the pattern over the whole text (as
//! tiktoken does): every short string over a tricky alphabet, property tests biased toward the
//! hard cases (contractions in any case, combining marks, digits of many scripts, every kind of
//! Unicode white space, CR/LF runs, punctuation, emoji), long degenerate runs, and the whole of
//! tinyshakespeare and GSM8K.

use std::path::PathBuf;
use std::sync::OnceLock;

use chatforge_tokenizer::{Splitter, GPT2_PATTERN, GPT4_PATTERN};
use proptest::prelude::*;

/// Chunks from `fancy-regex` matching over the whole text. Both patterns match at every
/// position, so the matches must tile the text; that is checked too.
fn reference<'t>(re: &fancy_regex::Regex, text: &'t str) -> Vec<&'t str> {
    let mut out = Vec::new();
    let mut pos = 0;
    for m in re.find_iter(text) {
        let m = m.unwrap();
        assert_eq!(m.start(), pos, "the regex left a gap in {text:?}");
        assert!(m.end() > m.start(), "empty match in {text:?}");
        out.push(m.as_str());
        pos = m.end();
    }
    assert_eq!(pos, text.len(), "the regex left a tail in {text:?}");
    out
}

struct Pair {
    name: &'static str,
    fast: Splitter,
    regex: fancy_regex::Regex,
}

fn pairs() -> &'static [Pair; 2] {
    static CELL: OnceLock<[Pair; 2]> = OnceLock::new();
    CELL.get_or_init(|| {
        [("gpt2", GPT2_PATTERN), ("gpt4", GPT4_PATTERN)].map(|(name, pattern)| {
            let fast = Splitter::new(pattern).unwrap();
            assert!(
                fast.is_builtin_fast_path(),
                "{name} must take the fast path"
            );
            Pair {
                name,
                fast,
                regex: fancy_regex::Regex::new(pattern).unwrap(),
            }
        })
    })
}

/// Asserts that both patterns chunk `text` as the regex does.
fn check(pairs: &[Pair], text: &str) -> Result<(), TestCaseError> {
    for p in pairs {
        let got = p.fast.split(text);
        let want = reference(&p.regex, text);
        prop_assert_eq!(got, want, "{} on {:?}", p.name, text);
    }
    Ok(())
}

/// Characters chosen to hit every branch: letters of several scripts and of every letter
/// category, marks (which are not letters), numbers of every number category, all 25
/// white-space characters and look-alikes that are not white space, punctuation, symbols,
/// emoji parts, controls, private use, unassigned.
const TRICKY: &str = concat!(
    "azAZsStTdDmMlLvVeErRxéßжλ中日ア한عהǅʰſ\u{212a}ﬁ",
    "\u{301}\u{300}\u{93f}\u{e31}\u{20dd}\u{fe0f}\u{200d}\u{200b}\u{feff}\u{180e}\u{ad}",
    "059٣४²½Ⅻ〇𝟘①",
    " \t\n\r\u{b}\u{c}\u{85}\u{a0}\u{1680}\u{2000}\u{2001}\u{2002}\u{2003}\u{2004}\u{2005}",
    "\u{2006}\u{2007}\u{2008}\u{2009}\u{200a}\u{2028}\u{2029}\u{202f}\u{205f}\u{3000}",
    "'\"!?.,;:-_()[]{}<>|/\\@#$%^&*+=~`’—…€\u{0}\u{7f}\u{1f}",
    "😀👍🏽🇫🇷\u{e000}\u{378}\u{10ffff}\u{fffd}",
);

fn tricky_chars() -> Vec<char> {
    TRICKY.chars().collect()
}

/// Pieces that exercise the alternatives' interactions.
fn piece() -> impl Strategy<Value = String> {
    let contractions = [
        "'s", "'S", "'t", "'T", "'re", "'RE", "'Re", "'rE", "'ve", "'VE", "'vE", "'m", "'M", "'ll",
        "'LL", "'lL", "'Ll", "'d", "'D", "'\u{17f}", "'x", "'", "''", "'l", "'r", "'v",
    ];
    let spacing = [
        "\r\n",
        "\r\n\r\n",
        " \n",
        "\n ",
        "  ",
        "\t\t",
        " \r",
        "\r",
        "\n\n\n",
        " \u{a0}",
        "\u{3000} ",
    ];
    prop_oneof![
        4 => prop::sample::select(tricky_chars()).prop_map(String::from),
        2 => (prop::sample::select(tricky_chars()), 1..5usize)
            .prop_map(|(c, n)| c.to_string().repeat(n)),
        2 => prop::sample::select(contractions.to_vec()).prop_map(String::from),
        2 => prop::sample::select(spacing.to_vec()).prop_map(String::from),
        2 => "[ ]?[a-zA-Z]{1,6}",
        1 => "[ ]?[0-9]{1,7}",
        1 => "[٠-٩०-९0-9]{1,5}",
        1 => any::<char>().prop_map(String::from),
    ]
}

fn tricky_text() -> impl Strategy<Value = String> {
    prop::collection::vec(piece(), 0..24).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(6000))]
    #[test]
    fn tricky_text_chunks_like_the_regex(s in tricky_text()) {
        check(pairs(), &s)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]
    #[test]
    fn arbitrary_text_chunks_like_the_regex(s in any::<String>()) {
        check(pairs(), &s)?;
    }
}

/// Every string of up to three characters over a representative alphabet (one or two of each
/// class and every character the patterns name), and of four over a smaller one.
#[test]
fn every_short_string_chunks_like_the_regex() {
    let pairs = pairs();
    let big: Vec<char> = "aZé中1٣² \t\n\r\u{3000}'!😀\u{301}sSlLveſ"
        .chars()
        .collect();
    let small: Vec<char> = "a1 \n\r'!\u{a0}sl".chars().collect();
    let mut n = 0;
    for (alphabet, max_len) in [(&big, 3), (&small, 4)] {
        let mut current: Vec<String> = vec![String::new()];
        for _ in 0..max_len {
            let mut longer = Vec::with_capacity(current.len() * alphabet.len());
            for s in &current {
                for &c in alphabet.iter() {
                    let mut t = s.clone();
                    t.push(c);
                    check(pairs, &t).unwrap();
                    n += 1;
                    longer.push(t);
                }
            }
            current = longer;
        }
    }
    assert!(n > 20_000, "{n} strings");
}

/// Runs far longer than the generic path's 64 KiB window: one chunk each, as the regex over
/// the whole text has them.
#[test]
fn long_runs_chunk_like_the_regex() {
    let pairs = pairs();
    let n = 100_000;
    for text in [
        "x".repeat(n),
        format!(" {}", "é".repeat(n)),
        "^".repeat(n),
        format!("{}x", " ".repeat(n)),
        format!("{}x", "\u{3000}".repeat(n)),
        format!("{}\n{}x", " ".repeat(n), "\t".repeat(n)),
        "7".repeat(n),
        "'s".repeat(n / 2),
        "\r\n".repeat(n / 2),
    ] {
        check(pairs, &text).unwrap();
    }
    let fast = Splitter::new(GPT4_PATTERN).unwrap();
    assert_eq!(fast.split(&"x".repeat(n)).len(), 1, "no window cuts");
}

fn shared_file(rel: &str) -> Option<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data")
        .join(rel);
    match std::fs::read_to_string(&path) {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("SKIPPED: {} not readable ({e})", path.display());
            None
        }
    }
}

#[test]
fn tinyshakespeare_chunks_like_the_regex() {
    if let Some(text) = shared_file("tinyshakespeare/input.txt") {
        check(pairs(), &text).unwrap();
    }
}

#[test]
fn gsm8k_chunks_like_the_regex() {
    let pairs = pairs();
    for file in ["gsm8k/train.jsonl", "gsm8k/test.jsonl"] {
        let Some(jsonl) = shared_file(file) else {
            continue;
        };
        let mut records = 0;
        for line in jsonl.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let (q, a) = (
                v["question"].as_str().unwrap(),
                v["answer"].as_str().unwrap(),
            );
            check(pairs, &format!("{q}\n{a}")).unwrap();
            records += 1;
        }
        assert!(records > 1000, "{file}: {records} records");
    }
}

#[test]
fn other_patterns_keep_the_regex() {
    let s = Splitter::new(r"\p{L}+|\s+|.").unwrap();
    assert!(!s.is_builtin_fast_path());
    assert_eq!(s.split("ab  c!"), ["ab", "  ", "c", "!"]);
    // A pattern that differs from a built-in one by a single character is not taken for it.
    let almost = GPT2_PATTERN.replace("'s|", "'S|");
    assert!(!Splitter::new(&almost).unwrap().is_builtin_fast_path());
}
