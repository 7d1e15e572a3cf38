//! Watching a PPO run: warnings when a statistic drifts out of its healthy range, and the
//! reasons to stop.

use chatforge_model::ops::MatmulPrecision;

use super::config::{PpoConfig, PpoStats};
use super::control::KlControl;

/// Warnings for statistics that drifted outside the range a healthy run stays in.
pub fn guardrails(cfg: &PpoConfig, s: &PpoStats) -> Vec<String> {
    let mut w = Vec::new();
    if s.ended_frac < 0.5 {
        w.push(format!(
            "only {:.0}% of responses end; the rest hit max_new_tokens = {}",
            100.0 * s.ended_frac,
            cfg.max_new_tokens
        ));
    }
    if s.kl < -0.5 {
        w.push(format!(
            "negative KL {:.3}: rollout and reference disagree on the temperature or the tokens",
            s.kl
        ));
    }
    if let KlControl::Adaptive { target, .. } = cfg.kl {
        if s.kl > 2.0 * target {
            w.push(format!(
                "KL to SFT {:.2} is more than twice the target {target}",
                s.kl
            ));
        }
    }
    if s.approx_kl > 0.1 {
        w.push(format!(
            "approx-KL per update {:.3} > 0.1: the policy moves too far per minibatch; lower \
             policy_lr",
            s.approx_kl
        ));
    }
    if s.clip_frac > 0.3 {
        w.push(format!("clip fraction {:.2} > 0.3", s.clip_frac));
    }
    // In f32 the engine's and the training forward's log-probs differ only by summation order
    // (~1e-6). With bf16 linears, an f32 difference that far upstream can move an operand across a
    // bf16 rounding boundary (one bf16 ulp is 2^-8 relative): measured on the default speedrun,
    // the largest token's log-prob differed by 1.3e-3 to 1.5e-2. A wrong temperature or token
    // shift differs by tenths, well above either bound.
    let mismatch_bound = match cfg.matmul_precision {
        MatmulPrecision::F32 => 1e-3,
        MatmulPrecision::Bf16 => 5e-2,
    };
    if s.logprob_mismatch > mismatch_bound {
        w.push(format!(
            "rollout and training log-probs differ by {:.2e} (> {mismatch_bound:.0e})",
            s.logprob_mismatch
        ));
    }
    if s.explained_variance < -1.0 {
        w.push(format!(
            "explained variance {:.2}: the value model predicts worse than a constant",
            s.explained_variance
        ));
    }
    if s.entropy < 0.05 {
        w.push(format!(
            "entropy {:.3} nats per token: the policy has collapsed",
            s.entropy
        ));
    }
    w
}

/// A reason to stop the run, if any.
pub fn divergence(cfg: &PpoConfig, s: &PpoStats) -> Option<String> {
    let finite = [
        s.kl,
        s.policy_loss,
        s.value_loss,
        s.score_mean,
        s.entropy,
        s.approx_kl,
    ];
    if finite.iter().any(|x| !x.is_finite()) {
        return Some(format!(
            "a statistic is not finite (kl {}, policy loss {}, value loss {}, score {}, entropy \
             {}, approx-KL {})",
            s.kl, s.policy_loss, s.value_loss, s.score_mean, s.entropy, s.approx_kl
        ));
    }
    if cfg.kl_stop > 0.0 && s.kl > cfg.kl_stop {
        return Some(format!(
            "KL to SFT {:.2} nats per response exceeds kl_stop = {} (β = {:.4}); raise β or \
             lower policy_lr",
            s.kl, cfg.kl_stop, s.beta
        ));
    }
    None
}
