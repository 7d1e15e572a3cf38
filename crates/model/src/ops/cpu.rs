//! Plumbing shared by the fused CPU kernels: the float trait they are generic over, when a call
//! may take the fused path, and read access to a tensor's CPU storage.

use std::ops::Neg;

use candle_core::{
    bail, CpuStorage, DType, Layout, Result, Storage, StorageRef, Tensor, WithDType,
};

/// Elements per rayon task for element-wise kernels: large enough to amortise scheduling, small
/// enough to balance two to sixteen cores.
pub(crate) const ELEMS_PER_TASK: usize = 1 << 14;

/// Rows per rayon task for a row-wise kernel over rows of length `len` (at least one row).
/// Depends only on the shape, so reductions over tasks are bitwise reproducible.
pub(crate) fn rows_per_task(len: usize) -> usize {
    (ELEMS_PER_TASK / len.max(1)).max(1)
}

/// The float types the fused kernels run in (f32 for training, f64 for gradient checks).
pub(crate) trait Real: WithDType + Neg<Output = Self> {
    /// `e^x`: [`exp_f32`] for f32, the standard library's for f64.
    fn exp(self) -> Self;
    fn sqrt(self) -> Self;
    fn ln(self) -> Self;
    fn maximum(self, other: Self) -> Self;
    fn recip(self) -> Self;
    const NEG_INFINITY: Self;
}

macro_rules! impl_real {
    ($t:ty, $exp:expr) => {
        impl Real for $t {
            #[inline(always)]
            fn exp(self) -> Self {
                $exp(self)
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline(always)]
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            #[inline(always)]
            fn maximum(self, other: Self) -> Self {
                <$t>::max(self, other)
            }
            #[inline(always)]
            fn recip(self) -> Self {
                <$t>::recip(self)
            }
            const NEG_INFINITY: Self = <$t>::NEG_INFINITY;
        }
    };
}
impl_real!(f32, exp_f32);
impl_real!(f64, f64::exp);

/// `e^x` in f32 without a libm call or branches, so that loops over it vectorise (the Cephes
/// `expf` scheme: `x = n ln 2 + r`, a degree-7 polynomial for `e^r`, `2^n` built from its bits).
/// Measured against f64 `exp` on 5M points in `[-87.3, 88.3]`: at most 8.1e-8 relative error
/// (libm's f32 `exp`: 1.2e-7 by the same test). `exp(0) == 1` exactly, results below the
/// smallest normal f32 (`x < -87.33654`, including `-inf`) are exactly 0, `x > 88.37626` gives
/// `inf`, NaN stays NaN.
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    const LO: f32 = -87.336_54;
    const HI: f32 = 88.376_26;
    // Adding 1.5 * 2^23 rounds to an integer (|v| < 2^22), leaving it in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    const ROUND_BITS: u32 = 0x4B40_0000;
    // ln 2 split into an exactly representable high part and a correction.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const P: [f32; 6] = [
        1.987_569_1e-4,
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        0.166_666_65,
        0.5,
    ];
    let xc = x.clamp(LO, HI);
    let t = xc * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    let p = P[1..].iter().fold(P[0], |p, &c| p * r + c);
    let p = p * (r * r) + r + 1.0;
    // 2^n from n's bits: (n + 127) << 23, with n = bits(t) - bits(ROUND). Wrapping arithmetic
    // (no overflow can occur for clamped x) keeps overflow checks out of the loop so it vectorises.
    let biased = t.to_bits().wrapping_sub(ROUND_BITS).wrapping_add(127);
    let pow2n = f32::from_bits(biased << 23);
    let y = p * pow2n;
    if x < LO {
        0.0
    } else if x > HI {
        f32::INFINITY
    } else {
        y
    }
}

/// A vector of `n` elements for a kernel output that the kernel overwrites entirely before anything
/// reads it. Not zero-filling it saves a single-threaded pass over every output (measured: 6% of a
/// `tiny` training step was `memset`), as candle's own `alloc_uninit` does.
pub(crate) fn output_vec<T: Real>(n: usize) -> Vec<T> {
    let mut v = Vec::with_capacity(n);
    // SAFETY: `T` is f32 or f64, plain data with no drop glue and no invalid bit patterns, and
    // every caller writes all `n` elements before the vector is read or handed out.
    #[allow(clippy::uninit_vec)]
    unsafe {
        v.set_len(n)
    };
    v
}

/// A vector unit the element-wise and row-wise loops of the fused kernels can be compiled for
/// (see [`simd_kernel!`]), narrowest first.
#[doc(hidden)]
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Simd {
    /// What the binary was compiled for (SSE2 on a default x86-64 build).
    Baseline,
    /// AVX2 with FMA: 8 f32 lanes.
    Avx2,
    /// AVX-512 (F, BW, DQ, VL) with FMA: 16 f32 lanes.
    Avx512,
}

/// The widest unit [`simd_kernel!`] functions may use, as set by [`limit_simd`].
static SIMD_LIMIT: std::sync::atomic::AtomicU8 =
    std::sync::atomic::AtomicU8::new(Simd::Avx512 as u8);

/// Caps the vector unit of the fused kernels' loops at `max` (process-wide) and returns the unit
/// they will now use. Every unit computes the same bits; tests use this to prove it.
#[doc(hidden)]
pub fn limit_simd(max: Simd) -> Simd {
    SIMD_LIMIT.store(max as u8, std::sync::atomic::Ordering::Relaxed);
    simd()
}

/// The widest vector unit this CPU has, detected once, capped by [`limit_simd`].
pub(crate) fn simd() -> Simd {
    static DETECTED: std::sync::OnceLock<Simd> = std::sync::OnceLock::new();
    let detected = *DETECTED.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx512f") && has!("avx512bw") && has!("avx512dq") && has!("avx512vl") {
                return Simd::Avx512;
            }
            if has!("avx2") && has!("fma") {
                return Simd::Avx2;
            }
        }
        Simd::Baseline
    });
    let limit = match SIMD_LIMIT.load(std::sync::atomic::Ordering::Relaxed) {
        0 => Simd::Baseline,
        1 => Simd::Avx2,
        _ => Simd::Avx512,
    };
    detected.min(limit)
}

/// Defines a kernel function three times, compiled for AVX-512, for AVX2 + FMA and for the
/// baseline target, and a dispatcher of the same name that calls the widest one this CPU runs.
/// Loops in the body then vectorise 16 (AVX-512) or 8 (AVX2) f32 lanes wide instead of the 4 of a
/// default x86-64 build, without building the whole binary for one CPU.
///
/// The kernels spell out their order of operations (independent accumulators, no `mul_add`) and
/// Rust never contracts `a * b + c` into an FMA by itself, so every version computes the same
/// bits: only the speed changes (GELU forward and backward were 6.5% of a gpt2-bench bf16
/// training step at 4 lanes, 2.2% at 16).
///
/// Write one such function per rayon task body (the loop over one chunk) and call it from the
/// task: a closure handed to a vector-enabled wrapper is not inlined into it (LLVM finds the big
/// ones too costly), so the wrapper would run it at 4 lanes.
///
/// The signature may have type parameters with one bound each and any argument types (`impl Fn`
/// included); the body cannot capture anything.
macro_rules! simd_kernel {
    (
        $(#[$meta:meta])*
        $vis:vis fn $name:ident $(<$($g:ident: $bound:path),* $(,)?>)?
            ($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block
    ) => {
        $(#[$meta])*
        #[inline]
        $vis fn $name $(<$($g: $bound),*>)? ($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
            unsafe fn avx512 $(<$($g: $bound),*>)? ($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2 $(<$($g: $bound),*>)? ($($arg: $ty),*) $(-> $ret)? $body
            fn baseline $(<$($g: $bound),*>)? ($($arg: $ty),*) $(-> $ret)? $body
            match $crate::ops::cpu::simd() {
                // SAFETY: `simd()` found these features on this CPU.
                #[cfg(target_arch = "x86_64")]
                $crate::ops::cpu::Simd::Avx512 => unsafe { avx512($($arg),*) },
                // SAFETY: as above.
                #[cfg(target_arch = "x86_64")]
                $crate::ops::cpu::Simd::Avx2 => unsafe { avx2($($arg),*) },
                _ => baseline($($arg),*),
            }
        }
    };
}
pub(crate) use simd_kernel;

/// Whether the fused CPU kernels can take these tensors: all on the CPU, all f32 or all f64.
pub(crate) fn fused_ok(tensors: &[&Tensor]) -> bool {
    let Some(first) = tensors.first() else {
        return false;
    };
    let dtype = first.dtype();
    matches!(dtype, DType::F32 | DType::F64)
        && tensors
            .iter()
            .all(|t| t.device().is_cpu() && t.dtype() == dtype)
}

/// The contiguous elements a layout addresses in a CPU storage, or an error naming `op` when the
/// layout is strided (the public functions make inputs contiguous before calling a kernel).
pub(crate) fn slice<'a, T: WithDType>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &str,
) -> Result<&'a [T]> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        bail!(
            "{op}: fused kernel needs a contiguous input, got strides {:?}",
            layout.stride()
        )
    };
    let data = storage.as_slice::<T>()?;
    match data.get(start..end) {
        Some(s) => Ok(s),
        None => bail!(
            "{op}: layout {start}..{end} is outside a storage of {}",
            data.len()
        ),
    }
}

/// A read lock on a contiguous CPU tensor, for the backward passes (which receive tensors, not
/// storages).
pub(crate) struct CpuView<'a> {
    guard: StorageRef<'a>,
    layout: &'a Layout,
    op: &'static str,
}

impl<'a> CpuView<'a> {
    /// Locks `t`'s storage; `t` must be a contiguous CPU tensor (call `.contiguous()` first).
    pub(crate) fn new(t: &'a Tensor, op: &'static str) -> Result<Self> {
        let (guard, layout) = t.storage_and_layout();
        if !matches!(&*guard, Storage::Cpu(_)) {
            bail!(
                "{op}: fused kernel got a tensor on {:?}",
                t.device().location()
            )
        }
        Ok(Self { guard, layout, op })
    }

    /// The tensor's storage and layout (for kernels that read through strides).
    pub(crate) fn storage(&self) -> Result<(&CpuStorage, &Layout)> {
        match &*self.guard {
            Storage::Cpu(cpu) => Ok((cpu, self.layout)),
            _ => bail!("{}: fused kernel got a non-CPU tensor", self.op),
        }
    }

    /// The tensor's elements, row-major.
    pub(crate) fn slice<T: WithDType>(&self) -> Result<&[T]> {
        match &*self.guard {
            Storage::Cpu(cpu) => slice(cpu, self.layout, self.op),
            _ => bail!("{}: fused kernel got a non-CPU tensor", self.op),
        }
    }
}

/// Splits `dims` into `(rows, len)`: the product of the leading dims and the last dim.
pub(crate) fn rows_and_len(dims: &[usize], op: &str) -> Result<(usize, usize)> {
    match dims.split_last() {
        Some((&len, lead)) if len > 0 => Ok((lead.iter().product(), len)),
        _ => bail!("{op}: need a non-empty last dimension, got shape {dims:?}"),
    }
}

/// Independent accumulators in [`sum_map`] and [`sum_map2`].
const LANES: usize = 8;
/// Elements mapped at a time in [`sum_map`] and [`sum_map2`].
const BLOCK: usize = 64;

/// `sum_i f(x_i)`. `f` is applied a block at a time into a buffer (a plain map loop, which the
/// compiler vectorises even when `f` is an `exp`), and the buffer is added into [`LANES`]
/// independent accumulators combined pairwise at the end: that vectorises too (a single running
/// sum is a serial dependency chain), and its rounding error grows with `n / LANES`, not `n`.
/// The order of additions depends only on `x.len()`, so results are reproducible.
#[inline(always)]
pub(crate) fn sum_map<T: Real>(x: &[T], f: impl Fn(T) -> T) -> T {
    let mut acc = [T::zero(); LANES];
    let mut buf = [T::zero(); BLOCK];
    for block in x.chunks(BLOCK) {
        let buf = &mut buf[..block.len()];
        for (b, &v) in buf.iter_mut().zip(block) {
            *b = f(v);
        }
        accumulate(&mut acc, buf);
    }
    combine(acc)
}

/// `sum_i f(a_i, b_i)` like [`sum_map`]; `a` and `b` have the same length.
#[inline(always)]
pub(crate) fn sum_map2<T: Real>(a: &[T], b: &[T], f: impl Fn(T, T) -> T) -> T {
    let mut acc = [T::zero(); LANES];
    let mut buf = [T::zero(); BLOCK];
    for (ba, bb) in a.chunks(BLOCK).zip(b.chunks(BLOCK)) {
        let buf = &mut buf[..ba.len()];
        for ((o, &x), &y) in buf.iter_mut().zip(ba).zip(bb) {
            *o = f(x, y);
        }
        accumulate(&mut acc, buf);
    }
    combine(acc)
}

#[inline(always)]
fn accumulate<T: Real>(acc: &mut [T; LANES], values: &[T]) {
    let chunks = values.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    for (a, &v) in acc.iter_mut().zip(rest) {
        *a += v;
    }
}

/// Maximum of a row (`-inf` for an empty one), with [`LANES`] independent running maxima so that
/// it vectorises. NaN elements are skipped (the result only shifts the exponentials).
#[inline(always)]
pub(crate) fn max<T: Real>(x: &[T]) -> T {
    let mut acc = [T::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = a.maximum(v);
        }
    }
    for (a, &v) in acc.iter_mut().zip(rest) {
        *a = a.maximum(v);
    }
    acc.iter().fold(T::NEG_INFINITY, |m, &v| m.maximum(v))
}

#[inline(always)]
fn combine<T: Real>(a: [T; LANES]) -> T {
    ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]))
}

#[cfg(test)]
mod tests {
    use super::exp_f32;

    #[test]
    fn exp_f32_is_within_an_ulp_of_f64_exp() {
        let mut worst = 0.0f64;
        let n = 2_000_000;
        for i in 0..=n {
            let x = (-87.3 + 175.6 * i as f64 / n as f64) as f32;
            let want = f64::from(x).exp();
            let got = f64::from(exp_f32(x));
            worst = worst.max((got - want).abs() / want);
        }
        assert!(worst < 1.0e-7, "worst relative error {worst}");
    }

    #[test]
    fn exp_f32_edge_cases() {
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(-1234.0), 0.0);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(-87.4), 0.0);
        assert_eq!(exp_f32(1234.0), f32::INFINITY);
        assert_eq!(exp_f32(f32::INFINITY), f32::INFINITY);
        assert!(exp_f32(f32::NAN).is_nan());
        assert!(exp_f32(88.37).is_finite());
        assert!((f64::from(exp_f32(1.0)) - std::f64::consts::E).abs() < 3e-7);
    }
}

/// A strided read-only matrix view for [`matmul`]: element `(r, c)` is `data[r * rs + c * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct MatRef<'a, T> {
    pub data: &'a [T],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a, T> MatRef<'a, T> {
    /// A row-major `rows x cols` matrix.
    pub(crate) fn rows(data: &'a [T], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose of the row-major `cols x rows` matrix in `data`.
    pub(crate) fn transposed(data: &'a [T], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            rs: 1,
            cs: rows,
        }
    }

    /// Rows `r0..r1` of this matrix.
    pub(crate) fn row_block(self, r0: usize, r1: usize) -> Self {
        Self {
            data: &self.data[r0 * self.rs..],
            rows: r1 - r0,
            ..self
        }
    }

    /// The transpose (the same elements, strides swapped).
    pub(crate) fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }

    /// Whether every element lies inside `data`.
    fn in_bounds(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < self.data.len()
    }
}

/// `dst = beta * lhs rhs` (or `dst += beta * lhs rhs` when `accumulate`), with `dst` a row-major
/// `m x n` matrix, single-threaded (callers parallelise over independent products). Uses the
/// `gemm` crate that candle's CPU matmul uses. Every view is bounds-checked before the call.
pub(crate) fn matmul<T: Real>(
    dst: &mut [T],
    lhs: MatRef<'_, T>,
    rhs: MatRef<'_, T>,
    beta: T,
    accumulate: bool,
) -> Result<()> {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    if rhs.rows != k || dst.len() < m * n || !lhs.in_bounds() || !rhs.in_bounds() {
        bail!(
            "matmul: ({m} x {k}) by ({} x {n}) into {} elements, or a view out of bounds",
            rhs.rows,
            dst.len()
        )
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let stride = |s: usize| s as isize; // slice lengths fit in isize
                                        // SAFETY: the views were checked to lie inside their slices and `dst` holds m x n elements
                                        // with row stride n; `dst` is a unique borrow, so it aliases neither input. `T` is f32 or
                                        // f64 (the only `Real` types), both of which `gemm` supports.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            stride(n),
            accumulate,
            lhs.data.as_ptr(),
            stride(lhs.cs),
            stride(lhs.rs),
            rhs.data.as_ptr(),
            stride(rhs.cs),
            stride(rhs.rs),
            T::one(),
            beta,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
    Ok(())
}
