//! Fused versus composed forward+backward time at GPT-sized shapes. Ignored by default (a
//! measurement, not a test): `cargo test -p chatforge-model --test ops_bench -- --ignored --nocapture`.

mod ops_common;

use std::time::{Duration, Instant};

use candle_core::{DType, Device, Result, Tensor, Var};
use chatforge_data::rng::Rng;
use chatforge_model::ops::{composed, fused, IGNORE_INDEX};
use ops_common::randn;

/// Median wall time of `reps` runs of the forward alone and of forward + `backward()` of
/// `sum(f(inputs))`.
fn time_fwd_bwd(
    inputs: &[Tensor],
    f: &dyn Fn(&[Tensor]) -> Result<Tensor>,
    reps: usize,
) -> (Duration, Duration) {
    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(t).unwrap())
        .collect();
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let mut fwd = Vec::new();
    let mut both = Vec::new();
    for rep in 0..=reps {
        let start = Instant::now();
        let y = f(&ts).unwrap();
        let t_fwd = start.elapsed();
        let grads = y.sum_all().unwrap().backward().unwrap();
        let t_both = start.elapsed();
        assert!(grads.get(&ts[0]).is_some());
        if rep > 0 {
            fwd.push(t_fwd);
            both.push(t_both);
        }
    }
    (median(fwd), median(both))
}

fn report(
    name: &str,
    inputs: &[Tensor],
    fast: &dyn Fn(&[Tensor]) -> Result<Tensor>,
    reference: &dyn Fn(&[Tensor]) -> Result<Tensor>,
) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let (ff, fb) = time_fwd_bwd(inputs, fast, 11);
    let (cf, cb) = time_fwd_bwd(inputs, reference, 11);
    println!(
        "{name:<28} fwd: fused {:>7.2} ms composed {:>7.2} ms | fwd+bwd: fused {:>7.2} ms composed {:>7.2} ms ({:.1}x)",
        ms(ff),
        ms(cf),
        ms(fb),
        ms(cb),
        cb.as_secs_f64() / fb.as_secs_f64()
    );
}

#[test]
#[ignore = "measurement; run with --ignored --nocapture"]
fn fused_vs_composed_timings() {
    let mut rng = Rng::new(0);
    let (n, c) = (8 * 256, 384);
    let x = randn(&mut rng, &[n, c], 1.0, DType::F32);
    let w = randn(&mut rng, &[c], 1.0, DType::F32);
    let b = randn(&mut rng, &[c], 1.0, DType::F32);
    let ins = [x.clone(), w.clone(), b];
    report(
        "layer_norm (2048, 384)",
        &ins,
        &|t| fused::layer_norm(&t[0], &t[1], Some(&t[2]), 1e-5),
        &|t| composed::layer_norm(&t[0], &t[1], Some(&t[2]), 1e-5),
    );
    report(
        "rms_norm (2048, 384)",
        &[x.clone(), w],
        &|t| fused::rms_norm(&t[0], &t[1], 1e-5),
        &|t| composed::rms_norm(&t[0], &t[1], 1e-5),
    );
    report("gelu (2048, 384)", &[x], &|t| fused::gelu(&t[0]), &|t| {
        composed::gelu(&t[0])
    });
    let h = randn(&mut rng, &[n, 4 * c], 1.0, DType::F32);
    report(
        "gelu (2048, 1536)",
        std::slice::from_ref(&h),
        &|t| fused::gelu(&t[0]),
        &|t| composed::gelu(&t[0]),
    );
    report("silu (2048, 1536)", &[h], &|t| fused::silu(&t[0]), &|t| {
        composed::silu(&t[0])
    });
    let att = randn(&mut rng, &[8 * 6, 256, 256], 1.0, DType::F32);
    report(
        "softmax (48, 256, 256)",
        &[att],
        &|t| fused::softmax_last_dim(&t[0]),
        &|t| composed::softmax_last_dim(&t[0]),
    );
    let qkv: Vec<Tensor> = [8, 8, 8]
        .iter()
        .map(|&b| randn(&mut rng, &[b, 6, 256, 64], 1.0, DType::F32))
        .collect();
    report(
        "attention (8, 6, 256, 64)",
        &qkv,
        &|t| fused::causal_attention(&t[0], &t[1], &t[2], 0),
        &|t| composed::causal_attention(&t[0], &t[1], &t[2], 0),
    );
    let v = 4096;
    let logits = randn(&mut rng, &[n, v], 2.0, DType::F32);
    let targets: Vec<u32> = (0..n)
        .map(|i| {
            if i % 10 == 0 {
                IGNORE_INDEX
            } else {
                rng.index(v) as u32
            }
        })
        .collect();
    let targets = Tensor::from_vec(targets, n, &Device::Cpu).unwrap();
    report(
        "cross_entropy (2048, 4096)",
        &[logits],
        &|t| fused::cross_entropy(&t[0], &targets),
        &|t| composed::cross_entropy(&t[0], &targets),
    );
}
