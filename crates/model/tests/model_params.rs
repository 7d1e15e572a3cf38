//! `Params`: names, initialisation, loading checks.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use chatforge_model::{Error, Gpt, GptConfig, Params, ScalarHead};

fn values(p: &Params, name: &str) -> Vec<f32> {
    p.get(name)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn mean_std(v: &[f32]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().map(|x| *x as f64).sum::<f64>() / n;
    let var = v.iter().map(|x| (*x as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

#[test]
fn names_mirror_the_module_tree() {
    let llama = GptConfig::preset("llama-tiny", 50).unwrap();
    let names: Vec<String> = Params::expected_shapes(&llama)
        .into_keys()
        .filter(|k| !k.starts_with("blocks.") || k.starts_with("blocks.0."))
        .collect();
    assert_eq!(
        names,
        [
            "blocks.0.attn.k_proj.weight",
            "blocks.0.attn.o_proj.weight",
            "blocks.0.attn.q_proj.weight",
            "blocks.0.attn.v_proj.weight",
            "blocks.0.ln_1.weight",
            "blocks.0.ln_2.weight",
            "blocks.0.mlp.down_proj.weight",
            "blocks.0.mlp.gate_proj.weight",
            "blocks.0.mlp.up_proj.weight",
            "lm_head.weight",
            "ln_f.weight",
            "wte.weight",
        ]
    );
    let shapes = Params::expected_shapes(&llama);
    assert_eq!(shapes["blocks.3.attn.k_proj.weight"], vec![64, 128]); // 2 kv heads of 32
    assert_eq!(shapes["blocks.3.mlp.down_proj.weight"], vec![128, 352]);

    let gpt2 = Params::expected_shapes(&GptConfig::preset("tiny", 50).unwrap());
    for key in [
        "wpe.weight",
        "blocks.0.ln_1.bias",
        "blocks.1.attn.q_proj.bias",
        "blocks.2.mlp.fc.weight",
        "blocks.3.mlp.proj.bias",
        "ln_f.bias",
    ] {
        assert!(gpt2.contains_key(key), "{key}");
    }
    assert!(!gpt2.contains_key("lm_head.weight"));
    assert_eq!(gpt2["wpe.weight"], vec![256, 128]);
    assert_eq!(gpt2["blocks.0.mlp.fc.weight"], vec![512, 128]);
}

#[test]
fn init_follows_gpt2_and_is_reproducible() {
    let cfg = GptConfig::preset("tiny", 2048).unwrap();
    let a = Params::init(&cfg, 42, &Device::Cpu).unwrap();
    let b = Params::init(&cfg, 42, &Device::Cpu).unwrap();
    let c = Params::init(&cfg, 43, &Device::Cpu).unwrap();
    assert_eq!(a.num_params(), cfg.num_params());
    for (name, _) in a.iter() {
        assert_eq!(values(&a, name), values(&b, name), "{name}");
    }
    assert_ne!(values(&a, "wte.weight"), values(&c, "wte.weight"));

    let (m, s) = mean_std(&values(&a, "wte.weight"));
    assert!(m.abs() < 1e-3 && (s - 0.02).abs() < 1e-3, "wte {m} {s}");
    let (_, s) = mean_std(&values(&a, "blocks.1.attn.q_proj.weight"));
    assert!((s - 0.02).abs() < 1e-3, "q_proj {s}");
    // Residual out-projections: 0.02 / sqrt(2 * 4 layers) = 0.00707.
    let scaled = 0.02 / 8f64.sqrt();
    for name in ["blocks.0.attn.o_proj.weight", "blocks.3.mlp.proj.weight"] {
        let (_, s) = mean_std(&values(&a, name));
        assert!((s - scaled).abs() < 5e-4, "{name} {s}");
    }
    assert!(values(&a, "blocks.2.mlp.fc.bias").iter().all(|x| *x == 0.0));
    assert!(values(&a, "blocks.2.ln_2.weight").iter().all(|x| *x == 1.0));
    assert!(values(&a, "ln_f.bias").iter().all(|x| *x == 0.0));
    // Different tensors draw from different streams.
    assert_ne!(
        values(&a, "blocks.0.attn.q_proj.weight"),
        values(&a, "blocks.0.attn.k_proj.weight")
    );

    // Llama: down_proj is a residual out-projection too; the untied head is initialised.
    let llama = GptConfig::preset("llama-tiny", 2048).unwrap();
    let p = Params::init(&llama, 1, &Device::Cpu).unwrap();
    let (_, s) = mean_std(&values(&p, "blocks.0.mlp.down_proj.weight"));
    assert!((s - scaled).abs() < 5e-4, "down_proj {s}");
    let (_, s) = mean_std(&values(&p, "lm_head.weight"));
    assert!((s - 0.02).abs() < 1e-3);
}

#[test]
fn from_tensors_and_check_name_the_offending_key() {
    let cfg = GptConfig::preset("llama-tiny", 40).unwrap();
    let expected = Params::expected_shapes(&cfg);
    let good = Params::init(&cfg, 0, &Device::Cpu).unwrap().tensors();

    let p = Params::from_tensors(good.clone()).unwrap();
    p.check(&expected).unwrap();
    // The copy does not alias the source.
    p.get("wte.weight")
        .unwrap()
        .set(&Tensor::zeros((40, 128), DType::F32, &Device::Cpu).unwrap())
        .unwrap();
    assert_ne!(
        good["wte.weight"]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap(),
        vec![0f32; 40 * 128]
    );

    let mut missing = good.clone();
    missing.remove("blocks.1.ln_2.weight");
    let err = Params::from_tensors(missing)
        .unwrap()
        .check(&expected)
        .unwrap_err();
    assert!(
        matches!(&err, Error::MissingKey { key } if key == "blocks.1.ln_2.weight"),
        "{err}"
    );

    let mut extra = good.clone();
    extra.insert(
        "blocks.9.attn.q_proj.weight".into(),
        good["wte.weight"].clone(),
    );
    let err = Params::from_tensors(extra)
        .unwrap()
        .check(&expected)
        .unwrap_err();
    assert!(matches!(&err, Error::UnexpectedKey { key } if key == "blocks.9.attn.q_proj.weight"));

    let mut misshapen = good.clone();
    misshapen.insert(
        "blocks.0.attn.v_proj.weight".into(),
        Tensor::zeros((128, 128), DType::F32, &Device::Cpu).unwrap(),
    );
    let err = Params::from_tensors(misshapen)
        .unwrap()
        .check(&expected)
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("blocks.0.attn.v_proj.weight")
            && msg.contains("[64, 128]")
            && msg.contains("[128, 128]"),
        "{msg}"
    );

    let mut ints = BTreeMap::new();
    ints.insert(
        "wte.weight".to_string(),
        Tensor::zeros((2, 2), DType::U32, &Device::Cpu).unwrap(),
    );
    assert!(matches!(
        Params::from_tensors(ints),
        Err(Error::DType { .. })
    ));

    // Building the model from incomplete parameters fails instead of panicking.
    let mut incomplete = good;
    incomplete.remove("ln_f.weight");
    let p = Params::from_tensors(incomplete).unwrap();
    assert!(Gpt::new(&cfg, p.var_builder(DType::F32)).is_err());
}

#[test]
fn heads_extend_the_language_model() {
    let cfg = GptConfig::preset("tiny", 40).unwrap();
    let head = ScalarHead::expected_shapes(&cfg);
    let mut p = Params::init(&cfg, 3, &Device::Cpu).unwrap();
    let lm_only = p.clone();
    p.extend(Params::init_with_shapes(&head, cfg.n_layer, 3, &Device::Cpu).unwrap())
        .unwrap();
    let mut all = Params::expected_shapes(&cfg);
    all.extend(head.clone());
    p.check(&all).unwrap();
    // Adding the head changes none of the language model's values.
    for (name, _) in lm_only.iter() {
        assert_eq!(values(&lm_only, name), values(&p, name));
    }
    let (_, s) = mean_std(&values(&p, "score_head.weight"));
    assert!(s > 0.01 && s < 0.03);
    assert_eq!(values(&p, "score_head.bias"), vec![0.0]);

    let dup = Params::init_with_shapes(&head, cfg.n_layer, 4, &Device::Cpu).unwrap();
    assert!(matches!(p.extend(dup), Err(Error::DuplicateKey { .. })));
}
