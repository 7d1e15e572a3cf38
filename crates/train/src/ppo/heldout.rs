//! Held-out evaluation during PPO: greedy replies of the policy against SFT's on held-out
//! prompts, judged by the world's gold judge (or the reward model), plus the mean reward-model
//! score and the held-out pretraining loss.

use candle_core::Device;
use chatforge_data::prompts::PromptRecord;
use chatforge_data::world::judge;
use chatforge_engine::{generate, FinishReason, SamplingParams};
use chatforge_model::Gpt;
use chatforge_tokenizer::chat::{render_prompt, ChatTemplate};
use chatforge_tokenizer::Tokenizer;

use super::config::PpoEval;
use super::run::mean;
use crate::batch::Batch;
use crate::pretrain::evaluate;
use crate::reward::{reward_row, RewardModel};
use crate::stats::win_rate;
use crate::Result;

/// Rendered prompts: (index in the prompt file, ids).
pub(super) type Rendered = Vec<(usize, Vec<u32>)>;

/// A rendered prompt set: every prompt that leaves room for a response, and how many did not.
pub(super) fn render_prompts(
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
pub(super) fn greedy(
    model: &Gpt,
    device: &Device,
    prompt: &[u32],
    end: u32,
    max_tokens: usize,
) -> Result<(Vec<u32>, bool)> {
    let params = SamplingParams {
        temperature: 0.0,
        max_tokens,
        stop_tokens: vec![end],
        ..SamplingParams::default()
    };
    let g = generate(model, device, prompt, &params, |_| true)?;
    Ok((g.tokens, g.finish == FinishReason::Stop))
}

pub(super) fn text_of(tok: &Tokenizer, ids: &[u32], end: u32) -> Result<String> {
    let ids: Vec<u32> = ids.iter().copied().filter(|&i| i != end).collect();
    Ok(String::from_utf8_lossy(&tok.decode_bytes(&ids)?).into_owned())
}

/// Held-out prompts and SFT's greedy responses to them (computed once per run).
pub(super) struct EvalSet {
    pub prompts: Vec<(PromptRecord, Vec<u32>)>,
    pub sft: Vec<(String, bool)>,
    pub sft_scores: Vec<f32>,
}

#[allow(clippy::too_many_arguments)]
pub(super) fn evaluate_policy(
    step: u64,
    policy: &Gpt,
    device: &Device,
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
        let (resp, ended) = greedy(policy, device, ids, end, max_tokens)?;
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
        Some((rows, bytes)) => Some(evaluate(policy, device, rows, bytes)?.0),
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
