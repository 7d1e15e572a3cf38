//! Sampling settings and the sampler that turns one row of logits into a token.
//!
//! The order of the filters is the one llama.cpp and Hugging Face use: temperature scales the
//! logits, then top-k keeps the k largest, then top-p keeps the smallest prefix of the sorted
//! distribution whose mass reaches p. Temperature 0 is greedy decoding and never consumes the
//! random stream, so it ignores the seed.

use chatforge_data::Rng;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// How to pick each next token. A seeded value: the same settings and prompt give the same text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplingParams {
    /// 0 means greedy (argmax).
    pub temperature: f32,
    /// Keep only the k most likely tokens; 0 disables.
    pub top_k: usize,
    /// Nucleus sampling mass in (0, 1]; 1 disables.
    pub top_p: f32,
    /// Seed of the sampling stream.
    pub seed: u64,
    /// Stop after this many generated tokens.
    pub max_tokens: usize,
    /// Token ids that end generation; the stop token is included in the output.
    pub stop_tokens: Vec<u32>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
            max_tokens: 128,
            stop_tokens: Vec::new(),
        }
    }
}

impl SamplingParams {
    /// Rejects values that have no meaning (negative or non-finite temperature, top-p outside
    /// (0, 1]).
    pub fn validate(&self) -> Result<()> {
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return Err(Error::Params(format!(
                "temperature must be a finite number >= 0, got {}",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::Params(format!(
                "top_p must be in (0, 1], got {}",
                self.top_p
            )));
        }
        Ok(())
    }
}

/// A token and its log-probability under the distribution it was sampled from (after
/// temperature, before top-k/top-p truncation — the quantity PPO needs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pick {
    /// The chosen token id.
    pub token: u32,
    /// Its log-probability (natural log).
    pub logprob: f32,
}

/// Picks tokens from logits with a private random stream.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: Rng,
}

impl Sampler {
    /// The sampler of a single sequence: the same as [`Sampler::for_row`] with row 0.
    pub fn new(params: SamplingParams) -> Result<Self> {
        Self::for_row(params, 0)
    }

    /// The sampler of row `row` of a batch: its random stream is derived from `params.seed` and
    /// the row index alone, so a row draws the same tokens whatever the batch size.
    pub fn for_row(params: SamplingParams, row: usize) -> Result<Self> {
        params.validate()?;
        let rng = Rng::derive(params.seed, &format!("sampler/{row}"));
        Ok(Self { params, rng })
    }

    /// The settings this sampler was built with.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Samples one token from a row of logits.
    pub fn sample(&mut self, logits: &[f32]) -> Result<Pick> {
        if self.params.temperature == 0.0 {
            // Greedy needs one log-probability, not the whole row of them.
            check_logits(logits)?;
            let token = argmax(logits);
            return Ok(Pick {
                token: token as u32,
                logprob: log_softmax_at(logits, token, 1.0),
            });
        }
        let logp = self.logprobs(logits)?;
        // Candidates sorted by probability, highest first (ties by lower id: deterministic).
        let mut order: Vec<usize> = (0..logp.len()).collect();
        order.sort_by(|&a, &b| logp[b].total_cmp(&logp[a]).then(a.cmp(&b)));
        let mut keep = order.len();
        if self.params.top_k > 0 {
            keep = keep.min(self.params.top_k);
        }
        if self.params.top_p < 1.0 {
            let mut mass = 0.0f64;
            for (i, &id) in order.iter().take(keep).enumerate() {
                mass += (logp[id] as f64).exp();
                if mass >= self.params.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
        }
        let kept = &order[..keep];
        let total: f64 = kept.iter().map(|&id| (logp[id] as f64).exp()).sum();
        let mut u = self.rng.next_f64() * total;
        let mut token = kept[keep - 1];
        for &id in kept {
            u -= (logp[id] as f64).exp();
            if u < 0.0 {
                token = id;
                break;
            }
        }
        Ok(Pick {
            token: token as u32,
            logprob: logp[token],
        })
    }

    /// The log-probability of `token` under the distribution [`Sampler::sample`] draws from
    /// (the same quantity `sample` reports): how forced tokens are scored. Consumes no randomness.
    pub fn logprob(&self, logits: &[f32], token: u32) -> Result<f32> {
        check_logits(logits)?;
        if token as usize >= logits.len() {
            return Err(Error::Params(format!(
                "token id {token} is not below the vocabulary size {}",
                logits.len()
            )));
        }
        let t = self.params.temperature;
        Ok(log_softmax_at(
            logits,
            token as usize,
            if t == 0.0 { 1.0 } else { t },
        ))
    }

    /// Log-softmax of the temperature-scaled logits (of the logits themselves at temperature 0),
    /// before any top-k/top-p truncation.
    fn logprobs(&self, logits: &[f32]) -> Result<Vec<f32>> {
        check_logits(logits)?;
        let t = self.params.temperature;
        if t == 0.0 {
            Ok(log_softmax(logits))
        } else {
            let scaled: Vec<f32> = logits.iter().map(|x| x / t).collect();
            Ok(log_softmax(&scaled))
        }
    }
}

/// Index of the largest value (the first one on ties).
pub fn argmax(xs: &[f32]) -> usize {
    let mut best = 0;
    for (i, x) in xs.iter().enumerate() {
        if *x > xs[best] {
            best = i;
        }
    }
    best
}

/// Numerically stable log-softmax of one row, computed in f64.
pub fn log_softmax(xs: &[f32]) -> Vec<f32> {
    let lse = log_sum_exp(xs.iter().copied());
    xs.iter().map(|x| (*x as f64 - lse) as f32).collect()
}

/// Entry `i` of `log_softmax(xs / t)` (with `xs / t` rounded to f32 first, as
/// [`Sampler::logprob`] scales), bit for bit, without building the row.
fn log_softmax_at(xs: &[f32], i: usize, t: f32) -> f32 {
    let lse = if t == 1.0 {
        log_sum_exp(xs.iter().copied())
    } else {
        log_sum_exp(xs.iter().map(|x| x / t))
    };
    let x = if t == 1.0 { xs[i] } else { xs[i] / t };
    (x as f64 - lse) as f32
}

/// `log sum_i exp(x_i)` in f64, max-subtracted. `xs` is iterated twice.
fn log_sum_exp(xs: impl Iterator<Item = f32> + Clone) -> f64 {
    let max = xs.clone().fold(f32::NEG_INFINITY, f32::max) as f64;
    xs.map(|x| (x as f64 - max).exp()).sum::<f64>().ln() + max
}

/// Rejects an empty row or one with a NaN.
fn check_logits(logits: &[f32]) -> Result<()> {
    if logits.is_empty() {
        return Err(Error::Params("empty logits".into()));
    }
    if logits.iter().any(|x| x.is_nan()) {
        return Err(Error::NonFinite);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, top_k: usize, top_p: f32, seed: u64) -> SamplingParams {
        SamplingParams {
            temperature,
            top_k,
            top_p,
            seed,
            ..Default::default()
        }
    }

    #[test]
    fn greedy_picks_argmax_and_ignores_the_seed() {
        let logits = [0.1, 2.0, -1.0, 1.9];
        for seed in 0..5 {
            let mut s = Sampler::new(params(0.0, 0, 1.0, seed)).unwrap();
            assert_eq!(s.sample(&logits).unwrap().token, 1);
        }
    }

    #[test]
    fn top_k_one_is_greedy_and_top_p_keeps_the_nucleus() {
        let logits = [0.0, 3.0, 1.0, 2.9];
        let mut s = Sampler::new(params(1.0, 1, 1.0, 9)).unwrap();
        for _ in 0..20 {
            assert_eq!(s.sample(&logits).unwrap().token, 1);
        }
        // p(1) ≈ 0.47, p(3) ≈ 0.43: top-p 0.8 keeps exactly {1, 3}.
        let mut s = Sampler::new(params(1.0, 0, 0.8, 9)).unwrap();
        let mut seen = [0usize; 4];
        for _ in 0..2000 {
            seen[s.sample(&logits).unwrap().token as usize] += 1;
        }
        assert_eq!(seen[0] + seen[2], 0, "{seen:?}");
        assert!(seen[1] > 800 && seen[3] > 800, "{seen:?}");
    }

    #[test]
    fn sampling_follows_the_distribution_and_reports_its_logprob() {
        // Logits ln(1), ln(3): p = [0.25, 0.75].
        let logits = [0.0f32, 3.0f32.ln()];
        let mut s = Sampler::new(params(1.0, 0, 1.0, 1)).unwrap();
        let n = 20_000;
        let mut ones = 0;
        for _ in 0..n {
            let p = s.sample(&logits).unwrap();
            if p.token == 1 {
                ones += 1;
                assert!((p.logprob - 0.75f32.ln()).abs() < 1e-6);
            } else {
                assert!((p.logprob - 0.25f32.ln()).abs() < 1e-6);
            }
        }
        let frac = ones as f64 / n as f64;
        assert!((frac - 0.75).abs() < 0.015, "{frac}");
    }

    #[test]
    fn same_seed_same_tokens_different_seed_differs() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let run = |seed| {
            let mut s = Sampler::new(params(1.0, 0, 1.0, seed)).unwrap();
            (0..64)
                .map(|_| s.sample(&logits).unwrap().token)
                .collect::<Vec<_>>()
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
    }

    #[test]
    fn logprob_scores_under_the_tempered_untruncated_distribution() {
        // Logits ln(1), ln(3) at T = 0.5 are ln(1), ln(9): p = [0.1, 0.9]; top-k 1 keeps only
        // token 1, yet the reported log-probs are those of the full tempered distribution.
        let logits = [0.0f32, 3.0f32.ln()];
        let mut s = Sampler::new(params(0.5, 1, 1.0, 0)).unwrap();
        assert!((s.logprob(&logits, 0).unwrap() - 0.1f32.ln()).abs() < 1e-6);
        assert!((s.logprob(&logits, 1).unwrap() - 0.9f32.ln()).abs() < 1e-6);
        let pick = s.sample(&logits).unwrap();
        assert_eq!(pick.logprob, s.logprob(&logits, pick.token).unwrap());
        // Greedy scores under the plain softmax: p = [0.25, 0.75].
        let g = Sampler::new(params(0.0, 0, 1.0, 0)).unwrap();
        assert!((g.logprob(&logits, 0).unwrap() - 0.25f32.ln()).abs() < 1e-6);
        assert!(s.logprob(&logits, 2).is_err());
    }

    #[test]
    fn one_logprob_equals_its_entry_of_the_row_bit_for_bit() {
        let logits: Vec<f32> = (0..300).map(|i| (i as f32 * 0.731).sin() * 7.0).collect();
        for t in [0.0f32, 0.5, 1.0, 1.7] {
            let s = Sampler::new(params(t, 0, 1.0, 0)).unwrap();
            let row = s.logprobs(&logits).unwrap();
            for tok in [0u32, 17, 299] {
                let one = s.logprob(&logits, tok).unwrap();
                assert_eq!(one.to_bits(), row[tok as usize].to_bits(), "T = {t}");
            }
        }
        let mut greedy = Sampler::new(params(0.0, 0, 1.0, 0)).unwrap();
        let pick = greedy.sample(&logits).unwrap();
        assert_eq!(pick.token as usize, argmax(&logits));
        assert_eq!(pick.logprob, log_softmax(&logits)[pick.token as usize]);
        assert!(greedy.sample(&[]).is_err());
        assert!(matches!(
            greedy.sample(&[0.0, f32::NAN]),
            Err(Error::NonFinite)
        ));
    }

    #[test]
    fn bad_values_are_rejected() {
        assert!(Sampler::new(params(-1.0, 0, 1.0, 0)).is_err());
        assert!(Sampler::new(params(f32::NAN, 0, 1.0, 0)).is_err());
        assert!(Sampler::new(params(1.0, 0, 0.0, 0)).is_err());
        assert!(Sampler::new(params(1.0, 0, 1.5, 0)).is_err());
        let mut s = Sampler::new(params(1.0, 0, 1.0, 0)).unwrap();
        assert!(s.sample(&[f32::NAN, 0.0]).is_err());
    }
}
