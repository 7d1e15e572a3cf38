//! `chatforge pretrain`: next-token pretraining with checkpoints and exact resume.
//!
//! Settings come from the defaults, then `--config FILE.toml` (the fields of
//! `PretrainConfig`; an unknown field is an error), then the flags given here.

use std::path::PathBuf;

use anyhow::{Context, Result};
use chatforge_train::pretrain::{run as run_pretrain, PretrainConfig, PretrainPaths};

use crate::progress::TrainProgress;

#[derive(clap::Args, Debug)]
pub struct PretrainArgs {
    /// Training text: .txt / .jsonl files or directories.
    #[arg(long = "train", num_args = 1.., required_unless_present = "world", conflicts_with = "world")]
    train: Vec<PathBuf>,
    /// Train on the built-in world of this seed instead (written to OUT/world).
    #[arg(long)]
    world: Option<u64>,
    /// Size of the built-in world's corpus in bytes.
    #[arg(long, default_value_t = 4_000_000)]
    world_bytes: usize,
    /// Validation text; without it, `val_fraction` of the training documents is held out.
    #[arg(long = "val", num_args = 1..)]
    val: Vec<PathBuf>,
    /// Tokenizer JSON from `chatforge tokenizer train`; without it, one is trained on the
    /// training text and saved as OUT/tokenizer.json (reused if already there).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Vocabulary size of the tokenizer trained when --tokenizer is not given.
    #[arg(long, default_value_t = 2048)]
    vocab_size: usize,
    /// Run directory: shards, checkpoints/, metrics.jsonl.
    #[arg(long)]
    out: PathBuf,
    /// Continue from the newest complete checkpoint in --out.
    #[arg(long)]
    resume: bool,
    /// TOML file with PretrainConfig fields; flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Model preset (tiny, small, default, gpt2-bench, llama-tiny).
    #[arg(long)]
    preset: Option<String>,
    #[arg(long)]
    context_length: Option<usize>,
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long)]
    grad_accum: Option<usize>,
    #[arg(long)]
    steps: Option<u64>,
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long)]
    warmup_steps: Option<u64>,
    #[arg(long)]
    weight_decay: Option<f64>,
    #[arg(long)]
    grad_clip: Option<f64>,
    #[arg(long)]
    eval_every: Option<u64>,
    #[arg(long)]
    sample_every: Option<u64>,
    #[arg(long)]
    sample_prompt: Option<String>,
    #[arg(long)]
    checkpoint_every: Option<u64>,
    #[arg(long)]
    keep_checkpoints: Option<usize>,
    #[arg(long)]
    skip_bad_records: bool,
    #[arg(long)]
    seed: Option<u64>,
    /// Precision of the linear layers' matrix products in training: f32, or bf16 (autocast for
    /// the linears: f32 weights and accumulation; about twice the speed on CPUs with AVX512-BF16).
    #[arg(long)]
    matmul_precision: Option<chatforge_model::ops::MatmulPrecision>,
    #[command(flatten)]
    device: crate::device::DeviceOpt,
}

/// Defaults ← TOML file ← flags.
fn resolve(a: &PretrainArgs) -> Result<PretrainConfig> {
    let mut c = match &a.config {
        Some(p) => crate::load_toml::<PretrainConfig>(p)?,
        None => PretrainConfig::default(),
    };
    macro_rules! set {
        ($($flag:ident => $($field:ident).+),* $(,)?) => {
            $( if let Some(v) = a.$flag.clone() { c.$($field).+ = v; } )*
        };
    }
    set!(
        preset => preset, batch_size => batch_size, grad_accum => grad_accum, steps => steps,
        lr => optim.lr, warmup_steps => optim.warmup_steps, weight_decay => optim.weight_decay,
        grad_clip => optim.grad_clip, eval_every => eval_every, sample_every => sample_every,
        sample_prompt => sample_prompt, checkpoint_every => checkpoint_every,
        keep_checkpoints => keep_checkpoints, seed => seed, matmul_precision => matmul_precision,
    );
    if a.context_length.is_some() {
        c.context_length = a.context_length;
    }
    if a.skip_bad_records {
        c.skip_bad_records = true;
    }
    Ok(c)
}

/// Writes the built-in world under OUT/world (once) and returns its train and val files.
fn world_corpus(a: &PretrainArgs, seed: u64) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    use chatforge_data::world::{write_world, World, WorldConfig};
    let dir = a.out.join("world");
    let files = write_world(
        &World::generate(&WorldConfig {
            seed,
            ..WorldConfig::default()
        }),
        &dir,
        a.world_bytes,
        seed,
    )
    .with_context(|| format!("writing the world to {}", dir.display()))?;
    Ok((vec![files.train], vec![files.val]))
}

/// Trains a tokenizer on `train` unless `path` already holds one.
fn ensure_tokenizer(
    path: &std::path::Path,
    train: &[PathBuf],
    vocab_size: usize,
) -> Result<PathBuf> {
    if !path.exists() {
        crate::tokenizer::train_to(train, vocab_size, false, path)?;
    }
    Ok(path.to_path_buf())
}

pub fn run(a: PretrainArgs) -> Result<()> {
    let device = a.device.open()?;
    let cfg = resolve(&a)?;
    let (train, val) = match a.world {
        Some(seed) => world_corpus(&a, seed)?,
        None => (a.train.clone(), a.val.clone()),
    };
    let tokenizer = match &a.tokenizer {
        Some(p) => p.clone(),
        None => ensure_tokenizer(&a.out.join("tokenizer.json"), &train, a.vocab_size)?,
    };
    let paths = PretrainPaths {
        train,
        val,
        tokenizer,
        out: a.out.clone(),
    };
    let mut progress = TrainProgress::new("pretrain");
    let summary = run_pretrain(&cfg, &paths, &device, a.resume, &mut |e| {
        progress.on_event(e)
    })?;
    progress.finish();
    eprintln!(
        "pretrain done: {} steps, val loss {} -> {:.4} ({:.4} bits/byte), {} skipped; checkpoint {}",
        summary.steps,
        summary
            .val_loss_first
            .map(|v| format!("{v:.4}"))
            .unwrap_or_else(|| "?".into()),
        summary.val_loss_last,
        summary.val_bpb_last,
        summary.skipped_steps,
        summary.checkpoint.display()
    );
    Ok(())
}
