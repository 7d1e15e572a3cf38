//! Generates the default world and its corpus, reports the generation speed, and prints the
//! first documents. A runnable benchmark for `world::corpus_documents`:
//!
//!     cargo run --release -p chatforge-data --example world_corpus -- [BYTES] [SEED] [DOCS]

use std::time::Instant;

use chatforge_data::world::{corpus_documents, World, WorldConfig, DEFAULT_CORPUS_BYTES};

fn main() {
    let mut args = std::env::args().skip(1);
    let bytes: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(DEFAULT_CORPUS_BYTES);
    let seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(0);
    let show: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let config = WorldConfig {
        seed,
        ..WorldConfig::default()
    };
    let t = Instant::now();
    let world = World::generate(&config);
    let t_world = t.elapsed();
    let t = Instant::now();
    let docs = corpus_documents(&world, bytes, seed);
    let t_corpus = t.elapsed();
    let total: usize = docs.iter().map(String::len).sum();
    eprintln!(
        "world: {} countries, {} cities, {} people in {:.1} ms",
        world.countries.len(),
        world.cities.len(),
        world.people.len(),
        t_world.as_secs_f64() * 1e3
    );
    eprintln!(
        "corpus: {} documents, {} bytes in {:.1} ms ({:.1} MB/s)",
        docs.len(),
        total,
        t_corpus.as_secs_f64() * 1e3,
        total as f64 / 1e6 / t_corpus.as_secs_f64()
    );
    // Skip the opening articles (one per entity) to show the mix that follows.
    let entities = world.countries.len() + world.cities.len() + world.people.len();
    let start = entities.min(docs.len().saturating_sub(show));
    for d in docs.iter().skip(start).take(show) {
        println!("{d}\n<|eot|>");
    }
}
