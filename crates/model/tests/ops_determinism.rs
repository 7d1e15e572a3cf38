//! The fused kernels are bitwise reproducible whatever the number of threads (TESTING.md family
//! 5): every parallel reduction runs in an order fixed by the shapes alone. Nor do they depend on
//! the vector unit their loops were compiled for.

mod ops_common;

use candle_core::{DType, Device, Tensor};
use chatforge_data::rng::Rng;
use chatforge_model::ops::{self, fused, MatmulPrecision, Simd, IGNORE_INDEX};
use ops_common::*;

/// Outputs and gradients of every fused op on fixed inputs, flattened.
fn run_all() -> Vec<f64> {
    let mut rng = Rng::new(42);
    let mut all = Vec::new();
    let mut push = |(y, gs): (Tensor, Vec<Tensor>)| {
        all.extend(values(&y));
        gs.iter().for_each(|g| all.extend(values(g)));
    };
    // Big enough for many rayon tasks in each kernel.
    let x = randn(&mut rng, &[300, 200], 2.0, DType::F32);
    let w = randn(&mut rng, &[200], 1.0, DType::F32);
    let b = randn(&mut rng, &[200], 1.0, DType::F32);
    let ln = [x.clone(), w.clone(), b];
    push(forward_backward(
        &ln,
        |t| fused::layer_norm(&t[0], &t[1], Some(&t[2]), 1e-5),
        1,
    ));
    push(forward_backward(
        &[x.clone(), w],
        |t| fused::rms_norm(&t[0], &t[1], 1e-5),
        2,
    ));
    let one = std::slice::from_ref(&x);
    push(forward_backward(one, |t| fused::gelu(&t[0]), 3));
    push(forward_backward(one, |t| fused::silu(&t[0]), 4));
    push(forward_backward(one, |t| fused::softmax_last_dim(&t[0]), 5));
    push(forward_backward(
        one,
        |t| fused::log_softmax_last_dim(&t[0]),
        6,
    ));
    let targets: Vec<u32> = (0..300)
        .map(|i| {
            if i % 7 == 0 {
                IGNORE_INDEX
            } else {
                rng.index(200) as u32
            }
        })
        .collect();
    let targets = Tensor::from_vec(targets, 300, &Device::Cpu).unwrap();
    push(forward_backward(
        one,
        |t| fused::cross_entropy(&t[0], &targets),
        7,
    ));
    let q = randn(&mut rng, &[2, 4, 100, 16], 1.0, DType::F32);
    let k = randn(&mut rng, &[2, 2, 103, 16], 1.0, DType::F32);
    let v = randn(&mut rng, &[2, 2, 103, 16], 1.0, DType::F32);
    let qkv = [q, k, v];
    push(forward_backward(
        &qkv,
        |t| fused::causal_attention(&t[0], &t[1], &t[2], 3),
        8,
    ));
    push(forward_backward(
        &qkv,
        |t| fused::causal_attention_with(&t[0], &t[1], &t[2], 3, MatmulPrecision::Bf16),
        9,
    ));
    all
}

/// The number of values whose bits differ.
fn differing(a: &[f64], b: &[f64]) -> usize {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count()
}

#[test]
fn fused_kernels_are_bitwise_reproducible_across_thread_counts() {
    let pool = |n| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .unwrap()
    };
    let one = pool(1).install(run_all);
    let three = pool(3).install(run_all);
    let n = differing(&one, &three);
    assert_eq!(n, 0, "{n} values differ between 1 and 3 threads");
}

/// The element-wise and row-wise loops are compiled for AVX-512, AVX2 and the baseline target and
/// the widest one the CPU has runs (`ops::Simd`). All of them compute the same bits. (Another
/// test in this binary may run meanwhile at a capped width: by this very property it gets the
/// same results.)
#[test]
fn fused_kernels_compute_the_same_bits_at_every_vector_width() {
    let widest = ops::limit_simd(Simd::Avx512);
    let reference = run_all();
    let mut checked = vec![widest];
    for cap in [Simd::Avx2, Simd::Baseline] {
        let used = ops::limit_simd(cap);
        if checked.contains(&used) {
            continue;
        }
        let n = differing(&reference, &run_all());
        assert_eq!(n, 0, "{n} values differ between {widest:?} and {used:?}");
        checked.push(used);
    }
    ops::limit_simd(Simd::Avx512);
    if checked.len() == 1 {
        eprintln!("SKIPPED (in part): this CPU has only the {widest:?} vector unit");
    }
}
