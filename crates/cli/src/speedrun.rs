//! `chatforge speedrun`: the whole recipe on the built-in world, then a report card.
//!
//! world → tokenizer → pretrain → SFT → rank (gold judge, noise 0.1) → reward model (K-wise,
//! and the TRL-style pairwise baseline on the same rankings) → PPO → PPO-ptx → eval, each in its
//! own folder under OUT. A stage that finished leaves `OUT/stages/NAME.json` (its summary and
//! elapsed seconds) and is skipped on the next run; a stage that was interrupted resumes from
//! its newest checkpoint (every training stage resumes exactly). So re-running the same command
//! after an interruption continues where it stopped.
//!
//! The report: `OUT/report.md` (tables, sample replies of each model, plots) and
//! `OUT/report.json` (the headline numbers), with every training curve as a PNG under
//! `OUT/plots/`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use chatforge_data::atomic::write_atomic;
use chatforge_data::world::prompt_sets::{write_prompt_sets, PromptSetSizes};
use chatforge_data::world::{write_sft, write_world, World, WorldConfig};
use chatforge_train::eval::{
    evaluate, Contestant, ContestantKind, EvalConfig, EvalPaths, EvalReport,
};
use chatforge_train::ppo::{control::KlControl, PpoConfig, PpoPaths};
use chatforge_train::pretrain::{PretrainConfig, PretrainPaths};
use chatforge_train::rank::RankConfig;
use chatforge_train::report::md_table;
use chatforge_train::report::plot::{write_png, Chart};
use chatforge_train::reward::{RewardConfig, RewardPaths};
use chatforge_train::sft::{SftConfig, SftPaths};
use serde_json::{json, Value};

use crate::progress::{count_bar, TrainProgress};

#[derive(clap::Args, Debug)]
pub struct SpeedrunArgs {
    /// `tiny` (a few minutes, for CI) or `default` (at most 20 minutes on 2 cores).
    #[arg(long, default_value = "default")]
    preset: String,
    /// Seed of the world and of every stage.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Run directory (re-run the same command to resume).
    #[arg(long)]
    out: PathBuf,
}

/// Every stage's settings for one preset.
struct Plan {
    corpus_bytes: usize,
    sft_train: usize,
    sft_val: usize,
    prompts: PromptSetSizes,
    vocab_size: usize,
    pretrain: PretrainConfig,
    sft: SftConfig,
    rank: RankConfig,
    reward: RewardConfig,
    ppo: PpoConfig,
    ptx_coef: f64,
    eval: EvalConfig,
    best_of: usize,
}

fn plan(preset: &str, seed: u64) -> Result<Plan> {
    let tiny = match preset {
        "tiny" => true,
        "default" => false,
        p => bail!("unknown speedrun preset {p:?}: use tiny or default"),
    };
    let pick = |t: u64, d: u64| if tiny { t } else { d };
    let pretrain = PretrainConfig {
        preset: "tiny".into(),
        steps: pick(150, 600),
        eval_every: pick(50, 100),
        sample_every: pick(150, 300),
        checkpoint_every: 100,
        seed,
        ..PretrainConfig::default()
    };
    let sft = SftConfig {
        steps: Some(pick(150, 800)),
        eval_every: pick(150, 400),
        eval_tasks: pick(100, 300) as usize,
        checkpoint_every: 200,
        seed,
        ..SftConfig::default()
    };
    let rank = RankConfig {
        k: 4,
        noise: 0.1,
        limit: Some(pick(150, 800) as usize),
        seed,
        ..RankConfig::default()
    };
    let reward = RewardConfig {
        epochs: pick(1, 2),
        eval_every: pick(20, 25),
        seed,
        ..RewardConfig::default()
    };
    let ppo = PpoConfig {
        steps: pick(6, 32),
        prompts_per_iteration: pick(8, 16) as usize,
        samples_per_prompt: 4,
        minibatch_size: 16,
        ppo_epochs: 4,
        policy_lr: 3e-5,
        value_lr: 1e-4,
        // Measured on the default preset (seed 1): β 0.05 with a slow controller let the
        // KL reach 15 nats and the policy learned to answer everything with "I don't know"
        // (harmless 100% → 5%); β 0.15 adapting toward 4 nats within a few hundred samples
        // keeps refusals (82%) and wins as often.
        kl: KlControl::Adaptive {
            beta: 0.15,
            target: 4.0,
            horizon: 500.0,
        },
        eval_every: pick(3, 8),
        eval_prompts: pick(32, 100) as usize,
        checkpoint_every: 10,
        seed,
        ..PpoConfig::default()
    };
    let eval = EvalConfig {
        max_prompts: pick(60, 200) as usize,
        seed,
        ..EvalConfig::default()
    };
    Ok(Plan {
        corpus_bytes: pick(1_000_000, 4_000_000) as usize,
        sft_train: 20_000,
        sft_val: 500,
        prompts: PromptSetSizes {
            rank: rank.limit.unwrap_or(1000),
            ppo: 2000,
            eval: 300,
        },
        vocab_size: 2048,
        pretrain,
        sft,
        rank,
        reward,
        ppo,
        // Measured on the default preset: 1.0 pulls the policy back to the pretraining
        // distribution so hard that the KL to SFT passes 50 nats in four steps; 0.05 recovers
        // the pretraining loss and keeps the KL near the target.
        ptx_coef: 0.05,
        eval,
        best_of: 4,
    })
}

/// A finished stage: its summary and how long it took.
struct Done {
    summary: Value,
    elapsed: f64,
}

/// Runs `f` unless `OUT/stages/NAME.json` says the stage already finished.
fn stage(out: &Path, name: &str, f: impl FnOnce() -> Result<Value>) -> Result<Done> {
    let marker = out.join("stages").join(format!("{name}.json"));
    if marker.exists() {
        let v: Value = serde_json::from_slice(
            &std::fs::read(&marker).with_context(|| format!("reading {}", marker.display()))?,
        )
        .with_context(|| {
            format!(
                "{} is not valid JSON; delete it to rerun the stage",
                marker.display()
            )
        })?;
        eprintln!("== {name}: done already ({})", marker.display());
        return Ok(Done {
            elapsed: v["elapsed_seconds"].as_f64().unwrap_or(f64::NAN),
            summary: v["summary"].clone(),
        });
    }
    eprintln!("== {name}");
    let t = Instant::now();
    let summary = f().with_context(|| format!("stage {name}"))?;
    let elapsed = t.elapsed().as_secs_f64();
    let text = serde_json::to_vec_pretty(&json!({"elapsed_seconds": elapsed, "summary": summary}))?;
    write_atomic(&marker, &text)?;
    eprintln!("== {name}: {elapsed:.0} s");
    Ok(Done { summary, elapsed })
}

fn path_str(p: &Path) -> Value {
    Value::String(p.display().to_string())
}

pub fn run(a: SpeedrunArgs) -> Result<()> {
    let plan = plan(&a.preset, a.seed)?;
    let out = a.out.clone();
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let started = Instant::now();
    let wdir = out.join("world");
    let corpus_train = wdir.join("corpus/train.txt");
    let corpus_val = wdir.join("corpus/val.txt");
    let sft_dir = wdir.join("sft");
    let prompts_dir = wdir.join("prompts");
    let mut stages: Vec<(&str, Done)> = Vec::new();

    stages.push((
        "world",
        stage(&out, "world", || {
            let world = World::generate(&WorldConfig {
                seed: a.seed,
                ..WorldConfig::default()
            });
            let files = write_world(&world, &wdir, plan.corpus_bytes, a.seed)?;
            let sft = write_sft(&world, &wdir, plan.sft_train, plan.sft_val, a.seed)?;
            write_prompt_sets(&world, &wdir, &plan.prompts, a.seed)?;
            Ok(json!({
                "train_documents": files.train_documents,
                "train_bytes": files.train_bytes,
                "sft_train": sft.train_conversations,
            }))
        })?,
    ));

    let tok_path = out.join("tokenizer.json");
    stages.push((
        "tokenizer",
        stage(&out, "tokenizer", || {
            crate::tokenizer::train_to(
                std::slice::from_ref(&corpus_train),
                plan.vocab_size,
                false,
                &tok_path,
            )?;
            Ok(json!({"vocab_size": plan.vocab_size, "path": path_str(&tok_path)}))
        })?,
    ));

    let pretrain_dir = out.join("pretrain");
    stages.push((
        "pretrain",
        stage(&out, "pretrain", || {
            let mut p = TrainProgress::new("pretrain");
            let s = chatforge_train::pretrain::run(
                &plan.pretrain,
                &PretrainPaths {
                    train: vec![corpus_train.clone()],
                    val: vec![corpus_val.clone()],
                    tokenizer: tok_path.clone(),
                    out: pretrain_dir.clone(),
                },
                true,
                &mut |e| p.on_event(e),
            )?;
            p.finish();
            Ok(json!({
                "steps": s.steps,
                "val_loss_first": s.val_loss_first,
                "val_loss_last": s.val_loss_last,
                "val_bpb_last": s.val_bpb_last,
            }))
        })?,
    ));

    let sft_out = out.join("sft");
    stages.push((
        "sft",
        stage(&out, "sft", || {
            let mut p = TrainProgress::new("sft");
            let s = chatforge_train::sft::run(
                &plan.sft,
                &SftPaths {
                    base: pretrain_dir.clone(),
                    train: vec![sft_dir.join("train.jsonl")],
                    val: vec![sft_dir.join("val.jsonl")],
                    tasks: Some(sft_dir.join("val_tasks.jsonl")),
                    out: sft_out.clone(),
                },
                true,
                &mut |e| p.on_event(e),
            )?;
            p.finish();
            Ok(json!({
                "steps": s.steps,
                "val_loss_first": s.val_loss_first,
                "val_loss_last": s.val_loss_last,
                "base_task_accuracy": s.base_accuracy.as_ref().map(|a| a.overall()),
                "task_accuracy": s.accuracy.as_ref().map(|a| a.overall()),
                "per_kind": s.accuracy.as_ref().map(|a| &a.per_kind),
                "base_per_kind": s.base_accuracy.as_ref().map(|a| &a.per_kind),
            }))
        })?,
    ));

    let rankings = out.join("rankings.jsonl");
    stages.push((
        "rank",
        stage(&out, "rank", || {
            let bar = count_bar("rank");
            let s = chatforge_train::rank::collect(
                &plan.rank,
                &sft_out,
                &[prompts_dir.join("rank.jsonl")],
                &rankings,
                &mut |d, t| {
                    bar.set_length(t as u64);
                    bar.set_position(d as u64);
                },
            )?;
            bar.finish_and_clear();
            Ok(serde_json::to_value(&s)?)
        })?,
    ));

    let reward_dir = out.join("reward");
    let reward_stage = |name: &'static str, dir: PathBuf, pairwise: bool| -> Result<Done> {
        stage(&out, name, || {
            let mut p = TrainProgress::new(name);
            let cfg = RewardConfig {
                pairwise_baseline: pairwise,
                ..plan.reward.clone()
            };
            let s = chatforge_train::reward::run(
                &cfg,
                &RewardPaths {
                    base: sft_out.clone(),
                    data: vec![rankings.clone()],
                    out: dir,
                },
                true,
                &mut |e| p.on_event(e),
            )?;
            p.finish();
            Ok(json!({
                "steps": s.steps,
                "heldout_accuracy": s.heldout_accuracy,
                "heldout_accuracy_first": s.heldout_first.as_ref().map(|e| e.accuracy),
                "heldout_kendall_tau": s.heldout_kendall_tau,
                "reward_mean": s.reward_mean,
                "reward_std": s.reward_std,
                "bias_shift": s.bias_shift,
                "curve": s.curve,
                "train_records": s.train_records,
                "val_records": s.val_records,
                "train_pairs": s.train_pairs,
            }))
        })
    };
    stages.push(("reward", reward_stage("reward", reward_dir.clone(), false)?));
    stages.push((
        "reward_pairwise",
        reward_stage("reward_pairwise", out.join("reward-pairwise"), true)?,
    ));

    let ppo_stage = |name: &'static str, dir: PathBuf, ptx: f64| -> Result<Done> {
        stage(&out, name, || {
            let mut p = TrainProgress::new(name);
            let cfg = PpoConfig {
                ptx_coef: ptx,
                ..plan.ppo.clone()
            };
            let s = chatforge_train::ppo::run(
                &cfg,
                &PpoPaths {
                    policy: sft_out.clone(),
                    reward: reward_dir.clone(),
                    prompts: vec![prompts_dir.join("ppo.jsonl")],
                    eval_prompts: Some(prompts_dir.join("eval.jsonl")),
                    pretrain_train: vec![corpus_train.clone()],
                    pretrain_val: vec![corpus_val.clone()],
                    out: dir,
                },
                true,
                &mut |e| p.on_event(e),
            )?;
            p.finish();
            Ok(json!({
                "steps": s.steps,
                "first_eval": s.first_eval,
                "last_eval": s.last_eval,
                "last_stats": s.last_stats,
            }))
        })
    };
    let ppo_dir = out.join("ppo");
    let ptx_dir = out.join("ppo-ptx");
    stages.push(("ppo", ppo_stage("ppo", ppo_dir.clone(), 0.0)?));
    stages.push((
        "ppo_ptx",
        ppo_stage("ppo_ptx", ptx_dir.clone(), plan.ptx_coef)?,
    ));

    let contestants = vec![
        Contestant {
            name: "sft".into(),
            model: sft_out.clone(),
            kind: ContestantKind::Assistant,
        },
        Contestant {
            name: "base (few-shot)".into(),
            model: pretrain_dir.clone(),
            kind: ContestantKind::BaseFewShot,
        },
        Contestant {
            // Best-of-1 is plain sampling at the same temperature: the baseline best-of-n
            // must beat.
            name: "sft sampled".into(),
            model: sft_out.clone(),
            kind: ContestantKind::BestOfN {
                reward: reward_dir.clone(),
                n: 1,
            },
        },
        Contestant {
            name: format!("best-of-{}", plan.best_of),
            model: sft_out.clone(),
            kind: ContestantKind::BestOfN {
                reward: reward_dir.clone(),
                n: plan.best_of,
            },
        },
        Contestant {
            name: "ppo".into(),
            model: ppo_dir.clone(),
            kind: ContestantKind::Assistant,
        },
        Contestant {
            name: "ppo-ptx".into(),
            model: ptx_dir.clone(),
            kind: ContestantKind::Assistant,
        },
    ];
    stages.push((
        "eval",
        stage(&out, "eval", || {
            let bar = count_bar("eval");
            let r = evaluate(
                &contestants,
                &plan.eval,
                &EvalPaths {
                    prompts: vec![prompts_dir.join("eval.jsonl")],
                    reward: Some(reward_dir.clone()),
                    reference: Some(sft_out.clone()),
                    pretrain_val: vec![corpus_val.clone()],
                    work_dir: out.join("eval-cache"),
                },
                &mut |name, d, t| {
                    bar.set_message(name.to_string());
                    bar.set_length(t as u64);
                    bar.set_position(d as u64);
                },
            )?;
            bar.finish_and_clear();
            Ok(serde_json::to_value(&r)?)
        })?,
    ));

    let report = write_report(&out, &a, &stages, started.elapsed().as_secs_f64())?;
    println!("{report}");
    eprintln!(
        "report: {} and {}",
        out.join("report.md").display(),
        out.join("report.json").display()
    );
    Ok(())
}

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
fn write_report(
    out: &Path,
    a: &SpeedrunArgs,
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
        "preset": a.preset,
        "seed": a.seed,
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
        "# chatforge speedrun — preset `{}`, seed {}\n\n",
        a.preset, a.seed
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
