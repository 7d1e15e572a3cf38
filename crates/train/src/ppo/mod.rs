//! RLHF with PPO (InstructGPT step 3): rollouts, advantages, losses, the KL controller and the
//! training loop. `run.rs` describes the algorithm top to bottom.

pub mod advantage;
pub mod control;
pub mod loss;
pub mod rollout;
mod run;

pub use run::{
    divergence, guardrails, run, token_rewards, whiten_scores, PpoConfig, PpoEval, PpoPaths,
    PpoStats, PpoSummary,
};
