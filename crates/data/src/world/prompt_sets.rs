//! The world's prompt sets: prompts to rank for the reward model, prompts for PPO rollouts,
//! and held-out prompts for evaluation, each with its reference reply and task.
//!
//! A prompt record is an SFT task ([`sft_tasks`]) without its gold reply: `prompt` is the
//! task conversation's prompt (a system message sometimes, the user's question, and for
//! multi-turn tasks the earlier turn), `reference` the gold reply, `task` its kind and answer,
//! so the gold judge can grade any reply ([`PromptRecord::task`]).
//!
//! [`write_prompt_sets`] writes `prompts/rank.jsonl` and `prompts/ppo.jsonl` from the train
//! split and `prompts/eval.jsonl` from the test split, each drawn with its own seed derived
//! from the run's seed. The split rules of [`sft_tasks`] hold: no underlying question of the
//! evaluation prompts appears in any training data (SFT, rankings, PPO) and none appears in
//! the SFT validation set either (that is the validation split). The rank and PPO sets share
//! the train split with SFT, as in InstructGPT, where all three came from one prompt
//! distribution.

use std::path::{Path, PathBuf};

use super::tasks::{sft_tasks, Split, Task};
use super::World;
use crate::error::{Error, Result};
use crate::prompts::{write_prompts, PromptRecord, TaskSpec};
use crate::Rng;

/// How many prompts each set holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PromptSetSizes {
    /// Prompts to rank for the reward model (`prompts/rank.jsonl`).
    pub rank: usize,
    /// Prompts for PPO rollouts (`prompts/ppo.jsonl`).
    pub ppo: usize,
    /// Held-out prompts for evaluation (`prompts/eval.jsonl`).
    pub eval: usize,
}

impl Default for PromptSetSizes {
    fn default() -> Self {
        Self {
            rank: 1000,
            ppo: 2000,
            eval: 300,
        }
    }
}

/// The files [`write_prompt_sets`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptFiles {
    /// `dir/prompts/rank.jsonl` (train split).
    pub rank: PathBuf,
    /// `dir/prompts/ppo.jsonl` (train split, another seed).
    pub ppo: PathBuf,
    /// `dir/prompts/eval.jsonl` (test split).
    pub eval: PathBuf,
}

/// The prompt record of a task: its prompt, its gold reply as the reference, its kind and
/// answer.
pub fn prompt_record(task: &Task) -> PromptRecord {
    PromptRecord {
        prompt: task.conversation.prompt().to_vec(),
        reference: task.conversation.reply().map(str::to_string),
        task: Some(TaskSpec {
            kind: task.kind,
            answer: task.answer.clone(),
        }),
    }
}

/// `n` prompt records of `split` ([`sft_tasks`] with `seed`, made into records by
/// [`prompt_record`]), deterministic in (`world`, `split`, `n`, `seed`).
pub fn prompt_records(world: &World, split: Split, n: usize, seed: u64) -> Vec<PromptRecord> {
    sft_tasks(world, split, n, seed)
        .iter()
        .map(prompt_record)
        .collect()
}

/// Writes the three prompt sets of `sizes` to `dir/prompts/`, each file atomically (module
/// docs). The sets' seeds are derived from `seed` and their names, so they differ from each
/// other and from the SFT data written with the same `seed`.
pub fn write_prompt_sets(
    world: &World,
    dir: &Path,
    sizes: &PromptSetSizes,
    seed: u64,
) -> Result<PromptFiles> {
    if world.people.is_empty() || world.cities.is_empty() || world.countries.is_empty() {
        return Err(Error::InvalidWorld {
            what: "prompt sets need at least one country, city and person".into(),
        });
    }
    let prompts = dir.join("prompts");
    let files = PromptFiles {
        rank: prompts.join("rank.jsonl"),
        ppo: prompts.join("ppo.jsonl"),
        eval: prompts.join("eval.jsonl"),
    };
    let sets = [
        (&files.rank, Split::Train, sizes.rank, "rank"),
        (&files.ppo, Split::Train, sizes.ppo, "ppo"),
        (&files.eval, Split::Test, sizes.eval, "eval"),
    ];
    for (path, split, n, name) in sets {
        let set_seed = Rng::derive(seed, &format!("prompt-sets/{name}")).next_u64();
        write_prompts(path, &prompt_records(world, split, n, set_seed))?;
    }
    Ok(files)
}

#[cfg(test)]
mod tests;
