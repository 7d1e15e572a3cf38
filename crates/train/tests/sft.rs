//! SFT: padding and gradient accumulation change nothing (family 4), an interrupted run
//! resumes bit-exactly (family 6), and training on demonstrations lowers the held-out
//! assistant loss.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use chatforge_data::conversation::{write_conversations, Conversation, Message, Role};
use chatforge_model::{Gpt, GptConfig, Params};
use chatforge_tokenizer::chat::ChatTemplate;
use chatforge_tokenizer::{Special, Tokenizer, TrainConfig};
use chatforge_train::artifact::{self, var_map, Meta, SaveRequest};
use chatforge_train::optim::{AdamW, FlatGrads, OptimConfig};
use chatforge_train::sft::{example, run, step_grads, Example, SftConfig, SftPaths};
use chatforge_train::TrainEvent;

fn msg(role: Role, content: &str) -> Message {
    Message {
        role,
        content: content.to_string(),
    }
}

/// Simple arithmetic demonstrations, some with a system prompt and a second turn.
fn conversations(n: usize, offset: usize) -> Vec<Conversation> {
    (0..n)
        .map(|i| {
            let (a, b) = ((i + offset) % 13, (i * 7 + offset) % 11);
            let mut messages = Vec::new();
            if i % 3 == 0 {
                messages.push(msg(Role::System, "You are a helpful assistant."));
            }
            messages.push(msg(Role::User, &format!("What is {a} plus {b}?")));
            messages.push(msg(Role::Assistant, &format!("{a} + {b} = {}.", a + b)));
            if i % 4 == 1 {
                messages.push(msg(Role::User, "And times two?"));
                messages.push(msg(Role::Assistant, &format!("{}.", 2 * (a + b))));
            }
            Conversation { messages }
        })
        .collect()
}

fn tokenizer(convs: &[Conversation]) -> Tokenizer {
    let text: Vec<String> = convs
        .iter()
        .flat_map(|c| c.messages.iter().map(|m| m.content.clone()))
        .collect();
    Tokenizer::train(&text, &TrainConfig::with_vocab_size(300)).unwrap()
}

fn model_config(tok: &Tokenizer) -> GptConfig {
    let mut cfg = GptConfig::preset("tiny", tok.vocab_size()).unwrap();
    cfg.context_length = 64;
    cfg.n_layer = 2;
    cfg
}

/// A "pretrained" base checkpoint: fresh weights saved as a pretraining stage would.
fn base_checkpoint(dir: &Path, tok: &Tokenizer) -> PathBuf {
    let cfg = model_config(tok);
    let params = Params::init(&cfg, 3, &Device::Cpu).unwrap();
    artifact::save(SaveRequest {
        run_dir: dir,
        step: 1,
        params: &params,
        model_config: &cfg,
        tokenizer: tok,
        meta: Meta {
            stage: "pretrain".into(),
            step: 1,
            tokenizer_hash: tok.hash(),
            chatforge_version: "test".into(),
            config: serde_json::json!({}),
        },
        optimizer: &AdamW::new(OptimConfig::default()),
        trainer_state: serde_json::json!({}),
        keep: 2,
    })
    .unwrap()
}

fn max_grad_diff(a: &FlatGrads, b: &FlatGrads) -> f32 {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    a.iter()
        .flat_map(|(k, va)| {
            let (va, vb) = (va.to_vec().unwrap(), b[k].to_vec().unwrap());
            va.into_iter()
                .zip(vb)
                .map(|(x, y)| (x - y).abs())
                .collect::<Vec<_>>()
        })
        .fold(0.0, f32::max)
}

#[test]
fn padding_and_accumulation_change_nothing() {
    let convs = conversations(8, 0);
    let tok = tokenizer(&convs);
    let cfg = model_config(&tok);
    let params = Params::init(&cfg, 9, &Device::Cpu).unwrap();
    let model = Gpt::new(&cfg, params.var_builder(DType::F32)).unwrap();
    let vars = var_map(&params);
    let examples: Vec<Example> = convs
        .iter()
        .map(|c| example(&tok, c, ChatTemplate::Native, 64).unwrap().unwrap())
        .collect();
    // Rows differ in length, so the batch of 8 pads most of them.
    let lens: Vec<usize> = examples.iter().map(|e| e.inputs.len()).collect();
    assert!(lens.iter().min() < lens.iter().max(), "{lens:?}");
    let pad = tok.special(Special::Eot);

    let one_batch = vec![examples.iter().collect::<Vec<_>>()];
    let eight_micro: Vec<Vec<&Example>> = examples.iter().map(|e| vec![e]).collect();
    let (l1, g1, _) = step_grads(&model, &vars, &one_batch, pad).unwrap();
    let (l8, g8, _) = step_grads(&model, &vars, &eight_micro, pad).unwrap();
    assert!((l1 - l8).abs() <= 1e-6, "{l1} vs {l8}");
    let d = max_grad_diff(&g1, &g8);
    assert!(d <= 1e-5, "gradients differ by {d}");

    // A different pad id changes nothing either.
    let (l_pad, g_pad, _) = step_grads(&model, &vars, &one_batch, 5).unwrap();
    assert!((l1 - l_pad).abs() <= 1e-6);
    assert!(max_grad_diff(&g1, &g_pad) <= 1e-5);
}

fn setup(dir: &Path) -> SftPaths {
    let train = conversations(48, 0);
    let val = conversations(8, 100);
    let tok = tokenizer(&train);
    let base = base_checkpoint(&dir.join("base"), &tok);
    write_conversations(&dir.join("train.jsonl"), &train).unwrap();
    write_conversations(&dir.join("val.jsonl"), &val).unwrap();
    SftPaths {
        base,
        train: vec![dir.join("train.jsonl")],
        val: vec![dir.join("val.jsonl")],
        tasks: None,
        out: dir.join("sft"),
    }
}

fn config(steps: u64) -> SftConfig {
    let mut c = SftConfig {
        batch_size: 4,
        grad_accum: 2,
        steps: Some(steps),
        eval_every: 4,
        checkpoint_every: 3,
        seed: 11,
        ..SftConfig::default()
    };
    c.optim.warmup_steps = 2;
    c.optim.lr = 3e-3;
    c
}

fn losses(cfg: &SftConfig, paths: &SftPaths, resume: bool) -> (f64, f64, Vec<(u64, u64)>) {
    let mut out = Vec::new();
    let s = run(cfg, paths, &Device::Cpu, resume, &mut |e| {
        if let TrainEvent::Step(m) = e {
            out.push((m.step, m.loss.to_bits()));
        }
    })
    .unwrap();
    (s.val_loss_first.unwrap_or(f64::NAN), s.val_loss_last, out)
}

fn weights(dir: &Path) -> Vec<u8> {
    chatforge_model::checkpoint::latest_checkpoint(dir)
        .unwrap()
        .unwrap()
        .read("model.safetensors")
        .unwrap()
}

#[test]
fn sft_learns_and_resumes_bit_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let paths = setup(tmp.path());
    let cfg = config(8);
    let straight = SftPaths {
        out: tmp.path().join("straight"),
        ..paths.clone()
    };
    let (first, last, all) = losses(&cfg, &straight, false);
    assert!(
        last < first - 0.5,
        "held-out assistant loss {first} -> {last}"
    );

    let crashed = SftPaths {
        out: tmp.path().join("crashed"),
        ..paths.clone()
    };
    let died = catch_unwind(AssertUnwindSafe(|| {
        run(&cfg, &crashed, &Device::Cpu, false, &mut |e| {
            if let TrainEvent::Step(m) = e {
                if m.step == 5 {
                    panic!("simulated crash");
                }
            }
        })
        .map(|_| ())
        .map_err(|e| e.to_string())
    }));
    assert!(died.is_err());
    let (_, _, resumed) = losses(&cfg, &crashed, true);
    assert_eq!(resumed.first().map(|s| s.0), Some(4));
    assert_eq!(&all[3..], &resumed[..]);
    assert_eq!(weights(&straight.out), weights(&crashed.out));

    // A changed learning rate cannot silently resume.
    let mut changed = cfg.clone();
    changed.optim.lr = 1e-2;
    assert!(run(&changed, &crashed, &Device::Cpu, true, &mut |_| {}).is_err());
}
