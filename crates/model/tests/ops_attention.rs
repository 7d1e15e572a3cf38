//! Causal attention with grouped KV heads and a query offset: the fused (tiled) kernel and the
//! composed reference against finite differences (f64) and against each other (f32, strided
//! inputs, several query blocks), the causal mask (future keys have no influence), and shape
//! errors.

mod ops_common;

use candle_core::{DType, Device, IndexOp, Tensor};
use chatforge_data::rng::Rng;
use chatforge_model::ops::{self, composed, fused};
use ops_common::*;

/// `(B, H, Hkv, T, offset, D)`.
type Dims = (usize, usize, usize, usize, usize, usize);

/// Random `(q, k, v)` with `q: (B, H, T, D)` and `k, v: (B, Hkv, offset + T, D)`.
fn qkv(rng: &mut Rng, (b, h, hkv, t, offset, d): Dims, dtype: DType) -> [Tensor; 3] {
    let s = offset + t;
    [
        randn(rng, &[b, h, t, d], 1.0, dtype),
        randn(rng, &[b, hkv, s, d], 1.0, dtype),
        randn(rng, &[b, hkv, s, d], 1.0, dtype),
    ]
}

#[test]
fn gradients_match_finite_differences() {
    let mut rng = Rng::new(1);
    // (B, H, Hkv, T, offset, D): plain causal; GQA with an offset (a cached decode of 3 tokens
    // after 2); multi-query with a single-token decode step; 67 queries = two query blocks of
    // the fused kernel (64 + 3).
    let cases = [
        (2, 2, 2, 4, 0, 3),
        (1, 4, 2, 3, 2, 4),
        (1, 2, 1, 1, 3, 2),
        (1, 2, 1, 67, 4, 2),
    ];
    for (b, h, hkv, t, offset, d) in cases {
        let ins = qkv(&mut rng, (b, h, hkv, t, offset, d), DType::F64);
        let what = format!("attention H={h} Hkv={hkv} T={t} offset={offset}");
        check_gradients(
            &format!("fused {what}"),
            &ins,
            |x| fused::causal_attention(&x[0], &x[1], &x[2], offset),
            3,
        );
        check_gradients(
            &what,
            &ins,
            |x| ops::causal_attention(&x[0], &x[1], &x[2], offset),
            1,
        );
        check_gradients(
            &format!("composed {what}"),
            &ins,
            |x| composed::causal_attention(&x[0], &x[1], &x[2], offset),
            2,
        );
    }
}

#[test]
fn fused_matches_composed_f32() {
    let mut rng = Rng::new(2);
    let mut told_apart = false;
    // (B, H, Hkv, T, offset, D): MHA in one block; GQA over three query blocks with an offset.
    for dims in [(2, 3, 3, 16, 0, 8), (2, 4, 2, 150, 7, 16)] {
        let offset = dims.4;
        let ins = qkv(&mut rng, dims, DType::F32);
        told_apart |= check_fused_matches_composed(
            &format!("attention {dims:?}"),
            &ins,
            |x| ops::causal_attention(&x[0], &x[1], &x[2], offset),
            |x| fused::causal_attention(&x[0], &x[1], &x[2], offset),
            |x| composed::causal_attention(&x[0], &x[1], &x[2], offset),
            1e-5,
            1e-4,
        );
    }
    // Strided q, k, v: stored (B, T, H, D) and transposed, as a model's projections are.
    let q = randn(&mut rng, &[2, 70, 4, 8], 1.0, DType::F32);
    let k = randn(&mut rng, &[2, 75, 2, 8], 1.0, DType::F32);
    let v = randn(&mut rng, &[2, 75, 2, 8], 1.0, DType::F32);
    type Attn = fn(&Tensor, &Tensor, &Tensor, usize) -> candle_core::Result<Tensor>;
    let strided = |f: Attn| {
        move |x: &[Tensor]| {
            f(
                &x[0].transpose(1, 2)?,
                &x[1].transpose(1, 2)?,
                &x[2].transpose(1, 2)?,
                5,
            )
        }
    };
    told_apart |= check_fused_matches_composed(
        "attention, strided",
        &[q, k, v],
        strided(ops::causal_attention),
        strided(fused::causal_attention),
        strided(composed::causal_attention),
        1e-5,
        1e-4,
    );
    assert!(
        told_apart,
        "no input told the fused and composed kernels apart"
    );
}

#[test]
fn future_keys_have_no_influence() {
    let mut rng = Rng::new(3);
    let (h, hkv, t, offset, d) = (4, 2, 4, 3, 5);
    let [q, k, v] = qkv(&mut rng, (1, h, hkv, t, offset, d), DType::F32);
    let out = ops::causal_attention(&q, &k, &v, offset).unwrap();
    for j in 0..offset + t {
        // Replace key and value at position j (every KV head) with large values.
        let bump = |x: &Tensor| -> Tensor {
            let noise = randn(&mut Rng::new(j as u64), &[1, hkv, 1, d], 50.0, DType::F32);
            let parts = [
                x.narrow(2, 0, j).unwrap(),
                noise,
                x.narrow(2, j + 1, offset + t - j - 1).unwrap(),
            ];
            Tensor::cat(&parts, 2).unwrap()
        };
        let moved = ops::causal_attention(&q, &bump(&k), &bump(&v), offset).unwrap();
        for i in 0..t {
            let (a, b) = (
                values(&out.i((.., .., i)).unwrap()),
                values(&moved.i((.., .., i)).unwrap()),
            );
            if j > offset + i {
                assert_eq!(a, b, "query {i} (position {}) saw key {j}", offset + i);
            } else {
                assert_ne!(a, b, "query {i} (position {}) ignored key {j}", offset + i);
            }
        }
    }
}

#[test]
fn single_visible_key_returns_its_value() {
    // With offset 0 the first query sees only key 0, so its output is exactly v[0] whatever q, k.
    let mut rng = Rng::new(4);
    let [q, k, v] = qkv(&mut rng, (1, 2, 1, 3, 0, 4), DType::F64);
    let out = ops::causal_attention(&q, &k, &v, 0).unwrap();
    for head in 0..2 {
        assert_eq!(
            values(&out.i((0, head, 0)).unwrap()),
            values(&v.i((0, 0, 0)).unwrap())
        );
    }
}

#[test]
fn bad_shapes_are_errors() {
    let z = |dims: &[usize]| Tensor::zeros(dims, DType::F32, &Device::Cpu).unwrap();
    // H = 3 is not a multiple of Hkv = 2.
    assert!(
        ops::causal_attention(&z(&[1, 3, 2, 4]), &z(&[1, 2, 2, 4]), &z(&[1, 2, 2, 4]), 0).is_err()
    );
    // S = 3 but offset + T = 2.
    assert!(
        ops::causal_attention(&z(&[1, 2, 2, 4]), &z(&[1, 2, 3, 4]), &z(&[1, 2, 3, 4]), 0).is_err()
    );
    // Head dims differ.
    assert!(
        ops::causal_attention(&z(&[1, 2, 2, 4]), &z(&[1, 2, 2, 3]), &z(&[1, 2, 2, 3]), 0).is_err()
    );
    // v differs from k.
    assert!(
        ops::causal_attention(&z(&[1, 2, 2, 4]), &z(&[1, 2, 2, 4]), &z(&[1, 1, 2, 4]), 0).is_err()
    );
}
