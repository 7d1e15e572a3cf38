//! LayerNorm and RMSNorm: fused kernels against finite differences (f64), against the composed
//! reference (f32, including strided inputs), and closed-form cases.

mod ops_common;

use candle_core::{DType, Device, Tensor};
use chatforge_data::rng::Rng;
use chatforge_model::ops::{self, composed, fused};
use ops_common::*;

const EPS: f64 = 1e-5;

#[test]
fn layer_norm_gradients_match_finite_differences() {
    let mut rng = Rng::new(1);
    for dims in [vec![3, 5], vec![2, 3, 8]] {
        let c = *dims.last().unwrap();
        let x = randn(&mut rng, &dims, 1.5, DType::F64);
        let w = randn(&mut rng, &[c], 1.0, DType::F64);
        let b = randn(&mut rng, &[c], 1.0, DType::F64);
        let ins = [x.clone(), w.clone(), b];
        check_gradients(
            "fused layer_norm",
            &ins,
            |t| fused::layer_norm(&t[0], &t[1], Some(&t[2]), EPS),
            11,
        );
        check_gradients(
            "public layer_norm",
            &ins,
            |t| ops::layer_norm(&t[0], &t[1], Some(&t[2]), EPS),
            12,
        );
        check_gradients(
            "composed layer_norm",
            &ins,
            |t| composed::layer_norm(&t[0], &t[1], Some(&t[2]), EPS),
            13,
        );
        check_gradients(
            "fused layer_norm, no bias",
            &[x, w],
            |t| fused::layer_norm(&t[0], &t[1], None, EPS),
            14,
        );
    }
}

#[test]
fn rms_norm_gradients_match_finite_differences() {
    let mut rng = Rng::new(2);
    for dims in [vec![3, 5], vec![2, 3, 8]] {
        let c = *dims.last().unwrap();
        let x = randn(&mut rng, &dims, 1.5, DType::F64);
        let w = randn(&mut rng, &[c], 1.0, DType::F64);
        let ins = [x, w];
        check_gradients(
            "fused rms_norm",
            &ins,
            |t| fused::rms_norm(&t[0], &t[1], EPS),
            21,
        );
        check_gradients(
            "composed rms_norm",
            &ins,
            |t| composed::rms_norm(&t[0], &t[1], EPS),
            22,
        );
    }
}

#[test]
fn layer_norm_fused_matches_composed_f32() {
    let mut rng = Rng::new(3);
    let mut told_apart = false;
    for (n, c) in [(1, 1), (7, 33), (64, 384)] {
        let x = randn(&mut rng, &[n, c], 2.0, DType::F32);
        let w = randn(&mut rng, &[c], 1.0, DType::F32);
        let b = randn(&mut rng, &[c], 1.0, DType::F32);
        let ins = [x, w, b];
        told_apart |= check_fused_matches_composed(
            &format!("layer_norm ({n}, {c})"),
            &ins,
            |t| ops::layer_norm(&t[0], &t[1], Some(&t[2]), EPS),
            |t| fused::layer_norm(&t[0], &t[1], Some(&t[2]), EPS),
            |t| composed::layer_norm(&t[0], &t[1], Some(&t[2]), EPS),
            1e-5,
            1e-4,
        );
    }
    // Strided inputs: x is stored (C, B, T) and viewed as (B, T, C); w is every other element.
    let x = randn(&mut rng, &[48, 2, 5], 1.0, DType::F32);
    let w = randn(&mut rng, &[96], 1.0, DType::F32);
    let view = |t: &[Tensor]| -> (Tensor, Tensor) {
        let x = t[0].permute((1, 2, 0)).unwrap(); // (B, T, C)
        let w = t[1]
            .reshape((48, 2))
            .unwrap()
            .narrow(1, 0, 1)
            .unwrap()
            .squeeze(1)
            .unwrap();
        assert!(!x.is_contiguous() && !w.is_contiguous());
        (x, w)
    };
    told_apart |= check_fused_matches_composed(
        "layer_norm, strided, no bias",
        &[x, w],
        |t| {
            let (x, w) = view(t);
            ops::layer_norm(&x, &w, None, EPS)
        },
        |t| {
            let (x, w) = view(t);
            fused::layer_norm(&x, &w, None, EPS)
        },
        |t| {
            let (x, w) = view(t);
            composed::layer_norm(&x, &w, None, EPS)
        },
        1e-5,
        1e-4,
    );
    assert!(
        told_apart,
        "no input told the fused and composed kernels apart"
    );
}

#[test]
fn rms_norm_fused_matches_composed_f32() {
    let mut rng = Rng::new(4);
    let mut told_apart = false;
    for (n, c) in [(1, 1), (7, 33), (64, 384)] {
        let x = randn(&mut rng, &[n, c], 2.0, DType::F32);
        let w = randn(&mut rng, &[c], 1.0, DType::F32);
        told_apart |= check_fused_matches_composed(
            &format!("rms_norm ({n}, {c})"),
            &[x, w],
            |t| ops::rms_norm(&t[0], &t[1], EPS),
            |t| fused::rms_norm(&t[0], &t[1], EPS),
            |t| composed::rms_norm(&t[0], &t[1], EPS),
            1e-5,
            1e-4,
        );
    }
    let x = randn(&mut rng, &[16, 6], 1.0, DType::F32);
    let w = randn(&mut rng, &[16], 1.0, DType::F32);
    told_apart |= check_fused_matches_composed(
        "rms_norm, transposed input",
        &[x, w],
        |t| ops::rms_norm(&t[0].t()?, &t[1], EPS),
        |t| fused::rms_norm(&t[0].t()?, &t[1], EPS),
        |t| composed::rms_norm(&t[0].t()?, &t[1], EPS),
        1e-5,
        1e-4,
    );
    assert!(
        told_apart,
        "no input told the fused and composed kernels apart"
    );
}

#[test]
fn layer_norm_of_a_constant_row_is_the_bias() {
    // The fused kernel takes the mean around the row's first element, so x - mean is exactly 0
    // on a constant row and y is exactly the bias, whatever the constant. (The composed reference
    // rounds its mean and is off by up to 2e-4 for the 1e4 row at C = 384.)
    let mut rng = Rng::new(5);
    for c in [8, 384] {
        let w = randn(&mut rng, &[c], 1.0, DType::F32);
        let b = randn(&mut rng, &[c], 1.0, DType::F32);
        let rows: Vec<f32> = [0.1f32, -3.7, 1e4]
            .iter()
            .flat_map(|&v| vec![v; c])
            .collect();
        let x = Tensor::from_vec(rows, (3, c), &Device::Cpu).unwrap();
        let y = ops::layer_norm(&x, &w, Some(&b), EPS).unwrap();
        for row in y.to_vec2::<f32>().unwrap() {
            assert_eq!(row, b.to_vec1::<f32>().unwrap());
        }
    }
}

#[test]
fn layer_norm_hand_computed_row() {
    // x = [1, 3]: mean 2, var 1, xhat = [-1, 1] / sqrt(1 + eps); w = [2, 1], b = [0, 1].
    let x = Tensor::new(&[[1.0f64, 3.0]], &Device::Cpu).unwrap();
    let w = Tensor::new(&[2.0f64, 1.0], &Device::Cpu).unwrap();
    let b = Tensor::new(&[0.0f64, 1.0], &Device::Cpu).unwrap();
    let y = fused::layer_norm(&x, &w, Some(&b), EPS).unwrap();
    let s = 1.0 / (1.0 + EPS).sqrt();
    assert_close(
        "layer_norm [1, 3]",
        &y,
        &Tensor::new(&[[-2.0 * s, s + 1.0]], &Device::Cpu).unwrap(),
        1e-15,
        0.0,
    );
    // RMSNorm of [3, 4]: mean square 12.5, y = x / sqrt(12.5 + eps) * w.
    let x = Tensor::new(&[[3.0f64, 4.0]], &Device::Cpu).unwrap();
    let y = fused::rms_norm(&x, &w, EPS).unwrap();
    let r = 1.0 / (12.5 + EPS).sqrt();
    assert_close(
        "rms_norm [3, 4]",
        &y,
        &Tensor::new(&[[6.0 * r, 4.0 * r]], &Device::Cpu).unwrap(),
        1e-15,
        0.0,
    );
}

#[test]
fn norms_reject_bad_weights_and_dtypes() {
    let x = Tensor::zeros((2, 4), DType::F32, &Device::Cpu).unwrap();
    let w3 = Tensor::ones(3, DType::F32, &Device::Cpu).unwrap();
    assert!(fused::layer_norm(&x, &w3, None, EPS).is_err());
    assert!(fused::rms_norm(&x, &w3, EPS).is_err());
    assert!(ops::layer_norm(&x, &w3, None, EPS).is_err());
    let w64 = Tensor::ones(4, DType::F64, &Device::Cpu).unwrap();
    assert!(fused::layer_norm(&x, &w64, None, EPS).is_err());
    let xb = x.to_dtype(DType::BF16).unwrap();
    assert!(fused::rms_norm(&xb, &w64.to_dtype(DType::BF16).unwrap(), EPS).is_err());
    // The public op falls back to the composed path for bf16 and still has a backward.
    let wb = candle_core::Var::ones(4, DType::BF16, &Device::Cpu).unwrap();
    let y = ops::rms_norm(&(xb + 1.0).unwrap(), wb.as_tensor(), EPS).unwrap();
    let g = y.sum_all().unwrap().backward().unwrap();
    assert!(g.get(wb.as_tensor()).is_some());
}
