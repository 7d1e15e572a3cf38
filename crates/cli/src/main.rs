//! `chatforge`: the ChatGPT recipe end to end. One subcommand per stage.
//!
//! Logs and progress go to stderr; generated text goes to stdout.

mod bench;
mod pretrain;
mod progress;
mod sample;
mod tokenizer;
mod world;

use clap::{Parser, Subcommand};

/// Train a tokenizer, pretrain a GPT, and sample from it — all on two CPU cores.
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
    Pretrain(pretrain::PretrainArgs),
    /// Generate text from a checkpoint.
    Sample(sample::SampleArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::World(a) => world::run(a),
        Command::Tokenizer(c) => tokenizer::run(c),
        Command::Pretrain(a) => pretrain::run(a),
        Command::Sample(a) => sample::run(a),
        Command::Bench(c) => bench::run(c),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
