//! Cross-entropy from logits: the fused kernel against finite differences (f64), against the
//! composed reference (f32, including strided logits), and closed-form cases.

mod ops_common;

use candle_core::{DType, Device, Tensor, Var};
use chatforge_data::rng::Rng;
use chatforge_model::ops::{self, composed, fused, IGNORE_INDEX};
use ops_common::*;

/// `n` targets below `v`, with every `ignore_every`-th one ignored (0: none).
fn targets(rng: &mut Rng, n: usize, v: usize, ignore_every: usize) -> Tensor {
    let t: Vec<u32> = (0..n)
        .map(|i| {
            if ignore_every > 0 && i % ignore_every == 1 {
                IGNORE_INDEX
            } else {
                rng.index(v) as u32
            }
        })
        .collect();
    Tensor::from_vec(t, n, &Device::Cpu).unwrap()
}

#[test]
fn gradients_match_finite_differences() {
    let mut rng = Rng::new(1);
    for (n, v, ignore_every) in [(5, 7, 3), (4, 3, 0)] {
        let t = targets(&mut rng, n, v, ignore_every);
        let ins = [randn(&mut rng, &[n, v], 2.0, DType::F64)];
        check_gradients("fused ce", &ins, |x| fused::cross_entropy(&x[0], &t), 1);
        check_gradients("public ce", &ins, |x| ops::cross_entropy(&x[0], &t), 2);
        check_gradients(
            "composed ce",
            &ins,
            |x| composed::cross_entropy(&x[0], &t),
            3,
        );
    }
}

#[test]
fn fused_matches_composed_f32() {
    let mut rng = Rng::new(2);
    let mut told_apart = false;
    for (n, v, ignore_every) in [(1, 1, 0), (9, 50, 4), (64, 1000, 5)] {
        let t = targets(&mut rng, n, v, ignore_every);
        let ins = [randn(&mut rng, &[n, v], 3.0, DType::F32)];
        let name = format!("ce ({n}, {v})");
        told_apart |= check_fused_matches_composed(
            &name,
            &ins,
            |x| ops::cross_entropy(&x[0], &t),
            |x| fused::cross_entropy(&x[0], &t),
            |x| composed::cross_entropy(&x[0], &t),
            1e-7,
            1e-5,
        );
        // The loss itself within 1e-6 relative.
        let (a, b) = (
            fused::cross_entropy(&ins[0], &t)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
            composed::cross_entropy(&ins[0], &t)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
        );
        assert!((a - b).abs() <= 1e-6 * b.abs(), "{name}: {a} vs {b}");
    }
    // Strided logits (stored (V, N)) and strided targets (every other element).
    let t = targets(&mut rng, 24, 30, 5);
    let t = t
        .reshape((12, 2))
        .unwrap()
        .narrow(1, 0, 1)
        .unwrap()
        .squeeze(1)
        .unwrap();
    assert!(!t.is_contiguous());
    let ins = [randn(&mut rng, &[30, 12], 3.0, DType::F32)];
    told_apart |= check_fused_matches_composed(
        "ce, strided",
        &ins,
        |x| ops::cross_entropy(&x[0].t()?, &t),
        |x| fused::cross_entropy(&x[0].t()?, &t),
        |x| composed::cross_entropy(&x[0].t()?, &t),
        1e-7,
        1e-5,
    );
    assert!(
        told_apart,
        "no input told the fused and composed kernels apart"
    );
}

#[test]
fn hand_computed_loss_and_gradient() {
    // logits [0, ln 3], target 1: p = [1/4, 3/4], loss = -ln(3/4) = 0.2876820724517809,
    // dloss/dlogits = p - onehot = [1/4, -1/4]. A second, ignored row changes nothing.
    for dtype in [DType::F32, DType::F64] {
        let x = Tensor::new(&[[0.0f64, 3f64.ln()], [5.0, -2.0]], &Device::Cpu).unwrap();
        let x = Var::from_tensor(&x.to_dtype(dtype).unwrap()).unwrap();
        let t = Tensor::new(&[1u32, IGNORE_INDEX], &Device::Cpu).unwrap();
        let loss = ops::cross_entropy(x.as_tensor(), &t).unwrap();
        assert_eq!(loss.dtype(), dtype);
        let tol = if dtype == DType::F32 { 1e-7 } else { 1e-15 };
        let want = Tensor::new(0.2876820724517809f64, &Device::Cpu).unwrap();
        assert_close("ce [0, ln 3]", &loss, &want, tol, 0.0);
        let g = loss.backward().unwrap();
        let want = Tensor::new(&[[0.25f64, -0.25], [0.0, 0.0]], &Device::Cpu).unwrap();
        assert_close("ce grad", g.get(x.as_tensor()).unwrap(), &want, tol, 0.0);
    }
}

#[test]
fn mean_is_over_kept_rows_only() {
    let mut rng = Rng::new(3);
    let x = randn(&mut rng, &[6, 11], 2.0, DType::F32);
    let t = Tensor::new(
        &[3u32, IGNORE_INDEX, 0, IGNORE_INDEX, IGNORE_INDEX, 10],
        &Device::Cpu,
    )
    .unwrap();
    let all = ops::cross_entropy(&x, &t)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let kept = Tensor::new(&[0u32, 2, 5], &Device::Cpu).unwrap();
    let sub = x.index_select(&kept, 0).unwrap();
    let sub_t = Tensor::new(&[3u32, 0, 10], &Device::Cpu).unwrap();
    let sub = ops::cross_entropy(&sub, &sub_t)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert_eq!(all, sub);
}

#[test]
fn all_targets_ignored_gives_zero_loss_and_zero_grad() {
    let mut rng = Rng::new(4);
    type Ce = fn(&Tensor, &Tensor) -> candle_core::Result<Tensor>;
    let impls: [(&str, Ce); 3] = [
        ("public", ops::cross_entropy),
        ("fused", fused::cross_entropy),
        ("composed", composed::cross_entropy),
    ];
    for dtype in [DType::F32, DType::F64] {
        for (name, ce) in impls {
            let x = Var::from_tensor(&randn(&mut rng, &[3, 5], 1.0, dtype)).unwrap();
            let t = Tensor::new(&[IGNORE_INDEX; 3], &Device::Cpu).unwrap();
            let loss = ce(x.as_tensor(), &t).unwrap();
            assert_eq!(values(&loss), [0.0], "{name} {dtype:?}");
            let g = loss.backward().unwrap();
            let g = g
                .get(x.as_tensor())
                .unwrap_or_else(|| panic!("{name}: no gradient"));
            assert_eq!(values(g), vec![0.0; 15], "{name} {dtype:?}");
        }
    }
}

#[test]
fn logits_of_1e4_stay_finite() {
    // [1e4, -1e4]: target 0 costs exactly 0, target 1 costs exactly 2e4.
    let x = Var::new(&[[1e4f32, -1e4], [1e4, -1e4]], &Device::Cpu).unwrap();
    let t0 = Tensor::new(&[0u32, 0], &Device::Cpu).unwrap();
    let t1 = Tensor::new(&[1u32, 1], &Device::Cpu).unwrap();
    assert_eq!(
        values(&ops::cross_entropy(x.as_tensor(), &t0).unwrap()),
        [0.0]
    );
    let loss = ops::cross_entropy(x.as_tensor(), &t1).unwrap();
    assert_eq!(values(&loss), [2e4]);
    // d/dlogits = (p - onehot) / 2 = [[1/2, -1/2], [1/2, -1/2]].
    let g = loss.backward().unwrap();
    assert_eq!(
        values(g.get(x.as_tensor()).unwrap()),
        [0.5, -0.5, 0.5, -0.5]
    );
    // Random logits of magnitude up to 1e4.
    let mut rng = Rng::new(5);
    let x = Var::from_tensor(&randn(&mut rng, &[8, 50], 1e4, DType::F32)).unwrap();
    let t = targets(&mut rng, 8, 50, 3);
    let loss = ops::cross_entropy(x.as_tensor(), &t).unwrap();
    assert_finite("ce loss", &loss);
    let g = loss.backward().unwrap();
    assert_finite("ce grad", g.get(x.as_tensor()).unwrap());
}

#[test]
fn out_of_range_target_is_an_error_naming_the_row() {
    let x = Tensor::zeros((3, 4), DType::F32, &Device::Cpu).unwrap();
    let t = Tensor::new(&[0u32, 4, 1], &Device::Cpu).unwrap();
    let err = ops::cross_entropy(&x, &t).unwrap_err().to_string();
    assert!(err.contains("target 4 at row 1"), "{err}");
    let short = Tensor::new(&[0u32, 1], &Device::Cpu).unwrap();
    assert!(fused::cross_entropy(&x, &short).is_err());
}
