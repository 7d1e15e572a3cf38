//! TESTING.md family 8 for tokenizer files: every broken or hostile file gives a typed error,
//! never a panic, and nothing large is allocated before validation.

mod common;

use chatforge_tokenizer::{Error, Tokenizer, GPT2_PATTERN};
use proptest::prelude::*;
use serde_json::{json, Value};

/// The JSON text of a small valid tokenizer (trained once).
fn valid_text() -> &'static str {
    static CELL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    CELL.get_or_init(|| common::trained(300).to_json())
}

fn valid() -> Value {
    serde_json::from_str(valid_text()).unwrap()
}

fn load(v: &Value) -> Result<Tokenizer, Error> {
    Tokenizer::from_json(&v.to_string())
}

/// Applies `edit` to a valid file and returns the load error.
fn broken(edit: impl FnOnce(&mut Value)) -> Error {
    let mut v = valid();
    edit(&mut v);
    match load(&v) {
        Ok(_) => panic!("accepted a broken file"),
        Err(e) => e,
    }
}

#[test]
fn valid_file_loads() {
    let tok = load(&valid()).unwrap();
    assert_eq!(tok.vocab_size(), 300);
}

#[test]
fn malformed_json() {
    for text in [
        "",
        "{",
        "[1,2]",
        "null",
        "{\"format\":\"chatforge-bpe\"}",
        "\u{feff}{}",
    ] {
        assert!(
            matches!(Tokenizer::from_json(text), Err(Error::Json(_))),
            "{text:?}"
        );
    }
    // Deep nesting hits serde_json's recursion limit, not the stack.
    let deep = format!(
        "{{\"format\":\"chatforge-bpe\",\"version\":1,\"x\":{}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert!(matches!(Tokenizer::from_json(&deep), Err(Error::Json(_))));
    assert!(matches!(broken(|v| v["extra"] = json!(1)), Error::Json(_)));
    assert!(matches!(
        broken(|v| v["merges"][0] = json!([1, 2, 3])),
        Error::Json(_)
    ));
    assert!(matches!(
        broken(|v| v["merges"][0] = json!([4294967296u64, 1])),
        Error::Json(_)
    ));
    assert!(matches!(
        broken(|v| v["merges"][0] = json!([-1, 1])),
        Error::Json(_)
    ));
}

#[test]
fn wrong_format_or_version() {
    assert!(matches!(
        broken(|v| v["format"] = json!("huggingface")),
        Error::UnsupportedFormat { .. }
    ));
    assert!(matches!(
        broken(|v| v["version"] = json!(2)),
        Error::UnsupportedFormat { version: 2, .. }
    ));
}

#[test]
fn bad_byte_ids() {
    assert!(matches!(
        broken(|v| {
            v["byte_ids"].as_array_mut().unwrap().pop();
        }),
        Error::ByteIds { .. }
    ));
    assert!(matches!(
        broken(|v| v["byte_ids"][3] = json!(4)),
        Error::ByteIds { .. }
    ));
    assert!(matches!(
        broken(|v| v["byte_ids"][3] = json!(256)),
        Error::ByteIds { .. }
    ));
    assert!(matches!(
        broken(|v| v["byte_ids"][3] = json!(u32::MAX)),
        Error::ByteIds { .. }
    ));
}

#[test]
fn bad_merges() {
    // Refers to an id created later (or never).
    assert!(matches!(
        broken(|v| v["merges"][0] = json!([0, 256])),
        Error::BadMerge { rank: 0, .. }
    ));
    assert!(matches!(
        broken(|v| v["merges"][5] = json!([u32::MAX, 0])),
        Error::BadMerge { rank: 5, .. }
    ));
    // The same pair twice.
    let e = broken(|v| {
        let first = v["merges"][0].clone();
        v["merges"][1] = first;
    });
    assert!(matches!(e, Error::BadMerge { rank: 1, .. }), "{e}");
    // Each merge doubling the previous token: rejected by length before it is built.
    let e = broken(|v| {
        let mut merges = vec![json!([97, 97])];
        merges.extend((0..29).map(|i| json!([256 + i, 256 + i])));
        v["merges"] = json!(merges);
        let n = merges.len();
        for (i, s) in v["specials"].as_array_mut().unwrap().iter_mut().enumerate() {
            s["id"] = json!(256 + n + i);
        }
    });
    assert!(
        matches!(
            e,
            Error::TokenTooLong {
                rank: 16,
                len: 131072,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn bad_specials() {
    assert!(matches!(
        broken(|v| v["specials"][0]["id"] = json!(5)),
        Error::SpecialId { id: 5, .. }
    ));
    assert!(matches!(
        broken(|v| v["specials"][0]["id"] = json!(1u64 << 40)),
        Error::Json(_)
    ));
    assert!(matches!(
        broken(|v| v["specials"][1]["text"] = v["specials"][0]["text"].clone()),
        Error::BadSpecial { .. }
    ));
    assert!(matches!(
        broken(|v| v["specials"][1]["text"] = json!("")),
        Error::BadSpecial { .. }
    ));
    assert!(matches!(
        broken(|v| v["specials"][1]["role"] = v["specials"][0]["role"].clone()),
        Error::BadSpecial { .. }
    ));
    assert!(matches!(
        broken(|v| v["specials"][1]["role"] = json!(null)),
        Error::MissingRole { role: "eot" }
    ));
    assert!(matches!(
        broken(|v| v["specials"][1]["role"] = json!("wizard")),
        Error::Json(_)
    ));
    assert!(matches!(
        broken(|v| {
            v["specials"].as_array_mut().unwrap().pop();
        }),
        Error::MissingRole { .. }
    ));
    // An extra control token without a role is fine.
    let mut v = valid();
    v["specials"]
        .as_array_mut()
        .unwrap()
        .push(json!({"id": 300, "text": "<|extra|>", "role": null}));
    let tok = load(&v).unwrap();
    assert_eq!(tok.encode_with_special("<|extra|>"), [300]);
}

#[test]
fn bad_pattern() {
    assert!(matches!(
        broken(|v| v["pattern"] = json!("(unclosed")),
        Error::Pattern { .. }
    ));
}

#[test]
fn file_errors_carry_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.json");
    match Tokenizer::load(&missing) {
        Err(Error::Io { path, .. }) => assert_eq!(path, missing),
        other => panic!("{other:?}"),
    }
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\"format\":\"chatforge-bpe\",\"version\":1}").unwrap();
    match Tokenizer::load(&bad) {
        Err(Error::File { path, source }) => {
            assert_eq!(path, bad);
            assert!(matches!(*source, Error::Json(_)));
        }
        other => panic!("{other:?}"),
    }
    let binary = dir.path().join("binary.json");
    std::fs::write(&binary, [0xff, 0xfe, 0x00, 0x7b]).unwrap();
    assert!(matches!(Tokenizer::load(&binary), Err(Error::Io { .. })));
    // A (sparse) 512 MiB file is refused from its size, without being read.
    let huge = dir.path().join("huge.json");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(1 << 29)
        .unwrap();
    match Tokenizer::load(&huge) {
        Err(Error::File { source, .. }) => assert!(matches!(*source, Error::FileTooLarge { .. })),
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_gpt2_and_tiktoken_files() {
    let tiktoken = |s: &str| Tokenizer::from_tiktoken_str(s, GPT2_PATTERN);
    let bytes: String = (0..=255u8)
        .map(|b| {
            use base64::Engine as _;
            format!(
                "{} {b}\n",
                base64::engine::general_purpose::STANDARD.encode([b])
            )
        })
        .collect();
    assert!(tiktoken(&bytes).is_ok());
    assert!(matches!(tiktoken(&format!("{bytes}YWI= 256\n")), Ok(t) if t.merges() == [(97, 98)]));
    for (bad, why) in [
        ("!!!! 256\n", "bad base64"),
        ("YWI= x\n", "bad rank"),
        ("YWI= 300\n", "gap"),
        ("YWI= 4000000000\n", "huge rank"),
        ("YQ== 256\n", "rank twice"),
        ("YWJj 256\n", "not a merge of two lower ranks"),
        ("noSpace\n", "no separator"),
    ] {
        let e = tiktoken(&format!("{bytes}{bad}"))
            .err()
            .unwrap_or_else(|| panic!("accepted: {why}"));
        assert!(matches!(e, Error::Vocab { .. }), "{why}: {e}");
    }
    assert!(matches!(tiktoken("YQ== 0\n"), Err(Error::Vocab { .. })));

    let gpt2 = |enc: &str, bpe: &str| Tokenizer::from_gpt2_str(enc, bpe, GPT2_PATTERN);
    let table = chatforge_tokenizer::gpt2::bytes_to_unicode();
    let mut enc: serde_json::Map<String, Value> =
        (0..256).map(|b| (table[b].to_string(), json!(b))).collect();
    enc.insert("ab".into(), json!(256));
    let enc_text = Value::Object(enc.clone()).to_string();
    let tok = gpt2(&enc_text, "#version: 0.2\na b\n").unwrap();
    assert_eq!(tok.merges(), [(u32::from(b'a'), u32::from(b'b'))]);
    assert_eq!(tok.encode("ab"), [256]);
    assert!(matches!(
        gpt2(&enc_text, "#version: 0.2\na c\n"),
        Err(Error::Vocab { line: 2, .. })
    ));
    assert!(matches!(
        gpt2(&enc_text, "#version: 0.2\na b c\n"),
        Err(Error::Vocab { line: 2, .. })
    ));
    assert!(matches!(
        gpt2(&enc_text, "#version: 0.2\nq z\n"),
        Err(Error::Vocab { line: 2, .. })
    ));
    assert!(matches!(gpt2("{", ""), Err(Error::Vocab { .. })));
    let mut dup = enc.clone();
    dup.insert("xyz".into(), json!(3));
    assert!(matches!(
        gpt2(&Value::Object(dup).to_string(), ""),
        Err(Error::Vocab { .. })
    ));
    let mut far = enc;
    far.insert("xyz".into(), json!(u32::MAX));
    assert!(matches!(
        gpt2(&Value::Object(far).to_string(), ""),
        Err(Error::Vocab { .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    /// Random byte edits of a valid file: an error or a working tokenizer, never a panic.
    #[test]
    fn mutated_files_never_panic(edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..6)) {
        let mut bytes = valid_text().as_bytes().to_vec();
        for (at, byte, kind) in edits {
            let at = at % (bytes.len() + 1);
            match kind {
                0 if at < bytes.len() => bytes[at] = byte,
                1 => bytes.insert(at, byte),
                _ if at < bytes.len() => { bytes.remove(at); }
                _ => {}
            }
        }
        if let Ok(text) = String::from_utf8(bytes) {
            if let Ok(tok) = Tokenizer::from_json(&text) {
                let s = "the cat sat on the mat 😀";
                prop_assert_eq!(tok.decode(&tok.encode(s)).unwrap(), s);
            }
        }
    }
}
