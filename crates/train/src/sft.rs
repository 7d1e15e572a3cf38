//! Supervised fine-tuning: the same next-token objective as pretraining, on demonstrations,
//! with the loss only on what the assistant says.
//!
//! The algorithm (DESIGN.md "SFT", InstructGPT step 1):
//! 1. Every conversation is rendered with the chat template into ids and a loss mask that is
//!    true exactly on the assistant's content tokens and each assistant-end token
//!    (`chatforge_tokenizer::chat::render`). Inputs are `ids[..n-1]`, targets `ids[1..]`, with
//!    every target whose mask is false set to `IGNORE_INDEX`. A conversation longer than the
//!    context (+1) is dropped and counted, never silently truncated.
//! 2. Batches hold whole conversations, one per row, padded on the right to the longest row
//!    with ignored targets. We pad rather than pack: causal attention means a row's padding
//!    cannot affect its real tokens, so nothing leaks between conversations (tested: the
//!    summed loss of a padded batch equals the sum of each conversation's loss alone).
//! 3. The loss of a micro-batch is the mean over its assistant tokens; `grad_accum`
//!    micro-batches are averaged; AdamW, warm-up + cosine, clipping and the numeric guard as in
//!    pretraining. Conversations are visited in a seeded order per epoch (resumable cursor).
//! 4. Every `eval_every` steps: held-out loss on the validation conversations (assistant tokens)
//!    and, when tasks are given, held-out task accuracy by greedy generation, per task kind.
//!    The base model's accuracy is measured the same way before the first step.
//! 5. Checkpoints and bit-exact resume as in pretraining; the resolved config and the tokenizer
//!    travel with every checkpoint.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use chatforge_data::conversation::{read_conversations, Conversation};
use chatforge_data::corpus::ReadOptions;
use chatforge_data::world::Task;
use chatforge_model::ops::MatmulPrecision;
use chatforge_model::ops::IGNORE_INDEX;
use chatforge_model::{Gpt, GptConfig};
use chatforge_tokenizer::chat::{render, ChatTemplate};
use chatforge_tokenizer::{Special, Tokenizer};
use serde::{Deserialize, Serialize};

use crate::artifact::{self, load_model, var_map, StageWriter};
use crate::batch::{Cursor, EpochOrder};
use crate::events::{StepMetrics, TrainEvent};
use crate::guard::{guarded_step, Guard};
use crate::metrics::MetricsLog;
use crate::optim::{accumulate_grads, lr_at, vars_device, AdamW, FlatGrads, OptimConfig};
use crate::tasks_eval::{read_tasks, task_accuracy, TaskAccuracy};
use crate::{Error, Result};

/// Everything that defines an SFT run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SftConfig {
    pub template: ChatTemplate,
    /// Conversations per micro-batch.
    pub batch_size: usize,
    pub grad_accum: usize,
    /// Passes over the training conversations (used when `steps` is not set).
    pub epochs: u64,
    /// Optimizer steps; overrides `epochs`.
    pub steps: Option<u64>,
    pub optim: OptimConfig,
    pub eval_every: u64,
    /// Held-out tasks graded by greedy generation at each evaluation (0 = none).
    pub eval_tasks: usize,
    pub max_new_tokens: usize,
    pub checkpoint_every: u64,
    pub keep_checkpoints: usize,
    pub skip_bad_records: bool,
    pub seed: u64,
    /// Precision of the training forward and backward's linear-layer matrix products: `f32`, or
    /// `bf16` (bf16 autocast for the linears; weights, optimizer state and everything else stay
    /// f32). Evaluation always runs in f32.
    pub matmul_precision: MatmulPrecision,
}

impl Default for SftConfig {
    fn default() -> Self {
        Self {
            template: ChatTemplate::Native,
            batch_size: 16,
            grad_accum: 1,
            epochs: 2,
            steps: None,
            optim: OptimConfig {
                lr: 1e-3,
                warmup_steps: 10,
                ..OptimConfig::default()
            },
            eval_every: 100,
            eval_tasks: 200,
            max_new_tokens: 40,
            checkpoint_every: 100,
            keep_checkpoints: 2,
            skip_bad_records: false,
            seed: 1337,
            matmul_precision: MatmulPrecision::F32,
        }
    }
}

/// Inputs and output of an SFT run.
#[derive(Debug, Clone)]
pub struct SftPaths {
    /// The pretrained checkpoint (or run directory) to start from.
    pub base: PathBuf,
    pub train: Vec<PathBuf>,
    pub val: Vec<PathBuf>,
    /// Held-out tasks with verifiable answers (JSONL of `Task`), for accuracy.
    pub tasks: Option<PathBuf>,
    pub out: PathBuf,
}

/// One rendered conversation: inputs and targets of equal length (targets ignored off the
/// assistant's tokens).
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub inputs: Vec<u32>,
    pub targets: Vec<u32>,
}

/// Renders a conversation into an [`Example`]; `None` when it does not fit `context`.
pub fn example(
    tok: &Tokenizer,
    conv: &Conversation,
    template: ChatTemplate,
    context: usize,
) -> Result<Option<Example>> {
    let r = render(tok, conv, template)?;
    if r.ids.len() < 2 || r.ids.len() > context + 1 {
        return Ok(None);
    }
    let inputs = r.ids[..r.ids.len() - 1].to_vec();
    let targets = r.ids[1..]
        .iter()
        .zip(&r.loss_mask[1..])
        .map(|(&id, &m)| if m { id } else { IGNORE_INDEX })
        .collect();
    Ok(Some(Example { inputs, targets }))
}

/// Stacks examples into `(B, T)` input and target tensors, padding on the right with `pad`
/// (inputs) and `IGNORE_INDEX` (targets), on `device`.
///
/// # Shapes
/// - returns `((B, T), (B, T))` with `T` the longest example.
pub fn pad_batch(examples: &[&Example], pad: u32, device: &Device) -> Result<(Tensor, Tensor)> {
    let t = examples.iter().map(|e| e.inputs.len()).max().unwrap_or(0);
    let b = examples.len();
    let mut x = vec![pad; b * t];
    let mut y = vec![IGNORE_INDEX; b * t];
    for (r, e) in examples.iter().enumerate() {
        x[r * t..r * t + e.inputs.len()].copy_from_slice(&e.inputs);
        y[r * t..r * t + e.targets.len()].copy_from_slice(&e.targets);
    }
    Ok((
        Tensor::from_vec(x, (b, t), device)?,
        Tensor::from_vec(y, (b, t), device)?,
    ))
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct LoopState {
    step: u64,
    cursor: Cursor,
    guard: Guard,
    tokens_seen: u64,
    base_accuracy: Option<TaskAccuracy>,
    val_loss_first: Option<f64>,
}

/// What a finished SFT run reports.
#[derive(Debug, Clone, PartialEq)]
pub struct SftSummary {
    pub steps: u64,
    pub val_loss_first: Option<f64>,
    pub val_loss_last: f64,
    pub base_accuracy: Option<TaskAccuracy>,
    pub accuracy: Option<TaskAccuracy>,
    pub dropped_too_long: usize,
    pub checkpoint: PathBuf,
}

fn render_all(
    tok: &Tokenizer,
    convs: &[Conversation],
    template: ChatTemplate,
    context: usize,
) -> Result<(Vec<Example>, usize)> {
    let mut out = Vec::with_capacity(convs.len());
    let mut dropped = 0;
    for c in convs {
        match example(tok, c, template, context)? {
            Some(e) => out.push(e),
            None => dropped += 1,
        }
    }
    Ok((out, dropped))
}

/// Runs (or resumes) SFT from a pretrained checkpoint, on `device` (see [`crate::pretrain::run`]).
pub fn run(
    cfg: &SftConfig,
    paths: &SftPaths,
    device: &Device,
    resume: bool,
    on_event: &mut dyn FnMut(&TrainEvent),
) -> Result<SftSummary> {
    for (name, v) in [
        ("batch_size", cfg.batch_size as u64),
        ("grad_accum", cfg.grad_accum as u64),
        ("eval_every", cfg.eval_every),
        ("checkpoint_every", cfg.checkpoint_every),
    ] {
        if v == 0 {
            return Err(Error::Config(format!("{name} must be at least 1")));
        }
    }
    let checkpoint = if resume {
        chatforge_model::checkpoint::latest_checkpoint(&paths.out)?
    } else {
        None
    };
    // The weights to start from: the base model, or this run's newest checkpoint.
    let start = load_model(
        match &checkpoint {
            Some(ck) => &ck.dir,
            None => &paths.base,
        },
        device,
    )?;
    let tok = start.tokenizer;
    let model_cfg: GptConfig = start.config;
    let ctx = model_cfg.context_length;
    let opts = ReadOptions {
        skip_bad_records: cfg.skip_bad_records,
    };
    let (train_convs, _) = read_conversations(&paths.train, &opts)?;
    let (val_convs, _) = read_conversations(&paths.val, &opts)?;
    let (train, dropped_train) = render_all(&tok, &train_convs, cfg.template, ctx)?;
    let (val, dropped_val) = render_all(&tok, &val_convs, cfg.template, ctx)?;
    if train.is_empty() || val.is_empty() {
        return Err(Error::Data(format!(
            "no training or validation conversation fits the context of {ctx} tokens"
        )));
    }
    let tasks: Vec<Task> = match &paths.tasks {
        Some(p) => read_tasks(p)?.into_iter().take(cfg.eval_tasks).collect(),
        None => Vec::new(),
    };
    let per_step = cfg.batch_size * cfg.grad_accum;
    let total_steps = cfg
        .steps
        .unwrap_or_else(|| (cfg.epochs * train.len() as u64).div_ceil(per_step as u64));
    if total_steps == 0 {
        return Err(Error::Config("the run has zero steps".into()));
    }

    let mut opt = AdamW::new(cfg.optim.clone());
    let params = start.params;
    let mut state = match &checkpoint {
        Some(ck) => {
            let saved: SftConfig = serde_json::from_value(start.meta.config.clone())
                .map_err(|e| Error::State(format!("checkpoint config: {e}")))?;
            let (mut a, mut b) = (cfg.clone(), saved);
            for c in [&mut a, &mut b] {
                c.steps = None;
                c.epochs = 0;
                c.eval_every = 1;
                c.eval_tasks = 0;
                c.checkpoint_every = 1;
                c.keep_checkpoints = 2;
            }
            if a != b {
                return Err(Error::Config(format!(
                    "cannot resume {}: it was made with different settings; only steps, epochs, \
                     eval and checkpoint cadence may change",
                    ck.dir.display()
                )));
            }
            artifact::load_optimizer(ck, &params, &mut opt)?;
            artifact::trainer_state::<LoopState>(ck)?
        }
        None => LoopState {
            step: 0,
            cursor: Cursor::default(),
            guard: Guard::default(),
            tokens_seen: 0,
            base_accuracy: None,
            val_loss_first: None,
        },
    };
    let model = Gpt::new(&model_cfg, params.var_builder(DType::F32))?
        .with_matmul_precision(cfg.matmul_precision);
    let vars = var_map(&params);
    let mut order = EpochOrder::new(train.len(), cfg.seed, state.cursor)?;
    let mut metrics = MetricsLog::open(&paths.out.join("metrics.jsonl"), state.step)?;
    let pad = tok.special(Special::Eot);
    on_event(&TrainEvent::Prepared {
        train_tokens: train.iter().map(|e| e.inputs.len()).sum(),
        val_tokens: val.iter().map(|e| e.inputs.len()).sum(),
        reused: false,
    });
    if dropped_train + dropped_val > 0 {
        on_event(&TrainEvent::Skipped {
            step: state.step,
            reason: format!(
                "{} training and {} validation conversations are longer than the context of \
                 {ctx} tokens and were left out",
                dropped_train, dropped_val
            ),
        });
    }
    on_event(&TrainEvent::Start {
        step: state.step,
        total_steps,
        params: params.num_params(),
        per_step,
        unit: "conversations",
        resumed: checkpoint.is_some(),
    });

    let evaluate = || -> Result<(f64, Option<TaskAccuracy>)> {
        let frozen = Gpt::new(&model_cfg, params.frozen_var_builder(DType::F32))?;
        let loss = val_loss(&frozen, device, &val, pad)?;
        let acc = if tasks.is_empty() {
            None
        } else {
            Some(task_accuracy(
                &frozen,
                device,
                &tok,
                cfg.template,
                &tasks,
                cfg.max_new_tokens,
            )?)
        };
        Ok((loss, acc))
    };
    if state.step == 0 && state.val_loss_first.is_none() {
        let (loss, acc) = evaluate()?;
        state.val_loss_first = Some(loss);
        state.base_accuracy = acc;
        on_event(&TrainEvent::Eval {
            step: 0,
            val_loss: loss,
            val_bpb: f64::NAN,
        });
        if let Some(a) = &state.base_accuracy {
            on_event(&TrainEvent::Accuracy {
                step: 0,
                accuracy: a.clone(),
            });
        }
    }

    let writer = StageWriter {
        stage: "sft",
        run_dir: &paths.out,
        params: &params,
        model_config: &model_cfg,
        tokenizer: &tok,
        config: cfg,
        keep: cfg.keep_checkpoints,
    };
    let save = |state: &LoopState, opt: &AdamW| writer.save(state.step, state, opt);

    let started = Instant::now();
    let mut last = (f64::NAN, None);
    let mut last_ckpt = None;
    while state.step < total_steps {
        let t0 = Instant::now();
        let lr = lr_at(&cfg.optim, state.step, total_steps);
        let micro: Vec<Vec<&Example>> = (0..cfg.grad_accum)
            .map(|_| {
                (0..cfg.batch_size)
                    .map(|_| &train[order.next_index()])
                    .collect()
            })
            .collect();
        let (loss, mut grads, tokens) = step_grads(&model, &vars, &micro, pad)?;
        let (skipped, grad_norm) = guarded_step(
            &mut state.guard,
            &mut opt,
            &vars,
            &mut grads,
            loss,
            lr,
            cfg.optim.grad_clip,
            state.step,
            on_event,
        )?;
        state.step += 1;
        state.cursor = order.cursor();
        state.tokens_seen += tokens;
        let m = StepMetrics {
            step: state.step,
            loss,
            lr,
            grad_norm,
            tokens: state.tokens_seen,
            tokens_per_sec: tokens as f64 / t0.elapsed().as_secs_f64(),
            elapsed_s: started.elapsed().as_secs_f64(),
            skipped,
        };
        metrics.append(&m)?;
        on_event(&TrainEvent::Step(m));

        let is_last = state.step == total_steps;
        if state.step % cfg.eval_every == 0 || is_last {
            let (loss, acc) = evaluate()?;
            metrics.append_eval(state.step, loss, f64::NAN)?;
            on_event(&TrainEvent::Eval {
                step: state.step,
                val_loss: loss,
                val_bpb: f64::NAN,
            });
            if let Some(a) = &acc {
                on_event(&TrainEvent::Accuracy {
                    step: state.step,
                    accuracy: a.clone(),
                });
            }
            last = (loss, acc);
        }
        if state.step % cfg.checkpoint_every == 0 || is_last {
            let path = save(&state, &opt)?;
            on_event(&TrainEvent::Checkpoint {
                step: state.step,
                path: path.clone(),
            });
            last_ckpt = Some(path);
        }
    }
    if last.0.is_nan() {
        last = evaluate()?;
    }
    let checkpoint = match last_ckpt {
        Some(p) => p,
        None => save(&state, &opt)?,
    };
    on_event(&TrainEvent::Done {
        step: state.step,
        path: checkpoint.clone(),
    });
    Ok(SftSummary {
        steps: state.step,
        val_loss_first: state.val_loss_first,
        val_loss_last: last.0,
        base_accuracy: state.base_accuracy,
        accuracy: last.1,
        dropped_too_long: dropped_train + dropped_val,
        checkpoint,
    })
}

/// Loss and gradients of one optimizer step over `micro` micro-batches, normalised by the
/// number of assistant tokens in the whole step: each micro-batch's mean loss is weighted by
/// its share of those tokens before its backward. So the step's gradient is the gradient of
/// the mean over all the step's assistant tokens, whatever the split into micro-batches
/// (8 × 1 ≡ 1 × 8), unlike averaging per-micro-batch means. Batches go to the device of `vars`.
/// Returns (loss, gradients, input tokens).
pub fn step_grads(
    model: &Gpt,
    vars: &std::collections::BTreeMap<String, candle_core::Var>,
    micro: &[Vec<&Example>],
    pad: u32,
) -> Result<(f64, FlatGrads, u64)> {
    let kept = |b: &Vec<&Example>| -> usize {
        b.iter()
            .map(|e| e.targets.iter().filter(|&&t| t != IGNORE_INDEX).count())
            .sum()
    };
    let total: usize = micro.iter().map(kept).sum();
    let device = vars_device(vars);
    let mut grads = FlatGrads::new();
    let (mut loss_sum, mut tokens) = (0.0f64, 0u64);
    for batch in micro {
        let n = kept(batch);
        tokens += batch.iter().map(|e| e.inputs.len() as u64).sum::<u64>();
        if n == 0 {
            continue;
        }
        let (x, y) = pad_batch(batch, pad, &device)?;
        let share = n as f64 / total as f64;
        let loss = (model.loss(&x, &y)? * share)?;
        loss_sum += loss.to_scalar::<f32>()? as f64;
        let g = loss.backward()?;
        accumulate_grads(vars, &g, 1.0, &mut grads)?;
    }
    if total == 0 {
        return Err(Error::Data(
            "a training step drew conversations with no assistant tokens".into(),
        ));
    }
    Ok((loss_sum, grads, tokens))
}

/// Mean loss over the assistant tokens of `examples` (token-weighted across batches), for
/// `model` with its weights on `device`.
pub fn val_loss(model: &Gpt, device: &Device, examples: &[Example], pad: u32) -> Result<f64> {
    let (mut nats, mut count) = (0.0f64, 0usize);
    for chunk in examples.chunks(16) {
        let refs: Vec<&Example> = chunk.iter().collect();
        let n = chunk
            .iter()
            .map(|e| e.targets.iter().filter(|&&t| t != IGNORE_INDEX).count())
            .sum::<usize>();
        if n == 0 {
            continue;
        }
        let (x, y) = pad_batch(&refs, pad, device)?;
        nats += model.loss(&x, &y)?.to_scalar::<f32>()? as f64 * n as f64;
        count += n;
    }
    if count == 0 {
        return Err(Error::Data(
            "validation conversations have no assistant tokens".into(),
        ));
    }
    Ok(nats / count as f64)
}
