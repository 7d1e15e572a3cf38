//! Rollouts and the batched forwards PPO needs over them.
//!
//! A rollout is one sampled response to one prompt, with the log-probability the engine gave each
//! sampled token (the distribution it sampled from: `log_softmax(logits / T)`). PPO then needs,
//! for the same tokens, the log-probs of the policy being trained (with gradient), of the frozen
//! reference model, and the value model's estimates. All of them come from one layout, a
//! [`Packed`] batch: each row is `prompt ++ response`, right-padded; position `i` of the
//! `(B, L - 1)` grid predicts token `i + 1`, and a row's response tokens sit at positions
//! `prompt_len - 1 ..`. Right padding cannot change a row's real positions (causal attention),
//! so packing several rollouts together changes nothing but the last bits of the numbers.
//!
//! The value of the state before response token `j` is read at the same position as the
//! log-prob of token `j` (the hidden state that has seen the prompt and `response[..j]`), as in
//! TRL.

use candle_core::{DType, Device, Tensor, D};
use chatforge_engine::{generate_n, FinishReason, SamplingParams};
use chatforge_model::Gpt;

use crate::{Error, Result};

/// One sampled response.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollout {
    /// Index of the prompt in the prompt set.
    pub prompt_index: usize,
    /// Rendered prompt ids (ending with the assistant-start header).
    pub prompt: Vec<u32>,
    /// Sampled ids; the assistant-end token is the last one when the response ended.
    pub response: Vec<u32>,
    /// The engine's log-prob of each response token at the sampling temperature.
    pub logprobs: Vec<f32>,
    /// Whether the response ended with the assistant-end token.
    pub ended: bool,
}

/// Samples `per_prompt` responses to each prompt. Row `r` of prompt `i` draws from the stream
/// `(params.seed ^ prompt_index · 0x9E37…, r)`, so a rollout depends only on the seed, the
/// prompt and its row: resuming or re-batching reproduces it. `device` is where `policy`'s
/// weights are.
pub fn sample(
    policy: &Gpt,
    device: &Device,
    prompts: &[(usize, &[u32])],
    per_prompt: usize,
    params: &SamplingParams,
) -> Result<Vec<Rollout>> {
    let mut out = Vec::with_capacity(prompts.len() * per_prompt);
    for &(index, prompt) in prompts {
        let p = SamplingParams {
            seed: params.seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            ..params.clone()
        };
        for s in generate_n(policy, device, prompt, per_prompt, &p)? {
            if s.tokens.is_empty() {
                return Err(Error::Data(format!(
                    "prompt {index} produced an empty response (the prompt fills the context)"
                )));
            }
            out.push(Rollout {
                prompt_index: index,
                prompt: prompt.to_vec(),
                ended: s.finish == FinishReason::Stop,
                response: s.tokens,
                logprobs: s.logprobs,
            });
        }
    }
    Ok(out)
}

/// Rollouts as one right-padded batch (module docs give the layout).
#[derive(Debug)]
pub struct Packed {
    /// `(B, L)` ids.
    pub ids: Tensor,
    /// `(B, L - 1)` ids: `ids[:, 1:]`.
    pub targets: Tensor,
    /// `(B, L - 1)` f32: 1 where the position predicts a response token.
    pub mask: Tensor,
    /// Per row, the grid positions of its response tokens, in order.
    pub positions: Vec<std::ops::Range<usize>>,
    pub rows: usize,
    /// `L - 1`.
    pub width: usize,
}

/// Packs `rollouts` (each `prompt ++ response`) right-padded with `pad`, on `device`.
pub fn pack(rollouts: &[&Rollout], pad: u32, device: &Device) -> Result<Packed> {
    let b = rollouts.len();
    if b == 0 {
        return Err(Error::Data("cannot pack an empty batch of rollouts".into()));
    }
    let l = rollouts
        .iter()
        .map(|r| r.prompt.len() + r.response.len())
        .max()
        .unwrap_or(0);
    if l < 2 {
        return Err(Error::Data("rollouts are shorter than two tokens".into()));
    }
    let w = l - 1;
    let mut ids = vec![pad; b * l];
    let mut mask = vec![0f32; b * w];
    let mut positions = Vec::with_capacity(b);
    for (row, r) in rollouts.iter().enumerate() {
        let seq = ids[row * l..(row + 1) * l].iter_mut();
        for (dst, &src) in seq.zip(r.prompt.iter().chain(&r.response)) {
            *dst = src;
        }
        let start = r.prompt.len() - 1;
        let range = start..start + r.response.len();
        for i in range.clone() {
            mask[row * w + i] = 1.0;
        }
        positions.push(range);
    }
    let targets: Vec<u32> = (0..b)
        .flat_map(|row| ids[row * l + 1..(row + 1) * l].to_vec())
        .collect();
    Ok(Packed {
        ids: Tensor::from_vec(ids, (b, l), device)?,
        targets: Tensor::from_vec(targets, (b, w), device)?,
        mask: Tensor::from_vec(mask, (b, w), device)?,
        positions,
        rows: b,
        width: w,
    })
}

/// Log-probs of every target at temperature `temperature` (`T = 0` is read as 1) and the
/// entropy of each position's distribution (no gradient). Returns `((B, L-1) log-probs with
/// gradient, (B, L-1) entropies)`.
pub fn token_logprobs(model: &Gpt, batch: &Packed, temperature: f64) -> Result<(Tensor, Tensor)> {
    let (b, w) = (batch.rows, batch.width);
    let logits = model.forward(&batch.ids, None)?.narrow(1, 0, w)?; // (B, L-1, V)
    let v = logits.dim(D::Minus1)?;
    let t = if temperature > 0.0 { temperature } else { 1.0 };
    let scaled = logits.reshape((b * w, v))?.to_dtype(DType::F32)?;
    let scaled = if t == 1.0 {
        scaled
    } else {
        scaled.affine(1.0 / t, 0.0)?
    };
    let logp_all = chatforge_model::ops::log_softmax_last_dim(&scaled)?; // (B*W, V)
    let picked = logp_all
        .gather(&batch.targets.reshape((b * w, 1))?, 1)?
        .reshape((b, w))?;
    let lp = logp_all.detach();
    let entropy = (lp.exp()? * &lp)?.sum(1)?.neg()?.reshape((b, w))?;
    Ok((picked, entropy))
}

/// The scalar model's output at every grid position, `(B, L - 1)` (values, with gradient when
/// the model is trainable).
pub fn token_values(model: &crate::reward::ScalarModel, batch: &Packed) -> Result<Tensor> {
    Ok(model
        .forward(&batch.ids)?
        .narrow(1, 0, batch.width)?
        .to_dtype(DType::F32)?)
}

/// Each row's entries at its response positions, as f64.
pub fn per_row(grid: &Tensor, batch: &Packed) -> Result<Vec<Vec<f64>>> {
    let g = grid.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    Ok(batch
        .positions
        .iter()
        .enumerate()
        .map(|(row, range)| g[row][range.clone()].iter().map(|&x| x as f64).collect())
        .collect())
}

/// The inverse of [`per_row`]: a `(B, L - 1)` f32 grid with each row's values at its response
/// positions and zeros elsewhere, on the batch's device.
pub fn to_grid(rows: &[Vec<f64>], batch: &Packed) -> Result<Tensor> {
    let w = batch.width;
    let mut g = vec![0f32; batch.rows * w];
    for (row, (vals, range)) in rows.iter().zip(&batch.positions).enumerate() {
        if vals.len() != range.len() {
            return Err(Error::Data(format!(
                "row {row} has {} values for {} response tokens",
                vals.len(),
                range.len()
            )));
        }
        for (i, v) in range.clone().zip(vals) {
            g[row * w + i] = *v as f32;
        }
    }
    Ok(Tensor::from_vec(g, (batch.rows, w), batch.ids.device())?)
}
