//! `chatforge world`: write the built-in world to files a user can read and edit.

use std::path::PathBuf;

use anyhow::{Context, Result};
use chatforge_data::world::{write_world, World, WorldConfig};

#[derive(clap::Args, Debug)]
pub struct WorldArgs {
    /// Seed of the world: the same seed gives the same world.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Approximate size of the pretraining corpus in bytes.
    #[arg(long, default_value_t = 4_000_000)]
    corpus_bytes: usize,
    /// Output directory (world.json, corpus/train.txt, corpus/val.txt).
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
    eprintln!("{files:#?}");
    Ok(())
}
