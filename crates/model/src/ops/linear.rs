//! The fused CPU linear layer `y = x Wᵀ + b`: one matrix product forward with the bias written
//! first and the product accumulated onto it, and a backward of two products and a column sum.
//!
//! candle's composed version (`x.matmul(&w.t())` then `broadcast_add`) costs, besides the three
//! products: a broadcast add forward, and backward a transposed copy of `dW`, a `sum_keepdim` over
//! the rows for `db` (single-threaded in candle), and a separate tensor for every intermediate.
//! Here the products read the transposes through strides, so nothing is copied, and every product
//! runs at the precision the caller picks ([`MatmulPrecision`]): `Bf16` rounds both operands of
//! each of the three products to bf16 and accumulates in f32, which is what PyTorch's bf16
//! autocast does to `F.linear` (its weights, like ours, stay f32).
//!
//! The backward, for `g = dL/dy` of shape `(N, M)`:
//! - `dx = g W` — `(N, M) (M, K)`;
//! - `dW = gᵀ x` — `(M, N) (N, K)`, `gᵀ` read through strides;
//! - `db = Σ_rows g` — partial sums per task of rows, added in task order (reproducible).

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::cpu::{output_vec, rows_per_task, slice, CpuView, MatRef, Real};
use super::gemm::{MatmulPrecision, ProductReal};

/// `y = x Wᵀ (+ b)` for a 2-D `x`.
struct LinearOp {
    prec: MatmulPrecision,
}

const NAME: &str = "linear";

/// Checks `x: (N, K)`, `w: (M, K)` and `b: (M,)`; returns `(N, K, M)`.
fn dims(x: &[usize], w: &[usize], b: Option<&[usize]>) -> Result<(usize, usize, usize)> {
    let (&[n, k], &[m, kw]) = (x, w) else {
        bail!("{NAME}: need x (N, K) and weight (M, K), got {x:?} and {w:?}")
    };
    if k != kw || b.is_some_and(|b| b != [m]) {
        bail!("{NAME}: x {x:?}, weight {w:?} and bias {b:?} do not fit together")
    }
    Ok((n, k, m))
}

impl LinearOp {
    fn fwd<T: ProductReal>(
        &self,
        x: (&CpuStorage, &Layout),
        w: (&CpuStorage, &Layout),
        b: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, k, m) = dims(x.1.dims(), w.1.dims(), b.map(|b| b.1.dims()))?;
        let xs = slice::<T>(x.0, x.1, NAME)?;
        let ws = slice::<T>(w.0, w.1, NAME)?;
        let (x, wt) = (MatRef::rows(xs, n, k), MatRef::transposed(ws, k, m));
        let y = match b {
            Some((s, l)) => {
                let bs = slice::<T>(s, l, NAME)?;
                let mut y = output_vec(n * m);
                y.par_chunks_mut(rows_per_task(m) * m)
                    .for_each(|rows| rows.chunks_mut(m).for_each(|r| r.copy_from_slice(bs)));
                T::product(self.prec, &mut y, x, wt, true)?;
                y
            }
            None => product(self.prec, x, wt)?,
        };
        Ok((T::to_cpu_storage_owned(y), Shape::from((n, m))))
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
            dt => bail!("{NAME}: fused kernel supports f32 and f64, got {dt:?}"),
        }
    }

    /// Returns `(dx, dW, db)`; `db` only when `with_bias`.
    fn bwd<T: ProductReal>(
        &self,
        x: &Tensor,
        w: &Tensor,
        grad: &Tensor,
        with_bias: bool,
    ) -> Result<(Tensor, Tensor, Option<Tensor>)> {
        let (n, k, m) = dims(x.dims(), w.dims(), None)?;
        if grad.dims() != [n, m] {
            bail!(
                "{NAME}: backward got grad {:?} for output ({n}, {m})",
                grad.dims()
            )
        }
        let (x, w, grad) = (x.contiguous()?, w.contiguous()?, grad.contiguous()?);
        let (xv, wv, gv) = (
            CpuView::new(&x, NAME)?,
            CpuView::new(&w, NAME)?,
            CpuView::new(&grad, NAME)?,
        );
        let (xs, ws, gs) = (xv.slice::<T>()?, wv.slice::<T>()?, gv.slice::<T>()?);
        let dx = product(self.prec, MatRef::rows(gs, n, m), MatRef::rows(ws, m, k))?;
        let dw = product(
            self.prec,
            MatRef::transposed(gs, m, n),
            MatRef::rows(xs, n, k),
        )?;
        let dev = x.device();
        let db = if with_bias {
            Some(Tensor::from_vec(column_sums(gs, m), m, dev)?)
        } else {
            None
        };
        Ok((
            Tensor::from_vec(dx, (n, k), dev)?,
            Tensor::from_vec(dw, (m, k), dev)?,
            db,
        ))
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
            dt => bail!("{NAME}: fused kernel supports f32 and f64, got {dt:?}"),
        }
    }
}

/// `A·B` into a new row-major vector. The product writes every element when the inner dimension
/// is at least 1, so the vector is only zero-filled when it is 0.
fn product<T: ProductReal>(
    prec: MatmulPrecision,
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
) -> Result<Vec<T>> {
    let len = a.rows * b.cols;
    let mut c = if a.cols > 0 {
        output_vec(len)
    } else {
        vec![T::zero(); len]
    };
    T::product(prec, &mut c, a, b, false)?;
    Ok(c)
}

/// Sums of the columns of the row-major `(rows, m)` matrix `g`: per-task partial sums over blocks
/// of rows, added in task order, so the result depends only on the shape.
fn column_sums<T: Real>(g: &[T], m: usize) -> Vec<T> {
    let rpt = rows_per_task(m);
    let partials: Vec<Vec<T>> = g
        .par_chunks(rpt * m)
        .map(|rows| {
            let mut acc = vec![T::zero(); m];
            for row in rows.chunks(m) {
                for (a, &v) in acc.iter_mut().zip(row) {
                    *a += v;
                }
            }
            acc
        })
        .collect();
    let mut total = vec![T::zero(); m];
    for p in &partials {
        for (t, &v) in total.iter_mut().zip(p) {
            *t += v;
        }
    }
    total
}

impl CustomOp2 for LinearOp {
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

impl CustomOp3 for LinearOp {
    fn name(&self) -> &'static str {
        NAME
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

/// Fused [`crate::ops::linear`] on a 2-D input. Errors unless every tensor is on the CPU with one
/// dtype, f32 or f64, and the shapes fit.
///
/// # Shapes
/// - `x`: `(N, K)`; `weight`: `(M, K)`; `bias`: `(M,)`; returns `(N, M)`.
pub fn linear(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    prec: MatmulPrecision,
) -> Result<Tensor> {
    let (x, w) = (x.contiguous()?, weight.contiguous()?);
    let op = LinearOp { prec };
    match bias {
        Some(b) => x.apply_op3(&w, &b.contiguous()?, op),
        None => x.apply_op2(&w, op),
    }
}
