//! Corpus reading: formats, separators, and every bad-record case (TESTING.md family 9), with
//! exact counters.

use super::*;
use std::fs;

const STRICT: ReadOptions = ReadOptions {
    skip_bad_records: false,
};
const SKIP: ReadOptions = ReadOptions {
    skip_bad_records: true,
};

fn file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, bytes).unwrap();
    p
}

fn read_one(path: &Path, opts: &ReadOptions) -> Result<(Vec<String>, ReadStats)> {
    read_documents(&[path.to_path_buf()], opts)
}

fn stats(documents: usize, bytes: usize, skipped_bad: usize, skipped_empty: usize) -> ReadStats {
    ReadStats {
        documents,
        bytes,
        skipped_bad,
        skipped_empty,
    }
}

#[test]
fn txt_write_read_roundtrip() {
    let d = tempfile::tempdir().unwrap();
    let docs: Vec<String> = vec![
        "One line.".into(),
        "Two paragraphs.\n\nSecond one,\nwith a break.".into(),
        "Ends with a newline\n".into(),
        "  leading spaces and a CRLF\r\nline".into(),
        "<|eot|> inside a line is just text".into(),
    ];
    let p = d.path().join("c.txt");
    write_txt(&p, &docs).unwrap();
    let raw = fs::read_to_string(&p).unwrap();
    assert!(raw.starts_with("One line.\n<|eot|>\nTwo paragraphs.\n\nSecond one,"));
    let (got, st) = read_one(&p, &STRICT).unwrap();
    assert_eq!(got, docs);
    let bytes = docs.iter().map(String::len).sum();
    assert_eq!(st, stats(5, bytes, 0, 0));
}

#[test]
fn render_txt_refuses_documents_that_would_not_read_back() {
    for (doc, reason) in [
        ("a\n<|eot|>\nb", "separator"),
        ("a\r\n<|eot|>\r\nb", "separator"),
        (" \n\t", "empty"),
        ("", "empty"),
        ("trailing cr\r", "carriage"),
    ] {
        match render_txt(&["fine".to_string(), doc.to_string()]) {
            Err(Error::UnwritableDocument {
                index: 1,
                reason: r,
            }) => {
                assert!(r.contains(reason), "{doc:?}: {r}")
            }
            other => panic!("{doc:?}: {other:?}"),
        }
    }
}

#[test]
fn txt_without_separator_is_one_verbatim_document() {
    let d = tempfile::tempdir().unwrap();
    let text =
        "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n";
    let p = file(d.path(), "shakespeare.txt", text.as_bytes());
    let (docs, st) = read_one(&p, &STRICT).unwrap();
    assert_eq!(docs, [text]);
    assert_eq!(st, stats(1, text.len(), 0, 0));
}

#[test]
fn txt_separator_edge_cases() {
    let d = tempfile::tempdir().unwrap();
    // Leading separator (empty doc), CRLF separator, whitespace-only doc, two separators in a
    // row (empty doc), a line that merely contains the separator, and a tail without one.
    let text =
        "<|eot|>\nA\r\n<|eot|>\r\n  \n\t\n<|eot|>\n<|eot|>\nB <|eot|>\n <|eot|>\n<|eot|>\nC\n";
    let p = file(d.path(), "e.txt", text.as_bytes());
    let (docs, st) = read_one(&p, &STRICT).unwrap();
    assert_eq!(docs, ["A", "B <|eot|>\n <|eot|>", "C\n"]);
    assert_eq!(st, stats(3, 1 + 18 + 2, 0, 3));
}

#[test]
fn txt_empty_file_counts_one_empty_document() {
    let d = tempfile::tempdir().unwrap();
    let p = file(d.path(), "empty.txt", b"");
    let (docs, st) = read_one(&p, &STRICT).unwrap();
    assert!(docs.is_empty());
    assert_eq!(st, stats(0, 0, 0, 1));
}

#[test]
fn txt_invalid_utf8_names_line_and_offset() {
    let d = tempfile::tempdir().unwrap();
    // Line 3 starts at file offset 11 ("ok\n<|eot|>\n" is 11 bytes); the bad byte 0xFF
    // follows "x\u{e9}" (1 + 2 bytes), so its file offset is 11 + 3 = 14.
    let mut bytes = b"ok\n<|eot|>\n".to_vec();
    bytes.extend_from_slice("x\u{e9}".as_bytes());
    bytes.extend_from_slice(&[0xFF, b'y', b'\n']);
    bytes.extend_from_slice(b"more of the bad doc\n<|eot|>\nlast\n");
    let p = file(d.path(), "bad.txt", &bytes);
    match read_one(&p, &STRICT) {
        Err(Error::InvalidUtf8 { path, line, offset }) => {
            assert_eq!((path, line, offset), (p.clone(), 3, 14));
        }
        other => panic!("{other:?}"),
    }
    let (docs, st) = read_one(&p, &SKIP).unwrap();
    assert_eq!(docs, ["ok", "last\n"]);
    assert_eq!(st, stats(2, 7, 1, 0));
}

#[test]
fn jsonl_reads_text_ignores_other_fields_and_blank_lines() {
    let d = tempfile::tempdir().unwrap();
    let text = concat!(
        "{\"text\": \"hello\", \"id\": 1, \"meta\": {\"a\": [1, 2]}}\n",
        "\n",
        "   \r\n",
        "{\"source\": \"x\", \"text\": \"line\\nbreak \\u00e9\"}\r\n",
        "{\"text\": \"no trailing newline\"}"
    );
    let p = file(d.path(), "a.jsonl", text.as_bytes());
    let (docs, st) = read_one(&p, &STRICT).unwrap();
    assert_eq!(docs, ["hello", "line\nbreak \u{e9}", "no trailing newline"]);
    assert_eq!(st, stats(3, 5 + 13 + 19, 0, 0));
}

/// Each bad line on its own, strictly: the error names the file, the 1-based line and the fault.
#[test]
fn jsonl_each_bad_record_is_a_precise_error() {
    let d = tempfile::tempdir().unwrap();
    let good = "{\"text\": \"fine\"}\n";
    let cases: Vec<(&[u8], &str)> = vec![
        (b"{\"text\": \"unterminated}\n", "bad json"),
        (b"[\"text\"]\n", "not an object"),
        (b"\"just a string\"\n", "not an object"),
        (b"{\"txt\": \"typo\"}\n", "missing"),
        (b"{\"text\": 5}\n", "a number"),
        (b"{\"text\": null}\n", "null"),
        (b"{\"text\": [\"a\"]}\n", "an array"),
        (b"{\"text\": \"a\xFFb\"}\n", "utf8"),
    ];
    for (i, (bad, kind)) in cases.into_iter().enumerate() {
        let mut bytes = good.as_bytes().to_vec();
        bytes.extend_from_slice(b"\n"); // a blank line still counts as a line
        bytes.extend_from_slice(bad);
        bytes.extend_from_slice(good.as_bytes());
        let p = file(d.path(), &format!("bad{i}.jsonl"), &bytes);
        let err = read_one(&p, &STRICT).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with(&format!("{}:3: ", p.display())), "{msg}");
        match (kind, &err) {
            (
                "bad json",
                Error::BadJson {
                    line: 3, message, ..
                },
            ) => {
                assert!(message.contains("EOF"), "{message}")
            }
            (
                "not an object",
                Error::BadJson {
                    line: 3, message, ..
                },
            ) => {
                assert_eq!(message, "expected a JSON object")
            }
            ("missing", Error::MissingText { line: 3, .. }) => {}
            ("a number" | "null" | "an array", Error::TextNotString { line: 3, found, .. }) => {
                assert_eq!(*found, kind)
            }
            // good line (17 bytes) + blank line (1) + `{"text": "a` (11) = offset 29.
            (
                "utf8",
                Error::InvalidUtf8 {
                    line: 3,
                    offset: 29,
                    ..
                },
            ) => {}
            _ => panic!("{kind}: {err:?}"),
        }
        let (docs, st) = read_one(&p, &SKIP).unwrap();
        assert_eq!(docs, ["fine", "fine"]);
        assert_eq!(st, stats(2, 8, 1, 0), "{kind}");
    }
}

#[test]
fn jsonl_skip_counts_every_kind_exactly() {
    let d = tempfile::tempdir().unwrap();
    let mut bytes = Vec::new();
    bytes.extend_from_slice(b"{\"text\": \"one\"}\n");
    bytes.extend_from_slice(b"{broken\n");
    bytes.extend_from_slice(b"{\"text\": \"\"}\n"); // empty
    bytes.extend_from_slice(b"{\"text\": \" \\n\\t \"}\n"); // whitespace only: empty
    bytes.extend_from_slice(b"{\"other\": 1}\n");
    bytes.extend_from_slice(b"{\"text\": true}\n");
    bytes.extend_from_slice(b"\xC3\x28\n"); // invalid UTF-8
    bytes.extend_from_slice(b"{\"text\": \"two\"}\n");
    let p = file(d.path(), "mixed.jsonl", &bytes);
    let (docs, st) = read_one(&p, &SKIP).unwrap();
    assert_eq!(docs, ["one", "two"]);
    assert_eq!(st, stats(2, 6, 4, 2));
    // Strictly, the first bad line stops the read; empty documents alone are never an error.
    assert!(matches!(
        read_one(&p, &STRICT),
        Err(Error::BadJson { line: 2, .. })
    ));
}

#[test]
fn missing_file_and_unsupported_extension() {
    let d = tempfile::tempdir().unwrap();
    let missing = d.path().join("nope.jsonl");
    match read_one(&missing, &SKIP) {
        Err(Error::NotFound { path }) => assert_eq!(path, missing),
        other => panic!("{other:?}"),
    }
    let csv = file(d.path(), "data.csv", b"text\nhello\n");
    match read_one(&csv, &SKIP) {
        Err(Error::UnsupportedFormat { path }) => assert_eq!(path, csv),
        other => panic!("{other:?}"),
    }
}

#[test]
fn directory_reads_txt_and_jsonl_in_sorted_order() {
    let d = tempfile::tempdir().unwrap();
    file(
        d.path(),
        "b.jsonl",
        b"{\"text\": \"b1\"}\n{\"text\": \"b2\"}\n",
    );
    file(d.path(), "a.txt", b"a1\n<|eot|>\na2\n<|eot|>\n");
    file(d.path(), "c.txt", b"c1");
    file(d.path(), "notes.md", b"ignored");
    fs::create_dir(d.path().join("sub")).unwrap();
    file(&d.path().join("sub"), "z.txt", b"not recursed into");
    let extra = file(d.path(), "extra.jsonl", b"{\"text\": \"x\"}\n");
    let dir = d.path().to_path_buf();
    let (docs, st) = read_documents(&[dir.clone(), extra], &STRICT).unwrap();
    // The directory's files (a, b, c, extra) in order, then the explicit file again.
    assert_eq!(docs, ["a1", "a2", "b1", "b2", "c1", "x", "x"]);
    assert_eq!(st, stats(7, 12, 0, 0));

    let empty = d.path().join("sub2");
    fs::create_dir(&empty).unwrap();
    match read_documents(std::slice::from_ref(&empty), &STRICT) {
        Err(Error::NoInputFiles { path }) => assert_eq!(path, empty),
        other => panic!("{other:?}"),
    }
}

/// A 100 MB line, in both formats: read in one pass, no panic, exact sizes.
#[test]
fn hundred_megabyte_lines() {
    const N: usize = 100 << 20;
    let d = tempfile::tempdir().unwrap();
    let mut big = vec![b'x'; N];

    let mut jsonl = b"{\"text\": \"".to_vec();
    jsonl.extend_from_slice(&big);
    jsonl.extend_from_slice(b"\"}\n{\"text\": \"after\"}\n");
    let p = file(d.path(), "big.jsonl", &jsonl);
    drop(jsonl);
    let (docs, st) = read_one(&p, &STRICT).unwrap();
    assert_eq!(st, stats(2, N + 5, 0, 0));
    assert!(docs[0].len() == N && docs[0].bytes().all(|b| b == b'x'));
    assert_eq!(docs[1], "after");
    drop(docs);

    big.extend_from_slice(b"\n<|eot|>\nafter\n<|eot|>\n");
    let p = file(d.path(), "big.txt", &big);
    drop(big);
    let (docs, st) = read_one(&p, &STRICT).unwrap();
    assert_eq!(st, stats(2, N + 5, 0, 0));
    assert_eq!(docs[0].len(), N);
    assert_eq!(docs[1], "after");
}
