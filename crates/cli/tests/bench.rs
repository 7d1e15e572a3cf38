//! `chatforge bench train` and `bench generate` in their quick modes, and the PyTorch peer script.
//!
//! Without Python the peer tests skip with a message. With torch installed they check that the
//! peer builds the same model as ours: the benchmark itself stops with an error when the
//! first-step losses (same weights, same batch) differ by more than 1e-3, and the generate
//! benchmark reports whether the greedy tokens agree.

use std::path::PathBuf;
use std::process::{Command, Output};

fn chatforge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chatforge"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn peer_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/bench/torch_peer.py")
}

/// Whether `python3 -c code` runs and exits 0.
fn python_runs(code: &str) -> bool {
    Command::new("python3")
        .args(["-c", code])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// The cells of the table row whose first cell starts with `label`.
fn row(stdout: &str, label: &str) -> Vec<String> {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(&format!("| {label}")))
        .unwrap_or_else(|| panic!("no row {label:?} in:\n{stdout}"));
    line.trim_matches('|')
        .split('|')
        .map(|c| c.trim().to_string())
        .collect()
}

#[test]
fn bench_train_quick_mode_runs_without_the_peer() {
    let o = chatforge(&[
        "bench",
        "train",
        "--preset",
        "tiny",
        "--batch",
        "2",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--matmul",
        "64",
        "--no-peer",
    ]);
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert!(o.status.success(), "{err}");
    let step = row(&out, "median step");
    // Columns: chatforge f32, chatforge bf16 linears, PyTorch eager f32, PyTorch bf16 autocast.
    assert!(step[1].ends_with(" s"), "{step:?}");
    assert!(
        step[2].ends_with(" s"),
        "our bf16 step runs without the peer: {step:?}"
    );
    assert_eq!(step[3], "-", "no peer, no PyTorch number: {step:?}");
    assert_eq!(step[4], "-", "no peer, no PyTorch number: {step:?}");
    let loss: f64 = row(&out, "first-step loss")[1].parse().unwrap();
    // Fresh GPT-2 init gives near-uniform logits: loss ≈ ln(4096) = 8.318.
    assert!((loss - 4096f64.ln()).abs() < 0.1, "{loss}");
    assert!(
        out.contains("PyTorch peer skipped: --no-peer was given"),
        "{out}"
    );
    assert!(out.contains("GEMM ceiling (64x64x64 f32"), "{out}");
}

#[test]
fn bench_generate_quick_mode_runs_without_the_peer() {
    let o = chatforge(&[
        "bench",
        "generate",
        "--preset",
        "tiny",
        "--prompt-tokens",
        "8",
        "--new-tokens",
        "4",
        "--batch",
        "2",
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--no-peer",
    ]);
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert!(o.status.success(), "{err}");
    for label in [
        "prefill, batch 1 (1 × 8 tokens)",
        "prefill, batch 2 (2 × 8 tokens)",
        "decode, batch 1 (3 steps",
        "decode, batch 2 (2 samples of one prompt, 3 steps)",
    ] {
        let r = row(&out, label);
        assert!(r[1].contains(" tok/s"), "{r:?}");
    }
}

#[test]
fn bench_rejects_bad_settings_with_one_line_errors() {
    let o = chatforge(&["bench", "train", "--preset", "nope", "--no-peer"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("unknown preset \"nope\""),
        "{}",
        text(&o.stderr)
    );
    let o = chatforge(&[
        "bench",
        "generate",
        "--preset",
        "tiny",
        "--prompt-tokens",
        "200",
        "--new-tokens",
        "100",
        "--no-peer",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("exceed the model's context of 256"));
}

#[test]
fn torch_peer_script_parses() {
    if !python_runs("pass") {
        eprintln!("skipped: python3 is not available");
        return;
    }
    let o = Command::new("python3")
        .args([
            "-c",
            "import ast, sys; ast.parse(open(sys.argv[1]).read(), sys.argv[1])",
        ])
        .arg(peer_script())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
}

#[test]
fn torch_peer_trains_the_same_llama_model() {
    if !python_runs("import torch") {
        eprintln!("skipped: python3 with torch is not available");
        return;
    }
    // llama-tiny: RMSNorm, RoPE, SwiGLU, grouped-query attention, untied head.
    let o = chatforge(&[
        "bench",
        "train",
        "--preset",
        "llama-tiny",
        "--batch",
        "1",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--matmul",
        "0",
        "--no-bf16",
    ]);
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert!(o.status.success(), "{err}");
    let loss = row(&out, "first-step loss");
    // Columns: chatforge f32, chatforge bf16 linears, PyTorch eager f32, PyTorch bf16 autocast.
    let (ours, theirs): (f64, f64) = (loss[1].parse().unwrap(), loss[3].parse().unwrap());
    assert!((ours - theirs).abs() < 1e-4, "{ours} vs {theirs}");
    let step = row(&out, "median step");
    assert!(step[3].ends_with(" s"), "{out}");
    assert_eq!(step[2], "-", "--no-bf16 skips our bf16 steps too: {out}");
}

#[test]
fn torch_peer_generates_the_same_greedy_tokens() {
    if !python_runs("import torch") {
        eprintln!("skipped: python3 with torch is not available");
        return;
    }
    let o = chatforge(&[
        "bench",
        "generate",
        "--preset",
        "tiny",
        "--prompt-tokens",
        "8",
        "--new-tokens",
        "6",
        "--batch",
        "2",
        "--repeats",
        "1",
        "--warmup",
        "0",
    ]);
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert!(o.status.success(), "{err}");
    // GPT-2 init on a 4096 vocabulary leaves clear argmax gaps: every greedy token must agree.
    assert!(
        out.contains("greedy next token equal on 2/2 prompts")
            && out.contains("row 0's first 6/6 tokens identical"),
        "{out}"
    );
}
