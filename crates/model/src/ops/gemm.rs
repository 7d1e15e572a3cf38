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
mod avx512 {
    //! The AVX512_BF16 kernel (module docs of `gemm`). Every `unsafe fn` here needs AVX512F,
    //! AVX512BW and AVX512_BF16, which the caller checked.

    use std::arch::x86_64::*;
    use std::cell::RefCell;
    use std::thread::LocalKey;

    use rayon::prelude::*;

    use super::MatRef;

    /// Rows of the register tile.
    pub const MR: usize = 12;
    /// zmm vectors (of 16 columns) per row of the register tile.
    const NV: usize = 2;
    /// Columns of the register tile.
    pub const NR: usize = 16 * NV;
    /// Largest depth of a K slice: the B panel slice, `KC·NR·2` bytes = 24 KiB, stays in the
    /// 32 KiB L1d next to the streamed A panel. K is cut into equal even slices of at most this
    /// ([`slice_depth`]): every slice after the first reads C back, from L3 when C is large.
    pub const KC: usize = 384;
    /// Rows of an A block (a multiple of `MR`): `MC·KC·2` bytes = 144 KiB of the 1 MiB L2.
    pub const MC: usize = 192;
    /// Largest packed B (in u32 pairs) made at once; wider products are split into column blocks.
    pub const B_PACK_MAX: usize = 1 << 21;
    /// Products with fewer multiply-adds than this (160³, about 40 µs on one core) run on the
    /// calling thread: each parallel product wakes the pool twice (pack B, then compute).
    pub const PAR_MIN_FLOPS: usize = 1 << 22;

    /// Products with at most this many rows and contiguous columns of B (`x·Wᵀ` at decode) take
    /// [`gemm_dot`]: packing B would cost more than the product.
    pub const DOT_MAX_M: usize = 8;
    /// [`gemm_dot`] products with fewer multiply-adds than this run on the calling thread: a
    /// one-row product streams B at memory speed on one core, and waking a second one cost more
    /// than it saved in `gemm_bench` (m = 1, 384 × 4096).
    const DOT_PAR_MIN_FLOPS: usize = 1 << 21;

    thread_local! {
        /// Packed B of the calling thread, kept between calls (at most `B_PACK_MAX` u32 + 64 B).
        static B_BUF: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
        /// Packed A block of each worker thread.
        static A_BUF: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    }

    /// Runs `f` on a 64-byte-aligned slice of `len` u32 from the thread's `key` buffer, or from
    /// a fresh one when that buffer is in use further up this thread's stack (a rayon worker that
    /// waits inside one product may run another).
    fn with_buf<R>(
        key: &'static LocalKey<RefCell<Vec<u32>>>,
        len: usize,
        f: impl FnOnce(&mut [u32]) -> R,
    ) -> R {
        fn aligned(v: &mut Vec<u32>, len: usize) -> &mut [u32] {
            if v.len() < len + 16 {
                v.resize(len + 16, 0);
            }
            let off = v.as_ptr().align_offset(64).min(15);
            &mut v[off..off + len]
        }
        key.with(|cell| match cell.try_borrow_mut() {
            Ok(mut v) => f(aligned(&mut v, len)),
            Err(_) => f(aligned(&mut Vec::new(), len)),
        })
    }

    /// A pointer that may cross threads; each task writes a disjoint part of C through it.
    #[derive(Clone, Copy)]
    struct SendPtr(*mut f32);
    // SAFETY: tasks write disjoint tiles of C (row ranges or column ranges) and nothing reads C
    // concurrently.
    unsafe impl Send for SendPtr {}
    unsafe impl Sync for SendPtr {}

    impl SendPtr {
        /// The pointer (a method, so closures capture the whole `Send` wrapper).
        fn get(self) -> *mut f32 {
            self.0
        }
    }

    /// `C = A·B` (or `+=`), bf16 inputs, f32 sums, on `threads` rayon tasks.
    ///
    /// # Safety
    /// AVX512F/BW/BF16 available; m, n, k ≥ 1; the views lie in their slices (strides of
    /// dimensions of size 1 normalized); `c` valid for writes of `(m - 1)·ldc + n` elements
    /// with `ldc ≥ n` and not aliased.
    pub unsafe fn gemm(
        a: MatRef,
        b: MatRef,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
        threads: usize,
    ) {
        let (m, k, n) = (a.rows, a.cols, b.cols);
        let kp = k.div_ceil(2);
        let panel_len = kp * NR;
        let nc_max = (B_PACK_MAX / panel_len).max(1) * NR;
        let c = SendPtr(c);
        for jc in (0..n).step_by(nc_max) {
            let nc = nc_max.min(n - jc);
            let panels = nc.div_ceil(NR);
            with_buf(&B_BUF, panels * panel_len, |bbuf| {
                let pack = |jr: usize, out: &mut [u32]| {
                    let col = jc + jr * NR;
                    // SAFETY: column `col` < n and row 0 exist; the panel reads columns
                    // col..col + nr of rows 0..k, all inside the view.
                    unsafe {
                        pack_panel::<NR>(
                            b.data.as_ptr().add(col * b.cs),
                            b.cs,
                            b.rs,
                            NR.min(nc - jr * NR),
                            k,
                            out.as_mut_ptr(),
                        )
                    }
                };
                if threads > 1 {
                    bbuf.par_chunks_mut(panel_len)
                        .enumerate()
                        .for_each(|(jr, out)| pack(jr, out));
                } else {
                    bbuf.chunks_mut(panel_len)
                        .enumerate()
                        .for_each(|(jr, out)| pack(jr, out));
                }
                let bpack: &[u32] = bbuf;
                let block = Block {
                    a,
                    bpack,
                    kp,
                    c,
                    ldc,
                    jc,
                    nc,
                    accumulate,
                };
                let row_panels = m.div_ceil(MR);
                if threads <= 1 {
                    // SAFETY: forwarded from the caller.
                    unsafe { block.compute(0, m, 0, panels) };
                } else if row_panels >= 2 * threads {
                    (0..threads).into_par_iter().for_each(|t| {
                        let r0 = (row_panels * t / threads * MR).min(m);
                        let r1 = (row_panels * (t + 1) / threads * MR).min(m);
                        // SAFETY: tasks own disjoint row ranges of C.
                        unsafe { block.compute(r0, r1, 0, panels) };
                    });
                } else {
                    let tasks = threads.min(panels);
                    (0..tasks).into_par_iter().for_each(|t| {
                        let (p0, p1) = (panels * t / tasks, panels * (t + 1) / tasks);
                        // SAFETY: tasks own disjoint column panels of C.
                        unsafe { block.compute(0, m, p0, p1) };
                    });
                }
            });
        }
    }

    /// `C = A·B` (or `+=`) for few rows of A and a B with contiguous columns (`b.rs == 1`), as
    /// dot products of rows of A with columns of B: A's rows are converted to bf16 pairs once
    /// (zero-padded to a multiple of 32 elements), B's columns are converted as they are read, so
    /// B is streamed once and never packed. Columns are split over `threads` tasks.
    ///
    /// # Safety
    /// As [`gemm`], and `a.rows ≤ DOT_MAX_M`, `b.rs == 1`.
    pub unsafe fn gemm_dot(
        a: MatRef,
        b: MatRef,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
        threads: usize,
    ) {
        let (m, k, n) = (a.rows, a.cols, b.cols);
        let kq = k.div_ceil(32) * 16; // pairs per packed row
        let mut apack = vec![0u32; m * kq];
        for i in 0..m {
            // SAFETY: row i of A lies in the view; the output row holds kq ≥ ⌈k/2⌉ pairs.
            unsafe {
                pack_panel::<1>(
                    a.data.as_ptr().add(i * a.rs),
                    a.rs,
                    a.cs,
                    1,
                    k,
                    apack.as_mut_ptr().add(i * kq),
                )
            };
        }
        let apack = &apack[..];
        let c = SendPtr(c);
        let columns = |j0: usize, j1: usize| {
            for j in (j0..j1).step_by(4) {
                for i0 in (0..m).step_by(4) {
                    // SAFETY: columns j..j + 4 ∩ ..j1 and rows i0..i0 + 4 ∩ ..m lie in the
                    // views and in C.
                    unsafe {
                        dot_tile(
                            &apack[i0 * kq..],
                            kq,
                            (m - i0).min(4),
                            b.data.as_ptr().add(j * b.cs),
                            b.cs,
                            (j1 - j).min(4),
                            k,
                            c.get().add(i0 * ldc + j),
                            ldc,
                            accumulate,
                        )
                    };
                }
            }
        };
        if threads <= 1 || m * n * k < DOT_PAR_MIN_FLOPS {
            columns(0, n);
        } else {
            (0..threads)
                .into_par_iter()
                .for_each(|t| columns(n * t / threads, n * (t + 1) / threads));
        }
    }

    /// `C[i][c] (=|+=) Σ_d a_i[d]·w_c[d]` for `rows ≤ 4` rows of packed A pairs (`a` row
    /// stride `kq` u32) and `cols ≤ 4` contiguous columns of `k` f32 (`w`, column stride `cs`):
    /// up to 16 independent accumulator chains, each B vector converted once for all rows.
    ///
    /// # Safety
    /// AVX512F/BF16; `a` holds `rows·kq` u32 with `kq = ⌈k/32⌉·16`; `w[c·cs..c·cs + k]` readable
    /// for `c < cols`; `c` valid for `rows × cols` elements at row stride `ldc`.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn dot_tile(
        a: &[u32],
        kq: usize,
        rows: usize,
        w: *const f32,
        cs: usize,
        cols: usize,
        k: usize,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
    ) {
        let mut acc = [[_mm512_setzero_ps(); 4]; 4];
        // SAFETY: masked loads read only elements < k of the columns < cols; `a` reads stay
        // below rows·kq; writes are inside the tile of C.
        unsafe {
            for d in (0..k).step_by(32) {
                let rem = k - d;
                let (m0, m1) = (mask16(rem), mask16(rem.saturating_sub(16)));
                let mut wv = [_mm512_setzero_si512(); 4];
                for (col, wv) in wv.iter_mut().enumerate().take(cols) {
                    let x = w.add(col * cs + d);
                    let x0 = _mm512_maskz_loadu_ps(m0, x);
                    let x1 = _mm512_maskz_loadu_ps(m1, x.wrapping_add(16));
                    *wv = to_bf16(x0, x1);
                }
                for (i, acc) in acc.iter_mut().enumerate().take(rows) {
                    let av = _mm512_loadu_si512(a.as_ptr().add(i * kq + d / 2).cast());
                    let av = std::mem::transmute::<__m512i, __m512bh>(av);
                    for (acc, wv) in acc.iter_mut().zip(&wv).take(cols) {
                        let wv = std::mem::transmute::<__m512i, __m512bh>(*wv);
                        *acc = _mm512_dpbf16_ps(*acc, av, wv);
                    }
                }
            }
            for (i, acc) in acc.iter().enumerate().take(rows) {
                for (col, acc) in acc.iter().enumerate().take(cols) {
                    let sum = _mm512_reduce_add_ps(*acc);
                    let dst = c.add(i * ldc + col);
                    *dst = if accumulate { *dst + sum } else { sum };
                }
            }
        }
    }

    /// One column block of the product: packed B for columns `jc..jc + nc` and all of K.
    #[derive(Clone, Copy)]
    struct Block<'a> {
        a: MatRef<'a>,
        bpack: &'a [u32],
        kp: usize,
        c: SendPtr,
        ldc: usize,
        jc: usize,
        nc: usize,
        accumulate: bool,
    }

    impl Block<'_> {
        /// Rows `r0..r1` of C times B panels `p0..p1` of this block.
        ///
        /// # Safety
        /// As [`gemm`]; no other task writes this part of C.
        unsafe fn compute(&self, r0: usize, r1: usize, p0: usize, p1: usize) {
            let a = self.a;
            let k = a.cols;
            let kc_max = slice_depth(k);
            with_buf(&A_BUF, MC * kc_max / 2, |abuf| {
                for pc in (0..k).step_by(kc_max) {
                    let kc = kc_max.min(k - pc);
                    let kpb = kc.div_ceil(2);
                    let overwrite = !self.accumulate && pc == 0;
                    for ic in (r0..r1).step_by(MC) {
                        let mc = MC.min(r1 - ic);
                        for ir in 0..mc.div_ceil(MR) {
                            let row = ic + ir * MR;
                            // SAFETY: rows row..row + mr and columns pc..pc + kc lie in the view;
                            // the panel fits in the buffer (MC·KC/2 u32).
                            unsafe {
                                pack_panel::<MR>(
                                    a.data.as_ptr().add(row * a.rs + pc * a.cs),
                                    a.rs,
                                    a.cs,
                                    MR.min(mc - ir * MR),
                                    kc,
                                    abuf.as_mut_ptr().add(ir * kpb * MR),
                                )
                            };
                        }
                        for jr in p0..p1 {
                            let col = jr * NR;
                            let nr = NR.min(self.nc - col);
                            // SAFETY: pair row pc/2 of panel jr is inside the packed B.
                            let bp =
                                unsafe { self.bpack.as_ptr().add(jr * self.kp * NR + pc / 2 * NR) };
                            for ir in 0..mc.div_ceil(MR) {
                                let row = ic + ir * MR;
                                // SAFETY: the tile's rows and columns are inside C.
                                unsafe {
                                    kernel(
                                        kpb,
                                        abuf.as_ptr().add(ir * kpb * MR),
                                        bp,
                                        self.c.0.add(row * self.ldc + self.jc + col),
                                        self.ldc,
                                        MR.min(mc - ir * MR),
                                        nr,
                                        overwrite,
                                    )
                                };
                            }
                        }
                    }
                }
            });
        }
    }

    /// The depth of the K slices: K cut into the fewest slices of at most [`KC`], of equal even
    /// depth (the last may be shorter).
    fn slice_depth(k: usize) -> usize {
        let slices = k.div_ceil(KC);
        (k.div_ceil(slices) + 1) & !1
    }

    /// The `MR × NR` microkernel: `C[..mr, ..nr] (=|+=) Σ_p A_pair[p] · B_pair[p]` over `kp`
    /// pairs of K, with A packed `[p][MR]` and B packed `[p][NR]` (u32 bf16 pairs).
    ///
    /// # Safety
    /// AVX512F/BF16; `a` holds `kp·MR` and `b` `kp·NR` u32; `c` valid for rows `..mr` (stride
    /// `ldc`) and columns `..nr`.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn kernel(
        kp: usize,
        a: *const u32,
        b: *const u32,
        c: *mut f32,
        ldc: usize,
        mr: usize,
        nr: usize,
        overwrite: bool,
    ) {
        // Fetch the C tile into L1 while the sums run (prefetches never fault; the pointers are
        // formed with wrapping arithmetic and only for rows and columns inside the tile).
        for i in 0..mr {
            for v in (0..nr).step_by(16) {
                _mm_prefetch::<_MM_HINT_T0>(c.wrapping_add(i * ldc + v).cast());
            }
            _mm_prefetch::<_MM_HINT_T0>(c.wrapping_add(i * ldc + nr - 1).cast());
        }
        let mut acc = [[_mm512_setzero_ps(); NV]; MR];
        for p in 0..kp {
            let bv: [__m512bh; NV] = std::array::from_fn(|v| {
                // SAFETY: inside the packed panel.
                unsafe { std::mem::transmute(_mm512_loadu_si512(b.add(p * NR + v * 16).cast())) }
            });
            for (i, row) in acc.iter_mut().enumerate() {
                // SAFETY: inside the packed panel.
                let av: __m512bh =
                    unsafe { std::mem::transmute(_mm512_set1_epi32(*a.add(p * MR + i) as i32)) };
                for (acc, bv) in row.iter_mut().zip(&bv) {
                    *acc = _mm512_dpbf16_ps(*acc, av, *bv);
                }
            }
        }
        for (i, row) in acc.iter().enumerate().take(mr) {
            for (v, acc) in row.iter().enumerate() {
                let col = v * 16;
                if col >= nr {
                    break;
                }
                let mask: __mmask16 = if nr - col >= 16 {
                    !0
                } else {
                    (1 << (nr - col)) - 1
                };
                // SAFETY: the masked lanes are inside C's row i.
                unsafe {
                    let ptr = c.add(i * ldc + col);
                    let val = if overwrite {
                        *acc
                    } else {
                        _mm512_add_ps(*acc, _mm512_maskz_loadu_ps(mask, ptr))
                    };
                    _mm512_mask_storeu_ps(ptr, mask, val);
                }
            }
        }
    }

    /// The lanes `< len` of a 16-lane mask.
    #[inline]
    fn mask16(len: usize) -> __mmask16 {
        if len >= 16 {
            !0
        } else {
            (1u16 << len) - 1
        }
    }

    /// Rounds 32 floats to bf16 (`vcvtne2ps2bf16`: nearest even, NaN quieted, subnormal inputs
    /// flushed to zero, which `vdpbf16ps` would do to them anyway): word `w` of the result is
    /// `x0[w]` for `w < 16`, else `x1[w - 16]`, so lane `q` is the pair `(x[2q], x[2q + 1])` of
    /// the 32 consecutive floats `x0 ++ x1`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    #[inline]
    fn to_bf16(x0: __m512, x1: __m512) -> __m512i {
        // SAFETY: a bit-for-bit reinterpretation of a 512-bit vector.
        unsafe { std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(x1, x0)) }
    }

    /// Transposes a 16 × 16 matrix of u32 held one row per vector (unpack 32-bit, unpack 64-bit,
    /// then a 4 × 4 transpose of 128-bit lanes).
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn transpose16(r: [__m512i; 16]) -> [__m512i; 16] {
        // t[2i] lane L: (r2i[4L], r2i+1[4L], r2i[4L+1], r2i+1[4L+1]); t[2i+1]: columns 4L+2, 4L+3.
        let mut t = [_mm512_setzero_si512(); 16];
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
        }
        // u[4j + c] lane L: column 4L + c of rows 4j..4j + 4.
        let mut u = [_mm512_setzero_si512(); 16];
        for j in 0..4 {
            u[4 * j] = _mm512_unpacklo_epi64(t[4 * j], t[4 * j + 2]);
            u[4 * j + 1] = _mm512_unpackhi_epi64(t[4 * j], t[4 * j + 2]);
            u[4 * j + 2] = _mm512_unpacklo_epi64(t[4 * j + 1], t[4 * j + 3]);
            u[4 * j + 3] = _mm512_unpackhi_epi64(t[4 * j + 1], t[4 * j + 3]);
        }
        // Column 4L + c: lane L of u[c], u[4 + c], u[8 + c], u[12 + c].
        let mut out = [_mm512_setzero_si512(); 16];
        for c in 0..4 {
            let (a, b, cc, d) = (u[c], u[4 + c], u[8 + c], u[12 + c]);
            let s0 = _mm512_shuffle_i32x4::<0x88>(a, b); // a0 a2 b0 b2
            let s1 = _mm512_shuffle_i32x4::<0xdd>(a, b); // a1 a3 b1 b3
            let s2 = _mm512_shuffle_i32x4::<0x88>(cc, d);
            let s3 = _mm512_shuffle_i32x4::<0xdd>(cc, d);
            out[c] = _mm512_shuffle_i32x4::<0x88>(s0, s2);
            out[4 + c] = _mm512_shuffle_i32x4::<0x88>(s1, s3);
            out[8 + c] = _mm512_shuffle_i32x4::<0xdd>(s0, s2);
            out[12 + c] = _mm512_shuffle_i32x4::<0xdd>(s1, s3);
        }
        out
    }

    /// Packs `nlines` lines of `depth` f32 (element `(l, d)` at `src[l·ls + d·ds]`) as bf16
    /// pairs: `out[p·W + l] = (x[l][2p], x[l][2p + 1])` for `p < ⌈depth/2⌉`, `l < W`, zero past
    /// `nlines` and past `depth`. Lines are the rows of an A panel (`ls = rs`, `ds = cs`) or the
    /// columns of a B panel (`ls = cs`, `ds = rs`).
    ///
    /// # Safety
    /// AVX512F/BW/BF16; every `(l, d)` with `l < nlines`, `d < depth` readable; `out` holds
    /// `⌈depth/2⌉·W` u32; `nlines ≤ W`.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn pack_panel<const W: usize>(
        src: *const f32,
        ls: usize,
        ds: usize,
        nlines: usize,
        depth: usize,
        out: *mut u32,
    ) {
        let kp = depth.div_ceil(2);
        // SAFETY (whole body): reads are of elements inside the view (masked loads touch only
        // the enabled lanes; their base pointers, and the prefetches', are formed with wrapping
        // arithmetic), writes are inside `out`.
        unsafe {
            if ds == 1 {
                // The pairs of a line are contiguous: 32 floats of each of 16 lines → 16 pairs
                // each, transposed so that each vector holds one pair of all 16 lines.
                const PF: usize = 128;
                for l0 in (0..W).step_by(16) {
                    let lines = nlines.saturating_sub(l0).min(16);
                    let store = mask16(W - l0);
                    for d in (0..depth).step_by(32) {
                        let rem = depth - d;
                        let (m0, m1) = (mask16(rem), mask16(rem.saturating_sub(16)));
                        let mut r = [_mm512_setzero_si512(); 16];
                        for (l, r) in r.iter_mut().enumerate().take(lines) {
                            let x = src.wrapping_add((l0 + l) * ls + d);
                            // 16 short streams: help the hardware prefetcher.
                            _mm_prefetch::<_MM_HINT_T0>(x.wrapping_add(PF).cast());
                            _mm_prefetch::<_MM_HINT_T0>(x.wrapping_add(PF + 16).cast());
                            let x0 = _mm512_maskz_loadu_ps(m0, x);
                            let x1 = _mm512_maskz_loadu_ps(m1, x.wrapping_add(16));
                            *r = to_bf16(x0, x1);
                        }
                        let cols = transpose16(r);
                        for (q, col) in cols.iter().enumerate().take(rem.div_ceil(2).min(16)) {
                            _mm512_mask_storeu_epi32(
                                out.add((d / 2 + q) * W + l0).cast(),
                                store,
                                *col,
                            );
                        }
                    }
                }
            } else if ls == 1 {
                // The lines are contiguous: 16 lines at two depths → 16 pairs, stored in place.
                // Word 2j of a pair vector is word j (depth d0) and word 2j + 1 is word 16 + j
                // (depth d1) of the converted x0 ++ x1.
                const IDX: [i16; 32] = {
                    let mut idx = [0i16; 32];
                    let mut j = 0;
                    while j < 16 {
                        idx[2 * j] = j as i16;
                        idx[2 * j + 1] = 16 + j as i16;
                        j += 1;
                    }
                    idx
                };
                let idx = _mm512_loadu_si512(IDX.as_ptr().cast());
                for p in 0..kp {
                    let (d0, d1) = (2 * p, 2 * p + 1);
                    for l0 in (0..W).step_by(16) {
                        for d in [d0 + 4, d1 + 4] {
                            _mm_prefetch::<_MM_HINT_T0>(src.wrapping_add(d * ds + l0).cast());
                        }
                        let load = mask16(nlines.saturating_sub(l0));
                        let x0 = _mm512_maskz_loadu_ps(load, src.wrapping_add(d0 * ds + l0));
                        let x1 = if d1 < depth {
                            _mm512_maskz_loadu_ps(load, src.wrapping_add(d1 * ds + l0))
                        } else {
                            _mm512_setzero_ps()
                        };
                        let pairs = _mm512_permutexvar_epi16(idx, to_bf16(x0, x1));
                        _mm512_mask_storeu_epi32(out.add(p * W + l0).cast(), mask16(W - l0), pairs);
                    }
                }
            } else {
                for p in 0..kp {
                    for l in 0..W {
                        let (d0, d1) = (2 * p, 2 * p + 1);
                        *out.add(p * W + l) = if l >= nlines {
                            0
                        } else {
                            let lo = super::bf16_bits(*src.add(l * ls + d0 * ds));
                            let hi = if d1 < depth {
                                super::bf16_bits(*src.add(l * ls + d1 * ds))
                            } else {
                                0
                            };
                            u32::from(lo) | u32::from(hi) << 16
                        };
                    }
                }
            }
        }
    }
}
