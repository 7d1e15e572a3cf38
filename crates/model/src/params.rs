//! The model's trainable parameters: named candle [`Var`]s, created from a seed or from loaded
//! tensors, and handed to [`crate::gpt::Gpt::new`] through a `VarBuilder`.
//!
//! Names mirror the module tree (STYLE rule 5), so a checkpoint diffs against a PyTorch
//! `state_dict`:
//!
//! ```text
//! wte.weight                                  (vocab_size, n_embd)
//! wpe.weight                                  (context_length, n_embd)      learned positions only
//! blocks.{i}.ln_1.weight | .bias              (n_embd,)                     bias: LayerNorm + bias
//! blocks.{i}.attn.q_proj.weight | .bias       (n_head * head_dim, n_embd)
//! blocks.{i}.attn.k_proj.weight | .bias       (n_kv_head * head_dim, n_embd)
//! blocks.{i}.attn.v_proj.weight | .bias       (n_kv_head * head_dim, n_embd)
//! blocks.{i}.attn.o_proj.weight | .bias       (n_embd, n_head * head_dim)
//! blocks.{i}.ln_2.weight | .bias              (n_embd,)
//! blocks.{i}.mlp.fc.weight | .bias            (intermediate_size, n_embd)   GELU
//! blocks.{i}.mlp.proj.weight | .bias          (n_embd, intermediate_size)   GELU
//! blocks.{i}.mlp.gate_proj|up_proj.weight     (intermediate_size, n_embd)   SwiGLU
//! blocks.{i}.mlp.down_proj.weight             (n_embd, intermediate_size)   SwiGLU
//! ln_f.weight | .bias                         (n_embd,)
//! lm_head.weight                              (vocab_size, n_embd)          untied only
//! ```
//!
//! Linear weights are `(out, in)` as in PyTorch; biases exist only when `bias` is true.
//!
//! Initialisation is the GPT-2 scheme: every matrix N(0, 0.02), the residual out-projections
//! (`attn.o_proj`, `mlp.proj`, `mlp.down_proj`) N(0, 0.02/sqrt(2 n_layer)), biases 0, norm
//! weights 1. Each tensor draws from its own stream `Rng::derive(seed, name)`, so adding a
//! parameter (a scalar head, say) never changes the values of the others.

use std::collections::{BTreeMap, HashMap};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;
use chatforge_data::Rng;

use crate::config::{GptConfig, MlpKind, NormKind, PositionKind};
use crate::error::{Error, Result};

/// Standard deviation of GPT-2's normal initialisation.
const INIT_STD: f64 = 0.02;

/// Named trainable tensors, sorted by name.
#[derive(Debug, Clone)]
pub struct Params {
    vars: BTreeMap<String, Var>,
    device: Device,
}

/// Appends the weight (and the bias when `bias`) of a linear layer `(out, in)` named `prefix`.
fn linear(
    shapes: &mut BTreeMap<String, Vec<usize>>,
    prefix: &str,
    out_dim: usize,
    in_dim: usize,
    bias: bool,
) {
    shapes.insert(format!("{prefix}.weight"), vec![out_dim, in_dim]);
    if bias {
        shapes.insert(format!("{prefix}.bias"), vec![out_dim]);
    }
}

/// Appends the weight (and the bias for a LayerNorm with `bias`) of a norm named `prefix`.
fn norm(shapes: &mut BTreeMap<String, Vec<usize>>, prefix: &str, cfg: &GptConfig) {
    shapes.insert(format!("{prefix}.weight"), vec![cfg.n_embd]);
    if cfg.norm == NormKind::LayerNorm && cfg.bias {
        shapes.insert(format!("{prefix}.bias"), vec![cfg.n_embd]);
    }
}

/// The initial standard deviation of parameter `name` (0 for biases; norm weights are handled by
/// the caller, they start at 1).
fn init_std(name: &str, n_layer: usize) -> f64 {
    if name.ends_with(".bias") {
        0.0
    } else if name.ends_with(".attn.o_proj.weight")
        || name.ends_with(".mlp.proj.weight")
        || name.ends_with(".mlp.down_proj.weight")
    {
        INIT_STD / (2.0 * n_layer as f64).sqrt()
    } else {
        INIT_STD
    }
}

/// Whether `name` is the weight of a norm (`ln_1`, `ln_2`, `ln_f`), which starts at 1.
fn is_norm_weight(name: &str) -> bool {
    name.ends_with(".weight")
        && name
            .split('.')
            .any(|part| part == "ln_1" || part == "ln_2" || part == "ln_f")
}

impl Params {
    /// The name and shape of every parameter of the language model described by `cfg`.
    pub fn expected_shapes(cfg: &GptConfig) -> BTreeMap<String, Vec<usize>> {
        let mut s = BTreeMap::new();
        let (c, hd) = (cfg.n_embd, cfg.head_dim());
        s.insert("wte.weight".to_string(), vec![cfg.vocab_size, c]);
        if cfg.positions == PositionKind::Learned {
            s.insert("wpe.weight".to_string(), vec![cfg.context_length, c]);
        }
        for i in 0..cfg.n_layer {
            let p = format!("blocks.{i}");
            norm(&mut s, &format!("{p}.ln_1"), cfg);
            linear(
                &mut s,
                &format!("{p}.attn.q_proj"),
                cfg.n_head * hd,
                c,
                cfg.bias,
            );
            linear(
                &mut s,
                &format!("{p}.attn.k_proj"),
                cfg.n_kv_head * hd,
                c,
                cfg.bias,
            );
            linear(
                &mut s,
                &format!("{p}.attn.v_proj"),
                cfg.n_kv_head * hd,
                c,
                cfg.bias,
            );
            linear(
                &mut s,
                &format!("{p}.attn.o_proj"),
                c,
                cfg.n_head * hd,
                cfg.bias,
            );
            norm(&mut s, &format!("{p}.ln_2"), cfg);
            let (m, f) = (format!("{p}.mlp"), cfg.intermediate_size);
            match cfg.mlp {
                MlpKind::Gelu => {
                    linear(&mut s, &format!("{m}.fc"), f, c, cfg.bias);
                    linear(&mut s, &format!("{m}.proj"), c, f, cfg.bias);
                }
                MlpKind::SwiGlu => {
                    linear(&mut s, &format!("{m}.gate_proj"), f, c, cfg.bias);
                    linear(&mut s, &format!("{m}.up_proj"), f, c, cfg.bias);
                    linear(&mut s, &format!("{m}.down_proj"), c, f, cfg.bias);
                }
            }
        }
        norm(&mut s, "ln_f", cfg);
        if !cfg.tie_embeddings {
            s.insert("lm_head.weight".to_string(), vec![cfg.vocab_size, c]);
        }
        s
    }

    /// Fresh parameters for `cfg` with the GPT-2 initialisation (see the module doc), reproducible
    /// from `seed` on every platform. The config is validated first.
    pub fn init(cfg: &GptConfig, seed: u64, device: &Device) -> Result<Params> {
        cfg.validate()?;
        Self::init_with_shapes(&Self::expected_shapes(cfg), cfg.n_layer, seed, device)
    }

    /// Fresh f32 parameters with the given names and shapes, initialised by the same per-name rule
    /// as [`Params::init`] (`n_layer` scales the residual out-projections). Use it for heads that
    /// sit beside the language model, e.g. `ScalarHead::expected_shapes`, then [`Params::extend`].
    pub fn init_with_shapes(
        shapes: &BTreeMap<String, Vec<usize>>,
        n_layer: usize,
        seed: u64,
        device: &Device,
    ) -> Result<Params> {
        let mut vars = BTreeMap::new();
        for (name, shape) in shapes {
            let n: usize = shape.iter().product();
            let data: Vec<f32> = if is_norm_weight(name) {
                vec![1.0; n]
            } else {
                let std = init_std(name, n_layer);
                if std == 0.0 {
                    vec![0.0; n]
                } else {
                    let mut rng = Rng::derive(seed, name);
                    (0..n).map(|_| (rng.normal() * std) as f32).collect()
                }
            };
            let t = Tensor::from_vec(data, shape.as_slice(), device)?;
            vars.insert(name.clone(), Var::from_tensor(&t)?);
        }
        Ok(Params {
            vars,
            device: device.clone(),
        })
    }

    /// Wraps loaded tensors as trainable variables (the data is copied, so the `Var`s own their
    /// storage). Every tensor must be floating-point and all must share one device. Key names and
    /// shapes are not checked here: call [`Params::check`] with the shapes the model expects.
    pub fn from_tensors(tensors: BTreeMap<String, Tensor>) -> Result<Params> {
        let device = match tensors.values().next() {
            Some(t) => t.device().clone(),
            None => Device::Cpu,
        };
        let mut vars = BTreeMap::new();
        for (key, t) in tensors {
            if !t.dtype().is_float() {
                return Err(Error::DType {
                    key,
                    dtype: t.dtype(),
                });
            }
            if !t.device().same_device(&device) {
                return Err(Error::Device {
                    key,
                    expected: format!("{:?}", device.location()),
                    got: format!("{:?}", t.device().location()),
                });
            }
            // `Var::from_tensor` would share a tensor that already is a variable; copy instead so
            // that the new parameters never alias the caller's.
            let var = Var::from_tensor(&t.detach().copy()?)?;
            vars.insert(key, var);
        }
        Ok(Params { vars, device })
    }

    /// Checks that the parameter names are exactly the keys of `expected` and every shape matches;
    /// the error names the first offending key (and both shapes for a mismatch).
    pub fn check(&self, expected: &BTreeMap<String, Vec<usize>>) -> Result<()> {
        for (key, shape) in expected {
            let var = self
                .vars
                .get(key)
                .ok_or_else(|| Error::MissingKey { key: key.clone() })?;
            if var.dims() != shape.as_slice() {
                return Err(Error::Shape {
                    key: key.clone(),
                    expected: shape.clone(),
                    got: var.dims().to_vec(),
                });
            }
        }
        if let Some(key) = self.vars.keys().find(|k| !expected.contains_key(*k)) {
            return Err(Error::UnexpectedKey { key: key.clone() });
        }
        Ok(())
    }

    /// Adds every parameter of `other` (a head, say); a name present in both is an error.
    pub fn extend(&mut self, other: Params) -> Result<()> {
        if let Some(key) = other.vars.keys().find(|k| self.vars.contains_key(*k)) {
            return Err(Error::DuplicateKey { key: key.clone() });
        }
        self.vars.extend(other.vars);
        Ok(())
    }

    /// A `VarBuilder` over the variables, cast to `dtype`: a model built from it records a graph
    /// back to these `Var`s, so `loss.backward()` yields their gradients (through the cast, if
    /// `dtype` differs from the stored f32).
    pub fn var_builder(&self, dtype: DType) -> VarBuilder<'static> {
        let ts: HashMap<String, Tensor> = self
            .vars
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect();
        VarBuilder::from_tensors(ts, dtype, &self.device)
    }

    /// A `VarBuilder` over detached copies of the current values (sharing storage, no graph): for
    /// inference and frozen models (PPO's reference and reward models), where recording a
    /// backward graph would only cost time and memory.
    pub fn frozen_var_builder(&self, dtype: DType) -> VarBuilder<'static> {
        let ts: HashMap<String, Tensor> = self
            .vars
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
            .collect();
        VarBuilder::from_tensors(ts, dtype, &self.device)
    }

    /// The parameters in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Var)> {
        self.vars.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The parameter called `name`.
    pub fn get(&self, name: &str) -> Option<&Var> {
        self.vars.get(name)
    }

    /// The current values by name (tensors that share the variables' storage; for saving).
    pub fn tensors(&self) -> BTreeMap<String, Tensor> {
        self.vars
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect()
    }

    /// Total number of scalar parameters.
    pub fn num_params(&self) -> usize {
        self.vars.values().map(|v| v.elem_count()).sum()
    }

    /// Number of parameter tensors.
    pub fn len(&self) -> usize {
        self.vars.len()
    }

    /// Whether there are no parameters.
    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }

    /// The device every parameter lives on.
    pub fn device(&self) -> &Device {
        &self.device
    }
}
