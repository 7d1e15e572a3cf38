//! RLHF with PPO (InstructGPT step 3): rollouts, advantages, losses, the KL controller and the
//! training loop. `run.rs` describes the algorithm top to bottom.

pub mod advantage;
mod config;
pub mod control;
mod guardrails;
mod heldout;
pub mod loss;
pub mod rollout;
mod run;
mod shaping;

pub use config::{PpoConfig, PpoEval, PpoPaths, PpoStats, PpoSummary};
pub use guardrails::{divergence, guardrails};
pub use run::run;
pub use shaping::{token_rewards, whiten_scores};
