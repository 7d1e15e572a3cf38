//! Fused CPU softmax and log-softmax over the last dimension. Both subtract the row maximum, so
//! logits of any finite size are safe and `softmax([1234, 0]) == [1, 0]` exactly. The backward
//! passes use only the output: softmax `dx = y (g - sum(g y))`, log-softmax
//! `dx = g - exp(y) sum(g)`.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::cpu::{
    max, output_vec, rows_and_len, rows_per_task, simd_kernel, slice, sum_map, sum_map2, CpuView,
    Real,
};

/// Softmax (`log == false`) or log-softmax (`log == true`) over the last dimension.
struct SoftmaxOp {
    log: bool,
}

impl SoftmaxOp {
    fn fwd<T: Real>(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let name = CustomOp1::name(self);
        let (rows, c) = rows_and_len(l.dims(), name)?;
        let xs = slice::<T>(s, l, name)?;
        let mut y = output_vec(rows * c);
        let rpt = rows_per_task(c);
        let log = self.log;
        y.par_chunks_mut(rpt * c)
            .zip(xs.par_chunks(rpt * c))
            .for_each(|(y, x)| softmax_rows(y, x, c, log));
        Ok((T::to_cpu_storage_owned(y), l.shape().clone()))
    }

    fn bwd_t<T: Real>(&self, res: &Tensor, grad: &Tensor) -> Result<Tensor> {
        let name = CustomOp1::name(self);
        let (res, grad) = (res.contiguous()?, grad.contiguous()?);
        let (yv, gv) = (CpuView::new(&res, name)?, CpuView::new(&grad, name)?);
        let (ys, gs) = (yv.slice::<T>()?, gv.slice::<T>()?);
        let (rows, c) = rows_and_len(res.dims(), name)?;
        if gs.len() != ys.len() {
            bail!(
                "{name}: backward got grad {:?} for output {:?}",
                grad.dims(),
                res.dims()
            )
        }
        let mut dx = output_vec(rows * c);
        let rpt = rows_per_task(c);
        let log = self.log;
        dx.par_chunks_mut(rpt * c)
            .zip(ys.par_chunks(rpt * c).zip(gs.par_chunks(rpt * c)))
            .for_each(|(dx, (y, g))| softmax_grad_rows(dx, y, g, c, log));
        Tensor::from_vec(dx, res.shape(), res.device())
    }
}

simd_kernel! {
    /// The forward for the rows (of `c` elements) of one task.
    fn softmax_rows<T: Real>(y: &mut [T], x: &[T], c: usize, log: bool) {
        for (y, x) in y.chunks_mut(c).zip(x.chunks(c)) {
            let max = max(x);
            // Separate loops for the map and the sum, so that the map vectorises.
            if log {
                for (y, &x) in y.iter_mut().zip(x) {
                    *y = x - max;
                }
                let lse = sum_map(y, |v| v.exp()).ln();
                y.iter_mut().for_each(|y| *y -= lse);
            } else {
                for (y, &x) in y.iter_mut().zip(x) {
                    *y = (x - max).exp();
                }
                let inv = sum_map(y, |v| v).recip();
                y.iter_mut().for_each(|y| *y *= inv);
            }
        }
    }
}

simd_kernel! {
    /// The backward for the rows of one task, from the output `y` and its gradient `g`.
    fn softmax_grad_rows<T: Real>(dx: &mut [T], y: &[T], g: &[T], c: usize, log: bool) {
        for ((dx, y), g) in dx.chunks_mut(c).zip(y.chunks(c)).zip(g.chunks(c)) {
            if log {
                let sum = sum_map(g, |v| v);
                for ((dx, &y), &g) in dx.iter_mut().zip(y).zip(g) {
                    *dx = g - y.exp() * sum;
                }
            } else {
                let dot = sum_map2(y, g, |y, g| y * g);
                for ((dx, &y), &g) in dx.iter_mut().zip(y).zip(g) {
                    *dx = y * (g - dot);
                }
            }
        }
    }
}

impl CustomOp1 for SoftmaxOp {
    fn name(&self) -> &'static str {
        if self.log {
            "log_softmax_last_dim"
        } else {
            "softmax_last_dim"
        }
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        match s.dtype() {
            DType::F32 => self.fwd::<f32>(s, l),
            DType::F64 => self.fwd::<f64>(s, l),
            dt => bail!(
                "{}: fused kernel supports f32 and f64, got {dt:?}",
                self.name()
            ),
        }
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let dx = match res.dtype() {
            DType::F32 => self.bwd_t::<f32>(res, grad)?,
            DType::F64 => self.bwd_t::<f64>(res, grad)?,
            dt => bail!(
                "{}: fused kernel supports f32 and f64, got {dt:?}",
                self.name()
            ),
        };
        Ok(Some(dx))
    }
}

/// Fused [`crate::ops::softmax_last_dim`]. Errors unless `x` is an f32 or f64 CPU tensor.
///
/// # Shapes
/// - `x`: `(..., V)`; returns `(..., V)`.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(SoftmaxOp { log: false })
}

/// Fused [`crate::ops::log_softmax_last_dim`]. Errors unless `x` is an f32 or f64 CPU tensor.
///
/// # Shapes
/// - `x`: `(..., V)`; returns `(..., V)`.
pub fn log_softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(SoftmaxOp { log: true })
}
