//! The reward-model training loop: setup, batching by record, evaluation, the bias shift, and
//! checkpoints with bit-exact resume (the algorithm is in the parent module's docs).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use chatforge_data::corpus::ReadOptions;
use chatforge_data::ranking::read_rankings;
use chatforge_model::checkpoint::{latest_checkpoint, safetensors_from_bytes, Checkpoint};
use chatforge_model::ops::MatmulPrecision;
use chatforge_model::Params;
use chatforge_tokenizer::chat::ChatTemplate;
use chatforge_tokenizer::Special;
use serde::{Deserialize, Serialize};

use super::eval::{is_heldout, measures, prepare, score_all, Prepared, RewardEval};
use super::loss::{ranking_step_grads, RankedGroup};
use super::model::{init_score_head, load_scalar, ScalarModel};
use crate::artifact::{self, load_model, var_map, StageWriter};
use crate::batch::{Cursor, EpochOrder};
use crate::error::io_at;
use crate::events::{StepMetrics, TrainEvent};
use crate::guard::{guarded_step, Guard};
use crate::metrics::MetricsLog;
use crate::optim::{lr_at, AdamW, OptimConfig};
use crate::{Error, Result};

/// Everything that defines a reward-model run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RewardConfig {
    /// The chat template prompts are rendered with; unset = the one the SFT checkpoint was
    /// trained with (the resolved value is what checkpoints record).
    pub template: Option<ChatTemplate>,
    /// Ranking records per optimizer step (pairs, with `pairwise_baseline`).
    pub batch_size: usize,
    /// Most rows in one forward pass (memory); a record's K rows always share one forward.
    pub forward_rows: usize,
    /// Passes over the training records (used when `steps` is not set). InstructGPT: 1.
    pub epochs: u64,
    /// Optimizer steps; overrides `epochs`.
    pub steps: Option<u64>,
    pub optim: OptimConfig,
    /// Share of prompts held out (chosen by a hash of the prompt, so the split is stable).
    pub val_fraction: f64,
    pub eval_every: u64,
    pub checkpoint_every: u64,
    pub keep_checkpoints: usize,
    pub skip_bad_records: bool,
    /// Train the TRL way, for comparison: every ordered pair of every record is an
    /// independent row, shuffled, `batch_size` pairs a step.
    pub pairwise_baseline: bool,
    /// Seeds the score-head initialisation and the visiting order.
    pub seed: u64,
    /// Precision of the training forward and backward's linear-layer matrix products: `f32`, or
    /// `bf16` (bf16 autocast for the linears; weights, optimizer state and everything else stay
    /// f32). Evaluation always runs in f32.
    pub matmul_precision: MatmulPrecision,
}

impl Default for RewardConfig {
    fn default() -> Self {
        Self {
            template: None,
            batch_size: 16,
            forward_rows: 64,
            epochs: 1,
            steps: None,
            // Measured on the built-in world's rankings (600 records, default-size SFT model,
            // 1 and 3 epochs): 3e-4 beat 1e-4, 1e-3 and 3e-3 held out; a run is short (one
            // epoch of records), so the warm-up is too.
            optim: OptimConfig {
                lr: 3e-4,
                warmup_steps: 5,
                ..OptimConfig::default()
            },
            val_fraction: 0.1,
            eval_every: 50,
            checkpoint_every: 100,
            keep_checkpoints: 2,
            skip_bad_records: false,
            pairwise_baseline: false,
            seed: 1337,
            matmul_precision: MatmulPrecision::F32,
        }
    }
}

/// Inputs and output of a reward-model run.
#[derive(Debug, Clone)]
pub struct RewardPaths {
    /// The SFT checkpoint (or run directory) to start from.
    pub base: PathBuf,
    /// Ranking files (K-wise or pairwise JSONL).
    pub data: Vec<PathBuf>,
    pub out: PathBuf,
}

/// What a finished reward-model run reports.
#[derive(Debug, Clone, PartialEq)]
pub struct RewardSummary {
    pub steps: u64,
    /// Held-out evaluation of the final model (after the bias shift); `None` without a
    /// held-out split.
    pub heldout: Option<RewardEval>,
    /// The same before the first step.
    pub heldout_first: Option<RewardEval>,
    pub heldout_accuracy: f64,
    pub heldout_kendall_tau: f64,
    /// Held-out score mean and spread after the bias shift.
    pub reward_mean: f64,
    pub reward_std: f64,
    /// Added to `score_head.bias` so the training responses score mean 0.
    pub bias_shift: f64,
    /// Held-out pairwise accuracy at every evaluation.
    pub curve: Vec<(u64, f64)>,
    pub train_records: usize,
    pub val_records: usize,
    /// Ordered pairs in the training records.
    pub train_pairs: usize,
    /// Records dropped because a row (prompt + response + readout) is longer than the context.
    pub dropped_too_long: usize,
    /// Bad records skipped (with `skip_bad_records`).
    pub skipped_bad: usize,
    pub checkpoint: PathBuf,
}

/// One unit of training: some rows of one record and the ordered pairs among them (indices
/// into `rows`). K-wise: a whole record; pairwise baseline: one pair.
#[derive(Debug, Clone)]
struct Item {
    record: usize,
    rows: Vec<usize>,
    pairs: Vec<(usize, usize)>,
}

fn items(train: &[Prepared], pairwise: bool) -> Vec<Item> {
    let mut out = Vec::new();
    for (i, p) in train.iter().enumerate() {
        if p.pairs.is_empty() {
            continue;
        }
        if pairwise {
            out.extend(p.pairs.iter().map(|&(b, w)| Item {
                record: i,
                rows: vec![b, w],
                pairs: vec![(0, 1)],
            }));
        } else {
            out.push(Item {
                record: i,
                rows: (0..p.rows.len()).collect(),
                pairs: p.pairs.clone(),
            });
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct LoopState {
    step: u64,
    cursor: Cursor,
    guard: Guard,
    tokens_seen: u64,
    /// Held-out accuracy at each evaluation so far.
    curve: Vec<(u64, f64)>,
    /// The held-out evaluation before the first step.
    first: Option<RewardEval>,
    /// Set in the final checkpoint of a finished run: the bias before the shift (f32 bits)
    /// and the shift, so that a resumed run continues from the unshifted weights.
    bias_before: Option<u32>,
    bias_shift: Option<f64>,
}

const BIAS: &str = "score_head.bias";

/// The parameters the ranking loss trains: all but the LM head (not in the forward pass) and
/// the score bias (the loss depends only on score differences, so its gradient is exactly 0;
/// it is set by the shift after training).
pub fn trainable(params: &Params) -> BTreeMap<String, Var> {
    var_map(params)
        .into_iter()
        .filter(|(k, _)| k != "lm_head.weight" && k != BIAS)
        .collect()
}

fn bias_value(params: &Params) -> Result<f32> {
    let v = params
        .get(BIAS)
        .ok_or_else(|| Error::State(format!("no {BIAS}")))?;
    Ok(v.as_tensor().to_vec1::<f32>()?[0])
}

fn set_bias(params: &Params, value: f32) -> Result<()> {
    let v = params
        .get(BIAS)
        .ok_or_else(|| Error::State(format!("no {BIAS}")))?;
    v.set(&Tensor::new(&[value], v.device())?)?;
    Ok(())
}

fn load_trainable_moments(
    ck: &Checkpoint,
    vars: &BTreeMap<String, Var>,
    opt: &mut AdamW,
) -> Result<()> {
    let state: serde_json::Value = artifact::trainer_state(ck)?;
    let step = state
        .get("optimizer_step")
        .and_then(|v| v.as_u64())
        .ok_or_else(|| Error::File {
            path: ck.dir.join("trainer_state.json"),
            msg: "missing optimizer_step".into(),
        })?;
    // Read on the host; `load_state` moves the moments to the parameters' device.
    let tensors = safetensors_from_bytes(&ck.read("optimizer.safetensors")?, &Device::Cpu)?;
    opt.load_state(vars, &tensors, step)
}

/// Appends a `"kind": "reward_eval"` record to `metrics.jsonl` (beside the `MetricsLog`
/// handle, which writes unbuffered, so the order of lines is kept).
fn append_reward_eval(path: &Path, step: u64, e: &RewardEval) -> Result<()> {
    let mut v = serde_json::to_value(e).map_err(|e| Error::State(e.to_string()))?;
    if let serde_json::Value::Object(m) = &mut v {
        m.insert("kind".into(), "reward_eval".into());
        m.insert("step".into(), step.into());
    }
    let mut line = v.to_string();
    line.push('\n');
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(line.as_bytes()))
        .map_err(io_at(path))
}

/// Records one evaluation: `metrics.jsonl` (an `eval` line with the held-out loss and a
/// `reward_eval` line with everything), the events, and the accuracy curve.
fn report(
    metrics: &mut MetricsLog,
    metrics_path: &Path,
    step: u64,
    e: &RewardEval,
    curve: &mut Vec<(u64, f64)>,
    on_event: &mut dyn FnMut(&TrainEvent),
) -> Result<()> {
    metrics.append_eval(step, e.loss, f64::NAN)?;
    append_reward_eval(metrics_path, step, e)?;
    on_event(&TrainEvent::RewardEval {
        step,
        eval: e.clone(),
    });
    if e.accuracy.is_finite() {
        curve.retain(|(s, _)| *s < step);
        curve.push((step, e.accuracy));
    }
    Ok(())
}

/// Runs (or resumes) reward-model training from an SFT checkpoint, on `device` (see
/// [`crate::pretrain::run`]).
pub fn run(
    cfg: &RewardConfig,
    paths: &RewardPaths,
    device: &Device,
    resume: bool,
    on_event: &mut dyn FnMut(&TrainEvent),
) -> Result<RewardSummary> {
    for (name, v) in [
        ("batch_size", cfg.batch_size as u64),
        ("forward_rows", cfg.forward_rows as u64),
        ("eval_every", cfg.eval_every),
        ("checkpoint_every", cfg.checkpoint_every),
    ] {
        if v == 0 {
            return Err(Error::Config(format!("{name} must be at least 1")));
        }
    }
    if !(0.0..1.0).contains(&cfg.val_fraction) {
        return Err(Error::Config(format!(
            "val_fraction must be in [0, 1), got {}",
            cfg.val_fraction
        )));
    }
    // The rankings first: a bad file fails before a large model is loaded.
    let opts = ReadOptions {
        skip_bad_records: cfg.skip_bad_records,
    };
    let (records, stats) = read_rankings(&paths.data, &opts)?;
    let checkpoint = if resume {
        latest_checkpoint(&paths.out)?
    } else {
        None
    };

    // The weights: the SFT model plus a fresh head, or this run's newest checkpoint.
    let mut cfg = cfg.clone();
    let (model_cfg, params, tok, saved) = match &checkpoint {
        Some(ck) => {
            let l = load_scalar(&ck.dir, device)?;
            let saved: RewardConfig = serde_json::from_value(l.meta.config.clone())
                .map_err(|e| Error::State(format!("checkpoint config: {e}")))?;
            (l.config, l.params, l.tokenizer, Some(saved))
        }
        None => {
            let base = load_model(&paths.base, device)?;
            if cfg.template.is_none() {
                cfg.template = Some(crate::artifact::template_of(&base.meta)?);
            }
            let mut params = base.params;
            params.extend(init_score_head(&base.config, cfg.seed, device)?)?;
            (base.config, params, base.tokenizer, None)
        }
    };
    if let Some(saved) = &saved {
        if cfg.template.is_none() {
            cfg.template = saved.template;
        }
        let (mut a, mut b) = (cfg.clone(), saved.clone());
        for c in [&mut a, &mut b] {
            c.steps = None;
            c.epochs = 0;
            c.eval_every = 1;
            c.checkpoint_every = 1;
            c.keep_checkpoints = 2;
        }
        if a != b {
            return Err(Error::Config(format!(
                "cannot resume {}: it was made with different settings; only steps, epochs, \
                 eval and checkpoint cadence may change",
                paths.out.display()
            )));
        }
    }
    let template = cfg.template.unwrap_or_default();
    let ctx = model_cfg.context_length;

    // Data: rankings split by prompt hash, rendered to rows; over-long records dropped.
    let (mut train, mut val, mut dropped) = (Vec::new(), Vec::new(), 0usize);
    for r in &records {
        match prepare(&tok, template, r, ctx)? {
            Some(p) if is_heldout(&r.prompt, cfg.val_fraction) => val.push(p),
            Some(p) => train.push(p),
            None => dropped += 1,
        }
    }
    let items = items(&train, cfg.pairwise_baseline);
    if items.is_empty() {
        return Err(Error::Data(format!(
            "no training ranking with a preference fits the context of {ctx} tokens \
             ({} records read, {dropped} too long, {} held out)",
            records.len(),
            val.len()
        )));
    }
    if cfg.val_fraction > 0.0 && val.is_empty() {
        return Err(Error::Data(format!(
            "no prompt of the {} records fell in the held-out share {}; add data or set \
             val_fraction = 0 to train without held-out evaluation",
            records.len(),
            cfg.val_fraction
        )));
    }
    let total_steps = cfg
        .steps
        .unwrap_or_else(|| (cfg.epochs * items.len() as u64).div_ceil(cfg.batch_size as u64));
    if total_steps == 0 {
        return Err(Error::Config("the run has zero steps".into()));
    }

    let vars = trainable(&params);
    let mut opt = AdamW::new(cfg.optim.clone());
    // Set when resuming the final checkpoint of a finished run.
    let mut finished_at = None;
    let mut state = match &checkpoint {
        Some(ck) => {
            load_trainable_moments(ck, &vars, &mut opt)?;
            let mut s: LoopState = artifact::trainer_state(ck)?;
            // A finished run's final checkpoint holds shifted weights: train on from the
            // unshifted ones (the shift is recomputed at the end).
            if let Some(bits) = s.bias_before.take() {
                finished_at = Some(s.step);
                set_bias(&params, f32::from_bits(bits))?;
                s.bias_shift = None;
            }
            s
        }
        None => LoopState {
            step: 0,
            cursor: Cursor::default(),
            guard: Guard::default(),
            tokens_seen: 0,
            curve: Vec::new(),
            first: None,
            bias_before: None,
            bias_shift: None,
        },
    };
    let model = ScalarModel::new(&model_cfg, params.var_builder(DType::F32))?
        .with_matmul_precision(cfg.matmul_precision);
    let mut order = EpochOrder::new(items.len(), cfg.seed, state.cursor)?;
    let metrics_path = paths.out.join("metrics.jsonl");
    let mut metrics = MetricsLog::open(&metrics_path, state.step)?;
    let pad = tok.special(Special::Eot);
    let tokens =
        |set: &[Prepared]| -> usize { set.iter().flat_map(|p| p.rows.iter().map(Vec::len)).sum() };
    on_event(&TrainEvent::Prepared {
        train_tokens: tokens(&train),
        val_tokens: tokens(&val),
        reused: false,
    });
    if dropped > 0 {
        on_event(&TrainEvent::Skipped {
            step: state.step,
            reason: format!(
                "{dropped} ranking records have a response whose row (prompt + response + \
                 readout) is longer than the context of {ctx} tokens and were left out"
            ),
        });
    }
    on_event(&TrainEvent::Start {
        step: state.step,
        total_steps,
        params: params.num_params(),
        per_step: cfg.batch_size,
        unit: if cfg.pairwise_baseline {
            "pairs"
        } else {
            "rankings"
        },
        resumed: checkpoint.is_some(),
    });

    let evaluate = || -> Result<Option<RewardEval>> {
        if val.is_empty() {
            return Ok(None);
        }
        let frozen = ScalarModel::new(&model_cfg, params.frozen_var_builder(DType::F32))?;
        Ok(Some(measures(&val, &score_all(&frozen, &val, pad, ctx)?)))
    };
    if state.step == 0 {
        state.first = evaluate()?;
        if let Some(e) = &state.first {
            report(
                &mut metrics,
                &metrics_path,
                0,
                e,
                &mut state.curve,
                on_event,
            )?;
        }
    }

    let writer = StageWriter {
        stage: "reward",
        run_dir: &paths.out,
        params: &params,
        model_config: &model_cfg,
        tokenizer: &tok,
        config: &cfg,
        keep: cfg.keep_checkpoints,
    };
    let started = Instant::now();
    while state.step < total_steps {
        let t0 = Instant::now();
        let lr = lr_at(&cfg.optim, state.step, total_steps);
        let batch: Vec<RankedGroup> = (0..cfg.batch_size)
            .map(|_| {
                let item = &items[order.next_index()];
                let rec = &train[item.record];
                RankedGroup {
                    rows: item.rows.iter().map(|&r| rec.rows[r].as_slice()).collect(),
                    pairs: item.pairs.clone(),
                }
            })
            .collect();
        let (loss, mut grads, tokens) =
            ranking_step_grads(&model, &vars, &batch, cfg.forward_rows, pad)?;
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
        if state.step == total_steps {
            break; // the last evaluation and checkpoint follow the bias shift
        }
        if state.step % cfg.eval_every == 0 {
            if let Some(e) = evaluate()? {
                report(
                    &mut metrics,
                    &metrics_path,
                    state.step,
                    &e,
                    &mut state.curve,
                    on_event,
                )?;
            }
        }
        if state.step % cfg.checkpoint_every == 0 {
            let path = writer.save(state.step, &state, &opt)?;
            on_event(&TrainEvent::Checkpoint {
                step: state.step,
                path,
            });
        }
    }

    // Bias shift: the training responses (the SFT model's own samples) score mean 0.
    let bias = bias_value(&params)?;
    let frozen = ScalarModel::new(&model_cfg, params.frozen_var_builder(DType::F32))?;
    let scores = score_all(&frozen, &train, pad, ctx)?;
    let shift = -(scores.iter().sum::<f64>() / scores.len().max(1) as f64);
    set_bias(&params, (bias as f64 + shift) as f32)?;
    state.bias_before = Some(bias.to_bits());
    state.bias_shift = Some(shift);
    let last = evaluate()?;
    // (A finished run resumed with nothing left to do already recorded this evaluation.)
    let recorded = finished_at == Some(state.step);
    if let (Some(e), false) = (&last, recorded) {
        report(
            &mut metrics,
            &metrics_path,
            state.step,
            e,
            &mut state.curve,
            on_event,
        )?;
    }
    let checkpoint = writer.save(state.step, &state, &opt)?;
    on_event(&TrainEvent::Checkpoint {
        step: state.step,
        path: checkpoint.clone(),
    });
    on_event(&TrainEvent::Done {
        step: state.step,
        path: checkpoint.clone(),
    });
    let nan = f64::NAN;
    Ok(RewardSummary {
        steps: state.step,
        heldout_accuracy: last.as_ref().map_or(nan, |e| e.accuracy),
        heldout_kendall_tau: last.as_ref().map_or(nan, |e| e.kendall_tau),
        reward_mean: last.as_ref().map_or(nan, |e| e.reward_mean),
        reward_std: last.as_ref().map_or(nan, |e| e.reward_std),
        heldout: last,
        heldout_first: state.first,
        bias_shift: shift,
        curve: state.curve,
        train_records: train.len(),
        val_records: val.len(),
        train_pairs: train.iter().map(|p| p.pairs.len()).sum(),
        dropped_too_long: dropped,
        skipped_bad: stats.skipped_bad,
        checkpoint,
    })
}
