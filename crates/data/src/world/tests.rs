//! World generation, config, load/validate, and the corpus's truthfulness.

use std::collections::{HashMap, HashSet};

use super::names::NameGen;
use super::*;
use crate::corpus::{read_documents, ReadOptions};
use crate::Rng;

fn world(seed: u64) -> World {
    World::generate(&WorldConfig {
        seed,
        ..WorldConfig::default()
    })
}

#[test]
fn same_seed_same_world_and_corpus_different_seed_differs() {
    let (a, b, c) = (world(7), world(7), world(8));
    assert_eq!(a, b);
    assert_eq!(
        serde_json::to_string(&a).unwrap(),
        serde_json::to_string(&b).unwrap()
    );
    assert_ne!(a.people, c.people);
    let da = corpus_documents(&a, 50_000, 1);
    assert_eq!(da, corpus_documents(&b, 50_000, 1));
    assert_ne!(da, corpus_documents(&a, 50_000, 2));
    // A smaller corpus with the same seed is a prefix of a larger one.
    let small = corpus_documents(&a, 20_000, 1);
    assert_eq!(small[..], da[..small.len()]);
}

/// The default world is pinned: a change in generation order or word lists changes every
/// world, so it must be deliberate (update these values and say so in the changelog).
#[test]
fn default_world_is_pinned() {
    let w = world(0);
    let p = &w.people[0];
    let got = (
        w.countries[0].name.as_str(),
        w.cities[w.countries[0].capital].name.as_str(),
        p.full_name(),
        p.age,
    );
    let want = (
        "Thispaiura",
        "Sasbrovik",
        "Yatrifla Vibreflar".to_string(),
        46,
    );
    assert_eq!(got, want);
}

#[test]
fn default_config_shape() {
    let w = world(0);
    assert_eq!(w.config, WorldConfig::default());
    assert_eq!(
        (w.countries.len(), w.cities.len(), w.people.len()),
        (4, 16, 32)
    );
    for c in &w.countries {
        assert_eq!(c.cities.len(), 4);
    }
    w.validate().unwrap();
}

/// Every invariant the renderers and later stages rely on, over several seeds and shapes.
#[test]
fn generated_facts_are_consistent() {
    let configs = [
        (0, 4, 16, 32),
        (1, 1, 1, 2),
        (2, 3, 10, 7),
        (3, 64, 1024, 2000),
    ];
    for (seed, n_countries, n_places, n_people) in configs {
        let cfg = WorldConfig {
            seed,
            n_countries,
            n_places,
            n_people,
        };
        cfg.validate().unwrap();
        let w = World::generate(&cfg);
        w.validate().unwrap();
        assert_eq!(
            (w.countries.len(), w.cities.len(), w.people.len()),
            (n_countries, n_places, n_people)
        );
        let mut names = HashSet::new();
        let mut pops = HashSet::new();
        for c in &w.countries {
            assert!(names.insert(c.name.to_lowercase()), "{}", c.name);
            assert!(names.insert(c.language.to_lowercase()), "{}", c.language);
            assert_ne!(c.flag[0], c.flag[1]);
            // Places are dealt out evenly.
            let n = c.cities.len();
            assert!(n == n_places / n_countries || n == n_places / n_countries + 1);
            let cap = w.cities[c.capital].population;
            for &ci in &c.cities[1..] {
                assert!(w.cities[ci].population < cap, "capital must be the largest");
            }
        }
        for city in &w.cities {
            assert!(names.insert(city.name.to_lowercase()), "{}", city.name);
            assert!(pops.insert(city.population) && city.population % 1000 == 0);
        }
        for (i, p) in w.people.iter().enumerate() {
            assert!(
                names.insert(p.first_name.to_lowercase()),
                "{}",
                p.first_name
            );
            assert!((18..=100).contains(&p.age) && (1..=99).contains(&p.favourite_number));
            assert!((1..=3).contains(&p.belongings.len()));
            let kinds: HashSet<_> = p.belongings.iter().map(|b| &b.object).collect();
            assert_eq!(kinds.len(), p.belongings.len());
            assert!(p.belongings.iter().all(|b| (2..=9).contains(&b.count)));
            assert!(p.friends.len() <= 4 && p.siblings.len() <= 2);
            for &j in &p.siblings {
                let s = &w.people[j];
                assert_eq!(s.family_name, p.family_name);
                assert_ne!(s.age, p.age, "siblings' ages differ");
                assert!(!p.friends.contains(&j), "a sibling is not also a friend");
            }
            for &j in &p.friends {
                assert!(w.people[j].friends.contains(&i));
            }
            if let Some(pet) = &p.pet {
                assert!(names.insert(pet.name.to_lowercase()), "{}", pet.name);
            }
        }
        // Most people have friends (in a world of two, they may be siblings instead).
        let lonely = w.people.iter().filter(|p| p.friends.is_empty()).count();
        if n_people >= 10 {
            assert!(
                lonely * 10 <= n_people,
                "{lonely} of {n_people} have no friend"
            );
        }
    }
}

#[test]
fn config_serde_defaults_validation_and_clamping() {
    let c: WorldConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(c, WorldConfig::default());
    let c: WorldConfig = serde_json::from_str(r#"{"seed": 9, "n_people": 5}"#).unwrap();
    assert_eq!((c.seed, c.n_people, c.n_places), (9, 5, 16));
    let err = serde_json::from_str::<WorldConfig>(r#"{"n_poeple": 5}"#).unwrap_err();
    assert!(err.to_string().contains("n_poeple"), "{err}");

    let bad = |f: fn(&mut WorldConfig), field: &str| {
        let mut c = WorldConfig::default();
        f(&mut c);
        match c.validate() {
            Err(Error::InvalidWorldConfig { field: got, .. }) => assert_eq!(got, field),
            other => panic!("{other:?}"),
        }
        // generate() clamps instead of failing.
        World::generate(&c).validate().unwrap();
    };
    bad(|c| c.n_countries = 0, "n_countries");
    bad(|c| c.n_countries = 65, "n_countries");
    bad(|c| c.n_places = 3, "n_places");
    bad(|c| c.n_places = 5000, "n_places");
    bad(|c| c.n_people = 1, "n_people");
    let clamped = WorldConfig {
        seed: 1,
        n_countries: 0,
        n_places: 0,
        n_people: 0,
    }
    .clamped();
    assert_eq!(
        (clamped.n_countries, clamped.n_places, clamped.n_people),
        (1, 1, 2)
    );
}

#[test]
fn write_world_then_load_and_read_back() {
    let w = world(3);
    let d = tempfile::tempdir().unwrap();
    let files = write_world(&w, d.path(), 200_000, 5).unwrap();
    assert_eq!(World::load(&files.world_json).unwrap(), w);
    let docs = corpus_documents(&w, 200_000, 5);
    let opts = ReadOptions::default();
    let (train, ts) = read_documents(std::slice::from_ref(&files.train), &opts).unwrap();
    let (val, vs) = read_documents(std::slice::from_ref(&files.val), &opts).unwrap();
    assert_eq!((ts.skipped_empty, vs.skipped_empty), (0, 0));
    assert_eq!(
        (train.len(), val.len()),
        (files.train_documents, files.val_documents)
    );
    assert_eq!((ts.bytes, vs.bytes), (files.train_bytes, files.val_bytes));
    // The split is every 32nd document, in order, and nothing is lost.
    let want_val: Vec<_> = docs.iter().skip(31).step_by(32).cloned().collect();
    assert_eq!(val, want_val);
    assert_eq!(train.len() + val.len(), docs.len());
    let share = val.len() as f64 / docs.len() as f64;
    assert!((0.02..=0.05).contains(&share), "{share}");
    assert_eq!(train[0], docs[0]);
}

#[test]
fn load_rejects_bad_json_and_inconsistent_facts() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("world.json");
    std::fs::write(&p, "{\"config\": {}, \"countries\": [").unwrap();
    assert!(matches!(World::load(&p), Err(Error::WorldJson { .. })));
    match World::load(&d.path().join("missing.json")) {
        Err(Error::NotFound { .. }) => {}
        other => panic!("{other:?}"),
    }
    type Tamper = (&'static str, fn(&mut World));
    let tamper: [Tamper; 5] = [
        ("city 99 out of range", |w| w.people[0].city = 99),
        ("friend 999 is not mutual", |w| {
            w.people[0].friends.push(999)
        }),
        ("not mutual", |w| {
            let j = w.people[0].friends[0];
            w.people[j].friends.retain(|&k| k != 0);
        }),
        ("capital", |w| w.countries[0].capital = 5),
        ("used twice", |w| {
            w.people[1].first_name = w.people[0].first_name.clone()
        }),
    ];
    for (what, f) in tamper {
        let mut w = world(0);
        f(&mut w);
        std::fs::write(&p, serde_json::to_string(&w).unwrap()).unwrap();
        match World::load(&p) {
            Err(Error::InvalidWorld { what: got }) => assert!(got.contains(what), "{got}"),
            other => panic!("{what}: {other:?}"),
        }
    }
}

#[test]
fn corpus_size_and_coverage() {
    let w = world(0);
    assert!(corpus_documents(&w, 0, 0).is_empty());
    let target = 300_000;
    let docs = corpus_documents(&w, target, 0);
    let total: usize = docs.iter().map(String::len).sum();
    let longest = docs.iter().map(String::len).max().unwrap();
    assert!(total >= target && total < target + longest, "{total}");
    let text = docs.join("\n");
    for name in w
        .people
        .iter()
        .map(|p| &p.first_name)
        .chain(w.cities.iter().map(|c| &c.name))
        .chain(w.countries.iter().map(|c| &c.name))
    {
        assert!(text.contains(name.as_str()), "{name} never mentioned");
    }
    // Several phrasings of one fact appear.
    let c = &w.countries[0];
    let k = &w.cities[c.capital].name;
    let phrasings = [
        format!("The capital of {} is {k}.", c.name),
        format!("{k} is the capital of {}.", c.name),
        format!("{}'s capital is {k}.", c.name),
    ];
    for ph in &phrasings {
        assert!(text.contains(ph.as_str()), "missing phrasing: {ph}");
    }
    for d in &docs {
        assert!(
            !d.trim().is_empty() && !d.contains('{') && !d.contains('}'),
            "{d}"
        );
        // A capitalised pronoun only starts a sentence; "a"/"an" agree with the next word.
        for pron in [" She ", " He ", " Her ", " His "] {
            for (at, _) in d.match_indices(pron) {
                let prev = d[..at].chars().last().unwrap();
                assert!(
                    matches!(prev, '.' | '?' | '!' | '"'),
                    "{pron:?} mid-sentence: {d}"
                );
            }
        }
        for t in d.split(". ") {
            let words: Vec<&str> = t.split(' ').collect();
            for pair in words.windows(2) {
                let vowel = pair[1].starts_with(['a', 'e', 'i', 'o', 'u']);
                match pair[0] {
                    "a" => assert!(!vowel, "'a {}': {d}", pair[1]),
                    "an" => assert!(vowel, "'an {}': {d}", pair[1]),
                    _ => {}
                }
            }
        }
    }
}

/// The corpus never contradicts the world: every "X lives in Y", "X is N years old" and
/// "The capital of C is K" statement, wherever it occurs, matches the facts.
#[test]
fn corpus_statements_match_the_facts() {
    let w = world(11);
    let text = corpus_documents(&w, 400_000, 4).join("\n");
    let people: HashMap<&str, &Person> = w
        .people
        .iter()
        .map(|p| (p.first_name.as_str(), p))
        .collect();
    let word_before = |s: &str| s.rsplit([' ', '\n', '"']).next().unwrap_or("").to_string();
    let word_after = |s: &str| {
        s.split(|c: char| !c.is_alphanumeric())
            .next()
            .unwrap_or("")
            .to_string()
    };
    let (mut lives, mut ages, mut capitals) = (0, 0, 0);
    for (at, _) in text.match_indices(" lives in ") {
        let who = word_before(&text[..at]);
        if let Some(p) = people.get(who.as_str()) {
            assert_eq!(word_after(&text[at + 10..]), w.home(p).name, "{who}");
            lives += 1;
        }
    }
    for (at, _) in text.match_indices(" years old") {
        let head = &text[..at];
        let Some((before, n)) = head.rsplit_once(' ') else {
            continue;
        };
        let Ok(n) = n.parse::<u64>() else { continue };
        let Some(before) = before.strip_suffix(" is") else {
            continue;
        };
        if let Some(p) = people.get(word_before(before).as_str()) {
            assert_eq!(n, p.age, "{}", p.first_name);
            ages += 1;
        }
    }
    for (at, _) in text.match_indices("The capital of ") {
        let rest = &text[at + 15..];
        let country = word_after(rest);
        let Some(after) = rest[country.len()..].strip_prefix(" is ") else {
            continue;
        };
        let c = w.countries.iter().find(|c| c.name == country).unwrap();
        assert_eq!(word_after(after), w.cities[c.capital].name);
        capitals += 1;
    }
    assert!(
        lives > 100 && ages > 100 && capitals > 20,
        "{lives} {ages} {capitals}"
    );
}

/// No generated name is also an ordinary word of the corpus, and the corpus's ordinary words
/// are all on the name generator's list of refused words (so a new template word cannot
/// silently become someone's name).
#[test]
fn names_never_read_as_words() {
    let mut refused = NameGen::new();
    let mut words = HashSet::new();
    for seed in 0..3 {
        let w = World::generate(&WorldConfig {
            seed,
            n_people: 200,
            ..WorldConfig::default()
        });
        for d in corpus_documents(&w, 300_000, seed) {
            for line in d.lines().filter(|l| !l.contains("backwards")) {
                for t in line.split(|c: char| !c.is_ascii_alphabetic()) {
                    if t.len() >= 3 && t.bytes().all(|b| b.is_ascii_lowercase()) {
                        words.insert(t.to_string());
                    }
                }
            }
        }
    }
    let mut missing: Vec<_> = words.iter().filter(|t| refused.reserve(t)).collect();
    missing.sort();
    assert!(missing.is_empty(), "add to COMMON_WORDS: {missing:?}");
}

#[test]
fn person_articles_avoid_ambiguous_pronouns() {
    let w = world(2);
    let mut rng = Rng::new(0);
    for _ in 0..300 {
        let pi = rng.index(w.people.len());
        let p = &w.people[pi];
        let article = articles::person_article(&w, pi, &mut rng);
        let (she, her) = (p.pronoun.subject_cap(), p.pronoun.possessive_cap());
        // No pronoun-led sentence follows one that names a friend or sibling.
        let sentences: Vec<&str> = article.split(". ").collect();
        for pair in sentences.windows(2) {
            let other = p
                .friends
                .iter()
                .chain(&p.siblings)
                .any(|&j| pair[0].contains(w.people[j].first_name.as_str()));
            if other {
                assert!(!pair[1].starts_with(&format!("{she} ")), "{article}");
                assert!(!pair[1].starts_with(&format!("{her} ")), "{article}");
            }
        }
    }
}
