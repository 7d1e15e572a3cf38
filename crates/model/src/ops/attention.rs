//! Fused CPU causal attention with grouped KV heads, forward and backward, tiled over blocks of
//! query rows (flash-attention style): the `(T, S)` score matrix is never materialised, only one
//! `(BLOCK, S_visible)` tile per worker. The forward saves each row's log-sum-exp; the backward
//! recomputes the probabilities from it.
//!
//! For one head, query block `Q_b` and the keys it can see (`K`, `V`, `S_b = offset + end of the
//! block`), with `scale = 1/sqrt(D)` and the causal mask (`j > offset + i` gets probability 0):
//!
//! ```text
//! forward:  P = softmax(scale Q_b K^T),  O_b = P V,  lse_i = log sum_j exp(scale q_i k_j)
//! backward: P = exp(scale Q_b K^T - lse),  dV += P^T dO_b,  dP = dO_b V^T,
//!           dS = P * (dP - rowsum(dO_b * O_b)),  dQ_b = scale dS K,  dK += scale dS^T Q_b
//! ```
//!
//! The backward runs one task per (batch, KV head), which owns that head's `dK`, `dV` and the
//! `dQ` of the query heads that share it, so no two tasks write the same memory and the sums are
//! in a fixed order (bitwise reproducible). The matrix products use the `gemm` crate.
//!
//! **Decode path.** A KV-cached step (`offset > 0`, at most [`DECODE_MAX_T`] new rows) runs a
//! second forward kernel instead: per query row, dot products against the visible keys, a
//! max-subtracted softmax, and a weighted sum of the values, one task per (batch, KV head) and on
//! the calling thread when the work is too small to pay for waking workers. It reads keys and
//! values through their strides, so the cache's views of its preallocated buffers are attended
//! to without a copy. Its backward is the tiled kernel's (it recomputes the statistics), so
//! gradients do not depend on which forward ran; the training forward (`offset = 0`) never takes
//! this path.

use std::sync::OnceLock;

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

mod decode;
use decode::DecodeOp;

use super::cpu::{max, simd_kernel, slice, sum_map, sum_map2, CpuView, MatRef, Real};
use super::gemm::{MatmulPrecision, ProductReal};

const NAME: &str = "causal_attention";
const DECODE_NAME: &str = "causal_attention_decode";
/// Query rows per tile.
const BLOCK: usize = 64;
/// Most new query rows for which a call with `offset > 0` takes the decode kernel (a longer chunk
/// is better served by the tiled one's matrix products).
const DECODE_MAX_T: usize = 16;
/// Multiply-adds (`B·H·T·S·D`) below which the decode kernel stays on the calling thread.
const DECODE_SERIAL_WORK: usize = 1 << 17;

/// `(B, H, Hkv, T, S, D)`.
#[derive(Clone, Copy)]
struct Dims {
    b: usize,
    h: usize,
    hkv: usize,
    t: usize,
    s: usize,
    d: usize,
}

impl Dims {
    fn of(q: &[usize], k: &[usize], v: &[usize], offset: usize) -> Result<Self> {
        let (&[b, h, t, d], &[kb, hkv, s, kd]) = (q, k) else {
            bail!("{NAME}: q {q:?} and k {k:?} must be 4-dimensional")
        };
        if kb != b || kd != d || v != k || hkv == 0 || h % hkv != 0 || s != offset + t {
            bail!(
                "{NAME}: q {q:?}, k {k:?}, v {v:?}, offset {offset}: need k = v = \
                 (B, Hkv, offset + T, D) with H a multiple of Hkv"
            )
        }
        if b * h * t * d == 0 {
            bail!("{NAME}: fused kernel needs non-empty tensors, got q {q:?}")
        }
        Ok(Self { b, h, hkv, t, s, d })
    }

    /// Query heads per KV head.
    fn rep(&self) -> usize {
        self.h / self.hkv
    }
}

struct AttentionOp {
    offset: usize,
    /// The precision of the matrix products (module docs).
    prec: MatmulPrecision,
    /// Each query row's log-sum-exp of its scaled scores, `(B, H, T)`.
    lse: OnceLock<CpuStorage>,
}

/// Rows `i0..i1` of a query block and the number of keys its last row can see.
fn blocks(t: usize, offset: usize) -> impl Iterator<Item = (usize, usize, usize)> {
    (0..t)
        .step_by(BLOCK)
        .map(move |i0| (i0, (i0 + BLOCK).min(t), offset + (i0 + BLOCK).min(t)))
}

impl AttentionOp {
    fn fwd<T: ProductReal>(
        &self,
        q: &[T],
        k: &[T],
        v: &[T],
        dims: Dims,
    ) -> Result<(Vec<T>, Vec<T>)> {
        let Dims { h, t, s, d, .. } = dims;
        let (rep, offset, prec) = (dims.rep(), self.offset, self.prec);
        let mut out = vec![T::zero(); dims.b * h * t * d];
        let mut lse = vec![T::zero(); dims.b * h * t];
        out.par_chunks_mut(t * d)
            .zip(lse.par_chunks_mut(t))
            .enumerate()
            .try_for_each(|(bh, (o, lse))| {
                let kv = (bh / h * dims.hkv + bh % h / rep) * s * d; // this head's K/V offset
                let q = &q[bh * t * d..][..t * d];
                let (k, v) = (&k[kv..][..s * d], &v[kv..][..s * d]);
                fwd_head(o, lse, q, k, v, dims, offset, prec)
            })?;
        Ok((out, lse))
    }

    /// Returns `(dq, dk, dv)`.
    fn bwd_t<T: ProductReal>(
        &self,
        (q, k, v): (&[T], &[T], &[T]),
        o: &[T],
        g: &[T],
        lse: &[T],
        dims: Dims,
    ) -> Result<(Vec<T>, Vec<T>, Vec<T>)> {
        let Dims { t, s, d, .. } = dims;
        let (rep, offset, prec) = (dims.rep(), self.offset, self.prec);
        let mut dq = vec![T::zero(); q.len()];
        let mut dk = vec![T::zero(); k.len()];
        let mut dv = vec![T::zero(); v.len()];
        dq.par_chunks_mut(rep * t * d)
            .zip(dk.par_chunks_mut(s * d).zip(dv.par_chunks_mut(s * d)))
            .enumerate()
            .try_for_each(|(group, (dq, (dk, dv)))| {
                bwd_group(
                    (dq, dk, dv),
                    group,
                    (q, k, v),
                    (o, g, lse),
                    dims,
                    offset,
                    prec,
                )
            })?;
        Ok((dq, dk, dv))
    }

    fn bwd_dispatch<T: ProductReal>(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dims = Dims::of(q.dims(), k.dims(), v.dims(), self.offset)?;
        let ts = [q, k, v, res, grad].map(|t| t.contiguous());
        let [q, k, v, res, grad] = ts;
        let (q, k, v, res, grad) = (q?, k?, v?, res?, grad?);
        if res.dims() != q.dims() || grad.dims() != q.dims() {
            bail!(
                "{NAME}: backward got output {:?}, grad {:?}",
                res.dims(),
                grad.dims()
            )
        }
        let views = [&q, &k, &v, &res, &grad].map(|t| CpuView::new(t, NAME));
        let [qv, kv, vv, ov, gv] = views;
        let (qv, kv, vv, ov, gv) = (qv?, kv?, vv?, ov?, gv?);
        let (qs, ks, vs) = (qv.slice::<T>()?, kv.slice::<T>()?, vv.slice::<T>()?);
        let (os, gs) = (ov.slice::<T>()?, gv.slice::<T>()?);
        let lse = match self.lse.get() {
            Some(l) => T::cpu_storage_as_slice(l)?.to_vec(),
            None => self.fwd(qs, ks, vs, dims)?.1,
        };
        if lse.len() != dims.b * dims.h * dims.t {
            bail!("{NAME}: saved statistics do not match q {:?}", q.dims())
        }
        let (dq, dk, dv) = self.bwd_t((qs, ks, vs), os, gs, &lse, dims)?;
        let dev = q.device();
        Ok((
            Some(Tensor::from_vec(dq, q.shape(), dev)?),
            Some(Tensor::from_vec(dk, k.shape(), dev)?),
            Some(Tensor::from_vec(dv, v.shape(), dev)?),
        ))
    }
}

simd_kernel! {
    /// The forward for one query head: `o` and `lse` are its output rows and log-sum-exps, `qh`
    /// its queries, `kh` and `vh` the keys and values of its KV head.
    fn fwd_head<T: ProductReal>(
        o: &mut [T],
        lse: &mut [T],
        qh: &[T],
        kh: &[T],
        vh: &[T],
        dims: Dims,
        offset: usize,
        prec: MatmulPrecision,
    ) -> Result<()> {
        let Dims { t, s, d, .. } = dims;
        let scale = T::from_f64(1.0 / (d as f64).sqrt());
        let mut p = vec![T::zero(); BLOCK.min(t) * s];
        for (i0, i1, sb) in blocks(t, offset) {
            let p = &mut p[..(i1 - i0) * sb];
            // Unscaled scores Q_b K^T; the scale is applied inside the exponential.
            let q_b = MatRef::rows(&qh[i0 * d..i1 * d], i1 - i0, d);
            let k_t = MatRef::transposed(&kh[..sb * d], d, sb);
            T::product(prec, p, q_b, k_t, false)?;
            for (r, row) in p.chunks_mut(sb).enumerate() {
                let (live, dead) = row.split_at_mut(offset + i0 + r + 1);
                let m = max(live);
                live.iter_mut().for_each(|x| *x = ((*x - m) * scale).exp());
                let sum = sum_map(live, |x| x);
                let inv = sum.recip();
                live.iter_mut().for_each(|x| *x *= inv);
                dead.fill(T::zero());
                lse[i0 + r] = m * scale + sum.ln();
            }
            let p_b = MatRef::rows(&*p, i1 - i0, sb);
            let v_b = MatRef::rows(&vh[..sb * d], sb, d);
            T::product(prec, &mut o[i0 * d..i1 * d], p_b, v_b, false)?;
        }
        Ok(())
    }
}

simd_kernel! {
    /// The backward for one (batch, KV head) `group` and the query heads that share it: writes
    /// their `dq` and this KV head's `dk`, `dv` (all zero-initialised).
    fn bwd_group<T: ProductReal>(
        grads: (&mut [T], &mut [T], &mut [T]),
        group: usize,
        qkv: (&[T], &[T], &[T]),
        saved: (&[T], &[T], &[T]),
        dims: Dims,
        offset: usize,
        prec: MatmulPrecision,
    ) -> Result<()> {
        let (dq, dk, dv) = grads;
        let ((q, k, v), (o, g, lse)) = (qkv, saved);
        let (rep, Dims { t, s, d, .. }) = (dims.rep(), dims);
        let scale = T::from_f64(1.0 / (d as f64).sqrt());
        // One (batch, KV head) and its `rep` query heads, which are contiguous in q.
        let (kh, vh) = (&k[group * s * d..][..s * d], &v[group * s * d..][..s * d]);
        let mut p = vec![T::zero(); BLOCK.min(t) * s];
        let mut ds = vec![T::zero(); BLOCK.min(t) * s];
        for (r_head, dq) in dq.chunks_mut(t * d).enumerate() {
            let head = group * rep + r_head;
            let span = head * t * d..(head + 1) * t * d;
            let (qh, oh, gh) = (&q[span.clone()], &o[span.clone()], &g[span]);
            let lse = &lse[head * t..][..t];
            for (i0, i1, sb) in blocks(t, offset) {
                let bq = i1 - i0;
                let (p, ds) = (&mut p[..bq * sb], &mut ds[..bq * sb]);
                let q_b = MatRef::rows(&qh[i0 * d..i1 * d], bq, d);
                let g_b = MatRef::rows(&gh[i0 * d..i1 * d], bq, d);
                // P = exp(scale Q_b K^T - lse), 0 where masked.
                let k_t = MatRef::transposed(&kh[..sb * d], d, sb);
                T::product(prec, p, q_b, k_t, false)?;
                for (r, row) in p.chunks_mut(sb).enumerate() {
                    let (live, dead) = row.split_at_mut(offset + i0 + r + 1);
                    let l = lse[i0 + r];
                    live.iter_mut().for_each(|x| *x = (*x * scale - l).exp());
                    dead.fill(T::zero());
                }
                // dV += P^T dO_b
                let p_t = MatRef::transposed(&*p, sb, bq);
                T::product(prec, &mut dv[..sb * d], p_t, g_b, true)?;
                // scale dS = scale P * (dO_b V^T - rowsum(dO_b * O_b))
                let v_t = MatRef::transposed(&vh[..sb * d], d, sb);
                T::product(prec, ds, g_b, v_t, false)?;
                for (r, (ds, p)) in ds.chunks_mut(sb).zip(p.chunks(sb)).enumerate() {
                    let i = i0 + r;
                    let di = sum_map2(&gh[i * d..][..d], &oh[i * d..][..d], |a, b| a * b);
                    for (ds, &p) in ds.iter_mut().zip(p) {
                        *ds = p * (*ds - di) * scale;
                    }
                }
                // dQ_b = (scale dS) K;  dK += (scale dS)^T Q_b
                let ds_b = MatRef::rows(&*ds, bq, sb);
                let k_b = MatRef::rows(&kh[..sb * d], sb, d);
                T::product(prec, &mut dq[i0 * d..i1 * d], ds_b, k_b, false)?;
                let ds_t = MatRef::transposed(&*ds, sb, bq);
                T::product(prec, &mut dk[..sb * d], ds_t, q_b, true)?;
            }
        }
        Ok(())
    }
}

impl CustomOp3 for AttentionOp {
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
        let dims = Dims::of(l1.dims(), l2.dims(), l3.dims(), self.offset)?;
        fn run<T: ProductReal>(
            op: &AttentionOp,
            (s1, l1, s2, l2, s3, l3): (
                &CpuStorage,
                &Layout,
                &CpuStorage,
                &Layout,
                &CpuStorage,
                &Layout,
            ),
            dims: Dims,
        ) -> Result<(CpuStorage, Shape)> {
            let (q, k, v) = (
                slice::<T>(s1, l1, NAME)?,
                slice::<T>(s2, l2, NAME)?,
                slice::<T>(s3, l3, NAME)?,
            );
            let (out, lse) = op.fwd(q, k, v, dims)?;
            let _ = op.lse.set(T::to_cpu_storage_owned(lse));
            Ok((T::to_cpu_storage_owned(out), l1.shape().clone()))
        }
        let args = (s1, l1, s2, l2, s3, l3);
        match s1.dtype() {
            DType::F32 => run::<f32>(self, args, dims),
            DType::F64 => run::<f64>(self, args, dims),
            dt => bail!("{NAME}: fused kernel supports f32 and f64, got {dt:?}"),
        }
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        match q.dtype() {
            DType::F32 => self.bwd_dispatch::<f32>(q, k, v, res, grad),
            DType::F64 => self.bwd_dispatch::<f64>(q, k, v, res, grad),
            dt => bail!("{NAME}: fused kernel supports f32 and f64, got {dt:?}"),
        }
    }
}

/// Fused [`crate::ops::causal_attention`]: the decode kernel for a KV-cached step of at most
/// [`DECODE_MAX_T`] rows (`offset > 0`; keys and values may be strided views), the tiled kernel
/// otherwise. Errors unless `q`, `k`, `v` are non-empty CPU tensors of one dtype, f32 or f64,
/// with the shapes below.
///
/// # Shapes
/// - `q`: `(B, H, T, D)`; `k`, `v`: `(B, Hkv, S, D)` with `S = offset + T`; returns `(B, H, T, D)`.
pub fn causal_attention(q: &Tensor, k: &Tensor, v: &Tensor, offset: usize) -> Result<Tensor> {
    causal_attention_with(q, k, v, offset, MatmulPrecision::F32)
}

/// [`causal_attention`] with the tiled kernel's matrix products at `prec` (the decode kernel
/// always computes in full precision).
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
    let dims = Dims::of(q.dims(), k.dims(), v.dims(), offset)?;
    if offset > 0 && dims.t <= DECODE_MAX_T {
        let rows = |x: &Tensor| match x.stride().last() {
            Some(1) => Ok(x.clone()),
            _ => x.contiguous(),
        };
        return q
            .contiguous()?
            .apply_op3(&rows(k)?, &rows(v)?, DecodeOp { offset });
    }
    q.contiguous()?.apply_op3(
        &k.contiguous()?,
        &v.contiguous()?,
        AttentionOp {
            offset,
            prec,
            lse: OnceLock::new(),
        },
    )
}
