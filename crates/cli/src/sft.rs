//! `chatforge sft`: supervised fine-tuning on conversations, loss on assistant tokens only.
//!
//! Settings: defaults, then `--config FILE.toml` (fields of `SftConfig`), then flags.

use std::path::PathBuf;

use anyhow::Result;
use chatforge_train::sft::{run as run_sft, SftConfig, SftPaths};
use chatforge_train::tasks_eval::TaskAccuracy;

use crate::progress::TrainProgress;

#[derive(clap::Args, Debug)]
pub struct SftArgs {
    /// The pretrained checkpoint, or a run directory (its newest checkpoint).
    #[arg(long)]
    model: PathBuf,
    /// Training conversations (JSONL of {"messages": [...]}).
    #[arg(long = "train", required = true, num_args = 1..)]
    train: Vec<PathBuf>,
    /// Validation conversations.
    #[arg(long = "val", required = true, num_args = 1..)]
    val: Vec<PathBuf>,
    /// Held-out tasks with verifiable answers (`chatforge world` writes sft/val_tasks.jsonl).
    #[arg(long)]
    tasks: Option<PathBuf>,
    /// Run directory.
    #[arg(long)]
    out: PathBuf,
    /// Continue from the newest checkpoint in --out.
    #[arg(long)]
    resume: bool,
    /// TOML file with SftConfig fields; flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long)]
    grad_accum: Option<usize>,
    #[arg(long)]
    epochs: Option<u64>,
    #[arg(long)]
    steps: Option<u64>,
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long)]
    eval_every: Option<u64>,
    #[arg(long)]
    eval_tasks: Option<usize>,
    #[arg(long)]
    checkpoint_every: Option<u64>,
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

fn resolve(a: &SftArgs) -> Result<SftConfig> {
    let mut c = match &a.config {
        Some(p) => crate::load_toml::<SftConfig>(p)?,
        None => SftConfig::default(),
    };
    macro_rules! set {
        ($($flag:ident => $($field:ident).+),* $(,)?) => {
            $( if let Some(v) = a.$flag.clone() { c.$($field).+ = v; } )*
        };
    }
    set!(
        batch_size => batch_size, grad_accum => grad_accum, epochs => epochs, lr => optim.lr,
        eval_every => eval_every, eval_tasks => eval_tasks, checkpoint_every => checkpoint_every,
        seed => seed, matmul_precision => matmul_precision,
    );
    if a.steps.is_some() {
        c.steps = a.steps;
    }
    if a.skip_bad_records {
        c.skip_bad_records = true;
    }
    Ok(c)
}

/// A per-kind accuracy table, one line per kind.
pub fn accuracy_table(base: Option<&TaskAccuracy>, after: &TaskAccuracy) -> String {
    let mut s = String::from("| task kind | base | SFT |\n|---|---|---|\n");
    for (kind, (c, t)) in &after.per_kind {
        let b = base
            .and_then(|b| b.per_kind.get(kind))
            .map(|(bc, bt)| format!("{bc}/{bt}"))
            .unwrap_or_else(|| "-".into());
        s.push_str(&format!("| {kind} | {b} | {c}/{t} |\n"));
    }
    let b = base
        .map(|b| format!("{:.1}%", 100.0 * b.overall()))
        .unwrap_or_else(|| "-".into());
    s.push_str(&format!(
        "| **all** | {b} | {:.1}% |\n",
        100.0 * after.overall()
    ));
    s
}

pub fn run(a: SftArgs) -> Result<()> {
    let cfg = resolve(&a)?;
    let paths = SftPaths {
        base: a.model.clone(),
        train: a.train.clone(),
        val: a.val.clone(),
        tasks: a.tasks.clone(),
        out: a.out.clone(),
    };
    let device = a.device.open()?;
    let mut progress = TrainProgress::new("sft");
    let s = run_sft(&cfg, &paths, &device, a.resume, &mut |e| {
        progress.on_event(e)
    })?;
    progress.finish();
    eprintln!(
        "sft done: {} steps, val loss {} -> {:.4}; checkpoint {}",
        s.steps,
        s.val_loss_first
            .map(|v| format!("{v:.4}"))
            .unwrap_or_else(|| "?".into()),
        s.val_loss_last,
        s.checkpoint.display()
    );
    if let Some(acc) = &s.accuracy {
        println!("{}", accuracy_table(s.base_accuracy.as_ref(), acc));
    }
    Ok(())
}
