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
//! For parameters on the CPU the gradients and moments live as plain `Vec<f32>` beside each
//! parameter and the update is one fused pass per tensor (rayon over chunks) that writes the
//! parameter's storage in place (a candle in-place op), so a step allocates nothing. For
//! parameters on another device the gradients and moments stay there as tensors, and nothing
//! crosses to the host but the gradient norm. On CUDA the update and the norm are our own fused
//! kernels ([`cuda`], two launches per parameter for the update, one for the norm); elsewhere, or
//! with [`AdamW::with_composed_update`], the same update runs as candle tensor operations. All
//! three do the same f32 operations in the same order: on the CPU the composed path agrees with
//! the fused pass bit for bit (a test forces it on CPU tensors), and so do the CUDA kernels
//! (compiled without contracted multiply-adds) given the same gradients.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor, Var};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

#[cfg(feature = "cuda")]
mod cuda;
mod grads;
mod schedule;

pub use grads::{accumulate_grads, clip_grads, global_norm, vars_device, FlatGrads, Grad};
pub use schedule::lr_at;

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

/// First and second moments of one parameter, kept where its gradient is (see [`Grad`]).
#[derive(Debug, Clone)]
enum Moments {
    Host { m: Vec<f32>, v: Vec<f32> },
    Tensor { m: Tensor, v: Tensor },
}

impl Moments {
    fn host(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        Ok(match self {
            Moments::Host { m, v } => (m.clone(), v.clone()),
            Moments::Tensor { m, v } => (
                m.flatten_all()?.to_vec1::<f32>()?,
                v.flatten_all()?.to_vec1::<f32>()?,
            ),
        })
    }

    /// The moments as tensors of `shape` on `device` (no copy when they already are).
    fn into_tensors(self, shape: &candle_core::Shape, device: &Device) -> Result<(Tensor, Tensor)> {
        Ok(match self {
            Moments::Host { m, v } => (
                Tensor::from_vec(m, shape, device)?,
                Tensor::from_vec(v, shape, device)?,
            ),
            Moments::Tensor { m, v } => (m.to_device(device)?, v.to_device(device)?),
        })
    }
}

/// Moments compare by value, wherever they live (an unreadable tensor compares unequal).
impl PartialEq for Moments {
    fn eq(&self, other: &Self) -> bool {
        match (self.host(), other.host()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        }
    }
}

/// The scalars of one parameter's AdamW update at one step.
#[derive(Debug, Clone, Copy)]
struct UpdateScalars {
    decay: f32,
    step_size: f32,
    b1: f32,
    b2: f32,
    eps: f32,
    bc2_sqrt: f32,
}

/// One parameter's AdamW update, applied in place to the parameter's storage (a candle in-place
/// op: no copy of the parameter out and back in).
struct AdamWUpdate<'a> {
    /// The moments `(m, v)`, updated together with the parameter (`InplaceOp1` only lends
    /// `&self`).
    moments: std::sync::Mutex<(&'a mut [f32], &'a mut [f32])>,
    g: &'a [f32],
    s: UpdateScalars,
}

impl AdamWUpdate<'_> {
    fn apply(&self, p: &mut [f32]) -> candle_core::Result<()> {
        let mut mo = self
            .moments
            .lock()
            .map_err(|_| candle_core::Error::Msg("adamw: moments lock poisoned".into()))?;
        let (m, v) = &mut *mo;
        if p.len() != self.g.len() || m.len() != p.len() || v.len() != p.len() {
            candle_core::bail!(
                "adamw: parameter of {} elements, gradient {}, moments {}",
                p.len(),
                self.g.len(),
                m.len()
            )
        }
        let UpdateScalars {
            decay,
            step_size,
            b1,
            b2,
            eps,
            bc2_sqrt,
        } = self.s;
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

/// The update of [`AdamWUpdate::apply`] as tensor operations on the parameter's device: the same
/// f32 operations in the same order (`affine(c, 0)` is one product, `affine(1, e)` one sum, the
/// constants are rounded to f32 first as there), so that on the CPU it agrees with the fused pass
/// bit for bit. Returns the new `(p, m, v)`.
fn adamw_tensors(
    p: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    s: UpdateScalars,
) -> Result<(Tensor, Tensor, Tensor)> {
    let p = if s.decay != 1.0 {
        p.affine(s.decay as f64, 0.0)?
    } else {
        p.clone()
    };
    // m += (g − m)·(1 − β1)
    let m = (m + (g - m)?.affine((1.0 - s.b1) as f64, 0.0)?)?;
    // v = v·β2 + ((1 − β2)·g)·g
    let v = (v.affine(s.b2 as f64, 0.0)? + (g.affine((1.0 - s.b2) as f64, 0.0)? * g)?)?;
    // denom = √v / √(1 − β2ᵗ) + ε, a true division as on the host
    let bc2 = Tensor::new(s.bc2_sqrt, v.device())?;
    let denom = v.sqrt()?.broadcast_div(&bc2)?.affine(1.0, s.eps as f64)?;
    // p −= step · (m / denom)
    let p = (p - (&m / &denom)?.affine(s.step_size as f64, 0.0)?)?;
    Ok((p, m, v))
}

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

/// One parameter's update on its device: the fused CUDA kernels when `kernels` and the parameter
/// is on a CUDA device, the composed tensor operations otherwise. Updates `var` and returns the
/// new `(m, v)`.
fn update_on_device(
    var: &Var,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    s: UpdateScalars,
    kernels: bool,
) -> Result<(Tensor, Tensor)> {
    #[cfg(feature = "cuda")]
    if kernels && var.device().is_cuda() {
        return Ok(cuda::adamw(var.as_tensor(), g, m, v, s)?);
    }
    let _ = kernels; // without CUDA there are no fused device kernels
    let (p, m, v) = adamw_tensors(&var.as_tensor().detach(), g, m, v, s)?;
    var.set(&p)?;
    Ok((m, v))
}

/// AdamW state: the step count and per-parameter moments.
#[derive(Debug, Clone, PartialEq)]
pub struct AdamW {
    cfg: OptimConfig,
    step: u64,
    moments: BTreeMap<String, Moments>,
    /// Whether device parameters use our fused kernels where there are some (CUDA).
    device_kernels: bool,
}

impl AdamW {
    pub fn new(cfg: OptimConfig) -> Self {
        Self {
            cfg,
            step: 0,
            moments: BTreeMap::new(),
            device_kernels: true,
        }
    }

    /// The same optimizer, updating device parameters with composed candle tensor operations
    /// even where fused kernels exist (for tests and debugging: they compute the same thing).
    pub fn with_composed_update(mut self) -> Self {
        self.device_kernels = false;
        self
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
            let decay = if var.rank() >= 2 {
                (1.0 - lr * self.cfg.weight_decay) as f32
            } else {
                1.0
            };
            let s = UpdateScalars {
                decay,
                step_size,
                b1: b1f,
                b2: b2f,
                eps: epsf,
                bc2_sqrt: bc2f,
            };
            let n = var.elem_count();
            let mo = self.moments.remove(name).unwrap_or_else(|| Moments::Host {
                m: vec![0.0; n],
                v: vec![0.0; n],
            });
            let mo = match &grads[name] {
                // The fused in-place pass: CPU parameters with host gradients.
                Grad::Host(g) if var.device().is_cpu() => {
                    let (mut m, mut v) = match mo {
                        Moments::Host { m, v } => (m, v),
                        other => other.host()?,
                    };
                    let update = AdamWUpdate {
                        moments: std::sync::Mutex::new((m.as_mut_slice(), v.as_mut_slice())),
                        g,
                        s,
                    };
                    var.as_tensor().inplace_op1(&update)?;
                    Moments::Host { m, v }
                }
                // On the parameter's device.
                grad => {
                    let (shape, device) = (var.shape(), var.device());
                    let g = grad.tensor_on(shape, device)?;
                    let (m, v) = mo.into_tensors(shape, device)?;
                    let (m, v) = update_on_device(var, &g, &m, &v, s, self.device_kernels)?;
                    Moments::Tensor { m, v }
                }
            };
            self.moments.insert(name.clone(), mo);
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
            let (m, v) = match mo {
                Moments::Host { m, v } => (
                    Tensor::from_slice(m, shape.clone(), &Device::Cpu)?,
                    Tensor::from_slice(v, shape, &Device::Cpu)?,
                ),
                Moments::Tensor { m, v } => {
                    (m.to_device(&Device::Cpu)?, v.to_device(&Device::Cpu)?)
                }
            };
            out.insert(format!("m.{name}"), m);
            out.insert(format!("v.{name}"), v);
        }
        Ok((out, self.step))
    }

    /// Restores moments and the step count saved by [`AdamW::state_tensors`], checking that
    /// every moment matches a parameter's size. Moments of parameters on the CPU are kept on the
    /// host, the others are moved to their parameter's device.
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
                let mo = Moments::Host { m, v };
                let mo = if var.device().is_cpu() {
                    mo
                } else {
                    let (m, v) = mo.into_tensors(var.shape(), var.device())?;
                    Moments::Tensor { m, v }
                };
                moments.insert(name.clone(), mo);
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
    fn one_adamw_step_matches_hand_computation() {
        // p = [1, -2] (a vector: no decay), g = [0.5, -0.1], lr = 0.1.
        // t=1: m = 0.1 g, v = 0.05 g²; m̂ = g, v̂ = g² ⇒ update = lr · g / (|g| + ε) ≈ lr · sign(g).
        let var = Var::from_slice(&[1.0f32, -2.0], 2, &Device::Cpu).unwrap();
        let params = BTreeMap::from([("b".to_string(), var.clone())]);
        let grads = BTreeMap::from([("b".to_string(), Grad::from(vec![0.5f32, -0.1]))]);
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
            ("m".to_string(), Grad::from(vec![0.0f32; 4])),
            ("v".to_string(), Grad::from(vec![0.0f32; 2])),
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
    fn state_round_trips_and_size_mismatch_is_an_error() {
        let var = Var::from_slice(&[1.0f32, 2.0, 3.0], 3, &Device::Cpu).unwrap();
        let params = BTreeMap::from([("w".to_string(), var)]);
        let grads = BTreeMap::from([("w".to_string(), Grad::from(vec![0.1f32, 0.2, 0.3]))]);
        let mut opt = AdamW::new(OptimConfig::default());
        opt.step(&params, &grads, 0.01).unwrap();
        let (t, step) = opt.state_tensors(&params).unwrap();
        let mut back = AdamW::new(OptimConfig::default());
        back.load_state(&params, &t, step).unwrap();
        assert_eq!(back, opt);
        let bad = BTreeMap::from([("w".to_string(), Grad::from(vec![0.1f32]))]);
        assert!(opt.step(&params, &bad, 0.01).is_err());
    }

    /// Two copies of the same CPU parameters (a matrix, which decays, and a vector), one updated
    /// by the fused in-place pass and one by the tensor-operation path that CUDA parameters take
    /// (forced here by handing it tensor gradients): four clipped steps, then the weights, the
    /// moments and the saved state must agree bit for bit.
    #[test]
    fn tensor_update_path_matches_the_fused_pass_bit_for_bit() {
        let make = || {
            let mat: Vec<f32> = (0..12).map(|i| (i as f32 * 0.37).sin()).collect();
            let vec: Vec<f32> = (0..3).map(|i| 1.0 + i as f32 * 0.1).collect();
            BTreeMap::from([
                (
                    "w".to_string(),
                    Var::from_slice(&mat, (4, 3), &Device::Cpu).unwrap(),
                ),
                (
                    "b".to_string(),
                    Var::from_slice(&vec, 3, &Device::Cpu).unwrap(),
                ),
            ])
        };
        let (fused_vars, tensor_vars) = (make(), make());
        let cfg = OptimConfig {
            weight_decay: 0.1,
            ..Default::default()
        };
        let (mut fused, mut tensor) = (AdamW::new(cfg.clone()), AdamW::new(cfg));
        for step in 0..4 {
            let mut host = FlatGrads::new();
            let mut dev = FlatGrads::new();
            for (name, var) in &fused_vars {
                let g: Vec<f32> = (0..var.elem_count())
                    .map(|i| ((i + 7 * step) as f32 * 1.3 + name.len() as f32).cos() * 3.0)
                    .collect();
                let t = Tensor::from_slice(&g, var.shape(), &Device::Cpu).unwrap();
                dev.insert(name.clone(), Grad::Tensor(t));
                host.insert(name.clone(), Grad::Host(g));
            }
            let n1 = clip_grads(&mut host, 1.0).unwrap();
            let n2 = clip_grads(&mut dev, 1.0).unwrap();
            assert!((n1 - n2).abs() <= 1e-12 * n1, "{n1} vs {n2}");
            assert!(n1 > 1.0, "clipping must be exercised");
            for (name, g) in &host {
                assert_eq!(g.to_vec().unwrap(), dev[name].to_vec().unwrap(), "{name}");
            }
            fused.step(&fused_vars, &host, 1e-2).unwrap();
            tensor.step(&tensor_vars, &dev, 1e-2).unwrap();
        }
        for (name, var) in &fused_vars {
            let flat = |v: &Var| {
                v.as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
            };
            assert_eq!(flat(var), flat(&tensor_vars[name]), "{name}");
        }
        assert!(matches!(tensor.moments["w"], Moments::Tensor { .. }));
        assert!(matches!(fused.moments["w"], Moments::Host { .. }));
        assert_eq!(fused, tensor);
        let (sf, _) = fused.state_tensors(&fused_vars).unwrap();
        let (st, _) = tensor.state_tensors(&tensor_vars).unwrap();
        for (k, t) in &sf {
            assert!(st[k].device().is_cpu());
            let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(flat(t), flat(&st[k]), "{k}");
        }
    }
}
