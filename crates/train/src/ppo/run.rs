//! The PPO loop (InstructGPT step 3): improve the SFT policy against the reward model under a KL
//! leash to SFT, optionally mixing in the pretraining objective (PPO-ptx).
//!
//! Models: the **policy** starts as the SFT model and is trained; the **reference** is a frozen
//! copy of SFT; the **reward model** is frozen; the **value model** starts as the reward model
//! (its transformer and its scalar head) and is trained with its own optimizer and learning
//! rate. Dropout does not exist in our models, so it is off everywhere.
//!
//! One iteration (step):
//! 1. **Rollouts.** `prompts_per_iteration` prompts in a seeded, resumable order;
//!    `samples_per_prompt` responses each from the engine (batched, KV cache) at temperature T,
//!    stopping at the assistant-end token or `max_new_tokens`. The engine's log-probs are those
//!    of `log_softmax(logits / T)`, and the training forward divides by the same T, so at the
//!    first minibatch of the first epoch the ratio is 1 (tested to 1e-5; the largest deviation
//!    is logged every step as `logprob_mismatch`).
//! 2. **Score.** The reward model reads `prompt ++ response ++ <|reward|>`. Raw scores update
//!    running moments (Chan's merge) and are whitened with them: `(s − μ) / σ`; a response that
//!    never ended gets `missing_eos_penalty` subtracted.
//! 3. **Per-token reward** `r_t = −β·(log π_old(t) − log π_ref(t))` (the k1 estimator, on the
//!    sampled tokens), plus the whitened score on the last token.
//! 4. **GAE** over each response (γ, λ; the value after the last token is 0), returns = A + V,
//!    advantages whitened over every token of the batch.
//! 5. **PPO epochs**: `ppo_epochs` passes over shuffled minibatches. Policy: clipped surrogate
//!    (ε) plus, for PPO-ptx, `ptx_coef ×` the next-token loss on a pretraining batch, then one
//!    AdamW step. Value: clipped value loss (ε_v) and its own AdamW step.
//! 6. **KL controller**: fixed β, or adaptive toward a target KL (Ziegler et al.), fed the mean
//!    KL per response.
//!
//! Logged every step (and to `metrics.jsonl`): score mean/std, KL, non-score reward, β,
//! entropy, policy/value loss, clip fractions, approx-KL, explained variance, response length,
//! share of responses that end, the log-prob mismatch, ptx loss. Guardrails raise
//! [`TrainEvent::Warning`] when these drift; a non-finite statistic, or a KL above `kl_stop`,
//! stops the run with [`Error::Diverged`]. Every `eval_every` steps: greedy responses to held-out
//! prompts are judged against SFT's (the world's gold judge when the prompt carries a task, the
//! reward model otherwise) for a win rate with a 95% interval, plus the mean reward-model score
//! and the held-out pretraining loss (the alignment tax).
//!
//! Checkpoints: the policy in `out/checkpoints/step-N` (loadable by every other stage), the
//! value model in `out/value/checkpoints/step-N`, written first. Resume is bit-exact: every
//! random stream is derived from (seed, step), and the prompt cursor, pretraining cursor, KL
//! controller, score moments and both optimizers are saved.
//!
//! Deviations: the learning rate is constant (TRL anneals linearly by default); one response
//! batch feeds both models, as in TRL.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use chatforge_data::corpus::ReadOptions;
use chatforge_data::prompts::{read_prompts, PromptRecord};
use chatforge_data::world::judge;
use chatforge_engine::{generate, FinishReason, SamplingParams};
use chatforge_model::checkpoint::{step_dir_name, Checkpoint};
use chatforge_model::{Gpt, GptConfig, Params};
use chatforge_tokenizer::chat::{assistant_end, render_prompt, ChatTemplate};
use chatforge_tokenizer::{Special, Tokenizer};
use serde::{Deserialize, Serialize};

use super::advantage::{explained_variance, gae, masked_whiten};
use super::control::{KlControl, RunningMoments};
use super::loss::{kl_k1, policy_loss, value_loss};
use super::rollout::{self, per_row, to_grid, token_logprobs, token_values, Rollout};
use crate::artifact::{self, load_model, template_of, var_map, StageWriter};
use crate::batch::{eval_rows, Batch, Cursor, EpochOrder, RowLoader};
use crate::events::TrainEvent;
use crate::metrics::MetricsLog;
use crate::optim::{accumulate_grads, clip_grads, AdamW, FlatGrads, OptimConfig};
use crate::prepare::{prepare_shards, CorpusSpec};
use crate::pretrain::{evaluate, token_byte_lengths};
use crate::reward::{load_scalar, reward_row, RewardModel, ScalarModel};
use crate::stats::{win_rate, WinRate};
use crate::{Error, Result};

/// Everything that defines a PPO run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PpoConfig {
    /// Rollout-and-update iterations (the run's steps).
    pub steps: u64,
    pub prompts_per_iteration: usize,
    pub samples_per_prompt: usize,
    /// Responses per minibatch.
    pub minibatch_size: usize,
    pub ppo_epochs: usize,
    /// Sampling temperature of rollouts (and of the recomputed log-probs).
    pub temperature: f32,
    pub max_new_tokens: usize,
    pub policy_lr: f64,
    pub value_lr: f64,
    pub grad_clip: f64,
    pub gamma: f64,
    pub lam: f64,
    /// ε of the clipped surrogate.
    pub clip_range: f64,
    /// ε of the clipped value loss.
    pub clip_range_value: f64,
    /// The KL penalty coefficient β: fixed or adaptive.
    pub kl: KlControl,
    /// Subtracted from the whitened score of a response that never ends.
    pub missing_eos_penalty: f64,
    /// γ_ptx: weight of the pretraining loss in the policy objective (0 = plain PPO).
    pub ptx_coef: f64,
    pub ptx_batch_size: usize,
    pub ptx_seq_len: usize,
    /// Stop when the mean KL per response exceeds this many nats.
    pub kl_stop: f64,
    pub eval_every: u64,
    /// Held-out prompts judged at each evaluation.
    pub eval_prompts: usize,
    pub checkpoint_every: u64,
    pub keep_checkpoints: usize,
    pub skip_bad_records: bool,
    pub seed: u64,
    /// The chat template (taken from the SFT checkpoint).
    pub template: ChatTemplate,
}

impl Default for PpoConfig {
    fn default() -> Self {
        Self {
            steps: 100,
            prompts_per_iteration: 16,
            samples_per_prompt: 4,
            minibatch_size: 16,
            ppo_epochs: 4,
            temperature: 1.0,
            max_new_tokens: 48,
            policy_lr: 1e-5,
            value_lr: 1e-4,
            grad_clip: 1.0,
            gamma: 1.0,
            lam: 0.95,
            clip_range: 0.2,
            clip_range_value: 0.2,
            kl: KlControl::Adaptive {
                beta: 0.1,
                target: 6.0,
                horizon: 10_000.0,
            },
            missing_eos_penalty: 1.0,
            ptx_coef: 0.0,
            ptx_batch_size: 4,
            ptx_seq_len: 128,
            kl_stop: 50.0,
            eval_every: 20,
            eval_prompts: 64,
            checkpoint_every: 20,
            keep_checkpoints: 2,
            skip_bad_records: false,
            seed: 1337,
            template: ChatTemplate::Native,
        }
    }
}

/// Inputs and output of a PPO run.
#[derive(Debug, Clone)]
pub struct PpoPaths {
    /// The SFT checkpoint: the policy's start and the frozen reference.
    pub policy: PathBuf,
    /// The reward model: frozen scorer and the value model's start.
    pub reward: PathBuf,
    /// Training prompts (JSONL of `{"prompt": [...]}`).
    pub prompts: Vec<PathBuf>,
    /// Held-out prompts for the win rate (with world tasks for the gold judge, when available).
    pub eval_prompts: Option<PathBuf>,
    /// Pretraining corpus: required for PPO-ptx; with `pretrain_val` it also measures the
    /// alignment tax.
    pub pretrain_train: Vec<PathBuf>,
    pub pretrain_val: Vec<PathBuf>,
    pub out: PathBuf,
}

/// One iteration's numbers (also a `metrics.jsonl` record, `"kind": "ppo"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PpoStats {
    pub step: u64,
    /// Raw reward-model score of the rollouts.
    pub score_mean: f64,
    pub score_std: f64,
    /// Mean KL to the reference per response (sum over its tokens, k1 estimator).
    pub kl: f64,
    /// Mean per-response sum of the KL penalty `−β·kl`.
    pub non_score_reward: f64,
    pub beta: f64,
    /// Mean entropy per response token (nats).
    pub entropy: f64,
    pub policy_loss: f64,
    pub value_loss: f64,
    pub clip_frac: f64,
    pub value_clip_frac: f64,
    pub approx_kl: f64,
    pub explained_variance: f64,
    pub response_len: f64,
    /// Share of responses that ended with the assistant-end token.
    pub ended_frac: f64,
    /// Largest |log π_train − log π_rollout| at the first minibatch of the first epoch.
    pub logprob_mismatch: f64,
    /// Largest |ratio − 1| at the first minibatch of the first epoch.
    pub ratio_dev_first: f64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ptx_loss: Option<f64>,
    pub policy_grad_norm: f64,
    pub value_grad_norm: f64,
    pub rollout_s: f64,
    pub train_s: f64,
    pub elapsed_s: f64,
}

/// Held-out numbers at one evaluation (a `metrics.jsonl` record, `"kind": "ppo_eval"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PpoEval {
    pub step: u64,
    /// Win rate of the policy's greedy responses against SFT's (ties count half).
    pub win_rate: Option<WinRate>,
    /// Whether the judge was the world's gold judge (else the reward model).
    pub gold_judge: bool,
    /// Mean raw reward-model score of the policy's greedy responses (none without eval
    /// prompts).
    pub rm_score: Option<f64>,
    /// Held-out pretraining loss (nats/token): the alignment tax against step 0.
    pub pretrain_loss: Option<f64>,
}

/// What a finished run reports.
#[derive(Debug, Clone, PartialEq)]
pub struct PpoSummary {
    pub steps: u64,
    pub first_eval: Option<PpoEval>,
    pub last_eval: Option<PpoEval>,
    pub last_stats: Option<PpoStats>,
    pub checkpoint: PathBuf,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Skips {
    consecutive: u32,
    total: u64,
}

/// Loop state saved in `trainer_state.json` of the policy checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct LoopState {
    step: u64,
    cursor: Cursor,
    ptx_cursor: Cursor,
    kl: KlControl,
    scores: RunningMoments,
    policy_skips: Skips,
    value_skips: Skips,
    first_eval: Option<PpoEval>,
}

fn check_config(cfg: &PpoConfig) -> Result<()> {
    for (name, v) in [
        ("prompts_per_iteration", cfg.prompts_per_iteration as u64),
        ("samples_per_prompt", cfg.samples_per_prompt as u64),
        ("minibatch_size", cfg.minibatch_size as u64),
        ("ppo_epochs", cfg.ppo_epochs as u64),
        ("max_new_tokens", cfg.max_new_tokens as u64),
        ("eval_every", cfg.eval_every),
        ("checkpoint_every", cfg.checkpoint_every),
    ] {
        if v == 0 {
            return Err(Error::Config(format!("{name} must be at least 1")));
        }
    }
    let bad = |x: f64| !x.is_finite() || x < 0.0;
    if bad(cfg.temperature as f64) || cfg.temperature == 0.0 {
        return Err(Error::Config(
            "temperature must be positive: PPO samples its rollouts".into(),
        ));
    }
    for (name, v) in [
        ("policy_lr", cfg.policy_lr),
        ("value_lr", cfg.value_lr),
        ("clip_range", cfg.clip_range),
        ("clip_range_value", cfg.clip_range_value),
        ("ptx_coef", cfg.ptx_coef),
        ("missing_eos_penalty", cfg.missing_eos_penalty),
        ("gamma", cfg.gamma),
        ("lam", cfg.lam),
    ] {
        if bad(v) {
            return Err(Error::Config(format!(
                "{name} must be finite and non-negative"
            )));
        }
    }
    if cfg.kl.beta() < 0.0 || !cfg.kl.beta().is_finite() {
        return Err(Error::Config(
            "kl beta must be finite and non-negative".into(),
        ));
    }
    Ok(())
}

fn optimizer(lr: f64, grad_clip: f64) -> AdamW {
    AdamW::new(OptimConfig {
        lr,
        min_lr_ratio: 1.0,
        warmup_steps: 0,
        weight_decay: 0.0,
        grad_clip,
        ..OptimConfig::default()
    })
}

/// The trainable variables of a scalar model: everything but an untied LM head, which the
/// value read-out never uses (so it gets no gradient).
fn scalar_vars(params: &Params) -> std::collections::BTreeMap<String, candle_core::Var> {
    var_map(params)
        .into_iter()
        .filter(|(k, _)| k != "lm_head.weight")
        .collect()
}

/// One optimizer step that is skipped (weights and moments untouched) when the loss or the
/// gradient is not finite; ten in a row stop the run.
#[allow(clippy::too_many_arguments)]
fn finite_step(
    skips: &mut Skips,
    opt: &mut AdamW,
    vars: &std::collections::BTreeMap<String, candle_core::Var>,
    grads: &mut FlatGrads,
    loss: f64,
    lr: f64,
    step: u64,
    what: &str,
    on_event: &mut dyn FnMut(&TrainEvent),
) -> Result<f64> {
    let norm = clip_grads(grads, opt.config().grad_clip);
    if loss.is_finite() && norm.is_finite() {
        opt.step(vars, grads, lr)?;
        skips.consecutive = 0;
        return Ok(norm);
    }
    skips.consecutive += 1;
    skips.total += 1;
    let reason = format!("{what} update skipped: loss {loss}, gradient norm {norm}");
    if skips.consecutive >= 10 {
        return Err(Error::Diverged {
            step,
            reason: format!("{reason}; 10 {what} updates in a row were not finite"),
        });
    }
    on_event(&TrainEvent::Skipped { step, reason });
    Ok(norm)
}

/// Rendered prompts: (index in the prompt file, ids).
type Rendered = Vec<(usize, Vec<u32>)>;

/// A rendered prompt set: every prompt that leaves room for a response, and how many did not.
fn render_prompts(
    tok: &Tokenizer,
    template: ChatTemplate,
    recs: &[PromptRecord],
    max_len: usize,
) -> Result<(Rendered, usize)> {
    let mut out = Vec::new();
    let mut dropped = 0;
    for (i, r) in recs.iter().enumerate() {
        let ids = render_prompt(tok, &r.prompt, template)?;
        if ids.len() <= max_len {
            out.push((i, ids));
        } else {
            dropped += 1;
        }
    }
    Ok((out, dropped))
}

/// Greedy response ids (end token included when it ended) and whether it ended.
fn greedy(model: &Gpt, prompt: &[u32], end: u32, max_tokens: usize) -> Result<(Vec<u32>, bool)> {
    let params = SamplingParams {
        temperature: 0.0,
        max_tokens,
        stop_tokens: vec![end],
        ..SamplingParams::default()
    };
    let g = generate(model, prompt, &params, |_| true)?;
    Ok((g.tokens, g.finish == FinishReason::Stop))
}

fn text_of(tok: &Tokenizer, ids: &[u32], end: u32) -> Result<String> {
    let ids: Vec<u32> = ids.iter().copied().filter(|&i| i != end).collect();
    Ok(String::from_utf8_lossy(&tok.decode_bytes(&ids)?).into_owned())
}

/// Held-out prompts and SFT's greedy responses to them (computed once per run).
struct EvalSet {
    prompts: Vec<(PromptRecord, Vec<u32>)>,
    sft: Vec<(String, bool)>,
    sft_scores: Vec<f32>,
}

#[allow(clippy::too_many_arguments)]
fn evaluate_policy(
    step: u64,
    policy: &Gpt,
    set: &EvalSet,
    rm: &RewardModel,
    tok: &Tokenizer,
    end: u32,
    max_tokens: usize,
    pretrain: Option<(&[Batch], &[u32])>,
) -> Result<PpoEval> {
    let (mut w, mut t, mut l) = (0usize, 0usize, 0usize);
    let mut gold = !set.prompts.is_empty();
    let mut rows = Vec::with_capacity(set.prompts.len());
    let mut texts = Vec::with_capacity(set.prompts.len());
    for (rec, ids) in &set.prompts {
        let (resp, ended) = greedy(policy, ids, end, max_tokens)?;
        rows.push(reward_row(tok, rm.template(), ids, &resp));
        texts.push((text_of(tok, &resp, end)?, ended));
        gold &= rec.task.is_some();
    }
    let scores = if rows.is_empty() {
        Vec::new()
    } else {
        rm.score_ids(&rows)?
    };
    for (i, (rec, _)) in set.prompts.iter().enumerate() {
        let (a, ea) = (texts[i].0.as_str(), texts[i].1);
        let (b, eb) = (set.sft[i].0.as_str(), set.sft[i].1);
        let ord = match (gold, rec.task()) {
            (true, Some(task)) => judge::compare(&task, (a, ea), (b, eb)),
            _ => scores[i]
                .partial_cmp(&set.sft_scores[i])
                .unwrap_or(std::cmp::Ordering::Equal),
        };
        match ord {
            std::cmp::Ordering::Greater => w += 1,
            std::cmp::Ordering::Equal => t += 1,
            std::cmp::Ordering::Less => l += 1,
        }
    }
    let pretrain_loss = match pretrain {
        Some((rows, bytes)) => Some(evaluate(policy, rows, bytes)?.0),
        None => None,
    };
    Ok(PpoEval {
        step,
        win_rate: (!set.prompts.is_empty()).then(|| win_rate(w, t, l)),
        gold_judge: gold,
        rm_score: (!scores.is_empty())
            .then(|| mean(&scores.iter().map(|&s| s as f64).collect::<Vec<_>>())),
        pretrain_loss,
    })
}

fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.iter().sum::<f64>() / xs.len() as f64
}

fn variance(xs: &[f64]) -> f64 {
    let m = mean(xs);
    mean(&xs.iter().map(|x| (x - m) * (x - m)).collect::<Vec<_>>())
}

/// Derives a 64-bit seed for stream `label` at `step`.
fn stream_seed(seed: u64, label: &str, step: u64) -> u64 {
    chatforge_data::Rng::derive(seed, &format!("{label}-{step}")).next_u64()
}

/// The value model's checkpoint at `step` of a run.
fn value_dir(out: &Path) -> PathBuf {
    out.join("value")
}

/// Runs (or resumes) PPO.
pub fn run(
    cfg_in: &PpoConfig,
    paths: &PpoPaths,
    resume: bool,
    on_event: &mut dyn FnMut(&TrainEvent),
) -> Result<PpoSummary> {
    check_config(cfg_in)?;
    let checkpoint = if resume {
        chatforge_model::checkpoint::latest_checkpoint(&paths.out)?
    } else {
        None
    };
    let sft = load_model(&paths.policy)?;
    let mut cfg = cfg_in.clone();
    cfg.template = template_of(&sft.meta)?;
    let template = cfg.template;
    let rm = RewardModel::load(&paths.reward)?;
    if rm.tokenizer().hash() != sft.tokenizer.hash() {
        return Err(Error::Config(format!(
            "the reward model {} and the policy {} use different tokenizers",
            paths.reward.display(),
            paths.policy.display()
        )));
    }
    let tok = sft.tokenizer.clone();
    let model_cfg: GptConfig = sft.config.clone();
    let reference = sft.model;
    let end = assistant_end(&tok, template)?;
    let pad = tok.special(Special::Eot);

    // Policy and value weights: from SFT and the RM, or from this run's checkpoints.
    let (policy_params, value_params, mut state, mut popt, mut vopt) = match &checkpoint {
        None => {
            let policy = load_model(&paths.policy)?.params;
            let value = load_scalar(&paths.reward)?.params;
            let state = LoopState {
                step: 0,
                cursor: Cursor::default(),
                ptx_cursor: Cursor::default(),
                kl: cfg.kl.clone(),
                scores: RunningMoments::default(),
                policy_skips: Skips::default(),
                value_skips: Skips::default(),
                first_eval: None,
            };
            (
                policy,
                value,
                state,
                optimizer(cfg.policy_lr, cfg.grad_clip),
                optimizer(cfg.value_lr, cfg.grad_clip),
            )
        }
        Some(ck) => {
            let loaded = load_model(&ck.dir)?;
            let saved: PpoConfig = serde_json::from_value(loaded.meta.config.clone())
                .map_err(|e| Error::State(format!("checkpoint config: {e}")))?;
            let (mut a, mut b) = (cfg.clone(), saved);
            for c in [&mut a, &mut b] {
                c.steps = 0;
                c.eval_every = 1;
                c.eval_prompts = 0;
                c.checkpoint_every = 1;
                c.keep_checkpoints = 2;
                c.kl_stop = 0.0;
            }
            if a != b {
                return Err(Error::Config(format!(
                    "cannot resume {}: it was made with different settings; only steps, eval, \
                     checkpoint cadence and kl_stop may change",
                    ck.dir.display()
                )));
            }
            let state: LoopState = artifact::trainer_state(ck)?;
            let vck = Checkpoint::verify(
                &value_dir(&paths.out)
                    .join(chatforge_model::checkpoint::CHECKPOINTS_DIR)
                    .join(step_dir_name(state.step)),
            )?;
            let value = load_scalar(&vck.dir)?.params;
            let mut popt = optimizer(cfg.policy_lr, cfg.grad_clip);
            let mut vopt = optimizer(cfg.value_lr, cfg.grad_clip);
            artifact::load_optimizer(ck, &loaded.params, &mut popt)?;
            let vvars = scalar_vars(&value);
            load_value_optimizer(&vck, &vvars, &mut vopt)?;
            (loaded.params, value, state, popt, vopt)
        }
    };
    let policy = Gpt::new(&model_cfg, policy_params.var_builder(DType::F32))?;
    let value = ScalarModel::new(&model_cfg, value_params.var_builder(DType::F32))?;
    let pvars = var_map(&policy_params);
    let vvars = scalar_vars(&value_params);

    // Prompts.
    let opts = ReadOptions {
        skip_bad_records: cfg.skip_bad_records,
    };
    let max_prompt = model_cfg
        .context_length
        .saturating_sub(cfg.max_new_tokens + 1);
    let (recs, _) = read_prompts(&paths.prompts, &opts)?;
    let (prompts, dropped) = render_prompts(&tok, template, &recs, max_prompt)?;
    if prompts.is_empty() {
        return Err(Error::Data(format!(
            "no training prompt leaves room for {} new tokens in the context of {}",
            cfg.max_new_tokens, model_cfg.context_length
        )));
    }
    if dropped > 0 {
        on_event(&TrainEvent::Skipped {
            step: state.step,
            reason: format!("{dropped} prompts are too long to answer and were left out"),
        });
    }
    let mut order = EpochOrder::new(prompts.len(), cfg.seed, state.cursor)?;

    // Pretraining data: the ptx batches and the alignment-tax rows.
    let pretrain = if paths.pretrain_train.is_empty() {
        if cfg.ptx_coef > 0.0 {
            return Err(Error::Config(
                "ptx_coef > 0 needs pretraining data (--pretrain-train)".into(),
            ));
        }
        None
    } else {
        let spec = CorpusSpec {
            train: paths.pretrain_train.clone(),
            val: paths.pretrain_val.clone(),
            val_fraction: 0.05,
            skip_bad_records: cfg.skip_bad_records,
        };
        let prep = prepare_shards(&spec, &tok, &paths.out.join("pretrain-shards"))?;
        let t = cfg.ptx_seq_len.min(model_cfg.context_length);
        let rows = eval_rows(&prep.val, t, 32)?;
        let loader = RowLoader::new(prep.train, t, cfg.seed, state.ptx_cursor)?;
        Some((loader, rows, token_byte_lengths(&tok)))
    };
    let (mut ptx_loader, tax_rows, token_bytes) = match pretrain {
        Some((l, r, b)) => (Some(l), r, b),
        None => (None, Vec::new(), Vec::new()),
    };
    let tax = (!tax_rows.is_empty()).then_some((tax_rows.as_slice(), token_bytes.as_slice()));

    // Held-out prompts with SFT's greedy answers.
    let eval_set = match &paths.eval_prompts {
        Some(p) if cfg.eval_prompts > 0 => {
            let (recs, _) = read_prompts(std::slice::from_ref(p), &opts)?;
            let (rendered, _) = render_prompts(&tok, template, &recs, max_prompt)?;
            let mut prompts = Vec::new();
            let mut sft_out = Vec::new();
            let mut rows = Vec::new();
            for (i, ids) in rendered.into_iter().take(cfg.eval_prompts) {
                let (resp, ended) = greedy(&reference, &ids, end, cfg.max_new_tokens)?;
                rows.push(reward_row(&tok, template, &ids, &resp));
                sft_out.push((text_of(&tok, &resp, end)?, ended));
                prompts.push((recs[i].clone(), ids));
            }
            let sft_scores = if rows.is_empty() {
                Vec::new()
            } else {
                rm.score_ids(&rows)?
            };
            EvalSet {
                prompts,
                sft: sft_out,
                sft_scores,
            }
        }
        _ => EvalSet {
            prompts: Vec::new(),
            sft: Vec::new(),
            sft_scores: Vec::new(),
        },
    };

    let mut metrics = MetricsLog::open(&paths.out.join("metrics.jsonl"), state.step)?;
    let per_step = cfg.prompts_per_iteration * cfg.samples_per_prompt;
    on_event(&TrainEvent::Start {
        step: state.step,
        total_steps: cfg.steps,
        params: policy_params.num_params() + value_params.num_params(),
        per_step,
        unit: "responses",
        resumed: checkpoint.is_some(),
    });

    let frozen = |p: &Params| Gpt::new(&model_cfg, p.frozen_var_builder(DType::F32));
    let evaluate_at = |step: u64| -> Result<PpoEval> {
        evaluate_policy(
            step,
            &frozen(&policy_params)?,
            &eval_set,
            &rm,
            &tok,
            end,
            cfg.max_new_tokens,
            tax,
        )
    };
    if state.step == 0 && state.first_eval.is_none() {
        let e = evaluate_at(0)?;
        metrics.append_json(&tagged("ppo_eval", &e)?)?;
        on_event(&TrainEvent::PpoEval(e.clone()));
        state.first_eval = Some(e);
    }

    let policy_writer = StageWriter {
        stage: "ppo",
        run_dir: &paths.out,
        params: &policy_params,
        model_config: &model_cfg,
        tokenizer: &tok,
        config: &cfg,
        keep: cfg.keep_checkpoints,
    };
    let vdir = value_dir(&paths.out);
    let value_writer = StageWriter {
        stage: "ppo-value",
        run_dir: &vdir,
        params: &value_params,
        model_config: &model_cfg,
        tokenizer: &tok,
        config: &cfg,
        keep: cfg.keep_checkpoints,
    };
    let save = |state: &LoopState, popt: &AdamW, vopt: &AdamW| -> Result<PathBuf> {
        value_writer.save(state.step, &serde_json::json!({ "step": state.step }), vopt)?;
        policy_writer.save(state.step, state, popt)
    };

    let started = Instant::now();
    let mut last_eval = None;
    let mut last_stats = None;
    let mut last_ckpt = None;
    while state.step < cfg.steps {
        let step = state.step;
        let t0 = Instant::now();
        // 1. Rollouts from the current policy.
        let batch: Vec<(usize, &[u32])> = (0..cfg.prompts_per_iteration)
            .map(|_| {
                let (i, ids) = &prompts[order.next_index()];
                (*i, ids.as_slice())
            })
            .collect();
        let sampling = SamplingParams {
            temperature: cfg.temperature,
            seed: stream_seed(cfg.seed, "rollout", step),
            max_tokens: cfg.max_new_tokens,
            stop_tokens: vec![end],
            ..SamplingParams::default()
        };
        let current = frozen(&policy_params)?;
        let rollouts = rollout::sample(&current, &batch, cfg.samples_per_prompt, &sampling)?;
        let n = rollouts.len();

        // 2. Scores, whitened with running moments; the missing-end penalty.
        let rows: Vec<Vec<u32>> = rollouts
            .iter()
            .map(|r| reward_row(&tok, template, &r.prompt, &r.response))
            .collect();
        let raw: Vec<f64> = rm.score_ids(&rows)?.iter().map(|&s| s as f64).collect();
        let ended: Vec<bool> = rollouts.iter().map(|r| r.ended).collect();
        let scores = whiten_scores(&raw, &ended, &mut state.scores, cfg.missing_eos_penalty);

        // Reference log-probs and old values, no gradient.
        let frozen_value =
            ScalarModel::new(&model_cfg, value_params.frozen_var_builder(DType::F32))?;
        let mut ref_lp = Vec::with_capacity(n);
        let mut old_values = Vec::with_capacity(n);
        for chunk in rollouts.chunks(cfg.minibatch_size) {
            let refs: Vec<&Rollout> = chunk.iter().collect();
            let packed = rollout::pack(&refs, pad)?;
            let (lp, _) = token_logprobs(&reference, &packed, cfg.temperature as f64)?;
            ref_lp.extend(per_row(&lp, &packed)?);
            old_values.extend(per_row(&token_values(&frozen_value, &packed)?, &packed)?);
        }
        let old_lp: Vec<Vec<f64>> = rollouts
            .iter()
            .map(|r| r.logprobs.iter().map(|&x| x as f64).collect())
            .collect();

        // 3-4. Per-token rewards, GAE, whitened advantages.
        let beta = state.kl.beta();
        let mut kls = Vec::with_capacity(n);
        let mut advantages = Vec::with_capacity(n);
        let mut returns = Vec::with_capacity(n);
        for i in 0..n {
            let (rewards, kl) = token_rewards(&old_lp[i], &ref_lp[i], beta, scores[i]);
            let (adv, ret) = gae(&rewards, &old_values[i], cfg.gamma, cfg.lam);
            kls.push(kl.iter().sum::<f64>());
            advantages.push(adv);
            returns.push(ret);
        }
        let advantages = masked_whiten(&advantages);
        let rollout_s = t0.elapsed().as_secs_f64();

        // 5. PPO epochs over shuffled minibatches.
        let t1 = Instant::now();
        let mut rng = chatforge_data::Rng::derive(cfg.seed, &format!("minibatch-{step}"));
        let (mut pl_sum, mut vl_sum, mut cf_sum, mut vcf_sum, mut akl_sum) =
            (0.0, 0.0, 0.0, 0.0, 0.0);
        let (mut ent_sum, mut ent_count) = (0.0f64, 0usize);
        let (mut pgn, mut vgn, mut ptx_sum, mut updates) = (0.0f64, 0.0f64, 0.0f64, 0usize);
        let (mut mismatch, mut ratio_dev) = (0.0f64, 0.0f64);
        for epoch in 0..cfg.ppo_epochs {
            let mut idx: Vec<usize> = (0..n).collect();
            rng.shuffle(&mut idx);
            for (mb, chunk) in idx.chunks(cfg.minibatch_size).enumerate() {
                let refs: Vec<&Rollout> = chunk.iter().map(|&i| &rollouts[i]).collect();
                let packed = rollout::pack(&refs, pad)?;
                let pick = |v: &[Vec<f64>]| -> Vec<Vec<f64>> {
                    chunk.iter().map(|&i| v[i].clone()).collect()
                };
                let old = to_grid(&pick(&old_lp), &packed)?;
                let adv = to_grid(&pick(&advantages), &packed)?;
                let ret = to_grid(&pick(&returns), &packed)?;
                let vold = to_grid(&pick(&old_values), &packed)?;

                // Policy.
                let (logp, entropy) = token_logprobs(&policy, &packed, cfg.temperature as f64)?;
                if epoch == 0 && mb == 0 {
                    let new = per_row(&logp, &packed)?;
                    for (a, b) in new.iter().zip(pick(&old_lp).iter()) {
                        for (x, y) in a.iter().zip(b) {
                            mismatch = mismatch.max((x - y).abs());
                            ratio_dev = ratio_dev.max(((x - y).exp() - 1.0).abs());
                        }
                    }
                }
                for row in per_row(&entropy, &packed)? {
                    ent_sum += row.iter().sum::<f64>();
                    ent_count += row.len();
                }
                let pl = policy_loss(&logp, &old, &adv, &packed.mask, cfg.clip_range)?;
                let mut objective = pl.loss.clone();
                let mut ptx_loss = None;
                if let Some(loader) = ptx_loader.as_mut().filter(|_| cfg.ptx_coef > 0.0) {
                    let b = loader.next_batch(cfg.ptx_batch_size)?;
                    let x = Tensor::from_vec(b.inputs, (b.rows, b.seq_len), &Device::Cpu)?;
                    let y = Tensor::from_vec(b.targets, (b.rows, b.seq_len), &Device::Cpu)?;
                    let l = policy.loss(&x, &y)?;
                    ptx_loss = Some(l.to_scalar::<f32>()? as f64);
                    objective = (objective + (l * cfg.ptx_coef)?)?;
                }
                let loss_value = objective.to_scalar::<f32>()? as f64;
                let mut grads = FlatGrads::new();
                accumulate_grads(&pvars, &objective.backward()?, 1.0, &mut grads)?;
                pgn += finite_step(
                    &mut state.policy_skips,
                    &mut popt,
                    &pvars,
                    &mut grads,
                    loss_value,
                    cfg.policy_lr,
                    step,
                    "policy",
                    on_event,
                )?;

                // Value.
                let v = token_values(&value, &packed)?;
                let vl = value_loss(&v, &vold, &ret, &packed.mask, cfg.clip_range_value)?;
                let vloss_value = vl.loss.to_scalar::<f32>()? as f64;
                let mut vgrads = FlatGrads::new();
                accumulate_grads(&vvars, &vl.loss.backward()?, 1.0, &mut vgrads)?;
                vgn += finite_step(
                    &mut state.value_skips,
                    &mut vopt,
                    &vvars,
                    &mut vgrads,
                    vloss_value,
                    cfg.value_lr,
                    step,
                    "value",
                    on_event,
                )?;

                pl_sum += pl.loss.to_scalar::<f32>()? as f64;
                vl_sum += vloss_value;
                cf_sum += pl.clip_frac;
                akl_sum += pl.approx_kl;
                vcf_sum += vl.clip_frac;
                ptx_sum += ptx_loss.unwrap_or(0.0);
                updates += 1;
            }
        }
        let u = updates.max(1) as f64;

        // 6. The KL controller.
        let mean_kl = mean(&kls);
        state.kl.update(mean_kl, n);
        state.step += 1;
        state.cursor = order.cursor();
        if let Some(l) = &ptx_loader {
            state.ptx_cursor = l.cursor();
        }

        let flat = |v: &[Vec<f64>]| -> Vec<f64> { v.iter().flatten().copied().collect() };
        let (fr, fv) = (flat(&returns), flat(&old_values));
        let stats = PpoStats {
            step: state.step,
            score_mean: mean(&raw),
            score_std: variance(&raw).sqrt(),
            kl: mean_kl,
            non_score_reward: -beta * mean_kl,
            beta,
            entropy: ent_sum / ent_count.max(1) as f64,
            policy_loss: pl_sum / u,
            value_loss: vl_sum / u,
            clip_frac: cf_sum / u,
            value_clip_frac: vcf_sum / u,
            approx_kl: akl_sum / u,
            explained_variance: explained_variance(&fv, &fr),
            response_len: mean(
                &rollouts
                    .iter()
                    .map(|r| r.response.len() as f64)
                    .collect::<Vec<_>>(),
            ),
            ended_frac: rollouts.iter().filter(|r| r.ended).count() as f64 / n as f64,
            logprob_mismatch: mismatch,
            ratio_dev_first: ratio_dev,
            ptx_loss: (cfg.ptx_coef > 0.0).then_some(ptx_sum / u),
            policy_grad_norm: pgn / u,
            value_grad_norm: vgn / u,
            rollout_s,
            train_s: t1.elapsed().as_secs_f64(),
            elapsed_s: started.elapsed().as_secs_f64(),
        };
        metrics.append_json(&tagged("ppo", &stats)?)?;
        on_event(&TrainEvent::Ppo(stats.clone()));
        for w in guardrails(&cfg, &stats) {
            on_event(&TrainEvent::Warning {
                step: state.step,
                message: w,
            });
        }
        if let Some(reason) = divergence(&cfg, &stats) {
            return Err(Error::Diverged {
                step: state.step,
                reason,
            });
        }
        last_stats = Some(stats);

        let is_last = state.step == cfg.steps;
        if state.step % cfg.eval_every == 0 || is_last {
            let e = evaluate_at(state.step)?;
            metrics.append_json(&tagged("ppo_eval", &e)?)?;
            on_event(&TrainEvent::PpoEval(e.clone()));
            last_eval = Some(e);
        }
        if state.step % cfg.checkpoint_every == 0 || is_last {
            let path = save(&state, &popt, &vopt)?;
            on_event(&TrainEvent::Checkpoint {
                step: state.step,
                path: path.clone(),
            });
            last_ckpt = Some(path);
        }
    }
    let checkpoint = match last_ckpt {
        Some(p) => p,
        None => save(&state, &popt, &vopt)?,
    };
    on_event(&TrainEvent::Done {
        step: state.step,
        path: checkpoint.clone(),
    });
    Ok(PpoSummary {
        steps: state.step,
        first_eval: state.first_eval,
        last_eval,
        last_stats,
        checkpoint,
    })
}

/// Step 2: raw reward-model scores whitened with the running moments (updated with this batch
/// first), minus `penalty` for every response that did not end.
pub fn whiten_scores(
    raw: &[f64],
    ended: &[bool],
    moments: &mut RunningMoments,
    penalty: f64,
) -> Vec<f64> {
    moments.update(raw);
    let (mu, sd) = (moments.mean(), moments.std().max(1e-8));
    raw.iter()
        .zip(ended)
        .map(|(s, &e)| (s - mu) / sd - if e { 0.0 } else { penalty })
        .collect()
}

/// Step 3: per-token rewards `−β·(log π_old − log π_ref)` with `score` added on the last
/// token; also returns the per-token KL (k1).
pub fn token_rewards(
    old_lp: &[f64],
    ref_lp: &[f64],
    beta: f64,
    score: f64,
) -> (Vec<f64>, Vec<f64>) {
    let kl: Vec<f64> = old_lp
        .iter()
        .zip(ref_lp)
        .map(|(a, b)| kl_k1(*a, *b))
        .collect();
    let mut rewards: Vec<f64> = kl.iter().map(|k| -beta * k).collect();
    if let Some(last) = rewards.last_mut() {
        *last += score;
    }
    (rewards, kl)
}

/// Loads the value optimizer's moments (saved with `optimizer_step` like every stage).
fn load_value_optimizer(
    ck: &Checkpoint,
    vars: &std::collections::BTreeMap<String, candle_core::Var>,
    opt: &mut AdamW,
) -> Result<()> {
    let state: serde_json::Value = artifact::trainer_state(ck)?;
    let step = state
        .get("optimizer_step")
        .and_then(|v| v.as_u64())
        .ok_or_else(|| Error::State(format!("{}: missing optimizer_step", ck.dir.display())))?;
    let tensors = ck.read_tensors("optimizer.safetensors", &Device::Cpu)?;
    opt.load_state(vars, &tensors, step)
}

fn tagged<T: Serialize>(kind: &str, v: &T) -> Result<serde_json::Value> {
    let mut j = serde_json::to_value(v).map_err(|e| Error::State(e.to_string()))?;
    if let serde_json::Value::Object(m) = &mut j {
        m.insert("kind".into(), kind.into());
    }
    Ok(j)
}

/// Warnings for statistics that drifted outside the range a healthy run stays in.
pub fn guardrails(cfg: &PpoConfig, s: &PpoStats) -> Vec<String> {
    let mut w = Vec::new();
    if s.ended_frac < 0.5 {
        w.push(format!(
            "only {:.0}% of responses end; the rest hit max_new_tokens = {}",
            100.0 * s.ended_frac,
            cfg.max_new_tokens
        ));
    }
    if s.kl < -0.5 {
        w.push(format!(
            "negative KL {:.3}: rollout and reference disagree on the temperature or the tokens",
            s.kl
        ));
    }
    if let KlControl::Adaptive { target, .. } = cfg.kl {
        if s.kl > 2.0 * target {
            w.push(format!(
                "KL to SFT {:.2} is more than twice the target {target}",
                s.kl
            ));
        }
    }
    if s.approx_kl > 0.1 {
        w.push(format!(
            "approx-KL per update {:.3} > 0.1: the policy moves too far per minibatch; lower \
             policy_lr",
            s.approx_kl
        ));
    }
    if s.clip_frac > 0.3 {
        w.push(format!("clip fraction {:.2} > 0.3", s.clip_frac));
    }
    if s.logprob_mismatch > 1e-3 {
        w.push(format!(
            "rollout and training log-probs differ by {:.2e} (> 1e-3)",
            s.logprob_mismatch
        ));
    }
    if s.explained_variance < -1.0 {
        w.push(format!(
            "explained variance {:.2}: the value model predicts worse than a constant",
            s.explained_variance
        ));
    }
    if s.entropy < 0.05 {
        w.push(format!(
            "entropy {:.3} nats per token: the policy has collapsed",
            s.entropy
        ));
    }
    w
}

/// A reason to stop the run, if any.
pub fn divergence(cfg: &PpoConfig, s: &PpoStats) -> Option<String> {
    let finite = [
        s.kl,
        s.policy_loss,
        s.value_loss,
        s.score_mean,
        s.entropy,
        s.approx_kl,
    ];
    if finite.iter().any(|x| !x.is_finite()) {
        return Some(format!(
            "a statistic is not finite (kl {}, policy loss {}, value loss {}, score {}, entropy \
             {}, approx-KL {})",
            s.kl, s.policy_loss, s.value_loss, s.score_mean, s.entropy, s.approx_kl
        ));
    }
    if cfg.kl_stop > 0.0 && s.kl > cfg.kl_stop {
        return Some(format!(
            "KL to SFT {:.2} nats per response exceeds kl_stop = {} (β = {:.4}); raise β or \
             lower policy_lr",
            s.kl, cfg.kl_stop, s.beta
        ));
    }
    None
}
