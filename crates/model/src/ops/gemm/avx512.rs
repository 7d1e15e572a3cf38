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
                        _mm512_mask_storeu_epi32(out.add((d / 2 + q) * W + l0).cast(), store, *col);
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
