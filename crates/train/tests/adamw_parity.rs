//! TESTING.md family 2, the optimizer half: 10 AdamW steps on the fixture's batch must give
//! PyTorch's loss trajectory (`scripts/reference/gpt_fixture.py` writes `losses_10` with
//! `torch.optim.AdamW`, decay only on tensors with ≥ 2 dims). Tolerance 1e-4 per step.

use std::collections::BTreeMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use chatforge_model::ops::IGNORE_INDEX;
use chatforge_model::{Gpt, GptConfig, Params};
use chatforge_train::artifact::var_map;
use chatforge_train::optim::{accumulate_grads, AdamW, FlatGrads, OptimConfig};

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../model/tests/fixtures")
}

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

fn check_trajectory(name: &str) {
    let dir = fixture_dir();
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap())
            .unwrap();
    let cfg: GptConfig = serde_json::from_value(meta["config"].clone()).unwrap();
    let all = candle_core::safetensors::load(dir.join(format!("{name}.safetensors")), &Device::Cpu)
        .unwrap();
    let weights: BTreeMap<String, Tensor> = Params::expected_shapes(&cfg)
        .keys()
        .map(|k| (k.clone(), all[k].clone()))
        .collect();
    let params = Params::from_tensors(weights).unwrap();
    let model = Gpt::new(&cfg, params.var_builder(DType::F32)).unwrap();
    let vars = var_map(&params);
    let x = ids_u32(&all["x"]);
    let y = ids_u32(&all["y"]);

    let a = &meta["adamw"];
    assert!(a["grad_clip"].is_null());
    let ocfg = OptimConfig {
        lr: a["lr"].as_f64().unwrap(),
        beta1: a["beta1"].as_f64().unwrap(),
        beta2: a["beta2"].as_f64().unwrap(),
        eps: a["eps"].as_f64().unwrap(),
        weight_decay: a["weight_decay"].as_f64().unwrap(),
        grad_clip: 0.0,
        ..OptimConfig::default()
    };
    // The set of decayed tensors is the fixture's, not just our rule restated.
    let decayed: Vec<String> = meta["decayed_params"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let ours: Vec<String> = vars
        .iter()
        .filter(|(_, v)| v.rank() >= 2)
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(ours, decayed);

    let expected: Vec<f64> = meta["losses_10"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let mut opt = AdamW::new(ocfg.clone());
    let mut worst = 0.0f64;
    for (step, want) in expected.iter().enumerate() {
        let loss = model.loss(&x, &y).unwrap();
        let got = loss.to_scalar::<f32>().unwrap() as f64;
        let err = (got - want).abs();
        worst = worst.max(err);
        assert!(
            err <= 1e-4,
            "{name}: step {step} loss {got} vs PyTorch {want} (|Δ| = {err:e})"
        );
        let g = loss.backward().unwrap();
        let mut grads = FlatGrads::new();
        accumulate_grads(&vars, &g, 1.0, &mut grads).unwrap();
        opt.step(&vars, &grads, ocfg.lr).unwrap();
    }
    eprintln!("{name}: 10-step AdamW loss trajectory max |Δ| vs PyTorch = {worst:e}");
}

#[test]
fn gpt2_style_ten_adamw_steps_match_pytorch() {
    check_trajectory("gpt2_tiny");
}

#[test]
fn llama_style_ten_adamw_steps_match_pytorch() {
    check_trajectory("llama_tiny");
}
