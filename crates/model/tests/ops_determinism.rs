//! The fused kernels are bitwise reproducible whatever the number of threads (TESTING.md family
//! 5): every parallel reduction runs in an order fixed by the shapes alone.

mod ops_common;

use candle_core::{DType, Device, Tensor};
use chatforge_data::rng::Rng;
use chatforge_model::ops::{fused, IGNORE_INDEX};
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
    push(forward_backward(
        &[q, k, v],
        |t| fused::causal_attention(&t[0], &t[1], &t[2], 3),
        8,
    ));
    all
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
    assert_eq!(one.len(), three.len());
    let differing = one
        .iter()
        .zip(&three)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    assert_eq!(
        differing, 0,
        "{differing} values differ between 1 and 3 threads"
    );
}
