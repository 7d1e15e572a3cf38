//! KV-cache decoding against full recomputation (TESTING.md family 13: logits <= 1e-4), batch
//! invariance (family 4), and the errors of an overflowing or mismatched cache.

mod common;

use candle_core::{Device, Tensor};
use chatforge_model::{Error, GptConfig, KvCache};

const DECODE_ATOL: f32 = 1e-4;

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
