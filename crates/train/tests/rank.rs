//! Collecting rankings with the gold judge: valid K-wise records in prompt order, deterministic,
//! and an interrupted collection resumes into the same file an uninterrupted one writes
//! (family 6 for the ranking stage); prompts without a world task are a clean error.

mod common;

use candle_core::Device;
use chatforge_data::corpus::ReadOptions;
use chatforge_data::prompts::{read_prompts, write_prompts, PromptRecord};
use chatforge_data::ranking::read_rankings;
use chatforge_train::rank::{collect, RankConfig};

fn config(limit: usize) -> RankConfig {
    RankConfig {
        k: 3,
        max_new_tokens: 6,
        noise: 0.2,
        limit: Some(limit),
        seed: 7,
        ..RankConfig::default()
    }
}

#[test]
fn an_interrupted_collection_resumes_into_the_same_file() {
    let f = common::fixture();
    let straight = f.root.join("straight.jsonl");
    let mut calls = 0;
    let s = collect(
        &config(5),
        &f.sft,
        &Device::Cpu,
        std::slice::from_ref(&f.prompts),
        &straight,
        &mut |_, _| calls += 1,
    )
    .unwrap();
    assert_eq!((s.records, s.resumed_from, calls), (5, 0, 5));
    assert!((0.0..=1.0).contains(&s.ended_frac));

    // Stopped after 2 prompts, then the same command again.
    let split = f.root.join("split.jsonl");
    collect(
        &config(2),
        &f.sft,
        &Device::Cpu,
        std::slice::from_ref(&f.prompts),
        &split,
        &mut |_, _| {},
    )
    .unwrap();
    let s2 = collect(
        &config(5),
        &f.sft,
        &Device::Cpu,
        std::slice::from_ref(&f.prompts),
        &split,
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!((s2.records, s2.resumed_from), (5, 2));
    assert_eq!(
        std::fs::read(&straight).unwrap(),
        std::fs::read(&split).unwrap()
    );

    // The records are valid K-wise rankings of the prompts, in order.
    let (recs, stats) = read_rankings(&[straight], &ReadOptions::default()).unwrap();
    assert_eq!(stats.skipped_bad, 0);
    let (prompts, _) =
        read_prompts(std::slice::from_ref(&f.prompts), &ReadOptions::default()).unwrap();
    for (r, p) in recs.iter().zip(&prompts) {
        assert_eq!(r.k(), 3);
        assert_eq!(r.prompt, p.prompt);
        r.validate().unwrap();
    }
}

#[test]
fn a_file_from_other_prompts_or_a_prompt_without_a_task_is_a_clean_error() {
    let f = common::fixture();
    let out = f.root.join("r.jsonl");
    collect(
        &config(2),
        &f.sft,
        &Device::Cpu,
        std::slice::from_ref(&f.prompts),
        &out,
        &mut |_, _| {},
    )
    .unwrap();
    // Other prompts: the file's records do not match.
    let (mut prompts, _) =
        read_prompts(std::slice::from_ref(&f.prompts), &ReadOptions::default()).unwrap();
    prompts.reverse();
    let other = f.root.join("other.jsonl");
    write_prompts(&other, &prompts).unwrap();
    let err = collect(
        &config(3),
        &f.sft,
        &Device::Cpu,
        &[other],
        &out,
        &mut |_, _| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("other prompts"), "{err}");
    // No task: the judge cannot rank it.
    let bare = f.root.join("bare.jsonl");
    let recs: Vec<PromptRecord> = prompts
        .iter()
        .map(|p| PromptRecord {
            task: None,
            ..p.clone()
        })
        .collect();
    write_prompts(&bare, &recs).unwrap();
    let err = collect(
        &config(1),
        &f.sft,
        &Device::Cpu,
        &[bare],
        &f.root.join("b.jsonl"),
        &mut |_, _| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("no world task"), "{err}");
}
