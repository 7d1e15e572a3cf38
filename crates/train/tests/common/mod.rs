//! A small world with prompts and a corpus, a tokenizer, and untrained "SFT" and "reward"
//! checkpoints: the fixture of the PPO and ranking tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use candle_core::Device;
use chatforge_data::prompts::write_prompts;
use chatforge_data::world::{prompt_records, write_world, Split, World, WorldConfig};
use chatforge_model::{GptConfig, Params};
use chatforge_tokenizer::{Tokenizer, TrainConfig};
use chatforge_train::artifact::{self, Meta, SaveRequest};
use chatforge_train::optim::{AdamW, OptimConfig};
use chatforge_train::reward::init_score_head;

pub struct Fixture {
    pub _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub sft: PathBuf,
    pub rm: PathBuf,
    pub prompts: PathBuf,
    pub corpus_train: PathBuf,
    pub corpus_val: PathBuf,
}

pub fn save(dir: &Path, stage: &str, params: &Params, cfg: &GptConfig, tok: &Tokenizer) -> PathBuf {
    artifact::save(SaveRequest {
        run_dir: dir,
        step: 1,
        params,
        model_config: cfg,
        tokenizer: tok,
        meta: Meta {
            stage: stage.into(),
            step: 1,
            tokenizer_hash: tok.hash(),
            chatforge_version: "test".into(),
            config: serde_json::json!({ "template": "native" }),
        },
        optimizer: &AdamW::new(OptimConfig::default()),
        trainer_state: serde_json::json!({}),
        keep: 2,
    })
    .unwrap()
}

/// A world's prompts and corpus, a tokenizer, and untrained "SFT" and "reward" checkpoints.
pub fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let world = World::generate(&WorldConfig {
        seed: 5,
        ..WorldConfig::default()
    });
    let files = write_world(&world, &root.join("world"), 40_000, 5).unwrap();
    let text = std::fs::read_to_string(&files.train).unwrap();
    let tok = Tokenizer::train(&[text], &TrainConfig::with_vocab_size(320)).unwrap();
    let mut cfg = GptConfig::preset("tiny", tok.vocab_size()).unwrap();
    cfg.context_length = 192;
    cfg.n_layer = 1;
    cfg.n_embd = 32;
    cfg.n_head = 2;
    cfg.n_kv_head = 2;
    cfg.intermediate_size = 64;
    let sft_params = Params::init(&cfg, 3, &Device::Cpu).unwrap();
    let sft = save(&root.join("sft"), "sft", &sft_params, &cfg, &tok);
    let mut rm_params = Params::init(&cfg, 4, &Device::Cpu).unwrap();
    rm_params
        .extend(init_score_head(&cfg, 9, &Device::Cpu).unwrap())
        .unwrap();
    let rm = save(&root.join("rm"), "reward", &rm_params, &cfg, &tok);
    let prompts = root.join("prompts.jsonl");
    let mut recs = prompt_records(&world, Split::Train, 24, 1);
    // Short prompts only: no system message, so every one fits the small context.
    recs.retain(|r| r.prompt.len() == 1 && r.prompt[0].content.len() < 80);
    assert!(recs.len() >= 8, "{} prompts", recs.len());
    write_prompts(&prompts, &recs).unwrap();
    Fixture {
        _dir: dir,
        root,
        sft,
        rm,
        prompts,
        corpus_train: files.train,
        corpus_val: files.val,
    }
}
