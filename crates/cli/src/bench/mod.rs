//! `chatforge bench`: measurements a user can rerun, printed as markdown tables on stdout
//! (progress on stderr).
//!
//! - `bench tokenizer`: BPE training and encoding, ours vs `tiktoken-rs` ([`tokenizer`]).
//! - `bench train`: one pretraining step, ours vs PyTorch on the same weights ([`train`]).
//! - `bench generate`: prefill and KV-cache decode, ours vs PyTorch on the same weights
//!   ([`generate`]).
//!
//! The PyTorch side is `scripts/bench/torch_peer.py`, compiled into the binary and driven over a
//! line protocol ([`peer`]) so that our repetitions and PyTorch's alternate and machine noise
//! hits both. Python is optional: without it the peer is skipped with the reason.

mod generate;
mod peer;
mod tokenizer;
mod train;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use chatforge_data::Rng;
use chatforge_model::{GptConfig, PositionKind};

/// The benchmarks.
#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// BPE training and encoding throughput, ours vs tiktoken-rs.
    Tokenizer(tokenizer::TokenizerBenchArgs),
    /// Training step time, throughput and memory, ours vs PyTorch (eager f32 and bf16 autocast)
    /// on the same initial weights and batch.
    Train(train::TrainBenchArgs),
    /// Prefill and KV-cache decode throughput at batch 1 and 8, ours vs PyTorch on the same
    /// weights and prompts.
    Generate(generate::GenerateBenchArgs),
}

/// Runs one benchmark.
pub fn run(c: BenchCommand) -> Result<()> {
    match c {
        BenchCommand::Tokenizer(a) => tokenizer::run(a),
        BenchCommand::Train(a) => train::run(a),
        BenchCommand::Generate(a) => generate::run(a),
    }
}

/// Median wall time of `repeats` runs of `f`, in seconds.
fn median_secs(repeats: usize, mut f: impl FnMut()) -> f64 {
    let times: Vec<f64> = (0..repeats.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    median(&times).unwrap_or(f64::NAN)
}

/// The median of `xs` (the upper one for an even count), `None` when empty.
fn median(xs: &[f64]) -> Option<f64> {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

/// A directory under the system temp dir, removed with everything in it when dropped.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(label: &str) -> Result<ScratchDir> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "chatforge-bench-{label}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating scratch directory {}", dir.display()))?;
        Ok(ScratchDir(dir))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        // Best effort: a leftover temp dir is harmless.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes `config.json` and `model.safetensors` (our parameter names) into `dir`: the part of a
/// checkpoint the PyTorch peer reads.
fn write_model_dir(dir: &Path, cfg: &GptConfig, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
    let config = serde_json::to_vec_pretty(cfg)?;
    std::fs::write(dir.join("config.json"), config)
        .with_context(|| format!("writing {}", dir.join("config.json").display()))?;
    let weights = chatforge_model::checkpoint::tensors_to_safetensors(tensors)?;
    std::fs::write(dir.join("model.safetensors"), weights)
        .with_context(|| format!("writing {}", dir.join("model.safetensors").display()))?;
    Ok(())
}

/// Resident-memory figures of this process from `/proc/self/status`.
#[derive(Debug, Clone, Copy)]
struct ProcMemory {
    /// `VmHWM`: peak resident set size, bytes.
    peak: Option<u64>,
    /// `VmRSS`: current resident set size, bytes.
    current: Option<u64>,
}

/// This process's peak and current RSS (both `None` where `/proc` is missing).
fn proc_memory() -> ProcMemory {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    };
    ProcMemory {
        peak: field("VmHWM:"),
        current: field("VmRSS:"),
    }
}

/// `"1.23 GiB"` / `"456 MiB"`, or `"n/a"`.
fn fmt_bytes(b: Option<u64>) -> String {
    match b {
        Some(b) if b >= 1 << 30 => format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64),
        Some(b) => format!("{:.0} MiB", b as f64 / (1u64 << 20) as f64),
        None => "n/a".into(),
    }
}

/// The 1-, 5- and 15-minute load averages, as written in `/proc/loadavg`.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "n/a".into())
}

/// Median GFLOP/s of an `n × n × n` f32 GEMM through candle's matmul on `device` (`2 n³`
/// flops), after one warm-up: the ceiling our training step can reach.
fn candle_matmul_gflops(n: usize, repeats: usize, device: &Device) -> Result<f64> {
    let mut rng = Rng::derive(0, "bench-matmul");
    let mut fill = || -> Result<Tensor> {
        let data: Vec<f32> = (0..n * n).map(|_| rng.next_f32() - 0.5).collect();
        Ok(Tensor::from_vec(data, (n, n), device)?)
    };
    let (a, b) = (fill()?, fill()?);
    a.matmul(&b)?;
    device.synchronize()?;
    let mut times = Vec::with_capacity(repeats);
    for _ in 0..repeats.max(1) {
        let t = Instant::now();
        std::hint::black_box(a.matmul(&b)?);
        device.synchronize()?;
        times.push(t.elapsed().as_secs_f64());
    }
    let t = median(&times).unwrap_or(f64::NAN);
    Ok(2.0 * (n as f64).powi(3) / t / 1e9)
}

/// Parameters that take part in a matmul: all but the position table and, when the LM head is
/// untied, the input embedding (a lookup). The `N` of the `6·N·tokens` FLOP estimate.
fn matmul_params(cfg: &GptConfig) -> usize {
    let mut n = cfg.num_params();
    if cfg.positions == PositionKind::Learned {
        n -= cfg.context_length * cfg.n_embd;
    }
    if !cfg.tie_embeddings {
        n -= cfg.vocab_size * cfg.n_embd;
    }
    n
}

/// Prints a markdown table.
fn print_table(header: &[&str], rows: &[Vec<String>]) {
    println!("| {} |", header.join(" | "));
    println!("|{}", "---|".repeat(header.len()));
    for r in rows {
        println!("| {} |", r.join(" | "));
    }
}

/// `theirs / ours` as `"1.23x"` (above 1: we are faster), or `"-"`.
fn speedup(ours_secs: f64, theirs_secs: Option<f64>) -> String {
    match theirs_secs {
        Some(t) if ours_secs > 0.0 => format!("{:.2}x", t / ours_secs),
        _ => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_takes_the_middle_and_the_upper_of_two() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0]), Some(4.0));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn matmul_params_leave_out_lookups_only() {
        // gpt2-bench, vocab 4096: tied, learned positions (256 × 384 excluded).
        let cfg = GptConfig::preset("gpt2-bench", 4096).unwrap();
        assert_eq!(matmul_params(&cfg), cfg.num_params() - 256 * 384);
        // llama-tiny: untied, rope: the input embedding (4096 × 128) is a lookup.
        let cfg = GptConfig::preset("llama-tiny", 4096).unwrap();
        assert_eq!(matmul_params(&cfg), cfg.num_params() - 4096 * 128);
    }
}
