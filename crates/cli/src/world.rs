//! `chatforge world`: write the built-in world to files a user can read and edit.

use std::path::PathBuf;

use anyhow::{Context, Result};
use chatforge_data::world::{
    write_prompt_sets, write_sft, write_world, PromptSetSizes, World, WorldConfig,
};

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
    /// Prompts to rank for the reward model (prompts/rank.jsonl, train split).
    #[arg(long, default_value_t = PromptSetSizes::default().rank)]
    rank_prompts: usize,
    /// Prompts for PPO rollouts (prompts/ppo.jsonl, train split).
    #[arg(long, default_value_t = PromptSetSizes::default().ppo)]
    ppo_prompts: usize,
    /// Held-out prompts for evaluation (prompts/eval.jsonl, test split).
    #[arg(long, default_value_t = PromptSetSizes::default().eval)]
    eval_prompts: usize,
    /// Output directory (world.json, corpus/{train,val}.txt, sft/{train,val,val_tasks}.jsonl,
    /// prompts/{rank,ppo,eval}.jsonl).
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
    let sizes = PromptSetSizes {
        rank: a.rank_prompts,
        ppo: a.ppo_prompts,
        eval: a.eval_prompts,
    };
    let prompts = write_prompt_sets(&world, &a.out, &sizes, a.seed)
        .with_context(|| format!("writing prompt sets to {}", a.out.display()))?;
    eprintln!(
        "world {} -> {}\n  corpus: {} ({} documents, {:.1} MB), {} ({} documents)\n  sft: {} ({} conversations), {} ({}), tasks {}\n  prompts: {} ({}), {} ({}), {} ({})",
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
        sft.val_tasks.display(),
        prompts.rank.display(),
        sizes.rank,
        prompts.ppo.display(),
        sizes.ppo,
        prompts.eval.display(),
        sizes.eval
    );
    Ok(())
}
