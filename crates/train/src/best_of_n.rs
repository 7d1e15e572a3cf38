//! Best-of-n sampling: draw n replies from a policy and keep the one the reward model scores
//! highest (rejection sampling against the RM, as in WebGPT and Llama 2).
//!
//! The replies are generated together by the engine (`generate_n`: one prefill, n rows), with
//! the template's assistant-end token added to the stop tokens and `max_tokens` capped so that
//! prompt + reply + the readout token fits the reward model's context as well as the policy's.
//! Each reply is scored as text re-encoded with the reward model's tokenizer and template (the
//! way its training rankings were encoded), with the assistant-end token only when the reply
//! ended with it.

use candle_core::Device;
use chatforge_data::conversation::Message;
use chatforge_engine::{generate_n, FinishReason, SamplingParams};
use chatforge_model::Gpt;
use chatforge_tokenizer::chat::{assistant_end, render_prompt, ChatTemplate};
use chatforge_tokenizer::Tokenizer;

use crate::reward::RewardModel;
use crate::{Error, Result};

/// Samples `n` replies to `prompt` from `policy` (weights on `device`) and scores them with `rm`. Returns `(reply
/// text, score, ended)` for each, best first (ties keep sampling order).
#[allow(clippy::too_many_arguments)]
pub fn best_of_n(
    policy: &Gpt,
    device: &Device,
    tok: &Tokenizer,
    template: ChatTemplate,
    rm: &RewardModel,
    prompt: &[Message],
    n: usize,
    params: &SamplingParams,
) -> Result<Vec<(String, f32, bool)>> {
    if n == 0 {
        return Err(Error::Config("best-of-n needs n >= 1".into()));
    }
    let ids = render_prompt(tok, prompt, template)?;
    let end = assistant_end(tok, template)?;
    let rm_prompt = render_prompt(rm.tokenizer(), prompt, rm.template())?.len();
    let room = policy
        .config()
        .context_length
        .saturating_sub(ids.len())
        .min(
            rm.config().context_length.saturating_sub(rm_prompt + 2), // + assistant end + readout
        );
    if room == 0 {
        return Err(Error::Data(format!(
            "the prompt ({} tokens) leaves no room for a reply in the context",
            ids.len()
        )));
    }
    let mut params = params.clone();
    params.max_tokens = params.max_tokens.min(room);
    if !params.stop_tokens.contains(&end) {
        params.stop_tokens.push(end);
    }
    let samples = generate_n(policy, device, &ids, n, &params)?;
    let mut replies = Vec::with_capacity(n);
    for s in &samples {
        let ended = s.finish == FinishReason::Stop && s.tokens.last() == Some(&end);
        let body = if ended {
            &s.tokens[..s.tokens.len() - 1]
        } else {
            &s.tokens[..]
        };
        // Lossy: a reply cut off by `max_tokens` can end inside a multi-byte character.
        let text = String::from_utf8_lossy(&tok.decode_bytes(body)?).into_owned();
        replies.push((text, ended));
    }
    let scores = rm.score_responses(prompt, &replies)?;
    let mut out: Vec<(String, f32, bool)> = replies
        .into_iter()
        .zip(scores)
        .map(|((text, ended), score)| (text, score, ended))
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    Ok(out)
}
