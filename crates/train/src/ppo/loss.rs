//! The PPO losses: the clipped policy surrogate and the clipped value loss, with their
//! diagnostics (clip fractions, approximate KL), KL estimators and the policy entropy.
//!
//! Source: Schulman et al. 2017 (PPO), as implemented by TRL's `PPOTrainer.loss`:
//! `ratio = exp(logp − old_logp)`, `pg_loss = masked_mean(max(−A·ratio, −A·clip(ratio, 1−ε,
//! 1+ε)))`, `vf_loss = 0.5 · masked_mean(max((v − R)², (v_clipped − R)²))` with
//! `v_clipped = v_old + clip(v − v_old, −ε_v, ε_v)`; the clip fractions are
//! `masked_mean(clipped loss > unclipped loss)` and the approximate KL is TRL's
//! `0.5 · masked_mean((logp − old_logp)²)`. The KL estimators `k1` and `k3` are Schulman's
//! "Approximating KL divergence" (2020).
//!
//! The tensor versions train (gradients flow through `logp` and `v` only: the old log-probs,
//! advantages, old values, returns and mask are detached); the `_f64` versions are the
//! golden-value references the tests pin them to. A masked mean is `Σ x·m / Σ m` over every
//! element, so a mask may also weight tokens.
//!
//! Deviation from PyTorch: at a kink (`ratio = 1 ± ε` exactly, or the two branches equal)
//! candle splits the gradient of `max`/`clamp` evenly between the tied inputs, where PyTorch's
//! `clamp` passes it whole; inside the clip range the two branches of the surrogate are equal
//! and their halves add up to the same gradient.

use candle_core::{DType, Device, Tensor, D};

use crate::{Error, Result};

/// The PPO policy loss of one minibatch.
#[derive(Debug, Clone)]
pub struct PolicyLossOut {
    /// Scalar tensor `masked_mean(max(−A·r, −A·clip(r, 1−ε, 1+ε)))`; backward flows to `logp`.
    pub loss: Tensor,
    /// Share of masked tokens where the clipped branch is the larger loss (TRL's
    /// `pg_clipfrac = masked_mean(pg_losses2 > pg_losses)`).
    pub clip_frac: f64,
    /// TRL's `approxkl = 0.5 · masked_mean((logp − old_logp)²)`, an estimate of
    /// KL(π_old ‖ π) between the rollout policy and the current one.
    pub approx_kl: f64,
}

/// The PPO value loss of one minibatch.
#[derive(Debug, Clone)]
pub struct ValueLossOut {
    /// Scalar tensor `0.5 · masked_mean(max((v − R)², (v_clipped − R)²))`; backward flows to `v`.
    pub loss: Tensor,
    /// Share of masked tokens where the clipped branch is the larger loss (TRL's
    /// `vf_clipfrac = masked_mean(vf_losses2 > vf_losses1)`).
    pub clip_frac: f64,
}

/// [`PolicyLossOut`] computed in f64 by [`policy_loss_f64`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PolicyLossF64 {
    pub loss: f64,
    pub clip_frac: f64,
    pub approx_kl: f64,
}

/// [`ValueLossOut`] computed in f64 by [`value_loss_f64`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ValueLossF64 {
    pub loss: f64,
    pub clip_frac: f64,
}

/// The clipped surrogate of one token as a loss: `max(−A·r, −A·clip(r, 1−ε, 1+ε))`.
pub fn clipped_surrogate_f64(adv: f64, ratio: f64, eps: f64) -> f64 {
    let clipped = ratio.clamp(1.0 - eps, 1.0 + eps);
    (-adv * ratio).max(-adv * clipped)
}

/// The clipped value loss of one token:
/// `0.5 · max((v − R)², (v_old + clip(v − v_old, −ε, ε) − R)²)`.
pub fn clipped_value_loss_f64(v: f64, v_old: f64, ret: f64, eps: f64) -> f64 {
    let v_clipped = v_old + (v - v_old).clamp(-eps, eps);
    0.5 * (v - ret).powi(2).max((v_clipped - ret).powi(2))
}

/// Checks that every slice has `n` elements and returns `Σ mask`.
fn mask_sum_f64(what: &str, n: usize, others: &[&[f64]], mask: &[f64]) -> Result<f64> {
    if mask.len() != n || others.iter().any(|s| s.len() != n) {
        return Err(Error::Data(format!("{what}: inputs differ in length")));
    }
    let total: f64 = mask.iter().sum();
    if total <= 0.0 || !total.is_finite() {
        return Err(Error::Data(format!("{what}: the mask selects no token")));
    }
    Ok(total)
}

/// f64 reference of [`policy_loss`] over flat per-token slices (same formulas, same masked
/// means).
pub fn policy_loss_f64(
    logp: &[f64],
    old_logp: &[f64],
    adv: &[f64],
    mask: &[f64],
    eps: f64,
) -> Result<PolicyLossF64> {
    let n = mask_sum_f64("policy_loss_f64", logp.len(), &[old_logp, adv], mask)?;
    let (mut loss, mut clipped, mut kl) = (0.0, 0.0, 0.0);
    for i in 0..logp.len() {
        let log_ratio = logp[i] - old_logp[i];
        let ratio = log_ratio.exp();
        let unclipped = -adv[i] * ratio;
        let clip = -adv[i] * ratio.clamp(1.0 - eps, 1.0 + eps);
        loss += mask[i] * unclipped.max(clip);
        clipped += mask[i] * f64::from(u8::from(clip > unclipped));
        kl += mask[i] * log_ratio * log_ratio;
    }
    Ok(PolicyLossF64 {
        loss: loss / n,
        clip_frac: clipped / n,
        approx_kl: 0.5 * kl / n,
    })
}

/// f64 reference of [`value_loss`] over flat per-token slices.
pub fn value_loss_f64(
    v: &[f64],
    v_old: &[f64],
    returns: &[f64],
    mask: &[f64],
    eps: f64,
) -> Result<ValueLossF64> {
    let n = mask_sum_f64("value_loss_f64", v.len(), &[v_old, returns], mask)?;
    let (mut loss, mut clipped) = (0.0, 0.0);
    for i in 0..v.len() {
        let l1 = (v[i] - returns[i]).powi(2);
        let v_clipped = v_old[i] + (v[i] - v_old[i]).clamp(-eps, eps);
        let l2 = (v_clipped - returns[i]).powi(2);
        loss += mask[i] * l1.max(l2);
        clipped += mask[i] * f64::from(u8::from(l2 > l1));
    }
    Ok(ValueLossF64 {
        loss: 0.5 * loss / n,
        clip_frac: clipped / n,
    })
}

/// Reads a one-element tensor as f64 (on the CPU, whatever its dtype and device).
fn scalar_f64(t: &Tensor) -> Result<f64> {
    Ok(t.to_device(&Device::Cpu)?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()?)
}

/// Checks that every tensor has the shape of the first and returns the mask (detached, in
/// `dtype`) with its sum.
fn checked_mask(what: &str, tensors: &[(&str, &Tensor)], dtype: DType) -> Result<(Tensor, f64)> {
    let (first_name, first) = tensors[0];
    for (name, t) in &tensors[1..] {
        if t.dims() != first.dims() {
            return Err(Error::Data(format!(
                "{what}: {name} has shape {:?} but {first_name} has {:?}",
                t.dims(),
                first.dims()
            )));
        }
    }
    let mask = tensors[tensors.len() - 1].1.detach().to_dtype(dtype)?;
    let total = scalar_f64(&mask.sum_all()?)?;
    if total <= 0.0 || !total.is_finite() {
        return Err(Error::Data(format!("{what}: the mask selects no token")));
    }
    Ok((mask, total))
}

/// Masked mean over every element: `Σ x·m / Σ m`, a scalar tensor (differentiable in `x`).
/// `mask` must have the shape of `x`; a mask that selects nothing is an error.
pub fn masked_mean(x: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let (mask, total) = checked_mask("masked_mean", &[("x", x), ("mask", mask)], x.dtype())?;
    Ok((x * &mask)?.sum_all()?.affine(1.0 / total, 0.0)?)
}

/// The PPO clipped policy loss (TRL `PPOTrainer.loss`):
/// `r = exp(logp − old_logp)`, `loss = masked_mean(max(−A·r, −A·clip(r, 1−ε, 1+ε)))`,
/// `clip_frac = masked_mean(−A·clip(r) > −A·r)`, `approx_kl = 0.5 · masked_mean((logp −
/// old_logp)²)`. Gradients flow through `logp` only.
///
/// # Shapes
/// `logp`, `old_logp`, `adv`, `mask`: all the same shape, typically `(B, T)` over response
/// tokens; `mask` is 1 on real tokens and 0 on padding (any dtype). `loss` is a scalar in the
/// dtype of `logp`.
pub fn policy_loss(
    logp: &Tensor,
    old_logp: &Tensor,
    adv: &Tensor,
    mask: &Tensor,
    eps: f64,
) -> Result<PolicyLossOut> {
    let (mask, total) = checked_mask(
        "policy_loss",
        &[
            ("logp", logp),
            ("old_logp", old_logp),
            ("adv", adv),
            ("mask", mask),
        ],
        logp.dtype(),
    )?;
    let old_logp = old_logp.detach().to_dtype(logp.dtype())?;
    let neg_adv = adv.detach().to_dtype(logp.dtype())?.neg()?;
    let log_ratio = (logp - &old_logp)?;
    let ratio = log_ratio.exp()?;
    let unclipped = (&neg_adv * &ratio)?;
    let clipped = (&neg_adv * ratio.clamp(1.0 - eps, 1.0 + eps)?)?;
    let loss = (unclipped.maximum(&clipped)? * &mask)?
        .sum_all()?
        .affine(1.0 / total, 0.0)?;
    let clip_hits = (clipped.gt(&unclipped)?.to_dtype(mask.dtype())? * &mask)?.sum_all()?;
    let kl_sum = (log_ratio.detach().sqr()? * &mask)?.sum_all()?;
    Ok(PolicyLossOut {
        loss,
        clip_frac: scalar_f64(&clip_hits)? / total,
        approx_kl: 0.5 * scalar_f64(&kl_sum)? / total,
    })
}

/// The PPO clipped value loss (TRL `PPOTrainer.loss`):
/// `v_clipped = v_old + clip(v − v_old, −ε, ε)`,
/// `loss = 0.5 · masked_mean(max((v − R)², (v_clipped − R)²))`,
/// `clip_frac = masked_mean((v_clipped − R)² > (v − R)²)`. Gradients flow through `v` only.
///
/// # Shapes
/// `v`, `v_old`, `returns`, `mask`: all the same shape, typically `(B, T)`; `loss` is a scalar
/// in the dtype of `v`.
pub fn value_loss(
    v: &Tensor,
    v_old: &Tensor,
    returns: &Tensor,
    mask: &Tensor,
    eps: f64,
) -> Result<ValueLossOut> {
    let (mask, total) = checked_mask(
        "value_loss",
        &[
            ("v", v),
            ("v_old", v_old),
            ("returns", returns),
            ("mask", mask),
        ],
        v.dtype(),
    )?;
    let v_old = v_old.detach().to_dtype(v.dtype())?;
    let returns = returns.detach().to_dtype(v.dtype())?;
    let v_clipped = (&v_old + (v - &v_old)?.clamp(-eps, eps)?)?;
    let unclipped = (v - &returns)?.sqr()?;
    let clipped = (v_clipped - &returns)?.sqr()?;
    let loss = (unclipped.maximum(&clipped)? * &mask)?
        .sum_all()?
        .affine(0.5 / total, 0.0)?;
    let clip_hits = (clipped.gt(&unclipped)?.to_dtype(mask.dtype())? * &mask)?.sum_all()?;
    Ok(ValueLossOut {
        loss,
        clip_frac: scalar_f64(&clip_hits)? / total,
    })
}

/// The `k1` KL estimator of one sampled token: `log π(x) − log π_ref(x)` (unbiased for
/// KL(π ‖ π_ref) under x ~ π, can be negative). This is the per-token penalty InstructGPT
/// and TRL put in the reward.
pub fn kl_k1(logp: f64, logref: f64) -> f64 {
    logp - logref
}

/// The `k3` KL estimator of one sampled token: `(ρ − 1) − log ρ` with
/// `ρ = π_ref(x)/π(x) = exp(logref − logp)` (unbiased and never negative).
pub fn kl_k3(logp: f64, logref: f64) -> f64 {
    let log_rho = logref - logp;
    log_rho.exp_m1() - log_rho
}

/// Entropy of the softmax of `logits` over the last dimension:
/// `H = −Σ_v p_v · log p_v` with `log p = log_softmax(logits)`. Differentiable.
///
/// # Shapes
/// `logits`: `(N, V)` (or any `(…, V)`); returns `(N,)` (or `(…)`). Logits must be finite.
pub fn entropy_from_logits(logits: &Tensor) -> Result<Tensor> {
    let log_p = candle_nn::ops::log_softmax(logits, D::Minus1)?; // (N, V)
    Ok((log_p.exp()? * &log_p)?.sum(D::Minus1)?.neg()?) // (N,)
}
