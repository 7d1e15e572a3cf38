//! Engine parity (TESTING.md family 13) and the engine's contract: KV-cache decode ≡ full
//! recompute, batch invariance, engine log-probs ≡ training-forward log-probs, forced tokens,
//! exact stops and lengths, determinism.
//!
//! The references are independent of the engine: a plain forward of the whole sequence without a
//! cache (at every step), and `chatforge_model::ops::log_softmax_last_dim` over a model built with
//! the training `var_builder`.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use chatforge_data::Rng;
use chatforge_engine::{
    generate, generate_batch, generate_n, FinishReason, GenerateRequest, Sample, SamplingParams,
};
use chatforge_model::{ops, Gpt, GptConfig, KvCache, Params};

const VOCAB: usize = 64;
const CTX: usize = 24;

/// GPT-2 style (LayerNorm, learned positions, GELU, tied) and Llama style (RMSNorm, RoPE,
/// SwiGLU, GQA, untied) configs, shrunk for speed.
fn configs() -> Vec<GptConfig> {
    ["tiny", "llama-tiny"]
        .iter()
        .map(|name| {
            let mut cfg = GptConfig::preset(name, VOCAB).unwrap();
            cfg.context_length = CTX;
            cfg.n_layer = 2;
            cfg
        })
        .collect()
}

/// Parameters at a scale where the logits are far from uniform (GPT-2's N(0, 0.02) init would
/// make every token nearly equally likely and hide cache and position bugs): matrices
/// N(0, 1/fan_in), token embeddings and LM head N(0, 0.15^2) (logits of std ≈ 0.15·√C ≈ 1.7),
/// positions N(0, 0.3^2), norm weights 1 + N(0, 0.1^2), biases N(0, 0.1^2).
fn scaled_params(cfg: &GptConfig, seed: u64) -> Params {
    let mut rng = Rng::new(seed);
    let mut out = BTreeMap::new();
    for (name, shape) in Params::expected_shapes(cfg) {
        let n: usize = shape.iter().product();
        let (mean, std) = if name.ends_with(".bias") {
            (0.0, 0.1)
        } else if shape.len() == 1 {
            (1.0, 0.1)
        } else if name == "wpe.weight" {
            (0.0, 0.3)
        } else if matches!(name.as_str(), "wte.weight" | "lm_head.weight") {
            (0.0, 0.15)
        } else {
            (0.0, 1.0 / (shape[1] as f64).sqrt())
        };
        let data: Vec<f32> = (0..n).map(|_| (mean + std * rng.normal()) as f32).collect();
        out.insert(
            name,
            Tensor::from_vec(data, shape.as_slice(), &Device::Cpu).unwrap(),
        );
    }
    Params::from_tensors(out).unwrap()
}

/// An inference model (no autograd graph) and a training model over the same weights.
fn models(cfg: &GptConfig, seed: u64) -> (Gpt, Gpt) {
    let params = scaled_params(cfg, seed);
    let frozen = Gpt::new(cfg, params.frozen_var_builder(DType::F32)).unwrap();
    let training = Gpt::new(cfg, params.var_builder(DType::F32)).unwrap();
    (frozen, training)
}

fn prompt(len: usize, seed: u64) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    (0..len).map(|_| rng.index(VOCAB) as u32).collect()
}

fn sampling(temperature: f32, seed: u64, max_tokens: usize) -> SamplingParams {
    SamplingParams {
        temperature,
        seed,
        max_tokens,
        ..Default::default()
    }
}

/// Logits `(T, V)` of a plain forward over `ids`, without a cache.
fn full_logits(model: &Gpt, ids: &[u32]) -> Vec<Vec<f32>> {
    let x = Tensor::new(ids, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    model
        .forward(&x, None)
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec2()
        .unwrap()
}

fn argmax(xs: &[f32]) -> usize {
    (0..xs.len()).fold(0, |best, i| if xs[i] > xs[best] { i } else { best })
}

/// log_softmax(row)[token] in f64, written out: x_t - max - ln Σ exp(x - max).
fn logprob_f64(row: &[f32], token: u32) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = row
        .iter()
        .map(|&x| (x as f64 - max).exp())
        .sum::<f64>()
        .ln()
        + max;
    row[token as usize] as f64 - lse
}

/// The log-prob of every output token recomputed by a training forward over
/// `prompt + tokens[..len - 1]`: `log_softmax(logits / T)` (T = 1 for greedy) gathered at the
/// output tokens.
fn training_logprobs(model: &Gpt, prompt: &[u32], s: &Sample, temperature: f32) -> Vec<f32> {
    let mut ids = prompt.to_vec();
    ids.extend(&s.tokens[..s.tokens.len() - 1]);
    let x = Tensor::new(ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let logits = model.forward(&x, None).unwrap(); // (1, L, V)
    let t = if temperature == 0.0 { 1.0 } else { temperature };
    let scaled = (logits / t as f64).unwrap();
    let logp = ops::log_softmax_last_dim(&scaled)
        .unwrap()
        .squeeze(0)
        .unwrap(); // (L, V)
    let positions: Vec<u32> = (0..s.tokens.len())
        .map(|j| (prompt.len() - 1 + j) as u32)
        .collect();
    let rows = logp
        .index_select(&Tensor::new(positions.as_slice(), &Device::Cpu).unwrap(), 0)
        .unwrap(); // (N, V)
    let targets = Tensor::new(s.tokens.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(1)
        .unwrap(); // (N, 1)
    rows.gather(&targets, 1)
        .unwrap()
        .squeeze(1)
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Asserts that two samples have the same tokens, mask and finish, and log-probs within 1e-5;
/// returns the largest log-prob difference. (Log-probs are not bitwise equal across batch sizes:
/// the CPU matmul sums in an order that depends on the number of rows.)
fn assert_same_sample(a: &Sample, b: &Sample, what: &str) -> f32 {
    assert_eq!(a.tokens, b.tokens, "{what}");
    assert_eq!(a.sampled, b.sampled, "{what}");
    assert_eq!(a.finish, b.finish, "{what}");
    let err = max_abs(&a.logprobs, &b.logprobs);
    assert!(err <= 1e-5, "{what}: log-probs differ by {err}");
    err
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn greedy_decode_with_the_cache_equals_full_recompute_at_every_step() {
    for cfg in configs() {
        let (model, _) = models(&cfg, 1);
        let p = prompt(5, 2);
        let samples = generate_n(&model, &Device::Cpu, &p, 2, &sampling(0.0, 0, 100)).unwrap();
        let mut worst = 0.0f64;
        for s in &samples {
            // No stop token and a large budget: the context window ends the row, exactly full.
            assert_eq!(s.finish, FinishReason::Context);
            assert_eq!(p.len() + s.tokens.len(), CTX);
            let mut seq = p.clone();
            for (k, &token) in s.tokens.iter().enumerate() {
                let full = full_logits(&model, &seq);
                let last = full.last().unwrap();
                assert_eq!(
                    argmax(last) as u32,
                    token,
                    "{:?} step {k}: cached decode chose {token}",
                    cfg.positions
                );
                worst = worst.max((logprob_f64(last, token) - s.logprobs[k] as f64).abs());
                seq.push(token);
            }
        }
        eprintln!(
            "{:?}: greedy log-prob vs recompute, max |err| = {worst:.3e}",
            cfg.positions
        );
        assert!(worst <= 1e-5, "{worst}");
        assert_eq!(samples[0], samples[1]);
    }
}

/// The cache mechanics the engine relies on, checked on the full logits: prefill with batch 1,
/// fork into rows, decode different tokens per row as one batch, drop a finished row mid-way.
#[test]
fn forked_batched_decode_logits_equal_full_recompute() {
    for cfg in configs() {
        let (model, _) = models(&cfg, 3);
        let p = prompt(6, 4);
        let mut cache = KvCache::new(cfg.n_layer);
        let x = Tensor::new(p.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        model.forward(&x, Some(&mut cache)).unwrap();
        let mut cache = cache.select_rows(&[0, 0, 0]).unwrap();
        let mut seqs = vec![p.clone(); 3];
        let mut rng = Rng::new(5);
        let mut worst = 0.0f32;
        for step in 0..12 {
            if step == 4 {
                // Row 1 finishes: the batch keeps rows 0 and 2.
                cache = cache.select_rows(&[0, 2]).unwrap();
                seqs.remove(1);
            }
            let next: Vec<u32> = seqs.iter().map(|_| rng.index(VOCAB) as u32).collect();
            for (s, &t) in seqs.iter_mut().zip(&next) {
                s.push(t);
            }
            let ids = Tensor::from_vec(next.clone(), (next.len(), 1), &Device::Cpu).unwrap();
            let cached: Vec<Vec<f32>> = model
                .forward(&ids, Some(&mut cache))
                .unwrap()
                .squeeze(1)
                .unwrap()
                .to_vec2()
                .unwrap(); // (B, V)
            for (row, seq) in cached.iter().zip(&seqs) {
                let full = full_logits(&model, seq);
                worst = worst.max(max_abs(row, full.last().unwrap()));
            }
        }
        eprintln!(
            "{:?}: forked decode logits vs recompute, max |err| = {worst:.3e}",
            cfg.positions
        );
        assert!(worst <= 1e-4, "{worst}");
    }
}

#[test]
fn a_row_is_the_same_whatever_the_batch_size() {
    let cfg = &configs()[0];
    let (model, _) = models(cfg, 6);
    let p = prompt(4, 7);
    let mut params = sampling(1.0, 11, 10);
    // Stop tokens taken from the rows themselves, so rows end at different steps and the batch
    // shrinks as it goes.
    let free = generate_n(&model, &Device::Cpu, &p, 5, &params).unwrap();
    params.stop_tokens = vec![free[0].tokens[2], free[1].tokens[6]];
    let by_n: Vec<Vec<Sample>> = (1..=5)
        .map(|n| generate_n(&model, &Device::Cpu, &p, n, &params).unwrap())
        .collect();
    let lengths: Vec<usize> = by_n[4].iter().map(|s| s.tokens.len()).collect();
    assert!(
        lengths.iter().any(|&l| l != lengths[0]),
        "rows should end at different steps to exercise the shrinking batch: {lengths:?}"
    );
    assert!(
        by_n[4].iter().any(|s| s.finish == FinishReason::Stop),
        "{lengths:?}"
    );
    let mut worst = 0.0f32;
    for (n, samples) in by_n.iter().enumerate() {
        assert_eq!(samples.len(), n + 1);
        for (i, s) in samples.iter().enumerate() {
            let what = format!("row {i} of a batch of {} vs of 5", n + 1);
            worst = worst.max(assert_same_sample(s, &by_n[4][i], &what));
        }
    }
    // The single-sequence wrapper is row 0, bit for bit (the same batch of one).
    let single = generate(&model, &Device::Cpu, &p, &params, |_| true).unwrap();
    assert_eq!(single, by_n[0][0]);
    // Greedy rows are all the same.
    let greedy = generate_n(&model, &Device::Cpu, &p, 4, &sampling(0.0, 11, 10)).unwrap();
    for s in &greedy {
        worst = worst.max(assert_same_sample(s, &greedy[0], "greedy rows"));
    }
    eprintln!("batch invariance: max |log-prob difference| across batch sizes = {worst:.3e}");
}

#[test]
fn engine_logprobs_equal_training_forward_logprobs() {
    for cfg in configs() {
        let (model, training) = models(&cfg, 8);
        let p = prompt(5, 9);
        let forced = [3u32, 9, 4];
        for temperature in [1.0f32, 0.7, 0.0] {
            let params = SamplingParams {
                temperature,
                // Truncation shapes what is drawn, never the reported log-probs.
                top_k: 8,
                top_p: 0.9,
                seed: 12,
                max_tokens: 12,
                stop_tokens: Vec::new(),
            };
            let req = GenerateRequest {
                prompt: &p,
                forced_prefix: &forced,
                n: 3,
                params: &params,
            };
            let samples = generate_batch(&model, &Device::Cpu, &req, |_, _| true).unwrap();
            let mut worst = 0.0f32;
            for s in &samples {
                assert_eq!(s.tokens.len(), 12);
                assert_eq!(s.finish, FinishReason::Length);
                assert_eq!(&s.tokens[..3], &forced);
                let mask: Vec<bool> = (0..12).map(|j| j >= 3).collect();
                assert_eq!(s.sampled, mask);
                worst = worst.max(max_abs(
                    &s.logprobs,
                    &training_logprobs(&training, &p, s, temperature),
                ));
            }
            eprintln!(
                "{:?} T={temperature}: engine vs training log-probs, max |err| = {worst:.3e}",
                cfg.positions
            );
            assert!(worst <= 1e-5, "{worst}");
        }
    }
}

#[test]
fn forced_tokens_are_scored_not_sampled_and_never_stop_a_row() {
    let cfg = &configs()[1];
    let (model, _) = models(cfg, 13);
    let p = prompt(3, 14);
    let forced = [7u32, 7, 21];
    let mut params = sampling(1.0, 15, 9);
    params.stop_tokens = vec![21];
    let req = GenerateRequest {
        prompt: &p,
        forced_prefix: &forced,
        n: 2,
        params: &params,
    };
    let samples = generate_batch(&model, &Device::Cpu, &req, |_, _| true).unwrap();
    // Forced tokens draw no randomness, so what follows them is exactly a plain generation from
    // prompt + forced with the remaining budget.
    let mut extended = p.clone();
    extended.extend(forced);
    let rest = SamplingParams {
        max_tokens: 9 - forced.len(),
        ..params.clone()
    };
    let plain = generate_n(&model, &Device::Cpu, &extended, 2, &rest).unwrap();
    for (s, q) in samples.iter().zip(&plain) {
        assert_eq!(
            &s.tokens[..3],
            &forced,
            "the forced stop token 21 must not end the row"
        );
        assert_eq!(&s.sampled[..3], &[false; 3]);
        assert_eq!(&s.tokens[3..], q.tokens.as_slice());
        assert!(s.sampled[3..].iter().all(|&b| b));
        assert!(max_abs(&s.logprobs[3..], &q.logprobs) <= 1e-5);
        assert_eq!(s.finish, q.finish);
    }
    // Forced tokens exactly filling the budget: the output is the prefix.
    let params = sampling(1.0, 15, 3);
    let req = GenerateRequest {
        prompt: &p,
        forced_prefix: &forced,
        n: 1,
        params: &params,
    };
    let s = generate_batch(&model, &Device::Cpu, &req, |_, _| true)
        .unwrap()
        .remove(0);
    assert_eq!(
        (s.tokens.as_slice(), s.finish),
        (&forced[..], FinishReason::Length)
    );
    // A prefix longer than the budget, or with an unknown id, is an error.
    let params = sampling(1.0, 15, 2);
    assert!(generate_batch(
        &model,
        &Device::Cpu,
        &GenerateRequest {
            params: &params,
            ..req
        },
        |_, _| true
    )
    .is_err());
    let bad = [1u32, VOCAB as u32];
    assert!(generate_batch(
        &model,
        &Device::Cpu,
        &GenerateRequest {
            forced_prefix: &bad,
            ..req
        },
        |_, _| true
    )
    .is_err());
}

#[test]
fn stop_tokens_max_tokens_and_the_context_are_exact() {
    let cfg = &configs()[0];
    let (model, _) = models(cfg, 16);
    let p = prompt(4, 17);
    let greedy = generate_n(&model, &Device::Cpu, &p, 1, &sampling(0.0, 0, 15))
        .unwrap()
        .remove(0);
    assert_eq!(
        (greedy.tokens.len(), greedy.finish),
        (15, FinishReason::Length)
    );

    // A stop token ends the row at its first occurrence and is the last token.
    let stop = greedy.tokens[4];
    let first = greedy.tokens.iter().position(|&t| t == stop).unwrap();
    let mut params = sampling(0.0, 0, 15);
    params.stop_tokens = vec![stop];
    let mut seen = Vec::new();
    let s = generate(&model, &Device::Cpu, &p, &params, |t| {
        seen.push(t);
        true
    })
    .unwrap();
    assert_eq!(s.tokens, greedy.tokens[..=first]);
    assert_eq!(s.finish, FinishReason::Stop);
    assert_eq!(
        seen,
        greedy.tokens[..first],
        "the callback never sees the stop token"
    );

    // max_tokens is exact, including 0.
    for max in [0, 1, 6] {
        let s = generate_n(&model, &Device::Cpu, &p, 2, &sampling(0.0, 0, max)).unwrap();
        for s in s {
            assert_eq!((s.tokens.len(), s.finish), (max, FinishReason::Length));
            assert_eq!(s.tokens, greedy.tokens[..max]);
        }
    }

    // The context window: prompt + output never exceed it, and filling it is not an error.
    let long = prompt(CTX - 1, 18);
    let s = generate_n(&model, &Device::Cpu, &long, 3, &sampling(1.0, 0, 10)).unwrap();
    assert!(s
        .iter()
        .all(|s| s.tokens.len() == 1 && s.finish == FinishReason::Context));
    let s = generate_n(
        &model,
        &Device::Cpu,
        &prompt(CTX - 3, 18),
        1,
        &sampling(1.0, 0, 3),
    )
    .unwrap();
    assert_eq!((s[0].tokens.len(), s[0].finish), (3, FinishReason::Length));

    // Bad requests are errors, not panics.
    let ok = sampling(1.0, 0, 5);
    assert!(generate_n(&model, &Device::Cpu, &[], 1, &ok).is_err());
    assert!(generate_n(&model, &Device::Cpu, &prompt(CTX, 19), 1, &ok).is_err());
    assert!(generate_n(&model, &Device::Cpu, &[1, VOCAB as u32], 1, &ok).is_err());
    assert!(generate_n(&model, &Device::Cpu, &p, 1, &sampling(-1.0, 0, 5)).is_err());
    assert!(generate_n(&model, &Device::Cpu, &p, 0, &ok)
        .unwrap()
        .is_empty());
}

#[test]
fn a_cancelled_row_ends_alone() {
    let cfg = &configs()[1];
    let (model, _) = models(cfg, 20);
    let p = prompt(4, 21);
    let params = sampling(1.0, 22, 8);
    let all = generate_n(&model, &Device::Cpu, &p, 3, &params).unwrap();
    let req = GenerateRequest {
        prompt: &p,
        forced_prefix: &[],
        n: 3,
        params: &params,
    };
    let mut count = [0usize; 3];
    let got = generate_batch(&model, &Device::Cpu, &req, |row, _| {
        count[row] += 1;
        !(row == 1 && count[row] == 2)
    })
    .unwrap();
    assert_eq!(got[1].tokens, all[1].tokens[..2]);
    assert_eq!(got[1].finish, FinishReason::Cancelled);
    // The other rows are unaffected (up to the batch-size rounding of the log-probs).
    assert_same_sample(&got[0], &all[0], "row 0");
    assert_same_sample(&got[2], &all[2], "row 2");
    assert_eq!(count, [8, 2, 8]);

    let mut k = 0;
    let single = generate(&model, &Device::Cpu, &p, &params, |_| {
        k += 1;
        k < 3
    })
    .unwrap();
    assert_eq!(single.tokens, all[0].tokens[..3]);
    assert_eq!(single.finish, FinishReason::Cancelled);
}

#[test]
fn samples_are_deterministic_and_seeded() {
    let cfg = &configs()[0];
    let (model, _) = models(cfg, 23);
    let p = prompt(4, 24);
    let run = |t: f32, seed: u64| {
        generate_n(&model, &Device::Cpu, &p, 2, &sampling(t, seed, 12)).unwrap()
    };
    assert_eq!(run(1.0, 1), run(1.0, 1));
    let (a, b) = (run(1.0, 1), run(1.0, 2));
    assert_ne!(a[0].tokens, b[0].tokens);
    assert_ne!(a[1].tokens, b[1].tokens);
    assert_ne!(
        a[0].tokens, a[1].tokens,
        "rows draw from independent streams"
    );
    assert_eq!(run(0.0, 1), run(0.0, 2), "temperature 0 ignores the seed");
}
