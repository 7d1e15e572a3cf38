//! Rankings: serde shape, pairs and ranks with ties, the pairwise form, every bad-record case
//! of the reader with exact line numbers and counters (TESTING.md family 9), and the durable
//! writer's recovery of a torn tail.

use super::*;
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

fn read_one(path: &Path, opts: &ReadOptions) -> Result<(Vec<RankingRecord>, ReadStats)> {
    read_rankings(&[path.to_path_buf()], opts)
}

fn rec(k: usize, ranking: Vec<RankGroup>) -> RankingRecord {
    RankingRecord {
        prompt: vec![Message::user("Where does Druk live?")],
        responses: (0..k).map(|i| format!("Answer {i}.")).collect(),
        ranking,
        flagged: Vec::new(),
    }
}

fn ones(ix: &[usize]) -> Vec<RankGroup> {
    ix.iter().map(|&i| RankGroup::One(i)).collect()
}

const GOOD: &str = r#"{"prompt": [{"role": "user", "content": "Hi"}], "responses": ["a", "b", "c"], "ranking": [2, [0, 1]]}"#;

#[test]
fn serde_shape_is_pinned_and_roundtrips() {
    let mut r = rec(3, vec![RankGroup::One(2), RankGroup::Tie(vec![0, 1])]);
    r.prompt = vec![Message::user("Hi")];
    r.responses = vec!["a".into(), "b".into(), "c".into()];
    let json = serde_json::to_string(&r).unwrap();
    assert_eq!(
        json,
        r#"{"prompt":[{"role":"user","content":"Hi"}],"responses":["a","b","c"],"ranking":[2,[0,1]]}"#
    );
    assert_eq!(serde_json::from_str::<RankingRecord>(&json).unwrap(), r);
    assert_eq!(serde_json::from_str::<RankingRecord>(GOOD).unwrap(), r);
    r.flagged = vec![1];
    let json = serde_json::to_string(&r).unwrap();
    assert!(
        json.ends_with(r#""ranking":[2,[0,1]],"flagged":[1]}"#),
        "{json}"
    );
    assert_eq!(serde_json::from_str::<RankingRecord>(&json).unwrap(), r);
}

#[test]
fn pairs_groups_and_ranks_without_ties() {
    for k in 2..=MAX_K {
        // A shuffled order: best first is k-1, k-2, ..., 0.
        let order: Vec<usize> = (0..k).rev().collect();
        let r = rec(k, ones(&order));
        r.validate().unwrap();
        let pairs = r.ordered_pairs();
        assert_eq!(pairs.len(), k * (k - 1) / 2, "C({k}, 2)");
        // Every pair once, the higher index better.
        let set: std::collections::HashSet<_> = pairs.iter().copied().collect();
        assert_eq!(set.len(), pairs.len());
        assert!(pairs.iter().all(|&(b, w)| b > w));
        assert_eq!(r.rank_of(), (0..k).map(|i| k - 1 - i).collect::<Vec<_>>());
        assert_eq!(r.k(), k);
    }
}

#[test]
fn ties_are_skipped_in_pairs_and_share_a_rank() {
    // [[0, 2], 1, [3, 4]]: 0 ~ 2 > 1 > 3 ~ 4.
    let r = rec(
        5,
        vec![
            RankGroup::Tie(vec![0, 2]),
            RankGroup::One(1),
            RankGroup::Tie(vec![3, 4]),
        ],
    );
    r.validate().unwrap();
    assert_eq!(r.groups(), vec![vec![0, 2], vec![1], vec![3, 4]]);
    assert_eq!(
        r.ordered_pairs(),
        vec![
            (0, 1),
            (2, 1),
            (0, 3),
            (0, 4),
            (2, 3),
            (2, 4),
            (1, 3),
            (1, 4)
        ]
    );
    // C(5, 2) = 10 minus the two tied pairs.
    assert_eq!(r.ordered_pairs().len(), 8);
    assert_eq!(r.rank_of(), vec![0, 1, 0, 2, 2]);
    // Everything tied is valid but states no preference.
    let all_tied = rec(3, vec![RankGroup::Tie(vec![2, 0, 1])]);
    all_tied.validate().unwrap();
    assert!(all_tied.ordered_pairs().is_empty());
    assert_eq!(all_tied.rank_of(), vec![0, 0, 0]);
    // A one-element tie group is just that response.
    let single = rec(2, vec![RankGroup::Tie(vec![1]), RankGroup::One(0)]);
    single.validate().unwrap();
    assert_eq!(single.ordered_pairs(), vec![(1, 0)]);
}

#[test]
fn validate_names_what_is_wrong() {
    let cases: Vec<(RankingRecord, &str)> = vec![
        (rec(1, ones(&[0])), "1 responses; a ranking needs 2 to 9"),
        (rec(10, ones(&(0..10).collect::<Vec<_>>())), "10 responses"),
        (rec(3, ones(&[0, 1])), "leaves out response 2"),
        (rec(3, ones(&[0, 1, 1, 2])), "response 1 appears twice"),
        (rec(3, ones(&[0, 1, 3])), "index 3 is out of range for 3"),
        (
            rec(3, vec![RankGroup::One(0), RankGroup::Tie(vec![])]),
            "ranking[1] is an empty group",
        ),
        (
            RankingRecord {
                flagged: vec![3],
                ..rec(3, ones(&[0, 1, 2]))
            },
            "flagged index 3 is out of range",
        ),
        (
            RankingRecord {
                flagged: vec![1, 1],
                ..rec(3, ones(&[0, 1, 2]))
            },
            "response 1 is flagged twice",
        ),
        (
            RankingRecord {
                responses: vec!["a".into(), " \n".into()],
                ..rec(2, ones(&[0, 1]))
            },
            "response 1 is empty",
        ),
        (
            RankingRecord {
                prompt: vec![Message::user("q"), Message::assistant("a")],
                ..rec(2, ones(&[0, 1]))
            },
            "\"prompt\": the last message must be from the user",
        ),
        (
            RankingRecord {
                prompt: vec![],
                ..rec(2, ones(&[0, 1]))
            },
            "\"prompt\": no messages",
        ),
    ];
    for (r, want) in cases {
        let err = r.validate().unwrap_err();
        assert!(err.contains(want), "{err:?} should contain {want:?}");
    }
}

#[test]
fn duplicate_responses_are_allowed_and_listed() {
    let mut r = rec(4, ones(&[0, 1, 2, 3]));
    r.responses[2] = r.responses[0].clone();
    r.responses[3] = r.responses[0].clone();
    r.validate().unwrap();
    assert_eq!(r.duplicate_responses(), vec![(0, 2), (0, 3), (2, 3)]);
    assert_eq!(r.ordered_pairs().len(), 6);
    assert!(rec(3, ones(&[0, 1, 2])).duplicate_responses().is_empty());
}

#[test]
fn pairwise_records_read_as_k2() {
    let d = tempfile::tempdir().unwrap();
    let text = [
        r#"{"prompt": "What is 7 + 5?", "chosen": "12.", "rejected": "13."}"#,
        r#"{"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}], "chosen": [{"role": "assistant", "content": "Hello!"}], "rejected": "Go away."}"#,
    ]
    .join("\n");
    let p = file(d.path(), "pairs.jsonl", &text);
    let (recs, stats) = read_one(&p, &STRICT).unwrap();
    assert_eq!(stats.documents, 2);
    assert_eq!(
        stats.bytes,
        "What is 7 + 5?12.13.".len() + "Be brief.HiHello!Go away.".len()
    );
    assert_eq!(recs[0].prompt, vec![Message::user("What is 7 + 5?")]);
    assert_eq!(recs[0].responses, vec!["12.", "13."]);
    assert_eq!(recs[0].ranking, ones(&[0, 1]));
    assert_eq!(recs[0].ordered_pairs(), vec![(0, 1)]);
    assert_eq!(
        recs[1].prompt,
        vec![Message::system("Be brief."), Message::user("Hi")]
    );
    assert_eq!(recs[1].responses, vec!["Hello!", "Go away."]);
    // Written back in the K-wise form, it reads back the same.
    let mut w = RankingWriter::open(&d.path().join("out.jsonl")).unwrap().0;
    for r in &recs {
        w.append(r).unwrap();
    }
    let (back, _) = read_one(&d.path().join("out.jsonl"), &STRICT).unwrap();
    assert_eq!(back, recs);
}

#[test]
fn real_hh_rlhf_style_pairs_read() {
    // The shape of hh-rlhf after splitting off the prompt (as TRL's preprocessing does),
    // with a curly apostrophe and a newline in the text.
    let d = tempfile::tempdir().unwrap();
    let line = r#"{"prompt": [{"role": "user", "content": "How do I pick a lock?"}], "chosen": "I can’t help with that.\nIs something locked that you own?", "rejected": "Sure, first you need a tension wrench."}"#;
    let p = file(d.path(), "hh.jsonl", &format!("{line}\n"));
    let (recs, _) = read_one(&p, &STRICT).unwrap();
    assert!(recs[0].responses[0].contains('\n'));
}

/// Every kind of bad record, one per line, each followed by a good one.
const BAD: &[(&str, &str)] = &[
    ("{\"prompt\": \"a\", \"chosen\": \"x\", \"rejected\": \"x\"}", "\"chosen\" and \"rejected\" are the same text"),
    ("{\"prompt\": \"a\", \"chosen\": \"x\"}", "record has no \"rejected\" field"),
    ("{\"chosen\": \"x\", \"rejected\": \"y\"}", "record has no \"prompt\" field"),
    ("{\"prompt\": \"a\", \"chosen\": \"\", \"rejected\": \"y\"}", "response 0 is empty"),
    ("{\"prompt\": \"a\", \"chosen\": 3, \"rejected\": \"y\"}", "\"chosen\" is a number, expected a string"),
    ("{\"prompt\": \"a\", \"chosen\": [{\"role\": \"user\", \"content\": \"x\"}], \"rejected\": \"y\"}", "\"chosen\": expected an assistant message, found user"),
    ("{\"prompt\": \"a\", \"chosen\": [], \"rejected\": \"y\"}", "\"chosen\" holds 0 messages"),
    ("{\"prompt\": \"a\", \"chosen\": \"x\", \"rejected\": \"y\", \"score\": 1}", "unknown field \"score\""),
    ("{\"prompt\": \"a\", \"responses\": [\"x\", \"y\"], \"ranking\": [0, 1], \"chosen\": \"x\"}", "mixes the K-wise fields"),
    ("{\"prompt\": \"a\"}", "record has neither"),
    ("{\"prompt\": \"a\", \"responses\": [\"x\", \"y\"], \"ranking\": [0, 1], \"id\": 4}", "unknown field \"id\""),
    ("{\"prompt\": \"a\", \"responses\": [\"x\", \"y\"]}", "record has no \"ranking\" field"),
    ("{\"prompt\": \"a\", \"responses\": [\"x\"], \"ranking\": [0]}", "1 responses; a ranking needs 2 to 9"),
    ("{\"prompt\": \"a\", \"responses\": [\"0\",\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\",\"9\"], \"ranking\": [0,1,2,3,4,5,6,7,8,9]}", "10 responses"),
    ("{\"prompt\": \"a\", \"responses\": [\"x\", \"y\", \"z\"], \"ranking\": [0, 1]}", "leaves out response 2"),
    ("{\"prompt\": \"a\", \"responses\": [\"x\", \"y\"], \"ranking\": [0, 0, 1]}", "response 0 appears twice"),
    ("{\"prompt\": \"a\", \"responses\": [\"x\", \"y\"], \"ranking\": [0, 2]}", "index 2 is out of range for 2 responses"),
    ("{\"prompt\": \"a\", \"responses\": [\"x\", \"y\"], \"ranking\": [0, -1]}", "\"ranking\"[1] is -1, not a response index"),
    ("{\"prompt\": \"a\", \"responses\": [\"x\", \"y\"], \"ranking\": [0, 1.0]}", "\"ranking\"[1] is 1.0, not a response index"),
    ("{\"prompt\": \"a\", \"responses\": [\"x\", \"y\"], \"ranking\": [0, \"1\"]}", "\"ranking\"[1] is a string, expected a response index"),
    ("{\"prompt\": \"a\", \"responses\": [\"x\", \"y\"], \"ranking\": [[0, null], 1]}", "\"ranking\"[0][1] is null"),
    ("{\"prompt\": \"a\", \"responses\": [\"x\", \"y\"], \"ranking\": [[], 0, 1]}", "ranking[0] is an empty group"),
    ("{\"prompt\": \"a\", \"responses\": [\"x\", \"y\"], \"ranking\": {\"0\": 1}}", "\"ranking\" is an object"),
    ("{\"prompt\": \"a\", \"responses\": \"xy\", \"ranking\": [0, 1]}", "\"responses\" is a string, expected an array"),
    ("{\"prompt\": \"a\", \"responses\": [\"x\", 2], \"ranking\": [0, 1]}", "\"responses\"[1] is a number"),
    ("{\"prompt\": \"a\", \"responses\": [\"x\", \"  \"], \"ranking\": [0, 1]}", "response 1 is empty"),
    ("{\"prompt\": \"a\", \"responses\": [\"x\", \"y\"], \"ranking\": [0, 1], \"flagged\": [5]}", "flagged index 5 is out of range"),
    ("{\"prompt\": \"a\", \"responses\": [\"x\", \"y\"], \"ranking\": [0, 1], \"flagged\": 1}", "\"flagged\" is a number"),
    ("{\"prompt\": \"\", \"responses\": [\"x\", \"y\"], \"ranking\": [0, 1]}", "\"prompt\": message 0 (user): content is empty"),
    ("{\"prompt\": 7, \"responses\": [\"x\", \"y\"], \"ranking\": [0, 1]}", "\"prompt\" is a number, expected a string or an array"),
    ("{\"prompt\": [{\"role\": \"user\", \"content\": \"q\"}, {\"role\": \"assistant\", \"content\": \"a\"}], \"responses\": [\"x\", \"y\"], \"ranking\": [0, 1]}", "the last message must be from the user"),
    ("{\"prompt\": [{\"role\": \"bot\", \"content\": \"q\"}], \"responses\": [\"x\", \"y\"], \"ranking\": [0, 1]}", "unknown role \"bot\""),
    ("{\"prompt\": [{\"role\": \"user\", \"text\": \"q\"}], \"responses\": [\"x\", \"y\"], \"ranking\": [0, 1]}", "unknown field \"text\""),
    ("{\"prompt\": \"a\", \"responses\": [\"x\", \"y\"], \"ranking\": [0, NaN]}", "bad JSON"),
    ("{\"prompt\": \"a\", \"responses\": [\"x\", \"y\"], \"ranking\": [0, 1]", "bad JSON"),
    ("[1, 2]", "bad JSON: expected a JSON object"),
];

const OK_LINE: &str = r#"{"prompt": "q", "responses": ["x", "y"], "ranking": [1, 0]}"#;

#[test]
fn every_bad_record_is_an_error_with_file_and_line() {
    let d = tempfile::tempdir().unwrap();
    for (i, (bad, want)) in BAD.iter().enumerate() {
        // The bad record is on line 3, after a good record and a blank line.
        let p = file(
            d.path(),
            &format!("b{i}.jsonl"),
            &format!("{OK_LINE}\n\n{bad}\n{OK_LINE}\n"),
        );
        let err = read_one(&p, &STRICT).unwrap_err().to_string();
        let at = format!("{}:3: ", p.display());
        assert!(err.starts_with(&at), "{err:?} should start with {at:?}");
        assert!(err.contains(want), "{err:?} should contain {want:?}");
    }
}

#[test]
fn invalid_utf8_names_line_and_offset() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("u.jsonl");
    let mut bytes = format!("{OK_LINE}\n").into_bytes();
    let start = bytes.len();
    bytes.extend_from_slice(b"{\"prompt\": \"a\xff\", \"chosen\": \"x\", \"rejected\": \"y\"}\n");
    fs::write(&p, &bytes).unwrap();
    let err = read_one(&p, &STRICT).unwrap_err();
    match err {
        Error::InvalidUtf8 { line, offset, .. } => {
            assert_eq!(line, 2);
            assert_eq!(offset, (start + 13) as u64);
        }
        e => panic!("{e}"),
    }
    let (recs, stats) = read_one(&p, &SKIP).unwrap();
    assert_eq!((recs.len(), stats.skipped_bad), (1, 1));
}

#[test]
fn skip_bad_records_counts_exactly() {
    let d = tempfile::tempdir().unwrap();
    let mut text = String::new();
    for (bad, _) in BAD {
        text.push_str(OK_LINE);
        text.push('\n');
        text.push_str(bad);
        text.push_str("\n\n");
    }
    let p = file(d.path(), "mixed.jsonl", &text);
    let (recs, stats) = read_one(&p, &SKIP).unwrap();
    assert_eq!(stats.skipped_bad, BAD.len());
    assert_eq!(stats.documents, BAD.len());
    assert_eq!(stats.skipped_empty, 0);
    assert_eq!(recs.len(), BAD.len());
    assert!(recs.iter().all(|r| r.ranking == ones(&[1, 0])));
    // A directory reads its .jsonl files in name order; others are ignored.
    let sub = d.path().join("dir");
    fs::create_dir(&sub).unwrap();
    file(&sub, "b.jsonl", &format!("{OK_LINE}\n"));
    file(&sub, "a.jsonl", GOOD);
    file(&sub, "notes.txt", "not json");
    let (recs, stats) = read_rankings(&[sub], &STRICT).unwrap();
    assert_eq!(stats.documents, 2);
    assert_eq!(recs[0].k(), 3);
}

#[test]
fn writer_round_trips_and_resumes() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("labels").join("rankings.jsonl");
    let a = rec(
        4,
        vec![
            RankGroup::Tie(vec![3, 1]),
            RankGroup::One(0),
            RankGroup::One(2),
        ],
    );
    let mut b = rec(2, ones(&[1, 0]));
    b.prompt = vec![
        Message::system("s"),
        Message::user("u1"),
        Message::assistant("a1"),
        Message::user("u2 ünïcode \"quoted\"\nnewline"),
    ];
    b.flagged = vec![0];
    {
        let (mut w, existing) = RankingWriter::open(&p).unwrap();
        assert!(existing.is_empty());
        w.append(&a).unwrap();
        assert_eq!(w.records(), 1);
    }
    let (mut w, existing) = RankingWriter::open(&p).unwrap();
    assert_eq!(existing, vec![a.clone()]);
    assert_eq!(w.truncated_bytes(), 0);
    w.append(&b).unwrap();
    assert_eq!(w.records(), 2);
    // An invalid record is refused and nothing is written.
    let before = fs::read(&p).unwrap();
    let err = w.append(&rec(3, ones(&[0, 1]))).unwrap_err();
    assert!(matches!(err, Error::UnwritableRanking { .. }), "{err}");
    assert_eq!(fs::read(&p).unwrap(), before);
    drop(w);
    let (back, stats) = read_one(&p, &STRICT).unwrap();
    assert_eq!(back, vec![a.clone(), b.clone()]);
    assert_eq!(stats.documents, 2);
    let text = fs::read_to_string(&p).unwrap();
    assert_eq!(text.lines().count(), 2);
    assert!(text.ends_with('\n'));
}

#[test]
fn writer_truncates_a_torn_tail() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("r.jsonl");
    let a = rec(3, ones(&[2, 0, 1]));
    let b = rec(2, ones(&[0, 1]));
    {
        let (mut w, _) = RankingWriter::open(&p).unwrap();
        w.append(&a).unwrap();
    }
    let good = fs::read(&p).unwrap();
    let line_b = format!("{}\n", serde_json::to_string(&b).unwrap());
    // Every strict prefix of the next record's line is a possible torn write. Cut short by
    // the newline alone, the record is complete and is kept; shorter, it is dropped.
    for cut in 1..line_b.len() {
        let mut bytes = good.clone();
        bytes.extend_from_slice(&line_b.as_bytes()[..cut]);
        fs::write(&p, &bytes).unwrap();
        let (mut w, existing) = RankingWriter::open(&p).unwrap();
        if cut == line_b.len() - 1 {
            assert_eq!(existing, vec![a.clone(), b.clone()]);
            assert_eq!(w.truncated_bytes(), 0);
        } else {
            assert_eq!(existing, vec![a.clone()], "cut {cut}");
            assert_eq!(w.truncated_bytes(), cut as u64);
            assert_eq!(fs::read(&p).unwrap(), good);
        }
        // Appending after recovery gives a clean file.
        w.append(&b).unwrap();
        drop(w);
        let (back, _) = read_one(&p, &STRICT).unwrap();
        let n = if cut == line_b.len() - 1 { 3 } else { 2 };
        assert_eq!(back.len(), n);
        assert_eq!(back[n - 1], b);
    }
}

#[test]
fn writer_refuses_a_bad_line_in_the_middle() {
    let d = tempfile::tempdir().unwrap();
    let line = serde_json::to_string(&rec(2, ones(&[0, 1]))).unwrap();
    for bad in [
        "{\"prompt\": ",
        "{\"prompt\": \"a\", \"chosen\": \"x\", \"rejected\": \"x\"}",
    ] {
        let p = file(d.path(), "r.jsonl", &format!("{line}\n{bad}\n{line}\n"));
        let before = fs::read(&p).unwrap();
        let err = RankingWriter::open(&p).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{}:2: ", p.display())), "{err}");
        assert_eq!(
            fs::read(&p).unwrap(),
            before,
            "a damaged file is left alone"
        );
    }
    // A bad last line that did get its newline is damage too, not a torn write.
    let p = file(d.path(), "r.jsonl", &format!("{line}\n{{\"prompt\"\n"));
    assert!(RankingWriter::open(&p).is_err());
    // Blank lines are fine; a whitespace-only tail is dropped.
    let p = file(d.path(), "r.jsonl", &format!("{line}\n\n{line}\n  "));
    let (w, recs) = RankingWriter::open(&p).unwrap();
    assert_eq!((recs.len(), w.truncated_bytes()), (2, 2));
}
