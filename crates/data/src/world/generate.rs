//! The procedure that turns a [`WorldConfig`] into a [`World`].
//!
//! Order of draws (all from one stream, `Rng::derive(seed, "world")`): countries with their
//! cities, then families of people, then friendships. Changing the order changes every world,
//! so it is fixed; tests pin that the same seed gives the same world.

use std::collections::HashSet;

use super::names::{self, NameGen};
use super::{Belonging, City, Country, Person, Pet, Pronoun, World, WorldConfig};
use crate::Rng;

/// Most friends one person gets.
const MAX_FRIENDS: usize = 4;

/// Builds the world for a config already in range.
pub(super) fn generate(config: &WorldConfig) -> World {
    let mut rng = Rng::derive(config.seed, "world");
    let mut names = NameGen::new();
    let (countries, cities) = places(config, &mut rng, &mut names);
    let mut people = families(config.n_people, cities.len(), &mut rng, &mut names);
    befriend(&mut people, &mut rng);
    World {
        config: config.clone(),
        countries,
        cities,
        people,
    }
}

/// Countries and their cities; places are dealt out round-robin so countries differ by at most
/// one city. The capital is each country's largest city; all populations are distinct.
fn places(config: &WorldConfig, rng: &mut Rng, names: &mut NameGen) -> (Vec<Country>, Vec<City>) {
    let mut countries = Vec::with_capacity(config.n_countries);
    let mut cities: Vec<City> = Vec::with_capacity(config.n_places);
    let mut populations = HashSet::new();
    for ci in 0..config.n_countries {
        let name = names.country(rng);
        let language = names.language(rng, &name);
        let first = rng.index(names::COLOURS.len());
        let second = (first + 1 + rng.index(names::COLOURS.len() - 1)) % names::COLOURS.len();
        let n_cities = config.n_places / config.n_countries
            + usize::from(ci < config.n_places % config.n_countries);
        // The capital: 200,000 to 2,000,000 people; other cities: 5,000 up to just below it.
        let capital_pop = distinct_population(rng, &mut populations, 200, 2_000);
        let mut ids = Vec::with_capacity(n_cities);
        for k in 0..n_cities {
            let population = if k == 0 {
                capital_pop
            } else {
                distinct_population(rng, &mut populations, 5, capital_pop / 1000 - 1)
            };
            ids.push(cities.len());
            cities.push(City {
                name: names.city(rng),
                country: ci,
                population,
                landmark: rng.choose(names::LANDMARKS).to_string(),
            });
        }
        countries.push(Country {
            name,
            capital: ids[0],
            cities: ids,
            language,
            flag: [
                names::COLOURS[first].to_string(),
                names::COLOURS[second].to_string(),
            ],
            animal: rng.choose(names::ANIMALS).to_string(),
        });
    }
    (countries, cities)
}

/// A population in thousands drawn from `lo..=hi` (thousands), not used before.
fn distinct_population(rng: &mut Rng, used: &mut HashSet<u64>, lo: u64, hi: u64) -> u64 {
    let hi = hi.max(lo);
    for _ in 0..1000 {
        let p = (lo + rng.below(hi - lo + 1)) * 1000;
        if used.insert(p) {
            return p;
        }
    }
    // The range is exhausted (only possible in absurdly dense configs): allow a repeat.
    (lo + rng.below(hi - lo + 1)) * 1000
}

/// People in families of one to three siblings who share a family name and have distinct ages.
fn families(n_people: usize, n_cities: usize, rng: &mut Rng, names: &mut NameGen) -> Vec<Person> {
    let mut people: Vec<Person> = Vec::with_capacity(n_people);
    while people.len() < n_people {
        let size = (*rng.choose(&[1usize, 1, 2, 2, 3])).min(n_people - people.len());
        let family_name = names.family_name(rng);
        let base_age = 20 + rng.below(41);
        let mut ages = HashSet::new();
        let start = people.len();
        for _ in 0..size {
            let mut age = base_age;
            while !ages.insert(age) {
                age = (base_age + rng.below(19)).saturating_sub(9).max(18);
            }
            people.push(person(rng, names, &family_name, age, n_cities));
        }
        for i in start..people.len() {
            people[i].siblings = (start..people.len()).filter(|&j| j != i).collect();
        }
    }
    people
}

/// One person with every fact drawn (no relations yet).
fn person(rng: &mut Rng, names: &mut NameGen, family: &str, age: u64, n_cities: usize) -> Person {
    let first_name = names.first_name(rng);
    let pronoun = if rng.bernoulli(0.5) {
        Pronoun::She
    } else {
        Pronoun::He
    };
    let profession = rng.choose(names::PROFESSIONS).1.to_string();
    let city = rng.index(n_cities);
    let pet = rng.bernoulli(0.6).then(|| Pet {
        kind: rng.choose(names::PETS).to_string(),
        name: names.pet(rng),
    });
    let favourite_colour = rng.choose(names::COLOURS).to_string();
    let favourite_food = rng.choose(names::FOODS).to_string();
    let favourite_number = 1 + rng.below(99);
    let mut objects: Vec<usize> = (0..names::OBJECTS.len()).collect();
    rng.shuffle(&mut objects);
    let n_things = 1 + rng.index(3);
    let belongings = objects[..n_things]
        .iter()
        .map(|&o| Belonging {
            object: names::OBJECTS[o].0.to_string(),
            plural: names::OBJECTS[o].1.to_string(),
            colour: rng.choose(names::COLOURS).to_string(),
            count: 2 + rng.below(8),
        })
        .collect();
    Person {
        first_name,
        family_name: family.to_string(),
        pronoun,
        age,
        profession,
        city,
        pet,
        favourite_colour,
        favourite_food,
        favourite_number,
        belongings,
        friends: Vec::new(),
        siblings: Vec::new(),
    }
}

/// Symmetric friendships: everyone asks for one to three friends (not a sibling), and nobody
/// ends up with more than [`MAX_FRIENDS`]. Lists are sorted.
fn befriend(people: &mut [Person], rng: &mut Rng) {
    let n = people.len();
    for i in 0..n {
        let want = 1 + rng.index(3);
        for _ in 0..20 {
            if people[i].friends.len() >= want {
                break;
            }
            let j = rng.index(n);
            let ok = j != i
                && !people[i].siblings.contains(&j)
                && !people[i].friends.contains(&j)
                && people[j].friends.len() < MAX_FRIENDS;
            if ok {
                people[i].friends.push(j);
                people[j].friends.push(i);
            }
        }
    }
    for p in people.iter_mut() {
        p.friends.sort_unstable();
    }
}
