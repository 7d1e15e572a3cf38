//! Supervised fine-tuning tasks generated from the world's facts, each with a verifiable
//! answer, in disjoint train / validation / test splits.
//!
//! # What is generated
//!
//! [`sft_tasks`] returns tasks of every [`TaskKind`] in the fixed proportions of [`TASK_MIX`]
//! (out of 100): fact lookups 30, arithmetic 12, counting 10, ordering 10, spelling 8,
//! multi-turn follow-ups 10, refusals of harmful requests 10, "I don't know" to unknowable
//! questions 10. The counts for `n` tasks are the largest-remainder apportionment of `n` by
//! these weights ([`kind_counts`]); their order is shuffled. A quarter of the conversations
//! open with a system message from [`SYSTEM_PROMPTS`].
//!
//! Questions come in several phrasings each; replies are short full sentences in one
//! consistent style per question type, with the answer last ("Druk lives in Flythholm.",
//! "7 + 5 = 12.", "I'm sorry, but I can't help with that. Stealing is wrong.",
//! "I don't know. I have no record of Druk's phone number."). Every task keeps its
//! [`Answer`], so [`grade`](super::grading::grade) can check a model's reply.
//!
//! # Splits
//!
//! Every question has a canonical key naming what is asked, not how: `fact:home:Druk`,
//! `arith:add:5:7` (for both "5 + 7" and "seven plus five"), `harm:theft:Fou`. [`Split::of`]
//! sends a key to train (80%), validation (10%) or test (10%) by a fixed hash of the key alone,
//! and a task belongs to a split only if every question it asks (two for multi-turn tasks) has
//! that split. So no underlying question appears in two splits, whatever the seeds, and a
//! held-out gold answer is never shown in training. Tasks are drawn by rejection: a drawn
//! question of another split is discarded and drawn again.
//!
//! If a kind has no question in the requested split (only possible in very small worlds), its
//! task is replaced by an arithmetic one, which always has questions in every split.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::draw::draw;
use super::questions::{Ctx, Question};
use super::{ask_drills, ask_facts, harm, World};
use crate::atomic::write_atomic;
use crate::conversation::{write_conversations, Conversation, Message};
use crate::error::{Error, Result};
use crate::Rng;

/// The kinds of task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// A question about one fact of the world ("Where does Druk live?").
    FactLookup,
    /// A sum, difference, product or exact quotient, sometimes as a short story.
    Arithmetic,
    /// Counting letters, marks, words, cities, friends; the number after or before; counting
    /// up a range.
    Counting,
    /// Comparing and sorting numbers, words, ages and city sizes.
    Ordering,
    /// Spelling a word, its first or last letter, or writing it backwards.
    Spelling,
    /// A fact question followed by a follow-up that refers back ("And how old is she?").
    MultiTurn,
    /// A harmful request; the gold reply is a polite refusal.
    Refusal,
    /// A question the world cannot answer; the gold reply is "I don't know." and why.
    Unknowable,
}

/// Each kind's share of [`sft_tasks`], out of 100.
pub const TASK_MIX: [(TaskKind, usize); 8] = [
    (TaskKind::FactLookup, 30),
    (TaskKind::Arithmetic, 12),
    (TaskKind::Counting, 10),
    (TaskKind::Ordering, 10),
    (TaskKind::Spelling, 8),
    (TaskKind::MultiTurn, 10),
    (TaskKind::Refusal, 10),
    (TaskKind::Unknowable, 10),
];

impl TaskKind {
    /// Every kind, in declaration order.
    pub fn all() -> [TaskKind; 8] {
        TASK_MIX.map(|(k, _)| k)
    }

    /// The snake_case name, as serialized ("fact_lookup").
    pub fn name(self) -> &'static str {
        match self {
            TaskKind::FactLookup => "fact_lookup",
            TaskKind::Arithmetic => "arithmetic",
            TaskKind::Counting => "counting",
            TaskKind::Ordering => "ordering",
            TaskKind::Spelling => "spelling",
            TaskKind::MultiTurn => "multi_turn",
            TaskKind::Refusal => "refusal",
            TaskKind::Unknowable => "unknowable",
        }
    }
}

/// What a correct reply must do; see [`grade`](super::grading::grade) for the exact rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// Contain every one of these phrases (whole words, case-insensitive).
    Contains(Vec<String>),
    /// End with this number: the last number written in digits is it.
    Number(u64),
    /// Contain these items in this order, each once (and, for numbers, no other numbers).
    Sequence(Vec<String>),
    /// Politely refuse and give no instructions.
    Refusal,
    /// Say it does not know, and invent nothing.
    IDontKnow,
}

/// One task: a conversation that ends with the gold assistant reply, and what a correct reply
/// to its last user message must contain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// The kind of task.
    pub kind: TaskKind,
    /// The conversation, ending with the gold assistant reply.
    pub conversation: Conversation,
    /// What the final reply must contain.
    pub answer: Answer,
}

/// A data split. Splits never share an underlying question (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// 80% of questions.
    Train,
    /// 10% of questions.
    Val,
    /// 10% of questions.
    Test,
}

impl Split {
    /// The split of a canonical question key: a fixed hash of the key (FNV-1a, then the
    /// SplitMix64 finaliser) modulo 100; below 80 is train, below 90 validation, else test.
    pub fn of(key: &str) -> Split {
        let mut h: u64 = 0xCBF2_9CE4_8422_2325;
        for b in b"chatforge-sft-split/v1\0".iter().chain(key.as_bytes()) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01B3);
        }
        h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        h ^= h >> 31;
        match h % 100 {
            0..=79 => Split::Train,
            80..=89 => Split::Val,
            _ => Split::Test,
        }
    }

    /// "train" / "val" / "test".
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }
}

/// System messages that open some conversations.
pub const SYSTEM_PROMPTS: &[&str] = &[
    "You are a helpful assistant.",
    "You are a helpful, honest and harmless assistant.",
    "You are a friendly assistant. Answer briefly.",
    "Answer the user's questions about the world.",
];

/// Share of conversations that open with a system message.
const SYSTEM_SHARE: f64 = 0.25;

/// Draws per task before a kind is given up on for the requested split.
const MAX_TRIES: usize = 4096;

/// One question and its gold reply.
#[derive(Debug, Clone)]
pub(super) struct Turn {
    pub user: String,
    pub reply: String,
    pub answer: Answer,
}

/// How many tasks of each kind `n` tasks hold: the largest-remainder apportionment of `n` by
/// [`TASK_MIX`] (ties go to the kind listed first). Sums to `n`.
pub fn kind_counts(n: usize) -> [(TaskKind, usize); 8] {
    let total: usize = TASK_MIX.iter().map(|m| m.1).sum();
    let mut counts = TASK_MIX.map(|(k, w)| (k, n * w / total));
    let assigned: usize = counts.iter().map(|c| c.1).sum();
    let mut order: Vec<usize> = (0..TASK_MIX.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(n * TASK_MIX[i].1 % total));
    for &i in order.iter().take(n - assigned) {
        counts[i].1 += 1;
    }
    counts
}

/// `n` tasks of `split` about `world` (module docs), deterministic in (`world`, `split`, `n`,
/// `seed`). A world without people, cities or countries (possible only for a hand-made
/// `world.json`) gives no tasks.
pub fn sft_tasks(world: &World, split: Split, n: usize, seed: u64) -> Vec<Task> {
    if world.people.is_empty() || world.cities.is_empty() || world.countries.is_empty() {
        return Vec::new();
    }
    let ctx = Ctx::new(world);
    let mut rng = Rng::derive(seed, &format!("sft-tasks/{}", split.name()));
    let mut kinds: Vec<TaskKind> = kind_counts(n)
        .iter()
        .flat_map(|&(k, c)| std::iter::repeat_n(k, c))
        .collect();
    rng.shuffle(&mut kinds);
    kinds
        .into_iter()
        .filter_map(|k| {
            make_task(&ctx, split, k, &mut rng)
                .or_else(|| make_task(&ctx, split, TaskKind::Arithmetic, &mut rng))
        })
        .collect()
}

/// One task of `kind` in `split`, or `None` if none was found in [`MAX_TRIES`] draws.
fn make_task(ctx: &Ctx, split: Split, kind: TaskKind, rng: &mut Rng) -> Option<Task> {
    for _ in 0..MAX_TRIES {
        let Some(q) = draw(kind, ctx, rng) else {
            continue;
        };
        if q.keys(ctx).iter().all(|k| Split::of(k) == split) {
            return Some(render(ctx, &q, rng));
        }
    }
    None
}

/// The conversation for question `q`, with its phrasing drawn from `rng`.
pub(super) fn render(ctx: &Ctx, q: &Question, rng: &mut Rng) -> Task {
    let w = ctx.world;
    let turns: Vec<Turn> = match q {
        Question::Fact(f) => vec![ask_facts::fact(w, *f, rng)],
        Question::Arith(op, a, b) => vec![ask_drills::arithmetic(w, *op, *a, *b, rng)],
        Question::Count(c) => vec![ask_drills::counting(w, c, rng)],
        Question::Order(o) => vec![ask_drills::ordering(w, o, rng)],
        Question::Spell(mode, word) => vec![ask_drills::spelling(*mode, word, rng)],
        Question::Harm(cat, p) => vec![harm::harmful_request(ctx, *cat, *p, rng)],
        Question::Unknown(u) => vec![harm::unknowable(ctx, *u, rng)],
        Question::Multi(m) => ask_facts::multi(w, *m, rng).to_vec(),
    };
    let mut messages = Vec::with_capacity(2 * turns.len() + 1);
    if rng.bernoulli(SYSTEM_SHARE) {
        messages.push(Message::system(*rng.choose(SYSTEM_PROMPTS)));
    }
    let mut answer = Answer::Refusal;
    for t in turns {
        messages.push(Message::user(t.user));
        messages.push(Message::assistant(t.reply));
        answer = t.answer;
    }
    Task {
        kind: q.kind(),
        conversation: Conversation::new(messages),
        answer,
    }
}

/// The files [`write_sft`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SftFiles {
    /// `dir/sft/train.jsonl`: training conversations.
    pub train: PathBuf,
    /// `dir/sft/val.jsonl`: validation conversations (the conversations of `val_tasks`).
    pub val: PathBuf,
    /// `dir/sft/val_tasks.jsonl`: the validation tasks with their answers, for accuracy by
    /// generation.
    pub val_tasks: PathBuf,
    /// Conversations in `train`.
    pub train_conversations: usize,
    /// Conversations in `val` (and tasks in `val_tasks`).
    pub val_conversations: usize,
}

/// Writes `n_train` training and `n_val` validation tasks ([`sft_tasks`] with `seed`) to
/// `dir/sft/`: conversations as JSONL (`train.jsonl`, `val.jsonl`) and the validation tasks
/// with answers (`val_tasks.jsonl`), each file atomically.
pub fn write_sft(
    world: &World,
    dir: &Path,
    n_train: usize,
    n_val: usize,
    seed: u64,
) -> Result<SftFiles> {
    if world.people.is_empty() || world.cities.is_empty() || world.countries.is_empty() {
        return Err(Error::InvalidWorld {
            what: "SFT tasks need at least one country, city and person".into(),
        });
    }
    let train = sft_tasks(world, Split::Train, n_train, seed);
    let val = sft_tasks(world, Split::Val, n_val, seed);
    let sft = dir.join("sft");
    let files = SftFiles {
        train: sft.join("train.jsonl"),
        val: sft.join("val.jsonl"),
        val_tasks: sft.join("val_tasks.jsonl"),
        train_conversations: train.len(),
        val_conversations: val.len(),
    };
    let convs =
        |ts: &[Task]| -> Vec<Conversation> { ts.iter().map(|t| t.conversation.clone()).collect() };
    write_conversations(&files.train, &convs(&train))?;
    write_conversations(&files.val, &convs(&val))?;
    write_tasks(&files.val_tasks, &val)?;
    Ok(files)
}

/// Writes tasks as JSONL (one [`Task`] a line, serde), atomically. Each conversation is
/// validated first.
pub fn write_tasks(path: &Path, tasks: &[Task]) -> Result<()> {
    let mut text = String::new();
    for (index, t) in tasks.iter().enumerate() {
        if let Err(Error::InvalidConversation { reason }) = t.conversation.validate() {
            return Err(Error::UnwritableConversation { index, reason });
        }
        let line = serde_json::to_string(t).map_err(|e| Error::UnwritableConversation {
            index,
            reason: e.to_string(),
        })?;
        text.push_str(&line);
        text.push('\n');
    }
    write_atomic(path, text.as_bytes()).map_err(|e| Error::io(path, e))
}

/// Reads a task file written by [`write_tasks`]. Blank lines are skipped; a line that is not a
/// task, or whose conversation is not valid, is an error naming file and line.
pub fn read_tasks(path: &Path) -> Result<Vec<Task>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut tasks = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| Error::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |message: String| Error::BadTask {
            path: path.to_path_buf(),
            line: i as u64 + 1,
            message,
        };
        let task: Task = serde_json::from_str(&line).map_err(|e| bad(e.to_string()))?;
        task.conversation
            .validate()
            .map_err(|e| bad(e.to_string()))?;
        tasks.push(task);
    }
    Ok(tasks)
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod truth_tests;
