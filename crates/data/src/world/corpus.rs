//! The world's pretraining corpus: a mix of articles, stories, lessons and quizzes, sized in
//! bytes, and the files a run starts from (`world.json`, `corpus/train.txt`, `corpus/val.txt`).

use std::path::{Path, PathBuf};

use super::{articles, lessons, stories, World};
use crate::corpus::write_txt;
use crate::error::Result;
use crate::Rng;

/// Default corpus size in bytes (4 MiB): enough for a 1M-parameter model to see every fact
/// many times in many phrasings.
pub const DEFAULT_CORPUS_BYTES: usize = 4 << 20;

/// Every `VAL_EVERY`-th document goes to the validation split (1/32 ≈ 3.1%).
pub const VAL_EVERY: usize = 32;

/// Kinds of document and their weights in the mix (out of 100).
const MIX: [(Kind, u64); 10] = [
    (Kind::Person, 26),
    (Kind::City, 10),
    (Kind::Country, 6),
    (Kind::Story, 28),
    (Kind::Arithmetic, 10),
    (Kind::Counting, 4),
    (Kind::Ordering, 4),
    (Kind::Spelling, 4),
    (Kind::Quiz, 5),
    (Kind::Comparison, 3),
];

#[derive(Clone, Copy)]
enum Kind {
    Person,
    City,
    Country,
    Story,
    Arithmetic,
    Counting,
    Ordering,
    Spelling,
    Quiz,
    Comparison,
}

/// Pretraining documents about `world`, at least `target_bytes` of UTF-8 in total (the last
/// document may overshoot by its own length; 0 gives none).
///
/// The corpus opens with one article about every country, city and person (so even a small
/// corpus states every fact), then draws documents from the mix above: articles, stories,
/// arithmetic, counting, ordering, spelling, quizzes and comparisons. Deterministic in
/// (`world`, `target_bytes`, `seed`); a prefix of a larger corpus with the same seed.
///
/// `world` must be consistent ([`World::validate`]); worlds from [`World::generate`] and
/// [`World::load`] are.
pub fn corpus_documents(world: &World, target_bytes: usize, seed: u64) -> Vec<String> {
    let mut rng = Rng::derive(seed, "corpus");
    let mut docs = Vec::new();
    let mut total = 0usize;
    let mut emit = |doc: String, docs: &mut Vec<String>| {
        total += doc.len();
        docs.push(doc);
        total >= target_bytes
    };
    if target_bytes == 0 || world.people.is_empty() || world.cities.is_empty() {
        return docs;
    }
    for ci in 0..world.countries.len() {
        if emit(articles::country_article(world, ci, &mut rng), &mut docs) {
            return docs;
        }
    }
    for ci in 0..world.cities.len() {
        if emit(articles::city_article(world, ci, &mut rng), &mut docs) {
            return docs;
        }
    }
    for pi in 0..world.people.len() {
        if emit(articles::person_article(world, pi, &mut rng), &mut docs) {
            return docs;
        }
    }
    let total_weight: u64 = MIX.iter().map(|m| m.1).sum();
    loop {
        let mut r = rng.below(total_weight);
        let kind = MIX
            .iter()
            .find(|m| {
                let hit = r < m.1;
                r = r.saturating_sub(m.1);
                hit
            })
            .map_or(Kind::Person, |m| m.0);
        let doc = render(world, kind, &mut rng);
        if emit(doc, &mut docs) {
            return docs;
        }
    }
}

/// One document of `kind` about a random entity.
fn render(world: &World, kind: Kind, rng: &mut Rng) -> String {
    let person = |rng: &mut Rng| rng.index(world.people.len());
    match kind {
        Kind::Person => {
            let pi = person(rng);
            articles::person_article(world, pi, rng)
        }
        Kind::City => {
            let ci = rng.index(world.cities.len());
            articles::city_article(world, ci, rng)
        }
        Kind::Country => {
            let ci = rng.index(world.countries.len());
            articles::country_article(world, ci, rng)
        }
        Kind::Story => {
            let pi = person(rng);
            stories::story(world, pi, rng)
        }
        Kind::Arithmetic => {
            let n = 4 + rng.index(7);
            lessons::arithmetic(n, rng)
        }
        Kind::Counting => lessons::counting(rng),
        Kind::Ordering => lessons::ordering(rng),
        Kind::Spelling => {
            let n = 3 + rng.index(4);
            lessons::spelling(world, n, rng)
        }
        Kind::Quiz => {
            let n = 3 + rng.index(4);
            articles::quiz(world, n, rng)
        }
        Kind::Comparison => articles::world_comparison(world, rng),
    }
}

/// The files [`write_world`] wrote, with the size of each split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorldFiles {
    /// `dir/world.json`: the facts, pretty-printed.
    pub world_json: PathBuf,
    /// `dir/corpus/train.txt`.
    pub train: PathBuf,
    /// `dir/corpus/val.txt`.
    pub val: PathBuf,
    /// Documents in the training split.
    pub train_documents: usize,
    /// Documents in the validation split.
    pub val_documents: usize,
    /// UTF-8 bytes of the training documents (separators not counted).
    pub train_bytes: usize,
    /// UTF-8 bytes of the validation documents (separators not counted).
    pub val_bytes: usize,
}

/// Writes `dir/world.json` and the corpus of [`corpus_documents`] (`target_bytes`, `seed`) split
/// into `dir/corpus/train.txt` and `dir/corpus/val.txt` in the `.txt` corpus format of
/// [`crate::corpus`] (documents separated by `<|eot|>` lines), each file atomically. Every
/// [`VAL_EVERY`]-th document is held out for validation (at least one when there are two or
/// more documents). The files are plain text, meant to be read and edited by hand.
pub fn write_world(
    world: &World,
    dir: &Path,
    target_bytes: usize,
    seed: u64,
) -> Result<WorldFiles> {
    let docs = corpus_documents(world, target_bytes, seed);
    let (mut train, mut val): (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());
    for (i, d) in docs.into_iter().enumerate() {
        if i % VAL_EVERY == VAL_EVERY - 1 {
            val.push(d);
        } else {
            train.push(d);
        }
    }
    if val.is_empty() && train.len() >= 2 {
        val.extend(train.pop());
    }
    let world_json = dir.join("world.json");
    world.save(&world_json)?;
    let corpus_dir = dir.join("corpus");
    let (train_path, val_path) = (corpus_dir.join("train.txt"), corpus_dir.join("val.txt"));
    write_txt(&train_path, &train)?;
    write_txt(&val_path, &val)?;
    Ok(WorldFiles {
        world_json,
        train: train_path,
        val: val_path,
        train_documents: train.len(),
        val_documents: val.len(),
        train_bytes: train.iter().map(String::len).sum(),
        val_bytes: val.iter().map(String::len).sum(),
    })
}
