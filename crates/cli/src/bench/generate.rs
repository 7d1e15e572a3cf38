//! `chatforge bench generate`: prefill and KV-cache decode throughput, ours next to PyTorch's on
//! the same weights and prompts, greedy.
//!
//! Method (P prompt tokens, N new tokens per row, batch sizes 1 and `--batch`):
//! - **Prefill, batch B**: one forward pass over B distinct prompts of P seeded random ids into
//!   an empty KV cache, and the last position's logits: `Gpt::forward` with a fresh `KvCache`,
//!   exactly the engine's prefill. Tokens/s = `B·P / time`.
//! - **Decode, batch B**: B samples of one prompt through the engine's batched loop
//!   (`chatforge_engine::generate_batch`, the loop behind `generate_n` and `generate`), greedy,
//!   `max_tokens = N`, no stop tokens. It prefills once with batch 1, forks the cache into B rows
//!   and decodes them together. The decode time runs from the first token's callback to the end:
//!   `N − 1` decode steps of B tokens each. Tokens/s = `B·(N − 1) / time`. The peer does the same
//!   in PyTorch (prefill with batch 1, cache copied to B rows, `N − 1` steps with a
//!   concatenating cache, `argmax`), timed from the same point.
//! - Each repetition runs every measurement for us and then for PyTorch, so noise hits both;
//!   warm-up repetitions are not timed; medians are reported.
//! - `--device cuda` runs both sides on the GPU (weights, prompts and KV cache there; every
//!   step's last logits come back to the host for the sampler, as in `chatforge sample`); the
//!   peer synchronizes the device before it reads its timers.
//! - As a check that both sides run the same model, the greedy next token after each prefill and
//!   row 0's decoded tokens are compared and the agreement printed (a near-tie in the logits can
//!   flip a token between two correct implementations, so this is reported, not enforced).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use chatforge_data::Rng;
use chatforge_engine::{generate_batch, FinishReason, GenerateRequest, SamplingParams};
use chatforge_model::{Gpt, GptConfig, KvCache, Params};
use serde_json::{json, Value};

use super::peer::PeerSlot;
use super::{
    fmt_bytes, load_average, median, print_table, proc_memory, speedup, write_model_dir, ScratchDir,
};

/// Arguments of `chatforge bench generate`.
#[derive(clap::Args, Debug)]
pub struct GenerateBenchArgs {
    /// Model preset, initialised with `--seed` (ignored with `--model`).
    #[arg(long, default_value = "default")]
    preset: String,
    /// Vocabulary size of the preset model.
    #[arg(long, default_value_t = 4096)]
    vocab_size: usize,
    /// Benchmark this checkpoint (or run directory) instead of a fresh preset model.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Prompt length P.
    #[arg(long, default_value_t = 64)]
    prompt_tokens: usize,
    /// Tokens generated per row N (N − 1 decode steps after the first token).
    #[arg(long, default_value_t = 100)]
    new_tokens: usize,
    /// The larger batch size (measured besides batch 1).
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Timed repetitions; the median is reported.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Untimed warm-up repetitions.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Seed of the initial weights and of the prompts.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Python interpreter with torch, for the PyTorch peer.
    #[arg(long, default_value = "python3")]
    torch: String,
    /// Measure chatforge alone.
    #[arg(long)]
    no_peer: bool,
    #[command(flatten)]
    device: crate::device::DeviceOpt,
}

/// One line of the table.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Measure {
    Prefill(usize),
    Decode(usize),
}

impl std::fmt::Display for Measure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Measure::Prefill(b) => write!(f, "prefill, batch {b}"),
            Measure::Decode(b) => write!(f, "decode, batch {b}"),
        }
    }
}

/// Timed samples and token checks of one measurement.
#[derive(Default)]
struct Samples {
    ours: Vec<f64>,
    theirs: Vec<f64>,
    /// Our and PyTorch's greedy tokens from the last repetition (prefill: next token of each
    /// prompt; decode: row 0's output).
    ours_tokens: Vec<u32>,
    their_tokens: Vec<u32>,
}

/// Our prefill of `prompts` (all of length P) into a fresh cache on `device`: `(seconds, greedy
/// next ids)`.
fn our_prefill(model: &Gpt, device: &Device, prompts: &[Vec<u32>]) -> Result<(f64, Vec<u32>)> {
    let (b, p) = (prompts.len(), prompts[0].len());
    let start = Instant::now();
    let ids = Tensor::from_vec(prompts.concat(), (b, p), device)?; // (B, P)
    let mut cache = KvCache::new(model.config().n_layer);
    let logits = model.forward(&ids, Some(&mut cache))?; // (B, P, V)
    let last = logits
        .narrow(1, p - 1, 1)? // (B, 1, V)
        .squeeze(1)? // (B, V)
        .to_dtype(DType::F32)?
        .to_vec2::<f32>()?;
    let secs = start.elapsed().as_secs_f64();
    Ok((secs, last.iter().map(|row| argmax(row)).collect()))
}

fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in row.iter().enumerate() {
        if *x > row[best] {
            best = i;
        }
    }
    best as u32
}

/// `n` greedy samples of `prompt` through the engine: `(decode seconds, row 0's tokens)`.
fn our_decode(
    model: &Gpt,
    device: &Device,
    prompt: &[u32],
    n: usize,
    new_tokens: usize,
) -> Result<(f64, Vec<u32>)> {
    let params = SamplingParams {
        temperature: 0.0,
        max_tokens: new_tokens,
        ..Default::default()
    };
    let req = GenerateRequest {
        prompt,
        forced_prefix: &[],
        n,
        params: &params,
    };
    let mut first: Option<Instant> = None;
    let samples = generate_batch(model, device, &req, |_, _| {
        first.get_or_insert_with(Instant::now);
        true
    })?;
    let end = Instant::now();
    for (i, s) in samples.iter().enumerate() {
        if s.tokens.len() != new_tokens || s.finish != FinishReason::Length {
            bail!(
                "row {i} produced {} tokens ({:?}), not {new_tokens}",
                s.tokens.len(),
                s.finish
            );
        }
    }
    let first = first.context("no token was produced")?;
    let row0 = samples
        .into_iter()
        .next()
        .map(|s| s.tokens)
        .unwrap_or_default();
    Ok(((end - first).as_secs_f64(), row0))
}

/// The peer's side of one measurement: `(seconds, tokens)`.
fn peer_measure(
    peer: &mut PeerSlot,
    m: Measure,
    prompts: &[Vec<u32>],
    new_tokens: usize,
) -> Option<(f64, Vec<u32>)> {
    let tokens = |v: &Value, key: &str| -> Vec<u32> {
        v.get(key)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_u64)
                    .map(|x| x as u32)
                    .collect()
            })
            .unwrap_or_default()
    };
    peer.call(|p| match m {
        Measure::Prefill(b) => {
            let (s, v) = p.request_f64(&json!({"cmd": "prefill", "ids": &prompts[..b]}), "seconds")?;
            Ok((s, tokens(&v, "next")))
        }
        Measure::Decode(b) => {
            let cmd = json!({"cmd": "decode", "prompt": prompts[0], "batch": b, "new_tokens": new_tokens});
            let (s, v) = p.request_f64(&cmd, "seconds")?;
            Ok((s, tokens(&v, "tokens")))
        }
    })
}

/// Runs `chatforge bench generate`.
pub fn run(a: GenerateBenchArgs) -> Result<()> {
    if a.prompt_tokens == 0 || a.new_tokens < 2 || a.batch == 0 || a.repeats == 0 {
        bail!("need --prompt-tokens >= 1, --new-tokens >= 2, --batch >= 1 and --repeats >= 1");
    }
    let device = a.device.open()?;
    let scratch = ScratchDir::new("generate")?;
    let (cfg, model, model_dir, what) = match &a.model {
        Some(path) => {
            let loaded = chatforge_train::artifact::load_model(path, &device)?;
            let what = format!("checkpoint {}", loaded.checkpoint.dir.display());
            (loaded.config, loaded.model, loaded.checkpoint.dir, what)
        }
        None => {
            let cfg = GptConfig::preset(&a.preset, a.vocab_size).with_context(|| {
                format!(
                    "unknown preset {:?}; known: {}",
                    a.preset,
                    GptConfig::preset_names().join(", ")
                )
            })?;
            let params = Params::init(&cfg, a.seed, &device)?;
            let dir = scratch.path().join("model");
            std::fs::create_dir_all(&dir)?;
            write_model_dir(&dir, &cfg, &params.tensors())?;
            let model = Gpt::new(&cfg, params.frozen_var_builder(DType::F32))?;
            let what = format!("preset {} (seeded initialisation)", a.preset);
            (cfg, model, dir, what)
        }
    };
    let (p, n) = (a.prompt_tokens, a.new_tokens);
    if p + n > cfg.context_length {
        bail!(
            "--prompt-tokens {p} + --new-tokens {n} exceed the model's context of {}",
            cfg.context_length
        );
    }
    let load_start = load_average();
    eprintln!(
        "bench generate: {what}, vocab {}, {} parameters; P = {p}, N = {n}, batch 1 and {}; \
         device {}; {} threads; load average {load_start}",
        cfg.vocab_size,
        cfg.num_params(),
        a.batch,
        a.device.device,
        rayon::current_num_threads()
    );
    let mut rng = Rng::derive(a.seed, "bench-generate-prompts");
    let prompts: Vec<Vec<u32>> = (0..a.batch.max(1))
        .map(|_| {
            (0..p)
                .map(|_| rng.below(cfg.vocab_size as u64) as u32)
                .collect()
        })
        .collect();

    let mut peer = PeerSlot::start(
        a.no_peer,
        &a.torch,
        scratch.path(),
        &model_dir,
        "generate",
        &a.device.device.to_string(),
    );
    let peer_info = peer.info().cloned();

    let mut measures = vec![Measure::Prefill(1)];
    if a.batch > 1 {
        measures.push(Measure::Prefill(a.batch));
    }
    measures.push(Measure::Decode(1));
    if a.batch > 1 {
        measures.push(Measure::Decode(a.batch));
    }
    let mut samples: Vec<Samples> = measures.iter().map(|_| Samples::default()).collect();
    let total = a.warmup + a.repeats;
    for rep in 0..total {
        let timed = rep >= a.warmup;
        for (m, s) in measures.iter().zip(samples.iter_mut()) {
            let (ours, ours_tokens) = match *m {
                Measure::Prefill(b) => our_prefill(&model, &device, &prompts[..b])?,
                Measure::Decode(b) => our_decode(&model, &device, &prompts[0], b, n)?,
            };
            let theirs = peer_measure(&mut peer, *m, &prompts, n);
            eprintln!(
                "repetition {}/{total}{}, {m}: chatforge {ours:.4} s{}",
                rep + 1,
                if timed { "" } else { " (warm-up)" },
                theirs
                    .as_ref()
                    .map(|(t, _)| format!(", PyTorch {t:.4} s"))
                    .unwrap_or_default()
            );
            if timed {
                s.ours.push(ours);
                s.ours_tokens = ours_tokens;
                if let Some((t, toks)) = theirs {
                    s.theirs.push(t);
                    s.their_tokens = toks;
                }
            }
        }
    }
    let ours_peak = proc_memory().peak;
    let peer_mem = peer.call(|p| p.request(&json!({"cmd": "memory"})));
    let load_end = load_average();

    let alive = peer.alive();
    let mut rows = Vec::new();
    let mut checks = Vec::new();
    for (m, s) in measures.iter().zip(&samples) {
        let ours = median(&s.ours).context("no timed repetition")?;
        let theirs = if alive { median(&s.theirs) } else { None };
        let (label, tokens, unit) = match *m {
            Measure::Prefill(b) => (
                format!("prefill, batch {b} ({b} × {p} tokens)"),
                (b * p) as f64,
                "ms".to_string(),
            ),
            Measure::Decode(b) => (
                if b == 1 {
                    format!("decode, batch 1 ({} steps, KV cache)", n - 1)
                } else {
                    format!(
                        "decode, batch {b} ({b} samples of one prompt, {} steps)",
                        n - 1
                    )
                },
                (b * (n - 1)) as f64,
                "ms/step".to_string(),
            ),
        };
        let per = |secs: f64| match *m {
            Measure::Prefill(_) => secs * 1e3,
            Measure::Decode(_) => secs * 1e3 / (n - 1) as f64,
        };
        let cell = |secs: f64| format!("{:.0} tok/s ({:.2} {unit})", tokens / secs, per(secs));
        rows.push(vec![
            label.clone(),
            cell(ours),
            theirs.map_or("-".into(), cell),
            speedup(ours, theirs),
        ]);
        if alive && !s.their_tokens.is_empty() {
            let agree = match *m {
                Measure::Prefill(b) => format!(
                    "greedy next token equal on {}/{b} prompts",
                    s.ours_tokens
                        .iter()
                        .zip(&s.their_tokens)
                        .filter(|(x, y)| x == y)
                        .count()
                ),
                Measure::Decode(_) => format!(
                    "row 0's first {}/{n} tokens identical",
                    s.ours_tokens
                        .iter()
                        .zip(&s.their_tokens)
                        .take_while(|(x, y)| x == y)
                        .count()
                ),
            };
            checks.push(format!("{label}: {agree}"));
        }
    }
    let peer_peak = peer_mem
        .as_ref()
        .filter(|_| alive)
        .and_then(|v| v.get("peak_rss_bytes"))
        .and_then(Value::as_u64);
    rows.push(vec![
        "peak RSS, whole process".into(),
        fmt_bytes(ours_peak),
        if alive {
            fmt_bytes(peer_peak)
        } else {
            "-".into()
        },
        "-".into(),
    ]);
    print_table(
        &[
            "measurement",
            "chatforge",
            "PyTorch eager f32",
            "chatforge speed-up",
        ],
        &rows,
    );
    println!();
    println!(
        "Model: {what}, vocab {}, {} parameters, f32, greedy, on {}. Medians of {} repetitions \
         after {} warm-up, chatforge's and PyTorch's runs alternating. Prefill: one forward pass of B \
         prompts into an empty KV cache. Decode: the engine's batched loop (generate_batch, \
         behind generate_n), one prompt prefilled once and forked into B rows, timed from the \
         first token to the last; tokens/s = B·(N − 1) / time.",
        cfg.vocab_size,
        cfg.num_params(),
        a.device.device,
        a.repeats,
        a.warmup
    );
    if !checks.is_empty() {
        println!("Same model check: {}.", checks.join("; "));
    }
    match (&peer.skipped, &peer_info) {
        (None, Some(info)) => println!(
            "PyTorch {} on {} with {} threads ({}, torch.inference_mode, concatenating KV \
             cache).",
            info.get("torch_version")
                .and_then(Value::as_str)
                .unwrap_or("?"),
            info.get("device").and_then(Value::as_str).unwrap_or("cpu"),
            info.get("threads").and_then(Value::as_u64).unwrap_or(0),
            info.get("attention").and_then(Value::as_str).unwrap_or("?"),
        ),
        (Some(why), _) => println!("PyTorch peer skipped: {why}"),
        (None, None) => {}
    }
    println!(
        "chatforge: {} rayon threads. Load average (1, 5, 15 min) at start {load_start}, at end \
         {load_end}.",
        rayon::current_num_threads()
    );
    Ok(())
}
