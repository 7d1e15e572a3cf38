//! The linear layer `y = x Wᵀ + b`: the fused kernel against finite differences (f64), against
//! the composed reference (f32, strided inputs included), and its bf16 precision against an exact
//! product of bf16-rounded operands.

mod ops_common;

use candle_core::{DType, Tensor};
use chatforge_data::rng::Rng;
use chatforge_model::ops::{self, composed, fused, MatmulPrecision};
use ops_common::*;

const F32: MatmulPrecision = MatmulPrecision::F32;
const BF16: MatmulPrecision = MatmulPrecision::Bf16;

#[test]
fn linear_gradients_match_finite_differences() {
    let mut rng = Rng::new(31);
    for (x_dims, m) in [(vec![3, 5], 4), (vec![2, 3, 7], 6), (vec![1, 1], 1)] {
        let k = *x_dims.last().unwrap();
        let x = randn(&mut rng, &x_dims, 1.0, DType::F64);
        let w = randn(&mut rng, &[m, k], 1.0, DType::F64);
        let b = randn(&mut rng, &[m], 1.0, DType::F64);
        let x2 = x.reshape(((), k)).unwrap();
        check_gradients(
            "fused linear",
            &[x2.clone(), w.clone(), b.clone()],
            |t| fused::linear(&t[0], &t[1], Some(&t[2]), F32),
            41,
        );
        check_gradients(
            "fused linear, no bias",
            &[x2, w.clone()],
            |t| fused::linear(&t[0], &t[1], None, F32),
            42,
        );
        check_gradients(
            "public linear",
            &[x.clone(), w.clone(), b.clone()],
            |t| ops::linear(&t[0], &t[1], Some(&t[2]), F32),
            43,
        );
        check_gradients(
            "composed linear",
            &[x.reshape(((), k)).unwrap(), w, b],
            |t| composed::linear(&t[0], &t[1], Some(&t[2]), F32),
            44,
        );
    }
}

#[test]
fn linear_fused_matches_composed_f32() {
    let mut rng = Rng::new(32);
    let mut told_apart = false;
    for (n, k, m) in [(1, 1, 1), (7, 33, 5), (64, 384, 96), (130, 17, 257)] {
        let x = randn(&mut rng, &[n, k], 1.0, DType::F32);
        let w = randn(&mut rng, &[m, k], 0.1, DType::F32);
        let b = randn(&mut rng, &[m], 1.0, DType::F32);
        told_apart |= check_fused_matches_composed(
            &format!("linear ({n}, {k}) x ({m}, {k})ᵀ"),
            &[x.clone(), w.clone(), b],
            |t| ops::linear(&t[0], &t[1], Some(&t[2]), F32),
            |t| fused::linear(&t[0], &t[1], Some(&t[2]), F32),
            |t| composed::linear(&t[0], &t[1], Some(&t[2]), F32),
            1e-5,
            1e-4,
        );
        told_apart |= check_fused_matches_composed(
            &format!("linear ({n}, {k}) x ({m}, {k})ᵀ, no bias"),
            &[x, w],
            |t| ops::linear(&t[0], &t[1], None, F32),
            |t| fused::linear(&t[0], &t[1], None, F32),
            |t| composed::linear(&t[0], &t[1], None, F32),
            1e-5,
            1e-4,
        );
    }
    // Strided inputs: x stored (K, B, T) and viewed as (B, T, K); W stored transposed.
    let x = randn(&mut rng, &[24, 3, 5], 1.0, DType::F32);
    let w = randn(&mut rng, &[24, 10], 0.2, DType::F32);
    let view = |t: &[Tensor]| -> (Tensor, Tensor) {
        let x = t[0].permute((1, 2, 0)).unwrap(); // (B, T, K)
        let w = t[1].t().unwrap(); // (M, K)
        assert!(!x.is_contiguous() && !w.is_contiguous());
        (x, w)
    };
    told_apart |= check_fused_matches_composed(
        "linear, strided",
        &[x, w],
        |t| {
            let (x, w) = view(t);
            ops::linear(&x, &w, None, F32)
        },
        |t| {
            let (x, w) = view(t);
            let k = x.dim(2)?;
            fused::linear(&x.reshape(((), k))?, &w, None, F32)?.reshape((3, 5, 10))
        },
        |t| {
            let (x, w) = view(t);
            let k = x.dim(2)?;
            composed::linear(&x.reshape(((), k))?, &w, None, F32)?.reshape((3, 5, 10))
        },
        1e-5,
        1e-4,
    );
    assert!(
        told_apart,
        "no input told the fused and composed kernels apart"
    );
}

/// `a` rounded to bf16 (round to nearest even) and widened to f64.
fn bf16_f64(a: &Tensor) -> Tensor {
    a.to_dtype(DType::BF16)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
}

/// The bf16 precision computes exactly "round both operands to bf16, multiply, accumulate in f32"
/// for the forward and for both backward products, checked against f64 products of the rounded
/// operands (the only error left is f32 accumulation); and it really differs from f32.
#[test]
fn linear_bf16_is_the_product_of_rounded_operands() {
    let mut rng = Rng::new(33);
    for (n, k, m) in [(5, 7, 3), (64, 384, 96), (129, 65, 33)] {
        let x = randn(&mut rng, &[n, k], 1.0, DType::F32);
        let w = randn(&mut rng, &[m, k], 0.1, DType::F32);
        let b = randn(&mut rng, &[m], 1.0, DType::F32);
        let (y, g) = forward_backward(
            &[x.clone(), w.clone(), b.clone()],
            |t| ops::linear(&t[0], &t[1], Some(&t[2]), BF16),
            7,
        );
        let (y32, _) = forward_backward(
            &[x.clone(), w.clone(), b.clone()],
            |t| ops::linear(&t[0], &t[1], Some(&t[2]), F32),
            7,
        );
        // The upstream gradient forward_backward uses (seed 7, shape of y).
        let up = randn(&mut Rng::new(7), &[n, m], 1.0, DType::F32);
        let (xr, wr, ur) = (bf16_f64(&x), bf16_f64(&w), bf16_f64(&up));
        let b64 = b.to_dtype(DType::F64).unwrap();
        let want_y = xr
            .matmul(&wr.t().unwrap())
            .unwrap()
            .broadcast_add(&b64)
            .unwrap();
        let want_dx = ur.matmul(&wr).unwrap();
        let want_dw = ur.t().unwrap().matmul(&xr).unwrap();
        let want_db = up.to_dtype(DType::F64).unwrap().sum(0).unwrap();
        // f32 accumulation over k (or n) terms of size ~1: about k * 2^-24 relative to Σ|a||b|.
        let tol = |terms: usize| 4.0 * terms as f64 * f64::from(f32::EPSILON);
        let to64 = |t: &Tensor| t.to_dtype(DType::F64).unwrap();
        assert_close("bf16 y", &to64(&y), &want_y, tol(k), 1e-6);
        assert_close("bf16 dx", &to64(&g[0]), &want_dx, tol(m), 1e-6);
        assert_close("bf16 dW", &to64(&g[1]), &want_dw, tol(n), 1e-6);
        assert_close("bf16 db", &to64(&g[2]), &want_db, tol(n), 1e-6);
        let max_diff = values(&(to64(&y) - to64(&y32)).unwrap().abs().unwrap())
            .into_iter()
            .fold(0.0, f64::max);
        assert!(
            max_diff > 1e-4,
            "bf16 and f32 agree to {max_diff}: no rounding happened"
        );
    }
}

/// The composed fallback computes the same bf16 forward as the fused kernel.
#[test]
fn linear_bf16_composed_matches_fused_forward() {
    let mut rng = Rng::new(34);
    let x = randn(&mut rng, &[33, 70], 1.0, DType::F32);
    let w = randn(&mut rng, &[20, 70], 0.1, DType::F32);
    let fused_y = fused::linear(&x, &w, None, BF16).unwrap();
    let composed_y = composed::linear(&x, &w, None, BF16).unwrap();
    assert_close("bf16 fused vs composed", &fused_y, &composed_y, 1e-5, 1e-5);
}

#[test]
fn linear_rejects_mismatched_shapes() {
    let mut rng = Rng::new(35);
    let x = randn(&mut rng, &[4, 5], 1.0, DType::F32);
    let w = randn(&mut rng, &[3, 6], 1.0, DType::F32);
    let b = randn(&mut rng, &[4], 1.0, DType::F32);
    assert!(ops::linear(&x, &w, None, F32).is_err());
    let w = randn(&mut rng, &[3, 5], 1.0, DType::F32);
    assert!(ops::linear(&x, &w, Some(&b), F32).is_err());
    assert!(fused::linear(&x.unsqueeze(0).unwrap(), &w, None, F32).is_err());
}
