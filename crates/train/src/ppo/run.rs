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
use chatforge_data::prompts::read_prompts;
use chatforge_engine::SamplingParams;
use chatforge_model::checkpoint::{step_dir_name, Checkpoint};
use chatforge_model::{Gpt, GptConfig, Params};
use chatforge_tokenizer::chat::assistant_end;
use chatforge_tokenizer::Special;
use serde::{Deserialize, Serialize};

use super::advantage::{explained_variance, gae, masked_whiten};
use super::config::{check_config, PpoConfig, PpoEval, PpoPaths, PpoStats, PpoSummary};
use super::control::{KlControl, RunningMoments};
use super::guardrails::{divergence, guardrails};
use super::heldout::{evaluate_policy, greedy, render_prompts, text_of, EvalSet};
use super::loss::{policy_loss, value_loss};
use super::rollout::{self, per_row, to_grid, token_logprobs, token_values, Rollout};
use super::shaping::{token_rewards, whiten_scores};
use crate::artifact::{self, load_model, template_of, var_map, StageWriter};
use crate::batch::{eval_rows, Cursor, EpochOrder, RowLoader};
use crate::events::TrainEvent;
use crate::metrics::MetricsLog;
use crate::optim::{accumulate_grads, clip_grads, AdamW, FlatGrads, OptimConfig};
use crate::prepare::{prepare_shards, CorpusSpec};
use crate::pretrain::token_byte_lengths;
use crate::reward::{load_scalar, reward_row, RewardModel, ScalarModel};
use crate::{Error, Result};

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
    let norm = clip_grads(grads, opt.config().grad_clip)?;
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

pub(super) fn mean(xs: &[f64]) -> f64 {
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

/// A policy-side model (the policy, the reference, frozen copies for evaluation) at the run's
/// matmul precision, but with attention's own products in f32: rollout log-probs come from the
/// engine's KV-cached decode kernel, which computes attention in f32, and the training forward must
/// match them. (bf16 attention in the training forward alone raised the rollout/training log-prob
/// mismatch from at most 1.5e-2 to 4.5e-2 on the default speedrun.) The value model, whose
/// outputs are never compared with decoding, keeps bf16 attention.
fn policy_precision(model: Gpt, prec: chatforge_model::ops::MatmulPrecision) -> Gpt {
    model
        .with_matmul_precision(prec)
        .with_attention_precision(chatforge_model::ops::MatmulPrecision::F32)
}

/// Runs (or resumes) PPO on `device` (see [`crate::pretrain::run`]): the policy, its reference,
/// the value and the reward models all live there; rollouts are sampled there and their
/// statistics (advantages, returns, KL) computed on the host.
pub fn run(
    cfg_in: &PpoConfig,
    paths: &PpoPaths,
    device: &Device,
    resume: bool,
    on_event: &mut dyn FnMut(&TrainEvent),
) -> Result<PpoSummary> {
    check_config(cfg_in)?;
    let checkpoint = if resume {
        chatforge_model::checkpoint::latest_checkpoint(&paths.out)?
    } else {
        None
    };
    let sft = load_model(&paths.policy, device)?;
    let mut cfg = cfg_in.clone();
    cfg.template = template_of(&sft.meta)?;
    let template = cfg.template;
    let rm = RewardModel::load(&paths.reward, device)?;
    if rm.tokenizer().hash() != sft.tokenizer.hash() {
        return Err(Error::Config(format!(
            "the reward model {} and the policy {} use different tokenizers",
            paths.reward.display(),
            paths.policy.display()
        )));
    }
    let tok = sft.tokenizer.clone();
    let model_cfg: GptConfig = sft.config.clone();
    let reference = policy_precision(sft.model, cfg.matmul_precision);
    let end = assistant_end(&tok, template)?;
    let pad = tok.special(Special::Eot);

    // Policy and value weights: from SFT and the RM, or from this run's checkpoints.
    let (policy_params, value_params, mut state, mut popt, mut vopt) = match &checkpoint {
        None => {
            let policy = load_model(&paths.policy, device)?.params;
            let value = load_scalar(&paths.reward, device)?.params;
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
            let loaded = load_model(&ck.dir, device)?;
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
            let value = load_scalar(&vck.dir, device)?.params;
            let mut popt = optimizer(cfg.policy_lr, cfg.grad_clip);
            let mut vopt = optimizer(cfg.value_lr, cfg.grad_clip);
            artifact::load_optimizer(ck, &loaded.params, &mut popt)?;
            let vvars = scalar_vars(&value);
            load_value_optimizer(&vck, &vvars, &mut vopt)?;
            (loaded.params, value, state, popt, vopt)
        }
    };
    let policy = policy_precision(
        Gpt::new(&model_cfg, policy_params.var_builder(DType::F32))?,
        cfg.matmul_precision,
    );
    let value = ScalarModel::new(&model_cfg, value_params.var_builder(DType::F32))?
        .with_matmul_precision(cfg.matmul_precision);
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
                let (resp, ended) = greedy(&reference, device, &ids, end, cfg.max_new_tokens)?;
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

    let frozen = |p: &Params| -> chatforge_model::Result<Gpt> {
        let model = Gpt::new(&model_cfg, p.frozen_var_builder(DType::F32))?;
        Ok(policy_precision(model, cfg.matmul_precision))
    };
    let evaluate_at = |step: u64| -> Result<PpoEval> {
        evaluate_policy(
            step,
            &frozen(&policy_params)?,
            device,
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
        let rollouts =
            rollout::sample(&current, device, &batch, cfg.samples_per_prompt, &sampling)?;
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
            ScalarModel::new(&model_cfg, value_params.frozen_var_builder(DType::F32))?
                .with_matmul_precision(cfg.matmul_precision);
        let mut ref_lp = Vec::with_capacity(n);
        let mut old_values = Vec::with_capacity(n);
        for chunk in rollouts.chunks(cfg.minibatch_size) {
            let refs: Vec<&Rollout> = chunk.iter().collect();
            let packed = rollout::pack(&refs, pad, device)?;
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
                let packed = rollout::pack(&refs, pad, device)?;
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
                    let x = Tensor::from_vec(b.inputs, (b.rows, b.seq_len), device)?;
                    let y = Tensor::from_vec(b.targets, (b.rows, b.seq_len), device)?;
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
