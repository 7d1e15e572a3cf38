//! The numeric guard: a step whose loss or gradient is not finite, or whose loss spikes far
//! above its recent average, is skipped — the weights and optimizer state stay as they were —
//! and too many skips in a row stop the run with a diagnostic.

use std::collections::BTreeMap;

use candle_core::Var;
use serde::{Deserialize, Serialize};

use crate::events::TrainEvent;
use crate::optim::{clip_grads, AdamW, FlatGrads};
use crate::{Error, Result};

/// Spike threshold: a loss above `SPIKE_FACTOR ×` its running average is not applied.
pub const SPIKE_FACTOR: f64 = 10.0;
/// Steps of history before spikes are judged (early losses fall fast).
pub const SPIKE_WARMUP: u64 = 20;
/// Consecutive skipped steps after which the run stops.
pub const MAX_CONSECUTIVE_SKIPS: u32 = 10;

/// Running state of the guard; part of the checkpoint so that resume is exact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Guard {
    /// Exponential moving average of accepted losses (0.9 decay).
    pub loss_ema: f64,
    /// Accepted steps folded into the average.
    pub seen: u64,
    pub consecutive_skips: u32,
    pub total_skips: u64,
}

/// The guard's verdict on one step.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Apply,
    Skip(String),
    Stop(String),
}

impl Guard {
    /// Judges a step from its loss and gradient norm, and updates the running state.
    pub fn check(&mut self, loss: f64, grad_norm: f64) -> Verdict {
        let reason = if !loss.is_finite() {
            Some(format!("loss is {loss}"))
        } else if !grad_norm.is_finite() {
            Some(format!("gradient norm is {grad_norm}"))
        } else if self.seen >= SPIKE_WARMUP && loss > SPIKE_FACTOR * self.loss_ema {
            Some(format!(
                "loss {loss:.4} is more than {SPIKE_FACTOR}x its running average {:.4}",
                self.loss_ema
            ))
        } else {
            None
        };
        match reason {
            None => {
                self.loss_ema = if self.seen == 0 {
                    loss
                } else {
                    0.9 * self.loss_ema + 0.1 * loss
                };
                self.seen += 1;
                self.consecutive_skips = 0;
                Verdict::Apply
            }
            Some(r) => {
                self.consecutive_skips += 1;
                self.total_skips += 1;
                if self.consecutive_skips >= MAX_CONSECUTIVE_SKIPS {
                    Verdict::Stop(format!(
                        "{r}; {} steps in a row were not finite or spiked — lower the learning \
                         rate or check the data",
                        self.consecutive_skips
                    ))
                } else {
                    Verdict::Skip(r)
                }
            }
        }
    }
}

/// One guarded optimizer step: clip the gradients to `grad_clip` (0 = off), let the guard judge
/// the loss and the pre-clip norm, and apply AdamW only on [`Verdict::Apply`]. On any other
/// verdict the weights and the optimizer state are untouched. Returns the verdict and the norm.
pub fn guarded_update(
    guard: &mut Guard,
    opt: &mut AdamW,
    vars: &BTreeMap<String, Var>,
    grads: &mut FlatGrads,
    loss: f64,
    lr: f64,
    grad_clip: f64,
) -> Result<(Verdict, f64)> {
    let norm = clip_grads(grads, grad_clip)?;
    let verdict = guard.check(loss, norm);
    if verdict == Verdict::Apply {
        opt.step(vars, grads, lr)?;
    }
    Ok((verdict, norm))
}

/// [`guarded_update`] as a training loop uses it at step `step`: a skipped update is reported
/// as a [`TrainEvent::Skipped`] and returned as its reason; a stop becomes
/// [`Error::Diverged`]. Returns (skip reason, pre-clip gradient norm).
#[allow(clippy::too_many_arguments)]
pub fn guarded_step(
    guard: &mut Guard,
    opt: &mut AdamW,
    vars: &BTreeMap<String, Var>,
    grads: &mut FlatGrads,
    loss: f64,
    lr: f64,
    grad_clip: f64,
    step: u64,
    on_event: &mut dyn FnMut(&TrainEvent),
) -> Result<(Option<String>, f64)> {
    let (verdict, norm) = guarded_update(guard, opt, vars, grads, loss, lr, grad_clip)?;
    match verdict {
        Verdict::Apply => Ok((None, norm)),
        Verdict::Skip(reason) => {
            on_event(&TrainEvent::Skipped {
                step,
                reason: reason.clone(),
            });
            Ok((Some(reason), norm))
        }
        Verdict::Stop(reason) => Err(Error::Diverged { step, reason }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::{Grad, OptimConfig};
    use candle_core::Device;

    #[test]
    fn a_non_finite_gradient_leaves_weights_and_moments_unchanged() {
        let var = Var::from_slice(&[1.0f32, 2.0, 3.0, 4.0], (2, 2), &Device::Cpu).unwrap();
        let vars = BTreeMap::from([("w".to_string(), var.clone())]);
        let mut opt = AdamW::new(OptimConfig::default());
        let mut guard = Guard::default();
        let mut good =
            BTreeMap::from([("w".to_string(), Grad::from(vec![0.1f32, -0.2, 0.3, 0.0]))]);
        let (v, _) =
            guarded_update(&mut guard, &mut opt, &vars, &mut good, 1.0, 0.01, 1.0).unwrap();
        assert_eq!(v, Verdict::Apply);
        let (w_before, opt_before, guard_seen) = (
            var.as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
            opt.clone(),
            guard.seen,
        );
        for bad in [f32::NAN, f32::INFINITY] {
            let mut g =
                BTreeMap::from([("w".to_string(), Grad::from(vec![0.1f32, bad, 0.3, 0.0]))]);
            let (v, norm) =
                guarded_update(&mut guard, &mut opt, &vars, &mut g, 1.0, 0.01, 1.0).unwrap();
            assert!(matches!(v, Verdict::Skip(_)), "{v:?}");
            assert!(!norm.is_finite());
            let w = var
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            assert_eq!(w, w_before);
            assert_eq!(opt, opt_before);
            assert_eq!(guard.seen, guard_seen);
        }
        let mut g = good.clone();
        let (v, _) =
            guarded_update(&mut guard, &mut opt, &vars, &mut g, f64::NAN, 0.01, 1.0).unwrap();
        assert!(matches!(v, Verdict::Skip(_)));
        assert_eq!(opt, opt_before);
        // A finite step afterwards moves the weights again.
        let (v, _) =
            guarded_update(&mut guard, &mut opt, &vars, &mut good, 1.0, 0.01, 1.0).unwrap();
        assert_eq!(v, Verdict::Apply);
        assert_ne!(
            var.as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
            w_before
        );
    }

    #[test]
    fn nan_inf_and_spikes_are_skipped_and_runs_of_them_stop() {
        let mut g = Guard::default();
        for _ in 0..SPIKE_WARMUP {
            assert_eq!(g.check(2.0, 1.0), Verdict::Apply);
        }
        assert!(matches!(g.check(f64::NAN, 1.0), Verdict::Skip(_)));
        assert!(matches!(g.check(2.0, f64::INFINITY), Verdict::Skip(_)));
        assert!(matches!(g.check(25.0, 1.0), Verdict::Skip(_)));
        assert_eq!(g.check(2.1, 1.0), Verdict::Apply);
        assert_eq!(g.total_skips, 3);
        for _ in 0..MAX_CONSECUTIVE_SKIPS - 1 {
            assert!(matches!(g.check(f64::NAN, 1.0), Verdict::Skip(_)));
        }
        assert!(matches!(g.check(f64::NAN, 1.0), Verdict::Stop(_)));
    }

    #[test]
    fn early_high_losses_are_not_spikes() {
        let mut g = Guard::default();
        assert_eq!(g.check(1.0, 1.0), Verdict::Apply);
        assert_eq!(g.check(50.0, 1.0), Verdict::Apply);
    }
}
