//! Conversations: serde shape, validation rules, and every bad-record case of the reader
//! (TESTING.md family 9) with exact line numbers and counters.

use super::*;
use std::fs;

const STRICT: ReadOptions = ReadOptions {
    skip_bad_records: false,
};
const SKIP: ReadOptions = ReadOptions {
    skip_bad_records: true,
};

fn conv(msgs: &[(Role, &str)]) -> Conversation {
    Conversation::new(msgs.iter().map(|&(r, c)| Message::new(r, c)).collect())
}

fn file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, text).unwrap();
    p
}

fn read_one(path: &Path, opts: &ReadOptions) -> Result<(Vec<Conversation>, ReadStats)> {
    read_conversations(&[path.to_path_buf()], opts)
}

const GOOD: &str = r#"{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}"#;

#[test]
fn serde_shape_is_trl() {
    let c = conv(&[
        (Role::System, "Be brief."),
        (Role::User, "2+2?"),
        (Role::Assistant, "4."),
    ]);
    let json = serde_json::to_string(&c).unwrap();
    assert_eq!(
        json,
        r#"{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"2+2?"},{"role":"assistant","content":"4."}]}"#
    );
    let back: Conversation = serde_json::from_str(&json).unwrap();
    assert_eq!(back, c);
    // Extra top-level fields are ignored; unknown fields inside a message are not.
    let extra = r#"{"id": 7, "messages": [{"role": "user", "content": "a"}], "source": "x"}"#;
    assert_eq!(
        serde_json::from_str::<Conversation>(extra).unwrap(),
        conv(&[(Role::User, "a")])
    );
    let bad = r#"{"role": "user", "content": "a", "name": "bob"}"#;
    assert!(serde_json::from_str::<Message>(bad).is_err());
    assert!(serde_json::from_str::<Role>(r#""User""#).is_err());
    assert_eq!(Role::parse("assistant"), Some(Role::Assistant));
    assert_eq!(Role::parse("bot"), None);
}

#[test]
fn validate_accepts_good_conversations() {
    conv(&[(Role::User, "a"), (Role::Assistant, "b")])
        .validate()
        .unwrap();
    conv(&[
        (Role::System, "s"),
        (Role::User, "a"),
        (Role::Assistant, "b"),
        (Role::User, "c"),
        (Role::Assistant, "d"),
    ])
    .validate()
    .unwrap();
    validate_prompt(&[Message::system("s"), Message::user("q")]).unwrap();
}

#[test]
fn validate_names_what_is_wrong() {
    use Role::*;
    let cases: &[(&[(Role, &str)], &str)] = &[
        (&[], "no messages"),
        (
            &[(User, "a"), (System, "s"), (Assistant, "b")],
            "message 1: a system message is only allowed first",
        ),
        (
            &[(Assistant, "b")],
            "message 0: expected a user message, found assistant",
        ),
        (
            &[(System, "s"), (Assistant, "b")],
            "message 1: expected a user message, found assistant",
        ),
        (
            &[(User, "a"), (User, "b"), (Assistant, "c")],
            "message 1: expected an assistant message, found user",
        ),
        (
            &[(User, "a"), (Assistant, "b"), (User, "c")],
            "the last message must be from the assistant, found user",
        ),
        (
            &[(System, "s")],
            "the last message must be from the assistant, found system",
        ),
        (
            &[(User, "a"), (Assistant, "")],
            "message 1 (assistant): content is empty",
        ),
        (
            &[(User, " \n\t"), (Assistant, "b")],
            "message 0 (user): content is empty",
        ),
    ];
    for (msgs, want) in cases {
        match conv(msgs).validate() {
            Err(Error::InvalidConversation { reason }) => assert_eq!(&reason, want),
            other => panic!("{msgs:?}: {other:?}"),
        }
    }
    let err = validate_prompt(&[Message::user("q"), Message::assistant("a")]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid conversation: the last message must be from the user, found assistant"
    );
}

#[test]
fn conversation_prompt_and_reply() {
    let c = conv(&[(Role::User, "q"), (Role::Assistant, "a")]);
    assert_eq!(c.reply(), Some("a"));
    assert_eq!(c.prompt(), &[Message::user("q")]);
    let p = conv(&[(Role::User, "q")]);
    assert_eq!(p.reply(), None);
    assert_eq!(p.prompt().len(), 1);
}

#[test]
fn write_then_read_roundtrips_and_leaves_no_temp_file() {
    let d = tempfile::tempdir().unwrap();
    let convs = vec![
        conv(&[(Role::User, "Hi"), (Role::Assistant, "Hello!")]),
        conv(&[
            (Role::System, "Answer in \"quotes\".\nTwo lines."),
            (Role::User, "ünïcödé ✓ <|eot|>"),
            (Role::Assistant, "ok"),
            (Role::User, "again"),
            (Role::Assistant, "  spaced  "),
        ]),
    ];
    let p = d.path().join("sft").join("train.jsonl");
    write_conversations(&p, &convs).unwrap();
    let text = fs::read_to_string(&p).unwrap();
    assert_eq!(text.lines().count(), 2);
    let (back, stats) = read_one(&p, &STRICT).unwrap();
    assert_eq!(back, convs);
    let bytes: usize = convs
        .iter()
        .flat_map(|c| &c.messages)
        .map(|m| m.content.len())
        .sum();
    assert_eq!(
        stats,
        ReadStats {
            documents: 2,
            bytes,
            skipped_bad: 0,
            skipped_empty: 0
        }
    );
    assert_eq!(fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
}

#[test]
fn writer_refuses_invalid_conversations() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("x.jsonl");
    let convs = vec![
        conv(&[(Role::User, "a"), (Role::Assistant, "b")]),
        conv(&[(Role::User, "a")]),
    ];
    match write_conversations(&p, &convs) {
        Err(Error::UnwritableConversation { index, reason }) => {
            assert_eq!(index, 1);
            assert_eq!(
                reason,
                "the last message must be from the assistant, found user"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(!p.exists());
}

#[test]
fn extra_fields_crlf_and_blank_lines_are_fine() {
    let d = tempfile::tempdir().unwrap();
    let text = format!(
        "\n{}\r\n   \n{{\"prompt\": \"x\", \"messages\": [{{\"content\": \"q\", \"role\": \"user\"}}, {{\"role\": \"assistant\", \"content\": \"a\"}}], \"score\": [1, 2]}}\n",
        GOOD
    );
    let p = file(d.path(), "a.jsonl", &text);
    let (convs, stats) = read_one(&p, &STRICT).unwrap();
    assert_eq!(convs.len(), 2);
    assert_eq!(convs[1], conv(&[(Role::User, "q"), (Role::Assistant, "a")]));
    assert_eq!(
        (stats.documents, stats.bytes, stats.skipped_bad),
        (2, 10, 0)
    );
}

/// Every kind of bad record: the strict reader names its line and what is wrong.
#[test]
fn every_bad_record_is_an_error_with_file_and_line() {
    let d = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str)] = &[
        ("{\"messages\": [", "bad JSON: EOF while parsing"),
        ("[1, 2]", "bad JSON: expected a JSON object"),
        ("\"text\"", "bad JSON: expected a JSON object"),
        ("{\"text\": \"hi\"}", "record has no \"messages\" field"),
        ("{\"messages\": null}", "\"messages\" is null, expected an array"),
        (
            "{\"messages\": \"hi\"}",
            "\"messages\" is a string, expected an array",
        ),
        ("{\"messages\": []}", "no messages"),
        (
            "{\"messages\": [\"hi\"]}",
            "message 0 is a string, expected an object",
        ),
        (
            "{\"messages\": [{\"role\": \"user\", \"content\": \"a\", \"name\": \"b\"}]}",
            "message 0: unknown field \"name\" (a message has only \"role\" and \"content\")",
        ),
        (
            "{\"messages\": [{\"content\": \"a\"}]}",
            "message 0 has no \"role\"",
        ),
        (
            "{\"messages\": [{\"role\": 1, \"content\": \"a\"}]}",
            "message 0: \"role\" is a number, expected a string",
        ),
        (
            "{\"messages\": [{\"role\": \"User\", \"content\": \"a\"}]}",
            "message 0: unknown role \"User\" (expected system, user or assistant)",
        ),
        (
            "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"bot\", \"content\": \"b\"}]}",
            "message 1: unknown role \"bot\" (expected system, user or assistant)",
        ),
        (
            "{\"messages\": [{\"role\": \"user\"}]}",
            "message 0 has no \"content\"",
        ),
        (
            "{\"messages\": [{\"role\": \"user\", \"content\": 5}]}",
            "message 0: \"content\" is a number, expected a string",
        ),
        (
            "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"a\"}]}]}",
            "message 0: \"content\" is an array, expected a string",
        ),
        (
            "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\", \"content\": \"\"}]}",
            "message 1 (assistant): content is empty",
        ),
        (
            "{\"messages\": [{\"role\": \"assistant\", \"content\": \"b\"}]}",
            "message 0: expected a user message, found assistant",
        ),
        (
            "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}]}",
            "the last message must be from the assistant, found user",
        ),
        (
            "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"system\", \"content\": \"s\"}, {\"role\": \"assistant\", \"content\": \"b\"}]}",
            "message 1: a system message is only allowed first",
        ),
    ];
    for (k, (line, want)) in cases.iter().enumerate() {
        // The bad record on line 3, after a good record and a blank line.
        let p = file(
            d.path(),
            &format!("bad{k}.jsonl"),
            &format!("{GOOD}\n\n{line}\n{GOOD}\n"),
        );
        let err = read_one(&p, &STRICT).unwrap_err();
        let msg = err.to_string();
        let prefix = format!("{}:3: ", p.display());
        assert!(msg.starts_with(&prefix), "{msg}");
        assert!(msg[prefix.len()..].starts_with(want), "{k}: {msg} / {want}");
        match (&err, want.starts_with("bad JSON")) {
            (Error::BadJson { line: 3, .. }, true)
            | (Error::BadConversation { line: 3, .. }, false) => {}
            _ => panic!("{k}: wrong variant {err:?}"),
        }
    }
}

#[test]
fn invalid_utf8_names_line_and_offset() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("u.jsonl");
    let mut bytes = format!("{GOOD}\n").into_bytes();
    let first = bytes.len();
    bytes.extend_from_slice(b"{\"messages\": \"\xff\"}\n");
    fs::write(&p, &bytes).unwrap();
    match read_one(&p, &STRICT).unwrap_err() {
        Error::InvalidUtf8 { line, offset, .. } => {
            assert_eq!(line, 2);
            assert_eq!(offset, first as u64 + 14);
        }
        e => panic!("{e:?}"),
    }
    let (convs, stats) = read_one(&p, &SKIP).unwrap();
    assert_eq!((convs.len(), stats.skipped_bad), (1, 1));
}

/// With skip_bad_records every bad line is skipped and counted, and the good ones are kept.
#[test]
fn skip_bad_records_counts_exactly() {
    let d = tempfile::tempdir().unwrap();
    let lines = [
        GOOD,
        "not json",
        "{\"text\": \"pretraining record\"}",
        "",
        "{\"messages\": [{\"role\": \"user\", \"content\": 1}]}",
        "{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}, {\"role\": \"assistant\", \"content\": \"a!\"}]}",
        "{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}, {\"role\": \"assistant\", \"content\": \" \"}]}",
        "{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}, {\"role\": \"user\", \"content\": \"q\"}]}",
        "{\"messages\": {}}",
    ];
    let p = file(d.path(), "mixed.jsonl", &(lines.join("\n") + "\n"));
    assert!(read_one(&p, &STRICT).is_err());
    let (convs, stats) = read_one(&p, &SKIP).unwrap();
    assert_eq!(convs.len(), 2);
    assert_eq!(
        stats,
        ReadStats {
            documents: 2,
            bytes: "Hi".len() + "Hello!".len() + "q".len() + "a!".len(),
            skipped_bad: 6,
            skipped_empty: 0,
        }
    );
}

#[test]
fn directories_read_jsonl_files_in_name_order() {
    let d = tempfile::tempdir().unwrap();
    let one = r#"{"messages": [{"role": "user", "content": "1"}, {"role": "assistant", "content": "one"}]}"#;
    let two = r#"{"messages": [{"role": "user", "content": "2"}, {"role": "assistant", "content": "two"}]}"#;
    file(d.path(), "b.jsonl", two);
    file(d.path(), "a.jsonl", one);
    file(d.path(), "notes.txt", "ignored");
    let (convs, stats) = read_one(d.path(), &STRICT).unwrap();
    let replies: Vec<&str> = convs.iter().filter_map(|c| c.reply()).collect();
    assert_eq!(replies, ["one", "two"]);
    assert_eq!(stats.documents, 2);
    let empty = d.path().join("empty");
    fs::create_dir(&empty).unwrap();
    assert!(matches!(
        read_one(&empty, &STRICT),
        Err(Error::NoInputFiles { .. })
    ));
    assert!(matches!(
        read_one(&d.path().join("missing.jsonl"), &STRICT),
        Err(Error::NotFound { .. })
    ));
}
