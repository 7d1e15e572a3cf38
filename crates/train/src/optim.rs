//! AdamW with decoupled weight decay on matrices only, global-norm gradient clipping, and a
//! warm-up + cosine learning-rate schedule.
//!
//! The update is PyTorch's `torch.optim.AdamW` step, operation for operation, so that the
//! whole-model parity fixture (10 AdamW steps against PyTorch) holds to f32 round-off:
//!
//! ```text
//! p  ← p · (1 − lr·wd)                      (only tensors with ≥ 2 dims: matrices and embeddings)
//! m  ← β1·m + (1 − β1)·g
//! v  ← β2·v + (1 − β2)·g²
//! p  ← p − lr/(1 − β1ᵗ) · m / (√v / √(1 − β2ᵗ) + ε)
//! ```
//!
//! The moments live as plain `Vec<f32>` beside each parameter and the update is one fused pass
//! per tensor (rayon over chunks) that writes the parameter's storage in place (a candle
//! in-place op), so a step allocates nothing.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor, Var};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Hyper-parameters of the optimizer and its schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    /// Peak learning rate.
    pub lr: f64,
    /// The cosine decays to `lr * min_lr_ratio`.
    pub min_lr_ratio: f64,
    /// Linear warm-up steps from 0 to `lr`.
    pub warmup_steps: u64,
    /// Decoupled weight decay, applied to tensors with two or more dimensions only.
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Clip the global gradient norm to this value; 0 disables clipping.
    pub grad_clip: f64,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            min_lr_ratio: 0.1,
            warmup_steps: 20,
            weight_decay: 0.1,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            grad_clip: 1.0,
        }
    }
}

/// Learning rate at optimizer step `step` (0-based) of `total` steps: linear warm-up over
/// `warmup_steps`, then cosine decay from `lr` to `lr * min_lr_ratio` at the last step.
pub fn lr_at(cfg: &OptimConfig, step: u64, total: u64) -> f64 {
    if cfg.warmup_steps > 0 && step < cfg.warmup_steps {
        return cfg.lr * (step + 1) as f64 / cfg.warmup_steps as f64;
    }
    let decay_steps = total.saturating_sub(cfg.warmup_steps).max(1);
    let progress = ((step - cfg.warmup_steps.min(step)) as f64 / decay_steps as f64).min(1.0);
    let min_lr = cfg.lr * cfg.min_lr_ratio;
    min_lr + 0.5 * (cfg.lr - min_lr) * (1.0 + (std::f64::consts::PI * progress).cos())
}

/// Gradients of every parameter as flat f32 vectors, keyed by parameter name. Accumulating
/// micro-batches adds into these.
pub type FlatGrads = BTreeMap<String, Vec<f32>>;

/// Adds the gradients of `loss.backward()` into `acc` (created on first use), scaled by `scale`.
/// A parameter that received no gradient is an error: it means an op cut the graph
/// (DESIGN.md "Silent gradient cut").
pub fn accumulate_grads(
    params: &BTreeMap<String, Var>,
    grads: &candle_core::backprop::GradStore,
    scale: f32,
    acc: &mut FlatGrads,
) -> Result<()> {
    for (name, var) in params {
        let g = grads
            .get(var.as_tensor())
            .ok_or_else(|| Error::NoGradient(name.clone()))?;
        let g = g.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        match acc.get_mut(name) {
            Some(a) => a
                .par_iter_mut()
                .zip(g.par_iter())
                .for_each(|(a, g)| *a += scale * g),
            None => {
                let g = if scale == 1.0 {
                    g
                } else {
                    g.into_iter().map(|x| x * scale).collect()
                };
                acc.insert(name.clone(), g);
            }
        }
    }
    Ok(())
}

/// Global L2 norm of all gradients (f64 accumulation). Non-finite if any element is.
///
/// Deterministic: fixed-size chunks are summed in parallel and the partial sums added in order,
/// so the result (and hence clipping, and hence the weights) does not depend on thread timing.
pub fn global_norm(grads: &FlatGrads) -> f64 {
    grads
        .values()
        .map(|g| {
            let partial: Vec<f64> = g
                .par_chunks(1 << 14)
                .map(|c| c.iter().map(|x| (*x as f64) * (*x as f64)).sum::<f64>())
                .collect();
            partial.iter().sum::<f64>()
        })
        .sum::<f64>()
        .sqrt()
}

/// Scales gradients so that their global norm is at most `max_norm` (PyTorch
/// `clip_grad_norm_`: coefficient `max_norm / (norm + 1e-6)`, clamped to 1). Returns the norm
/// before clipping.
pub fn clip_grads(grads: &mut FlatGrads, max_norm: f64) -> f64 {
    let norm = global_norm(grads);
    if max_norm > 0.0 && norm.is_finite() {
        let coef = max_norm / (norm + 1e-6);
        if coef < 1.0 {
            let coef = coef as f32;
            for g in grads.values_mut() {
                g.par_iter_mut().for_each(|x| *x *= coef);
            }
        }
    }
    norm
}

/// First and second moments of one parameter.
#[derive(Debug, Clone, PartialEq)]
struct Moments {
    m: Vec<f32>,
    v: Vec<f32>,
}

/// One parameter's AdamW update, applied in place to the parameter's storage (a candle in-place
/// op: no copy of the parameter out and back in).
struct AdamWUpdate<'a> {
    /// The moments, updated together with the parameter (`InplaceOp1` only lends `&self`).
    moments: std::sync::Mutex<&'a mut Moments>,
    g: &'a [f32],
    decay: f32,
    step_size: f32,
    b1: f32,
    b2: f32,
    eps: f32,
    bc2_sqrt: f32,
}

impl AdamWUpdate<'_> {
    fn apply(&self, p: &mut [f32]) -> candle_core::Result<()> {
        let mut mo = self
            .moments
            .lock()
            .map_err(|_| candle_core::Error::Msg("adamw: moments lock poisoned".into()))?;
        let Moments { m, v } = &mut **mo;
        if p.len() != self.g.len() || m.len() != p.len() || v.len() != p.len() {
            candle_core::bail!(
                "adamw: parameter of {} elements, gradient {}, moments {}",
                p.len(),
                self.g.len(),
                m.len()
            )
        }
        let Self {
            decay,
            step_size,
            b1,
            b2,
            eps,
            bc2_sqrt,
            ..
        } = *self;
        p.par_chunks_mut(CHUNK)
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .zip(self.g.par_chunks(CHUNK))
            .for_each(|(((p, m), v), g)| {
                for (((p, m), v), &g) in p.iter_mut().zip(m).zip(v).zip(g) {
                    *p *= decay;
                    *m += (g - *m) * (1.0 - b1);
                    *v = *v * b2 + (1.0 - b2) * g * g;
                    let denom = v.sqrt() / bc2_sqrt + eps;
                    *p -= step_size * (*m / denom);
                }
            });
        Ok(())
    }
}

/// Elements per rayon task of the update.
const CHUNK: usize = 1 << 14;

impl candle_core::InplaceOp1 for AdamWUpdate<'_> {
    fn name(&self) -> &'static str {
        "adamw"
    }

    fn cpu_fwd(
        &self,
        storage: &mut candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<()> {
        let candle_core::CpuStorage::F32(data) = storage else {
            candle_core::bail!("adamw: parameters must be f32")
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("adamw: parameter is not contiguous")
        };
        match data.get_mut(start..end) {
            Some(p) => self.apply(p),
            None => candle_core::bail!("adamw: layout outside the parameter's storage"),
        }
    }
}

/// AdamW state: the step count and per-parameter moments.
#[derive(Debug, Clone, PartialEq)]
pub struct AdamW {
    cfg: OptimConfig,
    step: u64,
    moments: BTreeMap<String, Moments>,
}

impl AdamW {
    pub fn new(cfg: OptimConfig) -> Self {
        Self {
            cfg,
            step: 0,
            moments: BTreeMap::new(),
        }
    }

    pub fn config(&self) -> &OptimConfig {
        &self.cfg
    }

    /// Number of updates applied so far.
    pub fn steps_taken(&self) -> u64 {
        self.step
    }

    /// Applies one AdamW update with learning rate `lr` to every parameter in `params` from
    /// `grads`. Every parameter must have a gradient of matching size.
    pub fn step(
        &mut self,
        params: &BTreeMap<String, Var>,
        grads: &FlatGrads,
        lr: f64,
    ) -> Result<()> {
        // Validate everything before touching any state, so that an error leaves the
        // optimizer and the weights unchanged.
        for (name, var) in params {
            let g = grads
                .get(name)
                .ok_or_else(|| Error::NoGradient(name.clone()))?;
            if g.len() != var.elem_count() {
                return Err(Error::State(format!(
                    "gradient of {name} has {} elements, parameter has {}",
                    g.len(),
                    var.elem_count()
                )));
            }
        }
        self.step += 1;
        let t = self.step as i32;
        let (b1, b2, eps) = (self.cfg.beta1, self.cfg.beta2, self.cfg.eps);
        let bc1 = 1.0 - b1.powi(t);
        let bc2_sqrt = (1.0 - b2.powi(t)).sqrt();
        let step_size = (lr / bc1) as f32;
        let (b1f, b2f, epsf, bc2f) = (b1 as f32, b2 as f32, eps as f32, bc2_sqrt as f32);
        for (name, var) in params {
            let g = &grads[name];
            let decay = if var.rank() >= 2 {
                (1.0 - lr * self.cfg.weight_decay) as f32
            } else {
                1.0
            };
            let mo = self.moments.entry(name.clone()).or_insert_with(|| Moments {
                m: vec![0.0; g.len()],
                v: vec![0.0; g.len()],
            });
            let update = AdamWUpdate {
                moments: std::sync::Mutex::new(mo),
                g,
                decay,
                step_size,
                b1: b1f,
                b2: b2f,
                eps: epsf,
                bc2_sqrt: bc2f,
            };
            if var.device().is_cpu() {
                var.as_tensor().inplace_op1(&update)?;
            } else {
                let shape = var.shape().clone();
                let mut p = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
                update.apply(&mut p)?;
                var.set(&Tensor::from_vec(p, shape, var.device())?)?;
            }
        }
        Ok(())
    }

    /// The moments as tensors (`m.<name>`, `v.<name>`) for a checkpoint, plus the step count.
    pub fn state_tensors(
        &self,
        params: &BTreeMap<String, Var>,
    ) -> Result<(BTreeMap<String, Tensor>, u64)> {
        let mut out = BTreeMap::new();
        for (name, mo) in &self.moments {
            let shape = params
                .get(name)
                .ok_or_else(|| Error::State(format!("optimizer has moments for unknown {name}")))?
                .shape()
                .clone();
            out.insert(
                format!("m.{name}"),
                Tensor::from_slice(&mo.m, shape.clone(), &Device::Cpu)?,
            );
            out.insert(
                format!("v.{name}"),
                Tensor::from_slice(&mo.v, shape, &Device::Cpu)?,
            );
        }
        Ok((out, self.step))
    }

    /// Restores moments and the step count saved by [`AdamW::state_tensors`], checking that
    /// every moment matches a parameter's size.
    pub fn load_state(
        &mut self,
        params: &BTreeMap<String, Var>,
        tensors: &BTreeMap<String, Tensor>,
        step: u64,
    ) -> Result<()> {
        let mut moments = BTreeMap::new();
        if step > 0 {
            for (name, var) in params {
                let get = |k: &str| -> Result<Vec<f32>> {
                    let t = tensors
                        .get(k)
                        .ok_or_else(|| Error::State(format!("optimizer state lacks {k}")))?;
                    if t.elem_count() != var.elem_count() {
                        return Err(Error::State(format!(
                            "optimizer state {k} has {} elements, parameter has {}",
                            t.elem_count(),
                            var.elem_count()
                        )));
                    }
                    Ok(t.flatten_all()?.to_vec1::<f32>()?)
                };
                let m = get(&format!("m.{name}"))?;
                let v = get(&format!("v.{name}"))?;
                moments.insert(name.clone(), Moments { m, v });
            }
        }
        if tensors.len() != 2 * moments.len() {
            return Err(Error::State(format!(
                "optimizer state has {} tensors, expected {}",
                tensors.len(),
                2 * moments.len()
            )));
        }
        self.moments = moments;
        self.step = step;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_the_floor() {
        let cfg = OptimConfig {
            lr: 1.0,
            min_lr_ratio: 0.1,
            warmup_steps: 10,
            ..Default::default()
        };
        assert!((lr_at(&cfg, 0, 100) - 0.1).abs() < 1e-12);
        assert!((lr_at(&cfg, 9, 100) - 1.0).abs() < 1e-12);
        assert!((lr_at(&cfg, 10, 100) - 1.0).abs() < 1e-12);
        // Half-way through the decay: the midpoint between peak and floor.
        assert!((lr_at(&cfg, 55, 100) - 0.55).abs() < 1e-12);
        assert!((lr_at(&cfg, 100, 100) - 0.1).abs() < 1e-12);
        assert!((lr_at(&cfg, 500, 100) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn one_adamw_step_matches_hand_computation() {
        // p = [1, -2] (a vector: no decay), g = [0.5, -0.1], lr = 0.1.
        // t=1: m = 0.1 g, v = 0.05 g²; m̂ = g, v̂ = g² ⇒ update = lr · g / (|g| + ε) ≈ lr · sign(g).
        let var = Var::from_slice(&[1.0f32, -2.0], 2, &Device::Cpu).unwrap();
        let params = BTreeMap::from([("b".to_string(), var.clone())]);
        let grads = BTreeMap::from([("b".to_string(), vec![0.5f32, -0.1])]);
        let mut opt = AdamW::new(OptimConfig::default());
        opt.step(&params, &grads, 0.1).unwrap();
        let p = var.as_tensor().to_vec1::<f32>().unwrap();
        let expect = [
            1.0 - 0.1 * 0.5 / (0.5 + 1e-8),
            -2.0 + 0.1 * 0.1 / (0.1 + 1e-8),
        ];
        assert!((p[0] as f64 - expect[0]).abs() < 1e-6, "{p:?}");
        assert!((p[1] as f64 - expect[1]).abs() < 1e-6, "{p:?}");
    }

    #[test]
    fn weight_decay_touches_matrices_only() {
        let mat = Var::from_slice(&[1.0f32; 4], (2, 2), &Device::Cpu).unwrap();
        let vec = Var::from_slice(&[1.0f32; 2], 2, &Device::Cpu).unwrap();
        let params = BTreeMap::from([
            ("m".to_string(), mat.clone()),
            ("v".to_string(), vec.clone()),
        ]);
        let grads = BTreeMap::from([
            ("m".to_string(), vec![0.0f32; 4]),
            ("v".to_string(), vec![0.0f32; 2]),
        ]);
        let mut opt = AdamW::new(OptimConfig {
            weight_decay: 0.5,
            ..Default::default()
        });
        opt.step(&params, &grads, 0.1).unwrap();
        // Zero gradient ⇒ only decay moves p: matrix 1 · (1 − 0.1·0.5) = 0.95, vector untouched.
        assert_eq!(
            mat.as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
            vec![0.95f32; 4]
        );
        assert_eq!(vec.as_tensor().to_vec1::<f32>().unwrap(), vec![1.0f32; 2]);
    }

    #[test]
    fn clipping_scales_to_max_norm() {
        let mut g = BTreeMap::from([("a".to_string(), vec![3.0f32, 4.0])]);
        let n = clip_grads(&mut g, 1.0);
        assert!((n - 5.0).abs() < 1e-12);
        let after = global_norm(&g);
        assert!((after - 1.0).abs() < 1e-5, "{after}");
    }

    #[test]
    fn state_round_trips_and_size_mismatch_is_an_error() {
        let var = Var::from_slice(&[1.0f32, 2.0, 3.0], 3, &Device::Cpu).unwrap();
        let params = BTreeMap::from([("w".to_string(), var)]);
        let grads = BTreeMap::from([("w".to_string(), vec![0.1f32, 0.2, 0.3])]);
        let mut opt = AdamW::new(OptimConfig::default());
        opt.step(&params, &grads, 0.01).unwrap();
        let (t, step) = opt.state_tensors(&params).unwrap();
        let mut back = AdamW::new(OptimConfig::default());
        back.load_state(&params, &t, step).unwrap();
        assert_eq!(back, opt);
        let bad = BTreeMap::from([("w".to_string(), vec![0.1f32])]);
        assert!(opt.step(&params, &bad, 0.01).is_err());
    }
}
