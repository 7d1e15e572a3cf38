//! Helpers shared by the model's integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use chatforge_data::Rng;
use chatforge_model::{Gpt, GptConfig, Params};

/// A GPT-2 style config small enough for fast tests (from the `tiny` preset, shorter context).
pub fn gpt2_cfg() -> GptConfig {
    let mut cfg = GptConfig::preset("tiny", 96).unwrap();
    cfg.context_length = 24;
    cfg.n_layer = 2;
    cfg
}

/// A Llama style config (RMSNorm, RoPE, SwiGLU, GQA, untied) for fast tests.
pub fn llama_cfg() -> GptConfig {
    let mut cfg = GptConfig::preset("llama-tiny", 96).unwrap();
    cfg.context_length = 24;
    cfg.n_layer = 2;
    cfg
}

/// Parameters at a scale where every op visibly matters (GPT-2's N(0, 0.02) init keeps the model
/// nearly linear and its logits nearly uniform, which would hide position or masking bugs):
/// matrices N(0, 1/fan_in), embeddings N(0, 0.3^2), norm weights 1 + N(0, 0.1^2),
/// biases N(0, 0.1^2).
pub fn scaled_params(cfg: &GptConfig, seed: u64) -> Params {
    let mut rng = Rng::new(seed);
    let mut out = BTreeMap::new();
    for (name, shape) in Params::expected_shapes(cfg) {
        let n: usize = shape.iter().product();
        let (mean, std) = if name.ends_with(".bias") {
            (0.0, 0.1)
        } else if shape.len() == 1 {
            (1.0, 0.1)
        } else if matches!(
            name.as_str(),
            "wte.weight" | "wpe.weight" | "lm_head.weight"
        ) {
            (0.0, 0.3)
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

/// A model over `params` in f32.
pub fn model(cfg: &GptConfig, params: &Params) -> Gpt {
    Gpt::new(cfg, params.var_builder(DType::F32)).unwrap()
}

/// Random token ids `(B, T)` below `vocab`.
pub fn random_ids(b: usize, t: usize, vocab: usize, seed: u64) -> Tensor {
    let mut rng = Rng::new(seed);
    let ids: Vec<u32> = (0..b * t).map(|_| rng.index(vocab) as u32).collect();
    Tensor::from_vec(ids, (b, t), &Device::Cpu).unwrap()
}

/// Largest absolute elementwise difference.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}
