//! PPO's settings, paths and reported numbers.

use std::path::PathBuf;

use chatforge_model::ops::MatmulPrecision;
use chatforge_tokenizer::chat::ChatTemplate;
use serde::{Deserialize, Serialize};

use super::control::KlControl;
use crate::stats::WinRate;
use crate::{Error, Result};

/// Everything that defines a PPO run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PpoConfig {
    /// Rollout-and-update iterations (the run's steps).
    pub steps: u64,
    pub prompts_per_iteration: usize,
    pub samples_per_prompt: usize,
    /// Responses per minibatch.
    pub minibatch_size: usize,
    pub ppo_epochs: usize,
    /// Sampling temperature of rollouts (and of the recomputed log-probs).
    pub temperature: f32,
    pub max_new_tokens: usize,
    pub policy_lr: f64,
    pub value_lr: f64,
    pub grad_clip: f64,
    pub gamma: f64,
    pub lam: f64,
    /// ε of the clipped surrogate.
    pub clip_range: f64,
    /// ε of the clipped value loss.
    pub clip_range_value: f64,
    /// The KL penalty coefficient β: fixed or adaptive.
    pub kl: KlControl,
    /// Subtracted from the whitened score of a response that never ends.
    pub missing_eos_penalty: f64,
    /// γ_ptx: weight of the pretraining loss in the policy objective (0 = plain PPO).
    pub ptx_coef: f64,
    pub ptx_batch_size: usize,
    pub ptx_seq_len: usize,
    /// Stop when the mean KL per response exceeds this many nats.
    pub kl_stop: f64,
    pub eval_every: u64,
    /// Held-out prompts judged at each evaluation.
    pub eval_prompts: usize,
    pub checkpoint_every: u64,
    pub keep_checkpoints: usize,
    pub skip_bad_records: bool,
    pub seed: u64,
    /// Precision of the linear layers' matrix products in every model PPO runs (rollouts, the
    /// reference, the policy and value updates, evaluation; the reward model stays f32): `f32`,
    /// or `bf16` (bf16 autocast for the linears; weights and optimizer state stay f32). One
    /// precision for all, so that the rollout's log-probabilities match the training forward's.
    pub matmul_precision: MatmulPrecision,
    /// The chat template (taken from the SFT checkpoint).
    pub template: ChatTemplate,
}

impl Default for PpoConfig {
    fn default() -> Self {
        Self {
            steps: 100,
            prompts_per_iteration: 16,
            samples_per_prompt: 4,
            minibatch_size: 16,
            ppo_epochs: 4,
            temperature: 1.0,
            max_new_tokens: 48,
            policy_lr: 1e-5,
            value_lr: 1e-4,
            grad_clip: 1.0,
            gamma: 1.0,
            lam: 0.95,
            clip_range: 0.2,
            clip_range_value: 0.2,
            kl: KlControl::Adaptive {
                beta: 0.1,
                target: 6.0,
                horizon: 10_000.0,
            },
            missing_eos_penalty: 1.0,
            ptx_coef: 0.0,
            ptx_batch_size: 4,
            ptx_seq_len: 128,
            kl_stop: 50.0,
            eval_every: 20,
            eval_prompts: 64,
            checkpoint_every: 20,
            keep_checkpoints: 2,
            skip_bad_records: false,
            seed: 1337,
            matmul_precision: MatmulPrecision::F32,
            template: ChatTemplate::Native,
        }
    }
}

/// Inputs and output of a PPO run.
#[derive(Debug, Clone)]
pub struct PpoPaths {
    /// The SFT checkpoint: the policy's start and the frozen reference.
    pub policy: PathBuf,
    /// The reward model: frozen scorer and the value model's start.
    pub reward: PathBuf,
    /// Training prompts (JSONL of `{"prompt": [...]}`).
    pub prompts: Vec<PathBuf>,
    /// Held-out prompts for the win rate (with world tasks for the gold judge, when available).
    pub eval_prompts: Option<PathBuf>,
    /// Pretraining corpus: required for PPO-ptx; with `pretrain_val` it also measures the
    /// alignment tax.
    pub pretrain_train: Vec<PathBuf>,
    pub pretrain_val: Vec<PathBuf>,
    pub out: PathBuf,
}

/// One iteration's numbers (also a `metrics.jsonl` record, `"kind": "ppo"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PpoStats {
    pub step: u64,
    /// Raw reward-model score of the rollouts.
    pub score_mean: f64,
    pub score_std: f64,
    /// Mean KL to the reference per response (sum over its tokens, k1 estimator).
    pub kl: f64,
    /// Mean per-response sum of the KL penalty `−β·kl`.
    pub non_score_reward: f64,
    pub beta: f64,
    /// Mean entropy per response token (nats).
    pub entropy: f64,
    pub policy_loss: f64,
    pub value_loss: f64,
    pub clip_frac: f64,
    pub value_clip_frac: f64,
    pub approx_kl: f64,
    pub explained_variance: f64,
    pub response_len: f64,
    /// Share of responses that ended with the assistant-end token.
    pub ended_frac: f64,
    /// Largest |log π_train − log π_rollout| at the first minibatch of the first epoch.
    pub logprob_mismatch: f64,
    /// Largest |ratio − 1| at the first minibatch of the first epoch.
    pub ratio_dev_first: f64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ptx_loss: Option<f64>,
    pub policy_grad_norm: f64,
    pub value_grad_norm: f64,
    pub rollout_s: f64,
    pub train_s: f64,
    pub elapsed_s: f64,
}

/// Held-out numbers at one evaluation (a `metrics.jsonl` record, `"kind": "ppo_eval"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PpoEval {
    pub step: u64,
    /// Win rate of the policy's greedy responses against SFT's (ties count half).
    pub win_rate: Option<WinRate>,
    /// Whether the judge was the world's gold judge (else the reward model).
    pub gold_judge: bool,
    /// Mean raw reward-model score of the policy's greedy responses (none without eval
    /// prompts).
    pub rm_score: Option<f64>,
    /// Held-out pretraining loss (nats/token): the alignment tax against step 0.
    pub pretrain_loss: Option<f64>,
}

/// What a finished run reports.
#[derive(Debug, Clone, PartialEq)]
pub struct PpoSummary {
    pub steps: u64,
    pub first_eval: Option<PpoEval>,
    pub last_eval: Option<PpoEval>,
    pub last_stats: Option<PpoStats>,
    pub checkpoint: PathBuf,
}

pub(super) fn check_config(cfg: &PpoConfig) -> Result<()> {
    for (name, v) in [
        ("prompts_per_iteration", cfg.prompts_per_iteration as u64),
        ("samples_per_prompt", cfg.samples_per_prompt as u64),
        ("minibatch_size", cfg.minibatch_size as u64),
        ("ppo_epochs", cfg.ppo_epochs as u64),
        ("max_new_tokens", cfg.max_new_tokens as u64),
        ("eval_every", cfg.eval_every),
        ("checkpoint_every", cfg.checkpoint_every),
    ] {
        if v == 0 {
            return Err(Error::Config(format!("{name} must be at least 1")));
        }
    }
    let bad = |x: f64| !x.is_finite() || x < 0.0;
    if bad(cfg.temperature as f64) || cfg.temperature == 0.0 {
        return Err(Error::Config(
            "temperature must be positive: PPO samples its rollouts".into(),
        ));
    }
    for (name, v) in [
        ("policy_lr", cfg.policy_lr),
        ("value_lr", cfg.value_lr),
        ("clip_range", cfg.clip_range),
        ("clip_range_value", cfg.clip_range_value),
        ("ptx_coef", cfg.ptx_coef),
        ("missing_eos_penalty", cfg.missing_eos_penalty),
        ("gamma", cfg.gamma),
        ("lam", cfg.lam),
    ] {
        if bad(v) {
            return Err(Error::Config(format!(
                "{name} must be finite and non-negative"
            )));
        }
    }
    if cfg.kl.beta() < 0.0 || !cfg.kl.beta().is_finite() {
        return Err(Error::Config(
            "kl beta must be finite and non-negative".into(),
        ));
    }
    Ok(())
}
