//! Fused CPU cross-entropy straight from logits: a max-subtracted log-sum-exp per row and the
//! negative log-probability of the target, averaged over the rows whose target is not
//! [`IGNORE_INDEX`]. The `(N, V)` log-probabilities are never materialised; the backward pass
//! recomputes `softmax` from the saved per-row log-sum-exp:
//! `dlogits = (softmax - onehot(target)) * grad / count` on kept rows and 0 on ignored rows.

use std::sync::OnceLock;

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::cpu::{max, output_vec, rows_per_task, simd_kernel, slice, sum_map, CpuView, Real};
use super::IGNORE_INDEX;

/// Saved by the forward pass: each row's log-sum-exp (0 for ignored rows) and the kept count.
struct Saved {
    lse: CpuStorage,
    count: usize,
}

struct CrossEntropyOp {
    saved: OnceLock<Saved>,
}

const NAME: &str = "cross_entropy";

/// Checks every target and returns how many are kept.
fn count_kept(targets: &[u32], v: usize) -> Result<usize> {
    let mut count = 0;
    for (row, &t) in targets.iter().enumerate() {
        if t == IGNORE_INDEX {
            continue;
        }
        if t as usize >= v {
            bail!("{NAME}: target {t} at row {row} is out of range for a vocabulary of {v}")
        }
        count += 1;
    }
    Ok(count)
}

impl CrossEntropyOp {
    fn fwd<T: Real>(
        &self,
        logits: (&CpuStorage, &Layout),
        targets: (&CpuStorage, &Layout),
    ) -> Result<(CpuStorage, Shape)> {
        let (n, v) = match logits.1.dims() {
            &[n, v] if v > 0 => (n, v),
            d => bail!("{NAME}: logits must be (N, V) with V > 0, got {d:?}"),
        };
        let xs = slice::<T>(logits.0, logits.1, NAME)?;
        let ts = slice::<u32>(targets.0, targets.1, NAME)?;
        if ts.len() != n {
            bail!("{NAME}: {} targets for {n} rows of logits", ts.len())
        }
        let count = count_kept(ts, v)?;
        let mut lse = vec![T::zero(); n];
        let rpt = rows_per_task(v);
        // Per-task sums of the kept rows' losses, in f64, added in task order (reproducible).
        let partials: Vec<f64> = lse
            .par_chunks_mut(rpt)
            .zip(xs.par_chunks(rpt * v).zip(ts.par_chunks(rpt)))
            .map(|(lse, (x, t))| loss_rows(lse, x, t, v))
            .collect();
        let loss = if count == 0 {
            0.0
        } else {
            partials.iter().sum::<f64>() / count as f64
        };
        let _ = self.saved.set(Saved {
            lse: T::to_cpu_storage_owned(lse),
            count,
        });
        Ok((
            T::to_cpu_storage_owned(vec![T::from_f64(loss)]),
            Shape::from(()),
        ))
    }

    fn bwd_t<T: Real>(&self, logits: &Tensor, targets: &Tensor, grad: &Tensor) -> Result<Tensor> {
        let (logits, targets) = (logits.contiguous()?, targets.contiguous()?);
        let (n, v) = logits.dims2()?;
        let g = grad
            .to_dtype(logits.dtype())?
            .flatten_all()?
            .to_vec1::<T>()?;
        let &[g] = g.as_slice() else {
            bail!(
                "{NAME}: backward got a grad of shape {:?}, want a scalar",
                grad.dims()
            )
        };
        let (xv, tv) = (CpuView::new(&logits, NAME)?, CpuView::new(&targets, NAME)?);
        let (xs, ts) = (xv.slice::<T>()?, tv.slice::<u32>()?);
        if ts.len() != n {
            bail!("{NAME}: {} targets for {n} rows of logits", ts.len())
        }
        let recomputed;
        let (lse, count): (&[T], usize) = match self.saved.get() {
            Some(s) => (T::cpu_storage_as_slice(&s.lse)?, s.count),
            None => {
                recomputed = recompute_lse(xs, ts, v);
                (&recomputed, count_kept(ts, v)?)
            }
        };
        if count == 0 {
            return Tensor::from_vec(vec![T::zero(); n * v], (n, v), logits.device());
        }
        let mut dx = output_vec(n * v);
        let scale = g / T::from_f64(count as f64);
        let rpt = rows_per_task(v);
        dx.par_chunks_mut(rpt * v)
            .zip(xs.par_chunks(rpt * v))
            .zip(ts.par_chunks(rpt).zip(lse.par_chunks(rpt)))
            .for_each(|((dx, x), (t, lse))| grad_rows(dx, x, t, lse, v, scale));
        Tensor::from_vec(dx, (n, v), logits.device())
    }
}

simd_kernel! {
    /// The forward for the rows of one task (rows of `v` logits): writes each kept row's
    /// log-sum-exp and returns the sum of the kept rows' losses.
    fn loss_rows<T: Real>(lse: &mut [T], x: &[T], t: &[u32], v: usize) -> f64 {
        let mut total = 0.0f64;
        for ((lse, x), &t) in lse.iter_mut().zip(x.chunks(v)).zip(t) {
            if t == IGNORE_INDEX {
                continue;
            }
            let max = max(x);
            let sum = sum_map(x, |v| (v - max).exp());
            let log_sum = sum.ln();
            *lse = max + log_sum;
            // -log p(t) = -((x_t - max) - ln sum)
            total += ((max - x[t as usize]) + log_sum).to_f64();
        }
        total
    }
}

simd_kernel! {
    /// The backward for the rows of one task: `dx = (softmax(x) - onehot(t)) scale`, zero rows
    /// for ignored targets.
    fn grad_rows<T: Real>(dx: &mut [T], x: &[T], t: &[u32], lse: &[T], v: usize, scale: T) {
        let rows = dx.chunks_mut(v).zip(x.chunks(v));
        for ((dx, x), (&t, &lse)) in rows.zip(t.iter().zip(lse)) {
            if t == IGNORE_INDEX {
                dx.fill(T::zero());
                continue;
            }
            for (dx, &x) in dx.iter_mut().zip(x) {
                *dx = (x - lse).exp() * scale;
            }
            dx[t as usize] -= scale;
        }
    }
}

/// Each row's log-sum-exp (0 for ignored rows), for a backward without saved statistics.
fn recompute_lse<T: Real>(xs: &[T], ts: &[u32], v: usize) -> Vec<T> {
    xs.par_chunks(v)
        .zip(ts.par_iter())
        .map(|(x, &t)| row_lse(x, t))
        .collect()
}

simd_kernel! {
    /// One row's log-sum-exp, 0 for an ignored row.
    fn row_lse<T: Real>(x: &[T], t: u32) -> T {
        if t == IGNORE_INDEX {
            return T::zero();
        }
        let max = max(x);
        max + sum_map(x, |v| (v - max).exp()).ln()
    }
}

impl CustomOp2 for CrossEntropyOp {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        if s2.dtype() != DType::U32 {
            bail!("{NAME}: targets must be u32, got {:?}", s2.dtype())
        }
        match s1.dtype() {
            DType::F32 => self.fwd::<f32>((s1, l1), (s2, l2)),
            DType::F64 => self.fwd::<f64>((s1, l1), (s2, l2)),
            dt => bail!("{NAME}: fused kernel supports f32 and f64 logits, got {dt:?}"),
        }
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dx = match logits.dtype() {
            DType::F32 => self.bwd_t::<f32>(logits, targets, grad)?,
            DType::F64 => self.bwd_t::<f64>(logits, targets, grad)?,
            dt => bail!("{NAME}: fused kernel supports f32 and f64 logits, got {dt:?}"),
        };
        Ok((Some(dx), None))
    }
}

/// Fused [`crate::ops::cross_entropy`]. Errors unless `logits` is an f32 or f64 CPU tensor and
/// `targets` a u32 CPU tensor, or when a target other than [`IGNORE_INDEX`] is `>= V`.
///
/// # Shapes
/// - `logits`: `(N, V)`; `targets`: `(N,)` u32; returns `()`.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    logits.contiguous()?.apply_op2(
        &targets.contiguous()?,
        CrossEntropyOp {
            saved: OnceLock::new(),
        },
    )
}
