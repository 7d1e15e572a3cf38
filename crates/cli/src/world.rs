//! `chatforge world`: write the built-in world to files a user can read and edit.

use std::path::PathBuf;

use anyhow::{Context, Result};
use chatforge_data::world::{write_sft, write_world, World, WorldConfig};

#[derive(clap::Args, Debug)]
pub struct WorldArgs {
    /// Seed of the world: the same seed gives the same world.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Approximate size of the pretraining corpus in bytes.
    #[arg(long, default_value_t = 4_000_000)]
    corpus_bytes: usize,
    /// SFT demonstrations to write (sft/train.jsonl).
    #[arg(long, default_value_t = 20_000)]
    sft_train: usize,
    /// Held-out SFT conversations and tasks (sft/val.jsonl, sft/val_tasks.jsonl).
    #[arg(long, default_value_t = 500)]
    sft_val: usize,
    /// Output directory (world.json, corpus/{train,val}.txt, sft/{train,val,val_tasks}.jsonl).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(a: WorldArgs) -> Result<()> {
    let cfg = WorldConfig {
        seed: a.seed,
        ..WorldConfig::default()
    };
    let world = World::generate(&cfg);
    let files = write_world(&world, &a.out, a.corpus_bytes, a.seed)
        .with_context(|| format!("writing the world to {}", a.out.display()))?;
    let sft = write_sft(&world, &a.out, a.sft_train, a.sft_val, a.seed)
        .with_context(|| format!("writing SFT data to {}", a.out.display()))?;
    eprintln!(
        "world {} -> {}\n  corpus: {} ({} documents, {:.1} MB), {} ({} documents)\n  sft: {} ({} conversations), {} ({}), tasks {}",
        a.seed,
        files.world_json.display(),
        files.train.display(),
        files.train_documents,
        files.train_bytes as f64 / 1e6,
        files.val.display(),
        files.val_documents,
        sft.train.display(),
        sft.train_conversations,
        sft.val.display(),
        sft.val_conversations,
        sft.val_tasks.display()
    );
    Ok(())
}
