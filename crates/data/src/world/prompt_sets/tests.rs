//! Prompt sets: records rebuild their tasks, files read back, splits are respected and the
//! output is deterministic.

use std::collections::HashSet;

use super::*;
use crate::conversation::{Message, ReadOptions, Role};
use crate::prompts::read_prompts;
use crate::world::judge::judge;
use crate::world::WorldConfig;

fn world(seed: u64) -> World {
    World::generate(&WorldConfig {
        seed,
        ..WorldConfig::default()
    })
}

/// What a prompt asks: its user messages, and separately the first one (follow-ups such as
/// "And how old is she?" are generic alone; system messages vary independently).
fn asked(prompt: &[Message]) -> Vec<String> {
    let users: Vec<&str> = prompt
        .iter()
        .filter(|m| m.role == Role::User)
        .map(|m| m.content.as_str())
        .collect();
    vec![users.join("\n"), format!("first: {}", users[0])]
}

#[test]
fn records_rebuild_their_tasks() {
    let w = world(0);
    let tasks = sft_tasks(&w, Split::Train, 300, 7);
    let recs = prompt_records(&w, Split::Train, 300, 7);
    assert_eq!(recs.len(), 300);
    for (r, t) in recs.iter().zip(&tasks) {
        r.validate().unwrap();
        assert_eq!(r.prompt.last().map(|m| m.role), Some(Role::User));
        assert_eq!(r.task().as_ref(), Some(t));
        let gold = r.reference.as_deref().unwrap();
        assert_eq!(judge(t, gold, true).score, 9.0);
    }
    assert_eq!(recs, prompt_records(&w, Split::Train, 300, 7));
    assert_ne!(recs, prompt_records(&w, Split::Train, 300, 8));
}

#[test]
fn written_sets_read_back_and_respect_the_splits() {
    let w = world(2);
    let d = tempfile::tempdir().unwrap();
    let sizes = PromptSetSizes {
        rank: 400,
        ppo: 500,
        eval: 300,
    };
    let files = write_prompt_sets(&w, d.path(), &sizes, 3).unwrap();
    assert_eq!(files.rank, d.path().join("prompts/rank.jsonl"));
    assert_eq!(files.ppo, d.path().join("prompts/ppo.jsonl"));
    assert_eq!(files.eval, d.path().join("prompts/eval.jsonl"));
    let read = |p: &PathBuf| {
        read_prompts(std::slice::from_ref(p), &ReadOptions::default())
            .unwrap()
            .0
    };
    let (rank, ppo, eval) = (read(&files.rank), read(&files.ppo), read(&files.eval));
    assert_eq!((rank.len(), ppo.len(), eval.len()), (400, 500, 300));
    assert!(rank
        .iter()
        .chain(&ppo)
        .chain(&eval)
        .all(|r| r.reference.is_some() && r.task.is_some()));
    // Rank and PPO prompts are drawn with different seeds.
    assert_ne!(rank[..50], ppo[..50]);
    // No question of the evaluation set is asked in any training data: the rank and PPO
    // prompts, and the SFT demonstrations written with the same seed.
    let sft_train = sft_tasks(&w, Split::Train, 3000, 3);
    let train_questions: HashSet<String> = rank
        .iter()
        .chain(&ppo)
        .flat_map(|r| asked(&r.prompt))
        .chain(
            sft_train
                .iter()
                .flat_map(|t| asked(t.conversation.prompt())),
        )
        .collect();
    let shared: Vec<String> = eval
        .iter()
        .flat_map(|r| asked(&r.prompt))
        .filter(|q| train_questions.contains(q))
        .collect();
    assert!(shared.is_empty(), "{shared:?}");
    // The eval prompts are the test split's tasks.
    let test_questions: HashSet<String> = sft_tasks(&w, Split::Test, 2000, 1)
        .iter()
        .flat_map(|t| asked(t.conversation.prompt()))
        .collect();
    let in_test = eval
        .iter()
        .filter(|r| asked(&r.prompt).iter().all(|q| test_questions.contains(q)))
        .count();
    assert!(in_test > 150, "{in_test}");
}

#[test]
fn writing_is_deterministic() {
    let w = world(1);
    let sizes = PromptSetSizes {
        rank: 50,
        ppo: 60,
        eval: 40,
    };
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let fa = write_prompt_sets(&w, a.path(), &sizes, 9).unwrap();
    let fb = write_prompt_sets(&w, b.path(), &sizes, 9).unwrap();
    for (x, y) in [(fa.rank, fb.rank), (fa.ppo, fb.ppo), (fa.eval, fb.eval)] {
        assert_eq!(std::fs::read(x).unwrap(), std::fs::read(y).unwrap());
    }
    assert_eq!(
        PromptSetSizes::default(),
        PromptSetSizes {
            rank: 1000,
            ppo: 2000,
            eval: 300
        }
    );
}

#[test]
fn worlds_without_people_are_refused() {
    let mut w = world(0);
    w.people.clear();
    let d = tempfile::tempdir().unwrap();
    let err = write_prompt_sets(&w, d.path(), &PromptSetSizes::default(), 0).unwrap_err();
    assert!(matches!(err, Error::InvalidWorld { .. }), "{err}");
    assert!(prompt_records(&w, Split::Test, 10, 0).is_empty());
}
