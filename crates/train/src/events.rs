//! The typed progress events every training stage reports. Libraries never print: the binary
//! turns these into progress bars and lines, tests collect them.

use std::path::PathBuf;

use serde::Serialize;

/// One optimizer step's numbers (also the `metrics.jsonl` record).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepMetrics {
    pub step: u64,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens: u64,
    pub tokens_per_sec: f64,
    pub elapsed_s: f64,
    /// Set when the update was skipped by the numeric guard.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

/// What a training stage reports while it runs.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainEvent {
    /// Token shards are ready.
    Prepared {
        train_tokens: usize,
        val_tokens: usize,
        reused: bool,
    },
    /// Training starts (or resumes) at `step` of `total_steps`.
    Start {
        step: u64,
        total_steps: u64,
        params: usize,
        /// Work per optimizer step, in `unit`s.
        per_step: usize,
        /// What `per_step` counts: "tokens" (pretraining) or "conversations" (SFT).
        unit: &'static str,
        resumed: bool,
    },
    Step(StepMetrics),
    /// Held-out loss (nats per token) and bits per byte.
    Eval {
        step: u64,
        val_loss: f64,
        val_bpb: f64,
    },
    /// Held-out task accuracy by generation (SFT and later stages).
    Accuracy {
        step: u64,
        accuracy: crate::tasks_eval::TaskAccuracy,
    },
    /// Held-out reward-model measures (pairwise accuracy, Kendall τ, score mean/std).
    RewardEval {
        step: u64,
        eval: crate::reward::RewardEval,
    },
    Sample {
        step: u64,
        prompt: String,
        text: String,
    },
    Checkpoint {
        step: u64,
        path: PathBuf,
    },
    /// A step's update was not applied (non-finite loss or gradient, or a loss spike).
    Skipped {
        step: u64,
        reason: String,
    },
    Done {
        step: u64,
        path: PathBuf,
    },
    /// One PPO iteration's numbers.
    Ppo(crate::ppo::PpoStats),
    /// A PPO evaluation: win rate against SFT, reward-model score, alignment tax.
    PpoEval(crate::ppo::PpoEval),
    /// A training statistic drifted outside its healthy range (the run goes on).
    Warning {
        step: u64,
        message: String,
    },
}
