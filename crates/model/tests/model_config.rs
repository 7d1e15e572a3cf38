//! `GptConfig`: validation, JSON format, presets.

use chatforge_model::{Error, GptConfig, MlpKind, NormKind, Params, PositionKind};

fn rejects(mut edit: impl FnMut(&mut GptConfig), base: &str, needle: &str) {
    let mut cfg = GptConfig::preset(base, 100).unwrap();
    edit(&mut cfg);
    match cfg.validate() {
        Err(Error::Config(msg)) => assert!(msg.contains(needle), "`{msg}` lacks `{needle}`"),
        other => panic!("expected a config error mentioning {needle}, got {other:?}"),
    }
}

#[test]
fn validate_rejects_inconsistent_configs() {
    rejects(|c| c.n_embd = 130, "tiny", "multiple of n_head");
    rejects(|c| c.n_kv_head = 3, "tiny", "multiple of n_kv_head");
    rejects(|c| c.n_layer = 0, "tiny", "n_layer");
    rejects(|c| c.vocab_size = 0, "tiny", "vocab_size");
    rejects(|c| c.context_length = 0, "tiny", "context_length");
    rejects(
        |c| c.intermediate_size = 0,
        "llama-tiny",
        "intermediate_size",
    );
    rejects(|c| c.n_kv_head = 0, "llama-tiny", "n_kv_head");
    rejects(|c| c.norm_eps = 0.0, "tiny", "norm_eps");
    rejects(|c| c.norm_eps = f64::NAN, "tiny", "norm_eps");
    // RoPE needs an even head_dim: 4 heads of 33 ...
    rejects(|c| c.n_embd = 132, "llama-tiny", "even head_dim");
    rejects(|c| c.rope_theta = -1.0, "llama-tiny", "rope_theta");
    // ... while learned positions do not care about either.
    let mut ok = GptConfig::preset("tiny", 100).unwrap();
    ok.n_embd = 132;
    ok.rope_theta = -1.0;
    ok.validate().unwrap();
}

#[test]
fn json_round_trip_uses_lowercase_names_and_rejects_unknown_fields() {
    for name in GptConfig::preset_names() {
        let cfg = GptConfig::preset(name, 321).unwrap();
        let text = serde_json::to_string(&cfg).unwrap();
        let back: GptConfig = serde_json::from_str(&text).unwrap();
        assert_eq!(back, cfg);
    }
    let llama = serde_json::to_value(GptConfig::preset("llama-tiny", 10).unwrap()).unwrap();
    assert_eq!(llama["norm"], "rmsnorm");
    assert_eq!(llama["positions"], "rope");
    assert_eq!(llama["mlp"], "swiglu");
    let gpt2 = serde_json::to_value(GptConfig::preset("tiny", 10).unwrap()).unwrap();
    assert_eq!(gpt2["norm"], "layernorm");
    assert_eq!(gpt2["positions"], "learned");
    assert_eq!(gpt2["mlp"], "gelu");

    let mut typo = gpt2.clone();
    typo["n_heads"] = 4.into();
    let err = serde_json::from_value::<GptConfig>(typo).unwrap_err();
    assert!(err.to_string().contains("n_heads"), "{err}");

    let mut bad_enum = gpt2.clone();
    bad_enum["norm"] = "batchnorm".into();
    assert!(serde_json::from_value::<GptConfig>(bad_enum).is_err());

    let mut missing = gpt2;
    missing.as_object_mut().unwrap().remove("bias");
    assert!(serde_json::from_value::<GptConfig>(missing).is_err());
}

#[test]
fn load_reads_validates_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    let cfg = GptConfig::preset("llama-tiny", 77).unwrap();
    std::fs::write(&path, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    assert_eq!(GptConfig::load(&path).unwrap(), cfg);

    std::fs::write(&path, "{\"vocab_size\": 3,").unwrap();
    let err = GptConfig::load(&path).unwrap_err();
    assert!(matches!(err, Error::Json { .. }));
    assert!(err.to_string().contains("config.json"), "{err}");

    let mut bad = cfg.clone();
    bad.n_kv_head = 3;
    std::fs::write(&path, serde_json::to_string(&bad).unwrap()).unwrap();
    assert!(matches!(GptConfig::load(&path), Err(Error::Config(_))));

    let err = GptConfig::load(&dir.path().join("absent.json")).unwrap_err();
    assert!(matches!(err, Error::Io { .. }));
    assert!(err.to_string().contains("absent.json"), "{err}");
}

#[test]
fn presets_have_the_advertised_shape_and_size() {
    // (name, low, high) in parameters at vocab_size 2048; the doc of `GptConfig::preset` says
    // tiny ~1.1M, default ~5.3M, small ~10.7M, gpt2-bench ~11.5M, llama-tiny ~1.3M.
    let expected = [
        ("tiny", 0.9e6, 1.3e6),
        ("default", 4.5e6, 6.0e6),
        ("small", 9.0e6, 12.0e6),
        ("gpt2-bench", 10.5e6, 12.5e6),
        ("llama-tiny", 1.0e6, 1.5e6),
    ];
    assert_eq!(GptConfig::preset_names().len(), expected.len());
    for (name, lo, hi) in expected {
        let cfg = GptConfig::preset(name, 2048).unwrap();
        cfg.validate().unwrap();
        let n = cfg.num_params();
        println!("preset {name}: {n} parameters");
        assert!((lo..=hi).contains(&(n as f64)), "{name}: {n}");
    }
    assert!(GptConfig::preset("huge", 2048).is_none());

    let bench = GptConfig::preset("gpt2-bench", 50257).unwrap();
    assert_eq!(
        (
            bench.n_layer,
            bench.n_embd,
            bench.n_head,
            bench.context_length
        ),
        (6, 384, 6, 256)
    );
    assert_eq!(
        (
            bench.norm,
            bench.positions,
            bench.mlp,
            bench.tie_embeddings,
            bench.bias
        ),
        (
            NormKind::LayerNorm,
            PositionKind::Learned,
            MlpKind::Gelu,
            true,
            true
        )
    );
    assert_eq!(bench.head_dim(), 64);

    let llama = GptConfig::preset("llama-tiny", 2048).unwrap();
    assert_eq!(
        (
            llama.norm,
            llama.positions,
            llama.mlp,
            llama.tie_embeddings,
            llama.bias
        ),
        (
            NormKind::RmsNorm,
            PositionKind::Rope,
            MlpKind::SwiGlu,
            false,
            false
        )
    );
    assert!(llama.n_kv_head < llama.n_head);
}

/// `num_params` counted by hand for the `tiny` preset with vocab 2048 (GPT-2 formula).
#[test]
fn num_params_matches_a_hand_count() {
    let cfg = GptConfig::preset("tiny", 2048).unwrap();
    let (v, t, c, l) = (2048, 256, 128, 4);
    // per block: 2 LayerNorms (w, b), q/k/v/o (C*C + C each), fc (4C*C + 4C), proj (C*4C + C)
    let block = 2 * 2 * c + 4 * (c * c + c) + (4 * c * c + 4 * c) + (4 * c * c + c);
    let total = v * c + t * c + l * block + 2 * c;
    assert_eq!(cfg.num_params(), total);
    assert_eq!(total, 1_088_256);
    // wte, wpe, ln_f (w, b), and per block 2 norms + 6 linears, each with a bias.
    assert_eq!(Params::expected_shapes(&cfg).len(), 4 + 4 * 16);
}
