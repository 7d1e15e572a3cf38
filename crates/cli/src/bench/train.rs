//! `chatforge bench train`: one pretraining step, ours next to PyTorch's, on the same model, the
//! same initial weights and the same batch.
//!
//! Method:
//! 1. The model is built from a preset (default `gpt2-bench` at vocabulary 4096: 6 layers,
//!    d = 384, 6 heads, context 256) with seeded GPT-2 initialisation, and written as
//!    `config.json` + `model.safetensors` to a scratch directory that the PyTorch peer
//!    (`scripts/bench/torch_peer.py`) loads, so both start from identical weights.
//! 2. One batch of `B × (T + 1)` seeded random ids is shared: inputs are the first `T` of each
//!    row, targets the last `T`. Every step trains on it.
//! 3. Our step is exactly pretraining's (`chatforge_train::pretrain`): `Gpt::loss`, `backward`,
//!    `accumulate_grads`, then `guarded_update` (global-norm clip to 1.0, AdamW with β 0.9/0.95,
//!    ε 1e-8, weight decay 0.1 on tensors with ≥ 2 dims, lr 1e-3). The peer's step is the same
//!    in PyTorch: forward, `cross_entropy`, `backward`, `clip_grad_norm_(1.0)`, `AdamW.step`.
//! 4. Steps alternate — ours f32, PyTorch eager f32, ours f32, … then ours with bf16 linears
//!    ([`MatmulPrecision::Bf16`]: f32 weights, operands rounded to bf16, f32 accumulation),
//!    PyTorch bf16 autocast, … — so that machine noise hits both; warm-up steps are not timed.
//!    Both sides keep training the same weights through both phases. The first
//!    step's loss (same weights, same batch, f32) must agree within [`LOSS_TOLERANCE`], or the
//!    benchmark stops: the two sides would not be running the same model.
//! 5. Memory is each process's peak resident set (ours `VmHWM`, PyTorch's `ru_maxrss`): whole
//!    processes, so PyTorch's figure includes its library (several hundred MiB).
//! 6. Achieved FLOP/s use the nanoGPT/PaLM estimate `6·N·B·T + 12·L·d·B·T²` per step (`N` the
//!    parameters in matmuls, causal attention counted in full), compared with a measured
//!    ceiling: the median time of an `n × n × n` f32 GEMM through candle.
//! 7. `--device cuda` runs both sides on the GPU: weights, batch, gradients and optimizer state
//!    live there, each timed step ends with a device synchronisation (ours and PyTorch's), and
//!    the GEMM ceilings are cuBLAS f32 products (TF32 off on both sides).

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor, Var};
use chatforge_data::Rng;
use chatforge_model::ops::MatmulPrecision;
use chatforge_model::{Gpt, GptConfig, Params};
use chatforge_train::artifact::var_map;
use chatforge_train::guard::{guarded_update, Guard, Verdict};
use chatforge_train::optim::{accumulate_grads, AdamW, FlatGrads, OptimConfig};
use serde_json::{json, Value};

use super::peer::PeerSlot;
use super::{
    candle_matmul_gflops, fmt_bytes, load_average, matmul_params, median, print_table, proc_memory,
    speedup, write_model_dir, ScratchDir,
};

/// Largest accepted difference between our first-step loss and PyTorch's (same f32 weights and
/// batch). Measured differences are about 1e-6; a wrong model differs in the first decimals.
const LOSS_TOLERANCE: f64 = 1e-3;

/// Arguments of `chatforge bench train`.
#[derive(clap::Args, Debug)]
pub struct TrainBenchArgs {
    /// Model preset (see `chatforge pretrain --help`); the context is the preset's.
    #[arg(long, default_value = "gpt2-bench")]
    preset: String,
    /// Vocabulary size of the model.
    #[arg(long, default_value_t = 4096)]
    vocab_size: usize,
    /// Rows per step (B).
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Timed steps per configuration; the median is reported.
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// Untimed warm-up steps per configuration.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Seed of the initial weights and of the batch.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Python interpreter with torch, for the PyTorch peer.
    #[arg(long, default_value = "python3")]
    torch: String,
    /// Measure chatforge alone.
    #[arg(long)]
    no_peer: bool,
    /// Skip the peer's bf16-autocast configuration.
    #[arg(long)]
    no_bf16: bool,
    /// Size n of the n×n×n f32 GEMM that measures the matmul ceiling (0 skips it).
    #[arg(long, default_value_t = 2048)]
    matmul: usize,
    #[command(flatten)]
    device: crate::device::DeviceOpt,
}

/// Our pretraining step on a fixed batch.
struct OurTrainer {
    /// The model with f32 linears, and the same weights with bf16 linears.
    model: Gpt,
    model_bf16: Gpt,
    vars: BTreeMap<String, Var>,
    opt: AdamW,
    guard: Guard,
    lr: f64,
    /// Global-norm clip (pretraining's default, 1.0).
    clip: f64,
    /// `(B, T)` u32 inputs and targets.
    x: Tensor,
    y: Tensor,
}

impl OurTrainer {
    /// One optimizer step, timed: `(seconds, loss before the update)`.
    fn step(&mut self, prec: MatmulPrecision) -> Result<(f64, f64)> {
        let start = Instant::now();
        let model = match prec {
            MatmulPrecision::F32 => &self.model,
            MatmulPrecision::Bf16 => &self.model_bf16,
        };
        let loss = model.loss(&self.x, &self.y)?;
        let value = loss.to_scalar::<f32>()? as f64;
        let g = loss.backward()?;
        let mut grads = FlatGrads::new();
        accumulate_grads(&self.vars, &g, 1.0, &mut grads)?;
        drop(g);
        let (verdict, _) = guarded_update(
            &mut self.guard,
            &mut self.opt,
            &self.vars,
            &mut grads,
            value,
            self.lr,
            self.clip,
        )?;
        // The update's kernels are queued on a GPU: the step ends when they have run.
        self.x.device().synchronize()?;
        let secs = start.elapsed().as_secs_f64();
        if verdict != Verdict::Apply {
            bail!("our step was not applied ({verdict:?}); the timing would be meaningless");
        }
        Ok((secs, value))
    }
}

/// Seeded ids: `(inputs, targets)`, each `rows × t`, targets shifted by one.
fn random_batch(seed: u64, rows: usize, t: usize, vocab: usize) -> (Vec<Vec<u32>>, Vec<Vec<u32>>) {
    let mut rng = Rng::derive(seed, "bench-train-batch");
    let full: Vec<Vec<u32>> = (0..rows)
        .map(|_| (0..=t).map(|_| rng.below(vocab as u64) as u32).collect())
        .collect();
    let x = full.iter().map(|r| r[..t].to_vec()).collect();
    let y = full.iter().map(|r| r[1..].to_vec()).collect();
    (x, y)
}

/// One timed PyTorch step: `(seconds, loss)`.
fn peer_step(peer: &mut PeerSlot, dtype: &str) -> Option<(f64, f64)> {
    peer.call(|p| {
        let (secs, answer) =
            p.request_f64(&json!({"cmd": "train_step", "dtype": dtype}), "seconds")?;
        let loss = answer
            .get("loss")
            .and_then(Value::as_f64)
            .ok_or_else(|| format!("no loss in {answer}"))?;
        Ok((secs, loss))
    })
}

/// Runs `chatforge bench train`.
pub fn run(a: TrainBenchArgs) -> Result<()> {
    if a.batch == 0 || a.steps == 0 {
        bail!("--batch and --steps must be at least 1");
    }
    let cfg = GptConfig::preset(&a.preset, a.vocab_size).with_context(|| {
        format!(
            "unknown preset {:?}; known: {}",
            a.preset,
            GptConfig::preset_names().join(", ")
        )
    })?;
    cfg.validate()?;
    let (b, t) = (a.batch, cfg.context_length);
    let device = a.device.open()?;
    let load_start = load_average();
    eprintln!(
        "bench train: preset {} (vocab {}, {} parameters), batch {b} x context {t}; device {}; \
         {} threads; load average {load_start}",
        a.preset,
        cfg.vocab_size,
        cfg.num_params(),
        a.device.device,
        rayon::current_num_threads()
    );

    let params = Params::init(&cfg, a.seed, &device)?;
    let scratch = ScratchDir::new("train")?;
    let model_dir = scratch.path().join("model");
    std::fs::create_dir_all(&model_dir)?;
    write_model_dir(&model_dir, &cfg, &params.tensors())?;
    let (x_ids, y_ids) = random_batch(a.seed, b, t, cfg.vocab_size);
    let flat = |rows: &[Vec<u32>]| rows.concat();
    let opt_cfg = OptimConfig::default();
    let model = Gpt::new(&cfg, params.var_builder(DType::F32))?;
    let mut ours = OurTrainer {
        model_bf16: model.clone().with_matmul_precision(MatmulPrecision::Bf16),
        model,
        vars: var_map(&params),
        lr: opt_cfg.lr,
        clip: opt_cfg.grad_clip,
        opt: AdamW::new(opt_cfg),
        guard: Guard::default(),
        x: Tensor::from_vec(flat(&x_ids), (b, t), &device)?,
        y: Tensor::from_vec(flat(&y_ids), (b, t), &device)?,
    };
    let ours_setup_rss = proc_memory().current;

    let mut peer = PeerSlot::start(
        a.no_peer,
        &a.torch,
        scratch.path(),
        &model_dir,
        "train",
        &a.device.device.to_string(),
    );
    let peer_info = peer.info().cloned();
    peer.call(|p| p.request(&json!({"cmd": "set_batch", "x": x_ids, "y": y_ids})));

    // Phase 1: ours and PyTorch eager f32, alternating.
    let total = a.warmup + a.steps;
    let (mut ours_f32, mut peer_f32) = (Vec::new(), Vec::new());
    let (mut ours_bf16, mut peer_bf16) = (Vec::new(), Vec::new());
    let mut first_losses: (Option<f64>, Option<f64>) = (None, None);
    for i in 0..total {
        let (secs, loss) = ours.step(MatmulPrecision::F32)?;
        first_losses.0.get_or_insert(loss);
        let theirs = peer_step(&mut peer, "f32");
        if let Some((_, l)) = theirs {
            first_losses.1.get_or_insert(l);
        }
        let timed = i >= a.warmup;
        if timed {
            ours_f32.push(secs);
            peer_f32.extend(theirs.map(|(s, _)| s));
        }
        eprintln!(
            "f32 step {}/{total}{}: chatforge {secs:.3} s (loss {loss:.4}){}",
            i + 1,
            if timed { "" } else { " (warm-up)" },
            theirs
                .map(|(s, l)| format!(", PyTorch {s:.3} s (loss {l:.4})"))
                .unwrap_or_default()
        );
    }
    if let (Some(ours_loss), Some(their_loss)) = first_losses {
        if (ours_loss - their_loss).abs() > LOSS_TOLERANCE {
            bail!(
                "first-step losses differ: chatforge {ours_loss:.6}, PyTorch {their_loss:.6} — \
                 the peer is not running the same model"
            );
        }
    }
    let ours_peak = proc_memory().peak;
    let peer_peak_f32 = peer.call(|p| p.request(&json!({"cmd": "memory"})));

    // Phase 2: ours with bf16 linears and PyTorch bf16 autocast, alternating.
    if !a.no_bf16 {
        for i in 0..total {
            let (secs, loss) = ours.step(MatmulPrecision::Bf16)?;
            let theirs = peer_step(&mut peer, "bf16");
            let timed = i >= a.warmup;
            if timed {
                ours_bf16.push(secs);
                peer_bf16.extend(theirs.map(|(s, _)| s));
            }
            eprintln!(
                "bf16 step {}/{total}{}: chatforge {secs:.3} s (loss {loss:.4}){}",
                i + 1,
                if timed { "" } else { " (warm-up)" },
                theirs
                    .map(|(s, l)| format!(", PyTorch bf16 autocast {s:.3} s (loss {l:.4})"))
                    .unwrap_or_default()
            );
        }
    }
    let ours_peak_end = proc_memory().peak;
    let peer_peak_end = peer.call(|p| p.request(&json!({"cmd": "memory"})));

    // The matmul ceilings, after the steps (they would inflate our peak memory otherwise).
    let ceiling = if a.matmul > 0 {
        eprintln!("measuring the {0}x{0}x{0} f32 GEMM ceiling", a.matmul);
        Some(candle_matmul_gflops(a.matmul, 5, &device)?)
    } else {
        None
    };
    let peer_gemm = if a.matmul > 0 {
        peer.call(|p| {
            p.request_f64(
                &json!({"cmd": "matmul", "n": a.matmul, "repeats": 5}),
                "gflops",
            )
            .map(|(g, _)| g)
        })
    } else {
        None
    };
    let load_end = load_average();

    // The table.
    let alive = peer.alive();
    let peer_f32 = if alive { median(&peer_f32) } else { None };
    let peer_bf16 = if alive { median(&peer_bf16) } else { None };
    let ours_step = median(&ours_f32).context("no timed step")?;
    let ours_bf16 = median(&ours_bf16);
    let tokens = (b * t) as f64;
    let n_mm = matmul_params(&cfg) as f64;
    let flops =
        6.0 * n_mm * tokens + 12.0 * (cfg.n_layer * cfg.n_embd) as f64 * b as f64 * (t * t) as f64;
    let secs = |s: Option<f64>| s.map_or("-".into(), |s| format!("{s:.3} s"));
    let tps = |s: Option<f64>| s.map_or("-".into(), |s| format!("{:.0}", tokens / s));
    let achieved = |s: Option<f64>| match (s, ceiling) {
        (Some(s), Some(c)) => format!(
            "{:.1} ({:.0}%)",
            flops / s / 1e9,
            100.0 * flops / s / 1e9 / c
        ),
        (Some(s), None) => format!("{:.1}", flops / s / 1e9),
        _ => "-".into(),
    };
    let peer_mem = |v: &Option<Value>, key: &str| -> Option<u64> {
        if !alive {
            return None;
        }
        v.as_ref().and_then(|v| v.get(key)).and_then(Value::as_u64)
    };
    let peer_setup_rss = peer_info
        .as_ref()
        .filter(|_| alive)
        .and_then(|i| i.get("rss_after_setup_bytes"))
        .and_then(Value::as_u64);
    let ratio = |ours: Option<f64>, theirs: Option<f64>| match ours {
        Some(o) => speedup(o, theirs),
        None => "-".into(),
    };
    let rows = vec![
        vec![
            "median step (forward + backward + clip + AdamW)".into(),
            secs(Some(ours_step)),
            secs(ours_bf16),
            secs(peer_f32),
            secs(peer_bf16),
        ],
        vec![
            "tokens/s".into(),
            tps(Some(ours_step)),
            tps(ours_bf16),
            tps(peer_f32),
            tps(peer_bf16),
        ],
        vec![
            "chatforge f32 speed-up (this column's step time / ours)".into(),
            "1.00x".into(),
            ratio(Some(ours_step), ours_bf16),
            ratio(Some(ours_step), peer_f32),
            ratio(Some(ours_step), peer_bf16),
        ],
        vec![
            "chatforge bf16 speed-up (this column's step time / ours)".into(),
            ratio(ours_bf16, Some(ours_step)),
            ratio(ours_bf16, ours_bf16),
            ratio(ours_bf16, peer_f32),
            ratio(ours_bf16, peer_bf16),
        ],
        vec![
            match ceiling {
                Some(c) => {
                    format!("achieved GFLOP/s (% of the {c:.0} GFLOP/s candle f32 GEMM ceiling)")
                }
                None => "achieved GFLOP/s".into(),
            },
            achieved(Some(ours_step)),
            achieved(ours_bf16),
            achieved(peer_f32),
            achieved(peer_bf16),
        ],
        vec![
            "peak RSS, whole process".into(),
            fmt_bytes(ours_peak),
            match ours_bf16 {
                Some(_) => format!("{} (f32 and bf16 steps)", fmt_bytes(ours_peak_end)),
                None => "-".into(),
            },
            match peer_f32 {
                Some(_) => fmt_bytes(peer_mem(&peer_peak_f32, "peak_rss_bytes")),
                None => "-".into(),
            },
            match peer_bf16 {
                Some(_) => format!(
                    "{} (f32 and bf16 steps)",
                    fmt_bytes(peer_mem(&peer_peak_end, "peak_rss_bytes"))
                ),
                None => "-".into(),
            },
        ],
        vec![
            "RSS before the first step (model built)".into(),
            fmt_bytes(ours_setup_rss),
            "-".into(),
            if alive {
                fmt_bytes(peer_setup_rss)
            } else {
                "-".into()
            },
            "-".into(),
        ],
        vec![
            "first-step loss (same weights, same batch)".into(),
            first_losses.0.map_or("-".into(), |l| format!("{l:.6}")),
            "-".into(),
            first_losses
                .1
                .filter(|_| alive)
                .map_or("-".into(), |l| format!("{l:.6}")),
            "-".into(),
        ],
    ];
    print_table(
        &[
            "",
            "chatforge f32",
            "chatforge bf16 linears",
            "PyTorch eager f32",
            "PyTorch bf16 autocast",
        ],
        &rows,
    );
    println!();
    println!(
        "Model: preset {}, vocab {}, {} parameters ({} in matmuls); batch {b} x context {t} = {} \
         tokens per step, on {}; {} timed steps after {} warm-up steps per configuration, \
         chatforge's and PyTorch's steps alternating (f32 with f32, bf16 with bf16).",
        a.preset,
        cfg.vocab_size,
        cfg.num_params(),
        n_mm,
        b * t,
        a.device.device,
        a.steps,
        a.warmup
    );
    println!(
        "FLOPs per step = 6·N·B·T + 12·L·d·B·T² = {:.1} GFLOP (nanoGPT/PaLM estimate; N = \
         parameters in matmuls, causal attention counted in full).",
        flops / 1e9
    );
    if let Some(c) = ceiling {
        println!(
            "GEMM ceiling ({0}x{0}x{0} f32, median of 5): candle {c:.1} GFLOP/s{1}.",
            a.matmul,
            peer_gemm
                .filter(|_| alive)
                .map(|g| format!(", torch {g:.1} GFLOP/s"))
                .unwrap_or_default()
        );
    }
    match (&peer.skipped, &peer_info) {
        (None, Some(info)) => println!(
            "PyTorch {} on {} with {} threads ({}; {}).",
            info.get("torch_version")
                .and_then(Value::as_str)
                .unwrap_or("?"),
            info.get("device").and_then(Value::as_str).unwrap_or("cpu"),
            info.get("threads").and_then(Value::as_u64).unwrap_or(0),
            info.get("attention").and_then(Value::as_str).unwrap_or("?"),
            info.get("optimizer").and_then(Value::as_str).unwrap_or("?"),
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
