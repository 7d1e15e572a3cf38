//! Fused CPU activations: GELU (tanh approximation) and SiLU, each one element-wise pass forward
//! and one backward (`dx = g * f'(x)`), instead of the chain of about ten element-wise ops (and as
//! many temporaries) that the composed versions record.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::cpu::{output_vec, simd_kernel, slice, CpuView, Real, ELEMS_PER_TASK};

/// `sqrt(2 / pi)`.
const GELU_C: f64 = 0.797_884_560_802_865_4;
/// The cubic coefficient of the tanh approximation.
const GELU_A: f64 = 0.044715;

#[derive(Clone, Copy)]
enum Act {
    Gelu,
    Silu,
}

/// `(f(x), f'(x))` for `f(x) = x sigmoid(z(x))`, given `z` and `dz/dx`: with `e = exp(-z)`,
/// `s = 1 / (1 + e)`, `f'(x) = s + x s (1 - s) dz/dx`, where `s (1 - s) = 1 / (2 + e + 1/e)` is
/// accurate at both tails and exactly 0 (not NaN) when `e` is 0 or infinite. One `exp` per element
/// and no `tanh`.
#[inline(always)]
fn x_sigmoid<T: Real>(x: T, z: T, dz: T) -> (T, T) {
    let e = (-z).exp();
    let s = (T::one() + e).recip();
    let s1s = (T::from_f64(2.0) + e + e.recip()).recip();
    // x dz overflows for |x| > 1e12 (GELU) while s1s is 0 there: keep the product 0.
    let tail = if s1s > T::zero() {
        x * dz * s1s
    } else {
        T::zero()
    };
    (x * s, s + tail)
}

/// GELU: `(1 + tanh u) / 2 = sigmoid(2u)` with `u = sqrt(2/pi) (x + 0.044715 x^3)`.
#[inline(always)]
fn gelu_eval<T: Real>(x: T) -> (T, T) {
    let (c, a) = (T::from_f64(2.0 * GELU_C), T::from_f64(GELU_A));
    let x2 = x * x;
    let z = c * (x + a * x2 * x);
    let dz = c * (T::one() + T::from_f64(3.0) * a * x2);
    x_sigmoid(x, z, dz)
}

/// SiLU: `x sigmoid(x)`.
#[inline(always)]
fn silu_eval<T: Real>(x: T) -> (T, T) {
    x_sigmoid(x, x, T::one())
}

struct ActOp(Act);

/// `y = f(x)` element-wise, in parallel.
fn map<T: Real>(xs: &[T], f: impl Fn(T) -> T + Sync) -> Vec<T> {
    let mut y = output_vec(xs.len());
    y.par_chunks_mut(ELEMS_PER_TASK)
        .zip(xs.par_chunks(ELEMS_PER_TASK))
        .for_each(|(y, x)| map_chunk(y, x, &f));
    y
}

simd_kernel! {
    fn map_chunk<T: Real>(y: &mut [T], x: &[T], f: &impl Fn(T) -> T) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y = f(x);
        }
    }
}

/// `dx = g * f'(x)` element-wise, in parallel.
fn map_grad<T: Real>(xs: &[T], gs: &[T], df: impl Fn(T) -> T + Sync) -> Vec<T> {
    let mut dx = output_vec(xs.len());
    dx.par_chunks_mut(ELEMS_PER_TASK)
        .zip(
            xs.par_chunks(ELEMS_PER_TASK)
                .zip(gs.par_chunks(ELEMS_PER_TASK)),
        )
        .for_each(|(dx, (x, g))| map_grad_chunk(dx, x, g, &df));
    dx
}

simd_kernel! {
    fn map_grad_chunk<T: Real>(dx: &mut [T], x: &[T], g: &[T], df: &impl Fn(T) -> T) {
        for ((dx, &x), &g) in dx.iter_mut().zip(x).zip(g) {
            *dx = g * df(x);
        }
    }
}

impl ActOp {
    fn fwd<T: Real>(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let xs = slice::<T>(s, l, self.name())?;
        // One loop per activation (not a match per element), so each one vectorises.
        let y = match self.0 {
            Act::Gelu => map(xs, |x| gelu_eval(x).0),
            Act::Silu => map(xs, |x| silu_eval(x).0),
        };
        Ok((T::to_cpu_storage_owned(y), l.shape().clone()))
    }

    fn bwd_t<T: Real>(&self, x: &Tensor, grad: &Tensor) -> Result<Tensor> {
        let name = self.name();
        let (x, grad) = (x.contiguous()?, grad.contiguous()?);
        let (xv, gv) = (CpuView::new(&x, name)?, CpuView::new(&grad, name)?);
        let (xs, gs) = (xv.slice::<T>()?, gv.slice::<T>()?);
        if xs.len() != gs.len() {
            bail!(
                "{name}: backward got grad {:?} for input {:?}",
                grad.dims(),
                x.dims()
            )
        }
        let dx = match self.0 {
            Act::Gelu => map_grad(xs, gs, |x| gelu_eval(x).1),
            Act::Silu => map_grad(xs, gs, |x| silu_eval(x).1),
        };
        Tensor::from_vec(dx, x.shape(), x.device())
    }
}

impl CustomOp1 for ActOp {
    fn name(&self) -> &'static str {
        match self.0 {
            Act::Gelu => "gelu",
            Act::Silu => "silu",
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

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let dx = match arg.dtype() {
            DType::F32 => self.bwd_t::<f32>(arg, grad)?,
            DType::F64 => self.bwd_t::<f64>(arg, grad)?,
            dt => bail!(
                "{}: fused kernel supports f32 and f64, got {dt:?}",
                self.name()
            ),
        };
        Ok(Some(dx))
    }
}

/// Fused [`crate::ops::gelu`] (tanh approximation). Errors unless `x` is an f32 or f64 CPU tensor.
///
/// # Shapes
/// - `x`: any shape; returns the same shape.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(ActOp(Act::Gelu))
}

/// Fused [`crate::ops::silu`]. Errors unless `x` is an f32 or f64 CPU tensor.
///
/// # Shapes
/// - `x`: any shape; returns the same shape.
pub fn silu(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(ActOp(Act::Silu))
}
