//! Pretraining end to end on a small built-in world: the loss falls, runs are deterministic
//! (family 5), an interrupted run resumes bit-exactly (family 6), and a resumed run refuses a
//! changed configuration.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use candle_core::Device;
use chatforge_data::world::{write_world, World, WorldConfig};
use chatforge_tokenizer::{Tokenizer, TrainConfig};
use chatforge_train::pretrain::{run, PretrainConfig, PretrainPaths, PretrainSummary};
use chatforge_train::{Error, TrainEvent};

/// A world corpus and a 320-token tokenizer in `dir`.
fn setup(dir: &Path) -> PretrainPaths {
    let world = World::generate(&WorldConfig {
        seed: 5,
        ..WorldConfig::default()
    });
    let files = write_world(&world, &dir.join("world"), 150_000, 5).unwrap();
    let text = std::fs::read_to_string(&files.train).unwrap();
    let tok = Tokenizer::train(&[text.as_str()], &TrainConfig::with_vocab_size(320)).unwrap();
    let tok_path = dir.join("tok.json");
    tok.save(&tok_path).unwrap();
    PretrainPaths {
        train: vec![files.train],
        val: vec![files.val],
        tokenizer: tok_path,
        out: dir.join("run"),
    }
}

fn small_config(steps: u64) -> PretrainConfig {
    let mut cfg = PretrainConfig {
        preset: "tiny".into(),
        context_length: Some(32),
        batch_size: 4,
        grad_accum: 2,
        steps,
        eval_every: 5,
        eval_rows: 8,
        sample_every: 0,
        checkpoint_every: 3,
        seed: 7,
        ..PretrainConfig::default()
    };
    cfg.optim.warmup_steps = 2;
    cfg.optim.lr = 3e-3;
    cfg
}

/// Runs and collects (step, loss bits) of every step.
fn run_collect(
    cfg: &PretrainConfig,
    paths: &PretrainPaths,
    resume: bool,
) -> (Result<PretrainSummary, Error>, Vec<(u64, u64)>) {
    let mut losses = Vec::new();
    let r = run(cfg, paths, &Device::Cpu, resume, &mut |e| {
        if let TrainEvent::Step(m) = e {
            losses.push((m.step, m.loss.to_bits()));
        }
    });
    (r, losses)
}

fn weights(dir: &Path) -> Vec<u8> {
    let ck = chatforge_model::checkpoint::latest_checkpoint(dir)
        .unwrap()
        .unwrap();
    ck.read("model.safetensors").unwrap()
}

fn metrics_steps(path: &Path) -> Vec<u64> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("kind").is_none())
        .map(|v| v["step"].as_u64().unwrap())
        .collect()
}

#[test]
fn interrupted_run_resumes_bit_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let paths = setup(tmp.path());
    let cfg = small_config(8);

    // Straight through.
    let straight = PretrainPaths {
        out: tmp.path().join("straight"),
        ..paths.clone()
    };
    let (r, losses_straight) = run_collect(&cfg, &straight, false);
    r.unwrap();

    // Killed during step 5 (after the step-3 checkpoint, before the step-6 one): the panic
    // stands in for a crash — nothing after step 3 was saved.
    let crashed = PretrainPaths {
        out: tmp.path().join("crashed"),
        ..paths.clone()
    };
    let mut first = Vec::new();
    let died = catch_unwind(AssertUnwindSafe(|| {
        run(&cfg, &crashed, &Device::Cpu, false, &mut |e| {
            if let TrainEvent::Step(m) = e {
                first.push((m.step, m.loss.to_bits()));
                if m.step == 5 {
                    panic!("simulated crash");
                }
            }
        })
        .map(|_| ())
        .map_err(|e| e.to_string())
    }));
    assert!(died.is_err());
    assert_eq!(
        metrics_steps(&crashed.out.join("metrics.jsonl")),
        vec![1, 2, 3, 4, 5]
    );

    let (r, resumed) = run_collect(&cfg, &crashed, true);
    let summary = r.unwrap();
    assert_eq!(summary.steps, 8);
    // Steps 4..8 are recomputed with exactly the same losses, bit for bit.
    assert_eq!(resumed.first().map(|s| s.0), Some(4));
    assert_eq!(&losses_straight[3..], &resumed[..]);
    assert_eq!(&losses_straight[..5], &first[..]);
    // Same final weights, byte for byte, and one clean history in metrics.jsonl.
    assert_eq!(weights(&straight.out), weights(&crashed.out));
    assert_eq!(
        metrics_steps(&crashed.out.join("metrics.jsonl")),
        (1..=8).collect::<Vec<_>>()
    );
}

#[test]
fn same_seed_same_weights_different_seed_differs_and_loss_falls() {
    let tmp = tempfile::tempdir().unwrap();
    let paths = setup(tmp.path());
    let mut cfg = small_config(12);
    cfg.checkpoint_every = 100;
    let at = |name: &str| PretrainPaths {
        out: tmp.path().join(name),
        ..paths.clone()
    };
    let (a, la) = run_collect(&cfg, &at("a"), false);
    let (b, lb) = run_collect(&cfg, &at("b"), false);
    let a = a.unwrap();
    b.unwrap();
    assert_eq!(la, lb);
    assert_eq!(weights(&at("a").out), weights(&at("b").out));
    cfg.seed = 8;
    let (c, _) = run_collect(&cfg, &at("c"), false);
    c.unwrap();
    assert_ne!(weights(&at("a").out), weights(&at("c").out));
    // 12 steps on a 320-token vocabulary: the held-out loss must fall well below ln(320) = 5.77.
    let first = a.val_loss_first.unwrap();
    assert!(first > 5.0, "{first}");
    assert!(
        a.val_loss_last < first - 1.0,
        "{first} -> {}",
        a.val_loss_last
    );
    assert!(a.val_bpb_last.is_finite() && a.val_bpb_last > 0.0);
}

#[test]
fn resume_refuses_a_changed_configuration_and_bad_settings_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let paths = setup(tmp.path());
    let cfg = small_config(3);
    run_collect(&cfg, &paths, false).0.unwrap();
    let mut changed = cfg.clone();
    changed.optim.lr = 1e-2;
    let err = run_collect(&changed, &paths, true)
        .0
        .unwrap_err()
        .to_string();
    assert!(err.contains("optim"), "{err}");
    // Only the length may change: extending the run works.
    let mut longer = cfg.clone();
    longer.steps = 4;
    assert_eq!(run_collect(&longer, &paths, true).0.unwrap().steps, 4);

    let mut bad = cfg.clone();
    bad.preset = "huge-nonsense".into();
    let err = run_collect(&bad, &paths, false).0.unwrap_err().to_string();
    assert!(err.contains("unknown preset"), "{err}");
    let mut bad = cfg;
    bad.batch_size = 0;
    assert!(run_collect(&bad, &paths, false).0.is_err());
    let missing = PretrainPaths {
        tokenizer: PathBuf::from("/nonexistent/tok.json"),
        ..paths
    };
    let err = run_collect(&small_config(1), &missing, false)
        .0
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/tok.json"), "{err}");
}
