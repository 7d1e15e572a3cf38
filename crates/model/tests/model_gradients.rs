//! TESTING.md family 0, "every parameter learns": after one backward pass every parameter tensor
//! has a finite, non-zero gradient. This is what catches an op that silently records no backward
//! (candle's fused norms and softmax do that: DESIGN.md, "Silent gradient cut").

mod common;

use candle_core::{backprop::GradStore, DType, Device, Tensor};
use chatforge_model::{Gpt, GptConfig, Params, ScalarHead};

/// Asserts that every parameter except those in `skip` has a finite, non-zero gradient, and that
/// the skipped ones have none (they are not on the path to the loss).
fn assert_every_param_learns(params: &Params, grads: &GradStore, skip: &[&str]) {
    let mut checked = 0;
    for (name, var) in params.iter() {
        let grad = grads.get(var.as_tensor());
        if skip.contains(&name) {
            assert!(grad.is_none(), "{name} should not be on the loss's path");
            continue;
        }
        let g = grad.unwrap_or_else(|| panic!("no gradient for {name}"));
        let v: Vec<f32> = g.flatten_all().unwrap().to_vec1().unwrap();
        assert!(
            v.iter().all(|x| x.is_finite()),
            "non-finite gradient for {name}"
        );
        let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
        assert!(max > 0.0, "all-zero gradient for {name}");
        checked += 1;
    }
    assert_eq!(checked, params.len() - skip.len());
}

/// Freshly initialised (GPT-2 init) model, one LM loss backward.
fn lm_gradients(cfg: &GptConfig) {
    let params = Params::init(cfg, 7, &Device::Cpu).unwrap();
    let model = Gpt::new(cfg, params.var_builder(DType::F32)).unwrap();
    let ids = common::random_ids(2, 16, cfg.vocab_size, 1);
    let targets = common::random_ids(2, 16, cfg.vocab_size, 2);
    let loss = model.loss(&ids, &targets).unwrap();
    assert!(loss.to_scalar::<f32>().unwrap().is_finite());
    let grads = loss.backward().unwrap();
    assert_every_param_learns(&params, &grads, &[]);
}

#[test]
fn every_parameter_learns_gpt2_style() {
    lm_gradients(&GptConfig::preset("tiny", 512).unwrap());
}

#[test]
fn every_parameter_learns_llama_style() {
    lm_gradients(&GptConfig::preset("llama-tiny", 512).unwrap());
}

/// A reward-model-style loss on a scalar head over the transformer (a value-model loss): every transformer parameter
/// and both head parameters learn; an untied `lm_head` is off the path and gets no gradient.
fn scalar_head_gradients(cfg: &GptConfig) {
    let mut params = Params::init(cfg, 7, &Device::Cpu).unwrap();
    let head_shapes = ScalarHead::expected_shapes(cfg);
    params
        .extend(Params::init_with_shapes(&head_shapes, cfg.n_layer, 8, &Device::Cpu).unwrap())
        .unwrap();
    let vb = params.var_builder(DType::F32);
    let model = Gpt::new(cfg, vb.clone()).unwrap();
    let head = ScalarHead::new(cfg, vb).unwrap();
    let ids = common::random_ids(2, 16, cfg.vocab_size, 3);
    let scores = head
        .forward(&model.forward_hidden(&ids, None).unwrap())
        .unwrap(); // (2, 16)
    assert_eq!(scores.dims(), &[2, 16]);
    // A value-model regression of every position's score onto a target, +1 for row 0 and -1 for
    // row 1. (A pairwise reward loss -log sigmoid(r_0 - r_1) would not do here: it is blind to
    // anything that shifts both scores alike, so ln_f.bias and score_head.bias get exactly zero.)
    let target = Tensor::new(&[[1f32], [-1f32]], &Device::Cpu).unwrap(); // (2, 1)
    let loss = scores
        .broadcast_sub(&target)
        .unwrap()
        .sqr()
        .unwrap()
        .mean_all()
        .unwrap();
    let grads = loss.backward().unwrap();
    let skip: &[&str] = if cfg.tie_embeddings {
        &[]
    } else {
        &["lm_head.weight"]
    };
    assert_every_param_learns(&params, &grads, skip);
}

#[test]
fn every_parameter_learns_under_a_scalar_head() {
    scalar_head_gradients(&GptConfig::preset("tiny", 256).unwrap());
    scalar_head_gradients(&GptConfig::preset("llama-tiny", 256).unwrap());
}

/// A model built in bf16 from f32 variables trains them through the cast: its loss is close to
/// the f32 loss and every f32 variable gets a gradient.
#[test]
fn bf16_model_trains_f32_variables() {
    let cfg = common::llama_cfg();
    let params = common::scaled_params(&cfg, 5);
    let ids = common::random_ids(2, 8, cfg.vocab_size, 4);
    let targets = common::random_ids(2, 8, cfg.vocab_size, 5);
    let loss32 = common::model(&cfg, &params)
        .loss(&ids, &targets)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let model16 = Gpt::new(&cfg, params.var_builder(DType::BF16)).unwrap();
    let loss16 = model16.loss(&ids, &targets).unwrap();
    assert_eq!(loss16.dtype(), DType::F32);
    let l16 = loss16.to_scalar::<f32>().unwrap();
    // bf16 keeps 8 bits of mantissa; the loss (about 5) moves by a few hundredths at most.
    assert!((l16 - loss32).abs() < 0.1, "bf16 {l16} vs f32 {loss32}");
    let grads = loss16.backward().unwrap();
    assert_every_param_learns(&params, &grads, &[]);
    let g = grads
        .get(params.get("wte.weight").unwrap().as_tensor())
        .unwrap();
    assert_eq!(g.dtype(), DType::F32);
}

/// A model built with `frozen_var_builder` records no graph back to the variables.
#[test]
fn frozen_var_builder_records_no_gradient() {
    let cfg = common::gpt2_cfg();
    let params = Params::init(&cfg, 1, &Device::Cpu).unwrap();
    let model = Gpt::new(&cfg, params.frozen_var_builder(DType::F32)).unwrap();
    let ids = common::random_ids(1, 4, cfg.vocab_size, 1);
    let loss = model.loss(&ids, &ids).unwrap();
    let grads = loss.backward().unwrap();
    for (name, var) in params.iter() {
        assert!(
            grads.get(var.as_tensor()).is_none(),
            "{name} has a gradient"
        );
    }
    // Same numbers as the trainable model.
    let trainable = common::model(&cfg, &params).loss(&ids, &ids).unwrap();
    assert_eq!(
        loss.to_scalar::<f32>().unwrap(),
        trainable.to_scalar::<f32>().unwrap()
    );
}

/// bf16 linears (autocast) train the same model: every parameter learns, the loss agrees with
/// f32 to bf16 accuracy, and every gradient points the same way as f32's (cosine > 0.99).
#[test]
fn bf16_linears_match_f32_to_bf16_accuracy() {
    use chatforge_model::ops::MatmulPrecision;
    for preset in ["tiny", "llama-tiny"] {
        let cfg = GptConfig::preset(preset, 512).unwrap();
        let params = Params::init(&cfg, 7, &Device::Cpu).unwrap();
        let f32_model = Gpt::new(&cfg, params.var_builder(DType::F32)).unwrap();
        let bf16_model = f32_model
            .clone()
            .with_matmul_precision(MatmulPrecision::Bf16);
        assert_eq!(bf16_model.matmul_precision(), MatmulPrecision::Bf16);
        let ids = common::random_ids(2, 16, cfg.vocab_size, 1);
        let targets = common::random_ids(2, 16, cfg.vocab_size, 2);
        let run = |m: &Gpt| {
            let loss = m.loss(&ids, &targets).unwrap();
            let grads = loss.backward().unwrap();
            (loss.to_scalar::<f32>().unwrap(), grads)
        };
        let (l32, g32) = run(&f32_model);
        let (l16, g16) = run(&bf16_model);
        assert!(
            (l32 - l16).abs() < 1e-2 * l32.abs(),
            "{preset}: loss {l32} vs {l16}"
        );
        assert_ne!(l32, l16, "{preset}: bf16 changed nothing");
        assert_every_param_learns(&params, &g16, &[]);
        let v = |g: &GradStore, var: &candle_core::Var| -> Vec<f64> {
            let t = g.get(var.as_tensor()).unwrap().flatten_all().unwrap();
            t.to_dtype(DType::F64).unwrap().to_vec1().unwrap()
        };
        let norm = |x: &[f64]| x.iter().map(|v| v * v).sum::<f64>().sqrt();
        let total = params
            .iter()
            .map(|(_, var)| norm(&v(&g32, var)).powi(2))
            .sum::<f64>()
            .sqrt();
        for (name, var) in params.iter() {
            let (a, b) = (v(&g32, var), v(&g16, var));
            let diff: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x - y).collect();
            // Relative to the tensor's own gradient, or (for gradients that are zero up to
            // round-off, like the key bias's under softmax) to the whole model's.
            let (d, n) = (norm(&diff), norm(&a));
            assert!(
                d <= 0.05 * n || d <= 1e-4 * total,
                "{preset}: gradient of {name}: |bf16 - f32| = {d}, |f32| = {n}, total {total}"
            );
        }
    }
}
