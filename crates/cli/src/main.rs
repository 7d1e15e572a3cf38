//! `chatforge`: the ChatGPT recipe end to end. One subcommand per stage.
//!
//! Logs and progress go to stderr; generated text goes to stdout.

mod bench;
mod chat;
mod device;
mod eval;
mod label;
mod ppo;
mod pretrain;
mod progress;
mod rank;
mod report_card;
mod reward;
mod sample;
mod score;
mod sft;
mod speedrun;
mod tokenizer;
mod world;

use clap::{Parser, Subcommand};

/// Train a tokenizer, pretrain a GPT, fine-tune it into an assistant, and chat with it — on two
/// CPU cores.
#[derive(Parser, Debug)]
#[command(name = "chatforge", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate the built-in world (facts and a pretraining corpus) into a directory.
    World(world::WorldArgs),
    /// Byte-level BPE tokenizers.
    #[command(subcommand)]
    Tokenizer(tokenizer::TokenizerCommand),
    /// Pretrain a GPT on a text corpus (next-token prediction), with exact resume.
    Pretrain(Box<pretrain::PretrainArgs>),
    /// Generate text from a checkpoint.
    Sample(sample::SampleArgs),
    /// Supervised fine-tuning on conversations (loss on assistant tokens only).
    Sft(Box<sft::SftArgs>),
    /// Chat with a model in the terminal.
    Chat(chat::ChatArgs),
    /// Serve a local web page where people rank K sampled responses per prompt.
    Label(label::LabelArgs),
    /// Rank K sampled responses per prompt with a judge (the reward model's training data).
    Rank(rank::RankArgs),
    /// Train a reward model on rankings (K-wise, from an SFT checkpoint).
    Reward(Box<reward::RewardArgs>),
    /// Score prompt/response pairs or ranking records with a reward model (JSON lines).
    Score(score::ScoreArgs),
    /// RLHF: PPO against the reward model with a KL penalty to SFT (PPO-ptx with --ptx-coef).
    Ppo(Box<ppo::PpoArgs>),
    /// Compare models on held-out prompts: win rates, Elo, helpful/honest/harmless, KL, tax.
    Eval(Box<eval::EvalArgs>),
    /// The whole recipe on the built-in world, then a report card (report.md, report.json).
    Speedrun(speedrun::SpeedrunArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

/// candle 0.11's CPU thread pool spins 25,000 times before parking a waiting worker. Next to
/// rayon (which runs gemm and our fused kernels) on a 2-core machine the spinning threads steal
/// the cores that do the work: measured here, a `tiny` training step takes 1.1 s with the
/// default and 0.52 s with a spin limit of 1. A user's own setting wins.
fn tune_candle_threads() {
    const VAR: &str = "CANDLE_BARRIER_POOL_SPIN_LIMIT";
    if std::env::var_os(VAR).is_none() {
        // Safe: called first thing in main, before any other thread exists.
        std::env::set_var(VAR, "1");
    }
}

/// glibc's malloc serves every block above its mmap threshold (at most 32 MiB, and adjusted
/// upwards only after a free) with a fresh `mmap`, and returns it with `munmap` when freed. A
/// training step allocates and frees the same activation- and gradient-sized buffers (megabytes
/// each) hundreds of times, so every one of them came back as fresh pages: zero-filled by the
/// kernel at a page fault each 4 KiB. Serving them from the heap, and not trimming it, lets a
/// step reuse the last step's pages. Peak memory is unchanged (the same buffers are live at the
/// peak); memory freed after the peak stays with the process until it exits.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_malloc() {
    const LARGE: libc::c_int = 1 << 30;
    // SAFETY: mallopt only sets allocator parameters; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, LARGE);
        libc::mallopt(libc::M_TRIM_THRESHOLD, LARGE);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_malloc() {}

/// Reads a stage's TOML config file; an unknown field is an error naming the file.
pub fn load_toml<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    toml::from_str::<T>(&text).map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.message()))
}

fn main() {
    tune_candle_threads();
    tune_malloc();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::World(a) => world::run(a),
        Command::Tokenizer(c) => tokenizer::run(c),
        Command::Pretrain(a) => pretrain::run(*a),
        Command::Sample(a) => sample::run(a),
        Command::Sft(a) => sft::run(*a),
        Command::Chat(a) => chat::run(a),
        Command::Label(a) => label::run(a),
        Command::Rank(a) => rank::run(a),
        Command::Reward(a) => reward::run(*a),
        Command::Score(a) => score::run(a),
        Command::Ppo(a) => ppo::run(*a),
        Command::Eval(a) => eval::run(*a),
        Command::Speedrun(a) => speedrun::run(a),
        Command::Bench(c) => bench::run(c),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
