//! Advantages for PPO: generalised advantage estimation and whitening.
//!
//! Source: Schulman et al. 2016 (GAE) as implemented by TRL's `PPOTrainer.compute_advantages`
//! and `trl.core.whiten`. One response is one episode: the value after its last token is 0.
//!
//! Deviation from TRL: `whiten` uses the population variance (TRL's `torch.var` applies
//! Bessel's correction); over the hundreds of tokens of a PPO batch the difference is below
//! 1%, and the population form makes the whitened values have variance exactly
//! `var / (var + 1e-8)`.

/// Added to the variance before the square root in [`whiten`] (TRL's value).
pub const WHITEN_EPS: f64 = 1e-8;

/// Generalised advantage estimation over one response.
///
/// With `V_{T} = 0` (the episode ends after the last token):
/// `δ_t = r_t + γ·V_{t+1} − V_t`, `A_t = δ_t + γ·λ·A_{t+1}` (computed backwards, `A_T = 0`),
/// and the value targets are `R_t = A_t + V_t`. Returns `(advantages, returns)`.
///
/// # Panics
/// If `rewards` and `values` differ in length (a caller bug: both are per generated token).
pub fn gae(rewards: &[f64], values: &[f64], gamma: f64, lam: f64) -> (Vec<f64>, Vec<f64>) {
    assert_eq!(
        rewards.len(),
        values.len(),
        "gae: one reward and one value per token"
    );
    let n = rewards.len();
    let mut advantages = vec![0.0; n];
    let mut last = 0.0;
    for t in (0..n).rev() {
        let next_value = if t + 1 < n { values[t + 1] } else { 0.0 };
        let delta = rewards[t] + gamma * next_value - values[t];
        last = delta + gamma * lam * last;
        advantages[t] = last;
    }
    let returns = advantages.iter().zip(values).map(|(a, v)| a + v).collect();
    (advantages, returns)
}

/// Mean and population variance `Σ(x − μ)²/n` of every value of every row (`(0, 0)` when
/// there are none).
fn mean_var<'a>(rows: impl Iterator<Item = &'a [f64]> + Clone) -> (f64, f64) {
    let (n, sum) = rows
        .clone()
        .flatten()
        .fold((0usize, 0.0), |(n, s), x| (n + 1, s + x));
    if n == 0 {
        return (0.0, 0.0);
    }
    let mean = sum / n as f64;
    let ss: f64 = rows.flatten().map(|x| (x - mean) * (x - mean)).sum();
    (mean, ss / n as f64)
}

/// Whitens `xs` in place: `x ← (x − μ) / sqrt(σ² + 1e-8)`, with `μ` the mean and `σ²` the
/// population variance of `xs`. With `shift_mean = false` the mean is added back,
/// `x ← (x − μ) / sqrt(σ² + 1e-8) + μ`, as TRL does for rewards (scale without recentring).
/// An empty slice is left as it is.
pub fn whiten(xs: &mut [f64], shift_mean: bool) {
    let (mean, var) = mean_var(std::iter::once(&*xs));
    let inv = 1.0 / (var + WHITEN_EPS).sqrt();
    for x in xs.iter_mut() {
        let w = (*x - mean) * inv;
        *x = if shift_mean { w } else { w + mean };
    }
}

/// [`whiten`] with `shift_mean = true` over every token of every row of a ragged batch (each
/// row holds only the real tokens of one response, so no mask is needed): the mean and
/// population variance are taken over all tokens together, and each row keeps its length.
pub fn masked_whiten(xs: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let (mean, var) = mean_var(xs.iter().map(Vec::as_slice));
    let inv = 1.0 / (var + WHITEN_EPS).sqrt();
    xs.iter()
        .map(|row| row.iter().map(|x| (x - mean) * inv).collect())
        .collect()
}

/// Explained variance of the value predictions: `1 − Var(R − V) / Var(R)` (population
/// variances over the slices), the diagnostic TRL and Stable-Baselines log. 1 is perfect, 0 is
/// no better than predicting the mean, negative is worse; NaN when the returns have zero
/// variance or the slices are empty.
///
/// # Panics
/// If `values` and `returns` differ in length.
pub fn explained_variance(values: &[f64], returns: &[f64]) -> f64 {
    assert_eq!(
        values.len(),
        returns.len(),
        "explained_variance: one value per return"
    );
    let residual: Vec<f64> = returns.iter().zip(values).map(|(r, v)| r - v).collect();
    let (_, var_r) = mean_var(std::iter::once(returns));
    let (_, var_res) = mean_var(std::iter::once(residual.as_slice()));
    if var_r == 0.0 {
        return f64::NAN;
    }
    1.0 - var_res / var_r
}
