//! Prints sample SFT tasks of the built-in world: each conversation and its verifiable answer.
//!
//! `cargo run -p chatforge-data --example sft_samples -- [N] [SPLIT] [SEED]`
//! (defaults: 16 tasks of the train split, seed 1, of the default world with seed 0).

use chatforge_data::world::{grade, sft_tasks, Split, World, WorldConfig};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n = args.first().and_then(|s| s.parse().ok()).unwrap_or(16);
    let split = match args.get(1).map(String::as_str) {
        Some("val") => Split::Val,
        Some("test") => Split::Test,
        _ => Split::Train,
    };
    let seed = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    let world = World::generate(&WorldConfig::default());
    for (i, t) in sft_tasks(&world, split, n, seed).iter().enumerate() {
        println!("--- task {i}: {} ---", t.kind.name());
        for m in &t.conversation.messages {
            println!("{:>9}: {}", m.role, m.content);
        }
        let gold = t.conversation.reply().unwrap_or_default();
        println!("   answer: {:?} (gold grades {})", t.answer, grade(t, gold));
    }
}
