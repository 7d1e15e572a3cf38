//! GFLOP/s of `ops::gemm::matmul` at the shapes of training a GPT (2048 tokens per step, width
//! 384, MLP 1536, vocab 4096) with their real strides, F32 (the `gemm` crate) against Bf16 (our
//! AVX512_BF16 kernel), plus decode shapes (m = 1..8) and 2048³.
//!
//! `cargo run --release -p chatforge-model --example gemm_bench -- [--reps N] [--filter S]
//! [--only f32|bf16] [--fallback 1] [--cpu-time 1]`

use std::time::Instant;

use chatforge_model::ops::gemm::{matmul_with, Bf16Path, MatRef, MatmulPrecision};

/// Row-major or transposed storage of an operand.
#[derive(Clone, Copy)]
enum Layout {
    /// (rows, cols) stored row-major.
    Plain,
    /// Stored as its transpose (cols, rows) row-major: `rs = 1`, `cs = rows`.
    Trans,
}

struct Shape {
    name: String,
    m: usize,
    k: usize,
    n: usize,
    a: Layout,
    b: Layout,
}

fn shapes() -> Vec<Shape> {
    let mut v = Vec::new();
    let mut push = |name: String, m, k, n, a, b| {
        v.push(Shape {
            name,
            m,
            k,
            n,
            a,
            b,
        })
    };
    let t = 2048;
    // (out, in) of every linear layer: qkv, attn proj, MLP up, MLP down, LM head.
    let layers = [
        (1152, 384),
        (384, 384),
        (1536, 384),
        (384, 1536),
        (4096, 384),
    ];
    for (out, inp) in layers {
        push(
            format!("fwd x·Wᵀ {out}x{inp}"),
            t,
            inp,
            out,
            Layout::Plain,
            Layout::Trans,
        );
    }
    for (out, inp) in layers {
        push(
            format!("dX=dY·W {out}x{inp}"),
            t,
            out,
            inp,
            Layout::Plain,
            Layout::Plain,
        );
    }
    for (out, inp) in layers {
        push(
            format!("dW=dYᵀ·X {out}x{inp}"),
            out,
            t,
            inp,
            Layout::Trans,
            Layout::Plain,
        );
    }
    push(
        "square 2048³".into(),
        2048,
        2048,
        2048,
        Layout::Plain,
        Layout::Plain,
    );
    // Small squares: where threading starts to pay (`F32_PAR_MIN_FLOPS`, `PAR_MIN_FLOPS`).
    for s in [32, 64, 128, 192, 256, 384] {
        push(
            format!("square {s}³"),
            s,
            s,
            s,
            Layout::Plain,
            Layout::Plain,
        );
    }
    for m in [1, 4, 8] {
        push(
            format!("decode m={m} 1536x384"),
            m,
            384,
            1536,
            Layout::Plain,
            Layout::Trans,
        );
        push(
            format!("decode m={m} 4096x384"),
            m,
            384,
            4096,
            Layout::Plain,
            Layout::Trans,
        );
    }
    v
}

/// A deterministic pseudo-random matrix of `len` values in [-1, 1).
fn data(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn view(data: &[f32], rows: usize, cols: usize, layout: Layout) -> MatRef<'_> {
    match layout {
        Layout::Plain => MatRef {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        },
        Layout::Trans => MatRef {
            data,
            rows,
            cols,
            rs: 1,
            cs: rows,
        },
    }
}

/// Time this thread has run on a CPU (Linux `/proc/thread-self/schedstat`), in seconds; 0 where
/// unavailable.
fn thread_cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |ns| ns / 1e9)
}

/// GFLOP/s after a warm-up run: the median over `reps` wall-clock timings or, with `cpu_time`
/// (meaningful with `RAYON_NUM_THREADS=1` on a machine shared with other work), the mean over
/// at least `reps` runs and 0.5 s of the time the calling thread ran.
fn gflops(
    shape: &Shape,
    prec: MatmulPrecision,
    path: Bf16Path,
    reps: usize,
    cpu_time: bool,
) -> f64 {
    let (m, k, n) = (shape.m, shape.k, shape.n);
    let a = data(m * k, 1);
    let b = data(k * n, 2);
    let mut c = vec![0f32; m * n];
    let (av, bv) = (view(&a, m, k, shape.a), view(&b, k, n, shape.b));
    let mut run = || matmul_with(prec, path, av, bv, &mut c, n, false).expect("matmul");
    run(); // warm-up: page faults, thread-local buffers
    let flops = 2.0 * (m * n * k) as f64;
    if cpu_time {
        // The kernel updates a thread's run time only at scheduler ticks (4 ms), so time enough
        // runs for at least 0.5 s of it and report the mean.
        let (cpu0, mut runs) = (thread_cpu_seconds(), 0);
        while runs < reps || thread_cpu_seconds() - cpu0 < 0.5 {
            run();
            runs += 1;
        }
        return flops * runs as f64 / (thread_cpu_seconds() - cpu0) / 1e9;
    }
    // Tiny products: repeat inside one timing so it is not all clock granularity.
    let inner = (50_000_000 / (m * n * k)).clamp(1, 1000);
    let mut times: Vec<f64> = (0..reps)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..inner {
                run();
            }
            start.elapsed().as_secs_f64() / inner as f64
        })
        .collect();
    times.sort_by(f64::total_cmp);
    flops / times[times.len() / 2] / 1e9
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let reps: usize = arg("--reps").and_then(|r| r.parse().ok()).unwrap_or(9);
    let filter = arg("--filter").unwrap_or_default();
    let cpu_time = arg("--cpu-time").is_some();
    let path = if arg("--fallback").is_some() {
        Bf16Path::Fallback
    } else {
        Bf16Path::Auto
    };
    println!(
        "threads {}, bf16 kernel {}",
        rayon::current_num_threads(),
        chatforge_model::ops::gemm::bf16_kernel_available()
    );
    println!("| shape | m×k×n | F32 GFLOP/s | Bf16 GFLOP/s | Bf16/F32 |");
    println!("|---|---|---:|---:|---:|");
    for shape in shapes().iter().filter(|s| s.name.contains(&filter)) {
        let only = arg("--only").unwrap_or_default();
        let f32 = if only == "bf16" {
            f64::NAN
        } else {
            gflops(shape, MatmulPrecision::F32, Bf16Path::Auto, reps, cpu_time)
        };
        let bf16 = if only == "f32" {
            f64::NAN
        } else {
            gflops(shape, MatmulPrecision::Bf16, path, reps, cpu_time)
        };
        println!(
            "| {} | {}×{}×{} | {f32:.1} | {bf16:.1} | {:.2} |",
            shape.name,
            shape.m,
            shape.k,
            shape.n,
            bf16 / f32
        );
    }
}
