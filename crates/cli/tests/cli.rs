//! The `chatforge` binary as a user runs it: the README's pipeline on a small world, and bad
//! input ending in a one-line error that names the file and the problem, never a panic.

use std::path::Path;
use std::process::{Command, Output};

fn chatforge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chatforge"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit code 1 with one `error: …` line that mentions every `needles`, and no panic.
fn assert_clean_error(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    for n in needles {
        assert!(lines[0].contains(n), "{n:?} not in {:?}", lines[0]);
    }
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn world_tokenizer_pretrain_sample_pipeline() {
    let tmp = tempfile::tempdir().unwrap();
    let world = tmp.path().join("world");
    let o = chatforge(&[
        "world",
        "--seed",
        "3",
        "--corpus-bytes",
        "120000",
        "--out",
        p(&world),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(world.join("world.json").is_file());
    let train = world.join("corpus/train.txt");
    let val = world.join("corpus/val.txt");

    let tok = tmp.path().join("tok.json");
    let o = chatforge(&[
        "tokenizer",
        "train",
        "--input",
        p(&train),
        "--vocab-size",
        "300",
        "--out",
        p(&tok),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));

    let cfg = tmp.path().join("pretrain.toml");
    std::fs::write(
        &cfg,
        "preset = \"tiny\"\ncontext_length = 32\nbatch_size = 2\nsteps = 4\n\
         eval_every = 2\nsample_every = 4\nsample_tokens = 8\n[optim]\nwarmup_steps = 1\n",
    )
    .unwrap();
    let run = tmp.path().join("run");
    let o = chatforge(&[
        "pretrain",
        "--train",
        p(&train),
        "--val",
        p(&val),
        "--tokenizer",
        p(&tok),
        "--out",
        p(&run),
        "--config",
        p(&cfg),
        "--checkpoint-every",
        "2",
    ]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("val loss"), "{err}");
    assert!(err.contains("sample:"), "{err}");
    assert!(run
        .join("checkpoints/step-00000004/MANIFEST.json")
        .is_file());
    assert_eq!(
        std::fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .filter(|l| !l.contains("\"eval\""))
            .count(),
        4
    );

    let o = chatforge(&[
        "sample",
        "--model",
        p(&run),
        "--prompt",
        "The capital of",
        "--max-tokens",
        "12",
        "--temperature",
        "0",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout.clone()).unwrap();
    assert!(text.starts_with("The capital of"), "{text}");
    // Greedy decoding ignores the seed.
    let again = chatforge(&[
        "sample",
        "--model",
        p(&run),
        "--prompt",
        "The capital of",
        "--max-tokens",
        "12",
        "--temperature",
        "0",
        "--seed",
        "99",
    ]);
    assert_eq!(o.stdout, again.stdout);

    // SFT on the world's demonstrations, with held-out task accuracy.
    let sft = tmp.path().join("sft");
    let o = chatforge(&[
        "sft",
        "--model",
        p(&run),
        "--train",
        p(&world.join("sft/train.jsonl")),
        "--val",
        p(&world.join("sft/val.jsonl")),
        "--tasks",
        p(&world.join("sft/val_tasks.jsonl")),
        "--out",
        p(&sft),
        "--steps",
        "3",
        "--batch-size",
        "4",
        "--eval-tasks",
        "4",
        "--eval-every",
        "3",
    ]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("task accuracy"), "{err}");
    let table = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(table.contains("| **all** |"), "{table}");

    // Chat: streams replies, takes commands, refuses an over-long message without crashing.
    let long = "word ".repeat(400);
    let mut child = Command::new(env!("CARGO_BIN_EXE_chatforge"))
        .args(["chat", "--model", p(&sft), "--max-tokens", "8"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        writeln!(
            stdin,
            "Hello?\n/temp 0\n/bogus\n{long}\nWho is there?\n/reset"
        )
        .unwrap();
    }
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("(set to 0)"), "{err}");
    assert!(err.contains("unknown command /bogus"), "{err}");
    assert!(err.contains("please send something shorter"), "{err}");
    assert!(err.contains("(conversation cleared)"), "{err}");
    assert_eq!(err.matches("bot> ").count(), 2, "{err}");

    // A truncated checkpoint file is detected, named, and never loaded.
    let ck = run.join("checkpoints/step-00000004");
    let weights = ck.join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let o = chatforge(&["sample", "--model", p(&ck), "--prompt", "x"]);
    assert_clean_error(&o, &["model.safetensors"]);
}

#[test]
fn bad_input_ends_in_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");

    // A missing corpus file.
    let o = chatforge(&[
        "tokenizer",
        "train",
        "--input",
        "/no/such/corpus.txt",
        "--out",
        p(&out.join("t.json")),
    ]);
    assert_clean_error(&o, &["/no/such/corpus.txt"]);

    // A corpus that is not UTF-8: the file and the line.
    let bad = tmp.path().join("latin1.txt");
    std::fs::write(&bad, b"fine line\nsecond line caf\xe9\n").unwrap();
    let o = chatforge(&[
        "tokenizer",
        "train",
        "--input",
        p(&bad),
        "--out",
        p(&out.join("t.json")),
    ]);
    assert_clean_error(&o, &["latin1.txt", "2"]);

    // A config with an unknown field.
    let good = tmp.path().join("good.txt");
    std::fs::write(&good, "a b c\n<|eot|>\nd e f\n").unwrap();
    let tok = tmp.path().join("tok.json");
    let o = chatforge(&[
        "tokenizer",
        "train",
        "--input",
        p(&good),
        "--vocab-size",
        "270",
        "--out",
        p(&tok),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let cfg = tmp.path().join("typo.toml");
    std::fs::write(&cfg, "batch_sise = 4\n").unwrap();
    let o = chatforge(&[
        "pretrain",
        "--train",
        p(&good),
        "--tokenizer",
        p(&tok),
        "--out",
        p(&out),
        "--config",
        p(&cfg),
    ]);
    assert_clean_error(&o, &["typo.toml", "batch_sise"]);

    // A tokenizer file that is not a tokenizer.
    let junk = tmp.path().join("junk.json");
    std::fs::write(&junk, b"{\"merges\": 12}").unwrap();
    let o = chatforge(&[
        "pretrain",
        "--train",
        p(&good),
        "--tokenizer",
        p(&junk),
        "--out",
        p(&out),
    ]);
    assert_clean_error(&o, &["junk.json"]);

    // A run directory with no checkpoint.
    let o = chatforge(&["sample", "--model", p(tmp.path()), "--prompt", "x"]);
    assert_clean_error(&o, &["no complete checkpoint"]);
}

#[test]
fn the_device_flag_is_checked_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    // An unknown name: clap's usage error, saying what is accepted.
    let o = chatforge(&[
        "pretrain",
        "--world",
        "1",
        "--out",
        p(&out),
        "--device",
        "gpu",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("cpu, cuda or cuda:N"), "{}", stderr(&o));
    assert!(!out.exists(), "nothing may be written for a bad flag");

    // CUDA in a binary built without it: one line that says how to get it, before any work.
    #[cfg(not(feature = "cuda"))]
    {
        for args in [
            vec![
                "pretrain",
                "--world",
                "1",
                "--out",
                p(&out),
                "--device",
                "cuda",
            ],
            vec![
                "sample",
                "--model",
                p(&out),
                "--prompt",
                "x",
                "--device",
                "cuda:1",
            ],
            vec!["bench", "train", "--no-peer", "--device", "cuda"],
        ] {
            let o = chatforge(&args);
            assert_clean_error(&o, &["built without CUDA", "--features cuda"]);
        }
        assert!(!out.exists(), "no world or tokenizer may be written");
    }
}
