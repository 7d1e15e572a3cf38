//! RLHF math (TESTING.md family 3): golden values for GAE, the PPO clipped losses and the KL
//! estimators to 1e-9; the candle training losses against their f64 references (values and
//! central-difference gradients); the KL controller and running moments; and the evaluation
//! statistics (Wilson interval against Newcombe 1998's table, Bradley–Terry, Kendall's τ-b
//! against scipy's documented example).

use candle_core::{DType, Device, Tensor, Var};
use chatforge_train::ppo::advantage::{explained_variance, gae, masked_whiten, whiten};
use chatforge_train::ppo::control::{KlControl, RunningMoments};
use chatforge_train::ppo::loss::{
    clipped_surrogate_f64, clipped_value_loss_f64, entropy_from_logits, kl_k1, kl_k3, masked_mean,
    policy_loss, policy_loss_f64, value_loss, value_loss_f64,
};
use chatforge_train::stats::{bradley_terry, kendall_tau_b, win_rate};

const GOLDEN: f64 = 1e-9;

fn assert_close(got: f64, want: f64, tol: f64, what: &str) {
    assert!(
        (got - want).abs() <= tol,
        "{what}: got {got:.15}, want {want:.15} (tol {tol:e})"
    );
}

fn assert_all_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_close(*g, *w, tol, &format!("{what}[{i}]"));
    }
}

fn mean_std_pop(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

// ---------------------------------------------------------------- GAE and whitening

#[test]
fn gae_golden_undiscounted() {
    // δ = [0 + 0.6 − 0.5, 0 + 0.7 − 0.6, 1 + 0 − 0.7] = [0.1, 0.1, 0.3]; A = suffix sums.
    let (adv, ret) = gae(&[0.0, 0.0, 1.0], &[0.5, 0.6, 0.7], 1.0, 1.0);
    assert_all_close(&adv, &[0.5, 0.4, 0.3], GOLDEN, "advantages");
    // With γ = λ = 1 every return is the reward-to-go: 1.
    assert_all_close(&ret, &[1.0, 1.0, 1.0], GOLDEN, "returns");
}

#[test]
fn gae_golden_discounted() {
    // A_2 = 0.3; A_1 = (0.99·0.7 − 0.6) + 0.9405·0.3 = 0.37515;
    // A_0 = (0.99·0.6 − 0.5) + 0.9405·0.37515 = 0.446828575.
    let values = [0.5, 0.6, 0.7];
    let (adv, ret) = gae(&[0.0, 0.0, 1.0], &values, 0.99, 0.95);
    assert_all_close(&adv, &[0.446828575, 0.37515, 0.3], GOLDEN, "advantages");
    let want: Vec<f64> = adv.iter().zip(&values).map(|(a, v)| a + v).collect();
    assert_all_close(&ret, &want, 0.0, "returns = advantages + values");
}

#[test]
fn gae_single_token_and_lambda_zero() {
    // One token: the episode ends after it, A = r − V.
    let (adv, _) = gae(&[2.0], &[0.5], 1.0, 0.95);
    assert_all_close(&adv, &[1.5], GOLDEN, "single token");
    // λ = 0 is the one-step TD error.
    let (adv, _) = gae(&[0.1, 0.2], &[1.0, 3.0], 0.5, 0.0);
    assert_all_close(&adv, &[0.1 + 0.5 * 3.0 - 1.0, 0.2 - 3.0], GOLDEN, "TD(0)");
    let (adv, ret) = gae(&[], &[], 1.0, 0.95);
    assert!(adv.is_empty() && ret.is_empty());
}

#[test]
fn whiten_centres_and_scales() {
    let raw = [1.0, 2.0, 3.0, 4.0, 10.0];
    let (mean, std) = mean_std_pop(&raw);
    let mut xs = raw;
    whiten(&mut xs, true);
    let (m, s) = mean_std_pop(&xs);
    assert_close(m, 0.0, 1e-12, "whitened mean");
    // Population variance var/(var + 1e-8).
    assert_close(s, std / (std * std + 1e-8).sqrt(), 1e-12, "whitened std");
    assert_close(
        xs[4],
        (10.0 - mean) / (std * std + 1e-8).sqrt(),
        1e-12,
        "x[4]",
    );

    // shift_mean = false adds the mean back (TRL for rewards).
    let mut ys = raw;
    whiten(&mut ys, false);
    let (m, s) = mean_std_pop(&ys);
    assert_close(m, mean, 1e-12, "kept mean");
    assert_close(s, 1.0, 1e-8, "kept-mean std");

    // Degenerate inputs stay finite.
    let mut same = [3.0, 3.0];
    whiten(&mut same, true);
    assert_eq!(same, [0.0, 0.0]);
    let mut empty: [f64; 0] = [];
    whiten(&mut empty, true);
}

#[test]
fn masked_whiten_pools_every_token_of_every_row() {
    let rows = vec![vec![1.0, 2.0, 3.0], vec![10.0], vec![], vec![-4.0, 0.5]];
    let out = masked_whiten(&rows);
    let lens: Vec<usize> = out.iter().map(Vec::len).collect();
    assert_eq!(lens, vec![3, 1, 0, 2]);
    let mut flat: Vec<f64> = rows.concat();
    whiten(&mut flat, true);
    assert_all_close(&out.concat(), &flat, 0.0, "pooled whitening");
    // A per-row whitening would give row 1 the value 0; pooling does not.
    assert!(out[1][0] > 1.0);
}

#[test]
fn explained_variance_cases() {
    let r = [1.0, 2.0, 3.0, 4.0];
    assert_close(explained_variance(&r, &r), 1.0, 1e-12, "perfect");
    assert_close(explained_variance(&[2.5; 4], &r), 0.0, 1e-12, "the mean");
    // Residual [1, 0, 0, −1]: Var = 0.5; Var(R) = 1.25 → 1 − 0.4.
    assert_close(
        explained_variance(&[0.0, 2.0, 3.0, 5.0], &r),
        0.6,
        1e-12,
        "partial",
    );
    assert!(explained_variance(&[0.0; 3], &[1.0; 3]).is_nan());
}

// ---------------------------------------------------------------- PPO losses (f64 golden)

#[test]
fn clipped_surrogate_golden() {
    // Clipped: A = +1, r = 1.5 → max(−1.5, −1.2) = −1.2; A = −1, r = 0.5 → max(0.5, 0.8) = 0.8.
    assert_close(
        clipped_surrogate_f64(1.0, 1.5, 0.2),
        -1.2,
        GOLDEN,
        "A=+1 r=1.5",
    );
    assert_close(
        clipped_surrogate_f64(-1.0, 0.5, 0.2),
        0.8,
        GOLDEN,
        "A=-1 r=0.5",
    );
    // Pessimism: the unclipped branch binds when it is the larger loss.
    assert_close(
        clipped_surrogate_f64(1.0, 0.5, 0.2),
        -0.5,
        GOLDEN,
        "A=+1 r=0.5",
    );
    assert_close(
        clipped_surrogate_f64(-1.0, 1.5, 0.2),
        1.5,
        GOLDEN,
        "A=-1 r=1.5",
    );
    assert_close(clipped_surrogate_f64(2.0, 1.1, 0.2), -2.2, GOLDEN, "inside");
}

#[test]
fn clipped_value_loss_golden() {
    // v moved 1.0 away from v_old = 0 and from R = 0: clipped v = 0.2;
    // (v − R)² = 1, (0.2 − 0)² = 0.04 → 0.5·1.
    assert_close(
        clipped_value_loss_f64(1.0, 0.0, 0.0, 0.2),
        0.5,
        GOLDEN,
        "unclipped",
    );
    // R = 2: (1 − 2)² = 1, (0.2 − 2)² = 3.24 → 0.5·3.24 = 1.62.
    assert_close(
        clipped_value_loss_f64(1.0, 0.0, 2.0, 0.2),
        1.62,
        GOLDEN,
        "clipped",
    );
    assert_close(
        clipped_value_loss_f64(0.1, 0.0, 1.0, 0.2),
        0.405,
        GOLDEN,
        "inside",
    );
}

#[test]
fn kl_estimators_golden() {
    // k1 = −1 − (−2) = 1; k3 with ρ = e^{−1}: (e^{−1} − 1) − (−1) = e^{−1} = 0.36787944117144233.
    assert_close(kl_k1(-1.0, -2.0), 1.0, GOLDEN, "k1");
    let k3 = kl_k3(-1.0, -2.0);
    assert_close(k3, 0.367879441171, GOLDEN, "k3");
    assert_close(k3, (-1.0f64).exp(), 1e-15, "k3 = e^-1");
    assert_eq!(kl_k3(-0.7, -0.7), 0.0);
    for (lp, lr) in [(-3.0, -0.1), (-0.1, -3.0), (-1.0, -1.0 + 1e-9)] {
        assert!(kl_k3(lp, lr) >= 0.0, "k3 is never negative");
        assert_close(kl_k1(lp, lr), lp - lr, 0.0, "k1");
    }
}

// ---------------------------------------------------------------- PPO losses (tensors)

const B: usize = 2;
const T: usize = 5;

/// Log-probs, old log-probs, advantages and a mask with both clip branches active, every
/// ratio at least 0.02 away from the kinks 0.8 and 1.2 (so finite differences are smooth).
fn policy_case() -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
    let old: Vec<f64> = (0..B * T).map(|i| -0.3 - 0.17 * i as f64).collect();
    let log_ratio = [0.3, -0.4, 0.05, -0.1, 0.25, -0.3, 0.1, 0.0, 0.4, -0.05];
    let logp: Vec<f64> = old.iter().zip(log_ratio).map(|(o, d)| o + d).collect();
    let adv = vec![1.0, -0.5, 0.7, -1.2, -0.3, 0.9, 2.0, -0.1, 0.4, 1.5];
    let mask = vec![1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0];
    (logp, old, adv, mask)
}

fn tensor(xs: &[f64], dtype: DType) -> Tensor {
    Tensor::from_slice(xs, (B, T), &Device::Cpu)
        .and_then(|t| t.to_dtype(dtype))
        .expect("tensor")
}

fn scalar(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64)
        .and_then(|t| t.to_scalar::<f64>())
        .expect("scalar")
}

#[test]
fn policy_loss_tensor_equals_f64_reference() {
    let (logp, old, adv, mask) = policy_case();
    let want = policy_loss_f64(&logp, &old, &adv, &mask, 0.2).expect("f64");
    // Both branches occur among the masked tokens (r = e^0.3 and e^-0.4 are clipped).
    assert!(want.clip_frac > 0.0 && want.clip_frac < 1.0, "{want:?}");
    let got = policy_loss(
        &tensor(&logp, DType::F64),
        &tensor(&old, DType::F64),
        &tensor(&adv, DType::F64),
        &tensor(&mask, DType::F64),
        0.2,
    )
    .expect("policy_loss");
    assert_close(scalar(&got.loss), want.loss, 1e-12, "loss");
    assert_close(got.clip_frac, want.clip_frac, 0.0, "clip_frac");
    assert_close(got.approx_kl, want.approx_kl, 1e-12, "approx_kl");
    // The f64 reference is the masked mean of the golden per-token surrogate.
    let per_token: f64 = (0..B * T)
        .map(|i| mask[i] * clipped_surrogate_f64(adv[i], (logp[i] - old[i]).exp(), 0.2))
        .sum();
    assert_close(want.loss, per_token / 7.0, 1e-12, "mean of surrogates");

    // f32 training dtype agrees to f32 precision; a u8 mask works too.
    let got32 = policy_loss(
        &tensor(&logp, DType::F32),
        &tensor(&old, DType::F32),
        &tensor(&adv, DType::F32),
        &tensor(&mask, DType::U8),
        0.2,
    )
    .expect("policy_loss f32");
    assert_eq!(got32.loss.dtype(), DType::F32);
    assert_close(scalar(&got32.loss), want.loss, 1e-6, "f32 loss");
    assert_close(got32.clip_frac, want.clip_frac, 0.0, "f32 clip_frac");
}

#[test]
fn policy_loss_gradient_matches_central_differences() {
    let (logp, old, adv, mask) = policy_case();
    let var = Var::from_tensor(&tensor(&logp, DType::F64)).expect("var");
    let old_var = Var::from_tensor(&tensor(&old, DType::F64)).expect("var");
    let out = policy_loss(
        var.as_tensor(),
        old_var.as_tensor(),
        &tensor(&adv, DType::F64),
        &tensor(&mask, DType::F64),
        0.2,
    )
    .expect("policy_loss");
    let grads = out.loss.backward().expect("backward");
    let grad: Vec<f64> = grads
        .get(var.as_tensor())
        .expect("logp receives a gradient")
        .flatten_all()
        .and_then(|g| g.to_vec1())
        .expect("grad");
    assert!(
        grads.get(old_var.as_tensor()).is_none(),
        "old log-probs are detached"
    );
    let h = 1e-6;
    for i in 0..B * T {
        let f = |d: f64| {
            let mut lp = logp.clone();
            lp[i] += d;
            policy_loss_f64(&lp, &old, &adv, &mask, 0.2)
                .expect("f64")
                .loss
        };
        let fd = (f(h) - f(-h)) / (2.0 * h);
        assert_close(grad[i], fd, 1e-8, &format!("d loss / d logp[{i}]"));
        if mask[i] == 0.0 {
            assert_eq!(grad[i], 0.0, "masked token {i} gets no gradient");
        }
    }
    // Clipped tokens (r = e^0.3 with A > 0, r = e^-0.4 with A < 0) get exactly zero gradient;
    // an unclipped one gets −A·r / n.
    assert_eq!(grad[0], 0.0);
    assert_eq!(grad[1], 0.0);
    assert_close(
        grad[2],
        -0.7 * 0.05f64.exp() / 7.0,
        1e-12,
        "unclipped token",
    );
}

#[test]
fn policy_loss_at_ratio_one_is_minus_mean_advantage() {
    // The first PPO update: logp == old_logp → loss = −masked_mean(A), nothing clipped, KL 0,
    // and the gradient is −A/n on every masked token (the tied max splits it evenly).
    let (_, old, adv, mask) = policy_case();
    let var = Var::from_tensor(&tensor(&old, DType::F64)).expect("var");
    let out = policy_loss(
        var.as_tensor(),
        &tensor(&old, DType::F64),
        &tensor(&adv, DType::F64),
        &tensor(&mask, DType::F64),
        0.2,
    )
    .expect("policy_loss");
    let mean_adv: f64 = adv.iter().zip(&mask).map(|(a, m)| a * m).sum::<f64>() / 7.0;
    assert_close(scalar(&out.loss), -mean_adv, 1e-12, "loss");
    assert_eq!(out.clip_frac, 0.0);
    assert_eq!(out.approx_kl, 0.0);
    let grads = out.loss.backward().expect("backward");
    let grad: Vec<f64> = grads
        .get(var.as_tensor())
        .expect("grad")
        .flatten_all()
        .and_then(|g| g.to_vec1())
        .expect("grad");
    for i in 0..B * T {
        assert_close(
            grad[i],
            -adv[i] * mask[i] / 7.0,
            1e-12,
            &format!("grad[{i}]"),
        );
    }
}

/// Values, old values, returns, mask: both clip branches occur, no |v − v_old| within 0.02 of
/// ε = 0.2 and no tie between the two squared errors.
fn value_case() -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
    let v_old = vec![0.0, 0.5, -0.3, 1.0, 0.2, -1.0, 0.0, 0.3, 0.7, 0.1];
    let step = [0.5, -0.1, 0.35, -0.6, 0.05, 0.15, -0.45, 0.0, 0.3, -0.25];
    let v: Vec<f64> = v_old.iter().zip(step).map(|(o, s)| o + s).collect();
    let ret = vec![2.0, 0.0, -1.0, 0.9, 0.0, 1.0, 0.0, 0.25, 0.0, 1.0];
    let mask = vec![1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0];
    (v, v_old, ret, mask)
}

#[test]
fn value_loss_tensor_equals_f64_reference_and_gradient() {
    let (v, v_old, ret, mask) = value_case();
    let want = value_loss_f64(&v, &v_old, &ret, &mask, 0.2).expect("f64");
    assert!(want.clip_frac > 0.0 && want.clip_frac < 1.0, "{want:?}");
    let per_token: f64 = (0..B * T)
        .map(|i| mask[i] * clipped_value_loss_f64(v[i], v_old[i], ret[i], 0.2))
        .sum();
    assert_close(
        want.loss,
        per_token / 9.0,
        1e-12,
        "mean of per-token losses",
    );

    let var = Var::from_tensor(&tensor(&v, DType::F64)).expect("var");
    let out = value_loss(
        var.as_tensor(),
        &tensor(&v_old, DType::F64),
        &tensor(&ret, DType::F64),
        &tensor(&mask, DType::F64),
        0.2,
    )
    .expect("value_loss");
    assert_close(scalar(&out.loss), want.loss, 1e-12, "loss");
    assert_close(out.clip_frac, want.clip_frac, 0.0, "clip_frac");

    let grads = out.loss.backward().expect("backward");
    let grad: Vec<f64> = grads
        .get(var.as_tensor())
        .expect("v receives a gradient")
        .flatten_all()
        .and_then(|g| g.to_vec1())
        .expect("grad");
    let h = 1e-6;
    for i in 0..B * T {
        let f = |d: f64| {
            let mut vv = v.clone();
            vv[i] += d;
            value_loss_f64(&vv, &v_old, &ret, &mask, 0.2)
                .expect("f64")
                .loss
        };
        let fd = (f(h) - f(-h)) / (2.0 * h);
        assert_close(grad[i], fd, 1e-8, &format!("d loss / d v[{i}]"));
    }
    // Token 0: v = 0.5 clipped to 0.2, R = 2: the clipped branch is larger and constant in v.
    assert_eq!(grad[0], 0.0);
    // Token 1: inside the clip range, the branches tie and their halves add up to
    // d/dv 0.5·(v − R)²/n = (0.4 − 0)/9.
    assert_close(grad[1], 0.4 / 9.0, 1e-12, "unclipped token");
}

#[test]
fn losses_reject_bad_shapes_and_empty_masks() {
    let (logp, old, adv, _) = policy_case();
    let zeros = vec![0.0; B * T];
    let t = |xs: &[f64]| tensor(xs, DType::F64);
    assert!(policy_loss(&t(&logp), &t(&old), &t(&adv), &t(&zeros), 0.2).is_err());
    assert!(value_loss(&t(&logp), &t(&old), &t(&adv), &t(&zeros), 0.2).is_err());
    let short = Tensor::zeros((B, T - 1), DType::F64, &Device::Cpu).expect("zeros");
    let err = policy_loss(&t(&logp), &short, &t(&adv), &t(&[1.0; B * T]), 0.2)
        .expect_err("shape mismatch");
    assert!(err.to_string().contains("old_logp"), "{err}");
    assert!(policy_loss_f64(&logp, &old, &adv, &zeros, 0.2).is_err());
    assert!(value_loss_f64(&logp, &old[..3], &adv, &zeros, 0.2).is_err());
    assert!(masked_mean(&t(&logp), &t(&zeros)).is_err());
    let m = masked_mean(
        &t(&logp),
        &t(&[1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]),
    )
    .expect("masked_mean");
    assert_close(scalar(&m), (logp[0] + logp[9]) / 2.0, 1e-15, "masked_mean");
}

#[test]
fn entropy_from_logits_cases() {
    // Row 0 uniform over 4: ln 4. Row 1 one-hot-ish: ~0. Row 2: p = softmax([0, ln 3]) =
    // [1/4, 3/4] padded with −1e4 logits: H = −(¼ ln ¼ + ¾ ln ¾).
    let logits = Tensor::from_slice(
        &[
            0.5f64,
            0.5,
            0.5,
            0.5,
            100.0,
            0.0,
            0.0,
            0.0,
            0.0,
            3f64.ln(),
            -1e4,
            -1e4,
        ],
        (3, 4),
        &Device::Cpu,
    )
    .expect("logits");
    let h: Vec<f64> = entropy_from_logits(&logits)
        .expect("entropy")
        .to_vec1()
        .expect("vec");
    assert_close(h[0], 4f64.ln(), 1e-12, "uniform");
    assert!(h[1] >= 0.0 && h[1] < 1e-40, "peaked: {}", h[1]);
    let want = -(0.25 * 0.25f64.ln() + 0.75 * 0.75f64.ln());
    assert_close(h[2], want, 1e-12, "two-way");
}

// ---------------------------------------------------------------- KL control

#[test]
fn adaptive_kl_moves_beta_toward_the_target() {
    let mut c = KlControl::Adaptive {
        beta: 0.1,
        target: 6.0,
        horizon: 10_000.0,
    };
    // KL 9 vs target 6: error = clip(0.5) = 0.2 → β · (1 + 0.2 · 256 / 10000).
    c.update(9.0, 256);
    assert_close(
        c.beta(),
        0.1 * (1.0 + 0.2 * 256.0 / 10_000.0),
        1e-15,
        "above",
    );
    // KL 5.4: error = −0.1 → β shrinks by 1 − 0.1 · 256 / 10000.
    let before = c.beta();
    c.update(5.4, 256);
    assert_close(
        c.beta(),
        before * (1.0 - 0.1 * 256.0 / 10_000.0),
        1e-15,
        "below",
    );
    // On target: no change; non-finite: ignored.
    let before = c.beta();
    c.update(6.0, 256);
    c.update(f64::NAN, 256);
    c.update(f64::INFINITY, 256);
    assert_eq!(c.beta(), before);

    // Closed loop where the KL a policy reaches is inversely proportional to β
    // (KL = 0.9 / β): β converges to 0.9 / target = 0.15 from either side.
    for start in [0.02, 1.0] {
        let mut c = KlControl::Adaptive {
            beta: start,
            target: 6.0,
            horizon: 1_000.0,
        };
        let mut last_gap = f64::INFINITY;
        for _ in 0..400 {
            let kl = 0.9 / c.beta();
            c.update(kl, 64);
            let gap = (c.beta() - 0.15).abs();
            assert!(gap <= last_gap + 1e-15, "monotone approach from {start}");
            last_gap = gap;
        }
        assert_close(c.beta(), 0.15, 1e-3, &format!("converged from {start}"));
    }
}

#[test]
fn fixed_kl_never_moves_and_configs_round_trip() {
    let mut f = KlControl::Fixed { beta: 0.05 };
    f.update(100.0, 1000);
    f.update(0.0, 1000);
    assert_eq!(f.beta(), 0.05);

    let a = KlControl::Adaptive {
        beta: 0.1 / 3.0,
        target: 6.0,
        horizon: 10_000.0,
    };
    for c in [f.clone(), a.clone()] {
        let json = serde_json::to_string(&c).expect("json");
        assert_eq!(serde_json::from_str::<KlControl>(&json).expect("back"), c);
        let toml_text = toml::to_string(&c).expect("toml");
        assert_eq!(toml::from_str::<KlControl>(&toml_text).expect("back"), c);
    }
    let json = serde_json::to_string(&f).expect("json");
    assert_eq!(json, r#"{"kind":"fixed","beta":0.05}"#);
    // An integer horizon in TOML is accepted.
    let t: KlControl =
        toml::from_str("kind = \"adaptive\"\nbeta = 0.1\ntarget = 6\nhorizon = 10000")
            .expect("toml");
    assert!(matches!(t, KlControl::Adaptive { horizon, .. } if horizon == 10_000.0));
    assert!(serde_json::from_str::<KlControl>(r#"{"kind":"fixed","beta":0.1,"x":1}"#).is_err());

    assert!(a.validate().is_ok() && f.validate().is_ok());
    for bad in [
        KlControl::Fixed { beta: -0.1 },
        KlControl::Fixed { beta: f64::NAN },
        KlControl::Adaptive {
            beta: 0.1,
            target: 0.0,
            horizon: 1.0,
        },
        KlControl::Adaptive {
            beta: 0.1,
            target: 6.0,
            horizon: f64::INFINITY,
        },
    ] {
        assert!(bad.validate().is_err(), "{bad:?}");
    }
}

// ---------------------------------------------------------------- running moments

#[test]
fn running_moments_equal_one_shot_statistics() {
    // Batches of different sizes and scales, including a single value.
    let batches: Vec<Vec<f64>> = vec![
        vec![1.0, 2.0, 3.5],
        vec![100.0],
        (0..50)
            .map(|i| (i as f64 * 0.37).sin() * 7.0 - 2.0)
            .collect(),
        vec![-3.0, -3.0],
        (0..17).map(|i| 1e3 + i as f64 * i as f64).collect(),
    ];
    let mut rm = RunningMoments::new();
    assert_eq!(rm.std(), 1.0, "TRL's initial std");
    let mut seen: Vec<f64> = Vec::new();
    for b in &batches {
        let (bm, bs) = rm.update(b);
        let (m, s) = mean_std_pop(b);
        let n = b.len() as f64;
        let unbiased = if b.len() > 1 {
            s * (n / (n - 1.0)).sqrt()
        } else {
            0.0
        };
        assert_close(bm, m, 1e-12, "batch mean");
        assert_close(bs, unbiased, 1e-12, "batch std (unbiased)");

        seen.extend_from_slice(b);
        let (m, s) = mean_std_pop(&seen);
        let n = seen.len() as f64;
        assert_eq!(rm.count(), seen.len() as u64);
        assert_close(rm.mean(), m, 1e-12 * m.abs().max(1.0), "running mean");
        assert_close(rm.var(), s * s, 1e-12 * (s * s).max(1.0), "running var");
        assert_close(
            rm.std(),
            s * (n / (n - 1.0)).sqrt(),
            1e-12 * s.max(1.0),
            "running std (unbiased)",
        );
    }
    // Empty batches change nothing; the state round-trips bit-exactly.
    let before = rm.clone();
    assert_eq!(rm.update(&[]), (0.0, 0.0));
    assert_eq!(rm, before);
    let json = serde_json::to_string(&rm).expect("json");
    let back: RunningMoments = serde_json::from_str(&json).expect("back");
    assert_eq!(back, rm);
    assert_eq!(back.mean().to_bits(), rm.mean().to_bits());
    assert_eq!(back.var().to_bits(), rm.var().to_bits());
}

// ---------------------------------------------------------------- evaluation statistics

#[test]
fn win_rate_matches_newcombe_wilson_table() {
    // Newcombe 1998, Table I (method 3, Wilson score): 81/263, 15/148, 0/20, 1/29.
    for (x, n, lo, hi) in [
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ] {
        let w = win_rate(x, 0, n - x);
        assert_eq!(w.n, n);
        assert_close(w.rate, x as f64 / n as f64, 1e-15, "rate");
        assert_close(w.lo, lo, 5e-5, &format!("lo {x}/{n}"));
        assert_close(w.hi, hi, 5e-5, &format!("hi {x}/{n}"));
        assert!(w.lo <= w.rate && w.rate <= w.hi);
    }
    // Full precision for 8/10 (computed from the formula in f64).
    let w = win_rate(8, 0, 2);
    assert_close(w.lo, 0.4901624691221323, 1e-12, "8/10 lo");
    assert_close(w.hi, 0.9433178490622331, 1e-12, "8/10 hi");
}

#[test]
fn win_rate_counts_ties_half() {
    // 4 wins, 12 ties, 4 losses: (4 + 6)/20 = 0.5, the interval of 10/20.
    let w = win_rate(4, 12, 4);
    assert_close(w.rate, 0.5, 0.0, "rate");
    assert_close(w.lo, 0.2992980068701797, 1e-12, "lo");
    assert_close(w.hi, 0.7007019931298203, 1e-12, "hi");
    assert_eq!(w, win_rate(10, 0, 10));
    assert_close(win_rate(3, 1, 0).rate, 0.875, 0.0, "3.5/4");
    // Mirror symmetry.
    let (a, b) = (win_rate(7, 2, 3), win_rate(3, 2, 7));
    assert_close(a.lo, 1.0 - b.hi, 1e-15, "mirror lo");
    assert_close(a.hi, 1.0 - b.lo, 1e-15, "mirror hi");
    let none = win_rate(0, 0, 0);
    assert_eq!((none.rate, none.lo, none.hi, none.n), (0.5, 0.0, 1.0, 0));
}

#[test]
fn bradley_terry_recovers_a_three_to_one_edge() {
    // 750 wins of model 0 in 1000 games: γ0/γ1 = 3 → 400·log10(3) = 190.85 Elo.
    let mut games = Vec::new();
    for i in 0..1000 {
        let s = if i % 4 == 3 { 0.0 } else { 1.0 };
        // Alternate who is listed first.
        if i % 2 == 0 {
            games.push((0, 1, s));
        } else {
            games.push((1, 0, 1.0 - s));
        }
    }
    let r = bradley_terry(2, &games);
    let gap = r[0] - r[1];
    assert!(
        (gap - 400.0 * 3f64.log10()).abs() < 0.5,
        "gap {gap} vs 190.85"
    );
    // The prior only shrinks.
    assert!(gap < 400.0 * 3f64.log10());
    assert_close((r[0] + r[1]) / 2.0, 1000.0, 1e-9, "mean 1000");

    // Ties count half: 500 wins + 500 ties is also a 3:1 score.
    let tied: Vec<(usize, usize, f64)> = (0..1000)
        .map(|i| (0, 1, if i % 2 == 0 { 1.0 } else { 0.5 }))
        .collect();
    let rt = bradley_terry(2, &tied);
    assert_close(rt[0] - rt[1], gap, 1e-6, "ties as half wins");
}

#[test]
fn bradley_terry_symmetry_order_and_unbeaten_models() {
    // Symmetric: every pair plays 10 games, 5 each way, plus a draw → equal ratings.
    let mut games = Vec::new();
    for i in 0..3 {
        for j in 0..3 {
            if i < j {
                for k in 0..10 {
                    games.push((i, j, if k % 2 == 0 { 1.0 } else { 0.0 }));
                }
                games.push((j, i, 0.5));
            }
        }
    }
    let r = bradley_terry(3, &games);
    for x in &r {
        assert_close(*x, 1000.0, 1e-6, "symmetric");
    }

    // A round robin where model 2 wins every game, 1 wins 70% of its games against 0 and
    // model 3 plays no one.
    let mut games = Vec::new();
    for k in 0..20 {
        games.push((2, 0, 1.0));
        games.push((1, 2, 0.0));
        games.push((1, 0, if k % 10 < 7 { 1.0 } else { 0.0 }));
    }
    let r = bradley_terry(4, &games);
    assert!(r.iter().all(|x| x.is_finite()), "{r:?}");
    assert!(r[2] > r[1] && r[1] > r[0], "order follows win rates: {r:?}");
    assert_close(r.iter().sum::<f64>() / 4.0, 1000.0, 1e-9, "mean 1000");
    // The unbeaten model is well ahead but finite; the idle one sits at the prior's level,
    // between the others.
    assert!(r[2] - r[1] > 200.0 && r[2] - r[1] < 1500.0, "{r:?}");
    assert!(r[3] > r[0] && r[3] < r[2], "{r:?}");

    assert!(bradley_terry(0, &[]).is_empty());
    assert_eq!(bradley_terry(3, &[]), vec![1000.0; 3]);
}

#[test]
fn kendall_tau_b_hand_cases() {
    let up = [1.0, 2.0, 3.0, 4.0, 5.0];
    let down = [9.0, 7.0, 5.0, 3.0, 1.0];
    assert_close(kendall_tau_b(&up, &up), 1.0, 1e-15, "identical");
    assert_close(
        kendall_tau_b(&up, &[10.0, 20.0, 30.0, 40.0, 50.0]),
        1.0,
        1e-15,
        "same order",
    );
    assert_close(kendall_tau_b(&up, &down), -1.0, 1e-15, "reversed");
    // [1,2,3] vs [1,3,2]: pairs (0,1) C, (0,2) C, (1,2) D → (2 − 1)/3.
    assert_close(
        kendall_tau_b(&[1.0, 2.0, 3.0], &[1.0, 3.0, 2.0]),
        1.0 / 3.0,
        1e-15,
        "one swap",
    );
    // Ties: a = [1,2,2,3], b = [1,2,3,3]: C = 4, D = 0, one pair tied in a ((1,2)), one in b
    // ((2,3)), n0 = 6 → 4 / sqrt(5·5) = 0.8.
    assert_close(
        kendall_tau_b(&[1.0, 2.0, 2.0, 3.0], &[1.0, 2.0, 3.0, 3.0]),
        0.8,
        1e-15,
        "ties",
    );
    // A pair tied in both counts in both tie totals: a = b = [1,1,2] → C = 2, n1 = n2 = 1 →
    // 2 / sqrt(2·2) = 1.
    assert_close(
        kendall_tau_b(&[1.0, 1.0, 2.0], &[1.0, 1.0, 2.0]),
        1.0,
        1e-15,
        "tied in both",
    );
    // scipy.stats.kendalltau documentation example.
    assert_close(
        kendall_tau_b(&[12.0, 2.0, 1.0, 12.0, 2.0], &[1.0, 4.0, 7.0, 1.0, 0.0]),
        -0.47140452079103173,
        1e-15,
        "scipy example",
    );
    assert!(kendall_tau_b(&[1.0, 1.0, 1.0], &up[..3]).is_nan());
    assert!(kendall_tau_b(&[1.0], &[2.0]).is_nan());
    assert!(kendall_tau_b(&[], &[]).is_nan());
}
