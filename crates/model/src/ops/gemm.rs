//! Matrix products for the hot path: `C = A·B` (or `C += A·B`) on f32 matrices given as strided
//! views, in full f32 precision or with bf16 inputs like PyTorch's bf16 autocast.
//!
//! # F32
//!
//! [`MatmulPrecision::F32`] calls the `gemm` crate (BLIS-style, AVX-512 on x86-v4) with the views'
//! strides, so transposed operands are never copied. Products below [`F32_PAR_MIN_FLOPS`] run on
//! the calling thread; larger ones on rayon's global pool.
//!
//! # Bf16
//!
//! [`MatmulPrecision::Bf16`] rounds every input element to bf16 (round to nearest even, NaN stays
//! NaN: [`round_bf16`]) and accumulates the exact products in f32. On CPUs with AVX512_BF16 it
//! runs our own kernel built on `vdpbf16ps`, which multiplies 16 pairs of bf16 pairs and adds both
//! products to 16 f32 accumulators (twice the multiply-adds of an f32 FMA per instruction, at the
//! same throughput on Zen 4). The kernel follows the BLIS structure:
//!
//! 1. **Pack B** (all of K, for up to 2^21 pairs worth of columns at a time) into panels of
//!    `NR = 32` columns. Row `p` of a panel holds for each column `j` the u32 pair
//!    `(B[2p][j], B[2p+1][j])` (low half first): one 64-byte load gives the right operand of one
//!    `vdpbf16ps` for 16 columns. Columns past `n` and the odd row past `k` are zero. Panels are
//!    packed in parallel and shared by all threads (B stays in the shared L3).
//! 2. **Split the work** over the threads: by rows of C when there are at least two register
//!    tiles of rows per thread (every thread streams the same packed B), otherwise by panels of
//!    columns.
//! 3. Each thread cuts K into equal even slices of at most `KC = 384` and, for each slice and
//!    each `MC = 192`-row block of its rows, **packs A** into panels of `MR = 12` rows (row `p`
//!    of a panel holds the pairs `(A[i][2p], A[i][2p+1])` of its 12 rows) in a per-thread
//!    buffer that stays in L2 (`MC·KC·2` bytes = 144 KiB).
//! 4. For every B panel and then every A panel, the **microkernel** keeps the `12 × 32` tile of C
//!    in 24 zmm accumulators; per pair of K it loads 2 vectors of B and broadcasts 12 pairs of A
//!    from memory (24 `vdpbf16ps`, 14 loads). The B panel slice (`KC·NR·2` bytes = 24 KiB) stays
//!    in L1 while the A panels stream from L2. The C tile is prefetched while the sums run;
//!    partial tiles are computed on zero padding and stored with masked stores. The first K slice
//!    overwrites C (unless accumulating); later ones add to it, so a deep K is cut into as few
//!    slices as fit L1 (C read back from L3 cost 25% at 2048 × 384 × 1536 with 256-deep slices).
//!
//! f32 → bf16 conversion happens during packing (`vcvtne2ps2bf16` on 32 floats at a time, with a
//! 16 × 16 transpose when the K pairs are contiguous in memory, as for a row-major A or a
//! transposed B), so no bf16 copy of an operand is ever made. Products of at most 8 rows with a
//! transposed B (`x·Wᵀ` at decode) skip packing B altogether: they are dot products of the rows
//! of A with the contiguous columns of B, converted as they stream past.
//!
//! Subnormals: `vcvtne2ps2bf16` flushes subnormal inputs to zero and `vdpbf16ps` treats subnormal
//! bf16 inputs as zero and flushes subnormal results (checked on Zen 4), so inputs below 2^-126
//! in magnitude contribute nothing to the kernel's sums; [`round_bf16`] and the fallback keep
//! them. Everything else (rounding, NaN, infinities) matches [`round_bf16`] exactly.
//!
//! Without AVX512_BF16 (or on other architectures) the fallback rounds A and B to bf16-valued
//! f32 copies and runs the F32 path: the products of bf16 values are exact in f32, so the result
//! is the same up to the order of the f32 sums.
//!
//! Packed B (up to 8 MiB) and each worker's A block are kept in thread-local buffers between
//! calls, so a steady training loop allocates nothing here.

use candle_core::{bail, Result};

use super::cpu::{self, MatRef as CpuMatRef, Real};

/// How an f32 matrix product is computed, like PyTorch's `torch.set_float32_matmul_precision`:
/// `F32` in full precision; `Bf16` with both inputs rounded to bf16 (round to nearest even) and
/// the products accumulated in f32, which is what bf16 autocast does to a matmul.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MatmulPrecision {
    #[default]
    F32,
    Bf16,
}

/// A read-only strided view of an f32 matrix: element `(i, j)` is `data[i * rs + j * cs]`.
/// A transposed matrix is the same data with `rs` and `cs` swapped.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl MatRef<'_> {
    /// Checks that every element lies inside `data`; `what` names the operand in the error.
    fn check(&self, what: &str) -> Result<()> {
        if self.rows == 0 || self.cols == 0 {
            return Ok(());
        }
        let last = (self.rows - 1).checked_mul(self.rs).and_then(|r| {
            (self.cols - 1)
                .checked_mul(self.cs)
                .and_then(|c| r.checked_add(c))
        });
        match last {
            Some(last) if last < self.data.len() => Ok(()),
            _ => bail!(
                "matmul: {what} view ({} x {}, strides {} and {}) reaches past its {} elements",
                self.rows,
                self.cols,
                self.rs,
                self.cs,
                self.data.len()
            ),
        }
    }

    /// The same view with the stride of a dimension of size 1 set to 1: it is never used to
    /// address anything, and a tame value keeps the `gemm` crate's layout choices (and the
    /// isize conversion) sane.
    fn normalized(self) -> Self {
        Self {
            rs: if self.rows <= 1 { 1 } else { self.rs },
            cs: if self.cols <= 1 { 1 } else { self.cs },
            ..self
        }
    }
}

/// Which implementation a [`MatmulPrecision::Bf16`] product runs; for tests and benchmarks.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bf16Path {
    /// The AVX512_BF16 kernel when the CPU has it, else the fallback.
    Auto,
    /// The AVX512_BF16 kernel; an error on CPUs without it.
    Kernel,
    /// bf16-rounded f32 copies through the F32 path.
    Fallback,
}

/// Products with fewer multiply-adds than this (160³) run on the calling thread in the F32 path:
/// below it, waking the pool costs more than the second core saves. `gemm_bench`'s small squares
/// on a 2-core machine shared with other work: two threads lost at 96³ and 128³, broke even from
/// about 192³ (the `gemm` crate itself stays on one thread below about 64³).
pub const F32_PAR_MIN_FLOPS: usize = 1 << 22;

/// `C = A·B`, or `C += A·B` when `accumulate`, with `C` (`a.rows × b.cols`) stored row-major
/// with row stride `ldc` in `c`. `prec` picks full f32 or bf16-input products (module docs).
///
/// # Shapes
/// `a`: (m, k), `b`: (k, n), `c`: at least `(m - 1)·ldc + n` elements, `ldc ≥ n`. Any of m, n, k
/// may be 0 (`k = 0` sets C to zero, or leaves it unchanged when accumulating).
///
/// # Errors
/// When `a.cols != b.rows`, a view reaches past its slice, `ldc < n`, or `c` is too short.
pub fn matmul(
    prec: MatmulPrecision,
    a: MatRef,
    b: MatRef,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) -> Result<()> {
    matmul_with(prec, Bf16Path::Auto, a, b, c, ldc, accumulate)
}

/// [`matmul`] with the bf16 implementation chosen by the caller (tests force each one).
#[doc(hidden)]
pub fn matmul_with(
    prec: MatmulPrecision,
    path: Bf16Path,
    a: MatRef,
    b: MatRef,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) -> Result<()> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if b.rows != k {
        bail!(
            "matmul: inner dimensions differ: ({m} x {k}) by ({} x {n})",
            b.rows
        )
    }
    a.check("A")?;
    b.check("B")?;
    if ldc < n {
        bail!("matmul: row stride of C ({ldc}) is below its {n} columns")
    }
    if m > 0 && n > 0 {
        let need = (m - 1).checked_mul(ldc).and_then(|r| r.checked_add(n));
        if need.is_none_or(|need| need > c.len()) {
            bail!(
                "matmul: C ({m} x {n}, row stride {ldc}) does not fit in {} elements",
                c.len()
            )
        }
    }
    if path == Bf16Path::Kernel && prec == MatmulPrecision::Bf16 && !bf16_kernel_available() {
        bail!("matmul: the bf16 kernel needs AVX512F, AVX512BW and AVX512_BF16")
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        if !accumulate {
            for row in c.chunks_mut(ldc).take(m) {
                row[..n].fill(0.0);
            }
        }
        return Ok(());
    }
    let (a, b) = (a.normalized(), b.normalized());
    let ldc = if m == 1 { n } else { ldc };
    match prec {
        MatmulPrecision::F32 => matmul_f32(a, b, c, ldc, accumulate),
        MatmulPrecision::Bf16 => {
            #[cfg(target_arch = "x86_64")]
            if path != Bf16Path::Fallback && bf16_kernel_available() {
                let flops = m * n * k;
                let threads = if flops < avx512::PAR_MIN_FLOPS {
                    1
                } else {
                    rayon::current_num_threads()
                };
                // SAFETY: the CPU has the kernel's features; the views were checked to lie in
                // their slices and C to hold (m - 1)·ldc + n elements; `c` is a unique borrow.
                unsafe {
                    if a.rows <= avx512::DOT_MAX_M && b.rs == 1 {
                        avx512::gemm_dot(a, b, c.as_mut_ptr(), ldc, accumulate, threads)
                    } else {
                        avx512::gemm(a, b, c.as_mut_ptr(), ldc, accumulate, threads)
                    }
                };
                return Ok(());
            }
            matmul_bf16_fallback(a, b, c, ldc, accumulate)
        }
    }
}

/// The float types of the fused kernels' matrix products: f32 runs through [`matmul`] at the
/// chosen precision; f64 (gradient checks only) through the single-threaded [`cpu::matmul`],
/// always in full precision.
pub(crate) trait ProductReal: Real {
    /// `dst = a·b`, or `dst += a·b` when `accumulate`; `dst` is row-major with `b.cols` columns.
    fn product(
        prec: MatmulPrecision,
        dst: &mut [Self],
        a: CpuMatRef<'_, Self>,
        b: CpuMatRef<'_, Self>,
        accumulate: bool,
    ) -> Result<()>;
}

impl ProductReal for f32 {
    fn product(
        prec: MatmulPrecision,
        dst: &mut [f32],
        a: CpuMatRef<'_, f32>,
        b: CpuMatRef<'_, f32>,
        accumulate: bool,
    ) -> Result<()> {
        let n = b.cols;
        matmul(prec, view(a), view(b), dst, n, accumulate)
    }
}

/// The same matrix view in this module's type.
fn view(m: CpuMatRef<'_, f32>) -> MatRef<'_> {
    MatRef {
        data: m.data,
        rows: m.rows,
        cols: m.cols,
        rs: m.rs,
        cs: m.cs,
    }
}

impl ProductReal for f64 {
    fn product(
        _prec: MatmulPrecision,
        dst: &mut [f64],
        a: CpuMatRef<'_, f64>,
        b: CpuMatRef<'_, f64>,
        accumulate: bool,
    ) -> Result<()> {
        cpu::matmul(dst, a, b, 1.0, accumulate)
    }
}

/// Whether this CPU runs the AVX512_BF16 kernel (else [`MatmulPrecision::Bf16`] falls back).
pub fn bf16_kernel_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `x` rounded to the nearest bf16 (ties to even), as the bits of that bf16; NaN stays NaN
/// (quieted, sign kept), infinities stay, values past the largest bf16 round to infinity.
#[inline]
pub fn bf16_bits(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits | 0x0040_0000) >> 16) as u16;
    }
    // Adding 0x7fff (plus one when the kept part is odd) carries into bit 16 exactly when the
    // dropped half is above the halfway point, or at it with an odd kept part. No overflow: the
    // largest non-NaN pattern is -inf, 0xff80_0000.
    let lsb = (bits >> 16) & 1;
    (bits.wrapping_add(0x7fff + lsb) >> 16) as u16
}

/// `x` rounded to the nearest bf16 (ties to even), as an f32 ([`bf16_bits`]).
#[inline]
pub fn round_bf16(x: f32) -> f32 {
    f32::from_bits(u32::from(bf16_bits(x)) << 16)
}

/// The F32 path: the `gemm` crate on the strided views.
fn matmul_f32(a: MatRef, b: MatRef, c: &mut [f32], ldc: usize, accumulate: bool) -> Result<()> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if m <= DOT_F32_MAX_M && a.cs == 1 && b.rs == 1 {
        dot_f32(a, b, c, ldc, accumulate);
        return Ok(());
    }
    let threads = rayon::current_num_threads();
    let par = if m * n * k < F32_PAR_MIN_FLOPS || threads < 2 {
        gemm::Parallelism::None
    } else {
        gemm::Parallelism::Rayon(threads)
    };
    // Strides of dimensions longer than 1 address elements of a slice, so they fit in isize
    // (the others were normalized to 1).
    let s = |x: usize| x as isize;
    // SAFETY: the views were checked to lie inside their slices and C to hold (m - 1)·ldc + n
    // elements with ldc ≥ n; `c` is a unique borrow, so it aliases neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            s(ldc),
            accumulate,
            a.data.as_ptr(),
            s(a.cs),
            s(a.rs),
            b.data.as_ptr(),
            s(b.cs),
            s(b.rs),
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
    Ok(())
}

/// Products of at most this many rows with a B whose columns are contiguous (`x·Wᵀ` at decode)
/// are dot products in [`dot_f32`]: the `gemm` crate would pack all of W on every call, which cost
/// 68% of a decode step (measured on `bench generate`, gpt2-bench, batch 1 and 8).
const DOT_F32_MAX_M: usize = 8;
/// Multiply-adds below which [`dot_f32`] stays on the calling thread.
const DOT_F32_PAR_MIN: usize = 1 << 17;

/// `C = A·B` (or `+=`) for a few rows of A (each contiguous) and a B with contiguous columns:
/// `C[i][j] = Σ_p A[i][p] B[p][j]` as a dot product of row `i` of A with column `j` of B, so W
/// streams through once per call without packing. Columns of C are split over the threads.
fn dot_f32(a: MatRef, b: MatRef, c: &mut [f32], ldc: usize, accumulate: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let fma = has_fma();
    // Columns j0..j0 + cols of B against every row of A, into `out` (row-major, `cols` wide):
    // each column of B is read once and multiplied into all rows of A at the same time.
    let block = |j0: usize, cols: usize, out: &mut [f32]| {
        for jj in 0..cols {
            let j = j0 + jj;
            let w = &b.data[j * b.cs..j * b.cs + k];
            let mut sums = [0.0f32; DOT_F32_MAX_M];
            dots(a, w, &mut sums[..m], fma);
            for (i, &v) in sums[..m].iter().enumerate() {
                out[i * cols + jj] = v;
            }
        }
    };
    let mut store = |j0: usize, cols: usize, out: &[f32]| {
        for i in 0..m {
            let dst = &mut c[i * ldc + j0..i * ldc + j0 + cols];
            let src = &out[i * cols..(i + 1) * cols];
            if accumulate {
                dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
            } else {
                dst.copy_from_slice(src);
            }
        }
    };
    const COLS_PER_TASK: usize = 64;
    if m * n * k < DOT_F32_PAR_MIN || rayon::current_num_threads() < 2 {
        let mut out = vec![0.0; m * n];
        block(0, n, &mut out);
        store(0, n, &out);
        return;
    }
    use rayon::prelude::*;
    let blocks: Vec<(usize, usize, Vec<f32>)> = (0..n.div_ceil(COLS_PER_TASK))
        .into_par_iter()
        .map(|t| {
            let j0 = t * COLS_PER_TASK;
            let cols = COLS_PER_TASK.min(n - j0);
            let mut out = vec![0.0; m * cols];
            block(j0, cols, &mut out);
            (j0, cols, out)
        })
        .collect();
    for (j0, cols, out) in &blocks {
        store(*j0, *cols, out);
    }
}

/// Whether [`dots`] may use the AVX-512 (and FMA) version.
fn has_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `sums[i] = Σ_p A[i][p] w[p]` for every row `i` of `a` (at most [`DOT_F32_MAX_M`], each
/// contiguous); fused multiply-adds when `fma` (from [`has_fma`]).
#[inline]
fn dots(a: MatRef, w: &[f32], sums: &mut [f32], fma: bool) {
    macro_rules! rows {
        ($($m:literal)*) => {
            match sums.len() {
                $($m => {
                    let rows: [&[f32]; $m] =
                        std::array::from_fn(|i| &a.data[i * a.rs..i * a.rs + w.len()]);
                    #[cfg(target_arch = "x86_64")]
                    if fma {
                        // SAFETY: `fma` comes from `has_fma`: AVX-512F (which implies FMA).
                        let r = unsafe { dots_avx512(rows, w) };
                        sums.copy_from_slice(&r);
                        return;
                    }
                    let _ = fma;
                    sums.copy_from_slice(&dots_lanes(rows, w, |x, y, acc| x * y + acc));
                })*
                _ => unreachable!("dots: at most {DOT_F32_MAX_M} rows"),
            }
        };
    }
    rows!(1 2 3 4 5 6 7 8)
}

/// [`dots_lanes`] with AVX-512 intrinsics: two zmm accumulators per row (so even one row has
/// two independent multiply-add chains), each 32-float block of `w` loaded once for all rows.
/// Every row must hold at least `w.len()` elements.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn dots_avx512<const M: usize>(rows: [&[f32]; M], w: &[f32]) -> [f32; M] {
    use std::arch::x86_64::*;
    let k = w.len();
    assert!(
        rows.iter().all(|r| r.len() >= k),
        "dots: a row is shorter than w"
    );
    let full = k - k % DOT_LANES;
    let mut acc0 = [_mm512_setzero_ps(); M];
    let mut acc1 = [_mm512_setzero_ps(); M];
    let mut p = 0;
    while p < full {
        // SAFETY: p + 32 <= full <= k, and every row and `w` hold at least k elements.
        unsafe {
            let w0 = _mm512_loadu_ps(w.as_ptr().add(p));
            let w1 = _mm512_loadu_ps(w.as_ptr().add(p + 16));
            for i in 0..M {
                let r = rows[i].as_ptr().add(p);
                acc0[i] = _mm512_fmadd_ps(_mm512_loadu_ps(r), w0, acc0[i]);
                acc1[i] = _mm512_fmadd_ps(_mm512_loadu_ps(r.add(16)), w1, acc1[i]);
            }
        }
        p += DOT_LANES;
    }
    std::array::from_fn(|i| {
        let sum = _mm512_reduce_add_ps(_mm512_add_ps(acc0[i], acc1[i]));
        (full..k).fold(sum, |t, q| rows[i][q].mul_add(w[q], t))
    })
}

/// Lanes of each row's partial sums: two 16-float vectors, so that even one row has two
/// independent multiply-add chains (and `M` rows `2M`).
const DOT_LANES: usize = 32;

#[inline(always)]
fn dots_lanes<const M: usize>(
    rows: [&[f32]; M],
    w: &[f32],
    madd: impl Fn(f32, f32, f32) -> f32,
) -> [f32; M] {
    let k = w.len();
    let full = k - k % DOT_LANES;
    let mut acc = [[0.0f32; DOT_LANES]; M];
    for p in (0..full).step_by(DOT_LANES) {
        let wc = &w[p..p + DOT_LANES];
        for (acc, row) in acc.iter_mut().zip(&rows) {
            let xc = &row[p..p + DOT_LANES];
            for l in 0..DOT_LANES {
                acc[l] = madd(xc[l], wc[l], acc[l]);
            }
        }
    }
    std::array::from_fn(|i| {
        let mut a = acc[i];
        let mut width = DOT_LANES;
        while width > 1 {
            width /= 2;
            for l in 0..width {
                a[l] += a[l + width];
            }
        }
        (full..k).fold(a[0], |t, p| madd(rows[i][p], w[p], t))
    })
}

/// The bf16 fallback: bf16-rounded, row-major f32 copies of A and B through the F32 path.
fn matmul_bf16_fallback(
    a: MatRef,
    b: MatRef,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) -> Result<()> {
    let rounded = |x: MatRef| -> Vec<f32> {
        (0..x.rows)
            .flat_map(|i| (0..x.cols).map(move |j| round_bf16(x.data[i * x.rs + j * x.cs])))
            .collect()
    };
    let (a_r, b_r) = (rounded(a), rounded(b));
    fn view<'a>(data: &'a [f32], x: MatRef) -> MatRef<'a> {
        let (rows, cols) = (x.rows, x.cols);
        MatRef {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
        .normalized()
    }
    matmul_f32(view(&a_r, a), view(&b_r, b), c, ldc, accumulate)
}

#[cfg(target_arch = "x86_64")]
mod avx512;
