//! Generation over token ids with the KV cache: prefill the prompt once, then decode one token
//! at a time, each step feeding only the new token and attending to the cache.
//!
//! This is the single-sequence path used by `chatforge sample` and the pretraining samples.
//! (Batched generation with cache forking for N samples comes with the SFT engine.)

use candle_core::{Device, Tensor};
use chatforge_model::{Gpt, KvCache};

use crate::sampler::{Sampler, SamplingParams};
use crate::{Error, Result};

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// A stop token was produced (it is the last token of the output).
    Stop,
    /// `max_tokens` were generated.
    Length,
    /// The model's context window is full.
    Context,
    /// The caller's callback asked to stop.
    Cancelled,
}

/// Generated tokens with the log-probability of each under the sampling distribution.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    pub tokens: Vec<u32>,
    pub logprobs: Vec<f32>,
    pub finish: FinishReason,
}

/// Generates a continuation of `prompt`. `on_token` sees each token as it is produced and
/// returns `false` to stop early.
pub fn generate(
    model: &Gpt,
    prompt: &[u32],
    params: &SamplingParams,
    mut on_token: impl FnMut(u32) -> bool,
) -> Result<Generation> {
    let ctx = model.config().context_length;
    if prompt.is_empty() {
        return Err(Error::Params("empty prompt".into()));
    }
    if prompt.len() >= ctx {
        return Err(Error::Params(format!(
            "prompt has {} tokens; the context window is {ctx}",
            prompt.len()
        )));
    }
    let mut sampler = Sampler::new(params.clone())?;
    let mut cache = KvCache::new(model.config().n_layer);
    let device = Device::Cpu;
    let mut input = Tensor::new(prompt, &device)?.unsqueeze(0)?; // (1, T)
    let mut out = Generation {
        tokens: Vec::new(),
        logprobs: Vec::new(),
        finish: FinishReason::Length,
    };
    while out.tokens.len() < params.max_tokens {
        if cache.len() + input.dim(1)? > ctx {
            out.finish = FinishReason::Context;
            break;
        }
        let logits = model.forward(&input, Some(&mut cache))?; // (1, T, V)
        let last = logits
            .narrow(1, logits.dim(1)? - 1, 1)?
            .squeeze(1)?
            .squeeze(0)?; // (V,)
        let row = last.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?;
        let pick = sampler.sample(&row)?;
        out.tokens.push(pick.token);
        out.logprobs.push(pick.logprob);
        if params.stop_tokens.contains(&pick.token) {
            out.finish = FinishReason::Stop;
            break;
        }
        if !on_token(pick.token) {
            out.finish = FinishReason::Cancelled;
            break;
        }
        input = Tensor::new(&[pick.token], &device)?.unsqueeze(0)?;
    }
    Ok(out)
}
