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
//! The scale is applied inside the exponentials (and folded into `dS`), so the products are plain
//! `A·B`: the `gemm` crate's in f32 ([`MatmulPrecision::F32`]), our AVX512_BF16 kernel on
//! bf16-rounded operands under [`MatmulPrecision::Bf16`] (what autocast's attention does).
//!
//! **Layout.** `q`, `k`, `v` are `(B, H, T, D)`-shaped but read through their strides (rows of `D`
//! contiguous elements, [`StridedRows`]), so the usual transposed view of a projection's
//! `(B, T, H, D)` output is read without a copy. The kernel writes its output, and the backward
//! `dq`, `dk`, `dv`, in `(B, T, H, D)` order and returns `(B, H, T, D)` views of them, so the
//! transpose back before the output projection is free too. Each task computes one head into a
//! contiguous scratch buffer and scatters its rows (`H · D` apart) into the shared output.
//!
//! The forward runs one task per (batch, head). The backward runs one task per (batch, KV head),
//! which owns that head's `dK`, `dV` and the `dQ` of the query heads that share it, so no two tasks
//! write the same memory and the sums are in a fixed order (bitwise reproducible).
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

use super::cpu::{max, output_vec, simd_kernel, slice, sum_map, sum_map2, CpuView, MatRef, Real};
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

/// Which dimensions of a 4-D tensor hold the heads and the positions.
#[derive(Clone, Copy)]
enum Order {
    /// `(B, H, T, D)`: the shape of the op's inputs (often transposed views of `(B, T, H, D)`).
    Bhtd,
    /// `(B, T, H, D)`: the tiled kernel's output and its gradient.
    Bthd,
}

/// Rows of `D` contiguous elements of a 4-D tensor, addressed by (batch, head, position) through
/// the tensor's layout, whatever its other strides: views of the KV cache's buffers, or the
/// projections' `(B, T, H, D)` outputs seen as `(B, H, T, D)`, are read without a copy.
struct StridedRows<'a, T> {
    data: &'a [T],
    start: usize,
    /// Strides of the batch, head and position dimensions.
    stride: [usize; 3],
    d: usize,
}

impl<'a, T: Real> StridedRows<'a, T> {
    fn new(storage: &'a CpuStorage, layout: &Layout, order: Order, op: &str) -> Result<Self> {
        let (&[n0, n1, n2, d], &[s0, s1, s2, sd]) = (layout.dims(), layout.stride()) else {
            bail!("{op}: attention inputs must be 4-dimensional")
        };
        if sd != 1 && d > 1 {
            bail!("{op}: the last dimension must be contiguous, got strides {s0}, {s1}, {s2}, {sd}")
        }
        if n0 * n1 * n2 * d == 0 {
            bail!(
                "{op}: fused kernel needs non-empty tensors, got {:?}",
                layout.dims()
            )
        }
        let data = storage.as_slice::<T>()?;
        let start = layout.start_offset();
        let last = start + (n0 - 1) * s0 + (n1 - 1) * s1 + (n2 - 1) * s2 + d;
        if last > data.len() {
            bail!(
                "{op}: layout reaches element {last} of a storage of {}",
                data.len()
            )
        }
        let stride = match order {
            Order::Bhtd => [s0, s1, s2],
            Order::Bthd => [s0, s2, s1],
        };
        Ok(Self {
            data,
            start,
            stride,
            d,
        })
    }

    /// Position `j` of head `h` of batch row `b`: `D` elements.
    #[inline(always)]
    fn row(&self, b: usize, h: usize, j: usize) -> &'a [T] {
        let [sb, sh, ss] = self.stride;
        &self.data[self.start + b * sb + h * sh + j * ss..][..self.d]
    }

    /// Positions `0..rows` of head `h` of batch row `b`, as a `rows x D` matrix.
    fn head(&self, b: usize, h: usize, rows: usize) -> MatRef<'a, T> {
        let [sb, sh, ss] = self.stride;
        MatRef {
            data: &self.data[self.start + b * sb + h * sh..],
            rows,
            cols: self.d,
            rs: ss,
            cs: 1,
        }
    }
}

/// The base of an output that parallel tasks fill in disjoint rows of: handed to the tasks as a
/// raw pointer, since their rows interleave (one head's rows are `H · D` apart) and no task may
/// hold a `&mut` to memory another one writes.
struct SharedOut<T>(*mut T);
// SAFETY: the tasks given a `SharedOut` write disjoint elements and nothing reads the buffer until
// they have all finished.
unsafe impl<T> Send for SharedOut<T> {}
unsafe impl<T> Sync for SharedOut<T> {}

impl<T: Copy> SharedOut<T> {
    /// Copies the rows of `src` (`D` elements each) to rows `0, 1, ...` of the output, the first
    /// at element `first`, `stride` apart.
    ///
    /// # Safety
    /// Every written element lies inside the output buffer, and no other task writes it.
    unsafe fn scatter_rows(&self, src: &[T], d: usize, first: usize, stride: usize) {
        for (i, row) in src.chunks(d).enumerate() {
            // SAFETY: forwarded from the caller.
            unsafe {
                std::ptr::copy_nonoverlapping(row.as_ptr(), self.0.add(first + i * stride), d)
            };
        }
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
    /// Returns the output in `(B, T, H, D)` order and the log-sum-exps `(B, H, T)`.
    fn fwd<T: ProductReal>(
        &self,
        (q, k, v): (&StridedRows<T>, &StridedRows<T>, &StridedRows<T>),
        dims: Dims,
    ) -> Result<(Vec<T>, Vec<T>)> {
        let Dims { b, h, t, s, d, .. } = dims;
        let (rep, offset, prec) = (dims.rep(), self.offset, self.prec);
        let mut out = output_vec(b * t * h * d);
        let mut lse = output_vec(b * h * t);
        let shared = SharedOut(out.as_mut_ptr());
        lse.par_chunks_mut(t)
            .enumerate()
            .try_for_each(|(bh, lse)| {
                let (bi, hi) = (bh / h, bh % h);
                let mut o = output_vec(t * d);
                let (kh, vh) = (k.head(bi, hi / rep, s), v.head(bi, hi / rep, s));
                fwd_head(&mut o, lse, q.head(bi, hi, t), kh, vh, dims, (offset, prec))?;
                // SAFETY: row i of this head is element ((bi·T + i)·H + hi)·D of the
                // (B, T, H, D) output, inside it, and written by this task alone.
                unsafe { shared.scatter_rows(&o, d, (bi * t * h + hi) * d, h * d) };
                Ok::<_, candle_core::Error>(())
            })?;
        Ok((out, lse))
    }

    /// Returns `(dq, dk, dv)` in `(B, T, H, D)` and `(B, S, Hkv, D)` order.
    fn bwd_t<T: ProductReal>(
        &self,
        qkv: (&StridedRows<T>, &StridedRows<T>, &StridedRows<T>),
        (o, g): (&StridedRows<T>, &StridedRows<T>),
        lse: &[T],
        dims: Dims,
    ) -> Result<(Vec<T>, Vec<T>, Vec<T>)> {
        let Dims { b, h, hkv, t, s, d } = dims;
        let (offset, prec) = (self.offset, self.prec);
        let mut dq = output_vec(b * t * h * d);
        let mut dk = output_vec(b * s * hkv * d);
        let mut dv = output_vec(b * s * hkv * d);
        let shared = (
            SharedOut(dq.as_mut_ptr()),
            SharedOut(dk.as_mut_ptr()),
            SharedOut(dv.as_mut_ptr()),
        );
        (0..b * hkv).into_par_iter().try_for_each(|group| {
            let (bi, hk) = (group / hkv, group % hkv);
            let at = (bi, hk, hkv);
            bwd_group(&shared, at, qkv, (o, g), lse, dims, (offset, prec))
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
        let Dims { b, h, hkv, t, s, d } = dims;
        if res.dims() != [b, t, h, d] || grad.dims() != [b, t, h, d] {
            bail!(
                "{NAME}: backward got output {:?}, grad {:?}",
                res.dims(),
                grad.dims()
            )
        }
        let views = [q, k, v, res, grad].map(|t| CpuView::new(t, NAME));
        let [qv, kv, vv, ov, gv] = views;
        let (qv, kv, vv, ov, gv) = (qv?, kv?, vv?, ov?, gv?);
        fn rows<'a, T: Real>(view: &'a CpuView<'_>, order: Order) -> Result<StridedRows<'a, T>> {
            let (storage, layout) = view.storage()?;
            StridedRows::new(storage, layout, order, NAME)
        }
        let (qs, ks, vs) = (
            rows(&qv, Order::Bhtd)?,
            rows(&kv, Order::Bhtd)?,
            rows(&vv, Order::Bhtd)?,
        );
        let (os, gs) = (rows(&ov, Order::Bthd)?, rows(&gv, Order::Bthd)?);
        let recomputed;
        let lse: &[T] = match self.lse.get() {
            Some(l) => T::cpu_storage_as_slice(l)?,
            None => {
                recomputed = self.fwd((&qs, &ks, &vs), dims)?.1;
                &recomputed
            }
        };
        if lse.len() != b * h * t {
            bail!("{NAME}: saved statistics do not match q {:?}", q.dims())
        }
        let (dq, dk, dv) = self.bwd_t((&qs, &ks, &vs), (&os, &gs), lse, dims)?;
        // Written in (B, T, H, D) order; handed back as (B, H, T, D) views.
        let dev = q.device();
        let grad = |x: Vec<T>, n: usize, heads: usize| -> Result<Tensor> {
            Tensor::from_vec(x, (b, n, heads, d), dev)?.transpose(1, 2)
        };
        Ok((
            Some(grad(dq, t, h)?),
            Some(grad(dk, s, hkv)?),
            Some(grad(dv, s, hkv)?),
        ))
    }
}

simd_kernel! {
    /// The forward for one query head: `o` (contiguous `T x D`) and `lse` receive its output
    /// rows and log-sum-exps; `qh` are its queries, `kh` and `vh` the keys and values of its KV
    /// head; `how` is the query offset and the precision of the products.
    fn fwd_head<T: ProductReal>(
        o: &mut [T],
        lse: &mut [T],
        qh: MatRef<'_, T>,
        kh: MatRef<'_, T>,
        vh: MatRef<'_, T>,
        dims: Dims,
        how: (usize, MatmulPrecision),
    ) -> Result<()> {
        let (Dims { t, s, d, .. }, (offset, prec)) = (dims, how);
        let scale = T::from_f64(1.0 / (d as f64).sqrt());
        let mut p = output_vec(BLOCK.min(t) * s);
        for (i0, i1, sb) in blocks(t, offset) {
            let p = &mut p[..(i1 - i0) * sb];
            // Unscaled scores Q_b K^T; the scale is applied inside the exponential.
            let q_b = qh.row_block(i0, i1);
            T::product(prec, p, q_b, kh.row_block(0, sb).t(), false)?;
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
            T::product(prec, &mut o[i0 * d..i1 * d], p_b, vh.row_block(0, sb), false)?;
        }
        Ok(())
    }
}

simd_kernel! {
    /// The backward for one (batch row, KV head) group `(bi, hk, Hkv)` and the query heads that
    /// share it: writes their rows of `dq` and this KV head's rows of `dk` and `dv`
    /// (`shared`, in `(B, T, H, D)` and `(B, S, Hkv, D)` order), which no other group writes;
    /// `how` is the query offset and the precision of the products.
    fn bwd_group<T: ProductReal>(
        shared: &(SharedOut<T>, SharedOut<T>, SharedOut<T>),
        at: (usize, usize, usize),
        qkv: (&StridedRows<'_, T>, &StridedRows<'_, T>, &StridedRows<'_, T>),
        og: (&StridedRows<'_, T>, &StridedRows<'_, T>),
        lse: &[T],
        dims: Dims,
        how: (usize, MatmulPrecision),
    ) -> Result<()> {
        let (offset, prec) = how;
        let ((bi, hk, hkv), (q, k, v), (o, g)) = (at, qkv, og);
        let (rep, Dims { h, t, s, d, .. }) = (dims.rep(), dims);
        let scale = T::from_f64(1.0 / (d as f64).sqrt());
        let (kh, vh) = (k.head(bi, hk, s), v.head(bi, hk, s));
        let (mut dk, mut dv) = (vec![T::zero(); s * d], vec![T::zero(); s * d]);
        let mut dq = output_vec(t * d);
        let mut p = output_vec(BLOCK.min(t) * s);
        let mut ds = output_vec(BLOCK.min(t) * s);
        for head in hk * rep..(hk + 1) * rep {
            let (qh, gh) = (q.head(bi, head, t), g.head(bi, head, t));
            let lse = &lse[(bi * h + head) * t..][..t];
            for (i0, i1, sb) in blocks(t, offset) {
                let bq = i1 - i0;
                let (p, ds) = (&mut p[..bq * sb], &mut ds[..bq * sb]);
                let (q_b, g_b) = (qh.row_block(i0, i1), gh.row_block(i0, i1));
                // P = exp(scale Q_b K^T - lse), 0 where masked.
                T::product(prec, p, q_b, kh.row_block(0, sb).t(), false)?;
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
                T::product(prec, ds, g_b, vh.row_block(0, sb).t(), false)?;
                for (r, (ds, p)) in ds.chunks_mut(sb).zip(p.chunks(sb)).enumerate() {
                    let i = i0 + r;
                    let di = sum_map2(g.row(bi, head, i), o.row(bi, head, i), |a, b| a * b);
                    for (ds, &p) in ds.iter_mut().zip(p) {
                        *ds = p * (*ds - di) * scale;
                    }
                }
                // dQ_b = (scale dS) K;  dK += (scale dS)^T Q_b
                let ds_b = MatRef::rows(&*ds, bq, sb);
                T::product(prec, &mut dq[i0 * d..i1 * d], ds_b, kh.row_block(0, sb), false)?;
                let ds_t = MatRef::transposed(&*ds, sb, bq);
                T::product(prec, &mut dk[..sb * d], ds_t, q_b, true)?;
            }
            // SAFETY: row i of this head's dq is element ((bi·T + i)·H + head)·D of the
            // (B, T, H, D) buffer, inside it and written by this group alone.
            unsafe { shared.0.scatter_rows(&dq, d, (bi * t * h + head) * d, h * d) };
        }
        // SAFETY: as above, rows (bi, j, hk) of the (B, S, Hkv, D) buffers.
        unsafe {
            shared.1.scatter_rows(&dk, d, (bi * s * hkv + hk) * d, hkv * d);
            shared.2.scatter_rows(&dv, d, (bi * s * hkv + hk) * d, hkv * d);
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
                StridedRows::new(s1, l1, Order::Bhtd, NAME)?,
                StridedRows::new(s2, l2, Order::Bhtd, NAME)?,
                StridedRows::new(s3, l3, Order::Bhtd, NAME)?,
            );
            let (out, lse) = op.fwd((&q, &k, &v), dims)?;
            let _ = op.lse.set(T::to_cpu_storage_owned(lse));
            let Dims { b, h, t, d, .. } = dims;
            Ok((T::to_cpu_storage_owned(out), Shape::from((b, t, h, d))))
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

/// `x` itself when its last dimension is contiguous (the kernels read any other strides), else a
/// contiguous copy.
fn rows_contiguous(x: &Tensor) -> Result<Tensor> {
    match x.stride().last() {
        Some(1) => Ok(x.clone()),
        _ => x.contiguous(),
    }
}

/// Fused [`crate::ops::causal_attention`]: the decode kernel for a KV-cached step of at most
/// [`DECODE_MAX_T`] rows (`offset > 0`), the tiled kernel otherwise. Inputs may be strided views
/// (a copy is made only when the last dimension is not contiguous). Errors unless `q`, `k`, `v`
/// are non-empty CPU tensors of one dtype, f32 or f64, with the shapes below.
///
/// # Shapes
/// - `q`: `(B, H, T, D)`; `k`, `v`: `(B, Hkv, S, D)` with `S = offset + T`; returns `(B, H, T, D)`.
pub fn causal_attention(q: &Tensor, k: &Tensor, v: &Tensor, offset: usize) -> Result<Tensor> {
    causal_attention_with(q, k, v, offset, MatmulPrecision::F32)
}

/// [`causal_attention`] with the tiled kernel's matrix products at `prec` (the decode kernel
/// always computes in full precision). The tiled kernel writes its output in `(B, T, H, D)`
/// order and returns a `(B, H, T, D)` view of it, so that the usual `transpose(1, 2)` back to
/// `(B, T, H, D)` is free.
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
    let (k, v) = (rows_contiguous(k)?, rows_contiguous(v)?);
    if offset > 0 && dims.t <= DECODE_MAX_T {
        return q.contiguous()?.apply_op3(&k, &v, DecodeOp { offset });
    }
    let op = AttentionOp {
        offset,
        prec,
        lse: OnceLock::new(),
    };
    rows_contiguous(q)?.apply_op3(&k, &v, op)?.transpose(1, 2)
}
