//! The reward PPO optimises: whitened reward-model scores with the missing-end penalty, and the
//! per-token KL penalty to the reference (DESIGN.md "PPO").

use super::control::RunningMoments;
use super::loss::kl_k1;

/// Step 2: raw reward-model scores whitened with the running moments (updated with this batch
/// first), minus `penalty` for every response that did not end.
pub fn whiten_scores(
    raw: &[f64],
    ended: &[bool],
    moments: &mut RunningMoments,
    penalty: f64,
) -> Vec<f64> {
    moments.update(raw);
    let (mu, sd) = (moments.mean(), moments.std().max(1e-8));
    raw.iter()
        .zip(ended)
        .map(|(s, &e)| (s - mu) / sd - if e { 0.0 } else { penalty })
        .collect()
}

/// Step 3: per-token rewards `−β·(log π_old − log π_ref)` with `score` added on the last
/// token; also returns the per-token KL (k1).
pub fn token_rewards(
    old_lp: &[f64],
    ref_lp: &[f64],
    beta: f64,
    score: f64,
) -> (Vec<f64>, Vec<f64>) {
    let kl: Vec<f64> = old_lp
        .iter()
        .zip(ref_lp)
        .map(|(a, b)| kl_k1(*a, *b))
        .collect();
    let mut rewards: Vec<f64> = kl.iter().map(|k| -beta * k).collect();
    if let Some(last) = rewards.last_mut() {
        *last += score;
    }
    (rewards, kl)
}
