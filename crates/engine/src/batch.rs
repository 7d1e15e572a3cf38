//! Batched generation: the one decode loop behind every caller (CLI, evals, server, PPO rollouts).
//!
//! [`generate_batch`] prefills the prompt once with batch 1, forks the KV cache into `n` rows
//! ([`KvCache::select_rows`] with `[0; n]`), then decodes every unfinished row together, one
//! position per step:
//!
//! 1. each running row takes its next token from its own logits: the next token of the forced
//!    prefix (reported with `sampled = false`) or one drawn by the row's own [`Sampler`];
//! 2. rows that finished leave the batch, and their cache rows with them, so a finished row costs
//!    nothing (no dummy tokens are fed);
//! 3. the new tokens of the rows still running are fed as one `(B, 1)` batch.
//!
//! What callers can rely on:
//! - **Row independence.** Row `i` samples from a stream derived from `(params.seed, i)`
//!   ([`Sampler::for_row`]), so it is the same sequence whatever `n` is, and row 0 of any batch is
//!   what the single-sequence [`crate::generate()`] returns. Only the last bits of the log-probs
//!   depend on the batch: the model's CPU kernels round a `(B, 1)` decode step slightly
//!   differently for different `B` (measured ≤ 1e-6; the tests allow 1e-5). A draw landing within
//!   that distance of a boundary between two tokens could in principle differ.
//! - **Log-probs** are those of the distribution sampled from: log-softmax of `logits / T` before
//!   top-k/top-p truncation (plain log-softmax at `T = 0`). Forced tokens are scored the same way,
//!   so a training forward over `prompt + tokens` reproduces every entry (the PPO ratio is 1).
//! - **Lengths.** `tokens.len() <= params.max_tokens`, forced tokens included. A *sampled* stop
//!   token ends its row and is its last token (forced tokens never stop a row). The prompt plus
//!   the output never exceeds the context window: a row that reaches it ends with
//!   [`FinishReason::Context`], which is not an error.

use candle_core::{DType, Device, Tensor};
use chatforge_model::{Gpt, GptConfig, KvCache};

use crate::sampler::{Sampler, SamplingParams};
use crate::{Error, Result};

/// Why a sequence ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// A stop token was sampled (it is the last token of the output).
    Stop,
    /// `max_tokens` tokens were produced.
    Length,
    /// The prompt plus the output filled the model's context window.
    Context,
    /// The caller's callback asked to stop.
    Cancelled,
}

/// One generated continuation: every output token with its log-probability and whether it was
/// sampled or forced. The three vectors have the same length.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Output token ids (forced prefix first, then the sampled ones); the prompt is not included.
    pub tokens: Vec<u32>,
    /// Natural-log probability of each token under the sampling distribution (see the module
    /// docs).
    pub logprobs: Vec<f32>,
    /// `true` where the token was sampled, `false` where it was forced.
    pub sampled: Vec<bool>,
    /// Why the sequence ended.
    pub finish: FinishReason,
}

/// What to generate: `n` continuations of `prompt`, each starting with `forced_prefix`.
#[derive(Debug, Clone, Copy)]
pub struct GenerateRequest<'a> {
    /// Prompt token ids: non-empty and shorter than the context window.
    pub prompt: &'a [u32],
    /// Tokens every row outputs first, unsampled (PPO and tool use); may be empty.
    pub forced_prefix: &'a [u32],
    /// Number of continuations (0 returns none).
    pub n: usize,
    /// Sampling settings shared by the rows (each row has its own random stream).
    pub params: &'a SamplingParams,
}

impl GenerateRequest<'_> {
    /// Checks the request against the model's config: valid sampling settings, a non-empty
    /// prompt that leaves room for one token, ids below the vocabulary size, and a forced prefix
    /// that fits in `max_tokens` and the context window.
    pub fn validate(&self, cfg: &GptConfig) -> Result<()> {
        self.params.validate()?;
        let ctx = cfg.context_length;
        if self.prompt.is_empty() {
            return Err(Error::Params("empty prompt".into()));
        }
        if self.prompt.len() >= ctx {
            return Err(Error::Params(format!(
                "prompt has {} tokens; the context window is {ctx}, so no token can be generated",
                self.prompt.len()
            )));
        }
        for (what, ids) in [
            ("prompt", self.prompt),
            ("forced prefix", self.forced_prefix),
        ] {
            if let Some((i, id)) = ids
                .iter()
                .enumerate()
                .find(|(_, id)| **id as usize >= cfg.vocab_size)
            {
                return Err(Error::Params(format!(
                    "{what} token {i} is id {id}, not below the vocabulary size {}",
                    cfg.vocab_size
                )));
            }
        }
        if self.forced_prefix.len() > self.params.max_tokens {
            return Err(Error::Params(format!(
                "forced prefix of {} tokens is longer than max_tokens = {}",
                self.forced_prefix.len(),
                self.params.max_tokens
            )));
        }
        if self.prompt.len() + self.forced_prefix.len() > ctx {
            return Err(Error::Params(format!(
                "prompt ({}) plus forced prefix ({}) exceed the context window of {ctx} tokens",
                self.prompt.len(),
                self.forced_prefix.len()
            )));
        }
        Ok(())
    }
}

/// Generates `n` samples of a continuation of `prompt` (no forced prefix, no callback) with
/// `model`, whose weights are on `device`.
pub fn generate_n(
    model: &Gpt,
    device: &Device,
    prompt: &[u32],
    n: usize,
    params: &SamplingParams,
) -> Result<Vec<Sample>> {
    let req = GenerateRequest {
        prompt,
        forced_prefix: &[],
        n,
        params,
    };
    generate_batch(model, device, &req, |_, _| true)
}

/// Generates `req.n` continuations of `req.prompt` together (see the module docs for the
/// algorithm and its guarantees) with `model`, whose weights are on `device` (token ids are
/// sent there; the logits of each step come back to the host for sampling); returns them in row
/// order.
///
/// `on_token(row, token)` sees each output token of each row as it is produced, except a
/// sampled stop token, and returns `false` to end that row with [`FinishReason::Cancelled`]
/// (the other rows go on).
///
/// Errors on an invalid request ([`GenerateRequest::validate`]), non-finite logits, or a model
/// error; never on reaching the context window.
pub fn generate_batch(
    model: &Gpt,
    device: &Device,
    req: &GenerateRequest,
    mut on_token: impl FnMut(usize, u32) -> bool,
) -> Result<Vec<Sample>> {
    req.validate(model.config())?;
    let (ctx, n, params) = (model.config().context_length, req.n, req.params);
    let mut rows = (0..n)
        .map(|i| Row::new(params, i))
        .collect::<Result<Vec<_>>>()?;
    if n == 0 || params.max_tokens == 0 {
        rows.iter_mut()
            .for_each(|r| r.finish = Some(FinishReason::Length));
        return Ok(rows.into_iter().map(Row::into_sample).collect());
    }

    // Prefill once with batch 1, then fork: every row starts from the prompt's last logits.
    // Room for every position this call can write, so the cache never grows while decoding.
    let positions = (req.prompt.len() + params.max_tokens).min(ctx);
    let mut cache = KvCache::with_capacity(model.config().n_layer, positions);
    let prompt = Tensor::new(req.prompt, device)?.unsqueeze(0)?; // (1, P)
    let first = last_position_logits(&model.forward(&prompt, Some(&mut cache))?)?.concat(); // (V,)
    let mut logits = vec![first; n]; // n × (V,)
    let mut cache = cache.select_rows(&vec![0u32; n])?;
    // Batch position `b` decodes row `running[b]`.
    let mut running: Vec<usize> = (0..n).collect();
    let mut seq_len = req.prompt.len(); // prompt + output so far, the same for every running row

    loop {
        // 1. Every running row takes its next token.
        let mut next = Vec::with_capacity(running.len());
        for (b, &i) in running.iter().enumerate() {
            let token =
                rows[i].push_next(&logits[b], req.forced_prefix, &mut |t| on_token(i, t))?;
            next.push(token);
        }
        seq_len += 1;

        // 2. Finished rows leave the batch; stop when none is left or the context is full (the
        //    rows still running then end with `Context`).
        let keep: Vec<usize> = (0..running.len())
            .filter(|&b| rows[running[b]].finish.is_none())
            .collect();
        if keep.is_empty() || seq_len == ctx {
            break;
        }
        if keep.len() < running.len() {
            let keep_u32: Vec<u32> = keep.iter().map(|&b| b as u32).collect();
            cache = cache.select_rows(&keep_u32)?;
            running = keep.iter().map(|&b| running[b]).collect();
            next = keep.iter().map(|&b| next[b]).collect();
        }

        // 3. Feed the new tokens as one batch.
        let ids = Tensor::from_vec(next, (running.len(), 1), device)?; // (B, 1)
        logits = last_position_logits(&model.forward(&ids, Some(&mut cache))?)?;
    }
    Ok(rows.into_iter().map(Row::into_sample).collect())
}

/// The per-row state of [`generate_batch`].
struct Row {
    sampler: Sampler,
    tokens: Vec<u32>,
    logprobs: Vec<f32>,
    sampled: Vec<bool>,
    /// `None` while the row is running.
    finish: Option<FinishReason>,
}

impl Row {
    fn new(params: &SamplingParams, row: usize) -> Result<Row> {
        Ok(Row {
            sampler: Sampler::for_row(params.clone(), row)?,
            tokens: Vec::new(),
            logprobs: Vec::new(),
            sampled: Vec::new(),
            finish: None,
        })
    }

    /// Appends the next token (forced while the forced prefix lasts, sampled after) chosen from
    /// this row's `logits` (V,), decides whether the row is finished, and returns the token.
    fn push_next(
        &mut self,
        logits: &[f32],
        forced: &[u32],
        on_token: &mut dyn FnMut(u32) -> bool,
    ) -> Result<u32> {
        let (token, logprob, sampled) = match forced.get(self.tokens.len()) {
            Some(&t) => (t, self.sampler.logprob(logits, t)?, false),
            None => {
                let pick = self.sampler.sample(logits)?;
                (pick.token, pick.logprob, true)
            }
        };
        self.tokens.push(token);
        self.logprobs.push(logprob);
        self.sampled.push(sampled);
        let params = self.sampler.params();
        self.finish = if sampled && params.stop_tokens.contains(&token) {
            Some(FinishReason::Stop)
        } else if !on_token(token) {
            Some(FinishReason::Cancelled)
        } else if self.tokens.len() >= params.max_tokens {
            Some(FinishReason::Length)
        } else {
            None
        };
        Ok(token)
    }

    fn into_sample(self) -> Sample {
        Sample {
            tokens: self.tokens,
            logprobs: self.logprobs,
            sampled: self.sampled,
            // The loop only leaves a row running when the context window is full.
            finish: self.finish.unwrap_or(FinishReason::Context),
        }
    }
}

/// The last position's logits of each row, as f32.
///
/// # Shapes
/// - `logits`: `(B, T, V)`; returns `B` rows of `V`.
fn last_position_logits(logits: &Tensor) -> Result<Vec<Vec<f32>>> {
    let (_b, t, _v) = logits.dims3()?;
    Ok(logits
        .narrow(1, t - 1, 1)? // (B, 1, V)
        .squeeze(1)? // (B, V)
        .to_dtype(DType::F32)?
        .to_vec2::<f32>()?)
}
