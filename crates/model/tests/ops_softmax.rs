//! Softmax and log-softmax over the last dimension: fused kernels against finite differences
//! (f64), against the composed reference (f32, including strided inputs), and closed-form cases.

mod ops_common;

use candle_core::{DType, Device, Tensor, Var};
use chatforge_data::rng::Rng;
use chatforge_model::ops::{self, composed, fused};
use ops_common::*;

#[test]
fn softmax_gradients_match_finite_differences() {
    let mut rng = Rng::new(1);
    for dims in [vec![3, 5], vec![2, 3, 7]] {
        let x = randn(&mut rng, &dims, 2.0, DType::F64);
        let ins = [x];
        check_gradients("fused softmax", &ins, |t| fused::softmax_last_dim(&t[0]), 1);
        check_gradients("public softmax", &ins, |t| ops::softmax_last_dim(&t[0]), 2);
        check_gradients(
            "composed softmax",
            &ins,
            |t| composed::softmax_last_dim(&t[0]),
            3,
        );
        check_gradients(
            "fused log_softmax",
            &ins,
            |t| fused::log_softmax_last_dim(&t[0]),
            4,
        );
        check_gradients(
            "public log_softmax",
            &ins,
            |t| ops::log_softmax_last_dim(&t[0]),
            5,
        );
        check_gradients(
            "composed log_softmax",
            &ins,
            |t| composed::log_softmax_last_dim(&t[0]),
            6,
        );
    }
}

#[test]
fn softmax_fused_matches_composed_f32() {
    let mut rng = Rng::new(2);
    let mut told_apart = false;
    for (n, c) in [(1, 1), (7, 33), (64, 384)] {
        let ins = [randn(&mut rng, &[n, c], 3.0, DType::F32)];
        told_apart |= check_fused_matches_composed(
            &format!("softmax ({n}, {c})"),
            &ins,
            |t| ops::softmax_last_dim(&t[0]),
            |t| fused::softmax_last_dim(&t[0]),
            |t| composed::softmax_last_dim(&t[0]),
            1e-6,
            1e-5,
        );
    }
    // Strided: stored (C, N), viewed as (N, C).
    let ins = [randn(&mut rng, &[40, 6], 3.0, DType::F32)];
    told_apart |= check_fused_matches_composed(
        "softmax, transposed",
        &ins,
        |t| ops::softmax_last_dim(&t[0].t()?),
        |t| fused::softmax_last_dim(&t[0].t()?),
        |t| composed::softmax_last_dim(&t[0].t()?),
        1e-6,
        1e-5,
    );
    assert!(
        told_apart,
        "no input told the fused and composed kernels apart"
    );
}

#[test]
fn log_softmax_fused_matches_composed_f32() {
    let mut rng = Rng::new(3);
    let mut told_apart = false;
    for (n, c) in [(1, 1), (7, 33), (64, 384)] {
        let ins = [randn(&mut rng, &[n, c], 3.0, DType::F32)];
        told_apart |= check_fused_matches_composed(
            &format!("log_softmax ({n}, {c})"),
            &ins,
            |t| ops::log_softmax_last_dim(&t[0]),
            |t| fused::log_softmax_last_dim(&t[0]),
            |t| composed::log_softmax_last_dim(&t[0]),
            1e-5,
            1e-5,
        );
    }
    let ins = [randn(&mut rng, &[2, 40, 3], 3.0, DType::F32)];
    told_apart |= check_fused_matches_composed(
        "log_softmax, permuted",
        &ins,
        |t| ops::log_softmax_last_dim(&t[0].permute((0, 2, 1))?),
        |t| fused::log_softmax_last_dim(&t[0].permute((0, 2, 1))?),
        |t| composed::log_softmax_last_dim(&t[0].permute((0, 2, 1))?),
        1e-5,
        1e-5,
    );
    assert!(
        told_apart,
        "no input told the fused and composed kernels apart"
    );
}

#[test]
fn softmax_of_1234_and_0_is_exactly_1_and_0() {
    for dtype in [DType::F32, DType::F64] {
        let x = Tensor::new(&[[1234.0f64, 0.0], [0.0, 1234.0]], &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let y = ops::softmax_last_dim(&x).unwrap();
        assert_eq!(values(&y), [1.0, 0.0, 0.0, 1.0], "{dtype:?}");
    }
}

#[test]
fn hand_computed_values() {
    // softmax([0, ln 3]) = [1/4, 3/4]; log_softmax = [ln(1/4), ln(3/4)].
    let x = Tensor::new(&[[0.0f64, 3f64.ln()]], &Device::Cpu).unwrap();
    let y = ops::softmax_last_dim(&x).unwrap();
    let expected = Tensor::new(&[[0.25f64, 0.75]], &Device::Cpu).unwrap();
    assert_close("softmax [0, ln 3]", &y, &expected, 1e-15, 0.0);
    let y = ops::log_softmax_last_dim(&x).unwrap();
    let expected = Tensor::new(&[[0.25f64.ln(), 0.75f64.ln()]], &Device::Cpu).unwrap();
    assert_close("log_softmax [0, ln 3]", &y, &expected, 1e-15, 0.0);
    // d sum(softmax(x) * [1, 0]) / dx = y0 ([1, 0] - y0) = [3/16, -3/16].
    let v = Var::from_tensor(&x).unwrap();
    let w = Tensor::new(&[[1.0f64, 0.0]], &Device::Cpu).unwrap();
    let loss = ops::softmax_last_dim(v.as_tensor())
        .unwrap()
        .mul(&w)
        .unwrap()
        .sum_all()
        .unwrap();
    let g = loss.backward().unwrap();
    let expected = Tensor::new(&[[3.0f64 / 16.0, -3.0 / 16.0]], &Device::Cpu).unwrap();
    assert_close(
        "softmax grad",
        g.get(v.as_tensor()).unwrap(),
        &expected,
        1e-15,
        0.0,
    );
}

#[test]
fn huge_and_masked_logits_stay_finite() {
    let mut rng = Rng::new(4);
    // Logits of +-1e4 (forward and gradient finite), and -inf entries as the attention mask makes.
    let mut data: Vec<f32> = values(&randn(&mut rng, &[4, 16], 1.0, DType::F32))
        .iter()
        .map(|&v| if v > 0.0 { 1e4 } else { -1e4 } * v.abs().min(1.0) as f32)
        .collect();
    data[1] = f32::NEG_INFINITY;
    data[17] = f32::NEG_INFINITY;
    let x = Var::from_vec(data, (4, 16), &Device::Cpu).unwrap();
    for (name, f) in [
        ("softmax", ops::softmax_last_dim as fn(&Tensor) -> _),
        ("log_softmax", ops::log_softmax_last_dim),
    ] {
        let y = f(x.as_tensor()).unwrap();
        let w = randn(&mut rng, &[4, 16], 1.0, DType::F32);
        let g = y.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
        let g = g.get(x.as_tensor()).unwrap();
        assert_finite(&format!("{name} grad"), g);
        if name == "softmax" {
            assert_finite("softmax", &y);
            assert_eq!(values(&y)[1], 0.0);
            // A -inf logit has probability 0 and gets no gradient (log-softmax's is g: its
            // derivative there is 1 - p = 1).
            assert_eq!(values(g)[17], 0.0, "softmax: a -inf logit gets a gradient");
        }
    }
    let x = Tensor::new(&[1e4f32, -1e4], &Device::Cpu).unwrap();
    assert_eq!(values(&ops::softmax_last_dim(&x).unwrap()), [1.0, 0.0]);
    assert_eq!(values(&ops::log_softmax_last_dim(&x).unwrap()), [0.0, -2e4]);
}
