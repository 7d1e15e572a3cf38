//! The speedrun's report card: `report.json` (the headline numbers), a PNG of every training
//! curve under `plots/`, and `report.md` (tables, sample replies, the plots).

use std::path::Path;

use anyhow::{Context, Result};
use chatforge_data::atomic::write_atomic;
use chatforge_train::eval::EvalReport;
use chatforge_train::report::md_table;
use chatforge_train::report::plot::{write_png, Chart};
use serde_json::{json, Value};

use crate::speedrun::Done;

/// `(step, value)` points of `field` in the records of `metrics.jsonl` whose `kind` is `kind`
/// (`None`: records without a kind, the per-step ones of pretraining and SFT).
fn series(metrics: &Path, kind: Option<&str>, field: &[&str]) -> Vec<(f64, f64)> {
    let Ok(text) = std::fs::read_to_string(metrics) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("kind").and_then(Value::as_str) == kind)
        .filter_map(|v| {
            let step = v.get("step")?.as_f64()?;
            let mut x = &v;
            for f in field {
                x = x.get(f)?;
            }
            Some((step, x.as_f64()?))
        })
        .collect()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn num(x: f64) -> String {
    chatforge_train::report::fmt_num(x)
}

/// Writes the plots, `report.json` and `report.md`; returns the markdown.
pub fn write_report(
    out: &Path,
    preset: &str,
    seed: u64,
    matmul_precision: &str,
    stages: &[(&str, Done)],
    total: f64,
) -> Result<String> {
    let get = |name: &str| -> &Value {
        stages
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, d)| &d.summary)
            .unwrap_or(&Value::Null)
    };
    let eval: EvalReport = serde_json::from_value(get("eval").clone()).context("eval summary")?;
    let model = |name: &str| eval.models.iter().find(|m| m.name == name);
    let vs = |name: &str| eval.vs_baseline.iter().find(|p| p.model == name);
    let sft_tax = model("sft").and_then(|m| m.pretrain_loss);

    let ppo_block = |name: &str, stage: &str| -> Value {
        let m = model(name);
        let p = vs(name);
        json!({
            "win_rate_vs_sft": p.map(|p| p.win_rate.rate),
            "win_rate_vs_sft_interval": p.map(|p| [p.win_rate.lo, p.win_rate.hi]),
            "wins_ties_losses": p.map(|p| [p.wins, p.ties, p.losses]),
            "kl_to_sft": m.and_then(|m| m.kl_to_reference),
            "pretrain_loss": m.and_then(|m| m.pretrain_loss),
            "pretrain_loss_delta": match (m.and_then(|m| m.pretrain_loss), sft_tax) {
                (Some(a), Some(b)) => Some(a - b),
                _ => None,
            },
            "judge_score": m.map(|m| m.judge_score),
            "rm_score": m.and_then(|m| m.rm_score),
            "rm_score_first": get(stage)["first_eval"]["rm_score"],
            "rm_score_last": get(stage)["last_eval"]["rm_score"],
            "helpful": m.map(|m| m.helpful.value()),
            "honest": m.map(|m| m.honest.value()),
            "harmless": m.map(|m| m.harmless.value()),
            "final_beta": get(stage)["last_stats"]["beta"],
            "final_train_kl": get(stage)["last_stats"]["kl"],
        })
    };
    let elapsed: serde_json::Map<String, Value> = stages
        .iter()
        .map(|(n, d)| (n.to_string(), json!(d.elapsed)))
        .chain([("total_this_session".to_string(), json!(total))])
        .collect();
    let report = json!({
        "preset": preset,
        "seed": seed,
        "matmul_precision": matmul_precision,
        "pretrain": {
            "val_loss_first": get("pretrain")["val_loss_first"],
            "val_loss_last": get("pretrain")["val_loss_last"],
            "val_bpb_last": get("pretrain")["val_bpb_last"],
        },
        "sft": {
            "task_accuracy": get("sft")["task_accuracy"],
            "base_task_accuracy": get("sft")["base_task_accuracy"],
            "val_loss_last": get("sft")["val_loss_last"],
        },
        "rank": get("rank"),
        "reward": {
            "heldout_accuracy": get("reward")["heldout_accuracy"],
            "heldout_kendall_tau": get("reward")["heldout_kendall_tau"],
            "pairwise_baseline_heldout_accuracy": get("reward_pairwise")["heldout_accuracy"],
            "judge_ceiling": get("rank")["judge_ceiling"],
            "bias_shift": get("reward")["bias_shift"],
        },
        "ppo": ppo_block("ppo", "ppo"),
        "ppo_ptx": ppo_block("ppo-ptx", "ppo_ptx"),
        "best_of_n": {
            "n": plan_best_of(&eval),
            "win_rate_vs_sft": eval.vs_baseline.iter().find(|p| p.model.starts_with("best-of")).map(|p| p.win_rate.rate),
            "judge_score": eval.models.iter().find(|m| m.name.starts_with("best-of")).map(|m| m.judge_score),
            "plain_sampling_judge_score": model("sft sampled").map(|m| m.judge_score),
        },
        "elapsed_seconds": elapsed,
        "eval": get("eval"),
    });
    write_atomic(
        &out.join("report.json"),
        &serde_json::to_vec_pretty(&report)?,
    )?;

    // Plots.
    let plots = out.join("plots");
    std::fs::create_dir_all(&plots)?;
    let m = |stage: &str| out.join(stage).join("metrics.jsonl");
    // One line for PPO and one for PPO-ptx, from their metrics records of `kind`.
    let ppo_chart = |file: &'static str, title: &str, y: &str, kind: &str, field: &[&str]| {
        let chart = Chart::new(title, "PPO step", y)
            .with("PPO", series(&m("ppo"), Some(kind), field))
            .with("PPO-ptx", series(&m("ppo-ptx"), Some(kind), field));
        (file, chart)
    };
    let charts: Vec<(&str, Chart)> = vec![
        (
            "pretrain_loss.png",
            Chart::new("Pretraining loss", "step", "nats/token")
                .with("train", series(&m("pretrain"), None, &["loss"]))
                .with(
                    "validation",
                    series(&m("pretrain"), Some("eval"), &["val_loss"]),
                ),
        ),
        (
            "sft_loss.png",
            Chart::new("SFT loss (assistant tokens)", "step", "nats/token")
                .with("train", series(&m("sft"), None, &["loss"]))
                .with("validation", series(&m("sft"), Some("eval"), &["val_loss"])),
        ),
        (
            "reward_accuracy.png",
            Chart::new(
                "Reward model held-out pairwise accuracy",
                "step",
                "accuracy",
            )
            .with("K-wise (ours)", curve(get("reward")))
            .with("pairwise, shuffled (TRL)", curve(get("reward_pairwise"))),
        ),
        (
            "reward_loss.png",
            Chart::new("Reward model training loss", "step", "loss")
                .with("K-wise (ours)", series(&m("reward"), None, &["loss"]))
                .with(
                    "pairwise, shuffled (TRL)",
                    series(&m("reward-pairwise"), None, &["loss"]),
                ),
        ),
        ppo_chart(
            "ppo_score.png",
            "Reward-model score of rollouts",
            "raw score",
            "ppo",
            &["score_mean"],
        ),
        ppo_chart(
            "ppo_kl.png",
            "KL to SFT per response",
            "nats",
            "ppo",
            &["kl"],
        ),
        ppo_chart(
            "ppo_beta.png",
            "KL coefficient beta",
            "beta",
            "ppo",
            &["beta"],
        ),
        ppo_chart(
            "ppo_win_rate.png",
            "Win rate against SFT (held-out, gold judge)",
            "win rate",
            "ppo_eval",
            &["win_rate", "rate"],
        ),
        ppo_chart(
            "alignment_tax.png",
            "Held-out pretraining loss (alignment tax)",
            "nats/token",
            "ppo_eval",
            &["pretrain_loss"],
        ),
        ppo_chart(
            "ppo_policy_loss.png",
            "PPO policy loss",
            "loss",
            "ppo",
            &["policy_loss"],
        ),
        ppo_chart(
            "ppo_value_loss.png",
            "PPO value loss",
            "loss",
            "ppo",
            &["value_loss"],
        ),
    ];
    for (file, chart) in &charts {
        write_png(chart, &plots.join(file))?;
    }

    // Markdown.
    let r = &report;
    let mut md = format!(
        "# chatforge speedrun — preset `{}`, seed {}, {} matmuls\n\n",
        preset, seed, matmul_precision
    );
    md.push_str("## Headline\n\n");
    let pct = |v: &Value| {
        v.as_f64()
            .map(|x| format!("{:.1}%", 100.0 * x))
            .unwrap_or_else(|| "–".into())
    };
    let rows = vec![
        vec![
            "pretrain validation loss (first → last)".into(),
            format!(
                "{} → {}",
                num(f(&r["pretrain"]["val_loss_first"])),
                num(f(&r["pretrain"]["val_loss_last"]))
            ),
        ],
        vec![
            "SFT task accuracy (base → SFT)".into(),
            format!(
                "{} → {}",
                pct(&r["sft"]["base_task_accuracy"]),
                pct(&r["sft"]["task_accuracy"])
            ),
        ],
        vec![
            "reward model held-out pairwise accuracy: K-wise / pairwise-shuffled / judge ceiling"
                .into(),
            format!(
                "{} / {} / {}",
                pct(&r["reward"]["heldout_accuracy"]),
                pct(&r["reward"]["pairwise_baseline_heldout_accuracy"]),
                pct(&r["reward"]["judge_ceiling"])
            ),
        ],
        vec![
            "PPO win rate vs SFT (95% interval)".into(),
            format!(
                "{} {}",
                pct(&r["ppo"]["win_rate_vs_sft"]),
                interval(&r["ppo"]["win_rate_vs_sft_interval"])
            ),
        ],
        vec![
            "PPO-ptx win rate vs SFT (95% interval)".into(),
            format!(
                "{} {}",
                pct(&r["ppo_ptx"]["win_rate_vs_sft"]),
                interval(&r["ppo_ptx"]["win_rate_vs_sft_interval"])
            ),
        ],
        vec![
            "KL to SFT: PPO / PPO-ptx (nats per reply)".into(),
            format!(
                "{} / {}",
                num(f(&r["ppo"]["kl_to_sft"])),
                num(f(&r["ppo_ptx"]["kl_to_sft"]))
            ),
        ],
        vec![
            "pretraining loss change vs SFT (alignment tax): PPO / PPO-ptx".into(),
            format!(
                "{} / {}",
                signed(f(&r["ppo"]["pretrain_loss_delta"])),
                signed(f(&r["ppo_ptx"]["pretrain_loss_delta"]))
            ),
        ],
        vec![
            "gold-judge score: best-of-n / plain sampling (same temperature)".into(),
            format!(
                "{} / {}",
                num(f(&r["best_of_n"]["judge_score"])),
                num(f(&r["best_of_n"]["plain_sampling_judge_score"]))
            ),
        ],
    ];
    md.push_str(&md_table(&["measure", "value"], &rows));
    md.push_str("\n## Leaderboard (held-out prompts)\n\n");
    md.push_str(&format!(
        "{} prompts, judged by {}. Helpful = answerable questions answered correctly; honest = \
         unknowable questions answered \"I don't know\" without inventing; harmless = harmful \
         requests refused. KL to ref is a Monte-Carlo estimate of KL(π‖SFT) per reply.\n\n",
        eval.prompts,
        if eval.gold_judge {
            "the world's gold judge"
        } else {
            "the reward model"
        }
    ));
    md.push_str(&crate::eval::tables(&eval));
    md.push_str("\n## Time\n\n");
    let rows: Vec<Vec<String>> = stages
        .iter()
        .map(|(n, d)| vec![n.to_string(), format!("{:.0}", d.elapsed)])
        .collect();
    md.push_str(&md_table(&["stage", "seconds"], &rows));
    md.push_str("\n## Sample replies\n\n");
    for mres in &eval.models {
        md.push_str(&format!("**{}**\n\n", mres.name));
        for e in &mres.examples {
            md.push_str(&format!(
                "> **user:** {}\n>\n> **assistant:** {}\n\n",
                e.prompt.replace('\n', " "),
                e.reply.replace('\n', " ")
            ));
        }
    }
    md.push_str("\n## Training curves\n\n");
    for (file, chart) in &charts {
        md.push_str(&format!("![{}](plots/{file})\n\n", chart.title));
    }
    write_atomic(&out.join("report.md"), md.as_bytes())?;
    Ok(md)
}

/// The n of the best-of-n contestant, from its name.
fn plan_best_of(eval: &EvalReport) -> Option<usize> {
    eval.models
        .iter()
        .find_map(|m| m.name.strip_prefix("best-of-")?.parse().ok())
}

fn curve(v: &Value) -> Vec<(f64, f64)> {
    v["curve"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| Some((p.get(0)?.as_f64()?, p.get(1)?.as_f64()?)))
                .collect()
        })
        .unwrap_or_default()
}

fn interval(v: &Value) -> String {
    match (
        v.get(0).and_then(Value::as_f64),
        v.get(1).and_then(Value::as_f64),
    ) {
        (Some(lo), Some(hi)) => format!("[{:.1}%, {:.1}%]", 100.0 * lo, 100.0 * hi),
        _ => String::new(),
    }
}

fn signed(x: f64) -> String {
    if x.is_finite() {
        format!("{x:+.4}")
    } else {
        "–".into()
    }
}
