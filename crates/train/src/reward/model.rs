//! The reward model as a network: the transformer read out by a scalar head at the reward
//! readout token, its checkpoints, and a frozen scorer for everything that uses it after
//! training (PPO, best-of-n, `chatforge score`, evals).
//!
//! A row is `render_prompt(prompt) ++ response ids ++ [<|reward|>]`, where the response ids end
//! with the assistant-end token when the reply was finished. The score of a row is the scalar
//! head applied to the final hidden state at its last position (the readout token). Rows are
//! batched right-padded; causal attention means a row's padding cannot reach its readout
//! position, so batching does not change a score (tested to 1e-5).
//!
//! A reward checkpoint holds every parameter of the SFT model it started from (the LM head
//! included: it is not used, but keeping it lets the language-model shapes be checked as they
//! are, and lets PPO build a value model from the same file) plus `score_head.weight` `(1, C)`
//! and `score_head.bias` `(1,)`. Its `meta.json` records the chat template, so a loader renders
//! prompts the way the model was trained.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use chatforge_data::conversation::Message;
use chatforge_data::Rng;
use chatforge_model::checkpoint::Checkpoint;
use chatforge_model::{Gpt, GptConfig, Params, ScalarHead};
use chatforge_tokenizer::chat::{assistant_end, render_prompt, ChatTemplate};
use chatforge_tokenizer::{Special, Tokenizer};

use crate::artifact::Meta;
use crate::{Error, Result};

/// Rows per forward pass when scoring many rows (memory bound, not a semantic setting).
pub const SCORE_BATCH_ROWS: usize = 32;

/// The reward-model row of one response: `prompt_ids ++ response_ids ++ [<|reward|>]`.
///
/// `prompt_ids` come from [`render_prompt`] (they end with the assistant-start header);
/// `response_ids` end with [`assistant_end`] when the reply was finished. The readout token is
/// the same for every template, so `template` is only part of the signature to keep callers
/// honest about which rendering produced `prompt_ids`.
pub fn reward_row(
    tok: &Tokenizer,
    _template: ChatTemplate,
    prompt_ids: &[u32],
    response_ids: &[u32],
) -> Vec<u32> {
    let mut row = Vec::with_capacity(prompt_ids.len() + response_ids.len() + 1);
    row.extend_from_slice(prompt_ids);
    row.extend_from_slice(response_ids);
    row.push(tok.special(Special::Reward));
    row
}

/// The response ids of a reply given as text: `encode(text)`, then the assistant-end token when
/// the reply `ended` (replies in ranking files are finished replies).
pub fn response_ids(
    tok: &Tokenizer,
    template: ChatTemplate,
    text: &str,
    ended: bool,
) -> Result<Vec<u32>> {
    let mut ids = tok.encode(text);
    if ended {
        ids.push(assistant_end(tok, template)?);
    }
    Ok(ids)
}

/// Stacks rows into a right-padded `(B, T)` id tensor on `device`; returns it with each row's
/// length.
///
/// # Shapes
/// - returns `(B, T)` with `T` the longest row.
pub fn pad_rows(rows: &[&[u32]], pad: u32, device: &Device) -> Result<(Tensor, Vec<usize>)> {
    let t = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    if t == 0 || rows.iter().any(|r| r.is_empty()) {
        return Err(Error::Data("a reward-model row is empty".into()));
    }
    let b = rows.len();
    let mut x = vec![pad; b * t];
    for (i, r) in rows.iter().enumerate() {
        x[i * t..i * t + r.len()].copy_from_slice(r);
    }
    let lens = rows.iter().map(|r| r.len()).collect();
    Ok((Tensor::from_vec(x, (b, t), device)?, lens))
}

/// The transformer without its LM head in the forward pass, plus a scalar head.
#[derive(Debug, Clone)]
pub struct ScalarModel {
    pub gpt: Gpt,
    pub head: ScalarHead,
    /// Where the weights are (the `VarBuilder`'s device).
    device: Device,
}

impl ScalarModel {
    /// Builds the transformer and `score_head.*` from one root `vb`.
    pub fn new(cfg: &GptConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            gpt: Gpt::new(cfg, vb.clone())?,
            head: ScalarHead::new(cfg, vb.clone())?,
            device: vb.device().clone(),
        })
    }

    /// The device of the weights, where inputs must go.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The model with the transformer's linear layers at `prec` (see
    /// [`Gpt::with_matmul_precision`]); the one-output score head stays f32.
    pub fn with_matmul_precision(self, prec: chatforge_model::ops::MatmulPrecision) -> Self {
        Self {
            gpt: self.gpt.with_matmul_precision(prec),
            ..self
        }
    }

    /// One scalar per position.
    ///
    /// # Shapes
    /// - `ids`: `(B, T)` u32; returns `(B, T)`.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        Ok(self.head.forward(&self.gpt.forward_hidden(ids, None)?)?)
    }

    /// The score of each right-padded row: the head at position `lens[b] - 1` of row `b`. Only
    /// those positions go through the head (one gather of the hidden states).
    ///
    /// # Shapes
    /// - `ids`: `(B, T)` u32, `lens`: `B` lengths in `1..=T`; returns `(B,)`.
    pub fn readout(&self, ids: &Tensor, lens: &[usize]) -> Result<Tensor> {
        let hidden = self.gpt.forward_hidden(ids, None)?; // (B, T, C)
        let (b, t, c) = hidden.dims3()?;
        if lens.len() != b || lens.iter().any(|&l| l == 0 || l > t) {
            return Err(Error::Data(format!(
                "readout lengths {lens:?} do not fit a batch of {b} rows of {t} tokens"
            )));
        }
        let idx: Vec<u32> = lens
            .iter()
            .enumerate()
            .map(|(i, &l)| (i * t + l - 1) as u32)
            .collect();
        let idx = Tensor::from_vec(idx, b, hidden.device())?;
        let last = hidden.reshape((b * t, c))?.index_select(&idx, 0)?; // (B, C)
        let scores = self.head.forward(&last.unsqueeze(1)?)?; // (B, 1)
        Ok(scores.squeeze(1)?) // (B,)
    }
}

/// Scores `rows` with `model` in chunks of [`SCORE_BATCH_ROWS`], in order. Every row must fit
/// `context` tokens.
pub fn score_rows(
    model: &ScalarModel,
    rows: &[Vec<u32>],
    pad: u32,
    context: usize,
) -> Result<Vec<f32>> {
    if let Some((i, r)) = rows.iter().enumerate().find(|(_, r)| r.len() > context) {
        return Err(Error::Data(format!(
            "reward-model row {i} has {} tokens, more than the context of {context}",
            r.len()
        )));
    }
    let mut out = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(SCORE_BATCH_ROWS) {
        let refs: Vec<&[u32]> = chunk.iter().map(|r| r.as_slice()).collect();
        let (ids, lens) = pad_rows(&refs, pad, model.device())?;
        out.extend(model.readout(&ids, &lens)?.to_vec1::<f32>()?);
    }
    Ok(out)
}

/// A fresh scalar head for `cfg` on `device`: `score_head.weight` ~ N(0, 1/(C+1)) from a
/// stream derived from `seed`, `score_head.bias` = 0.
pub fn init_score_head(cfg: &GptConfig, seed: u64, device: &Device) -> Result<Params> {
    let std = 1.0 / ((cfg.n_embd + 1) as f64).sqrt();
    let mut rng = Rng::derive(seed, "score_head.weight");
    let w: Vec<f32> = (0..cfg.n_embd)
        .map(|_| (rng.normal() * std) as f32)
        .collect();
    let tensors = [
        (
            "score_head.weight".to_string(),
            Tensor::from_vec(w, (1, cfg.n_embd), device)?,
        ),
        (
            "score_head.bias".to_string(),
            Tensor::zeros(1, DType::F32, device)?,
        ),
    ]
    .into_iter()
    .collect();
    Ok(Params::from_tensors(tensors)?)
}

/// A reward (or value) checkpoint loaded as parameters, with what is needed to use it.
pub struct LoadedScalar {
    pub config: GptConfig,
    pub params: Params,
    pub tokenizer: Tokenizer,
    pub template: ChatTemplate,
    pub meta: Meta,
    pub checkpoint: Checkpoint,
}

/// Loads a reward checkpoint (a checkpoint directory, or a run directory's newest one): the
/// config, the tokenizer (checked against the hash in `meta.json` and the vocabulary size), and
/// the weights, whose names and shapes must be exactly the language model's plus
/// `score_head.weight` and `score_head.bias`. The weights are loaded onto `device`.
pub fn load_scalar(path: &Path, device: &Device) -> Result<LoadedScalar> {
    let crate::artifact::Parts {
        checkpoint,
        config,
        meta,
        tokenizer,
        params,
    } = crate::artifact::load_parts(path, device)?;
    let mut expected = Params::expected_shapes(&config);
    expected.extend(ScalarHead::expected_shapes(&config));
    params.check(&expected).map_err(|e| Error::File {
        path: checkpoint.dir.join("model.safetensors"),
        msg: format!("not a reward-model checkpoint: {e}"),
    })?;
    let template = crate::artifact::template_of(&meta)?;
    Ok(LoadedScalar {
        config,
        params,
        tokenizer,
        template,
        meta,
        checkpoint,
    })
}

/// A frozen reward model for scoring (no autograd graph is recorded).
pub struct RewardModel {
    model: ScalarModel,
    config: GptConfig,
    tokenizer: Tokenizer,
    template: ChatTemplate,
}

impl RewardModel {
    /// Loads a reward checkpoint (see [`load_scalar`]) onto `device`.
    pub fn load(path: &Path, device: &Device) -> Result<RewardModel> {
        let l = load_scalar(path, device)?;
        Self::from_params(&l.config, &l.params, l.tokenizer, l.template)
    }

    /// A frozen scorer over the current values of `params` (shares their storage).
    pub fn from_params(
        config: &GptConfig,
        params: &Params,
        tokenizer: Tokenizer,
        template: ChatTemplate,
    ) -> Result<RewardModel> {
        Ok(RewardModel {
            model: ScalarModel::new(config, params.frozen_var_builder(DType::F32))?,
            config: config.clone(),
            tokenizer,
            template,
        })
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn template(&self) -> ChatTemplate {
        self.template
    }

    pub fn config(&self) -> &GptConfig {
        &self.config
    }

    /// The underlying network (frozen).
    pub fn network(&self) -> &ScalarModel {
        &self.model
    }

    /// Scores rows built with [`reward_row`] (prompt ids ++ response ids ++ `<|reward|>`):
    /// the head at the last position of each row, batched and right-padded. A row longer than
    /// the context is an error.
    pub fn score_ids(&self, rows: &[Vec<u32>]) -> Result<Vec<f32>> {
        score_rows(
            &self.model,
            rows,
            self.tokenizer.special(Special::Eot),
            self.config.context_length,
        )
    }

    /// The rows of `prompt` with each `(response text, ended)`.
    pub fn rows(&self, prompt: &[Message], responses: &[(String, bool)]) -> Result<Vec<Vec<u32>>> {
        let (tok, tpl) = (&self.tokenizer, self.template);
        let p = render_prompt(tok, prompt, tpl)?;
        responses
            .iter()
            .map(|(text, ended)| {
                Ok(reward_row(
                    tok,
                    tpl,
                    &p,
                    &response_ids(tok, tpl, text, *ended)?,
                ))
            })
            .collect()
    }

    /// Scores responses to `prompt` that may or may not have ended (with the assistant-end
    /// token).
    pub fn score_responses(
        &self,
        prompt: &[Message],
        responses: &[(String, bool)],
    ) -> Result<Vec<f32>> {
        self.score_ids(&self.rows(prompt, responses)?)
    }

    /// Scores finished replies to `prompt` (the text API).
    pub fn score(&self, prompt: &[Message], responses: &[String]) -> Result<Vec<f32>> {
        let r: Vec<(String, bool)> = responses.iter().map(|s| (s.clone(), true)).collect();
        self.score_responses(prompt, &r)
    }
}
