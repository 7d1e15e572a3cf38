//! `chatforge ppo`: RLHF — PPO against the reward model under a KL leash to SFT, with the
//! PPO-ptx pretraining mix when `--ptx-coef` > 0.
//!
//! Settings: defaults, then `--config FILE.toml` (fields of `PpoConfig`), then flags.

use std::path::PathBuf;

use anyhow::Result;
use chatforge_train::ppo::{run as run_ppo, PpoConfig, PpoPaths};

use crate::progress::TrainProgress;

#[derive(clap::Args, Debug)]
pub struct PpoArgs {
    /// The SFT checkpoint (policy start and frozen reference).
    #[arg(long)]
    policy: PathBuf,
    /// The reward model (frozen scorer; the value model starts from it).
    #[arg(long)]
    reward: PathBuf,
    /// Training prompts (`chatforge world` writes prompts/ppo.jsonl).
    #[arg(long = "prompts", required = true, num_args = 1..)]
    prompts: Vec<PathBuf>,
    /// Held-out prompts for the win rate against SFT (prompts/eval.jsonl).
    #[arg(long)]
    eval_prompts: Option<PathBuf>,
    /// Pretraining corpus: the PPO-ptx batches, and (with --pretrain-val) the alignment tax.
    #[arg(long = "pretrain-train", num_args = 1..)]
    pretrain_train: Vec<PathBuf>,
    #[arg(long = "pretrain-val", num_args = 1..)]
    pretrain_val: Vec<PathBuf>,
    /// Run directory.
    #[arg(long)]
    out: PathBuf,
    /// Continue from the newest checkpoint in --out.
    #[arg(long)]
    resume: bool,
    /// TOML file with PpoConfig fields; flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    steps: Option<u64>,
    #[arg(long)]
    prompts_per_iteration: Option<usize>,
    #[arg(long)]
    samples_per_prompt: Option<usize>,
    #[arg(long)]
    minibatch_size: Option<usize>,
    #[arg(long)]
    ppo_epochs: Option<usize>,
    #[arg(long)]
    policy_lr: Option<f64>,
    #[arg(long)]
    value_lr: Option<f64>,
    /// γ_ptx: weight of the pretraining loss (PPO-ptx); 0 is plain PPO.
    #[arg(long)]
    ptx_coef: Option<f64>,
    /// The KL coefficient β: fixed, or with --target-kl the adaptive controller's start.
    #[arg(long)]
    beta: Option<f64>,
    /// Adapt β toward this KL per response (nats).
    #[arg(long)]
    target_kl: Option<f64>,
    #[arg(long)]
    temperature: Option<f32>,
    #[arg(long)]
    max_tokens: Option<usize>,
    #[arg(long)]
    eval_every: Option<u64>,
    #[arg(long)]
    eval_prompts_n: Option<usize>,
    #[arg(long)]
    checkpoint_every: Option<u64>,
    #[arg(long)]
    seed: Option<u64>,
    /// Precision of the linear layers' matrix products: f32, or bf16 (autocast for the linears:
    /// f32 weights and accumulation; about twice the speed on CPUs with AVX512-BF16).
    #[arg(long)]
    matmul_precision: Option<chatforge_model::ops::MatmulPrecision>,
    #[arg(long)]
    skip_bad_records: bool,
    #[command(flatten)]
    device: crate::device::DeviceOpt,
}

fn resolve(a: &PpoArgs) -> Result<PpoConfig> {
    use chatforge_train::ppo::control::KlControl;
    let mut c = match &a.config {
        Some(p) => crate::load_toml::<PpoConfig>(p)?,
        None => PpoConfig::default(),
    };
    macro_rules! set {
        ($($flag:ident => $field:ident),* $(,)?) => {
            $( if let Some(v) = a.$flag.clone() { c.$field = v; } )*
        };
    }
    set!(
        steps => steps, prompts_per_iteration => prompts_per_iteration,
        samples_per_prompt => samples_per_prompt, minibatch_size => minibatch_size,
        ppo_epochs => ppo_epochs, policy_lr => policy_lr, value_lr => value_lr,
        ptx_coef => ptx_coef, temperature => temperature, max_tokens => max_new_tokens,
        eval_every => eval_every, eval_prompts_n => eval_prompts,
        checkpoint_every => checkpoint_every, seed => seed,
        matmul_precision => matmul_precision,
    );
    c.kl = match (a.beta, a.target_kl, c.kl.clone()) {
        (Some(beta), None, _) => KlControl::Fixed { beta },
        (b, Some(target), KlControl::Adaptive { beta, horizon, .. }) => KlControl::Adaptive {
            beta: b.unwrap_or(beta),
            target,
            horizon,
        },
        (b, Some(target), KlControl::Fixed { beta }) => KlControl::Adaptive {
            beta: b.unwrap_or(beta),
            target,
            horizon: 10_000.0,
        },
        (None, None, kl) => kl,
    };
    if a.skip_bad_records {
        c.skip_bad_records = true;
    }
    Ok(c)
}

pub fn run(a: PpoArgs) -> Result<()> {
    let cfg = resolve(&a)?;
    let paths = PpoPaths {
        policy: a.policy.clone(),
        reward: a.reward.clone(),
        prompts: a.prompts.clone(),
        eval_prompts: a.eval_prompts.clone(),
        pretrain_train: a.pretrain_train.clone(),
        pretrain_val: a.pretrain_val.clone(),
        out: a.out.clone(),
    };
    let stage = if cfg.ptx_coef > 0.0 { "ppo-ptx" } else { "ppo" };
    let device = a.device.open()?;
    let mut progress = TrainProgress::new(stage);
    let s = run_ppo(&cfg, &paths, &device, a.resume, &mut |e| {
        progress.on_event(e)
    })?;
    progress.finish();
    eprintln!(
        "{stage} done: {} steps; checkpoint {}",
        s.steps,
        s.checkpoint.display()
    );
    let line = |e: &Option<chatforge_train::ppo::PpoEval>| {
        e.as_ref()
            .map(|e| serde_json::to_string(e).unwrap_or_default())
            .unwrap_or_else(|| "null".into())
    };
    println!(
        "{{\"first_eval\": {}, \"last_eval\": {}}}",
        line(&s.first_eval),
        line(&s.last_eval)
    );
    Ok(())
}
