//! `chatforge reward`, `chatforge score` and `chatforge sample --best-of-n` as a user runs them:
//! a bad rankings file is a one-line error naming file:line; a short run trains, prints its
//! summary, and its model scores files and picks the best of n samples.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::Device;
use chatforge_model::{GptConfig, Params};
use chatforge_tokenizer::{Tokenizer, TrainConfig};
use chatforge_train::artifact::{self, Meta, SaveRequest};
use chatforge_train::optim::{AdamW, OptimConfig};

fn chatforge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chatforge"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A tiny "SFT" checkpoint (fresh weights, native template).
fn sft(dir: &Path) -> PathBuf {
    let text = [
        "the cat sat on the mat",
        "gold is good",
        "Which is better? Say one.",
    ];
    let tok = Tokenizer::train(&text, &TrainConfig::with_vocab_size(280)).unwrap();
    let mut cfg = GptConfig::preset("tiny", tok.vocab_size()).unwrap();
    cfg.context_length = 48;
    cfg.n_layer = 1;
    cfg.n_embd = 32;
    cfg.n_head = 2;
    cfg.n_kv_head = 2;
    cfg.intermediate_size = 64;
    let params = Params::init(&cfg, 1, &Device::Cpu).unwrap();
    artifact::save(SaveRequest {
        run_dir: dir,
        step: 1,
        params: &params,
        model_config: &cfg,
        tokenizer: &tok,
        meta: Meta {
            stage: "sft".into(),
            step: 1,
            tokenizer_hash: tok.hash(),
            chatforge_version: "test".into(),
            config: serde_json::json!({ "template": "native" }),
        },
        optimizer: &AdamW::new(OptimConfig::default()),
        trainer_state: serde_json::json!({}),
        keep: 2,
    })
    .unwrap()
}

fn rankings(n: usize) -> String {
    (0..n)
        .map(|i| {
            serde_json::json!({
                "prompt": [{"role": "user", "content": format!("Which is better? Say one {i}.")}],
                "responses": ["gold is good", "the cat sat", "the mat"],
                "ranking": [0, [1, 2]],
            })
            .to_string()
                + "\n"
        })
        .collect()
}

#[test]
fn reward_score_and_best_of_n_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let model = sft(&tmp.path().join("sft"));
    let out = tmp.path().join("rm");

    // A bad line: one clean error naming file:line, no panic.
    let bad = tmp.path().join("bad.jsonl");
    let mut text = rankings(3);
    text.push_str(r#"{"prompt": "Hi", "responses": ["a", "b"], "ranking": [0, 0]}"#);
    text.push('\n');
    std::fs::write(&bad, text).unwrap();
    let o = chatforge(&[
        "reward",
        "--model",
        p(&model),
        "--data",
        p(&bad),
        "--out",
        p(&out),
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].contains(&format!("{}:4", bad.display())), "{err}");

    // A short run.
    let good = tmp.path().join("rankings.jsonl");
    std::fs::write(&good, rankings(40)).unwrap();
    let o = chatforge(&[
        "reward",
        "--model",
        p(&model),
        "--data",
        p(&good),
        "--out",
        p(&out),
        "--steps",
        "3",
        "--batch-size",
        "4",
        "--val-fraction",
        "0.3",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(table.contains("pairwise accuracy"), "{table}");
    assert!(stderr(&o).contains("bias shift"), "{}", stderr(&o));

    // Scoring a ranking file: one JSON line per response.
    let o = chatforge(&["score", "--reward", p(&out), "--data", p(&good)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 40 * 3);
    assert!(lines.iter().all(|v| v["score"].as_f64().is_some()));
    assert!(stderr(&o).contains("pairwise accuracy"));

    // Scoring prompt/response lines, and a bad one named by file:line.
    let pairs = tmp.path().join("pairs.jsonl");
    std::fs::write(
        &pairs,
        "{\"prompt\": \"Which is better?\", \"response\": \"gold is good\"}\n\n\
         {\"prompt\": [{\"role\": \"user\", \"content\": \"Hi\"}], \"response\": \"the mat\", \
         \"ended\": false}\n",
    )
    .unwrap();
    let o = chatforge(&["score", "--reward", p(&out), "--data", p(&pairs)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["line"], 3);
    std::fs::write(
        &pairs,
        "{\"prompt\": \"Hi\", \"response\": \"a\"}\n{\"prompt\": \"Hi\"}\n",
    )
    .unwrap();
    let o = chatforge(&["score", "--reward", p(&out), "--data", p(&pairs)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(&format!("{}:2", pairs.display())),
        "{}",
        stderr(&o)
    );

    // Best of n.
    let o = chatforge(&[
        "sample",
        "--model",
        p(&model),
        "--prompt",
        "Which is better?",
        "--best-of-n",
        "3",
        "--reward",
        p(&out),
        "--max-tokens",
        "8",
        "--show-all",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(text.matches("score ").count(), 3, "{text}");
    // --best-of-n without --reward is a usage error.
    let o = chatforge(&[
        "sample",
        "--model",
        p(&model),
        "--prompt",
        "x",
        "--best-of-n",
        "3",
    ]);
    assert!(!o.status.success());
}
