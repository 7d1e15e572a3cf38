//! Whole-model parity against PyTorch (TESTING.md family 2, llm.c `test_gpt2.c` style).
//!
//! `scripts/reference/gpt_fixture.py` builds the same transformer in plain PyTorch and writes, for a
//! GPT-2 style and a Llama style model, the weights under our parameter names, a fixed batch, the
//! logits, the loss and the gradient of every parameter. Here we load the weights into our model
//! and compare, in f32:
//! - logits: max |ours - ref| <= 1e-3,
//! - loss: |ours - ref| <= 1e-5,
//! - every gradient, elementwise: |ours - ref| <= 1e-5 + 1e-3 |ref|, and every parameter must
//!   have one.
//!
//! (The fixture's 10-step AdamW losses, `losses_10`, are checked by the optimizer's tests in
//! `chatforge-train`.)

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use chatforge_model::ops::IGNORE_INDEX;
use chatforge_model::{Gpt, GptConfig, Params};

const LOGITS_ATOL: f32 = 1e-3;
const LOSS_ATOL: f32 = 1e-5;
const GRAD_ATOL: f32 = 1e-5;
const GRAD_RTOL: f32 = 1e-3;

struct Fixture {
    cfg: GptConfig,
    meta: serde_json::Value,
    tensors: HashMap<String, Tensor>,
}

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn load_fixture(name: &str) -> Fixture {
    let dir = fixture_dir();
    let text = std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap();
    let meta: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cfg: GptConfig = serde_json::from_value(meta["config"].clone()).unwrap();
    cfg.validate().unwrap();
    let tensors =
        candle_core::safetensors::load(dir.join(format!("{name}.safetensors")), &Device::Cpu)
            .unwrap();
    Fixture { cfg, meta, tensors }
}

/// int64 ids from the fixture as u32, with PyTorch's ignored target (-1) mapped to IGNORE_INDEX.
fn ids_u32(t: &Tensor) -> Tensor {
    let rows: Vec<Vec<i64>> = t.to_vec2().unwrap();
    let (b, tt) = (rows.len(), rows[0].len());
    let flat: Vec<u32> = rows
        .into_iter()
        .flatten()
        .map(|v| if v < 0 { IGNORE_INDEX } else { v as u32 })
        .collect();
    Tensor::from_vec(flat, (b, tt), &Device::Cpu).unwrap()
}

fn check_parity(name: &str) {
    let fx = load_fixture(name);
    let cfg = &fx.cfg;
    let expected = Params::expected_shapes(cfg);

    // The fixture holds exactly our parameters plus the batch, outputs and gradients.
    let mut weights = BTreeMap::new();
    for (k, t) in &fx.tensors {
        let is_data = matches!(k.as_str(), "x" | "y" | "logits" | "loss") || k.starts_with("grad.");
        if !is_data {
            assert!(expected.contains_key(k), "{name}: unexpected tensor {k}");
            weights.insert(k.clone(), t.clone());
        }
    }
    let params = Params::from_tensors(weights).unwrap();
    params.check(&expected).unwrap();
    let model = Gpt::new(cfg, params.var_builder(DType::F32)).unwrap();

    let x = ids_u32(&fx.tensors["x"]);
    let y = ids_u32(&fx.tensors["y"]);
    assert_eq!(x.dims(), &[2, 16]);

    // Logits.
    let logits = model.forward(&x, None).unwrap();
    let logits_err = common::max_abs_diff(&logits, &fx.tensors["logits"]);

    // Loss.
    let loss = model.loss(&x, &y).unwrap();
    let ours = loss.to_scalar::<f32>().unwrap();
    let reference = fx.tensors["loss"].to_scalar::<f32>().unwrap();
    let json_loss = fx.meta["loss"].as_f64().unwrap() as f32;
    assert_eq!(reference, json_loss, "{name}: fixture's two losses differ");
    let loss_err = (ours - reference).abs();

    // Gradients.
    let grads = loss.backward().unwrap();
    let mut worst_grad_abs = 0f32;
    let mut worst_grad_ratio = 0f32; // max over elements of |err| / (atol + rtol |ref|)
    let mut worst_name = String::new();
    for (pname, var) in params.iter() {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{name}: no gradient for {pname}"));
        let r = &fx.tensors[&format!("grad.{pname}")];
        assert_eq!(g.dims(), r.dims(), "{name}: grad shape of {pname}");
        let err = (g - r).unwrap().abs().unwrap();
        let bound = ((r.abs().unwrap() * GRAD_RTOL as f64).unwrap() + GRAD_ATOL as f64).unwrap();
        let ratio = err
            .div(&bound)
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let abs = common::max_abs_diff(g, r);
        worst_grad_abs = worst_grad_abs.max(abs);
        if ratio > worst_grad_ratio {
            worst_grad_ratio = ratio;
            worst_name = pname.to_string();
        }
    }
    println!(
        "{name}: logits max abs err {logits_err:.3e}, loss err {loss_err:.3e} (loss {ours:.6}), \
         grads max abs err {worst_grad_abs:.3e}, worst err/tolerance {worst_grad_ratio:.3} ({worst_name})"
    );
    assert!(logits_err <= LOGITS_ATOL, "{name}: logits err {logits_err}");
    assert!(loss_err <= LOSS_ATOL, "{name}: loss err {loss_err}");
    assert!(
        worst_grad_ratio <= 1.0,
        "{name}: gradient of {worst_name} off by {worst_grad_ratio}x the tolerance"
    );
    assert_eq!(
        params.len(),
        expected.len(),
        "{name}: every parameter was checked"
    );
}

#[test]
fn gpt2_style_matches_pytorch() {
    check_parity("gpt2_tiny");
}

#[test]
fn llama_style_matches_pytorch() {
    check_parity("llama_tiny");
}

/// The fixture's optimizer settings are what the train crate's 10-step test expects to read.
#[test]
fn fixtures_carry_the_adamw_trajectory() {
    for name in ["gpt2_tiny", "llama_tiny"] {
        let fx = load_fixture(name);
        let losses: Vec<f64> = fx.meta["losses_10"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(losses.len(), 10);
        assert!((losses[0] as f32 - fx.meta["loss"].as_f64().unwrap() as f32).abs() < 1e-6);
        assert!(losses[9] < losses[0], "{name}: AdamW reduced the loss");
        let adamw = &fx.meta["adamw"];
        assert_eq!(adamw["lr"].as_f64(), Some(1e-3));
        assert_eq!(adamw["beta2"].as_f64(), Some(0.95));
        assert_eq!(adamw["weight_decay"].as_f64(), Some(0.1));
    }
}
