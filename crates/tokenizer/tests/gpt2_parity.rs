//! TESTING.md family 11: our encoder reproduces OpenAI's ids exactly on OpenAI's vocabularies,
//! with tiktoken-rs (which embeds r50k_base = GPT-2 and cl100k_base) as the reference.
//!
//! The vocabularies are read back out of tiktoken-rs (`decode_bytes` of every rank), so these
//! tests need no files: from the ranks we write a tiktoken rank file and, with an independent
//! re-implementation of GPT-2's `bytes_to_unicode`, an `encoder.json` + `vocab.bpe` pair, and
//! load both through our loaders. If the real `encoder.json`/`vocab.bpe` that ship in
//! tiktoken-rs's source are found in the cargo registry, they are loaded too and must give the
//! same merges.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use base64::Engine as _;
use chatforge_tokenizer::{Special, Tokenizer, GPT2_PATTERN, GPT4_PATTERN};
use tiktoken_rs::CoreBPE;

fn ranks_text(bpe: &CoreBPE, n: u32) -> String {
    let mut s = String::new();
    for r in 0..n {
        let bytes = bpe.decode_bytes(&[r]).unwrap();
        s.push_str(&base64::engine::general_purpose::STANDARD.encode(bytes));
        s.push_str(&format!(" {r}\n"));
    }
    s
}

fn r50k() -> &'static (CoreBPE, Tokenizer) {
    static CELL: OnceLock<(CoreBPE, Tokenizer)> = OnceLock::new();
    CELL.get_or_init(|| {
        let bpe = tiktoken_rs::r50k_base().unwrap();
        let tok = Tokenizer::from_tiktoken_str(&ranks_text(&bpe, 50256), GPT2_PATTERN).unwrap();
        (bpe, tok)
    })
}

fn cl100k() -> &'static (CoreBPE, Tokenizer) {
    static CELL: OnceLock<(CoreBPE, Tokenizer)> = OnceLock::new();
    CELL.get_or_init(|| {
        let bpe = tiktoken_rs::cl100k_base().unwrap();
        let tok = Tokenizer::from_tiktoken_str(&ranks_text(&bpe, 100256), GPT4_PATTERN).unwrap();
        (bpe, tok)
    })
}

/// Python's `bytes_to_unicode` from GPT-2's encoder.py, transcribed literally.
fn python_bytes_to_unicode() -> BTreeMap<u8, char> {
    let mut bs: Vec<u32> = (u32::from('!')..=u32::from('~'))
        .chain(u32::from('¡')..=u32::from('¬'))
        .chain(u32::from('®')..=u32::from('ÿ'))
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    bs.into_iter()
        .zip(cs)
        .map(|(b, c)| (b as u8, char::from_u32(c).unwrap()))
        .collect()
}

fn texts() -> Vec<String> {
    let mut v: Vec<String> = [
        "Hello, world! This is a test of the GPT-2 tokenizer.",
        "I'm sure you'll see they've done what we'd've said. DON'T SHOUT, it's LOUD'S.",
        "fn main() {\n    let x: Vec<u32> = (0..10).map(|i| i * 2).collect();\n    println!(\"{x:?}\");\n}\n",
        "def f(a, b):\n\treturn a ** b  # power\n\n\n\nclass X:\n    pass\n",
        "Numbers: 0 1 12 123 1234 12345 123456 3.14159 -42 1e10 0x1F 2024-01-01 1,000,000",
        "Unicode: naïve café résumé Ångström straße Ελληνικά русский язык 日本語のテキスト 中文 한국어 עברית العربية",
        "Emoji: 😀😃😄 👨‍👩‍👧‍👦 🏳️‍🌈 ❤️ 👍🏽 🇫🇷 and mixed👀text",
        "Whitespace:   three   spaces\t\ttabs\n\n\nnewlines  \n  \r\n trailing   ",
        "   leading spaces",
        "trailing spaces   ",
        "\n",
        " ",
        "",
        "a",
        "<|endoftext|> is not special here <|eot|>",
        "!!!???...,,,;;;::: --- ___ === +++ *** ### @@@ $$$ %%% ^^^ &&& ||| ~~~ ```",
        "https://example.com/path?query=1&other=two#frag user@example.org",
        "ALLCAPS lowercase MiXeD CamelCaseWord snake_case_word kebab-case-word",
        "'s 't 're 've 'm 'll 'd 'S 'T 'RE 'VE 'M 'LL 'D",
        "\u{0}\u{1}\u{7f}\u{80}\u{ff}\u{100}\u{fffd}\u{10ffff}",
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        "                                                                                                    x",
        "\t\t\t\n\n\n \n \n\r\r\n\u{a0}\u{2003}\u{3000}x",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Random strings over a mixed alphabet, so that rare splits are exercised too.
    let alphabet: Vec<char> = "aAbBzZ 0123456789'.,!?-_\n\t\r  éßжλ中日😀👍🏽\u{200d}\u{a0}<|>"
        .chars()
        .collect();
    let mut rng = chatforge_data::Rng::new(11);
    for _ in 0..300 {
        let len = rng.below(80) as usize;
        v.push(
            (0..len)
                .map(|_| alphabet[rng.below(alphabet.len() as u64) as usize])
                .collect(),
        );
    }
    v
}

fn shakespeare() -> Option<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/tinyshakespeare/input.txt");
    match std::fs::read_to_string(&path) {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!(
                "SKIPPED the tinyshakespeare part: {} not readable ({e})",
                path.display()
            );
            None
        }
    }
}

fn assert_parity(bpe: &CoreBPE, tok: &Tokenizer, text: &str) {
    let expect: Vec<u32> = bpe.encode_ordinary(text);
    let got = tok.encode(text);
    assert_eq!(got, expect, "ids differ on {text:?}");
    assert_eq!(tok.decode(&got).unwrap(), text);
}

#[test]
fn r50k_ids_equal_tiktoken() {
    let (bpe, tok) = r50k();
    assert_eq!(tok.num_merges(), 50000);
    assert_eq!(tok.vocab_size(), 50256 + Special::COUNT);
    for t in texts() {
        assert_parity(bpe, tok, &t);
    }
    if let Some(s) = shakespeare() {
        assert_parity(bpe, tok, &s);
        for line in s.lines() {
            assert_parity(bpe, tok, line);
        }
    }
    // Pinned by hand from OpenAI's GPT-2 vocabulary: "Hello" = 15496, " world" = 995.
    assert_eq!(tok.encode("Hello world"), [15496, 995]);
}

#[test]
fn cl100k_ids_equal_tiktoken() {
    let (bpe, tok) = cl100k();
    assert_eq!(tok.num_merges(), 100000);
    for t in texts() {
        assert_parity(bpe, tok, &t);
    }
    if let Some(s) = shakespeare() {
        assert_parity(bpe, tok, &s);
    }
    // Pinned from cl100k_base: "hello world" = [15339, 1917].
    assert_eq!(tok.encode("hello world"), [15339, 1917]);
}

/// encoder.json + vocab.bpe written from the r50k ranks, loaded with `from_gpt2_str`.
#[test]
fn gpt2_files_from_ranks_load_identically() {
    let (bpe, from_ranks) = r50k();
    let b2u = python_bytes_to_unicode();
    let to_str = |bytes: &[u8]| -> String { bytes.iter().map(|b| b2u[b]).collect() };
    let mut encoder = serde_json::Map::new();
    for id in 0..50256u32 {
        encoder.insert(to_str(from_ranks.token_bytes(id).unwrap()), id.into());
    }
    encoder.insert("<|endoftext|>".into(), 50256.into());
    let mut vocab_bpe = String::from("#version: 0.2\n");
    for &(l, r) in from_ranks.merges() {
        let (l, r) = (
            from_ranks.token_bytes(l).unwrap(),
            from_ranks.token_bytes(r).unwrap(),
        );
        vocab_bpe.push_str(&format!("{} {}\n", to_str(l), to_str(r)));
    }
    let encoder_json = serde_json::Value::Object(encoder).to_string();
    let tok = Tokenizer::from_gpt2_str(&encoder_json, &vocab_bpe, GPT2_PATTERN).unwrap();
    assert_eq!(tok.merges(), from_ranks.merges());
    assert_eq!(tok.byte_ids(), from_ranks.byte_ids());
    assert_eq!(tok.special(Special::Eot), 50256);
    assert_eq!(tok.specials()[0].text, "<|endoftext|>");
    assert_eq!(tok.vocab_size(), 50257 + Special::COUNT - 1);
    for t in texts() {
        assert_parity(bpe, &tok, &t);
    }
    // GPT-2's special token is recognised only on request.
    assert_eq!(tok.encode_with_special("a<|endoftext|>"), [64, 50256]);
    assert!(!tok.encode("a<|endoftext|>").contains(&50256));
}

/// The real files from tiktoken-rs's source in the cargo registry, when they can be found.
#[test]
fn real_gpt2_files_match() {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    let found = home.and_then(|h| {
        std::fs::read_dir(h.join("registry/src"))
            .ok()?
            .flatten()
            .find_map(|index| {
                let dir = index.path().join("tiktoken-rs-0.12.1/assets");
                dir.join("vocab.bpe").is_file().then_some(dir)
            })
    });
    let Some(dir) = found else {
        eprintln!("SKIPPED: tiktoken-rs-0.12.1/assets/{{encoder.json,vocab.bpe}} not found under $CARGO_HOME");
        return;
    };
    let tok = Tokenizer::from_gpt2_files(dir.join("encoder.json"), dir.join("vocab.bpe")).unwrap();
    let (bpe, from_ranks) = r50k();
    assert_eq!(tok.merges(), from_ranks.merges());
    assert_eq!(tok.byte_ids(), from_ranks.byte_ids());
    for t in texts().iter().take(40) {
        assert_parity(bpe, &tok, t);
    }
}
