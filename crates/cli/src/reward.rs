//! `chatforge reward`: train a reward model on rankings, starting from an SFT checkpoint.
//!
//! Settings: defaults, then `--config FILE.toml` (fields of `RewardConfig`), then flags.

use std::path::PathBuf;

use anyhow::Result;
use chatforge_tokenizer::chat::ChatTemplate;
use chatforge_train::reward::{run as run_reward, RewardConfig, RewardPaths, RewardSummary};

use crate::progress::TrainProgress;

#[derive(clap::Args, Debug)]
pub struct RewardArgs {
    /// The SFT checkpoint, or a run directory (its newest checkpoint).
    #[arg(long)]
    model: PathBuf,
    /// Ranking files: JSONL of {"prompt", "responses", "ranking"} (best first, ties as groups)
    /// or pairwise {"prompt", "chosen", "rejected"}.
    #[arg(long = "data", required = true, num_args = 1..)]
    data: Vec<PathBuf>,
    /// Run directory.
    #[arg(long)]
    out: PathBuf,
    /// Continue from the newest checkpoint in --out.
    #[arg(long)]
    resume: bool,
    /// TOML file with RewardConfig fields; flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Chat template of the prompts (default: the one the SFT model was trained with).
    #[arg(long, value_enum)]
    template: Option<TemplateArg>,
    /// Ranking records per step (pairs, with --pairwise-baseline).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Most rows in one forward pass (memory).
    #[arg(long)]
    forward_rows: Option<usize>,
    #[arg(long)]
    epochs: Option<u64>,
    #[arg(long)]
    steps: Option<u64>,
    #[arg(long)]
    lr: Option<f64>,
    /// Share of prompts held out for evaluation (by a hash of the prompt).
    #[arg(long)]
    val_fraction: Option<f64>,
    #[arg(long)]
    eval_every: Option<u64>,
    #[arg(long)]
    checkpoint_every: Option<u64>,
    /// Train the TRL way for comparison: every ordered pair an independent shuffled row.
    #[arg(long)]
    pairwise_baseline: bool,
    #[arg(long)]
    skip_bad_records: bool,
    #[arg(long)]
    seed: Option<u64>,
    /// Precision of the linear layers' matrix products: f32, or bf16 (autocast for the linears:
    /// f32 weights and accumulation; about twice the speed on CPUs with AVX512-BF16).
    #[arg(long)]
    matmul_precision: Option<chatforge_model::ops::MatmulPrecision>,
    #[command(flatten)]
    device: crate::device::DeviceOpt,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum TemplateArg {
    Native,
    Chatml,
}

fn resolve(a: &RewardArgs) -> Result<RewardConfig> {
    let mut c = match &a.config {
        Some(p) => crate::load_toml::<RewardConfig>(p)?,
        None => RewardConfig::default(),
    };
    macro_rules! set {
        ($($flag:ident => $($field:ident).+),* $(,)?) => {
            $( if let Some(v) = a.$flag.clone() { c.$($field).+ = v; } )*
        };
    }
    set!(
        batch_size => batch_size, forward_rows => forward_rows, epochs => epochs,
        lr => optim.lr, val_fraction => val_fraction, eval_every => eval_every,
        checkpoint_every => checkpoint_every, seed => seed,
        matmul_precision => matmul_precision,
    );
    if a.steps.is_some() {
        c.steps = a.steps;
    }
    if let Some(t) = a.template {
        c.template = Some(match t {
            TemplateArg::Native => ChatTemplate::Native,
            TemplateArg::Chatml => ChatTemplate::ChatMl,
        });
    }
    if a.pairwise_baseline {
        c.pairwise_baseline = true;
    }
    if a.skip_bad_records {
        c.skip_bad_records = true;
    }
    Ok(c)
}

/// The final summary as a Markdown table.
pub fn summary_table(s: &RewardSummary) -> String {
    let first = s.heldout_first.as_ref();
    let fmt = |v: f64| {
        if v.is_finite() {
            format!("{v:.3}")
        } else {
            "-".into()
        }
    };
    let before = |f: fn(&chatforge_train::reward::RewardEval) -> f64| {
        first.map(|e| fmt(f(e))).unwrap_or_else(|| "-".into())
    };
    let mut t = String::from("| held out | before | after |\n|---|---|---|\n");
    t.push_str(&format!(
        "| pairwise accuracy | {} | {} |\n",
        before(|e| e.accuracy),
        fmt(s.heldout_accuracy)
    ));
    t.push_str(&format!(
        "| Kendall τ-b | {} | {} |\n",
        before(|e| e.kendall_tau),
        fmt(s.heldout_kendall_tau)
    ));
    t.push_str(&format!(
        "| reward mean ± std | | {} ± {} |\n",
        fmt(s.reward_mean),
        fmt(s.reward_std)
    ));
    t
}

pub fn run(a: RewardArgs) -> Result<()> {
    let cfg = resolve(&a)?;
    let paths = RewardPaths {
        base: a.model.clone(),
        data: a.data.clone(),
        out: a.out.clone(),
    };
    let device = a.device.open()?;
    let mut progress = TrainProgress::new("reward");
    let s = run_reward(&cfg, &paths, &device, a.resume, &mut |e| {
        progress.on_event(e)
    })?;
    progress.finish();
    eprintln!(
        "reward done: {} steps on {} rankings ({} pairs), {} held out; {} dropped as too long, \
         {} bad records skipped; bias shift {:+.4}; checkpoint {}",
        s.steps,
        s.train_records,
        s.train_pairs,
        s.val_records,
        s.dropped_too_long,
        s.skipped_bad,
        s.bias_shift,
        s.checkpoint.display()
    );
    println!("{}", summary_table(&s));
    Ok(())
}
