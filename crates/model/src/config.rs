//! The model's configuration: plain serde data that builds a [`crate::gpt::Gpt`] and is saved as
//! `config.json` beside every checkpoint.
//!
//! One config describes both families we train and import:
//! - GPT-2 style: LayerNorm, learned absolute positions (`wpe`), GELU (tanh) MLP, biases, tied
//!   embeddings;
//! - Llama style: RMSNorm, rotary positions (HF "rotate_half" convention), SwiGLU MLP, no biases,
//!   grouped-query attention (`n_kv_head < n_head`), untied LM head.
//!
//! Derived numbers (`head_dim`, `num_params`) are methods, never fields, so they cannot drift.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::params::Params;

/// Which normalisation every block (and the final norm) uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NormKind {
    /// `(x - mean) / sqrt(var + eps) * w (+ b)` — GPT-2. Serialised as `"layernorm"`.
    LayerNorm,
    /// `x / sqrt(mean(x^2) + eps) * w` — Llama. Serialised as `"rmsnorm"`.
    RmsNorm,
}

/// How token positions enter the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PositionKind {
    /// A learned table `wpe.weight` `(context_length, n_embd)` added to the token embeddings.
    /// Serialised as `"learned"`.
    Learned,
    /// Rotary embeddings applied to queries and keys in every attention layer. Serialised as
    /// `"rope"`.
    Rope,
}

/// The feed-forward block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MlpKind {
    /// `proj(gelu_tanh(fc(x)))` — GPT-2. Serialised as `"gelu"`.
    Gelu,
    /// `down_proj(silu(gate_proj(x)) * up_proj(x))` — Llama. Serialised as `"swiglu"`.
    SwiGlu,
}

/// The transformer's hyperparameters. Unknown JSON fields are rejected so that a typo is an error,
/// not a silently ignored setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GptConfig {
    /// Number of token ids, special tokens included.
    pub vocab_size: usize,
    /// Longest sequence (prompt plus generated tokens) the model accepts.
    pub context_length: usize,
    /// Number of transformer blocks.
    pub n_layer: usize,
    /// Number of query heads.
    pub n_head: usize,
    /// Number of key/value heads (`== n_head` for multi-head attention, fewer for GQA).
    pub n_kv_head: usize,
    /// Width of the residual stream.
    pub n_embd: usize,
    /// Hidden width of the MLP (`4 * n_embd` for GPT-2).
    pub intermediate_size: usize,
    /// Normalisation kind.
    pub norm: NormKind,
    /// Epsilon of every norm.
    pub norm_eps: f64,
    /// Position encoding.
    pub positions: PositionKind,
    /// RoPE base frequency (used only when `positions` is `rope`).
    pub rope_theta: f64,
    /// MLP kind.
    pub mlp: MlpKind,
    /// Whether the LM head reuses `wte.weight` (no `lm_head.weight` then).
    pub tie_embeddings: bool,
    /// Whether linear layers (and LayerNorms) have biases.
    pub bias: bool,
}

/// Names accepted by [`GptConfig::preset`].
const PRESETS: &[&str] = &["tiny", "default", "small", "gpt2-bench", "llama-tiny"];

impl GptConfig {
    /// A GPT-2 style config (LayerNorm, learned positions, GELU, biases, tied embeddings) with a
    /// 4x MLP.
    fn gpt2_style(
        vocab_size: usize,
        context_length: usize,
        n_layer: usize,
        n_head: usize,
        n_embd: usize,
    ) -> Self {
        Self {
            vocab_size,
            context_length,
            n_layer,
            n_head,
            n_kv_head: n_head,
            n_embd,
            intermediate_size: 4 * n_embd,
            norm: NormKind::LayerNorm,
            norm_eps: 1e-5,
            positions: PositionKind::Learned,
            rope_theta: 10_000.0,
            mlp: MlpKind::Gelu,
            tie_embeddings: true,
            bias: true,
        }
    }

    /// A named preset for a tokenizer of `vocab_size` ids, or `None` for an unknown name (see
    /// [`GptConfig::preset_names`]). Parameter counts below are for `vocab_size = 2048`:
    /// - `"tiny"`: 4 layers, d=128, 4 heads, ctx 256, GPT-2 style — about 1.1M parameters;
    /// - `"default"`: the speedrun model, 6 layers, d=256, 4 heads, ctx 256, GPT-2 style — about
    ///   5.3M;
    /// - `"small"`: 8 layers, d=320, 5 heads, ctx 512, GPT-2 style — about 10.7M;
    /// - `"gpt2-bench"`: the benchmark shape of DESIGN.md, 6 layers, d=384, 6 heads, ctx 256,
    ///   GPT-2 style — about 11.5M;
    /// - `"llama-tiny"`: 4 layers, d=128, 4 query heads over 2 KV heads, ctx 256, RMSNorm, RoPE,
    ///   SwiGLU (intermediate 352), no biases, untied — about 1.3M.
    pub fn preset(name: &str, vocab_size: usize) -> Option<GptConfig> {
        let cfg = match name {
            "tiny" => Self::gpt2_style(vocab_size, 256, 4, 4, 128),
            "default" => Self::gpt2_style(vocab_size, 256, 6, 4, 256),
            "small" => Self::gpt2_style(vocab_size, 512, 8, 5, 320),
            "gpt2-bench" => Self::gpt2_style(vocab_size, 256, 6, 6, 384),
            "llama-tiny" => Self {
                vocab_size,
                context_length: 256,
                n_layer: 4,
                n_head: 4,
                n_kv_head: 2,
                n_embd: 128,
                intermediate_size: 352,
                norm: NormKind::RmsNorm,
                norm_eps: 1e-5,
                positions: PositionKind::Rope,
                rope_theta: 10_000.0,
                mlp: MlpKind::SwiGlu,
                tie_embeddings: false,
                bias: false,
            },
            _ => return None,
        };
        Some(cfg)
    }

    /// The names [`GptConfig::preset`] accepts, smallest first within each family.
    pub fn preset_names() -> &'static [&'static str] {
        PRESETS
    }

    /// Width of one attention head, `n_embd / n_head`.
    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head.max(1)
    }

    /// Number of trainable parameters (elements) of the language model, embeddings included,
    /// counted from the exact parameter shapes ([`Params::expected_shapes`]).
    pub fn num_params(&self) -> usize {
        Params::expected_shapes(self)
            .values()
            .map(|s| s.iter().product::<usize>())
            .sum()
    }

    /// Checks that the config describes a buildable model; the error names the fields at fault.
    // `usize::is_multiple_of` needs Rust 1.87; the workspace's rust-version is 1.85.
    #[allow(clippy::manual_is_multiple_of)]
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::Config(msg));
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("context_length", self.context_length),
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
            ("n_kv_head", self.n_kv_head),
            ("n_embd", self.n_embd),
            ("intermediate_size", self.intermediate_size),
        ] {
            if v == 0 {
                return bad(format!("{name} must be at least 1"));
            }
        }
        if self.vocab_size > u32::MAX as usize {
            return bad(format!(
                "vocab_size {} does not fit in u32 token ids",
                self.vocab_size
            ));
        }
        if self.n_embd % self.n_head != 0 {
            return bad(format!(
                "n_embd ({}) must be a multiple of n_head ({})",
                self.n_embd, self.n_head
            ));
        }
        if self.n_head % self.n_kv_head != 0 {
            return bad(format!(
                "n_head ({}) must be a multiple of n_kv_head ({})",
                self.n_head, self.n_kv_head
            ));
        }
        if !(self.norm_eps.is_finite() && self.norm_eps > 0.0) {
            return bad(format!(
                "norm_eps must be finite and positive, got {}",
                self.norm_eps
            ));
        }
        if self.positions == PositionKind::Rope {
            if self.head_dim() % 2 != 0 {
                return bad(format!(
                    "rope needs an even head_dim, got n_embd / n_head = {} / {} = {}",
                    self.n_embd,
                    self.n_head,
                    self.head_dim()
                ));
            }
            if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
                return bad(format!(
                    "rope_theta must be finite and positive, got {}",
                    self.rope_theta
                ));
            }
        }
        Ok(())
    }

    /// Reads and validates a config from a JSON file (`config.json` of a checkpoint).
    pub fn load(path: &Path) -> Result<GptConfig> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let cfg: GptConfig = serde_json::from_str(&text).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        })?;
        cfg.validate()?;
        Ok(cfg)
    }
}
