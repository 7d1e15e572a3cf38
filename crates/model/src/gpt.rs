//! The transformer: a pre-norm decoder-only GPT in GPT-2 or Llama style (see [`GptConfig`]), its
//! LM head, and the scalar head of reward and value models.
//!
//! The file reads top to bottom: leaf modules (norm, rotary embedding, attention, MLP), the block,
//! the model, the heads. Every op on the training path comes from [`crate::ops`] or is a candle
//! primitive with a backward, so every parameter receives a gradient (DESIGN.md, "Silent gradient
//! cut").
//!
//! Shapes use `B` batch, `T` new tokens, `S` cached plus new positions, `C = n_embd`, `H = n_head`,
//! `Hkv = n_kv_head`, `D = head_dim`, `F = intermediate_size`, `V = vocab_size`.

use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;

use crate::config::{GptConfig, MlpKind, NormKind, PositionKind};
use crate::error::{Error, Result};
use crate::kv_cache::KvCache;
use crate::ops;

/// `y = x Wᵀ + b` over the last dimension, with the leading dimensions flattened into one matrix
/// product. (candle-nn's `Linear` broadcasts `W` to a batched matmul for 3-D input, which
/// re-packs the weight once per batch row: measured, a third of a batch-8 decode step.)
/// `y = x Wᵀ + b` through [`ops::linear`], with its matrix products at `prec`.
#[derive(Debug, Clone)]
struct Linear {
    weight: Tensor, // (out, in)
    bias: Option<Tensor>,
    prec: ops::MatmulPrecision,
}

impl Linear {
    fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self {
            weight,
            bias,
            prec: ops::MatmulPrecision::F32,
        }
    }

    /// # Shapes
    /// - `x`: `(..., in)`; returns `(..., out)`.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        ops::linear(x, &self.weight, self.bias.as_ref(), self.prec)
    }
}

fn linear(in_dim: usize, out_dim: usize, bias: bool, vb: VarBuilder) -> Result<Linear> {
    let weight = vb.get((out_dim, in_dim), "weight")?;
    let bias = if bias {
        Some(vb.get(out_dim, "bias")?)
    } else {
        None
    };
    Ok(Linear::new(weight, bias))
}

/// LayerNorm (with an optional bias) or RMSNorm over the last dimension.
#[derive(Debug, Clone)]
struct Norm {
    kind: NormKind,
    weight: Tensor,
    bias: Option<Tensor>,
    eps: f64,
}

impl Norm {
    fn new(cfg: &GptConfig, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get(cfg.n_embd, "weight")?;
        let bias = if cfg.norm == NormKind::LayerNorm && cfg.bias {
            Some(vb.get(cfg.n_embd, "bias")?)
        } else {
            None
        };
        Ok(Self {
            kind: cfg.norm,
            weight,
            bias,
            eps: cfg.norm_eps,
        })
    }

    /// # Shapes
    /// `x`: `(..., C)`; returns `(..., C)`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self.kind {
            NormKind::LayerNorm => ops::layer_norm(x, &self.weight, self.bias.as_ref(), self.eps)?,
            NormKind::RmsNorm => ops::rms_norm(x, &self.weight, self.eps)?,
        })
    }
}

/// Rotary position embedding, HF Llama "rotate_half" convention: the head dimension is split in
/// halves `(x1, x2)` and position `p` maps `x` to `x * cos(p f) + (-x2, x1) * sin(p f)` with
/// frequencies `f_i = theta^(-2i/D)` repeated over both halves. (The interleaved-pairs convention
/// of the original paper and GGUF files differs by a permutation of the q/k projection rows.)
#[derive(Debug, Clone)]
struct Rope {
    /// `(context_length, D)`
    cos: Tensor,
    /// `(context_length, D)`
    sin: Tensor,
}

impl Rope {
    fn new(cfg: &GptConfig, dtype: DType, device: &Device) -> Result<Self> {
        let d = cfg.head_dim();
        let half = d / 2;
        let inv_freq: Vec<f64> = (0..half)
            .map(|i| cfg.rope_theta.powf(-((2 * i) as f64) / d as f64))
            .collect();
        let mut cos = Vec::with_capacity(cfg.context_length * d);
        let mut sin = Vec::with_capacity(cfg.context_length * d);
        for p in 0..cfg.context_length {
            for j in 0..d {
                let angle = p as f64 * inv_freq[j % half];
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        let shape = (cfg.context_length, d);
        Ok(Self {
            cos: Tensor::from_vec(cos, shape, device)?.to_dtype(dtype)?,
            sin: Tensor::from_vec(sin, shape, device)?.to_dtype(dtype)?,
        })
    }

    /// Rotates `x` whose rows sit at absolute positions `offset..offset + T`.
    ///
    /// # Shapes
    /// `x`: `(B, H, T, D)`; returns `(B, H, T, D)`.
    fn apply(&self, x: &Tensor, offset: usize) -> Result<Tensor> {
        let (_b, _h, t, d) = x.dims4()?;
        let cos = self.cos.narrow(0, offset, t)?; // (T, D)
        let sin = self.sin.narrow(0, offset, t)?; // (T, D)
        let x1 = x.narrow(D::Minus1, 0, d / 2)?; // (B, H, T, D/2)
        let x2 = x.narrow(D::Minus1, d / 2, d / 2)?; // (B, H, T, D/2)
        let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?; // (B, H, T, D)
        Ok((x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?)?)
    }
}

/// Causal self-attention with `Hkv` key/value heads shared by groups of `H / Hkv` query heads.
#[derive(Debug, Clone)]
struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    /// The precision of the attention kernel's own products (those of the projections live in
    /// each [`Linear`]).
    prec: ops::MatmulPrecision,
    n_head: usize,
    n_kv_head: usize,
    head_dim: usize,
}

impl Attention {
    fn new(cfg: &GptConfig, vb: VarBuilder) -> Result<Self> {
        let (c, hd) = (cfg.n_embd, cfg.head_dim());
        Ok(Self {
            q_proj: linear(c, cfg.n_head * hd, cfg.bias, vb.pp("q_proj"))?,
            k_proj: linear(c, cfg.n_kv_head * hd, cfg.bias, vb.pp("k_proj"))?,
            v_proj: linear(c, cfg.n_kv_head * hd, cfg.bias, vb.pp("v_proj"))?,
            o_proj: linear(cfg.n_head * hd, c, cfg.bias, vb.pp("o_proj"))?,
            prec: ops::MatmulPrecision::F32,
            n_head: cfg.n_head,
            n_kv_head: cfg.n_kv_head,
            head_dim: hd,
        })
    }

    /// Attends from the `T` new positions `offset..offset + T` to every position so far. With a
    /// cache, this layer's keys and values are written into it and every cached position is
    /// attended to.
    ///
    /// # Shapes
    /// `x`: `(B, T, C)`; returns `(B, T, C)`.
    fn forward(
        &self,
        x: &Tensor,
        rope: Option<&Rope>,
        offset: usize,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Result<Tensor> {
        let (b, t, _c) = x.dims3()?;
        let heads = |proj: &Linear, n: usize| -> Result<Tensor> {
            Ok(proj
                .forward(x)? // (B, T, n * D)
                .reshape((b, t, n, self.head_dim))?
                .transpose(1, 2)?) // (B, n, T, D)
        };
        let mut q = heads(&self.q_proj, self.n_head)?; // (B, H, T, D)
        let mut k = heads(&self.k_proj, self.n_kv_head)?; // (B, Hkv, T, D)
        let v = heads(&self.v_proj, self.n_kv_head)?; // (B, Hkv, T, D)
        if let Some(rope) = rope {
            q = rope.apply(&q, offset)?;
            k = rope.apply(&k, offset)?;
        }
        // With nothing cached before this step, the new keys are all there is: attend to them
        // exactly as without a cache (the prefill's logits equal the full forward's bit for bit).
        // After a cached prefix, attend to the cache's views of its buffers (strided, no copy).
        let (k, v) = match cache {
            Some((cache, layer)) => {
                let (ck, cv) = cache.append(layer, &k, &v)?; // (B, Hkv, S, D) each
                if offset == 0 {
                    (k, v)
                } else {
                    (ck, cv)
                }
            }
            None => (k, v),
        };
        let y = ops::causal_attention_with(&q, &k, &v, offset, self.prec)?; // (B, H, T, D)
        let y = y
            .transpose(1, 2)?
            .reshape((b, t, self.n_head * self.head_dim))?; // (B, T, H * D)
        Ok(self.o_proj.forward(&y)?)
    }
}

/// The feed-forward block.
#[derive(Debug, Clone)]
enum Mlp {
    /// `proj(gelu_tanh(fc(x)))`
    Gelu { fc: Linear, proj: Linear },
    /// `down_proj(silu(gate_proj(x)) * up_proj(x))`
    SwiGlu {
        gate_proj: Linear,
        up_proj: Linear,
        down_proj: Linear,
    },
}

impl Mlp {
    fn new(cfg: &GptConfig, vb: VarBuilder) -> Result<Self> {
        let (c, f, bias) = (cfg.n_embd, cfg.intermediate_size, cfg.bias);
        Ok(match cfg.mlp {
            MlpKind::Gelu => Mlp::Gelu {
                fc: linear(c, f, bias, vb.pp("fc"))?,
                proj: linear(f, c, bias, vb.pp("proj"))?,
            },
            MlpKind::SwiGlu => Mlp::SwiGlu {
                gate_proj: linear(c, f, bias, vb.pp("gate_proj"))?,
                up_proj: linear(c, f, bias, vb.pp("up_proj"))?,
                down_proj: linear(f, c, bias, vb.pp("down_proj"))?,
            },
        })
    }

    /// # Shapes
    /// `x`: `(B, T, C)`; returns `(B, T, C)` (through `(B, T, F)`).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Mlp::Gelu { fc, proj } => proj.forward(&ops::gelu(&fc.forward(x)?)?)?,
            Mlp::SwiGlu {
                gate_proj,
                up_proj,
                down_proj,
            } => {
                let gate = ops::silu(&gate_proj.forward(x)?)?; // (B, T, F)
                down_proj.forward(&gate.mul(&up_proj.forward(x)?)?)?
            }
        })
    }
}

/// One pre-norm transformer block: `x + attn(ln_1(x))`, then `x + mlp(ln_2(x))`.
#[derive(Debug, Clone)]
struct Block {
    ln_1: Norm,
    attn: Attention,
    ln_2: Norm,
    mlp: Mlp,
}

impl Block {
    fn new(cfg: &GptConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            ln_1: Norm::new(cfg, vb.pp("ln_1"))?,
            attn: Attention::new(cfg, vb.pp("attn"))?,
            ln_2: Norm::new(cfg, vb.pp("ln_2"))?,
            mlp: Mlp::new(cfg, vb.pp("mlp"))?,
        })
    }

    /// # Shapes
    /// `x`: `(B, T, C)`; returns `(B, T, C)`.
    fn forward(
        &self,
        x: &Tensor,
        rope: Option<&Rope>,
        offset: usize,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Result<Tensor> {
        let x = (x + self
            .attn
            .forward(&self.ln_1.forward(x)?, rope, offset, cache)?)?;
        Ok((&x + self.mlp.forward(&self.ln_2.forward(&x)?)?)?)
    }
}

/// The decoder-only transformer with its LM head. Weights are immutable; per-sequence state lives
/// in a [`KvCache`] owned by the caller.
#[derive(Debug, Clone)]
pub struct Gpt {
    cfg: GptConfig,
    /// `(V, C)`
    wte: Tensor,
    /// `(context_length, C)`, learned positions only.
    wpe: Option<Tensor>,
    rope: Option<Rope>,
    blocks: Vec<Block>,
    ln_f: Norm,
    /// `(V, C)`: `wte` itself when the embeddings are tied.
    lm_head: Linear,
}

impl Gpt {
    /// Builds the model from `vb` (usually [`crate::params::Params::var_builder`]), whose tensors
    /// must be named as in [`crate::params`]; the config is validated first, and a missing or
    /// misshapen tensor is an error naming it. Parameters the config does not use are ignored here
    /// (check them with [`crate::params::Params::check`]).
    pub fn new(cfg: &GptConfig, vb: VarBuilder) -> Result<Gpt> {
        cfg.validate()?;
        let c = cfg.n_embd;
        let wte = vb.get((cfg.vocab_size, c), "wte.weight")?;
        let wpe = match cfg.positions {
            PositionKind::Learned => Some(vb.get((cfg.context_length, c), "wpe.weight")?),
            PositionKind::Rope => None,
        };
        let rope = match cfg.positions {
            PositionKind::Rope => Some(Rope::new(cfg, vb.dtype(), vb.device())?),
            PositionKind::Learned => None,
        };
        let blocks = (0..cfg.n_layer)
            .map(|i| Block::new(cfg, vb.pp(format!("blocks.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        let ln_f = Norm::new(cfg, vb.pp("ln_f"))?;
        let lm_head = if cfg.tie_embeddings {
            Linear::new(wte.clone(), None)
        } else {
            linear(c, cfg.vocab_size, false, vb.pp("lm_head"))?
        };
        Ok(Gpt {
            cfg: cfg.clone(),
            wte,
            wpe,
            rope,
            blocks,
            ln_f,
            lm_head,
        })
    }

    /// The config the model was built from.
    pub fn config(&self) -> &GptConfig {
        &self.cfg
    }

    /// The model with every matrix product (forward and backward) at `prec`: the linear layers'
    /// and those inside the training attention kernel. [`ops::MatmulPrecision::Bf16`] is what
    /// PyTorch's bf16 autocast does to `F.linear` and `scaled_dot_product_attention` (bf16
    /// operands, f32 accumulation, f32 weights); embeddings, norms, softmax, the KV-cached decode
    /// kernel and the loss stay f32.
    pub fn with_matmul_precision(mut self, prec: ops::MatmulPrecision) -> Gpt {
        for block in &mut self.blocks {
            let a = &mut block.attn;
            for l in [&mut a.q_proj, &mut a.k_proj, &mut a.v_proj, &mut a.o_proj] {
                l.prec = prec;
            }
            a.prec = prec;
            match &mut block.mlp {
                Mlp::Gelu { fc, proj } => {
                    fc.prec = prec;
                    proj.prec = prec;
                }
                Mlp::SwiGlu {
                    gate_proj,
                    up_proj,
                    down_proj,
                } => {
                    for l in [gate_proj, up_proj, down_proj] {
                        l.prec = prec;
                    }
                }
            }
        }
        self.lm_head.prec = prec;
        self
    }

    /// The model with only the training attention kernel's own products at `prec` (the linear
    /// layers keep theirs). For a model whose outputs are compared with KV-cached decoding, whose
    /// attention kernel computes in f32 (PPO's policy and reference).
    pub fn with_attention_precision(mut self, prec: ops::MatmulPrecision) -> Gpt {
        for block in &mut self.blocks {
            block.attn.prec = prec;
        }
        self
    }

    /// The precision of the model's matrix products (see [`Gpt::with_matmul_precision`]).
    pub fn matmul_precision(&self) -> ops::MatmulPrecision {
        self.lm_head.prec
    }

    /// Runs the transformer over `ids` and returns the final-normed hidden states.
    ///
    /// Without a cache the tokens sit at positions `0..T`. With one, they sit at
    /// `cache.len()..cache.len() + T`, each layer's keys and values are appended to the cache,
    /// and attention sees every cached position. Errors (never panics) when the positions would
    /// pass `context_length`, when `T == 0`, when an id is not below `vocab_size`, or when the
    /// cache does not match the model (layer count) or the batch.
    ///
    /// # Shapes
    /// - `ids`: `(B, T)` u32; returns `(B, T, C)`.
    pub fn forward_hidden(&self, ids: &Tensor, mut cache: Option<&mut KvCache>) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        if t == 0 {
            return Err(Error::Input("empty sequence (T = 0)".to_string()));
        }
        let offset = match cache.as_deref() {
            None => 0,
            Some(cache) => {
                if cache.n_layer() != self.cfg.n_layer {
                    return Err(Error::CacheLayers {
                        expected: self.cfg.n_layer,
                        got: cache.n_layer(),
                    });
                }
                if !cache.is_empty() && cache.batch_size() != b {
                    return Err(Error::Input(format!(
                        "batch of {b} sequences does not match the KV cache's {}",
                        cache.batch_size()
                    )));
                }
                cache.len()
            }
        };
        if offset + t > self.cfg.context_length {
            return Err(Error::ContextOverflow {
                cached: offset,
                new_tokens: t,
                context_length: self.cfg.context_length,
            });
        }
        let max_id = ids.max_all()?.to_dtype(DType::U32)?.to_scalar::<u32>()?;
        if max_id as usize >= self.cfg.vocab_size {
            return Err(Error::Input(format!(
                "token id {max_id} is not below vocab_size {}",
                self.cfg.vocab_size
            )));
        }
        let c = self.cfg.n_embd;
        let mut x = self
            .wte
            .index_select(&ids.flatten_all()?, 0)? // (B * T, C)
            .reshape((b, t, c))?; // (B, T, C)
        if let Some(wpe) = &self.wpe {
            x = x.broadcast_add(&wpe.narrow(0, offset, t)?)?; // + (T, C)
        }
        for (i, block) in self.blocks.iter().enumerate() {
            let layer_cache = cache.as_deref_mut().map(|c| (c, i));
            x = block.forward(&x, self.rope.as_ref(), offset, layer_cache)?;
        }
        self.ln_f.forward(&x)
    }

    /// The LM head over hidden states.
    ///
    /// # Shapes
    /// - `hidden`: `(B, T, C)`; returns `(B, T, V)`.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        Ok(self.lm_head.forward(hidden)?)
    }

    /// `logits(forward_hidden(ids, cache))`.
    ///
    /// # Shapes
    /// - `ids`: `(B, T)` u32; returns `(B, T, V)`.
    pub fn forward(&self, ids: &Tensor, cache: Option<&mut KvCache>) -> Result<Tensor> {
        self.logits(&self.forward_hidden(ids, cache)?)
    }

    /// Mean next-token cross-entropy of `targets` given `ids` (positions whose target is
    /// [`ops::IGNORE_INDEX`] do not count; 0 when none counts), computed in f32.
    ///
    /// # Shapes
    /// - `ids`, `targets`: `(B, T)` u32; returns a scalar `()`.
    pub fn loss(&self, ids: &Tensor, targets: &Tensor) -> Result<Tensor> {
        if ids.dims() != targets.dims() {
            return Err(Error::Input(format!(
                "targets of shape {:?} do not match ids of shape {:?}",
                targets.dims(),
                ids.dims()
            )));
        }
        let logits = self.forward(ids, None)?; // (B, T, V)
        let (b, t, v) = logits.dims3()?;
        let logits = logits.reshape((b * t, v))?.to_dtype(DType::F32)?; // (B * T, V)
        Ok(ops::cross_entropy(&logits, &targets.reshape(b * t)?)?)
    }
}

/// A linear read-out of one number per position (`score_head.weight` `(1, C)` and
/// `score_head.bias` `(1,)`): the head of reward and value models, on top of
/// [`Gpt::forward_hidden`] in place of the LM head.
#[derive(Debug, Clone)]
pub struct ScalarHead {
    proj: Linear,
}

impl ScalarHead {
    /// The names and shapes of the head's parameters, to pass to
    /// [`crate::params::Params::init_with_shapes`] and [`crate::params::Params::check`].
    pub fn expected_shapes(cfg: &GptConfig) -> std::collections::BTreeMap<String, Vec<usize>> {
        [
            ("score_head.weight".to_string(), vec![1, cfg.n_embd]),
            ("score_head.bias".to_string(), vec![1]),
        ]
        .into_iter()
        .collect()
    }

    /// Reads `score_head.weight` and `score_head.bias` from the root `vb` (the same builder the
    /// model is built from).
    pub fn new(cfg: &GptConfig, vb: VarBuilder) -> Result<ScalarHead> {
        Ok(ScalarHead {
            proj: linear(cfg.n_embd, 1, true, vb.pp("score_head"))?,
        })
    }

    /// # Shapes
    /// - `hidden`: `(B, T, C)`; returns `(B, T)`.
    pub fn forward(&self, hidden: &Tensor) -> Result<Tensor> {
        Ok(self.proj.forward(hidden)?.squeeze(2)?) // (B, T, 1) -> (B, T)
    }
}
