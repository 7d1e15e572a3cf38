//! The composed reference implementations of the ops in [`crate::ops`].
//!
//! Every function here is built from candle primitives, each of which has a backward in candle's
//! autograd, so these work on any device and dtype and are the semantics the fused kernels are
//! tested against. [`crate::ops`] falls back to them where there is no fused kernel (non-CPU
//! devices, dtypes other than f32/f64). They are public so that tests and benchmarks can compare
//! against them; model code calls [`crate::ops`].

use candle_core::{DType, Result, Tensor, D};

use super::{MatmulPrecision, IGNORE_INDEX};

/// Composed [`crate::ops::linear`] on a 2-D input: `x.matmul(wᵀ) + b`, with both operands first
/// rounded to bf16 (and back to the tensors' dtype) for [`MatmulPrecision::Bf16`].
///
/// # Shapes
/// - `x`: `(N, K)`; `weight`: `(M, K)`; `bias`: `(M,)`; returns `(N, M)`.
pub fn linear(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    prec: MatmulPrecision,
) -> Result<Tensor> {
    let round = |t: &Tensor| match prec {
        MatmulPrecision::F32 => Ok(t.clone()),
        MatmulPrecision::Bf16 => t.to_dtype(DType::BF16)?.to_dtype(t.dtype()),
    };
    let y = round(x)?.matmul(&round(weight)?.t()?)?;
    match bias {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

/// Composed [`crate::ops::layer_norm`].
///
/// # Shapes
/// - `x`: `(..., C)`; `weight`, `bias`: `(C,)`; returns `(..., C)`.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, eps: f64) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    let xhat = xc.broadcast_div(&(var + eps)?.sqrt()?)?;
    let y = xhat.broadcast_mul(weight)?;
    match bias {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

/// Composed [`crate::ops::rms_norm`].
///
/// # Shapes
/// - `x`: `(..., C)`; `weight`: `(C,)`; returns `(..., C)`.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    x.broadcast_div(&(ms + eps)?.sqrt()?)?.broadcast_mul(weight)
}

/// Composed [`crate::ops::gelu`] (tanh approximation).
///
/// # Shapes
/// - `x`: any shape; returns the same shape.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    let c = (2.0f64 / std::f64::consts::PI).sqrt();
    let inner = ((x + (x.powf(3.0)? * 0.044715)?)? * c)?;
    (x * 0.5)?.mul(&(inner.tanh()? + 1.0)?)
}

/// Composed [`crate::ops::silu`].
///
/// # Shapes
/// - `x`: any shape; returns the same shape.
pub fn silu(x: &Tensor) -> Result<Tensor> {
    // sigmoid(x) = 1 / (1 + exp(-x)), composed so that it has a backward.
    let sig = (x.neg()?.exp()? + 1.0)?.recip()?;
    x.mul(&sig)
}

/// Composed [`crate::ops::softmax_last_dim`].
///
/// # Shapes
/// - `x`: `(..., V)`; returns `(..., V)`.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// Composed [`crate::ops::log_softmax_last_dim`].
///
/// # Shapes
/// - `x`: `(..., V)`; returns `(..., V)`.
pub fn log_softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let xs = x.broadcast_sub(&max)?;
    let lse = xs.exp()?.sum_keepdim(D::Minus1)?.log()?;
    xs.broadcast_sub(&lse)
}

/// Composed [`crate::ops::cross_entropy`]. The result has the dtype of `logits`.
///
/// # Shapes
/// - `logits`: `(N, V)`; `targets`: `(N,)` u32; returns `()`.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let (n, _v) = logits.dims2()?;
    let keep = targets.ne(IGNORE_INDEX)?; // (N,) u8
    let safe = keep.where_cond(targets, &targets.zeros_like()?)?;
    let logp = log_softmax_last_dim(logits)?;
    let picked = logp.gather(&safe.unsqueeze(1)?, 1)?.reshape(n)?; // (N,)
    let keep_f = keep.to_dtype(logits.dtype())?;
    let count = keep.to_dtype(DType::U32)?.sum_all()?.to_scalar::<u32>()?;
    // With every target ignored, keep_f is all zeros: the loss is 0 and the gradient a real zero
    // tensor (`picked * 0.0` would be pruned from the graph by candle, leaving no gradient).
    picked.mul(&keep_f)?.sum_all()? * (-1.0 / f64::from(count.max(1)))
}

/// Composed [`crate::ops::causal_attention`]: materialises the `(B, H, T, S)` score matrix.
///
/// # Shapes
/// - `q`: `(B, H, T, D)`; `k`, `v`: `(B, Hkv, S, D)` with `S = offset + T`; returns `(B, H, T, D)`.
pub fn causal_attention(q: &Tensor, k: &Tensor, v: &Tensor, offset: usize) -> Result<Tensor> {
    let (b, h, t, d) = q.dims4()?;
    let (kb, hkv, s, kd) = k.dims4()?;
    if kb != b || kd != d || v.dims() != k.dims() || hkv == 0 || h % hkv != 0 || s != offset + t {
        candle_core::bail!(
            "causal_attention: q {:?}, k {:?}, v {:?}, offset {offset}: need k = v = \
             (B, Hkv, offset + T, D) with H a multiple of Hkv",
            q.dims(),
            k.dims(),
            v.dims()
        )
    }
    let (k, v) = if hkv == h {
        (k.clone(), v.clone())
    } else {
        let rep = h / hkv;
        let expand = |x: &Tensor| -> Result<Tensor> {
            x.unsqueeze(2)?
                .expand((b, hkv, rep, s, d))?
                .reshape((b, h, s, d)) // (B, H, S, D)
        };
        (expand(k)?, expand(v)?)
    };
    let scale = 1.0 / (d as f64).sqrt();
    let att = (q.contiguous()?.matmul(&k.t()?.contiguous()?)? * scale)?; // (B, H, T, S)
    let mask: Vec<u8> = (0..t)
        .flat_map(|i| (0..s).map(move |j| u8::from(j > offset + i)))
        .collect();
    let mask = Tensor::from_vec(mask, (t, s), q.device())?.broadcast_as(att.shape())?;
    let neg = Tensor::new(f32::NEG_INFINITY, q.device())?
        .to_dtype(att.dtype())?
        .broadcast_as(att.shape())?;
    let att = mask.where_cond(&neg, &att)?;
    let att = softmax_last_dim(&att)?;
    att.matmul(&v.contiguous()?) // (B, H, T, D)
}
