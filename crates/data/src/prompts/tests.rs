//! Prompt sets: serde shape, round trip, the task a record rebuilds, and every bad-record case
//! with exact line numbers and counters (TESTING.md family 9).

use super::*;
use crate::world::grade;
use std::fs;

const STRICT: ReadOptions = ReadOptions {
    skip_bad_records: false,
};
const SKIP: ReadOptions = ReadOptions {
    skip_bad_records: true,
};

fn file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, text).unwrap();
    p
}

fn arith() -> PromptRecord {
    PromptRecord {
        prompt: vec![Message::user("What is 7 + 5?")],
        reference: Some("7 + 5 = 12.".into()),
        task: Some(TaskSpec {
            kind: TaskKind::Arithmetic,
            answer: Answer::Number(12),
        }),
    }
}

#[test]
fn serde_shape_is_pinned() {
    assert_eq!(
        serde_json::to_string(&arith()).unwrap(),
        r#"{"prompt":[{"role":"user","content":"What is 7 + 5?"}],"reference":"7 + 5 = 12.","task":{"kind":"arithmetic","answer":{"number":12}}}"#
    );
    let bare = PromptRecord {
        prompt: vec![Message::user("Hi")],
        reference: None,
        task: None,
    };
    assert_eq!(
        serde_json::to_string(&bare).unwrap(),
        r#"{"prompt":[{"role":"user","content":"Hi"}]}"#
    );
}

#[test]
fn write_then_read_round_trips() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("sets").join("p.jsonl");
    let recs = vec![
        arith(),
        PromptRecord {
            prompt: vec![
                Message::system("Be brief."),
                Message::user("Where does Druk live?"),
                Message::assistant("Druk lives in Flythholm."),
                Message::user("And how old is he?"),
            ],
            reference: None,
            task: Some(TaskSpec {
                kind: TaskKind::MultiTurn,
                answer: Answer::Contains(vec!["34".into()]),
            }),
        },
        PromptRecord {
            prompt: vec![Message::user("Tell me a story.")],
            reference: None,
            task: None,
        },
    ];
    write_prompts(&p, &recs).unwrap();
    let (back, stats) = read_prompts(&[p], &STRICT).unwrap();
    assert_eq!(back, recs);
    assert_eq!(stats.documents, 3);
    let bytes = "What is 7 + 5?7 + 5 = 12.".len()
        + "Be brief.Where does Druk live?Druk lives in Flythholm.And how old is he?".len()
        + "Tell me a story.".len();
    assert_eq!(stats.bytes, bytes);
}

#[test]
fn writer_refuses_invalid_records() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("p.jsonl");
    let bad_prompt = PromptRecord {
        prompt: vec![Message::assistant("x")],
        ..arith()
    };
    let empty_ref = PromptRecord {
        reference: Some(" ".into()),
        ..arith()
    };
    for (rec, want) in [
        (bad_prompt, "expected a user message"),
        (empty_ref, "empty"),
    ] {
        let err = write_prompts(&p, &[arith(), rec]).unwrap_err();
        match &err {
            Error::UnwritablePrompt { index: 1, reason } => {
                assert!(reason.contains(want), "{reason}")
            }
            e => panic!("{e}"),
        }
        assert!(!p.exists());
    }
}

#[test]
fn task_rebuilds_a_gradable_conversation() {
    let t = arith().task().unwrap();
    t.conversation.validate().unwrap();
    assert_eq!(t.conversation.prompt(), arith().prompt.as_slice());
    assert_eq!(t.conversation.reply(), Some("7 + 5 = 12."));
    assert_eq!(
        (t.kind, &t.answer),
        (TaskKind::Arithmetic, &Answer::Number(12))
    );
    assert!(grade(&t, "It is 12."));
    assert!(!grade(&t, "It is 13."));
    // Without a reference the reply is the placeholder, so the conversation still validates.
    let no_ref = PromptRecord {
        reference: None,
        ..arith()
    };
    let t = no_ref.task().unwrap();
    t.conversation.validate().unwrap();
    assert_eq!(t.conversation.reply(), Some(NO_REFERENCE));
    // Without a task there is nothing to grade.
    let no_task = PromptRecord {
        task: None,
        ..arith()
    };
    assert!(no_task.task().is_none());
}

const OK_LINE: &str = r#"{"prompt": "q"}"#;

const BAD: &[(&str, &str)] = &[
    (r#"{"reference": "a"}"#, "record has no \"prompt\" field"),
    (
        r#"{"prompt": "q", "refrence": "a"}"#,
        "unknown field \"refrence\"",
    ),
    (
        r#"{"prompt": ""}"#,
        "\"prompt\": message 0 (user): content is empty",
    ),
    (r#"{"prompt": []}"#, "\"prompt\": no messages"),
    (r#"{"prompt": 3}"#, "\"prompt\" is a number"),
    (
        r#"{"prompt": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}"#,
        "the last message must be from the user",
    ),
    (
        r#"{"prompt": [{"role": "user"}]}"#,
        "message 0 has no \"content\"",
    ),
    (
        r#"{"prompt": "q", "reference": ""}"#,
        "\"reference\" is empty",
    ),
    (
        r#"{"prompt": "q", "reference": 12}"#,
        "\"reference\" is a number",
    ),
    (
        r#"{"prompt": "q", "task": {"kind": "poetry", "answer": "refusal"}}"#,
        "\"task\": unknown variant `poetry`",
    ),
    (
        r#"{"prompt": "q", "task": {"kind": "refusal"}}"#,
        "\"task\": missing field `answer`",
    ),
    (
        r#"{"prompt": "q", "task": {"kind": "refusal", "answer": "refusal", "x": 1}}"#,
        "\"task\": unknown field `x`",
    ),
    (
        r#"{"prompt": "q", "task": {"kind": "arithmetic", "answer": {"number": -1}}}"#,
        "\"task\":",
    ),
    (r#"{"prompt": "q""#, "bad JSON"),
    (r#""q""#, "bad JSON: expected a JSON object"),
];

#[test]
fn every_bad_record_is_an_error_with_file_and_line() {
    let d = tempfile::tempdir().unwrap();
    for (i, (bad, want)) in BAD.iter().enumerate() {
        let p = file(
            d.path(),
            &format!("b{i}.jsonl"),
            &format!("{OK_LINE}\n{bad}\n"),
        );
        let err = read_prompts(std::slice::from_ref(&p), &STRICT)
            .unwrap_err()
            .to_string();
        let at = format!("{}:2: ", p.display());
        assert!(err.starts_with(&at), "{err:?} should start with {at:?}");
        assert!(err.contains(want), "{err:?} should contain {want:?}");
    }
}

#[test]
fn skip_bad_records_counts_exactly() {
    let d = tempfile::tempdir().unwrap();
    let mut text = String::new();
    for (bad, _) in BAD {
        text.push_str(&format!("{OK_LINE}\n{bad}\n\n"));
    }
    let mut bytes = text.into_bytes();
    bytes.extend_from_slice(b"{\"prompt\": \"\xc3\"}\n");
    let p = d.path().join("mixed.jsonl");
    fs::write(&p, bytes).unwrap();
    let (recs, stats) = read_prompts(&[p], &SKIP).unwrap();
    assert_eq!(stats.skipped_bad, BAD.len() + 1);
    assert_eq!((recs.len(), stats.documents), (BAD.len(), BAD.len()));
    assert!(recs.iter().all(|r| r.prompt == vec![Message::user("q")]));
}
