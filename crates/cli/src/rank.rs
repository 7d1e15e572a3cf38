//! `chatforge rank`: sample K responses per prompt from a model and have a judge rank them
//! (the rankings file the reward model trains on). People rank with `chatforge label`.

use std::path::PathBuf;

use anyhow::{bail, Result};
use chatforge_train::rank::{collect, RankConfig};

#[derive(clap::Args, Debug)]
pub struct RankArgs {
    /// The model to sample from (SFT checkpoint or run directory).
    #[arg(long)]
    model: PathBuf,
    /// Prompts (JSONL of {"prompt": [...], "task": ...}; `chatforge world` writes
    /// prompts/rank.jsonl).
    #[arg(long = "prompts", required = true, num_args = 1..)]
    prompts: Vec<PathBuf>,
    /// Responses per prompt (2..=9).
    #[arg(long, default_value_t = 4)]
    k: usize,
    /// Who ranks: `world`, the built-in world's gold judge.
    #[arg(long, default_value = "world")]
    judge: String,
    /// Probability that the judge swaps two adjacent ranks (disagreeing labellers).
    #[arg(long, default_value_t = 0.1)]
    judge_noise: f64,
    /// Rankings file to write (appended to and resumed when it exists).
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
    #[arg(long, default_value_t = 48)]
    max_tokens: usize,
    /// Rank at most this many prompts.
    #[arg(long)]
    limit: Option<usize>,
    #[arg(long, default_value_t = 1337)]
    seed: u64,
    #[arg(long)]
    skip_bad_records: bool,
    #[command(flatten)]
    device: crate::device::DeviceOpt,
}

pub fn run(a: RankArgs) -> Result<()> {
    if a.judge != "world" {
        bail!(
            "unknown judge {:?}: the only automatic judge is `world` (rank by hand with \
             `chatforge label`)",
            a.judge
        );
    }
    let cfg = RankConfig {
        k: a.k,
        temperature: a.temperature,
        max_new_tokens: a.max_tokens,
        noise: a.judge_noise,
        limit: a.limit,
        seed: a.seed,
        skip_bad_records: a.skip_bad_records,
    };
    let device = a.device.open()?;
    let bar = crate::progress::count_bar("rank");
    let s = collect(
        &cfg,
        &a.model,
        &device,
        &a.prompts,
        &a.out,
        &mut |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
    )?;
    bar.finish_and_clear();
    eprintln!(
        "rank done: {} records in {} ({} were there already), {} with ties; mean judge score \
         {:.2}, {:.0}% of new responses ended; judge agreement with its noiseless self {:.3} \
         (the ceiling for a reward model's held-out accuracy)",
        s.records,
        s.out.display(),
        s.resumed_from,
        s.with_ties,
        s.mean_judge_score,
        100.0 * s.ended_frac,
        s.judge_ceiling
    );
    println!("{}", serde_json::to_string(&s)?);
    Ok(())
}
