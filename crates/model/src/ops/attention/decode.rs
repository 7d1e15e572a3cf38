//! The decode path of causal attention (module docs of `attention`): a KV-cached step of a few
//! query rows against keys and values read through their strides.

use super::*;

/// The float types of the decode kernel: [`Real`] with a fused multiply-add and a dot product.
trait DecodeReal: Real {
    /// `self * b + c` with one rounding.
    fn fused_mul_add(self, b: Self, c: Self) -> Self;

    /// `sum_i a_i b_i`. With `FMA`, only called from code compiled for AVX2 and FMA.
    #[inline(always)]
    fn dot<const FMA: bool>(a: &[Self], b: &[Self]) -> Self {
        dot::<Self, FMA>(a, b)
    }
}

impl DecodeReal for f32 {
    #[inline(always)]
    fn fused_mul_add(self, b: Self, c: Self) -> Self {
        self.mul_add(b, c)
    }

    #[inline(always)]
    fn dot<const FMA: bool>(a: &[f32], b: &[f32]) -> f32 {
        #[cfg(target_arch = "x86_64")]
        if FMA {
            // SAFETY: `FMA` is only set on CPUs with AVX2 and FMA (see `decode_group_avx2`).
            return unsafe { dot_f32_avx2(a, b) };
        }
        dot::<f32, FMA>(a, b)
    }
}

/// `sum_i a_i b_i` over `min(a.len(), b.len())` elements in two 8-lane accumulators (the
/// compiler does not vectorise [`dot`]'s accumulator array into whole AVX registers).
///
/// # Safety
/// The CPU must support `avx2` and `fma`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn dot_f32_avx2(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc0 = _mm256_setzero_ps();
    let mut acc1 = _mm256_setzero_ps();
    let mut i = 0;
    // SAFETY (loads): every load reads 8 elements at `i + 8 <= n` or `i + 16 <= n`.
    while i + 16 <= n {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
        let (xa, xb) = (pa.add(i + 8), pb.add(i + 8));
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(xa), _mm256_loadu_ps(xb), acc1);
        i += 16;
    }
    if i + 8 <= n {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
        i += 8;
    }
    let acc = _mm256_add_ps(acc0, acc1);
    let s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    let mut r = _mm_cvtss_f32(s);
    while i < n {
        r = a[i].mul_add(b[i], r);
        i += 1;
    }
    r
}

impl DecodeReal for f64 {
    #[inline(always)]
    fn fused_mul_add(self, b: Self, c: Self) -> Self {
        self.mul_add(b, c)
    }
}

/// `a * b + c`: fused when `FMA`, which callers only set in code compiled with the `fma` target
/// feature (elsewhere a fused multiply-add is a slow library call).
#[inline(always)]
fn mul_add<T: DecodeReal, const FMA: bool>(a: T, b: T, c: T) -> T {
    if FMA {
        a.fused_mul_add(b, c)
    } else {
        a * b + c
    }
}

/// `sum_i a_i b_i` with 16 independent accumulators, so that it vectorises.
#[inline(always)]
fn dot<T: DecodeReal, const FMA: bool>(a: &[T], b: &[T]) -> T {
    const L: usize = 16;
    let mut acc = [T::zero(); L];
    let (ca, cb) = (a.chunks_exact(L), b.chunks_exact(L));
    let tail = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .fold(T::zero(), |s, (&x, &y)| mul_add::<T, FMA>(x, y, s));
    for (x, y) in ca.zip(cb) {
        for l in 0..L {
            acc[l] = mul_add::<T, FMA>(x[l], y[l], acc[l]);
        }
    }
    let mut width = L;
    while width > 1 {
        width /= 2;
        for l in 0..width {
            acc[l] += acc[l + width];
        }
    }
    acc[0] + tail
}

/// One (batch, KV head) group of the decode kernel: the `rep · T` query rows `q` (`rep` heads of
/// `T` rows, row-major) against keys and values `0..offset + i + 1` of head `hk` of batch row
/// `bi`, into `out` (same layout as `q`); `p` is scratch of at least `offset + T` elements.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn decode_group<T: DecodeReal, const FMA: bool>(
    q: &[T],
    (k, v): (&StridedRows<T>, &StridedRows<T>),
    (bi, hk): (usize, usize),
    t: usize,
    offset: usize,
    scale: T,
    p: &mut [T],
    out: &mut [T],
) {
    let d = k.d;
    for (r, (o, qr)) in out.chunks_mut(d).zip(q.chunks(d)).enumerate() {
        let p = &mut p[..offset + r % t + 1];
        for (j, pj) in p.iter_mut().enumerate() {
            *pj = T::dot::<FMA>(qr, k.row(bi, hk, j)) * scale;
        }
        let m = max(p);
        p.iter_mut().for_each(|x| *x = (*x - m).exp());
        let inv = sum_map(p, |x| x).recip();
        o.fill(T::zero());
        for (j, &pj) in p.iter().enumerate() {
            for (o, &x) in o.iter_mut().zip(v.row(bi, hk, j)) {
                *o = mul_add::<T, FMA>(pj, x, *o);
            }
        }
        o.iter_mut().for_each(|x| *x *= inv);
    }
}

/// [`decode_group`] compiled for AVX2 and FMA.
///
/// # Safety
/// The CPU must support `avx2` and `fma`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn decode_group_avx2<T: DecodeReal>(
    q: &[T],
    kv: (&StridedRows<T>, &StridedRows<T>),
    at: (usize, usize),
    t: usize,
    offset: usize,
    scale: T,
    p: &mut [T],
    out: &mut [T],
) {
    decode_group::<T, true>(q, kv, at, t, offset, scale, p, out)
}

/// Whether [`decode_group_avx2`] may run here.
fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| {
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The decode kernel's forward (see the module docs): `q` contiguous `(B, H, T, D)`, `k` and `v`
/// strided `(B, Hkv, offset + T, D)`; returns `(B, H, T, D)`.
fn decode_fwd<T: DecodeReal>(
    q: &[T],
    k: &StridedRows<T>,
    v: &StridedRows<T>,
    dims: Dims,
    offset: usize,
) -> Vec<T> {
    let Dims { b, h, hkv, t, s, d } = dims;
    let scale = T::from_f64(1.0 / (d as f64).sqrt());
    let chunk = dims.rep() * t * d; // one (batch, KV head) group, contiguous in q and out
    let mut out = vec![T::zero(); b * h * t * d];
    let fast = has_avx2_fma();
    let group = |(g, o): (usize, &mut [T])| {
        let mut p = vec![T::zero(); s];
        let (q, at) = (&q[g * chunk..][..chunk], (g / hkv, g % hkv));
        #[cfg(target_arch = "x86_64")]
        if fast {
            // SAFETY: `fast` says the CPU has AVX2 and FMA.
            unsafe { decode_group_avx2(q, (k, v), at, t, offset, scale, &mut p, o) };
            return;
        }
        let _ = fast;
        decode_group::<T, false>(q, (k, v), at, t, offset, scale, &mut p, o);
    };
    if b * h * t * s * d < DECODE_SERIAL_WORK {
        out.chunks_mut(chunk).enumerate().for_each(group);
    } else {
        out.par_chunks_mut(chunk).enumerate().for_each(group);
    }
    out
}

/// The decode path of [`causal_attention`]: no saved statistics, strided keys and values.
pub(super) struct DecodeOp {
    pub(super) offset: usize,
}

impl CustomOp3 for DecodeOp {
    fn name(&self) -> &'static str {
        DECODE_NAME
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
        fn run<T: DecodeReal>(
            op: &DecodeOp,
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
            let q = slice::<T>(s1, l1, DECODE_NAME)?;
            let (k, v) = (
                StridedRows::new(s2, l2, Order::Bhtd, DECODE_NAME)?,
                StridedRows::new(s3, l3, Order::Bhtd, DECODE_NAME)?,
            );
            let out = decode_fwd(q, &k, &v, dims, op.offset);
            Ok((T::to_cpu_storage_owned(out), l1.shape().clone()))
        }
        let args = (s1, l1, s2, l2, s3, l3);
        match s1.dtype() {
            DType::F32 => run::<f32>(self, args, dims),
            DType::F64 => run::<f64>(self, args, dims),
            dt => bail!("{DECODE_NAME}: fused kernel supports f32 and f64, got {dt:?}"),
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
        let tiled = AttentionOp {
            offset: self.offset,
            prec: MatmulPrecision::F32,
            lse: OnceLock::new(),
        };
        // The tiled backward takes the output and its gradient in (B, T, H, D) order.
        tiled.bwd(q, k, v, &res.transpose(1, 2)?, &grad.transpose(1, 2)?)
    }
}
