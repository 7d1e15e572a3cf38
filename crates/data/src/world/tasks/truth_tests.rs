//! The truth of every fact a gold reply states, checked against the World by a parser of the
//! reply sentences that shares no code with the generator.

use std::collections::{BTreeMap, HashSet};

use super::*;
use crate::conversation::Role;
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

/// A gold statement about the world, parsed without the generator's code, and whether it is
/// true. `None` for sentences that state no world fact ("7 + 5 = 12.").
fn statement_is_true(w: &World, s: &str) -> Option<bool> {
    let s = s.strip_suffix('.').unwrap_or(s);
    let country = |k: &str| w.countries.iter().find(|c| c.name == k);
    let city = |x: &str| w.cities.iter().find(|c| c.name == x);
    let list = |l: &str| -> HashSet<String> {
        l.split(", ")
            .flat_map(|x| x.split(" and "))
            .map(str::to_string)
            .collect()
    };
    let names = |ids: &[usize]| -> HashSet<String> {
        ids.iter()
            .map(|&j| w.people[j].first_name.clone())
            .collect()
    };
    if let Some(rest) = s.strip_prefix("The capital of ") {
        let (k, c) = rest.split_once(" is ")?;
        return Some(w.capital_of(country(k)?).name == c);
    }
    if let Some(rest) = s.strip_prefix("People in ") {
        let (k, l) = rest.split_once(" speak ")?;
        return Some(country(k)?.language == l);
    }
    if let Some(rest) = s.strip_prefix("The national animal of ") {
        let (k, a) = rest.split_once(" is the ")?;
        return Some(country(k)?.animal == a);
    }
    if let Some(rest) = s.strip_prefix("The flag of ") {
        let (k, f) = rest.split_once(" is ")?;
        let (a, b) = f.split_once(" and ")?;
        return Some(country(k)?.flag == [a.to_string(), b.to_string()]);
    }
    if let Some(rest) = s.strip_prefix("About ") {
        let (pop, x) = rest.split_once(" people live in ")?;
        return Some(city(x)?.population.to_string() == pop.replace(',', ""));
    }
    if let Some((x, y)) = s.split_once(" is older than ") {
        return Some(w.person(x)?.age > w.person(y)?.age);
    }
    if let Some((x, y)) = s.split_once(" is younger than ") {
        return Some(w.person(x)?.age < w.person(y)?.age);
    }
    if let Some((x, y)) = s.split_once(" is bigger than ") {
        return Some(city(x)?.population > city(y)?.population);
    }
    if let Some((x, l)) = s.split_once(" is known for ") {
        return Some(city(x)?.landmark == l);
    }
    if let Some((f, rest)) = s.split_once(" lives in ") {
        let home = w.home(w.person(f)?);
        return Some(match rest.split_once(", in ") {
            Some((c, k)) => home.name == c && w.country_of(home).name == k,
            None => home.name == rest,
        });
    }
    if let Some((f, rest)) = s.split_once("'s ") {
        let p = w.person(f)?;
        let (what, value) = rest
            .split_once(" is ")
            .or_else(|| rest.split_once(" are "))?;
        return Some(match what {
            "favourite colour" => p.favourite_colour == value,
            "favourite food" => p.favourite_food == value,
            "favourite number" => p.favourite_number.to_string() == value,
            "family name" => p.family_name == value,
            "friend" | "friends" => names(&p.friends) == list(value),
            "siblings" => names(&p.siblings) == list(value),
            "sister" | "brother" => {
                p.siblings.len() == 1
                    && w.people[p.siblings[0]].first_name == value
                    && w.people[p.siblings[0]].pronoun.sibling_word() == what
            }
            kind => {
                let pet = p.pet.as_ref()?;
                pet.kind == kind && value.strip_prefix("called ") == Some(pet.name.as_str())
            }
        });
    }
    if let Some((subject, rest)) = s.split_once(" has ") {
        if let Some(c) = country(subject) {
            let n: usize = rest.split(' ').next()?.parse().ok()?;
            return Some(c.cities.len() == n);
        }
        let p = w.person(subject)?;
        let words: Vec<&str> = rest.split(' ').collect();
        return Some(match words.as_slice() {
            ["a", kind, "called", name] => {
                p.pet.as_ref().map(|x| (x.kind.as_str(), x.name.as_str())) == Some((kind, name))
            }
            [n, "friend" | "friends"] => p.friends.len().to_string() == *n,
            [n, "sibling" | "siblings"] => p.siblings.len().to_string() == *n,
            [n, colour, things] => p
                .belongings
                .iter()
                .any(|b| b.count.to_string() == *n && b.colour == *colour && b.plural == *things),
            _ => return None,
        });
    }
    if let Some((x, k)) = s.split_once(" is in ") {
        return Some(w.country_of(city(x)?).name == k);
    }
    if let Some((f, rest)) = s.split_once(" is ") {
        let p = w.person(f)?;
        return Some(match rest.strip_suffix(" years old") {
            Some(age) => p.age.to_string() == age,
            None => p.profession_with_article() == rest,
        });
    }
    None
}

/// Arithmetic replies "a op b = c" are true equations.
fn equation_is_true(s: &str) -> Option<bool> {
    let t: Vec<&str> = s.trim_end_matches('.').split(' ').collect();
    let [a, op, b, "=", c] = t.as_slice() else {
        return None;
    };
    let (a, b, c): (u64, u64, u64) = (a.parse().ok()?, b.parse().ok()?, c.parse().ok()?);
    Some(match *op {
        "+" => a + b == c,
        "-" => a >= b && a - b == c,
        "*" => a * b == c,
        "/" => b != 0 && a % b == 0 && a / b == c,
        _ => return None,
    })
}

#[test]
fn gold_replies_state_only_true_facts() {
    for w in [world(0), world(3), tiny_world()] {
        let mut checked: BTreeMap<TaskKind, usize> = BTreeMap::new();
        for t in sft_tasks(&w, Split::Train, 3000, 8) {
            for m in t
                .conversation
                .messages
                .iter()
                .filter(|m| m.role == Role::Assistant)
            {
                let fact = statement_is_true(&w, &m.content);
                let eq = equation_is_true(&m.content);
                let must_parse = matches!(
                    t.kind,
                    TaskKind::FactLookup | TaskKind::MultiTurn | TaskKind::Arithmetic
                );
                match fact.or(eq) {
                    Some(ok) => {
                        assert!(ok, "false statement: {}", m.content);
                        *checked.entry(t.kind).or_default() += 1;
                    }
                    None => assert!(!must_parse, "unparsed {:?} reply: {}", t.kind, m.content),
                }
            }
        }
        for k in [
            TaskKind::FactLookup,
            TaskKind::MultiTurn,
            TaskKind::Arithmetic,
        ] {
            assert!(checked.get(&k).copied().unwrap_or(0) > 100, "{checked:?}");
        }
        assert!(checked.get(&TaskKind::Ordering).copied().unwrap_or(0) > 10 || w.people.len() < 5);
    }
}
