//! Causal attention with grouped KV heads and a query offset: the fused (tiled) kernel and the
//! composed reference against finite differences (f64) and against each other (f32, strided
//! inputs, several query blocks), the causal mask (future keys have no influence), and shape
//! errors.

mod ops_common;

use candle_core::{DType, Device, IndexOp, Tensor};
use chatforge_data::rng::Rng;
use chatforge_model::ops::{self, composed, fused, MatmulPrecision};
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

/// `‖a − b‖ / ‖b‖` over all elements.
fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (values(a), values(b));
    let num: f64 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
    let den: f64 = b.iter().map(|y| y * y).sum();
    (num / den).sqrt()
}

/// bf16 products: the forward equals an f64 evaluation of the same recipe (`Q`, `K`, `V` and the
/// probabilities rounded to bf16 before their products, everything else exact) to f32
/// accumulation accuracy, while it differs from the f32 kernel by bf16 rounding; the gradients
/// stay within bf16 accuracy of the f32 kernel's.
#[test]
fn bf16_products_round_the_operands_of_every_product() {
    use chatforge_model::ops::gemm::round_bf16;
    let mut rng = Rng::new(7);
    // Two query blocks without an offset, and a chunk after a cached prefix, with GQA.
    for (b, h, hkv, t, offset, d) in [(1, 2, 1, 70, 0, 16), (2, 4, 2, 20, 5, 8)] {
        let [q, k, v] = qkv(&mut rng, (b, h, hkv, t, offset, d), DType::F32);
        let what = format!("H={h} Hkv={hkv} T={t} offset={offset}");
        let bf16 = fused::causal_attention_with(&q, &k, &v, offset, MatmulPrecision::Bf16).unwrap();
        let f32 = fused::causal_attention(&q, &k, &v, offset).unwrap();

        // The reference, in f64 on bf16-rounded operands.
        let s = offset + t;
        let round = |x: &Tensor| -> Vec<f64> {
            let x = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            x.iter().map(|&v| f64::from(round_bf16(v))).collect()
        };
        let (qr, kr, vr) = (round(&q), round(&k), round(&v));
        let scale = 1.0 / (d as f64).sqrt();
        let mut want = vec![0.0f64; b * h * t * d];
        for bi in 0..b {
            for hi in 0..h {
                let kv = (bi * hkv + hi / (h / hkv)) * s * d;
                let qh = (bi * h + hi) * t * d;
                for i in 0..t {
                    let live = offset + i + 1;
                    let scores: Vec<f64> = (0..live)
                        .map(|j| {
                            let dot: f64 = (0..d)
                                .map(|c| qr[qh + i * d + c] * kr[kv + j * d + c])
                                .sum();
                            dot * scale
                        })
                        .collect();
                    let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = scores.iter().map(|x| (x - m).exp()).collect();
                    let sum: f64 = e.iter().sum();
                    for (j, e) in e.iter().enumerate() {
                        let p = f64::from(round_bf16((e / sum) as f32));
                        for c in 0..d {
                            want[qh + i * d + c] += p * vr[kv + j * d + c];
                        }
                    }
                }
            }
        }
        let want = Tensor::from_vec(want, bf16.dims(), &Device::Cpu).unwrap();
        let err = rel_err(&bf16, &want);
        assert!(
            err < 1e-5,
            "{what}: bf16 forward vs its f64 recipe: {err:.2e}"
        );
        let diff = rel_err(&bf16, &f32);
        assert!(
            (1e-4..2e-2).contains(&diff),
            "{what}: bf16 vs f32 forward differ by {diff:.2e}, want bf16 rounding (1e-4 to 2e-2)"
        );

        // Gradients: within bf16 accuracy of the f32 kernel's.
        let ins = [q, k, v];
        let (_, g16) = forward_backward(
            &ins,
            |x| fused::causal_attention_with(&x[0], &x[1], &x[2], offset, MatmulPrecision::Bf16),
            11,
        );
        let (_, g32) = forward_backward(
            &ins,
            |x| fused::causal_attention(&x[0], &x[1], &x[2], offset),
            11,
        );
        for (name, (a, b)) in ["dq", "dk", "dv"].iter().zip(g16.iter().zip(&g32)) {
            let err = rel_err(a, b);
            assert!(
                (1e-4..3e-2).contains(&err),
                "{what}: bf16 {name} vs f32: {err:.2e}, want bf16 rounding (1e-4 to 3e-2)"
            );
        }
    }
}
