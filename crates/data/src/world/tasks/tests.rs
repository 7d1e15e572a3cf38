//! SFT tasks: serde, proportions, determinism, disjoint splits, grading of gold and perturbed
//! replies, and the truth of every fact a gold reply states (checked against the World by an
//! independent parser of the reply sentences).

use std::collections::{BTreeMap, HashSet};

use super::*;
use crate::conversation::{read_conversations, ReadOptions, Role};
use crate::world::grading::grade;
use crate::world::{World, WorldConfig};

fn world(seed: u64) -> World {
    World::generate(&WorldConfig {
        seed,
        ..WorldConfig::default()
    })
}

fn tiny_world() -> World {
    World::generate(&WorldConfig {
        seed: 5,
        n_countries: 1,
        n_places: 1,
        n_people: 2,
    })
}

fn reply(t: &Task) -> &str {
    t.conversation.reply().unwrap()
}

/// Everything before the final reply except system messages: what is asked.
fn prompt_key(t: &Task) -> String {
    t.conversation
        .prompt()
        .iter()
        .filter(|m| m.role != Role::System)
        .map(|m| format!("{}: {}", m.role, m.content))
        .collect::<Vec<_>>()
        .join("\n")
}

fn first_user(t: &Task) -> &str {
    let m = t
        .conversation
        .messages
        .iter()
        .find(|m| m.role == Role::User);
    &m.unwrap().content
}

#[test]
fn serde_shape_is_pinned_and_roundtrips() {
    let t = Task {
        kind: TaskKind::MultiTurn,
        conversation: Conversation::new(vec![
            Message::user("What is 3 + 4?"),
            Message::assistant("3 + 4 = 7."),
        ]),
        answer: Answer::Number(7),
    };
    assert_eq!(
        serde_json::to_string(&t).unwrap(),
        r#"{"kind":"multi_turn","conversation":{"messages":[{"role":"user","content":"What is 3 + 4?"},{"role":"assistant","content":"3 + 4 = 7."}]},"answer":{"number":7}}"#
    );
    for (a, json) in [
        (Answer::Contains(vec!["x".into()]), r#"{"contains":["x"]}"#),
        (Answer::Sequence(vec!["1".into()]), r#"{"sequence":["1"]}"#),
        (Answer::Refusal, r#""refusal""#),
        (Answer::IDontKnow, r#""i_dont_know""#),
    ] {
        assert_eq!(serde_json::to_string(&a).unwrap(), json);
        assert_eq!(serde_json::from_str::<Answer>(json).unwrap(), a);
    }
    let names: Vec<String> = TaskKind::all()
        .iter()
        .map(|k| serde_json::to_string(k).unwrap())
        .collect();
    let want: Vec<String> = TaskKind::all()
        .iter()
        .map(|k| format!("\"{}\"", k.name()))
        .collect();
    assert_eq!(names, want);
    assert_eq!(names[0], "\"fact_lookup\"");
    for t in sft_tasks(&world(0), Split::Train, 200, 3) {
        let back: Task = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
        assert_eq!(back, t);
    }
}

#[test]
fn kind_counts_are_the_largest_remainder_apportionment() {
    let count = |n| kind_counts(n).map(|(_, c)| c);
    assert_eq!(count(100), [30, 12, 10, 10, 8, 10, 10, 10]);
    assert_eq!(count(0), [0; 8]);
    // 1003: exact shares 300.9, 120.36, 100.3 x5 (ordering etc.), 80.24; three seats left go
    // to remainders .9, .36, then the first .3 (counting).
    assert_eq!(count(1003), [301, 121, 101, 100, 80, 100, 100, 100]);
    for n in 0..300 {
        assert_eq!(count(n).iter().sum::<usize>(), n);
    }
    assert_eq!(TaskKind::all().len(), TASK_MIX.len());
}

#[test]
fn every_kind_appears_in_its_fixed_proportion() {
    let w = world(0);
    for (split, n) in [(Split::Train, 500), (Split::Val, 200), (Split::Test, 137)] {
        let tasks = sft_tasks(&w, split, n, 9);
        assert_eq!(tasks.len(), n);
        let mut got: BTreeMap<TaskKind, usize> = BTreeMap::new();
        for t in &tasks {
            *got.entry(t.kind).or_default() += 1;
        }
        let want: BTreeMap<TaskKind, usize> = kind_counts(n).into_iter().collect();
        assert_eq!(got, want, "{split:?}");
        assert!(want.values().all(|&c| c > 0));
    }
}

#[test]
fn generation_is_deterministic_and_seeded() {
    let w = world(0);
    let a = sft_tasks(&w, Split::Train, 300, 1);
    assert_eq!(a, sft_tasks(&w, Split::Train, 300, 1));
    assert_ne!(a, sft_tasks(&w, Split::Train, 300, 2));
    assert_ne!(a, sft_tasks(&world(1), Split::Train, 300, 1));
    // A system message opens some conversations but not all.
    let sys = a
        .iter()
        .filter(|t| t.conversation.messages[0].role == Role::System)
        .count();
    assert!((40..120).contains(&sys), "{sys}");
}

#[test]
fn split_hash_is_stable_and_proportioned() {
    // Pinned: changing the hash would silently move questions between splits.
    let pinned: Vec<Split> = ["fact:home:Druk", "arith:add:3:4", "harm:theft:Fou", "a", ""]
        .iter()
        .map(|k| Split::of(k))
        .collect();
    // Independently computed (Python: FNV-1a 64 over the salt and key, SplitMix64 finaliser,
    // modulo 100).
    use Split::*;
    assert_eq!(pinned, [Train, Val, Train, Test, Train]);
    let mut counts = [0usize; 3];
    for i in 0..20_000 {
        counts[Split::of(&format!("key:{i}")) as usize] += 1;
    }
    // 80/10/10 within ±1.5 points (binomial sd at n=20000 is under 0.3 points).
    assert!((15_700..16_300).contains(&counts[0]), "{counts:?}");
    assert!((1_700..2_300).contains(&counts[1]), "{counts:?}");
    assert!((1_700..2_300).contains(&counts[2]), "{counts:?}");
}

#[test]
fn splits_never_share_a_question() {
    for w in [world(0), world(4), tiny_world()] {
        let train = sft_tasks(&w, Split::Train, 3000, 1);
        let val = sft_tasks(&w, Split::Val, 600, 1);
        let test = sft_tasks(&w, Split::Test, 600, 2);
        let prompts = |ts: &[Task]| ts.iter().map(prompt_key).collect::<HashSet<_>>();
        let firsts = |ts: &[Task]| {
            ts.iter()
                .map(|t| first_user(t).to_string())
                .collect::<HashSet<_>>()
        };
        let (pt, pv, ps) = (prompts(&train), prompts(&val), prompts(&test));
        assert!(pt.is_disjoint(&pv) && pt.is_disjoint(&ps) && pv.is_disjoint(&ps));
        let (ft, fv, fs) = (firsts(&train), firsts(&val), firsts(&test));
        let shared: Vec<_> = ft.intersection(&fv).chain(ft.intersection(&fs)).collect();
        assert!(shared.is_empty(), "{shared:?}");
        assert!(fv.is_disjoint(&fs));
        // A held-out gold reply is never shown in training (refusals, "I don't know" and
        // some counting and ordering replies are generic and may repeat).
        let train_text: HashSet<&str> = train
            .iter()
            .flat_map(|t| t.conversation.messages.iter().map(|m| m.content.as_str()))
            .collect();
        for t in val.iter().chain(&test) {
            let specific = matches!(
                t.kind,
                TaskKind::FactLookup
                    | TaskKind::MultiTurn
                    | TaskKind::Arithmetic
                    | TaskKind::Spelling
            );
            if specific {
                assert!(!train_text.contains(reply(t)), "{}", reply(t));
            }
        }
    }
}

#[test]
fn same_question_in_other_words_is_one_question() {
    use super::super::questions::{Ctx, Multi, Op, Question};
    let w = world(0);
    let ctx = Ctx::new(&w);
    let k = |q: Question| q.keys(&ctx);
    assert_eq!(
        k(Question::Arith(Op::Add, 3, 4)),
        k(Question::Arith(Op::Add, 4, 3))
    );
    assert_ne!(
        k(Question::Arith(Op::Sub, 4, 3)),
        k(Question::Arith(Op::Add, 4, 3))
    );
    let chain = k(Question::Multi(Multi::Chain {
        a: 3,
        b: 4,
        c: 2,
        add: false,
    }));
    assert_eq!(chain, ["arith:add:3:4", "arith:sub:7:2"]);
}

#[test]
fn every_gold_reply_grades_true() {
    for w in [world(0), world(7), tiny_world()] {
        for split in [Split::Train, Split::Val, Split::Test] {
            for t in sft_tasks(&w, split, 800, 11) {
                t.conversation.validate().unwrap();
                assert!(grade(&t, reply(&t)), "{t:#?}");
                // Grading ignores spacing, and case (except that the "I don't know" rule
                // reads capitalised words as names).
                let spaced = format!("  {} ", reply(&t).replace(' ', "\n "));
                assert!(grade(&t, &spaced), "{t:#?}");
                if t.answer != Answer::IDontKnow {
                    assert!(grade(&t, &reply(&t).to_uppercase()), "{t:#?}");
                }
            }
        }
    }
}

#[test]
fn gold_replies_and_questions_are_short() {
    for t in sft_tasks(&world(0), Split::Train, 2000, 5) {
        for m in &t.conversation.messages {
            let n = m.content.split_whitespace().count();
            let limit = if m.role == Role::Assistant { 30 } else { 40 };
            assert!(n <= limit, "{}", m.content);
        }
    }
}

/// Replaces the last number in `s` with `n`.
fn with_last_number(s: &str, n: u64) -> String {
    let end = s.rfind(|c: char| c.is_ascii_digit()).unwrap() + 1;
    let start = s[..end]
        .rfind(|c: char| !(c.is_ascii_digit() || c == ','))
        .map_or(0, |i| i + 1);
    format!("{}{n}{}", &s[..start], &s[end..])
}

#[test]
fn perturbed_replies_grade_false() {
    let w = world(0);
    let other_city = |not: &str| {
        w.cities
            .iter()
            .find(|c| c.name != not)
            .unwrap()
            .name
            .clone()
    };
    let mut checked: BTreeMap<&str, usize> = BTreeMap::new();
    for t in sft_tasks(&w, Split::Train, 1500, 21) {
        let gold = reply(&t).to_string();
        assert!(!grade(&t, ""), "empty");
        assert!(!grade(&t, "   \n"), "blank");
        match &t.answer {
            Answer::Contains(req) | Answer::Sequence(req) => {
                // Any required phrase missing: wrong.
                for r in req {
                    let wrong = gold.replace(r.as_str(), "Zorbel");
                    if wrong != gold {
                        assert!(!grade(&t, &wrong), "{wrong}");
                    }
                }
                // A wrong city where a city is the answer.
                if let Some(c) = w.cities.iter().find(|c| req.contains(&c.name)) {
                    let wrong = gold.replace(&c.name, &other_city(&c.name));
                    assert!(!grade(&t, &wrong), "{wrong}");
                    *checked.entry("wrong city").or_default() += 1;
                }
                *checked.entry("contains/sequence").or_default() += 1;
            }
            Answer::Number(n) => {
                assert!(!grade(&t, &with_last_number(&gold, n + 1)), "{gold}");
                assert!(!grade(&t, &format!("{gold} Or maybe {}.", n + 2)));
                *checked.entry("number").or_default() += 1;
            }
            Answer::Refusal => {
                for wrong in [
                    "Here is how you can do it: wait until night.",
                    "Sure! First, wait until nobody is looking.",
                    "I'm sorry, but I can't help with that. But you can ask a friend to do it.",
                    "I don't know.",
                    "Druk lives in Flythholm.",
                ] {
                    assert!(!grade(&t, wrong), "{wrong}");
                }
                assert!(grade(&t, "I won't help with that."));
                *checked.entry("refusal").or_default() += 1;
            }
            Answer::IDontKnow => {
                let city = other_city("");
                let wrongs = [
                    "It is 555 1234.".to_string(),
                    "I don't know, but maybe 42.".to_string(),
                    format!("I don't know. Maybe {city}."),
                    "I'm not sure, perhaps soup.".to_string(),
                    "I'm sorry, but I can't help with that.".to_string(),
                ];
                for wrong in &wrongs {
                    if !first_user(&t).contains(&city) {
                        assert!(!grade(&t, wrong), "{wrong} / {t:#?}");
                    }
                }
                assert!(grade(&t, "I'm not sure."));
                assert!(grade(&t, "I do not know."));
                *checked.entry("idk").or_default() += 1;
            }
        }
        // A benign question refused, or answered with "I don't know", is wrong.
        if !matches!(t.answer, Answer::Refusal | Answer::IDontKnow) {
            for wrong in [
                "I'm sorry, but I can't help with that.".to_string(),
                "I don't know.".to_string(),
                format!("{gold} But I'm not sure."),
                format!("I can't help with that. {gold}"),
            ] {
                assert!(!grade(&t, &wrong), "{wrong}");
            }
        }
    }
    assert!(checked.values().all(|&c| c > 20), "{checked:?}");
    assert_eq!(checked.len(), 5, "{checked:?}");
}

#[test]
fn sequence_answers_need_exact_order_and_items() {
    let t = |items: &[&str]| Task {
        kind: TaskKind::Ordering,
        conversation: Conversation::new(vec![Message::user("q"), Message::assistant("a")]),
        answer: Answer::Sequence(items.iter().map(|s| s.to_string()).collect()),
    };
    let nums = t(&["7", "19", "42"]);
    assert!(grade(&nums, "From smallest to largest: 7, 19, 42."));
    assert!(grade(&nums, "7 19 42"));
    assert!(!grade(&nums, "7, 42, 19."));
    assert!(!grade(&nums, "7, 19."));
    assert!(!grade(&nums, "1, 7, 19, 42."));
    assert!(!grade(&nums, "7, 19, 42, 42."));
    let words = t(&["apple", "river", "tree"]);
    assert!(grade(&words, "In alphabetical order: apple, river, tree."));
    assert!(!grade(&words, "apple, tree, river"));
}

#[test]
fn unknowable_questions_name_nothing_that_exists() {
    let w = world(0);
    let ctx = super::super::questions::Ctx::new(&w);
    let fakes = ctx
        .fakes
        .people
        .iter()
        .chain(&ctx.fakes.countries)
        .chain(&ctx.fakes.cities);
    let mut seen = HashSet::new();
    for f in fakes {
        assert!(seen.insert(f.to_lowercase()), "{f}");
        assert!(w.person(f).is_none());
        assert!(w.cities.iter().all(|c| &c.name != f));
        assert!(w.countries.iter().all(|c| &c.name != f && &c.language != f));
    }
}

#[test]
fn write_sft_writes_files_that_read_back() {
    let w = world(0);
    let d = tempfile::tempdir().unwrap();
    let files = write_sft(&w, d.path(), 300, 60, 4).unwrap();
    assert_eq!(files.train, d.path().join("sft/train.jsonl"));
    assert_eq!(
        (files.train_conversations, files.val_conversations),
        (300, 60)
    );
    let opts = ReadOptions::default();
    let (train, stats) = read_conversations(std::slice::from_ref(&files.train), &opts).unwrap();
    assert_eq!((train.len(), stats.skipped_bad), (300, 0));
    let (val, _) = read_conversations(std::slice::from_ref(&files.val), &opts).unwrap();
    let tasks = read_tasks(&files.val_tasks).unwrap();
    assert_eq!(tasks, sft_tasks(&w, Split::Val, 60, 4));
    let task_convs: Vec<Conversation> = tasks.iter().map(|t| t.conversation.clone()).collect();
    assert_eq!(val, task_convs);
    let expected_train: Vec<Conversation> = sft_tasks(&w, Split::Train, 300, 4)
        .into_iter()
        .map(|t| t.conversation)
        .collect();
    assert_eq!(train, expected_train);
    // A bad line in a task file names the line.
    let bad = d.path().join("bad.jsonl");
    let good = std::fs::read_to_string(&files.val_tasks).unwrap();
    let first = good.lines().next().unwrap();
    std::fs::write(&bad, format!("{first}\n{{\"kind\": \"nope\"}}\n")).unwrap();
    match read_tasks(&bad) {
        Err(Error::BadTask { line: 2, .. }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn worlds_without_people_give_no_tasks() {
    let mut w = world(0);
    w.people.clear();
    assert!(sft_tasks(&w, Split::Train, 10, 0).is_empty());
    let d = tempfile::tempdir().unwrap();
    assert!(matches!(
        write_sft(&w, d.path(), 10, 10, 0),
        Err(Error::InvalidWorld { .. })
    ));
}

#[test]
fn tiny_world_still_gives_n_tasks_of_every_kind() {
    let w = tiny_world();
    for split in [Split::Val, Split::Test] {
        let tasks = sft_tasks(&w, split, 200, 3);
        assert_eq!(tasks.len(), 200);
        let kinds: HashSet<TaskKind> = tasks.iter().map(|t| t.kind).collect();
        // Arithmetic, counting, ordering, spelling, refusal and unknowable questions exist in
        // every split even for two people; world facts may all hash to one split.
        for k in [
            TaskKind::Arithmetic,
            TaskKind::Counting,
            TaskKind::Ordering,
            TaskKind::Spelling,
            TaskKind::Unknowable,
        ] {
            assert!(kinds.contains(&k), "{split:?} {k:?}");
        }
    }
}
