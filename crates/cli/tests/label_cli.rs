//! `chatforge label` on bad input: one `error:` line naming the problem, before any model or
//! socket is touched, and never a panic. (The page itself: `label_browser.rs`.)

use std::process::{Command, Output};

fn label(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chatforge"))
        .arg("label")
        .args(args)
        .output()
        .expect("the binary runs")
}

fn assert_clean_error(o: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    for n in needles {
        assert!(lines[0].contains(n), "{n:?} not in {:?}", lines[0]);
    }
}

#[test]
fn bad_arguments_and_files_end_in_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    let prompts = tmp.path().join("prompts.jsonl");
    let out = tmp.path().join("rankings.jsonl");
    let (prompts_s, out_s) = (prompts.to_str().unwrap(), out.to_str().unwrap());
    let base = |k: &str, model: &str| {
        label(&[
            "--model",
            model,
            "--prompts",
            prompts_s,
            "--k",
            k,
            "--out",
            out_s,
        ])
    };

    assert_clean_error(&base("12", dir), &["--k 12", "2 to 9"]);
    assert_clean_error(&base("4", dir), &["prompts.jsonl"]);

    std::fs::write(
        &prompts,
        "{\"prompt\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n{\"prompt\": 3}\n",
    )
    .unwrap();
    assert_clean_error(&base("4", dir), &["prompts.jsonl:2"]);

    std::fs::write(
        &prompts,
        "{\"prompt\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n",
    )
    .unwrap();
    let missing = tmp.path().join("no-such-model");
    assert_clean_error(&base("4", missing.to_str().unwrap()), &["no-such-model"]);
    assert!(!out.exists(), "nothing is written before the model loads");
}
