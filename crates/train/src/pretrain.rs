//! Pretraining: next-token prediction on a packed corpus.
//!
//! The algorithm (DESIGN.md "Pretrain"):
//! 1. Documents are encoded and joined with the end-of-text token into one stream per split
//!    (`prepare`), memory-mapped from headered shards.
//! 2. The stream is cut into rows of `T + 1` tokens, visited in a seeded per-epoch order
//!    (`batch::RowLoader`); inputs are the first `T`, targets the last `T`. Every position's
//!    next-token cross-entropy counts (rows cross document boundaries, as in GPT-2/nanoGPT: the
//!    end-of-text token tells the model a new document begins; attention is not reset there).
//! 3. Each optimizer step averages the loss over `grad_accum` micro-batches of `batch_size` rows,
//!    clips the global gradient norm, and applies AdamW (decay on matrices only) at the
//!    warm-up + cosine learning rate (`optim`).
//! 4. The numeric guard (`guard`) skips an update whose loss or gradient is not finite or whose
//!    loss spikes; weights and moments are then left exactly as they were.
//! 5. Every `eval_every` steps: validation loss (nats/token) and bits per byte over fixed
//!    held-out rows, where specials count zero bytes and are left out of both sums.
//! 6. Every `checkpoint_every` steps and at the end: an atomic checkpoint with everything
//!    resume needs; `resume` restores it and continues bit-exactly (same weights, moments,
//!    schedule position, data cursor, guard state; sampling seeds derive from the step).

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use chatforge_engine::{generate, SamplingParams};
use chatforge_model::ops::MatmulPrecision;
use chatforge_model::{Gpt, GptConfig, Params};
use chatforge_tokenizer::{Special, Tokenizer};
use serde::{Deserialize, Serialize};

use crate::artifact::{self, Meta, StageWriter};
use crate::batch::{eval_rows, Cursor, RowLoader};
use crate::events::{StepMetrics, TrainEvent};
use crate::guard::{guarded_step, Guard};
use crate::metrics::MetricsLog;
use crate::optim::{accumulate_grads, lr_at, AdamW, FlatGrads, OptimConfig};
use crate::prepare::{prepare_shards, CorpusSpec};
use crate::{Error, Result};

/// Everything that defines a pretraining run (the `[pretrain]` TOML and the CLI flags).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PretrainConfig {
    /// Model preset (`GptConfig::preset`), sized to the tokenizer's vocabulary.
    pub preset: String,
    /// Context length `T` (defaults to the preset's).
    pub context_length: Option<usize>,
    /// Rows per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Optimizer steps in the whole run.
    pub steps: u64,
    pub optim: OptimConfig,
    pub eval_every: u64,
    /// Held-out rows scored at each evaluation.
    pub eval_rows: usize,
    pub sample_every: u64,
    pub sample_prompt: String,
    pub sample_tokens: usize,
    pub checkpoint_every: u64,
    pub keep_checkpoints: usize,
    /// Held out from the training documents when no validation files are given.
    pub val_fraction: f64,
    pub skip_bad_records: bool,
    pub seed: u64,
    /// Precision of the training forward and backward's linear-layer matrix products: `f32`, or
    /// `bf16` (bf16 autocast for the linears; weights, optimizer state and everything else stay
    /// f32). Evaluation always runs in f32.
    pub matmul_precision: MatmulPrecision,
}

impl Default for PretrainConfig {
    fn default() -> Self {
        Self {
            preset: "tiny".into(),
            context_length: None,
            batch_size: 8,
            grad_accum: 1,
            steps: 300,
            optim: OptimConfig::default(),
            eval_every: 50,
            eval_rows: 64,
            sample_every: 100,
            sample_prompt: "The".into(),
            sample_tokens: 48,
            checkpoint_every: 100,
            keep_checkpoints: 2,
            val_fraction: 0.02,
            skip_bad_records: false,
            seed: 1337,
            matmul_precision: MatmulPrecision::F32,
        }
    }
}

impl PretrainConfig {
    /// The model this run trains, for a tokenizer of `vocab_size` ids.
    pub fn model_config(&self, vocab_size: usize) -> Result<GptConfig> {
        let mut cfg = GptConfig::preset(&self.preset, vocab_size).ok_or_else(|| {
            Error::Config(format!(
                "unknown preset {:?}; known: {}",
                self.preset,
                GptConfig::preset_names().join(", ")
            ))
        })?;
        if let Some(t) = self.context_length {
            cfg.context_length = t;
        }
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<()> {
        let positive = [
            ("batch_size", self.batch_size as u64),
            ("grad_accum", self.grad_accum as u64),
            ("steps", self.steps),
            ("eval_every", self.eval_every),
            ("checkpoint_every", self.checkpoint_every),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(Error::Config(format!("{name} must be at least 1")));
            }
        }
        if !(self.optim.lr > 0.0 && self.optim.lr.is_finite()) {
            return Err(Error::Config(format!(
                "optim.lr must be > 0, got {}",
                self.optim.lr
            )));
        }
        if !(0.0..1.0).contains(&self.val_fraction) {
            return Err(Error::Config("val_fraction must be in [0, 1)".into()));
        }
        Ok(())
    }
}

/// Files a run reads and the directory it writes.
#[derive(Debug, Clone)]
pub struct PretrainPaths {
    pub train: Vec<PathBuf>,
    pub val: Vec<PathBuf>,
    pub tokenizer: PathBuf,
    pub out: PathBuf,
}

/// Loop state saved in `trainer_state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct LoopState {
    step: u64,
    cursor: Cursor,
    guard: Guard,
    tokens_seen: u64,
    val_loss_first: Option<f64>,
}

/// What a finished run reports.
#[derive(Debug, Clone, PartialEq)]
pub struct PretrainSummary {
    pub steps: u64,
    pub val_loss_first: Option<f64>,
    pub val_loss_last: f64,
    pub val_bpb_last: f64,
    pub checkpoint: PathBuf,
    pub skipped_steps: u64,
}

/// Runs (or, with `resume`, continues) pretraining on `device` and returns the final numbers.
/// Data is prepared and batched on the host; the weights, the optimizer moments and every
/// batch's activations live on `device`. The device is not part of the run's identity: a run can
/// resume on another one.
pub fn run(
    cfg: &PretrainConfig,
    paths: &PretrainPaths,
    device: &Device,
    resume: bool,
    on_event: &mut dyn FnMut(&TrainEvent),
) -> Result<PretrainSummary> {
    cfg.validate()?;
    let tokenizer = Tokenizer::load(&paths.tokenizer)?;
    let model_cfg = cfg.model_config(tokenizer.vocab_size())?;
    let t = model_cfg.context_length;

    let spec = CorpusSpec {
        train: paths.train.clone(),
        val: paths.val.clone(),
        val_fraction: cfg.val_fraction,
        skip_bad_records: cfg.skip_bad_records,
    };
    let shards = prepare_shards(&spec, &tokenizer, &paths.out.join("data"))?;
    on_event(&TrainEvent::Prepared {
        train_tokens: shards.train.len(),
        val_tokens: shards.val.len(),
        reused: shards.reused,
    });

    // Setup: fresh, or everything restored from the newest checkpoint.
    let mut opt = AdamW::new(cfg.optim.clone());
    let checkpoint = if resume {
        chatforge_model::checkpoint::latest_checkpoint(&paths.out)?
    } else {
        None
    };
    let (params, mut state) = match &checkpoint {
        Some(ck) => {
            let loaded = artifact::load_model(&ck.dir, device)?;
            check_resume_config(cfg, &loaded.meta)?;
            if loaded.config != model_cfg || loaded.tokenizer.hash() != tokenizer.hash() {
                return Err(Error::Config(format!(
                    "{} was trained with a different model or tokenizer",
                    ck.dir.display()
                )));
            }
            artifact::load_optimizer(ck, &loaded.params, &mut opt)?;
            (loaded.params, artifact::trainer_state::<LoopState>(ck)?)
        }
        None => (
            Params::init(&model_cfg, cfg.seed, device)?,
            LoopState {
                step: 0,
                cursor: Cursor::default(),
                guard: Guard::default(),
                tokens_seen: 0,
                val_loss_first: None,
            },
        ),
    };
    let model = Gpt::new(&model_cfg, params.var_builder(DType::F32))?
        .with_matmul_precision(cfg.matmul_precision);
    let vars = artifact::var_map(&params);
    let mut loader = RowLoader::new(shards.train, t, cfg.seed, state.cursor)?;
    let val_rows = eval_rows(&shards.val, t, cfg.eval_rows)?;
    if val_rows.is_empty() {
        return Err(Error::Data(format!(
            "the validation split has {} tokens, fewer than one row of {}",
            shards.val.len(),
            t + 1
        )));
    }
    let token_bytes = token_byte_lengths(&tokenizer);
    let mut metrics = MetricsLog::open(&paths.out.join("metrics.jsonl"), state.step)?;
    let tokens_per_step = cfg.batch_size * cfg.grad_accum * t;
    on_event(&TrainEvent::Start {
        step: state.step,
        total_steps: cfg.steps,
        params: params.num_params(),
        per_step: tokens_per_step,
        unit: "tokens",
        resumed: checkpoint.is_some(),
    });

    let writer = StageWriter {
        stage: "pretrain",
        run_dir: &paths.out,
        params: &params,
        model_config: &model_cfg,
        tokenizer: &tokenizer,
        config: cfg,
        keep: cfg.keep_checkpoints,
    };
    let save = |state: &LoopState, opt: &AdamW| writer.save(state.step, state, opt);

    if state.step == 0 && state.val_loss_first.is_none() {
        let (loss, bpb) = evaluate(
            &frozen(&params, &model_cfg)?,
            device,
            &val_rows,
            &token_bytes,
        )?;
        state.val_loss_first = Some(loss);
        on_event(&TrainEvent::Eval {
            step: 0,
            val_loss: loss,
            val_bpb: bpb,
        });
    }

    let start = Instant::now();
    let mut last_eval = None;
    let mut last_ckpt = None;
    while state.step < cfg.steps {
        let step_start = Instant::now();
        let lr = lr_at(&cfg.optim, state.step, cfg.steps);
        let mut grads = FlatGrads::new();
        let mut loss_sum = 0.0f64;
        for _ in 0..cfg.grad_accum {
            let batch = loader.next_batch(cfg.batch_size)?;
            let x = Tensor::from_vec(batch.inputs, (batch.rows, t), device)?;
            let y = Tensor::from_vec(batch.targets, (batch.rows, t), device)?;
            let loss = model.loss(&x, &y)?;
            loss_sum += loss.to_scalar::<f32>()? as f64;
            let g = loss.backward()?;
            accumulate_grads(&vars, &g, 1.0 / cfg.grad_accum as f32, &mut grads)?;
        }
        let loss = loss_sum / cfg.grad_accum as f64;
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
        state.cursor = loader.cursor();
        state.tokens_seen += tokens_per_step as u64;
        let m = StepMetrics {
            step: state.step,
            loss,
            lr,
            grad_norm,
            tokens: state.tokens_seen,
            tokens_per_sec: tokens_per_step as f64 / step_start.elapsed().as_secs_f64(),
            elapsed_s: start.elapsed().as_secs_f64(),
            skipped,
        };
        metrics.append(&m)?;
        on_event(&TrainEvent::Step(m));

        let last = state.step == cfg.steps;
        if state.step % cfg.eval_every == 0 || last {
            let (val_loss, val_bpb) = evaluate(
                &frozen(&params, &model_cfg)?,
                device,
                &val_rows,
                &token_bytes,
            )?;
            metrics.append_eval(state.step, val_loss, val_bpb)?;
            last_eval = Some((val_loss, val_bpb));
            on_event(&TrainEvent::Eval {
                step: state.step,
                val_loss,
                val_bpb,
            });
        }
        if cfg.sample_every > 0 && (state.step % cfg.sample_every == 0 || last) {
            let text = sample(
                &frozen(&params, &model_cfg)?,
                device,
                &tokenizer,
                cfg,
                state.step,
            )?;
            on_event(&TrainEvent::Sample {
                step: state.step,
                prompt: cfg.sample_prompt.clone(),
                text,
            });
        }
        if state.step % cfg.checkpoint_every == 0 || last {
            let path = save(&state, &opt)?;
            on_event(&TrainEvent::Checkpoint {
                step: state.step,
                path: path.clone(),
            });
            last_ckpt = Some(path);
        }
    }
    let (val_loss_last, val_bpb_last) = match last_eval {
        Some(e) => e,
        None => evaluate(
            &frozen(&params, &model_cfg)?,
            device,
            &val_rows,
            &token_bytes,
        )?,
    };
    let checkpoint = match last_ckpt {
        Some(p) => p,
        None => artifact::find_checkpoint(&paths.out)
            .map(|c| c.dir)
            .or_else(|_| save(&state, &opt))?,
    };
    on_event(&TrainEvent::Done {
        step: state.step,
        path: checkpoint.clone(),
    });
    Ok(PretrainSummary {
        steps: state.step,
        val_loss_first: state.val_loss_first,
        val_loss_last,
        val_bpb_last,
        checkpoint,
        skipped_steps: state.guard.total_skips,
    })
}

/// The current weights as constants (no autograd graph) for evaluation and sampling.
fn frozen(params: &Params, cfg: &GptConfig) -> Result<Gpt> {
    Ok(Gpt::new(cfg, params.frozen_var_builder(DType::F32))?)
}

/// A resumed run must be the same run: only the length and the reporting cadence may change.
fn check_resume_config(cfg: &PretrainConfig, meta: &Meta) -> Result<()> {
    let saved: PretrainConfig = serde_json::from_value(meta.config.clone())
        .map_err(|e| Error::State(format!("checkpoint config: {e}")))?;
    let mut a = cfg.clone();
    let mut b = saved;
    for c in [&mut a, &mut b] {
        c.steps = 0;
        c.eval_every = 1;
        c.sample_every = 0;
        c.checkpoint_every = 1;
        c.keep_checkpoints = 2;
    }
    if a != b {
        let (ja, jb) = (
            serde_json::to_value(&a).unwrap_or_default(),
            serde_json::to_value(&b).unwrap_or_default(),
        );
        let mut diffs = Vec::new();
        if let (Some(ma), Some(mb)) = (ja.as_object(), jb.as_object()) {
            for (k, v) in ma {
                if mb.get(k) != Some(v) {
                    diffs.push(k.clone());
                }
            }
        }
        return Err(Error::Config(format!(
            "cannot resume: the checkpoint was made with different settings ({}); only steps, \
             eval_every, sample_every, checkpoint_every and keep_checkpoints may change",
            diffs.join(", ")
        )));
    }
    Ok(())
}

/// Byte length of every token's text; special tokens count zero.
pub fn token_byte_lengths(tok: &Tokenizer) -> Vec<u32> {
    (0..tok.vocab_size() as u32)
        .map(|id| {
            if tok.is_special(id) {
                0
            } else {
                tok.decode_bytes(&[id]).map(|b| b.len() as u32).unwrap_or(0)
            }
        })
        .collect()
}

/// Mean next-token loss (nats) over the non-special targets of `rows`, and bits per byte:
/// `Σ nats / (ln 2 · Σ bytes)` over the same targets. `device` is where `model`'s weights are.
pub fn evaluate(
    model: &Gpt,
    device: &Device,
    rows: &[crate::batch::Batch],
    token_bytes: &[u32],
) -> Result<(f64, f64)> {
    let (mut nats, mut count, mut bytes) = (0.0f64, 0usize, 0u64);
    for chunk in rows.chunks(8) {
        let t = chunk[0].seq_len;
        let b = chunk.len();
        let inputs: Vec<u32> = chunk.iter().flat_map(|r| r.inputs.clone()).collect();
        let targets: Vec<u32> = chunk.iter().flat_map(|r| r.targets.clone()).collect();
        let x = Tensor::from_vec(inputs, (b, t), device)?;
        let logits = model.forward(&x, None)?.reshape((b * t, ()))?; // (B*T, V)
        let logp = chatforge_model::ops::log_softmax_last_dim(&logits)?;
        let y = Tensor::new(targets.as_slice(), device)?.unsqueeze(1)?;
        let picked = logp.gather(&y, 1)?.flatten_all()?.to_vec1::<f32>()?;
        for (lp, id) in picked.iter().zip(&targets) {
            let nb = token_bytes.get(*id as usize).copied().unwrap_or(0);
            if nb == 0 {
                continue;
            }
            nats -= *lp as f64;
            count += 1;
            bytes += nb as u64;
        }
    }
    if count == 0 {
        return Err(Error::Data("validation rows contain no text tokens".into()));
    }
    Ok((
        nats / count as f64,
        nats / (std::f64::consts::LN_2 * bytes as f64),
    ))
}

fn sample(
    model: &Gpt,
    device: &Device,
    tok: &Tokenizer,
    cfg: &PretrainConfig,
    step: u64,
) -> Result<String> {
    // A sample starts where a document would: after an end-of-text token.
    let mut prompt = vec![tok.special(Special::Eot)];
    prompt.extend(tok.encode(&cfg.sample_prompt));
    let params = SamplingParams {
        temperature: 0.8,
        top_k: 40,
        seed: cfg.seed ^ step,
        max_tokens: cfg.sample_tokens,
        stop_tokens: vec![tok.special(Special::Eot)],
        ..Default::default()
    };
    let out = generate(model, device, &prompt, &params, |_| true)?;
    let ids: Vec<u32> = out
        .tokens
        .into_iter()
        .filter(|id| !tok.is_special(*id))
        .collect();
    Ok(format!(
        "{}{}",
        cfg.sample_prompt,
        String::from_utf8_lossy(&tok.decode_bytes(&ids)?)
    ))
}

/// Path of the run's newest checkpoint, if any.
pub fn latest(out: &Path) -> Result<Option<PathBuf>> {
    Ok(chatforge_model::checkpoint::latest_checkpoint(out)?.map(|c| c.dir))
}
