//! The operations on the model's hot path, each with a backward pass.
//!
//! This file is the contract: every function here takes and returns candle tensors, works on any
//! device, and records a backward. On the CPU with f32 or f64 tensors they run fused kernels
//! (candle custom ops with a hand-written, multithreaded backward) from the sibling modules;
//! everywhere else (CUDA, bf16/f16) they run the *composed* reference versions in [`composed`],
//! built from candle primitives that each have a backward in candle's autograd. The fused kernels
//! are tested against the composed versions and against finite differences (`tests/ops_*.rs`);
//! [`fused`] exposes them directly. `tests/ops_bench.rs` measures one against the other.
//!
//! | op | fused kernel |
//! |---|---|
//! | [`linear`] | `x Wᵀ + b` as one product onto the bias; backward two products (transposes read through strides) and a column sum; f32 or bf16 operands ([`gemm`]) |
//! | [`layer_norm`], [`rms_norm`] | one pass each way; per-row mean / rstd saved for the backward |
//! | [`gelu`], [`silu`] | one element-wise pass each way (one `exp`, no `tanh`) |
//! | [`softmax_last_dim`], [`log_softmax_last_dim`] | row-wise; the backward uses only the output |
//! | [`cross_entropy`] | log-sum-exp per row, `(N, V)` log-probabilities never stored |
//! | [`causal_attention`] | tiled over query blocks; `(T, S)` scores never stored |
//!
//! Inputs may have any layout: a strided input is copied to a contiguous one before a fused
//! kernel runs (the copy is recorded, so gradients flow through it). Reductions run in an order
//! that depends only on shapes, so results are bitwise reproducible on a machine whatever the
//! thread count.
//!
//! We never call `candle_nn::ops::{layer_norm, rms_norm, softmax_last_dim}`: they record no backward
//! (DESIGN.md, "Silent gradient cut").

use candle_core::{DType, Result, Tensor};

mod activation;
mod attention;
pub mod composed;
mod cpu;
mod cross_entropy;
pub mod gemm;
mod linear;
mod norm;
mod softmax;

use cpu::fused_ok;
#[doc(hidden)]
pub use cpu::{limit_simd, Simd};
pub use gemm::MatmulPrecision;

/// The fused CPU kernels, callable directly (tests and benchmarks compare them with [`composed`]).
/// They take f32 or f64 CPU tensors and return an error for anything else; the functions in
/// [`crate::ops`] choose between them and [`composed`].
pub mod fused {
    pub use super::activation::{gelu, silu};
    pub use super::attention::{causal_attention, causal_attention_with};
    pub use super::cross_entropy::cross_entropy;
    pub use super::linear::linear;
    pub use super::norm::{layer_norm, rms_norm};
    pub use super::softmax::{log_softmax_last_dim, softmax_last_dim};
}

impl MatmulPrecision {
    /// The name used in configs and on the command line: `"f32"` or `"bf16"`.
    pub fn as_str(self) -> &'static str {
        match self {
            MatmulPrecision::F32 => "f32",
            MatmulPrecision::Bf16 => "bf16",
        }
    }
}

impl std::fmt::Display for MatmulPrecision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for MatmulPrecision {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "f32" => Ok(MatmulPrecision::F32),
            "bf16" => Ok(MatmulPrecision::Bf16),
            _ => Err(format!("unknown matmul precision {s:?}: use f32 or bf16")),
        }
    }
}

impl serde::Serialize for MatmulPrecision {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for MatmulPrecision {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Target id that contributes nothing to [`cross_entropy`] (prompt tokens in SFT, padding).
pub const IGNORE_INDEX: u32 = u32::MAX;

/// Whether `p` is a `(C,)` parameter for an input whose last dimension is `C`.
fn is_vec_of(p: &Tensor, x: &Tensor) -> bool {
    p.dims().len() == 1 && x.dims().last() == Some(&p.dims()[0])
}

/// A linear layer `y = x Wᵀ + b` over the last dimension, with every matrix product (forward and
/// backward) at precision `prec`: [`MatmulPrecision::Bf16`] rounds the operands to bf16 and
/// accumulates in f32, as bf16 autocast does, while the weights, the output and the gradients stay
/// f32. The composed fallback (non-CPU devices, other dtypes) rounds the operands the same way and
/// multiplies in the tensors' dtype, so both paths compute the same function.
///
/// # Shapes
/// - `x`: `(..., K)`; `weight`: `(M, K)`; `bias`: `(M,)`; returns `(..., M)`.
pub fn linear(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    prec: MatmulPrecision,
) -> Result<Tensor> {
    let dims = x.dims();
    let Some((&k, lead)) = dims.split_last() else {
        candle_core::bail!("linear of a scalar")
    };
    let rows: usize = lead.iter().product();
    let x2 = x.reshape((rows, k))?;
    let all_ok = match bias {
        Some(b) => fused_ok(&[&x2, weight, b]),
        None => fused_ok(&[&x2, weight]),
    };
    let y = if all_ok {
        linear::linear(&x2, weight, bias, prec)?
    } else {
        composed::linear(&x2, weight, bias, prec)?
    };
    let mut out = lead.to_vec();
    out.push(y.dim(1)?);
    y.reshape(out)
}

/// LayerNorm over the last dimension: `(x - mean) / sqrt(var + eps) * weight + bias`, with the
/// biased variance (as PyTorch).
///
/// # Shapes
/// - `x`: `(..., C)`; `weight`, `bias`: `(C,)`; returns `(..., C)`.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, eps: f64) -> Result<Tensor> {
    let params_ok = is_vec_of(weight, x) && bias.is_none_or(|b| is_vec_of(b, x));
    let all_ok = match bias {
        Some(b) => fused_ok(&[x, weight, b]),
        None => fused_ok(&[x, weight]),
    };
    if params_ok && all_ok {
        norm::layer_norm(x, weight, bias, eps)
    } else {
        composed::layer_norm(x, weight, bias, eps)
    }
}

/// RMSNorm over the last dimension: `x / sqrt(mean(x^2) + eps) * weight` (Llama).
///
/// # Shapes
/// - `x`: `(..., C)`; `weight`: `(C,)`; returns `(..., C)`.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    if is_vec_of(weight, x) && fused_ok(&[x, weight]) {
        norm::rms_norm(x, weight, eps)
    } else {
        composed::rms_norm(x, weight, eps)
    }
}

/// GELU, tanh approximation (GPT-2's `gelu_new`, PyTorch `approximate="tanh"`):
/// `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`.
///
/// # Shapes
/// - `x`: any shape; returns the same shape.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    if fused_ok(&[x]) {
        activation::gelu(x)
    } else {
        composed::gelu(x)
    }
}

/// SiLU `x * sigmoid(x)` (the gate of SwiGLU).
///
/// # Shapes
/// - `x`: any shape; returns the same shape.
pub fn silu(x: &Tensor) -> Result<Tensor> {
    if fused_ok(&[x]) {
        activation::silu(x)
    } else {
        composed::silu(x)
    }
}

/// Softmax over the last dimension, max-subtracted so that `softmax([1234, 0]) == [1, 0]`.
///
/// # Shapes
/// - `x`: `(..., V)`; returns `(..., V)`.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if fused_ok(&[x]) && x.rank() > 0 {
        softmax::softmax_last_dim(x)
    } else {
        composed::softmax_last_dim(x)
    }
}

/// Log-softmax over the last dimension.
///
/// # Shapes
/// - `x`: `(..., V)`; returns `(..., V)`.
pub fn log_softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if fused_ok(&[x]) && x.rank() > 0 {
        softmax::log_softmax_last_dim(x)
    } else {
        composed::log_softmax_last_dim(x)
    }
}

/// Mean next-token cross-entropy straight from logits, over the targets that are not
/// [`IGNORE_INDEX`]. Returns a scalar of the logits' dtype (f32 in training); 0, with a zero
/// gradient, when every target is ignored. A target `>= V` (other than [`IGNORE_INDEX`]) is an
/// error.
///
/// # Shapes
/// - `logits`: `(N, V)` f32; `targets`: `(N,)` u32; returns `()`.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let targets_ok = targets.dtype() == DType::U32 && targets.device().is_cpu();
    if fused_ok(&[logits]) && targets_ok && logits.rank() == 2 {
        cross_entropy::cross_entropy(logits, targets)
    } else {
        composed::cross_entropy(logits, targets)
    }
}

/// Causal scaled dot-product attention with grouped KV heads.
///
/// Query row `i` sits at absolute position `offset + i` and sees keys `0..=offset + i`; this is how
/// a KV-cached decode step attends to the whole cache. `n_head` must be a multiple of `n_kv_head`;
/// shapes that break the contract below are an error.
///
/// # Shapes
/// - `q`: `(B, H, T, D)`; `k`, `v`: `(B, Hkv, S, D)` with `S = offset + T`; returns `(B, H, T, D)`.
pub fn causal_attention(q: &Tensor, k: &Tensor, v: &Tensor, offset: usize) -> Result<Tensor> {
    if fused_ok(&[q, k, v]) && q.elem_count() > 0 {
        attention::causal_attention(q, k, v, offset)
    } else {
        composed::causal_attention(q, k, v, offset)
    }
}

/// [`causal_attention`] with its matrix products at `prec`. Under [`MatmulPrecision::Bf16`], every
/// product of the fused training kernel (`Q Kᵀ`, `P V` and the four of the backward) takes
/// bf16-rounded operands and accumulates in f32, as PyTorch's attention does on the bf16 tensors
/// of autocast; the KV-cached decode kernel and the composed version stay in full precision.
///
/// # Shapes
/// As [`causal_attention`].
pub fn causal_attention_with(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    offset: usize,
    prec: MatmulPrecision,
) -> Result<Tensor> {
    if fused_ok(&[q, k, v]) && q.elem_count() > 0 {
        attention::causal_attention_with(q, k, v, offset, prec)
    } else {
        composed::causal_attention(q, k, v, offset)
    }
}
