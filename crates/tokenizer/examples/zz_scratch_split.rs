use std::time::Instant;
use chatforge_data::world::{corpus_documents, World, WorldConfig};
use chatforge_tokenizer::{Splitter, GPT2_PATTERN, GPT4_PATTERN};
fn main() {
    let docs = corpus_documents(&World::generate(&WorldConfig::default()), 4_000_000, 1);
    let shakes = std::fs::read_to_string("/work/shared/data/tinyshakespeare/input.txt").unwrap();
    let mb = docs.iter().map(|d| d.len()).sum::<usize>() as f64 / 1e6;
    for (name, p) in [("gpt2", GPT2_PATTERN), ("gpt4", GPT4_PATTERN)] {
        for (kind, pat) in [("fast", p.to_string()), ("regex", format!("(?:{p})"))] {
            let sp = Splitter::new(&pat).unwrap();
            assert_eq!(sp.is_builtin_fast_path(), kind == "fast");
            let mut best = f64::MAX; let mut best_s = f64::MAX;
            for _ in 0..3 {
                let t = Instant::now(); let mut n = 0; for d in &docs { sp.for_each_chunk(d, |_| n += 1); } std::hint::black_box(n); best = best.min(t.elapsed().as_secs_f64());
                let t = Instant::now(); let mut n = 0; sp.for_each_chunk(&shakes, |_| n += 1); std::hint::black_box(n); best_s = best_s.min(t.elapsed().as_secs_f64());
            }
            println!("{name} {kind}: world {:.1} MB/s, shakespeare {:.1} MB/s", mb / best, shakes.len() as f64 / 1e6 / best_s);
        }
    }
}
