//! Ranking records as reward-model rows, the held-out split, and the held-out measures:
//! pairwise accuracy (equal scores count ½), Kendall τ-b per record, the K-wise loss, and the
//! mean and spread of the scores.

use chatforge_data::conversation::Message;
use chatforge_data::ranking::RankingRecord;
use chatforge_tokenizer::chat::{render_prompt, ChatTemplate};
use chatforge_tokenizer::{Special, Tokenizer};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::loss::{kwise_loss_f64, pair_agreement};
use super::model::{response_ids, reward_row, score_rows, RewardModel, ScalarModel};
use crate::stats::kendall_tau_b;
use crate::Result;

/// Held-out measures of a reward model on ranked responses. (In JSON an undefined measure,
/// `NaN`, is `null`.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RewardEval {
    /// Share of ordered pairs scored the right way round (equal scores count ½).
    #[serde(with = "nan_as_null")]
    pub accuracy: f64,
    /// Mean Kendall τ-b per record between scores and ranking (records where it is defined).
    #[serde(with = "nan_as_null")]
    pub kendall_tau: f64,
    /// Mean K-wise loss per record.
    #[serde(with = "nan_as_null")]
    pub loss: f64,
    /// Mean and (population) standard deviation of the scores of every response.
    #[serde(with = "nan_as_null")]
    pub reward_mean: f64,
    #[serde(with = "nan_as_null")]
    pub reward_std: f64,
    pub records: usize,
    pub pairs: usize,
}

/// `f64` fields that may be `NaN`, as JSON `null` (which reads back as `NaN`).
mod nan_as_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else {
            s.serialize_none()
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}

/// Whether a prompt falls in the held-out share: the first 8 bytes of the SHA-256 of its JSON,
/// as a fraction of 2⁶⁴, below `val_fraction`. Stable across runs, files and machines.
pub fn is_heldout(prompt: &[Message], val_fraction: f64) -> bool {
    let json = serde_json::to_vec(prompt).unwrap_or_default();
    let h = Sha256::digest(&json);
    let x = u64::from_be_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]]);
    (x as f64 / 18_446_744_073_709_551_616.0) < val_fraction
}

/// One ranking record as reward-model rows.
#[derive(Debug, Clone)]
pub(super) struct Prepared {
    pub(super) rows: Vec<Vec<u32>>,
    pub(super) pairs: Vec<(usize, usize)>,
    /// Higher is better: minus the group position of each response.
    pub(super) goodness: Vec<f64>,
}

/// Renders `rec` to rows; `None` when a row does not fit `context`.
pub(super) fn prepare(
    tok: &Tokenizer,
    template: ChatTemplate,
    rec: &RankingRecord,
    context: usize,
) -> Result<Option<Prepared>> {
    let p = render_prompt(tok, &rec.prompt, template)?;
    let mut rows = Vec::with_capacity(rec.k());
    for r in &rec.responses {
        let row = reward_row(tok, template, &p, &response_ids(tok, template, r, true)?);
        if row.len() > context {
            return Ok(None);
        }
        rows.push(row);
    }
    Ok(Some(Prepared {
        rows,
        pairs: rec.ordered_pairs(),
        goodness: rec.rank_of().iter().map(|&g| -(g as f64)).collect(),
    }))
}

/// Held-out measures from the scores of every row of `set`, in order.
pub(super) fn measures(set: &[Prepared], scores: &[f64]) -> RewardEval {
    let (mut agree, mut pairs, mut loss, mut with_pairs) = (0.0, 0usize, 0.0, 0usize);
    let (mut tau_sum, mut tau_n) = (0.0, 0usize);
    let mut at = 0;
    for p in set {
        let s = &scores[at..at + p.rows.len()];
        at += p.rows.len();
        let (a, n) = pair_agreement(s, &p.pairs);
        agree += a;
        pairs += n;
        if n > 0 {
            loss += kwise_loss_f64(s, &p.pairs);
            with_pairs += 1;
        }
        let tau = kendall_tau_b(s, &p.goodness);
        if tau.is_finite() {
            tau_sum += tau;
            tau_n += 1;
        }
    }
    let n = scores.len().max(1) as f64;
    let mean = scores.iter().sum::<f64>() / n;
    let var = scores.iter().map(|s| (s - mean) * (s - mean)).sum::<f64>() / n;
    let div = |a: f64, b: usize| if b == 0 { f64::NAN } else { a / b as f64 };
    RewardEval {
        accuracy: div(agree, pairs),
        kendall_tau: div(tau_sum, tau_n),
        loss: div(loss, with_pairs),
        reward_mean: mean,
        reward_std: var.sqrt(),
        records: set.len(),
        pairs,
    }
}

pub(super) fn score_all(
    model: &ScalarModel,
    set: &[Prepared],
    pad: u32,
    ctx: usize,
) -> Result<Vec<f64>> {
    let rows: Vec<Vec<u32>> = set.iter().flat_map(|p| p.rows.iter().cloned()).collect();
    Ok(score_rows(model, &rows, pad, ctx)?
        .into_iter()
        .map(f64::from)
        .collect())
}

/// Held-out measures of a trained reward model on ranking records (records with a row longer
/// than the context are left out; the count is returned).
pub fn evaluate_rankings(
    rm: &RewardModel,
    records: &[RankingRecord],
) -> Result<(RewardEval, usize)> {
    let (tok, ctx) = (rm.tokenizer(), rm.config().context_length);
    let mut set = Vec::new();
    let mut dropped = 0;
    for r in records {
        match prepare(tok, rm.template(), r, ctx)? {
            Some(p) => set.push(p),
            None => dropped += 1,
        }
    }
    let scores = score_all(rm.network(), &set, tok.special(Special::Eot), ctx)?;
    Ok((measures(&set, &scores), dropped))
}
