//! `chatforge eval`: win rates with 95% intervals, an Elo leaderboard, helpful / honest /
//! harmless rates, KL to the reference and the alignment tax, for several models on held-out
//! prompts.

use std::path::PathBuf;

use anyhow::Result;
use chatforge_train::eval::{evaluate, parse_contestant, EvalConfig, EvalPaths, EvalReport};
use chatforge_train::report::md_table;

#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// Models: NAME=PATH (assistant), NAME=base:PATH (base model, few-shot),
    /// NAME=best-of-N:POLICY:REWARD. The first is the baseline unless --baseline says.
    #[arg(long = "model", required = true, num_args = 1..)]
    models: Vec<String>,
    /// Held-out prompts (the world's prompts/eval.jsonl).
    #[arg(long = "prompts", required = true, num_args = 1..)]
    prompts: Vec<PathBuf>,
    /// Reward model: judges prompts without a world task; adds an RM-score column.
    #[arg(long)]
    reward: Option<PathBuf>,
    /// Reference policy (SFT) for the KL column.
    #[arg(long)]
    reference: Option<PathBuf>,
    /// Held-out pretraining text for the alignment-tax column.
    #[arg(long = "pretrain-val", num_args = 1..)]
    pretrain_val: Vec<PathBuf>,
    #[arg(long)]
    baseline: Option<String>,
    #[arg(long, default_value_t = 200)]
    max_prompts: usize,
    #[arg(long, default_value_t = 48)]
    max_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    #[arg(long, default_value_t = 1337)]
    seed: u64,
    /// Write the full report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Cache directory for tokenized pretraining text.
    #[arg(long, default_value = "runs/.eval-cache")]
    work_dir: PathBuf,
    #[command(flatten)]
    device: crate::device::DeviceOpt,
}

fn pct(x: f64) -> String {
    if x.is_nan() {
        "–".into()
    } else {
        format!("{:.1}%", 100.0 * x)
    }
}

fn opt(x: Option<f64>, digits: usize) -> String {
    x.filter(|v| v.is_finite())
        .map(|v| format!("{v:.digits$}"))
        .unwrap_or_else(|| "–".into())
}

/// The leaderboard and the win rates as markdown tables.
pub fn tables(r: &EvalReport) -> String {
    let rows: Vec<Vec<String>> = r
        .models
        .iter()
        .map(|m| {
            vec![
                m.name.clone(),
                format!("{:.0}", m.elo),
                pct(m.helpful.value()),
                pct(m.honest.value()),
                pct(m.harmless.value()),
                opt(Some(m.judge_score), 2),
                opt(m.rm_score, 3),
                opt(m.kl_to_reference, 2),
                opt(m.pretrain_loss, 4),
                format!("{:.1}", m.mean_reply_tokens),
            ]
        })
        .collect();
    let mut s = md_table(
        &[
            "model",
            "Elo",
            "helpful",
            "honest",
            "harmless",
            "judge score",
            "RM score",
            "KL to ref",
            "pretrain loss",
            "reply tokens",
        ],
        &rows,
    );
    let rows: Vec<Vec<String>> = r
        .vs_baseline
        .iter()
        .map(|p| {
            vec![
                format!("{} vs {}", p.model, p.baseline),
                format!("{}/{}/{}", p.wins, p.ties, p.losses),
                pct(p.win_rate.rate),
                format!("[{}, {}]", pct(p.win_rate.lo), pct(p.win_rate.hi)),
            ]
        })
        .collect();
    s.push('\n');
    s.push_str(&md_table(
        &["pair", "W/T/L", "win rate", "95% interval"],
        &rows,
    ));
    s
}

pub fn run(a: EvalArgs) -> Result<()> {
    let contestants = a
        .models
        .iter()
        .map(|s| parse_contestant(s).map_err(anyhow::Error::from))
        .collect::<Result<Vec<_>>>()?;
    let cfg = EvalConfig {
        max_prompts: a.max_prompts,
        max_new_tokens: a.max_tokens,
        temperature: a.temperature,
        baseline: a.baseline.clone(),
        seed: a.seed,
        ..EvalConfig::default()
    };
    let paths = EvalPaths {
        prompts: a.prompts.clone(),
        reward: a.reward.clone(),
        reference: a.reference.clone(),
        pretrain_val: a.pretrain_val.clone(),
        work_dir: a.work_dir.clone(),
    };
    let device = a.device.open()?;
    let bar = crate::progress::count_bar("eval");
    let report = evaluate(
        &contestants,
        &cfg,
        &paths,
        &device,
        &mut |name, done, total| {
            bar.set_message(name.to_string());
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
    )?;
    bar.finish_and_clear();
    eprintln!(
        "{} prompts, judged by {}",
        report.prompts,
        if report.gold_judge {
            "the world's gold judge"
        } else {
            "the reward model"
        }
    );
    println!("{}", tables(&report));
    if let Some(p) = &a.json {
        let text = serde_json::to_string_pretty(&report)?;
        chatforge_data::atomic::write_atomic(p, text.as_bytes())?;
    }
    Ok(())
}
