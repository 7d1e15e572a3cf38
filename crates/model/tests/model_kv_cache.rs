//! KV-cache decoding against full recomputation (TESTING.md family 13: logits <= 1e-4), batch
//! invariance (family 4), and the errors of an overflowing or mismatched cache.

mod common;

use candle_core::{Device, Tensor};
use chatforge_model::{Error, GptConfig, KvCache};

const DECODE_ATOL: f32 = 1e-4;
/// The tighter bound of the decode-kernel tests: measured at most 1.1e-5 on these logits of order
/// 10 (whose f32 spacing is 1e-6), allowed 2x.
const DECODE_STEP_ATOL: f32 = 2e-5;

/// Prefill 5 tokens, then decode one at a time: every step's logits equal the full forward's.
fn decode_matches_full(cfg: &GptConfig) {
    let params = common::scaled_params(cfg, 11);
    let model = common::model(cfg, &params);
    let (b, t) = (2, cfg.context_length);
    let ids = common::random_ids(b, t, cfg.vocab_size, 12);
    let full = model.forward(&ids, None).unwrap(); // (B, T, V)

    let mut cache = KvCache::new(cfg.n_layer);
    let prefill = model
        .forward(&ids.narrow(1, 0, 5).unwrap(), Some(&mut cache))
        .unwrap();
    assert_eq!(cache.len(), 5);
    let mut worst = common::max_abs_diff(&prefill, &full.narrow(1, 0, 5).unwrap());
    for i in 5..t {
        let step = model
            .forward(&ids.narrow(1, i, 1).unwrap(), Some(&mut cache))
            .unwrap(); // (B, 1, V)
        assert_eq!(cache.len(), i + 1);
        worst = worst.max(common::max_abs_diff(&step, &full.narrow(1, i, 1).unwrap()));
    }
    println!(
        "{:?}/{:?}: decode vs full max abs err {worst:.3e}",
        cfg.norm, cfg.positions
    );
    assert!(worst <= DECODE_ATOL, "decode differs from full by {worst}");

    // The logits are far from trivial, so a position or masking bug could not hide.
    let spread = full.flatten_all().unwrap().abs().unwrap().max(0).unwrap();
    assert!(spread.to_scalar::<f32>().unwrap() > 1.0);
}

#[test]
fn kv_decode_equals_full_forward_gpt2_style() {
    decode_matches_full(&common::gpt2_cfg());
}

#[test]
fn kv_decode_equals_full_forward_llama_style() {
    decode_matches_full(&common::llama_cfg());
}

/// Decoding several tokens per step (a chunked prefill) also matches.
#[test]
fn chunked_prefill_equals_full_forward() {
    for cfg in [common::gpt2_cfg(), common::llama_cfg()] {
        let model = common::model(&cfg, &common::scaled_params(&cfg, 3));
        let ids = common::random_ids(1, 20, cfg.vocab_size, 4);
        let full = model.forward(&ids, None).unwrap();
        let mut cache = KvCache::new(cfg.n_layer);
        let mut pieces = Vec::new();
        for (start, len) in [(0, 7), (7, 6), (13, 7)] {
            let x = ids.narrow(1, start, len).unwrap();
            pieces.push(model.forward(&x, Some(&mut cache)).unwrap());
        }
        let chunked = Tensor::cat(&pieces, 1).unwrap();
        assert!(common::max_abs_diff(&chunked, &full) <= DECODE_ATOL);
    }
}

/// A forked cache (clone, or `select_rows` from one prefilled prompt) continues independently.
#[test]
fn forked_caches_continue_independently() {
    for cfg in [common::gpt2_cfg(), common::llama_cfg()] {
        let model = common::model(&cfg, &common::scaled_params(&cfg, 21));
        let prompt = common::random_ids(1, 6, cfg.vocab_size, 22);
        let mut cache = KvCache::new(cfg.n_layer);
        model.forward(&prompt, Some(&mut cache)).unwrap();

        // Two continuations, decoded in one batch from a row-selected cache ...
        let mut forked = cache.select_rows(&[0, 0]).unwrap();
        assert_eq!((forked.len(), forked.batch_size()), (6, 2));
        let next = Tensor::new(&[[3u32], [17]], &Device::Cpu).unwrap();
        let batched = model.forward(&next, Some(&mut forked)).unwrap(); // (2, 1, V)

        // ... and one of them from a clone, which leaves the original untouched.
        let mut cloned = cache.clone();
        let one = model
            .forward(&next.narrow(0, 1, 1).unwrap(), Some(&mut cloned))
            .unwrap();
        assert_eq!((cache.len(), cloned.len()), (6, 7));

        for (row, tok) in [(0usize, 3u32), (1, 17)] {
            let seq =
                Tensor::cat(&[&prompt, &Tensor::new(&[[tok]], &Device::Cpu).unwrap()], 1).unwrap();
            let full = model.forward(&seq, None).unwrap().narrow(1, 6, 1).unwrap();
            let got = batched.narrow(0, row, 1).unwrap();
            assert!(
                common::max_abs_diff(&got, &full) <= DECODE_ATOL,
                "row {row}"
            );
            if row == 1 {
                assert!(common::max_abs_diff(&one, &full) <= DECODE_ATOL);
            }
        }
    }
}

/// Batch of one ≡ the same row of a batch (family 4), with and without a cache.
#[test]
fn batch_of_one_equals_row_of_batch() {
    for cfg in [common::gpt2_cfg(), common::llama_cfg()] {
        let model = common::model(&cfg, &common::scaled_params(&cfg, 31));
        let ids = common::random_ids(3, 12, cfg.vocab_size, 32);
        let batch = model.forward(&ids, None).unwrap();
        let mut worst = 0f32;
        for row in 0..3 {
            let single = model
                .forward(&ids.narrow(0, row, 1).unwrap(), None)
                .unwrap();
            worst = worst.max(common::max_abs_diff(
                &single,
                &batch.narrow(0, row, 1).unwrap(),
            ));
        }
        println!("{:?}: batch-of-one max abs err {worst:.3e}", cfg.positions);
        assert!(worst <= 1e-5, "batch of one differs by {worst}");

        let targets = common::random_ids(3, 12, cfg.vocab_size, 33);
        // The batch loss is the mean of the three row losses (every row has 12 targets).
        let mut sum = 0f32;
        for row in 0..3 {
            let l = model
                .loss(
                    &ids.narrow(0, row, 1).unwrap(),
                    &targets.narrow(0, row, 1).unwrap(),
                )
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            sum += l;
        }
        let batch_loss = model
            .loss(&ids, &targets)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((batch_loss - sum / 3.0).abs() <= 1e-6 * batch_loss.abs().max(1.0));
    }
}

#[test]
fn cache_overflow_past_context_length_is_an_error() {
    let cfg = common::gpt2_cfg(); // context_length 24
    let model = common::model(&cfg, &common::scaled_params(&cfg, 41));
    let ids = common::random_ids(1, cfg.context_length, cfg.vocab_size, 42);
    let mut cache = KvCache::new(cfg.n_layer);
    model
        .forward(
            &ids.narrow(1, 0, cfg.context_length - 1).unwrap(),
            Some(&mut cache),
        )
        .unwrap();
    // The last position fits ...
    model
        .forward(&ids.narrow(1, 0, 1).unwrap(), Some(&mut cache))
        .unwrap();
    assert_eq!(cache.len(), cfg.context_length);
    // ... the next one does not, and the cache is left as it was.
    let err = model
        .forward(&ids.narrow(1, 0, 1).unwrap(), Some(&mut cache))
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::ContextOverflow {
                cached: 24,
                new_tokens: 1,
                context_length: 24
            }
        ),
        "{err}"
    );
    assert_eq!(cache.len(), cfg.context_length);

    // Without a cache, a sequence longer than the context is an error too.
    let long = common::random_ids(1, cfg.context_length + 1, cfg.vocab_size, 43);
    assert!(matches!(
        model.forward(&long, None),
        Err(Error::ContextOverflow { cached: 0, .. })
    ));
    // So is a prefill that would cross the boundary, for the Llama (RoPE) model as well.
    let lcfg = common::llama_cfg();
    let lmodel = common::model(&lcfg, &common::scaled_params(&lcfg, 44));
    let mut cache = KvCache::new(lcfg.n_layer);
    lmodel
        .forward(
            &common::random_ids(1, 20, lcfg.vocab_size, 45),
            Some(&mut cache),
        )
        .unwrap();
    let err = lmodel
        .forward(
            &common::random_ids(1, 5, lcfg.vocab_size, 46),
            Some(&mut cache),
        )
        .unwrap_err();
    assert!(matches!(
        err,
        Error::ContextOverflow {
            cached: 20,
            new_tokens: 5,
            ..
        }
    ));
}

#[test]
fn mismatched_cache_and_bad_inputs_are_errors() {
    let cfg = common::gpt2_cfg();
    let model = common::model(&cfg, &common::scaled_params(&cfg, 51));
    let ids = common::random_ids(2, 4, cfg.vocab_size, 52);

    let mut wrong_layers = KvCache::new(cfg.n_layer + 1);
    let err = model.forward(&ids, Some(&mut wrong_layers)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::CacheLayers {
                expected: 2,
                got: 3
            }
        ),
        "{err}"
    );

    let mut cache = KvCache::new(cfg.n_layer);
    model.forward(&ids, Some(&mut cache)).unwrap();
    let one_row = ids.narrow(0, 0, 1).unwrap();
    assert!(matches!(
        model.forward(&one_row, Some(&mut cache)),
        Err(Error::Input(_))
    ));

    let out_of_vocab = Tensor::new(&[[1u32, cfg.vocab_size as u32]], &Device::Cpu).unwrap();
    let err = model.forward(&out_of_vocab, None).unwrap_err();
    assert!(err.to_string().contains("vocab_size"), "{err}");

    let empty = Tensor::zeros((1, 0), candle_core::DType::U32, &Device::Cpu).unwrap();
    assert!(matches!(model.forward(&empty, None), Err(Error::Input(_))));

    let short_targets = common::random_ids(2, 3, cfg.vocab_size, 53);
    assert!(matches!(
        model.loss(&ids, &short_targets),
        Err(Error::Input(_))
    ));
}

#[test]
fn reset_cache_starts_over() {
    let cfg = common::llama_cfg();
    let model = common::model(&cfg, &common::scaled_params(&cfg, 61));
    let ids = common::random_ids(1, 6, cfg.vocab_size, 62);
    let mut cache = KvCache::new(cfg.n_layer);
    let first = model.forward(&ids, Some(&mut cache)).unwrap();
    cache.reset();
    assert!(cache.is_empty());
    assert_eq!(cache.n_layer(), cfg.n_layer);
    let again = model.forward(&ids, Some(&mut cache)).unwrap();
    assert_eq!(common::max_abs_diff(&first, &again), 0.0);
}

/// With nothing cached, a prefill attends to its own keys exactly as the uncached forward does:
/// the logits are bitwise equal.
#[test]
fn prefill_into_an_empty_cache_equals_the_uncached_forward_bitwise() {
    for cfg in [common::gpt2_cfg(), common::llama_cfg()] {
        let model = common::model(&cfg, &common::scaled_params(&cfg, 71));
        let ids = common::random_ids(2, 9, cfg.vocab_size, 72);
        let mut cache = KvCache::new(cfg.n_layer);
        let cached = model.forward(&ids, Some(&mut cache)).unwrap();
        let full = model.forward(&ids, None).unwrap();
        assert_eq!(common::max_abs_diff(&cached, &full), 0.0);
    }
}

/// Decode steps agree with the full forward to 2e-5 on logits of order 1–10, whatever the
/// cache's capacity: a cache sized up front never grows, one sized too small grows (by doubling)
/// and stays exact, and a preset capacity below the prefill is only a hint.
#[test]
fn decode_is_exact_whether_the_cache_grows_or_not() {
    for cfg in [common::gpt2_cfg(), common::llama_cfg()] {
        let model = common::model(&cfg, &common::scaled_params(&cfg, 81));
        let t = cfg.context_length;
        let ids = common::random_ids(2, t, cfg.vocab_size, 82);
        let full = model.forward(&ids, None).unwrap(); // (B, T, V)
                                                       // The prefill of 4 allocates 4 (or the reserve); each overflow at least doubles.
        let doubling = [vec![8; 4], vec![16; 8], vec![32; 8]].concat();
        for (reserve, capacities) in [(t, vec![t; t - 4]), (0, doubling.clone()), (2, doubling)] {
            let mut cache = KvCache::with_capacity(cfg.n_layer, reserve);
            assert_eq!(cache.capacity(), 0);
            model
                .forward(&ids.narrow(1, 0, 4).unwrap(), Some(&mut cache))
                .unwrap();
            let mut seen = Vec::new();
            let mut worst = 0f32;
            for i in 4..t {
                let step = model
                    .forward(&ids.narrow(1, i, 1).unwrap(), Some(&mut cache))
                    .unwrap();
                seen.push(cache.capacity());
                worst = worst.max(common::max_abs_diff(&step, &full.narrow(1, i, 1).unwrap()));
            }
            assert_eq!(seen, capacities, "reserve {reserve}");
            assert_eq!(cache.len(), t);
            println!(
                "{:?}: reserve {reserve}: decode vs full {worst:.3e}",
                cfg.positions
            );
            assert!(worst <= 2e-5, "decode differs from full by {worst}");
        }
    }
}

/// A clone shares the cache's storage until one of them writes; the writer copies first, so
/// each continues as if alone and neither sees the other's positions.
#[test]
fn clones_are_copy_on_write() {
    let cfg = common::llama_cfg();
    let model = common::model(&cfg, &common::scaled_params(&cfg, 91));
    let prompt = common::random_ids(1, 6, cfg.vocab_size, 92);
    let mut cache = KvCache::with_capacity(cfg.n_layer, cfg.context_length);
    model.forward(&prompt, Some(&mut cache)).unwrap();
    let untouched = cache.clone();
    let mut fork = cache.clone();
    let (a, b) = (
        Tensor::new(&[[5u32]], &Device::Cpu).unwrap(),
        Tensor::new(&[[9u32]], &Device::Cpu).unwrap(),
    );
    let la = model.forward(&a, Some(&mut cache)).unwrap();
    let lb = model.forward(&b, Some(&mut fork)).unwrap();
    // Second steps write in place into storage each now owns.
    let la2 = model.forward(&b, Some(&mut cache)).unwrap();
    let lb2 = model.forward(&a, Some(&mut fork)).unwrap();
    assert_eq!((untouched.len(), cache.len(), fork.len()), (6, 8, 8));

    let full = |tail: &[u32]| {
        let tail = Tensor::new(tail, &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let seq = Tensor::cat(&[&prompt, &tail], 1).unwrap();
        model.forward(&seq, None).unwrap() // (1, 8, V)
    };
    let (fa, fb) = (full(&[5, 9]), full(&[9, 5]));
    for (got, want) in [
        (&la, fa.narrow(1, 6, 1).unwrap()),
        (&la2, fa.narrow(1, 7, 1).unwrap()),
        (&lb, fb.narrow(1, 6, 1).unwrap()),
        (&lb2, fb.narrow(1, 7, 1).unwrap()),
    ] {
        assert!(common::max_abs_diff(got, &want) <= DECODE_STEP_ATOL);
    }
    // The untouched clone still holds exactly the prompt's keys.
    let (k0, _) = untouched.layer(0).unwrap();
    let (k1, _) = cache.layer(0).unwrap();
    assert_eq!(k0.dims()[2], 6);
    assert_eq!(common::max_abs_diff(&k0, &k1.narrow(2, 0, 6).unwrap()), 0.0);
    let mut again = untouched.clone();
    let lb_again = model.forward(&b, Some(&mut again)).unwrap();
    assert_eq!(common::max_abs_diff(&lb_again, &lb), 0.0);
}

#[test]
fn selecting_a_missing_row_is_an_error() {
    let cfg = common::gpt2_cfg();
    let model = common::model(&cfg, &common::scaled_params(&cfg, 101));
    let mut cache = KvCache::new(cfg.n_layer);
    // An empty cache selects nothing and stays empty.
    assert!(cache.select_rows(&[0, 0]).unwrap().is_empty());
    model
        .forward(
            &common::random_ids(2, 3, cfg.vocab_size, 102),
            Some(&mut cache),
        )
        .unwrap();
    let err = cache.select_rows(&[1, 2]).unwrap_err();
    assert!(matches!(err, Error::Input(_)), "{err}");
    let picked = cache.select_rows(&[1, 1, 0]).unwrap();
    assert_eq!((picked.batch_size(), picked.len()), (3, 3));
    assert_eq!(picked.capacity(), cache.capacity());
}

/// The decode kernel reads keys and values through strided views of larger buffers (the cache's
/// layout) and agrees with the composed reference on contiguous copies, in f32 and f64, with GQA
/// and several new rows; its backward is the tiled kernel's.
#[test]
fn decode_attention_reads_strided_views() {
    use candle_core::{DType, Var};
    use chatforge_data::Rng;
    use chatforge_model::ops::{composed, fused};

    let mut rng = Rng::new(111);
    let mut randn = |dims: &[usize], dtype: DType| {
        let n: usize = dims.iter().product();
        let data: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
        Tensor::from_vec(data, dims, &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
    };
    // (B, H, Hkv, T, offset, D, capacity)
    for (b, h, hkv, t, offset, d, cap) in [
        (2, 4, 2, 1, 9, 16, 32),
        (3, 6, 6, 3, 5, 20, 8),
        (2, 2, 1, 1, 40, 64, 64),
    ] {
        for (dtype, tol) in [(DType::F32, 1e-5f64), (DType::F64, 1e-12)] {
            let s = offset + t;
            let q = randn(&[b, h, t, d], dtype);
            let kbuf = randn(&[b, hkv, cap.max(s), d], dtype);
            let vbuf = randn(&[b, hkv, cap.max(s), d], dtype);
            let (k, v) = (kbuf.narrow(2, 0, s).unwrap(), vbuf.narrow(2, 0, s).unwrap());
            assert!(cap <= s || !k.is_contiguous());
            let got = fused::causal_attention(&q, &k, &v, offset).unwrap();
            let (kc, vc) = (k.contiguous().unwrap(), v.contiguous().unwrap());
            let want = composed::causal_attention(&q, &kc, &vc, offset).unwrap();
            let err = (got - &want)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_dtype(DType::F64)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap();
            assert!(
                err <= tol,
                "{dtype:?} (B, H, Hkv, T, offset) = {:?}: {err}",
                (b, h, hkv, t, offset)
            );
        }
        // Gradients through the strided decode path equal the composed version's.
        let q = Var::from_tensor(&randn(&[b, h, t, d], DType::F64)).unwrap();
        let kbuf = Var::from_tensor(&randn(&[b, hkv, cap.max(offset + t), d], DType::F64)).unwrap();
        let v = randn(&[b, hkv, offset + t, d], DType::F64);
        let k = kbuf.narrow(2, 0, offset + t).unwrap();
        let w = randn(&[b, h, t, d], DType::F64);
        let loss = |y: Tensor| (y * &w).unwrap().sum_all().unwrap();
        let g1 = loss(fused::causal_attention(&q, &k, &v, offset).unwrap())
            .backward()
            .unwrap();
        let g2 =
            loss(composed::causal_attention(&q, &k.contiguous().unwrap(), &v, offset).unwrap())
                .backward()
                .unwrap();
        for var in [q.as_tensor(), kbuf.as_tensor()] {
            let (a, c) = (g1.get(var).unwrap(), g2.get(var).unwrap());
            let err = (a - c)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap();
            assert!(err <= 1e-10, "gradient differs by {err}");
        }
    }
}
