//! The KL coefficient controller and the running moments used to normalise rewards.
//!
//! Sources: the adaptive KL controller of Ziegler et al. 2019 ("Fine-Tuning Language Models
//! from Human Preferences", §2.2) as TRL's `AdaptiveKLController`; the fixed one as TRL's
//! `FixedKLController`; [`RunningMoments`] as TRL's `RunningMoments` (population variance
//! kept, unbiased standard deviation reported), merged with Chan et al.'s parallel algorithm.
//!
//! Deviations: an update with a non-finite observed KL is ignored (TRL would turn β into NaN);
//! a fresh [`RunningMoments`] has count 0 rather than TRL's 1e-24, and reports a standard
//! deviation of 1 (TRL's initial value) until it has seen two values.
//!
//! Both types are plain serde data so that a checkpoint restores them exactly (f64 values
//! round-trip bit-exactly through serde_json and toml).

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Bound on the proportional error of the adaptive controller (Ziegler et al.).
pub const KL_ERROR_CLIP: f64 = 0.2;

/// How the KL penalty coefficient β evolves.
///
/// Serialized internally tagged by `kind`:
/// `{"kind": "fixed", "beta": 0.05}` or
/// `{"kind": "adaptive", "beta": 0.05, "target": 6.0, "horizon": 10000.0}`
/// (in TOML: `kind = "adaptive"` beside the fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum KlControl {
    /// β never changes.
    Fixed { beta: f64 },
    /// β moves toward the value that makes the observed KL equal `target` (in nats per
    /// response, summed over tokens, as the caller measures it), at a rate set by `horizon`
    /// (in the same unit as the `n_steps` given to [`KlControl::update`], TRL: samples).
    Adaptive {
        beta: f64,
        target: f64,
        horizon: f64,
    },
}

impl KlControl {
    /// The current coefficient β.
    pub fn beta(&self) -> f64 {
        match self {
            KlControl::Fixed { beta } | KlControl::Adaptive { beta, .. } => *beta,
        }
    }

    /// Checks that β is finite and ≥ 0, and for the adaptive controller that the target and
    /// horizon are finite and > 0.
    pub fn validate(&self) -> Result<()> {
        let beta = self.beta();
        if !(beta.is_finite() && beta >= 0.0) {
            return Err(Error::Config(format!(
                "kl control: beta must be finite and >= 0, got {beta}"
            )));
        }
        if let KlControl::Adaptive {
            target, horizon, ..
        } = self
        {
            for (name, x) in [("target", target), ("horizon", horizon)] {
                if !(x.is_finite() && *x > 0.0) {
                    return Err(Error::Config(format!(
                        "kl control: {name} must be finite and > 0, got {x}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Updates β after a step that observed KL `observed_kl` over `n_steps` (TRL: the batch
    /// size). Fixed: nothing. Adaptive (Ziegler et al. 2019):
    /// `e = clip(observed_kl / target − 1, −0.2, 0.2)`, `β ← β · (1 + e · n_steps / horizon)`.
    /// A non-finite `observed_kl` leaves β unchanged.
    pub fn update(&mut self, observed_kl: f64, n_steps: usize) {
        if let KlControl::Adaptive {
            beta,
            target,
            horizon,
        } = self
        {
            if !observed_kl.is_finite() {
                return;
            }
            let error = (observed_kl / *target - 1.0).clamp(-KL_ERROR_CLIP, KL_ERROR_CLIP);
            *beta *= 1.0 + error * n_steps as f64 / *horizon;
        }
    }
}

/// Running mean and variance of every value seen so far (TRL's `RunningMoments`), used to
/// normalise reward-model scores. Each batch is merged with Chan et al.'s parallel update:
/// with `δ = μ_b − μ`, `N = n + n_b`:
/// `μ ← μ + δ·n_b/N`, `σ² ← (σ²·n + σ_b²·n_b + δ²·n·n_b/N) / N` (population variances).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunningMoments {
    count: u64,
    mean: f64,
    /// Population variance `Σ(x − μ)² / count`.
    var: f64,
}

impl RunningMoments {
    /// No values seen.
    pub fn new() -> RunningMoments {
        RunningMoments::default()
    }

    /// Merges a batch and returns the batch's `(mean, std)` with the unbiased standard
    /// deviation `sqrt(Σ(x − μ_b)² / (n_b − 1))` (0 for a single value), as TRL returns.
    /// An empty batch changes nothing and returns `(0, 0)`.
    pub fn update(&mut self, xs: &[f64]) -> (f64, f64) {
        if xs.is_empty() {
            return (0.0, 0.0);
        }
        let n_b = xs.len() as f64;
        let mean_b = xs.iter().sum::<f64>() / n_b;
        let ss_b: f64 = xs.iter().map(|x| (x - mean_b) * (x - mean_b)).sum();
        let n = self.count as f64;
        let total = n + n_b;
        let delta = mean_b - self.mean;
        let ss = self.var * n + ss_b + delta * delta * n * n_b / total;
        self.mean += delta * n_b / total;
        self.var = ss / total;
        self.count += xs.len() as u64;
        let std_b = if xs.len() > 1 {
            (ss_b / (n_b - 1.0)).sqrt()
        } else {
            0.0
        };
        (mean_b, std_b)
    }

    /// Number of values seen.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Mean of every value seen (0 before any).
    pub fn mean(&self) -> f64 {
        self.mean
    }

    /// Population variance `Σ(x − μ)² / n` of every value seen (0 before any).
    pub fn var(&self) -> f64 {
        self.var
    }

    /// Unbiased standard deviation `sqrt(σ² · n / (n − 1))` of every value seen, as TRL's
    /// `RunningMoments.std`; 1 until two values have been seen.
    pub fn std(&self) -> f64 {
        if self.count < 2 {
            return 1.0;
        }
        let n = self.count as f64;
        (self.var * n / (n - 1.0)).sqrt()
    }
}
