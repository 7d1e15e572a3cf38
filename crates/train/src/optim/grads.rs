//! Gradients gathered for the optimizer: one f32 buffer per parameter, kept where its update will
//! run (host vectors for CPU parameters, tensors on the device otherwise), their global norm and
//! clipping.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor, Var};
use rayon::prelude::*;

use crate::{Error, Result};

#[cfg(feature = "cuda")]
use super::cuda;

/// One parameter's accumulated gradient, f32, where its parameter's update will read it.
#[derive(Debug, Clone)]
pub enum Grad {
    /// Flat on the host: parameters on the CPU (the fused in-place update).
    Host(Vec<f32>),
    /// A tensor of the parameter's shape on the parameter's device (CUDA): the update runs there
    /// as tensor operations.
    Tensor(Tensor),
}

impl Grad {
    /// The values, flat, on the host (a device-to-host copy for [`Grad::Tensor`]).
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        match self {
            Grad::Host(g) => Ok(g.clone()),
            Grad::Tensor(t) => Ok(t.flatten_all()?.to_vec1::<f32>()?),
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Grad::Host(g) => g.len(),
            Grad::Tensor(t) => t.elem_count(),
        }
    }

    /// Whether the gradient has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The gradient as a tensor of `shape` on `device` (no copy when it already is one there).
    pub(super) fn tensor_on(&self, shape: &candle_core::Shape, device: &Device) -> Result<Tensor> {
        Ok(match self {
            Grad::Host(g) => Tensor::from_slice(g, shape, device)?,
            Grad::Tensor(t) => t.to_device(device)?.reshape(shape)?,
        })
    }
}

impl From<Vec<f32>> for Grad {
    fn from(g: Vec<f32>) -> Self {
        Grad::Host(g)
    }
}

/// Gradients of every parameter, keyed by parameter name: flat f32 vectors on the host for
/// parameters on the CPU, f32 tensors on the device otherwise. Accumulating micro-batches adds
/// into these.
pub type FlatGrads = BTreeMap<String, Grad>;

/// The device of a set of trainable variables (the first one's; the CPU when there are none).
pub fn vars_device(vars: &BTreeMap<String, Var>) -> Device {
    vars.values()
        .next()
        .map(|v| v.device().clone())
        .unwrap_or(Device::Cpu)
}

/// Adds the gradients of `loss.backward()` into `acc` (created on first use), scaled by `scale`.
/// A parameter that received no gradient is an error: it means an op cut the graph
/// (DESIGN.md "Silent gradient cut"). Gradients of CPU parameters are gathered on the host;
/// those of parameters on another device stay there.
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
        if !var.device().is_cpu() {
            let g = g.to_dtype(DType::F32)?;
            // `affine(s, 0)` is one f32 product per element, as on the host below.
            let g = if scale == 1.0 {
                g
            } else {
                g.affine(scale as f64, 0.0)?
            };
            let sum = match acc.remove(name) {
                None => g,
                Some(Grad::Tensor(a)) => (a + g)?,
                Some(Grad::Host(a)) => (Tensor::from_vec(a, g.shape(), g.device())? + g)?,
            };
            acc.insert(name.clone(), Grad::Tensor(sum));
            continue;
        }
        let g = g.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        match acc.get_mut(name) {
            Some(Grad::Host(a)) => a
                .par_iter_mut()
                .zip(g.par_iter())
                .for_each(|(a, g)| *a += scale * g),
            Some(Grad::Tensor(a)) => {
                let mut sum = a.flatten_all()?.to_vec1::<f32>()?;
                sum.iter_mut().zip(&g).for_each(|(a, g)| *a += scale * g);
                acc.insert(name.clone(), Grad::Host(sum));
            }
            None => {
                let g = if scale == 1.0 {
                    g
                } else {
                    g.into_iter().map(|x| x * scale).collect()
                };
                acc.insert(name.clone(), Grad::Host(g));
            }
        }
    }
    Ok(())
}

/// Global L2 norm of all gradients (f64 accumulation). Non-finite if any element is.
///
/// Deterministic on the host: fixed-size chunks are summed in parallel and the partial sums
/// added in order, so the result (and hence clipping, and hence the weights) does not depend on
/// thread timing. Device gradients are squared and summed in f64 on their device, and only the
/// total comes back.
pub fn global_norm(grads: &FlatGrads) -> Result<f64> {
    let mut host = 0.0f64;
    let mut device: Option<Tensor> = None;
    #[cfg(feature = "cuda")]
    let mut cuda_grads: Vec<&Tensor> = Vec::new();
    for g in grads.values() {
        match g {
            Grad::Host(g) => {
                let partial: Vec<f64> = g
                    .par_chunks(1 << 14)
                    .map(|c| c.iter().map(|x| (*x as f64) * (*x as f64)).sum::<f64>())
                    .collect();
                host += partial.iter().sum::<f64>();
            }
            #[cfg(feature = "cuda")]
            Grad::Tensor(t) if t.device().is_cuda() => cuda_grads.push(t),
            Grad::Tensor(t) => {
                let sq = t.to_dtype(DType::F64)?.sqr()?.sum_all()?;
                device = Some(match device {
                    None => sq,
                    Some(d) => (sq.to_device(d.device())? + d)?,
                });
            }
        }
    }
    if let Some(d) = device {
        host += d.to_scalar::<f64>()?;
    }
    #[cfg(feature = "cuda")]
    if !cuda_grads.is_empty() {
        host += cuda::sum_squares(&cuda_grads)?;
    }
    Ok(host.sqrt())
}

/// Scales gradients so that their global norm is at most `max_norm` (PyTorch
/// `clip_grad_norm_`: coefficient `max_norm / (norm + 1e-6)`, clamped to 1). Returns the norm
/// before clipping.
pub fn clip_grads(grads: &mut FlatGrads, max_norm: f64) -> Result<f64> {
    let norm = global_norm(grads)?;
    if max_norm > 0.0 && norm.is_finite() {
        let coef = max_norm / (norm + 1e-6);
        if coef < 1.0 {
            let coef = coef as f32;
            for g in grads.values_mut() {
                match g {
                    Grad::Host(g) => g.par_iter_mut().for_each(|x| *x *= coef),
                    Grad::Tensor(t) => *t = t.affine(coef as f64, 0.0)?,
                }
            }
        }
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipping_scales_to_max_norm() {
        let mut g = BTreeMap::from([("a".to_string(), Grad::from(vec![3.0f32, 4.0]))]);
        let n = clip_grads(&mut g, 1.0).unwrap();
        assert!((n - 5.0).abs() < 1e-12);
        let after = global_norm(&g).unwrap();
        assert!((after - 1.0).abs() < 1e-5, "{after}");
    }

    #[test]
    fn the_norm_adds_host_and_tensor_gradients() {
        let g = BTreeMap::from([
            ("h".to_string(), Grad::from(vec![3.0f32])),
            (
                "t".to_string(),
                Grad::Tensor(Tensor::new(&[4.0f32], &Device::Cpu).unwrap()),
            ),
        ]);
        assert_eq!(global_norm(&g).unwrap(), 5.0);
    }
}
