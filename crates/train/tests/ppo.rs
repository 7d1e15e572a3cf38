//! PPO: one test per element of the algorithm proving it is present (issue: "each one's presence
//! is tested, not assumed"), plus every parameter learns (family 0), bit-exact resume (family
//! 6) and the divergence stop (family 10). The math's golden values are in `rl_math.rs`.
//!
//! The models are tiny and untrained (random weights, a 300-token tokenizer): what is tested is
//! the machinery, not the quality.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::Device;
use chatforge_model::checkpoint::latest_checkpoint;
use chatforge_train::artifact;
use chatforge_train::ppo::control::{KlControl, RunningMoments};
use chatforge_train::ppo::{
    guardrails, run, token_rewards, whiten_scores, PpoConfig, PpoPaths, PpoStats,
};
use chatforge_train::{Error, TrainEvent};

mod common;
use common::{fixture, Fixture};

fn config(steps: u64) -> PpoConfig {
    PpoConfig {
        steps,
        prompts_per_iteration: 2,
        samples_per_prompt: 2,
        minibatch_size: 2,
        ppo_epochs: 2,
        max_new_tokens: 6,
        policy_lr: 1e-3,
        value_lr: 1e-3,
        eval_every: 100,
        eval_prompts: 0,
        checkpoint_every: 1,
        ptx_batch_size: 2,
        ptx_seq_len: 16,
        ..PpoConfig::default()
    }
}

fn paths(f: &Fixture, out: &str, pretrain: bool) -> PpoPaths {
    PpoPaths {
        policy: f.sft.clone(),
        reward: f.rm.clone(),
        prompts: vec![f.prompts.clone()],
        eval_prompts: None,
        pretrain_train: if pretrain {
            vec![f.corpus_train.clone()]
        } else {
            vec![]
        },
        pretrain_val: if pretrain {
            vec![f.corpus_val.clone()]
        } else {
            vec![]
        },
        out: f.root.join(out),
    }
}

/// Runs PPO and returns the per-step statistics and the warnings.
fn run_collect(cfg: &PpoConfig, p: &PpoPaths, resume: bool) -> (Vec<PpoStats>, Vec<String>) {
    let mut stats = Vec::new();
    let mut warnings = Vec::new();
    run(cfg, p, &Device::Cpu, resume, &mut |e| match e {
        TrainEvent::Ppo(s) => stats.push(s.clone()),
        TrainEvent::Warning { message, .. } => warnings.push(message.clone()),
        _ => {}
    })
    .unwrap();
    (stats, warnings)
}

fn weights(dir: &Path) -> BTreeMap<String, Vec<f32>> {
    let ck = latest_checkpoint(dir).unwrap().unwrap();
    ck.read_tensors("model.safetensors", &Device::Cpu)
        .unwrap()
        .into_iter()
        .map(|(k, t)| (k, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect()
}

fn weights_at(path: &Path) -> BTreeMap<String, Vec<f32>> {
    let ck = artifact::find_checkpoint(path).unwrap();
    ck.read_tensors("model.safetensors", &Device::Cpu)
        .unwrap()
        .into_iter()
        .map(|(k, t)| (k, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect()
}

#[test]
fn per_token_reward_is_the_kl_penalty_plus_the_score_on_the_last_token() {
    let (r, kl) = token_rewards(&[-1.0, -2.0, -0.5], &[-1.5, -2.0, -1.0], 0.1, 2.0);
    assert_eq!(kl, vec![0.5, 0.0, 0.5]);
    let want = [-0.05, 0.0, -0.05 + 2.0];
    for (a, b) in r.iter().zip(want) {
        assert!((a - b).abs() < 1e-12, "{r:?}");
    }
    // β = 0: only the score.
    let (r, _) = token_rewards(&[-1.0, -2.0], &[-3.0, -4.0], 0.0, 1.5);
    assert_eq!(r, vec![0.0, 1.5]);
}

#[test]
fn scores_are_whitened_with_running_moments_and_unended_replies_penalised() {
    let mut m = RunningMoments::default();
    let s = whiten_scores(&[1.0, 3.0], &[true, false], &mut m, 1.0);
    // Unbiased std of [1, 3] is sqrt(2); mean 2.
    let z = 1.0 / 2f64.sqrt();
    assert!((s[0] + z).abs() < 1e-12, "{s:?}");
    assert!((s[1] - (z - 1.0)).abs() < 1e-12, "{s:?}");
    // The moments run on: a second batch is whitened with the statistics of all four values.
    let s2 = whiten_scores(&[5.0, 7.0], &[true, true], &mut m, 1.0);
    let all = [1.0f64, 3.0, 5.0, 7.0];
    let mean = all.iter().sum::<f64>() / 4.0;
    let sd = (all.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 3.0).sqrt();
    assert!((s2[0] - (5.0 - mean) / sd).abs() < 1e-12, "{s2:?}");
}

#[test]
fn ratio_is_one_at_the_first_minibatch_and_every_parameter_learns() {
    let f = fixture();
    let p = paths(&f, "ppo", false);
    let (stats, _) = run_collect(&config(1), &p, false);
    assert_eq!(stats.len(), 1);
    let s = &stats[0];
    // Engine log-probs (rollout) ≡ training-forward log-probs: the PPO ratio starts at 1.
    assert!(
        s.ratio_dev_first < 1e-5,
        "ratio deviates by {}",
        s.ratio_dev_first
    );
    assert!(s.logprob_mismatch < 1e-5, "{}", s.logprob_mismatch);
    // The policy starts as SFT, so the KL of the first rollouts is ~0.
    assert!(s.kl.abs() < 1e-3, "kl {}", s.kl);
    // Family 0: every policy tensor moved from SFT, every value tensor from the RM.
    let sft = weights_at(&f.sft);
    let policy = weights(&p.out);
    assert_eq!(
        sft.keys().collect::<Vec<_>>(),
        policy.keys().collect::<Vec<_>>()
    );
    for (k, v) in &policy {
        assert!(v.iter().all(|x| x.is_finite()), "{k}");
        assert_ne!(v, &sft[k], "policy tensor {k} did not change");
    }
    let rm = weights_at(&f.rm);
    let value = weights(&p.out.join("value"));
    for (k, v) in &value {
        assert_ne!(v, &rm[k], "value tensor {k} did not change");
    }
}

#[test]
fn value_model_starts_as_the_reward_model() {
    let f = fixture();
    let p = paths(&f, "ppo", false);
    // With zero learning rates nothing moves, so the value checkpoint is the start value model.
    let cfg = PpoConfig {
        policy_lr: 0.0,
        value_lr: 0.0,
        ..config(1)
    };
    run_collect(&cfg, &p, false);
    assert_eq!(weights(&p.out.join("value")), weights_at(&f.rm));
    assert_eq!(weights(&p.out), weights_at(&f.sft));
}

#[test]
fn ptx_adds_the_pretraining_loss_to_the_policy_update() {
    let f = fixture();
    let plain = paths(&f, "ppo", true);
    let ptx = paths(&f, "ppo-ptx", true);
    let (s0, _) = run_collect(&config(1), &plain, false);
    let (s1, _) = run_collect(
        &PpoConfig {
            ptx_coef: 1.0,
            ..config(1)
        },
        &ptx,
        false,
    );
    assert!(s0[0].ptx_loss.is_none());
    let l = s1[0].ptx_loss.expect("ptx loss reported");
    assert!(l.is_finite() && l > 0.0);
    // Same rollouts (same seed), different gradient: the weights differ.
    assert_eq!(s0[0].score_mean, s1[0].score_mean);
    assert_ne!(weights(&plain.out), weights(&ptx.out));
    // The value model does not see the pretraining loss.
    assert_eq!(
        weights(&plain.out.join("value")),
        weights(&ptx.out.join("value"))
    );
}

#[test]
fn adaptive_beta_moves_toward_the_target_and_fixed_beta_stays() {
    let f = fixture();
    let cfg = PpoConfig {
        kl: KlControl::Adaptive {
            beta: 0.1,
            target: 50.0,
            horizon: 10.0,
        },
        ..config(3)
    };
    let (s, _) = run_collect(&cfg, &paths(&f, "adaptive", false), false);
    // KL is far below the target, so β falls every step.
    assert!(
        s[1].beta < s[0].beta && s[2].beta < s[1].beta,
        "{:?}",
        s.iter().map(|x| x.beta).collect::<Vec<_>>()
    );
    let cfg = PpoConfig {
        kl: KlControl::Fixed { beta: 0.1 },
        ..config(3)
    };
    let (s, _) = run_collect(&cfg, &paths(&f, "fixed", false), false);
    assert!(s.iter().all(|x| x.beta == 0.1));
    // The KL penalty is in the reward: non-score reward = −β·KL.
    for x in &s {
        assert!((x.non_score_reward + x.beta * x.kl).abs() < 1e-12);
    }
}

#[test]
fn resume_is_bit_exact() {
    let f = fixture();
    let straight = paths(&f, "straight", true);
    let cfg = PpoConfig {
        ptx_coef: 0.5,
        ..config(3)
    };
    let (a, _) = run_collect(&cfg, &straight, false);
    let split = paths(&f, "split", true);
    run_collect(
        &PpoConfig {
            steps: 2,
            ..cfg.clone()
        },
        &split,
        false,
    );
    let (b, _) = run_collect(&cfg, &split, true);
    assert_eq!(b.len(), 1);
    let strip = |s: &PpoStats| PpoStats {
        rollout_s: 0.0,
        train_s: 0.0,
        elapsed_s: 0.0,
        ..s.clone()
    };
    assert_eq!(strip(&a[2]), strip(&b[0]));
    assert_eq!(weights(&straight.out), weights(&split.out));
    assert_eq!(
        weights(&straight.out.join("value")),
        weights(&split.out.join("value"))
    );
}

#[test]
fn a_kl_past_the_limit_stops_the_run_with_a_diagnostic() {
    let f = fixture();
    let cfg = PpoConfig {
        kl_stop: 1e-9,
        policy_lr: 3e-2,
        ..config(4)
    };
    let err = run(
        &cfg,
        &paths(&f, "diverge", false),
        &Device::Cpu,
        false,
        &mut |_| {},
    )
    .unwrap_err();
    match err {
        Error::Diverged { reason, .. } => assert!(reason.contains("kl_stop"), "{reason}"),
        e => panic!("expected a divergence stop, got {e}"),
    }
}

#[test]
fn guardrails_warn_when_statistics_drift() {
    let cfg = PpoConfig::default();
    let healthy = PpoStats {
        step: 1,
        score_mean: 0.0,
        score_std: 1.0,
        kl: 1.0,
        non_score_reward: -0.1,
        beta: 0.1,
        entropy: 2.0,
        policy_loss: 0.0,
        value_loss: 0.1,
        clip_frac: 0.05,
        value_clip_frac: 0.05,
        approx_kl: 0.01,
        explained_variance: 0.5,
        response_len: 10.0,
        ended_frac: 0.95,
        logprob_mismatch: 1e-7,
        ratio_dev_first: 1e-7,
        ptx_loss: None,
        policy_grad_norm: 1.0,
        value_grad_norm: 1.0,
        rollout_s: 0.0,
        train_s: 0.0,
        elapsed_s: 0.0,
    };
    assert!(guardrails(&cfg, &healthy).is_empty());
    let drifted = PpoStats {
        ended_frac: 0.2,
        approx_kl: 0.5,
        logprob_mismatch: 0.01,
        entropy: 0.01,
        kl: 100.0,
        ..healthy
    };
    let w = guardrails(&cfg, &drifted).join("\n");
    for needle in ["end", "approx-KL", "log-probs", "collapsed", "target"] {
        assert!(w.contains(needle), "{needle:?} not in {w}");
    }
}

#[test]
fn bad_settings_are_clean_errors() {
    let f = fixture();
    let cfg = PpoConfig {
        ptx_coef: 1.0,
        ..config(1)
    };
    let err = run(
        &cfg,
        &paths(&f, "x", false),
        &Device::Cpu,
        false,
        &mut |_| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("pretraining data"), "{err}");
    let cfg = PpoConfig {
        minibatch_size: 0,
        ..config(1)
    };
    let err = run(
        &cfg,
        &paths(&f, "x", false),
        &Device::Cpu,
        false,
        &mut |_| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("minibatch_size"), "{err}");
}
