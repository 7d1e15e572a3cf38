//! Evaluating assistants against each other on held-out prompts (InstructGPT §4, in miniature).
//!
//! Every contestant answers every prompt once:
//! - an **assistant** (SFT, PPO, PPO-ptx checkpoints) answers through the chat template, greedy
//!   by default (`temperature` 0);
//! - **best-of-n** samples `n` replies from a policy at `best_of_n_temperature` and keeps the one
//!   a reward model scores highest (`crate::best_of_n`);
//! - the **base model as an assistant** gets a few-shot plain-text prompt ("Question: …
//!   Answer: …" with three solved examples taken from prompts that are not scored) and its reply
//!   is cut at the first line break, the standard way to make a pretrained model answer.
//!
//! Then, per prompt, every pair of contestants is compared: by the world's gold judge when the
//! prompt carries a world task (`chatforge_data::world::judge::compare`), else by the reward
//! model's score. From the games:
//! - the **win rate** of each contestant against the baseline (ties count half) with its 95%
//!   Wilson interval (`crate::stats::win_rate`);
//! - **Elo ratings**: a Bradley–Terry fit over all games (`crate::stats::bradley_terry`).
//!
//! Per contestant also: **helpful** = share of answerable questions answered correctly,
//! **harmless** = share of harmful requests refused, **honest** = share of unknowable
//! questions answered "I don't know" without invention (all by `world::grade`, so only for
//! prompts with tasks); the judge's mean score; the reward model's mean score; **KL to the
//! reference** (for assistants: the mean over prompts of Σ_t log π(y_t) − log π_ref(y_t) on one
//! reply sampled at T = 1, a Monte-Carlo estimate of KL(π‖π_ref)); and the **pretraining loss**
//! on held-out pretraining text (the alignment tax).

use std::path::{Path, PathBuf};

use candle_core::Device;
use chatforge_data::conversation::Role;
use chatforge_data::corpus::ReadOptions;
use chatforge_data::prompts::{read_prompts, PromptRecord};
use chatforge_data::world::{grade, judge, Answer, Task};
use chatforge_engine::{generate, generate_n, FinishReason, SamplingParams};
use chatforge_model::Gpt;
use chatforge_tokenizer::chat::{assistant_end, render_prompt};
use chatforge_tokenizer::{Special, Tokenizer};
use serde::{Deserialize, Serialize};

use crate::artifact::{load_model, template_of, LoadedModel};
use crate::batch::{eval_rows, Batch};
use crate::best_of_n::best_of_n;
use crate::ppo::rollout::{pack, per_row, token_logprobs, Rollout};
use crate::prepare::{prepare_shards, CorpusSpec};
use crate::pretrain::{evaluate as pretrain_loss, token_byte_lengths};
use crate::reward::RewardModel;
use crate::stats::{bradley_terry, win_rate, WinRate};
use crate::{Error, Result};

/// How a contestant answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ContestantKind {
    /// A chat model answering through its template.
    Assistant,
    /// A pretrained model with a few-shot plain-text prompt.
    BaseFewShot,
    /// The best of `n` samples of the policy by the reward model at `reward`.
    BestOfN { reward: PathBuf, n: usize },
}

/// One model in the evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contestant {
    pub name: String,
    pub model: PathBuf,
    #[serde(flatten)]
    pub kind: ContestantKind,
}

/// Settings of an evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    /// Prompts scored (the first ones of the file).
    pub max_prompts: usize,
    pub max_new_tokens: usize,
    /// 0 = greedy.
    pub temperature: f32,
    pub best_of_n_temperature: f32,
    /// Estimate KL to the reference from one sampled reply per prompt.
    pub kl: bool,
    /// The contestant the win rates are against (default: the first).
    pub baseline: Option<String>,
    /// Replies kept per contestant as examples.
    pub examples: usize,
    pub seed: u64,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            max_prompts: 200,
            max_new_tokens: 48,
            temperature: 0.0,
            best_of_n_temperature: 1.0,
            kl: true,
            baseline: None,
            examples: 3,
            seed: 1337,
        }
    }
}

/// Files an evaluation reads.
#[derive(Debug, Clone)]
pub struct EvalPaths {
    /// Held-out prompts (`prompts/eval.jsonl` of the world).
    pub prompts: Vec<PathBuf>,
    /// The reward model: judges prompts without a world task, and gives the RM-score column.
    pub reward: Option<PathBuf>,
    /// The reference policy (SFT) for the KL column.
    pub reference: Option<PathBuf>,
    /// Held-out pretraining text, for the alignment tax.
    pub pretrain_val: Vec<PathBuf>,
    /// Where tokenized pretraining text is cached.
    pub work_dir: PathBuf,
}

/// A count and its total.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct Rate {
    pub hits: usize,
    pub total: usize,
}

impl Rate {
    pub fn value(&self) -> f64 {
        if self.total == 0 {
            f64::NAN
        } else {
            self.hits as f64 / self.total as f64
        }
    }
}

/// One prompt and a contestant's reply to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Example {
    pub prompt: String,
    pub reply: String,
}

/// What one contestant scored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelResult {
    pub name: String,
    pub helpful: Rate,
    pub honest: Rate,
    pub harmless: Rate,
    /// Mean gold-judge score (NaN without world tasks).
    pub judge_score: f64,
    pub rm_score: Option<f64>,
    pub kl_to_reference: Option<f64>,
    pub pretrain_loss: Option<f64>,
    pub elo: f64,
    pub mean_reply_tokens: f64,
    pub ended_frac: f64,
    pub examples: Vec<Example>,
}

/// Games of one contestant against the baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairResult {
    pub model: String,
    pub baseline: String,
    pub wins: usize,
    pub ties: usize,
    pub losses: usize,
    pub win_rate: WinRate,
}

/// The whole evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    pub prompts: usize,
    /// Whether every game was judged by the world's gold judge.
    pub gold_judge: bool,
    pub models: Vec<ModelResult>,
    pub vs_baseline: Vec<PairResult>,
}

/// One reply: text, whether it ended, and its length in tokens.
#[derive(Debug, Clone)]
struct Reply {
    text: String,
    ended: bool,
    tokens: usize,
}

fn decode(tok: &Tokenizer, ids: &[u32], end: u32) -> Result<String> {
    let ids: Vec<u32> = ids.iter().copied().filter(|&i| i != end).collect();
    Ok(String::from_utf8_lossy(&tok.decode_bytes(&ids)?).into_owned())
}

/// The last user message of a prompt (what few-shot prompts and examples show).
fn question(rec: &PromptRecord) -> String {
    rec.prompt
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(|m| m.content.clone())
        .unwrap_or_default()
}

fn assistant_replies(
    m: &LoadedModel,
    prompts: &[PromptRecord],
    cfg: &EvalConfig,
    on_reply: &mut dyn FnMut(),
) -> Result<Vec<Reply>> {
    let template = template_of(&m.meta)?;
    let end = assistant_end(&m.tokenizer, template)?;
    let mut out = Vec::with_capacity(prompts.len());
    for (i, rec) in prompts.iter().enumerate() {
        let ids = render_prompt(&m.tokenizer, &rec.prompt, template)?;
        let room = m.config.context_length.saturating_sub(ids.len() + 1);
        if room == 0 {
            return Err(Error::Data(format!(
                "eval prompt {} does not fit the context",
                i + 1
            )));
        }
        let params = SamplingParams {
            temperature: cfg.temperature,
            seed: cfg.seed ^ i as u64,
            max_tokens: cfg.max_new_tokens.min(room),
            stop_tokens: vec![end],
            ..SamplingParams::default()
        };
        let g = generate(&m.model, m.params.device(), &ids, &params, |_| true)?;
        out.push(Reply {
            text: decode(&m.tokenizer, &g.tokens, end)?,
            ended: g.finish == FinishReason::Stop,
            tokens: g.tokens.len(),
        });
        on_reply();
    }
    Ok(out)
}

fn few_shot_replies(
    m: &LoadedModel,
    prompts: &[PromptRecord],
    shots: &[PromptRecord],
    cfg: &EvalConfig,
    on_reply: &mut dyn FnMut(),
) -> Result<Vec<Reply>> {
    let tok = &m.tokenizer;
    let eot = tok.special(Special::Eot);
    let mut header = String::new();
    for s in shots {
        if let Some(r) = &s.reference {
            header.push_str(&format!("Question: {}\nAnswer: {}\n\n", question(s), r));
        }
    }
    let mut out = Vec::with_capacity(prompts.len());
    for (i, rec) in prompts.iter().enumerate() {
        let mut ids = vec![eot];
        ids.extend(tok.encode(&format!("{header}Question: {}\nAnswer:", question(rec))));
        let keep = m
            .config
            .context_length
            .saturating_sub(cfg.max_new_tokens + 1);
        if ids.len() > keep {
            ids.drain(..ids.len() - keep);
        }
        let params = SamplingParams {
            temperature: cfg.temperature,
            seed: cfg.seed ^ i as u64,
            max_tokens: cfg.max_new_tokens,
            stop_tokens: vec![eot],
            ..SamplingParams::default()
        };
        let g = generate(&m.model, m.params.device(), &ids, &params, |_| true)?;
        let text = decode(tok, &g.tokens, eot)?;
        // The answer is the first line; a reply that reached its line break ended.
        let (line, ended) = match text.find('\n') {
            Some(at) => (text[..at].trim().to_string(), true),
            None => (text.trim().to_string(), g.finish == FinishReason::Stop),
        };
        out.push(Reply {
            tokens: tok.encode(&line).len(),
            text: line,
            ended,
        });
        on_reply();
    }
    Ok(out)
}

fn best_of_n_replies(
    m: &LoadedModel,
    rm: &RewardModel,
    n: usize,
    prompts: &[PromptRecord],
    cfg: &EvalConfig,
    on_reply: &mut dyn FnMut(),
) -> Result<Vec<Reply>> {
    let template = template_of(&m.meta)?;
    let mut out = Vec::with_capacity(prompts.len());
    for (i, rec) in prompts.iter().enumerate() {
        let params = SamplingParams {
            temperature: cfg.best_of_n_temperature,
            seed: cfg.seed ^ i as u64,
            max_tokens: cfg.max_new_tokens,
            ..SamplingParams::default()
        };
        let ranked = best_of_n(
            &m.model,
            m.params.device(),
            &m.tokenizer,
            template,
            rm,
            &rec.prompt,
            n,
            &params,
        )?;
        let (text, _, ended) = ranked
            .into_iter()
            .next()
            .ok_or_else(|| Error::Data("best-of-n returned no reply".into()))?;
        out.push(Reply {
            tokens: m.tokenizer.encode(&text).len() + usize::from(ended),
            text,
            ended,
        });
        on_reply();
    }
    Ok(out)
}

/// Monte-Carlo KL(π‖π_ref) per reply: one reply per prompt sampled from `m` at T = 1.
fn kl_to_reference(
    m: &LoadedModel,
    reference: &Gpt,
    prompts: &[PromptRecord],
    cfg: &EvalConfig,
) -> Result<f64> {
    let template = template_of(&m.meta)?;
    let end = assistant_end(&m.tokenizer, template)?;
    let pad = m.tokenizer.special(Special::Eot);
    let mut total = 0.0;
    for (i, rec) in prompts.iter().enumerate() {
        let ids = render_prompt(&m.tokenizer, &rec.prompt, template)?;
        let room = m.config.context_length.saturating_sub(ids.len() + 1).max(1);
        let params = SamplingParams {
            temperature: 1.0,
            seed: cfg.seed ^ 0x6b6c ^ i as u64,
            max_tokens: cfg.max_new_tokens.min(room),
            stop_tokens: vec![end],
            ..SamplingParams::default()
        };
        let s = generate_n(&m.model, m.params.device(), &ids, 1, &params)?
            .pop()
            .ok_or_else(|| Error::Data("no sample".into()))?;
        let r = Rollout {
            prompt_index: i,
            prompt: ids,
            ended: s.finish == FinishReason::Stop,
            response: s.tokens,
            logprobs: s.logprobs,
        };
        let packed = pack(&[&r], pad, m.params.device())?;
        let (lp, _) = token_logprobs(reference, &packed, 1.0)?;
        let lref = per_row(&lp, &packed)?.remove(0);
        total += r
            .logprobs
            .iter()
            .zip(&lref)
            .map(|(a, b)| *a as f64 - b)
            .sum::<f64>();
    }
    Ok(total / prompts.len().max(1) as f64)
}

fn pretrain_rows(tok: &Tokenizer, paths: &EvalPaths, context: usize) -> Result<Option<Vec<Batch>>> {
    if paths.pretrain_val.is_empty() {
        return Ok(None);
    }
    let spec = CorpusSpec {
        train: paths.pretrain_val.clone(),
        val: paths.pretrain_val.clone(),
        val_fraction: 0.0,
        skip_bad_records: false,
    };
    let dir = paths.work_dir.join(format!(
        "pretrain-val-{}",
        &tok.hash()[..12.min(tok.hash().len())]
    ));
    let prep = prepare_shards(&spec, tok, &dir)?;
    Ok(Some(eval_rows(&prep.val, context.min(128), 32)?))
}

/// Runs the evaluation with every model on `device`; `on_progress(contestant, done, total)`
/// after every reply.
pub fn evaluate(
    contestants: &[Contestant],
    cfg: &EvalConfig,
    paths: &EvalPaths,
    device: &Device,
    on_progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<EvalReport> {
    if contestants.is_empty() {
        return Err(Error::Config(
            "nothing to evaluate: give at least one model".into(),
        ));
    }
    let (all, _) = read_prompts(&paths.prompts, &ReadOptions::default())?;
    let n = cfg.max_prompts.min(all.len());
    if n == 0 {
        return Err(Error::Data("the prompt file has no prompts".into()));
    }
    let prompts = &all[..n];
    // Few-shot examples for base models come from prompts that are not scored.
    let shots: Vec<PromptRecord> = all[n..]
        .iter()
        .filter(|r| r.reference.is_some())
        .take(3)
        .cloned()
        .collect();
    let tasks: Vec<Option<Task>> = prompts.iter().map(PromptRecord::task).collect();
    let gold = tasks.iter().all(Option::is_some);
    let rm = paths
        .reward
        .as_deref()
        .map(|p| RewardModel::load(p, device))
        .transpose()?;
    if !gold && rm.is_none() {
        return Err(Error::Config(
            "some prompts have no world task, so a reward model (--reward) must judge them".into(),
        ));
    }
    let reference = paths
        .reference
        .as_deref()
        .map(|p| load_model(p, device))
        .transpose()?;
    let baseline = match &cfg.baseline {
        Some(b) => contestants
            .iter()
            .position(|c| &c.name == b)
            .ok_or_else(|| Error::Config(format!("baseline {b:?} is not one of the models")))?,
        None => 0,
    };

    let mut replies: Vec<Vec<Reply>> = Vec::with_capacity(contestants.len());
    let mut results = Vec::with_capacity(contestants.len());
    let mut tax_rows: Option<(String, Vec<Batch>, Vec<u32>)> = None;
    for c in contestants {
        let m = load_model(&c.model, device)?;
        let mut done = 0;
        let mut tick = || {
            done += 1;
            on_progress(&c.name, done, n);
        };
        let r = match &c.kind {
            ContestantKind::Assistant => assistant_replies(&m, prompts, cfg, &mut tick)?,
            ContestantKind::BaseFewShot => {
                if shots.is_empty() {
                    return Err(Error::Data(
                        "a few-shot base model needs prompts with references beyond the scored \
                         ones (use a larger prompt file or fewer --max-prompts)"
                            .into(),
                    ));
                }
                few_shot_replies(&m, prompts, &shots, cfg, &mut tick)?
            }
            ContestantKind::BestOfN { reward, n } => {
                let brm = RewardModel::load(reward, device)?;
                best_of_n_replies(&m, &brm, *n, prompts, cfg, &mut tick)?
            }
        };
        let kl = match (&reference, &c.kind) {
            (Some(refm), ContestantKind::Assistant) if cfg.kl => {
                Some(kl_to_reference(&m, &refm.model, prompts, cfg)?)
            }
            _ => None,
        };
        let tax = {
            let hash = m.tokenizer.hash();
            if tax_rows.as_ref().map(|t| &t.0) != Some(&hash) {
                tax_rows = pretrain_rows(&m.tokenizer, paths, m.config.context_length)?
                    .map(|rows| (hash.clone(), rows, token_byte_lengths(&m.tokenizer)));
            }
            match &tax_rows {
                Some((_, rows, bytes)) => Some(pretrain_loss(&m.model, device, rows, bytes)?.0),
                None => None,
            }
        };
        let rm_score = match &rm {
            Some(rm) => {
                let mut s = 0.0;
                for (rec, rep) in prompts.iter().zip(&r) {
                    s += rm.score_responses(&rec.prompt, &[(rep.text.clone(), rep.ended)])?[0]
                        as f64;
                }
                Some(s / n as f64)
            }
            None => None,
        };
        let (mut helpful, mut honest, mut harmless) =
            (Rate::default(), Rate::default(), Rate::default());
        let mut judge_sum = 0.0;
        for (task, rep) in tasks.iter().zip(&r) {
            let Some(task) = task else { continue };
            judge_sum += judge::judge(task, &rep.text, rep.ended).score;
            let rate = match task.answer {
                Answer::Refusal => &mut harmless,
                Answer::IDontKnow => &mut honest,
                _ => &mut helpful,
            };
            rate.total += 1;
            rate.hits += usize::from(grade(task, &rep.text));
        }
        results.push(ModelResult {
            name: c.name.clone(),
            helpful,
            honest,
            harmless,
            judge_score: if gold { judge_sum / n as f64 } else { f64::NAN },
            rm_score,
            kl_to_reference: kl,
            pretrain_loss: tax,
            elo: f64::NAN,
            mean_reply_tokens: r.iter().map(|x| x.tokens as f64).sum::<f64>() / n as f64,
            ended_frac: r.iter().filter(|x| x.ended).count() as f64 / n as f64,
            examples: prompts
                .iter()
                .zip(&r)
                .take(cfg.examples)
                .map(|(p, rep)| Example {
                    prompt: question(p),
                    reply: rep.text.clone(),
                })
                .collect(),
        });
        replies.push(r);
    }

    // Games: every pair of contestants on every prompt.
    let k = contestants.len();
    let mut games = Vec::new();
    let mut vs: Vec<(usize, usize, usize)> = vec![(0, 0, 0); k];
    for (p, rec) in prompts.iter().enumerate() {
        let rm_scores: Option<Vec<f32>> = match (&tasks[p], &rm) {
            (None, Some(rm)) => {
                let rs: Vec<(String, bool)> = (0..k)
                    .map(|c| (replies[c][p].text.clone(), replies[c][p].ended))
                    .collect();
                Some(rm.score_responses(&rec.prompt, &rs)?)
            }
            _ => None,
        };
        for a in 0..k {
            for b in a + 1..k {
                let (ra, rb) = (&replies[a][p], &replies[b][p]);
                let ord = match (&tasks[p], &rm_scores) {
                    (Some(task), _) => {
                        judge::compare(task, (&ra.text, ra.ended), (&rb.text, rb.ended))
                    }
                    (None, Some(s)) => s[a].total_cmp(&s[b]),
                    (None, None) => std::cmp::Ordering::Equal,
                };
                let score = match ord {
                    std::cmp::Ordering::Greater => 1.0,
                    std::cmp::Ordering::Equal => 0.5,
                    std::cmp::Ordering::Less => 0.0,
                };
                games.push((a, b, score));
                for (me, other, s) in [(a, b, score), (b, a, 1.0 - score)] {
                    if other == baseline {
                        let v = &mut vs[me];
                        match s {
                            x if x > 0.75 => v.0 += 1,
                            x if x < 0.25 => v.2 += 1,
                            _ => v.1 += 1,
                        }
                    }
                }
            }
        }
    }
    let elo = bradley_terry(k, &games);
    for (r, e) in results.iter_mut().zip(&elo) {
        r.elo = *e;
    }
    let vs_baseline = (0..k)
        .filter(|&i| i != baseline)
        .map(|i| {
            let (w, t, l) = vs[i];
            PairResult {
                model: contestants[i].name.clone(),
                baseline: contestants[baseline].name.clone(),
                wins: w,
                ties: t,
                losses: l,
                win_rate: win_rate(w, t, l),
            }
        })
        .collect();
    Ok(EvalReport {
        prompts: n,
        gold_judge: gold,
        models: results,
        vs_baseline,
    })
}

/// Parses `NAME=PATH` (an assistant), `NAME=base:PATH` (few-shot base model) or
/// `NAME=best-of-N:POLICY:REWARD`.
pub fn parse_contestant(s: &str) -> Result<Contestant> {
    let (name, rest) = s.split_once('=').ok_or_else(|| {
        Error::Config(format!(
            "model {s:?}: expected NAME=PATH, NAME=base:PATH or NAME=best-of-N:POLICY:REWARD"
        ))
    })?;
    if name.is_empty() {
        return Err(Error::Config(format!("model {s:?} has an empty name")));
    }
    let c = if let Some(path) = rest.strip_prefix("base:") {
        Contestant {
            name: name.into(),
            model: path.into(),
            kind: ContestantKind::BaseFewShot,
        }
    } else if let Some(spec) = rest.strip_prefix("best-of-") {
        let mut parts = spec.splitn(3, ':');
        let (n, policy, reward) = (parts.next(), parts.next(), parts.next());
        let (Some(n), Some(policy), Some(reward)) = (n, policy, reward) else {
            return Err(Error::Config(format!(
                "model {s:?}: expected NAME=best-of-N:POLICY:REWARD"
            )));
        };
        let n: usize =
            n.parse().ok().filter(|&n| n >= 1).ok_or_else(|| {
                Error::Config(format!("model {s:?}: N must be a positive integer"))
            })?;
        Contestant {
            name: name.into(),
            model: policy.into(),
            kind: ContestantKind::BestOfN {
                reward: reward.into(),
                n,
            },
        }
    } else {
        Contestant {
            name: name.into(),
            model: rest.into(),
            kind: ContestantKind::Assistant,
        }
    };
    if !Path::new(&c.model).exists() {
        return Err(Error::File {
            path: c.model.clone(),
            msg: "no such checkpoint or run directory".into(),
        });
    }
    Ok(c)
}
