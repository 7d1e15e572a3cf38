//! Fused CPU LayerNorm and RMSNorm: one pass forward (saving each row's mean and reciprocal
//! standard deviation), one pass backward that yields the input gradient and per-task partial
//! weight/bias gradients, summed in task order so the result is bitwise reproducible.

use std::sync::OnceLock;

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::cpu::{
    output_vec, rows_and_len, rows_per_task, simd_kernel, slice, sum_map, sum_map2, CpuView, Real,
};

/// Per-row statistics saved by a forward pass for its backward: the mean (LayerNorm only) and the
/// reciprocal standard deviation `1 / sqrt(var + eps)`.
struct Stats {
    mean: CpuStorage,
    rstd: CpuStorage,
}

/// LayerNorm (`rms == false`) or RMSNorm (`rms == true`) over the last dimension.
struct NormOp {
    rms: bool,
    eps: f64,
    stats: OnceLock<Stats>,
}

impl NormOp {
    fn name(&self) -> &'static str {
        if self.rms {
            "rms_norm"
        } else {
            "layer_norm"
        }
    }

    fn fwd<T: Real>(
        &self,
        x: (&CpuStorage, &Layout),
        w: (&CpuStorage, &Layout),
        b: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        let name = self.name();
        let (rows, c) = rows_and_len(x.1.dims(), name)?;
        let xs = slice::<T>(x.0, x.1, name)?;
        let ws = slice::<T>(w.0, w.1, name)?;
        let bs = match b {
            Some((s, l)) => Some(slice::<T>(s, l, name)?),
            None => None,
        };
        if ws.len() != c || bs.is_some_and(|b| b.len() != c) {
            bail!(
                "{name}: weight/bias must have {c} elements (input {:?})",
                x.1.dims()
            )
        }
        let (mean, rstd) = row_stats(xs, c, self.rms, T::from_f64(self.eps));
        let mut y = output_vec(rows * c);
        let rpt = rows_per_task(c);
        y.par_chunks_mut(rpt * c)
            .zip(xs.par_chunks(rpt * c))
            .zip(mean.par_chunks(rpt).zip(rstd.par_chunks(rpt)))
            .for_each(|((y, x), (mean, rstd))| normalize_rows(y, x, mean, rstd, ws, bs));
        // A second forward through the same op object cannot happen (each call builds one), so an
        // already-set cell is impossible; ignoring the error keeps the first statistics.
        let _ = self.stats.set(Stats {
            mean: T::to_cpu_storage_owned(mean),
            rstd: T::to_cpu_storage_owned(rstd),
        });
        Ok((T::to_cpu_storage_owned(y), x.1.shape().clone()))
    }

    fn dispatch_fwd(
        &self,
        x: (&CpuStorage, &Layout),
        w: (&CpuStorage, &Layout),
        b: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        match x.0.dtype() {
            DType::F32 => self.fwd::<f32>(x, w, b),
            DType::F64 => self.fwd::<f64>(x, w, b),
            dt => bail!(
                "{}: fused kernel supports f32 and f64, got {dt:?}",
                self.name()
            ),
        }
    }

    /// Returns `(dx, dw, db)`; `db` only when `with_bias`.
    fn bwd<T: Real>(
        &self,
        x: &Tensor,
        w: &Tensor,
        grad: &Tensor,
        with_bias: bool,
    ) -> Result<(Tensor, Tensor, Option<Tensor>)> {
        let name = self.name();
        let (x, w, grad) = (x.contiguous()?, w.contiguous()?, grad.contiguous()?);
        let (xv, wv, gv) = (
            CpuView::new(&x, name)?,
            CpuView::new(&w, name)?,
            CpuView::new(&grad, name)?,
        );
        let (xs, ws, gs) = (xv.slice::<T>()?, wv.slice::<T>()?, gv.slice::<T>()?);
        let (rows, c) = rows_and_len(x.dims(), name)?;
        if gs.len() != xs.len() || ws.len() != c {
            bail!(
                "{name}: backward got grad {:?} for input {:?}",
                grad.dims(),
                x.dims()
            )
        }
        let recomputed;
        let (mean, rstd): (&[T], &[T]) = match self.stats.get() {
            Some(s) => (
                T::cpu_storage_as_slice(&s.mean)?,
                T::cpu_storage_as_slice(&s.rstd)?,
            ),
            None => {
                recomputed = row_stats(xs, c, self.rms, T::from_f64(self.eps));
                (&recomputed.0, &recomputed.1)
            }
        };
        if mean.len() != rows || rstd.len() != rows {
            bail!("{name}: saved statistics do not match input {:?}", x.dims())
        }
        let rms = self.rms;
        let mut dx = output_vec(rows * c);
        let rpt = rows_per_task(c);
        // Each task returns its partial [dw; db] (2c values), summed below in task order.
        let partials: Vec<Vec<T>> = dx
            .par_chunks_mut(rpt * c)
            .zip(xs.par_chunks(rpt * c).zip(gs.par_chunks(rpt * c)))
            .zip(mean.par_chunks(rpt).zip(rstd.par_chunks(rpt)))
            .map(|((dx, (x, g)), (mean, rstd))| norm_grad_rows(dx, x, g, ws, mean, rstd, rms))
            .collect();
        let mut total = vec![T::zero(); 2 * c];
        for p in &partials {
            for (t, &v) in total.iter_mut().zip(p) {
                *t += v;
            }
        }
        let dev = x.device();
        let dx = Tensor::from_vec(dx, x.shape(), dev)?;
        let db = if with_bias {
            Some(Tensor::from_vec(total[c..].to_vec(), c, dev)?)
        } else {
            None
        };
        total.truncate(c);
        let dw = Tensor::from_vec(total, w.shape(), dev)?;
        Ok((dx, dw, db))
    }

    fn dispatch_bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        grad: &Tensor,
        with_bias: bool,
    ) -> Result<(Tensor, Tensor, Option<Tensor>)> {
        match x.dtype() {
            DType::F32 => self.bwd::<f32>(x, w, grad, with_bias),
            DType::F64 => self.bwd::<f64>(x, w, grad, with_bias),
            dt => bail!(
                "{}: fused kernel supports f32 and f64, got {dt:?}",
                self.name()
            ),
        }
    }
}

/// Each row's mean (zeros for RMSNorm) and `1 / sqrt(var + eps)` (`mean(x^2)` for RMSNorm).
fn row_stats<T: Real>(xs: &[T], c: usize, rms: bool, eps: T) -> (Vec<T>, Vec<T>) {
    let rows = xs.len() / c;
    let mut mean = vec![T::zero(); rows];
    let mut rstd = vec![T::zero(); rows];
    let rpt = rows_per_task(c);
    mean.par_chunks_mut(rpt)
        .zip(rstd.par_chunks_mut(rpt))
        .zip(xs.par_chunks(rpt * c))
        .for_each(|((mean, rstd), x)| row_stats_rows(mean, rstd, x, c, rms, eps));
    (mean, rstd)
}

simd_kernel! {
    /// [`row_stats`] for the rows of one task.
    fn row_stats_rows<T: Real>(
        mean: &mut [T],
        rstd: &mut [T],
        x: &[T],
        c: usize,
        rms: bool,
        eps: T,
    ) {
        let inv_c = T::from_f64(1.0 / c as f64);
        for ((m, r), x) in mean.iter_mut().zip(rstd.iter_mut()).zip(x.chunks(c)) {
            // The mean is taken around the row's first element, so a constant row has a mean
            // of exactly that value (and normalises to exactly the bias).
            let mu = match x.first() {
                Some(&x0) if !rms => x0 + sum_map(x, |v| v - x0) * inv_c,
                _ => T::zero(),
            };
            let var = sum_map(x, |v| (v - mu) * (v - mu)) * inv_c;
            *m = mu;
            *r = (var + eps).sqrt().recip();
        }
    }
}

simd_kernel! {
    /// The forward for the rows of one task: `y = (x - mean) rstd w (+ b)`, rows of `w.len()`.
    fn normalize_rows<T: Real>(
        y: &mut [T],
        x: &[T],
        mean: &[T],
        rstd: &[T],
        ws: &[T],
        bs: Option<&[T]>,
    ) {
        let c = ws.len();
        for (((y, x), &m), &r) in y.chunks_mut(c).zip(x.chunks(c)).zip(mean).zip(rstd) {
            let xhat_w = x.iter().zip(ws).map(|(&x, &w)| (x - m) * r * w);
            match bs {
                Some(bs) => {
                    for ((y, v), &b) in y.iter_mut().zip(xhat_w).zip(bs) {
                        *y = v + b;
                    }
                }
                None => y.iter_mut().zip(xhat_w).for_each(|(y, v)| *y = v),
            }
        }
    }
}

simd_kernel! {
    /// The backward for the rows of one task: writes `dx` and returns this task's partial
    /// `[dw; db]` (`2 c` values).
    fn norm_grad_rows<T: Real>(
        dx: &mut [T],
        x: &[T],
        g: &[T],
        ws: &[T],
        mean: &[T],
        rstd: &[T],
        rms: bool,
    ) -> Vec<T> {
        let c = ws.len();
        let inv_c = T::from_f64(1.0 / c as f64);
        let mut acc = vec![T::zero(); 2 * c];
        let (dw, db) = acc.split_at_mut(c);
        let (mut xhat, mut gw) = (vec![T::zero(); c], vec![T::zero(); c]);
        let rows = dx.chunks_mut(c).zip(x.chunks(c)).zip(g.chunks(c));
        for (((dx, x), g), (&m, &r)) in rows.zip(mean.iter().zip(rstd)) {
            for ((xh, gw), ((&x, &g), &w)) in xhat
                .iter_mut()
                .zip(gw.iter_mut())
                .zip(x.iter().zip(g).zip(ws))
            {
                *xh = (x - m) * r;
                *gw = g * w;
            }
            for (((dw, db), &g), &xh) in dw.iter_mut().zip(db.iter_mut()).zip(g).zip(&xhat) {
                *dw += g * xh;
                *db += g;
            }
            // LayerNorm: dx = r (gw - mean(gw) - xhat mean(gw xhat)); RMSNorm has no mean term
            // (its "mean" is fixed at 0).
            let a = if rms {
                T::zero()
            } else {
                sum_map(&gw, |v| v) * inv_c
            };
            let b = sum_map2(&gw, &xhat, |gw, xh| gw * xh) * inv_c;
            for ((dx, &gw), &xh) in dx.iter_mut().zip(&gw).zip(&xhat) {
                *dx = r * (gw - a - xh * b);
            }
        }
        acc
    }
}

impl CustomOp2 for NormOp {
    fn name(&self) -> &'static str {
        NormOp::name(self)
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.dispatch_fwd((s1, l1), (s2, l2), None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = self.dispatch_bwd(x, w, grad, false)?;
        Ok((Some(dx), Some(dw)))
    }
}

impl CustomOp3 for NormOp {
    fn name(&self) -> &'static str {
        NormOp::name(self)
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.dispatch_fwd((s1, l1), (s2, l2), Some((s3, l3)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, db) = self.dispatch_bwd(x, w, grad, true)?;
        Ok((Some(dx), Some(dw), db))
    }
}

fn op(rms: bool, eps: f64) -> NormOp {
    NormOp {
        rms,
        eps,
        stats: OnceLock::new(),
    }
}

/// Fused [`crate::ops::layer_norm`]. Errors unless every tensor is on the CPU with one dtype, f32
/// or f64, and `weight` (and `bias`) have `C` elements.
///
/// # Shapes
/// - `x`: `(..., C)`; `weight`, `bias`: `(C,)`; returns `(..., C)`.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, eps: f64) -> Result<Tensor> {
    let (x, w) = (x.contiguous()?, weight.contiguous()?);
    match bias {
        Some(b) => x.apply_op3(&w, &b.contiguous()?, op(false, eps)),
        None => x.apply_op2(&w, op(false, eps)),
    }
}

/// Fused [`crate::ops::rms_norm`]. Errors unless both tensors are on the CPU with one dtype, f32 or
/// f64, and `weight` has `C` elements.
///
/// # Shapes
/// - `x`: `(..., C)`; `weight`: `(C,)`; returns `(..., C)`.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    x.contiguous()?
        .apply_op2(&weight.contiguous()?, op(true, eps))
}
