//! Collecting rankings with a simulated labeller (the data of InstructGPT step 2): for every
//! prompt, sample K responses from the SFT model with the engine and have the built-in world's
//! gold judge rank them, with `noise` standing in for labellers who disagree (adjacent ranks
//! swapped with that probability, `chatforge_data::world::judge::rank`).
//!
//! Records are appended durably one by one (`RankingWriter`: fsync per record), in prompt
//! order, so an interrupted collection resumes at the first prompt without a record and the
//! finished file is the same as an uninterrupted one: the K samples of prompt `i` come from the
//! stream `(seed, i)` and the judge's noise from `Rng::derive(seed, "judge-i")`.
//!
//! Alongside, the judge's agreement with its own noiseless self is measured on the same
//! records: over every pair the noisy ranking orders strictly, the share the noiseless ranking
//! orders the same way (a noiseless tie counts half). A reward model that learned the noiseless
//! judge exactly would score this on held-out noisy labels, so it is the ceiling for the reward
//! model's held-out pairwise accuracy.
//!
//! Prompts without a world task cannot be judged; they are an error naming the prompt (people
//! rank those on the labelling page, `chatforge label`).

use std::path::{Path, PathBuf};

use candle_core::Device;
use chatforge_data::corpus::ReadOptions;
use chatforge_data::prompts::read_prompts;
use chatforge_data::ranking::{RankGroup, RankingRecord, RankingWriter};
use chatforge_data::world::judge;
use chatforge_data::Rng;
use chatforge_engine::{generate_n, FinishReason, SamplingParams};
use chatforge_tokenizer::chat::{assistant_end, render_prompt};
use serde::{Deserialize, Serialize};

use crate::artifact::{load_model, template_of};
use crate::{Error, Result};

/// What a blank sampled reply is stored as in the rankings file.
pub const BLANK_REPLY: &str = "(no answer)";

/// Settings of a collection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RankConfig {
    /// Responses per prompt (2..=9).
    pub k: usize,
    pub temperature: f32,
    pub max_new_tokens: usize,
    /// Probability that the judge swaps two adjacent ranks.
    pub noise: f64,
    /// Rank at most this many prompts (all when `None`).
    pub limit: Option<usize>,
    pub seed: u64,
    pub skip_bad_records: bool,
}

impl Default for RankConfig {
    fn default() -> Self {
        Self {
            k: 4,
            temperature: 1.0,
            max_new_tokens: 48,
            noise: 0.1,
            limit: None,
            seed: 1337,
            skip_bad_records: false,
        }
    }
}

/// What a collection did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RankSummary {
    /// Records in the file at the end.
    pub records: usize,
    /// Records that were already there (a resumed collection).
    pub resumed_from: usize,
    /// Records whose ranking has at least one tie group.
    pub with_ties: usize,
    /// Mean gold-judge score of every response in the file.
    pub mean_judge_score: f64,
    /// Share of responses that ended with the assistant-end token.
    pub ended_frac: f64,
    /// Agreement of the noisy rankings with the noiseless judge (module docs): the ceiling of
    /// a reward model's held-out pairwise accuracy.
    pub judge_ceiling: f64,
    pub out: PathBuf,
}

/// Collects rankings of `cfg.k` samples of the model at `model` (loaded onto `device`) for the
/// prompts in `prompts` into `out`, resuming when `out` already holds records.
/// `on_progress(done, total)` is called after every prompt.
pub fn collect(
    cfg: &RankConfig,
    model: &Path,
    device: &Device,
    prompts: &[PathBuf],
    out: &Path,
    on_progress: &mut dyn FnMut(usize, usize),
) -> Result<RankSummary> {
    if !(2..=9).contains(&cfg.k) {
        return Err(Error::Config(format!("k = {} must be 2..=9", cfg.k)));
    }
    if !(0.0..=1.0).contains(&cfg.noise) {
        return Err(Error::Config(format!(
            "judge noise {} must be in [0, 1]",
            cfg.noise
        )));
    }
    let loaded = load_model(model, device)?;
    let template = template_of(&loaded.meta)?;
    let tok = &loaded.tokenizer;
    let end = assistant_end(tok, template)?;
    let opts = ReadOptions {
        skip_bad_records: cfg.skip_bad_records,
    };
    let (recs, _) = read_prompts(prompts, &opts)?;
    let total = cfg.limit.unwrap_or(recs.len()).min(recs.len());
    let (mut writer, existing) = RankingWriter::open(out)?;
    let resumed_from = existing.len();
    if resumed_from > total {
        return Err(Error::Data(format!(
            "{} already holds {resumed_from} records, more than the {total} prompts to rank",
            out.display()
        )));
    }
    for (i, (have, want)) in existing.iter().zip(&recs).enumerate() {
        if have.prompt != want.prompt {
            return Err(Error::Data(format!(
                "{}: record {} is not for prompt {} of the prompt file; this file was made from \
                 other prompts",
                out.display(),
                i + 1,
                i + 1
            )));
        }
    }
    let mut records = existing;
    let mut new: Vec<(usize, Vec<bool>)> = Vec::new();
    for (i, rec) in recs.iter().enumerate().take(total).skip(resumed_from) {
        let task = rec.task().ok_or_else(|| {
            Error::Data(format!(
                "prompt {} has no world task, so the gold judge cannot rank it; rank it by hand \
                 with `chatforge label`",
                i + 1
            ))
        })?;
        let ids = render_prompt(tok, &rec.prompt, template)?;
        let room = loaded.config.context_length.saturating_sub(ids.len() + 1);
        let params = SamplingParams {
            temperature: cfg.temperature,
            seed: Rng::derive(cfg.seed, &format!("rank-{i}")).next_u64(),
            max_tokens: cfg.max_new_tokens.min(room).max(1),
            stop_tokens: vec![end],
            ..SamplingParams::default()
        };
        let samples = generate_n(&loaded.model, device, &ids, cfg.k, &params)?;
        let mut texts = Vec::with_capacity(cfg.k);
        let mut ended = Vec::with_capacity(cfg.k);
        for s in &samples {
            let body: Vec<u32> = s.tokens.iter().copied().filter(|&t| t != end).collect();
            texts.push(String::from_utf8_lossy(&tok.decode_bytes(&body)?).into_owned());
            ended.push(s.finish == FinishReason::Stop);
        }
        // The judge sees the replies as sampled, a blank one included.
        let replies: Vec<(&str, bool)> = texts
            .iter()
            .map(String::as_str)
            .zip(ended.iter().copied())
            .collect();
        let mut rng = Rng::derive(cfg.seed, &format!("judge-{i}"));
        let ranking = judge::rank(&task, &replies, cfg.noise, &mut rng);
        // A ranking file cannot hold an empty response, so a blank reply is stored as a
        // placeholder (ranked where the judge put the blank reply).
        let responses: Vec<String> = texts
            .into_iter()
            .map(|t| {
                if t.trim().is_empty() {
                    BLANK_REPLY.to_string()
                } else {
                    t
                }
            })
            .collect();
        let record = RankingRecord {
            prompt: rec.prompt.clone(),
            responses,
            ranking,
            flagged: Vec::new(),
        };
        writer.append(&record)?;
        records.push(record);
        new.push((i, ended));
        on_progress(i + 1, total);
    }

    let mut t = Tally::default();
    for (rec, prompt) in records.iter().zip(&recs).take(resumed_from) {
        if let Some(task) = prompt.task() {
            // Files do not keep whether a response ended; records of an earlier session are
            // re-judged as if every response ended (this only affects the summary).
            t.add(&task, rec, &vec![true; rec.responses.len()]);
        }
    }
    for (i, ended) in &new {
        if let Some(task) = recs[*i].task() {
            t.add(&task, &records[*i], ended);
        }
        t.ended += ended.iter().filter(|&&e| e).count();
        t.new_responses += ended.len();
    }
    Ok(RankSummary {
        records: records.len(),
        resumed_from,
        with_ties: t.with_ties,
        mean_judge_score: t.score / t.responses.max(1) as f64,
        ended_frac: t.ended as f64 / t.new_responses.max(1) as f64,
        judge_ceiling: if t.pairs == 0 {
            f64::NAN
        } else {
            t.agree / t.pairs as f64
        },
        out: out.to_path_buf(),
    })
}

/// Running sums for [`RankSummary`].
#[derive(Default)]
struct Tally {
    score: f64,
    responses: usize,
    ended: usize,
    new_responses: usize,
    with_ties: usize,
    agree: f64,
    pairs: usize,
}

impl Tally {
    fn add(&mut self, task: &chatforge_data::world::Task, rec: &RankingRecord, ended: &[bool]) {
        if rec.ranking.iter().any(|g| matches!(g, RankGroup::Tie(_))) {
            self.with_ties += 1;
        }
        let scores: Vec<f64> = rec
            .responses
            .iter()
            .zip(ended)
            .map(|(r, &e)| judge::judge(task, r, e).score)
            .collect();
        self.score += scores.iter().sum::<f64>();
        self.responses += scores.len();
        for (better, worse) in rec.ordered_pairs() {
            self.pairs += 1;
            self.agree += match scores[better].partial_cmp(&scores[worse]) {
                Some(std::cmp::Ordering::Greater) => 1.0,
                Some(std::cmp::Ordering::Equal) => 0.5,
                _ => 0.0,
            };
        }
    }
}
