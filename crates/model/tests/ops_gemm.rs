//! `ops::gemm::matmul` against an f64 reference: F32 on the raw inputs, Bf16 on the inputs
//! rounded to bf16 by the `half` crate (an independent implementation of round-to-nearest-even),
//! through the AVX512_BF16 kernel and the fallback, at odd, prime and blocking-edge sizes, every
//! operand layout, accumulate on and off, padded C rows and sub-views of larger buffers.
//!
//! Tolerance: the f32 sums may differ from the exact f64 sum by about `k·2^-24·Σ|a||b|` in the
//! worst case; we allow `1e-5·Σ|a||b|` per element (k ≤ 4096 here, sums of random-sign terms).
//! Skipping the bf16 rounding moves a Bf16 result by about `2^-9/√k·Σ|a||b|`, 1e-4 of it at
//! k = 257, so the Bf16 checks fail if the rounding is missing or wrong.

use chatforge_model::ops::gemm::{
    bf16_bits, bf16_kernel_available, matmul, matmul_with, round_bf16, Bf16Path, MatRef,
    MatmulPrecision,
};

/// xorshift64*: deterministic test data without a dependency.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in [-1, 1): random in all 24 mantissa bits, so bf16 rounding changes almost all.
    fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// How a test operand is laid out in its buffer.
#[derive(Clone, Copy, Debug)]
enum Layout {
    /// Row-major with padded rows (`cs = 1`).
    Plain,
    /// Stored transposed with padding (`rs = 1`): a transposed view.
    Trans,
    /// Neither stride 1 (every other column of a wider matrix).
    Strided,
}

/// An operand: a buffer and a view into it that starts at an offset (a sub-view).
struct Operand {
    buf: Vec<f32>,
    off: usize,
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl Operand {
    fn new(rows: usize, cols: usize, layout: Layout, rng: &mut Rng) -> Self {
        let off = 3;
        let (rs, cs) = match layout {
            Layout::Plain => (cols + 2, 1),
            Layout::Trans => (1, rows + 1),
            Layout::Strided => (2 * cols + 1, 2),
        };
        let len = off + rows * rs + cols * cs + 5;
        let buf = (0..len).map(|_| rng.uniform()).collect();
        Self {
            buf,
            off,
            rows,
            cols,
            rs,
            cs,
        }
    }
    fn view(&self) -> MatRef<'_> {
        MatRef {
            data: &self.buf[self.off..],
            rows: self.rows,
            cols: self.cols,
            rs: self.rs,
            cs: self.cs,
        }
    }
    fn get(&self, i: usize, j: usize) -> f32 {
        self.buf[self.off + i * self.rs + j * self.cs]
    }
    fn set(&mut self, i: usize, j: usize, x: f32) {
        self.buf[self.off + i * self.rs + j * self.cs] = x;
    }
}

fn reference_round(x: f32) -> f32 {
    half::bf16::from_f32(x).to_f32()
}

/// The implementations under test: (precision, bf16 path, name).
fn paths() -> Vec<(MatmulPrecision, Bf16Path, &'static str)> {
    let mut v = vec![
        (MatmulPrecision::F32, Bf16Path::Auto, "f32"),
        (MatmulPrecision::Bf16, Bf16Path::Fallback, "bf16 fallback"),
    ];
    if bf16_kernel_available() {
        v.push((MatmulPrecision::Bf16, Bf16Path::Kernel, "bf16 kernel"));
    }
    v
}

/// Runs one product and compares every element (and C's padding) with the f64 reference.
#[allow(clippy::too_many_arguments)]
fn check(
    (prec, path, name): (MatmulPrecision, Bf16Path, &str),
    m: usize,
    k: usize,
    n: usize,
    la: Layout,
    lb: Layout,
    accumulate: bool,
    pad: usize,
    rng: &mut Rng,
) {
    let a = Operand::new(m, k, la, rng);
    let b = Operand::new(k, n, lb, rng);
    let ldc = n + pad;
    let c0: Vec<f32> = (0..m * ldc).map(|_| rng.uniform()).collect();
    let mut c = c0.clone();
    matmul_with(prec, path, a.view(), b.view(), &mut c, ldc, accumulate).unwrap();
    let round = |x: f32| match prec {
        MatmulPrecision::F32 => x,
        MatmulPrecision::Bf16 => reference_round(x),
    };
    let what = format!("{name} {m}x{k}x{n} {la:?}·{lb:?} acc={accumulate} ldc={ldc}");
    for i in 0..m {
        for j in 0..n {
            let (mut sum, mut abs) = (0f64, 0f64);
            for p in 0..k {
                let t = f64::from(round(a.get(i, p))) * f64::from(round(b.get(p, j)));
                sum += t;
                abs += t.abs();
            }
            let base = if accumulate {
                f64::from(c0[i * ldc + j])
            } else {
                0.0
            };
            let got = f64::from(c[i * ldc + j]);
            let tol = 1e-5 * (abs + base.abs()) + 1e-30;
            assert!(
                (got - (sum + base)).abs() <= tol,
                "{what}: C[{i}][{j}] = {got}, want {} (tol {tol})",
                sum + base
            );
        }
        for j in n..ldc {
            assert_eq!(
                c[i * ldc + j],
                c0[i * ldc + j],
                "{what}: padding C[{i}][{j}] written"
            );
        }
    }
}

const LAYOUTS: [Layout; 3] = [Layout::Plain, Layout::Trans, Layout::Strided];

#[test]
fn square_odd_and_prime_sizes_every_layout() {
    let mut rng = Rng(0x1234_5678);
    for path in paths() {
        for s in [1, 2, 3, 7, 13, 17, 31, 33, 65] {
            for la in LAYOUTS {
                for lb in LAYOUTS {
                    for accumulate in [false, true] {
                        check(path, s, s, s, la, lb, accumulate, s % 3, &mut rng);
                    }
                }
            }
        }
        for s in [127, 129, 257] {
            for (la, lb) in [
                (Layout::Plain, Layout::Trans),
                (Layout::Trans, Layout::Plain),
            ] {
                check(path, s, s, s, la, lb, s == 129, 1, &mut rng);
            }
        }
    }
}

/// Mixed sizes cross the register tile (12 × 32), the K slices (at most 384 deep), the A block
/// (192 rows), the split of columns between threads used for few rows (20 × 700 × 400) and the
/// dot-product path for at most 8 rows with a transposed B, with odd K everywhere.
#[test]
fn rectangular_sizes_across_tile_and_block_edges() {
    let mut rng = Rng(42);
    let shapes = [
        (1, 257, 3),
        (13, 1, 129),
        (33, 65, 17),
        (127, 31, 257),
        (257, 129, 7),
        (3, 257, 513),
        (8, 384, 97),
        (200, 513, 45),
        (12, 2, 32),
        (25, 3, 65),
        (20, 700, 400),
    ];
    for path in paths() {
        for &(m, k, n) in &shapes {
            for (la, lb) in [
                (Layout::Plain, Layout::Plain),
                (Layout::Plain, Layout::Trans),
                (Layout::Trans, Layout::Plain),
                (Layout::Trans, Layout::Trans),
            ] {
                check(path, m, k, n, la, lb, m % 2 == 1, 2, &mut rng);
            }
        }
    }
}

/// A packed B wider than one column block (the kernel packs at most 2^21 pairs at once).
#[test]
fn wide_b_is_split_into_column_blocks() {
    let mut rng = Rng(7);
    for path in paths() {
        check(
            path,
            3,
            4097,
            1100,
            Layout::Plain,
            Layout::Trans,
            true,
            0,
            &mut rng,
        );
    }
}

#[test]
fn empty_dimensions() {
    for (prec, path, name) in paths() {
        let a = [1.0f32; 6];
        let b = [1.0f32; 6];
        // k = 0: C = 0, or unchanged when accumulating; the padding stays.
        let mut c = vec![5.0f32; 2 * 4];
        let av = MatRef {
            data: &a,
            rows: 2,
            cols: 0,
            rs: 0,
            cs: 1,
        };
        let bv = MatRef {
            data: &b,
            rows: 0,
            cols: 3,
            rs: 3,
            cs: 1,
        };
        matmul_with(prec, path, av, bv, &mut c, 4, true).unwrap();
        assert_eq!(c, vec![5.0; 8], "{name}");
        matmul_with(prec, path, av, bv, &mut c, 4, false).unwrap();
        assert_eq!(c, [0.0, 0.0, 0.0, 5.0, 0.0, 0.0, 0.0, 5.0], "{name}");
        // m = 0 or n = 0: nothing to write, C may be empty.
        let av = MatRef {
            data: &[],
            rows: 0,
            cols: 2,
            rs: 2,
            cs: 1,
        };
        let bv = MatRef {
            data: &b,
            rows: 2,
            cols: 3,
            rs: 3,
            cs: 1,
        };
        matmul_with(prec, path, av, bv, &mut [], 3, false).unwrap();
        let av = MatRef {
            data: &a,
            rows: 3,
            cols: 2,
            rs: 2,
            cs: 1,
        };
        let bv = MatRef {
            data: &[],
            rows: 2,
            cols: 0,
            rs: 0,
            cs: 1,
        };
        matmul_with(prec, path, av, bv, &mut [], 0, false).unwrap();
    }
}

#[test]
fn bf16_rounding_hand_values() {
    let e = |x: i32| 2f32.powi(x);
    // bf16 keeps 7 fraction bits: the ulp of [1, 2) is 2^-7.
    let cases = [
        (1.0 + e(-8), 1.0),                     // tie, kept part even: down
        (1.0 + 3.0 * e(-8), 1.0 + e(-6)),       // tie, kept part odd: up to even
        (1.0 + e(-8) + e(-20), 1.0 + e(-7)),    // just above the tie: up
        (1.0 + e(-8) - e(-20), 1.0),            // just below the tie: down
        (-(1.0 + 3.0 * e(-8)), -(1.0 + e(-6))), // symmetric in sign
        (f32::MAX, f32::INFINITY),              // past the largest bf16: infinity
        (f32::INFINITY, f32::INFINITY),
        (f32::NEG_INFINITY, f32::NEG_INFINITY),
        (-0.0, -0.0),
        (e(-130), e(-130)), // subnormals round like any value
    ];
    for (x, want) in cases {
        assert_eq!(round_bf16(x).to_bits(), want.to_bits(), "round_bf16({x:e})");
    }
    // NaNs stay NaN, including a signalling NaN whose payload sits in the dropped bits
    // (truncation with a carry would make it infinity).
    for bits in [0x7f80_0001u32, 0xff80_0001, 0x7fc0_0000, 0x7fff_ffff] {
        assert!(round_bf16(f32::from_bits(bits)).is_nan(), "{bits:#x}");
        assert_eq!(
            bf16_bits(f32::from_bits(bits)) & 0x8000,
            (bits >> 16) as u16 & 0x8000
        );
    }
}

#[test]
fn bf16_rounding_matches_half() {
    let mut rng = Rng(99);
    for _ in 0..200_000 {
        let x = f32::from_bits(rng.next_u64() as u32);
        let (got, want) = (round_bf16(x), reference_round(x));
        assert!(
            got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
            "{x:e} ({:#x}): {got:e} vs {want:e}",
            x.to_bits()
        );
    }
}

/// The rounding inside the kernel's packing (each layout takes its own packing code): products
/// whose exact result shows how every input was rounded.
#[test]
fn bf16_products_round_inputs_to_nearest_even() {
    let e = |x: i32| 2f32.powi(x);
    for (prec, path, name) in paths() {
        if prec != MatmulPrecision::Bf16 {
            continue;
        }
        for la in LAYOUTS {
            for lb in LAYOUTS {
                // A: 2 × 3 with a tie that rounds down and one that rounds up; B: 3 × 33
                // (past one 32-column tile), all ones except one tie in column 32.
                let mut rng = Rng(5);
                let mut a = Operand::new(2, 3, la, &mut rng);
                let mut b = Operand::new(3, 33, lb, &mut rng);
                let av = [[1.0 + e(-8), 1.0 + 3.0 * e(-8), 0.5], [f32::MAX, 1.0, 1.0]];
                for (i, row) in av.iter().enumerate() {
                    for (p, &x) in row.iter().enumerate() {
                        a.set(i, p, x);
                    }
                }
                for p in 0..3 {
                    for j in 0..33 {
                        b.set(p, j, if j == 32 && p == 2 { 1.0 + e(-8) } else { 1.0 });
                    }
                }
                let mut c = vec![0f32; 2 * 33];
                matmul_with(prec, path, a.view(), b.view(), &mut c, 33, false).unwrap();
                let what = format!("{name} {la:?}·{lb:?}");
                // 1 + (1 + 2^-6) + 0.5, exact in f32.
                assert_eq!(c[0], 2.5 + e(-6), "{what}");
                assert_eq!(c[32], 2.5 + e(-6), "{what}");
                // f32::MAX rounds to infinity in bf16.
                assert!(c[33..].iter().all(|&x| x == f32::INFINITY), "{what}");
            }
        }
    }
}

#[test]
fn nan_and_infinity_propagate() {
    for (prec, path, name) in paths() {
        // A = [[NaN, 1], [inf, 0], [1, 1]], B = [[1, 0, -1], [0, 2, 1]].
        let a = [f32::NAN, 1.0, f32::INFINITY, 0.0, 1.0, 1.0];
        let b = [1.0, 0.0, -1.0, 0.0, 2.0, 1.0];
        let mut c = [0f32; 9];
        let av = MatRef {
            data: &a,
            rows: 3,
            cols: 2,
            rs: 2,
            cs: 1,
        };
        let bv = MatRef {
            data: &b,
            rows: 2,
            cols: 3,
            rs: 3,
            cs: 1,
        };
        matmul_with(prec, path, av, bv, &mut c, 3, false).unwrap();
        assert!(c[..3].iter().all(|x| x.is_nan()), "{name}: {c:?}");
        assert_eq!(c[3], f32::INFINITY, "{name}");
        assert!(c[4].is_nan(), "{name}: inf · 0 is NaN"); // inf·0 + 0·2
        assert_eq!(c[5], f32::NEG_INFINITY, "{name}");
        assert_eq!(&c[6..], &[1.0, 2.0, 0.0], "{name}");
    }
}

#[test]
fn bad_shapes_are_errors() {
    let data = [0f32; 12];
    let ok = MatRef {
        data: &data,
        rows: 3,
        cols: 4,
        rs: 4,
        cs: 1,
    };
    for prec in [MatmulPrecision::F32, MatmulPrecision::Bf16] {
        let mut c = [0f32; 16];
        let err = |a: MatRef, b: MatRef, c: &mut [f32], ldc: usize| {
            let e = matmul(prec, a, b, c, ldc, false).expect_err("bad shape accepted");
            e.to_string()
        };
        let b4 = MatRef {
            data: &data,
            rows: 4,
            cols: 3,
            rs: 3,
            cs: 1,
        };
        assert!(err(ok, ok, &mut c, 4).contains("inner"));
        // A view whose last element is past its slice, and strides that overflow.
        let oob = MatRef { rs: 5, ..ok };
        assert!(err(oob, b4, &mut c, 3).contains("A view"));
        let huge = MatRef {
            cs: usize::MAX / 2,
            ..ok
        };
        assert!(err(huge, b4, &mut c, 3).contains("A view"));
        let oob_b = MatRef { cs: 4, ..b4 };
        assert!(err(ok, oob_b, &mut c, 3).contains("B view"));
        // ldc below n, and C too short for (m - 1)·ldc + n.
        assert!(err(ok, b4, &mut c, 2).contains("row stride"));
        assert!(err(ok, b4, &mut c[..8], 3).contains("does not fit"));
        assert!(err(ok, b4, &mut c, usize::MAX).contains("does not fit"));
        // The tight case is fine.
        matmul(prec, ok, b4, &mut c[..9], 3, false).unwrap();
    }
    if !bf16_kernel_available() {
        let mut c = [0f32; 9];
        let b4 = MatRef {
            data: &data,
            rows: 4,
            cols: 3,
            rs: 3,
            cs: 1,
        };
        let r = matmul_with(
            MatmulPrecision::Bf16,
            Bf16Path::Kernel,
            ok,
            b4,
            &mut c,
            3,
            false,
        );
        assert!(r.is_err());
    }
}
