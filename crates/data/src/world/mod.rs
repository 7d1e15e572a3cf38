//! The built-in world: a procedurally generated set of countries, cities and people, kept as
//! plain data so that every later stage (pretraining corpus, SFT tasks, prompts, the gold judge)
//! renders from the same facts.
//!
//! Everything is deterministic in [`WorldConfig::seed`]; proper names are built from syllables
//! ([`names`]), so a model can know them only from the corpus we write.
//!
//! - [`World::generate`] builds the facts (the procedure is in `world/generate.rs`).
//! - [`corpus_documents`] renders pretraining documents of simple English ([`corpus`]).
//! - [`write_world`] writes `world.json` and `corpus/{train,val}.txt`.
//! - [`sft_tasks`] generates SFT tasks with verifiable answers in disjoint splits ([`tasks`]),
//!   [`grade`] checks a reply against one ([`grading`]), and [`write_sft`] writes `sft/*.jsonl`.
//! - [`write_prompt_sets`] writes the prompts to rank, for PPO and for evaluation
//!   (`prompts/*.jsonl`, [`prompt_sets`]).
//! - [`judge`](judge::judge) grades a reply for helpfulness, honesty, harmlessness and form,
//!   and [`rank`] ranks several, with labeller noise ([`judge`]).

#[macro_use]
mod text;

pub mod articles;
mod ask_drills;
mod ask_facts;
pub mod corpus;
mod draw;
mod generate;
pub mod grading;
pub mod harm;
pub mod judge;
pub mod lessons;
pub mod names;
pub mod numbers;
pub mod prompt_sets;
mod questions;
pub mod stories;
pub mod tasks;

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub use corpus::{corpus_documents, write_world, WorldFiles, DEFAULT_CORPUS_BYTES};
pub use grading::grade;
pub use harm::HarmCategory;
pub use judge::{compare, rank, Verdict};
pub use prompt_sets::{prompt_records, write_prompt_sets, PromptFiles, PromptSetSizes};
pub use tasks::{
    kind_counts, read_tasks, sft_tasks, write_sft, write_tasks, Answer, SftFiles, Split, Task,
    TaskKind, TASK_MIX,
};

/// How big a world to generate. Every field has a default, so `{}` is a valid config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorldConfig {
    /// Seed for every random choice.
    pub seed: u64,
    /// Number of countries (1..=64).
    pub n_countries: usize,
    /// Number of places (cities, capitals included), spread over the countries;
    /// at least one per country (n_countries..=1024).
    pub n_places: usize,
    /// Number of people (2..=10000).
    pub n_people: usize,
}

impl Default for WorldConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            n_countries: 4,
            n_places: 16,
            n_people: 32,
        }
    }
}

impl WorldConfig {
    /// Checks every field's range; the error names the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field, reason: String| Err(Error::InvalidWorldConfig { field, reason });
        if !(1..=64).contains(&self.n_countries) {
            return bad(
                "n_countries",
                format!("is {}, must be 1..=64", self.n_countries),
            );
        }
        if !(self.n_countries..=1024).contains(&self.n_places) {
            return bad(
                "n_places",
                format!(
                    "is {}, must be n_countries ({})..=1024",
                    self.n_places, self.n_countries
                ),
            );
        }
        if !(2..=10_000).contains(&self.n_people) {
            return bad(
                "n_people",
                format!("is {}, must be 2..=10000", self.n_people),
            );
        }
        Ok(())
    }

    /// This config with every field clamped into its valid range.
    pub fn clamped(&self) -> WorldConfig {
        let n_countries = self.n_countries.clamp(1, 64);
        WorldConfig {
            seed: self.seed,
            n_countries,
            n_places: self.n_places.clamp(n_countries, 1024),
            n_people: self.n_people.clamp(2, 10_000),
        }
    }
}

/// He or she: decides pronouns and words like "sister"/"brother".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pronoun {
    /// she / her / her
    She,
    /// he / him / his
    He,
}

impl Pronoun {
    /// "she" / "he".
    pub fn subject(self) -> &'static str {
        match self {
            Pronoun::She => "she",
            Pronoun::He => "he",
        }
    }
    /// "She" / "He".
    pub fn subject_cap(self) -> &'static str {
        match self {
            Pronoun::She => "She",
            Pronoun::He => "He",
        }
    }
    /// "her" / "him".
    pub fn object(self) -> &'static str {
        match self {
            Pronoun::She => "her",
            Pronoun::He => "him",
        }
    }
    /// "her" / "his".
    pub fn possessive(self) -> &'static str {
        match self {
            Pronoun::She => "her",
            Pronoun::He => "his",
        }
    }
    /// "Her" / "His".
    pub fn possessive_cap(self) -> &'static str {
        match self {
            Pronoun::She => "Her",
            Pronoun::He => "His",
        }
    }
    /// "sister" / "brother".
    pub fn sibling_word(self) -> &'static str {
        match self {
            Pronoun::She => "sister",
            Pronoun::He => "brother",
        }
    }
}

/// A country. Indices refer to [`World::cities`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Country {
    /// Generated name, e.g. "Vemora".
    pub name: String,
    /// Index of the capital in [`World::cities`]; also the country's largest city.
    pub capital: usize,
    /// Indices of all its cities (the capital first).
    pub cities: Vec<usize>,
    /// The language spoken there, e.g. "Vemorish".
    pub language: String,
    /// The two colours of its flag.
    pub flag: [String; 2],
    /// Its national animal.
    pub animal: String,
}

/// A city.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct City {
    /// Generated name.
    pub name: String,
    /// Index of its country in [`World::countries`].
    pub country: usize,
    /// Number of inhabitants (a round number: a multiple of 1,000).
    pub population: u64,
    /// What it is known for, e.g. "an old stone bridge".
    pub landmark: String,
}

/// A pet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pet {
    /// Kind of animal, e.g. "cat".
    pub kind: String,
    /// Its generated name.
    pub name: String,
}

/// Several things of one kind and colour that a person owns ("three red cups").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Belonging {
    /// Singular noun, e.g. "cup".
    pub object: String,
    /// Plural noun, e.g. "cups".
    pub plural: String,
    /// Colour, e.g. "red".
    pub colour: String,
    /// How many (2..=9).
    pub count: u64,
}

/// A person. Indices refer to [`World::cities`] and [`World::people`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    /// First name, unique in the world (questions name people by it).
    pub first_name: String,
    /// Family name, shared by siblings.
    pub family_name: String,
    /// Pronoun.
    pub pronoun: Pronoun,
    /// Age in years.
    pub age: u64,
    /// Profession, e.g. "baker".
    pub profession: String,
    /// Index of their home city.
    pub city: usize,
    /// Their pet, if any.
    pub pet: Option<Pet>,
    /// Favourite colour.
    pub favourite_colour: String,
    /// Favourite food.
    pub favourite_food: String,
    /// Favourite number (1..=99).
    pub favourite_number: u64,
    /// Things they own, each of a different kind.
    pub belongings: Vec<Belonging>,
    /// Indices of their friends (symmetric: each friend lists them back).
    pub friends: Vec<usize>,
    /// Indices of their siblings (symmetric; siblings share the family name, ages differ).
    pub siblings: Vec<usize>,
}

impl Person {
    /// "Mira Tolan".
    pub fn full_name(&self) -> String {
        format!("{} {}", self.first_name, self.family_name)
    }

    /// "a baker" / "an artist".
    pub fn profession_with_article(&self) -> String {
        let article = names::PROFESSIONS
            .iter()
            .find(|p| p.1 == self.profession)
            .map_or("a", |p| p.0);
        format!("{article} {}", self.profession)
    }
}

/// All facts of a generated world.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct World {
    /// The config it was generated from.
    pub config: WorldConfig,
    /// Countries.
    pub countries: Vec<Country>,
    /// Cities (capitals included).
    pub cities: Vec<City>,
    /// People.
    pub people: Vec<Person>,
}

impl World {
    /// Generates the world for `config` (clamped into range first: see
    /// [`WorldConfig::clamped`]; call [`WorldConfig::validate`] to reject bad values instead).
    pub fn generate(config: &WorldConfig) -> World {
        generate::generate(&config.clamped())
    }

    /// Writes the facts to `path` as pretty JSON, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_string_pretty(self).map_err(|source| Error::WorldJson {
            path: path.to_path_buf(),
            source,
        })?;
        crate::atomic::write_atomic(path, json.as_bytes()).map_err(|e| Error::io(path, e))
    }

    /// Reads a `world.json` written by [`World::save`] or [`write_world`] and checks that its
    /// facts are consistent.
    pub fn load(path: &Path) -> Result<World> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let world: World = serde_json::from_slice(&bytes).map_err(|source| Error::WorldJson {
            path: path.to_path_buf(),
            source,
        })?;
        world.validate()?;
        Ok(world)
    }

    /// Checks that every index is in range and every relation is consistent.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::InvalidWorld { what });
        let nc = self.cities.len();
        for (i, c) in self.countries.iter().enumerate() {
            if c.cities.is_empty() || c.cities.first() != Some(&c.capital) {
                return bad(format!(
                    "country {i} ({}): capital must be its first city",
                    c.name
                ));
            }
            for &ci in &c.cities {
                if self.cities.get(ci).map(|city| city.country) != Some(i) {
                    return bad(format!("country {i} ({}): city {ci} is not in it", c.name));
                }
            }
        }
        for (i, c) in self.cities.iter().enumerate() {
            match self.countries.get(c.country) {
                Some(country) if country.cities.contains(&i) => {}
                _ => return bad(format!("city {i} ({}): bad country {}", c.name, c.country)),
            }
        }
        for (i, p) in self.people.iter().enumerate() {
            if p.city >= nc {
                return bad(format!(
                    "person {i} ({}): city {} out of range",
                    p.first_name, p.city
                ));
            }
            self.check_mutual(i, "friend", &p.friends, |q| &q.friends)?;
            self.check_mutual(i, "sibling", &p.siblings, |q| &q.siblings)?;
        }
        let mut seen = std::collections::HashSet::new();
        for p in &self.people {
            if !seen.insert(p.first_name.as_str()) {
                return bad(format!("first name {} is used twice", p.first_name));
            }
        }
        Ok(())
    }

    /// Checks that every person in `list` (person `i`'s friends or siblings) is another
    /// person who lists `i` back.
    fn check_mutual(
        &self,
        i: usize,
        kind: &str,
        list: &[usize],
        back: fn(&Person) -> &[usize],
    ) -> Result<()> {
        for &j in list {
            let mutual = j != i && j < self.people.len() && back(&self.people[j]).contains(&i);
            if !mutual {
                let name = &self.people[i].first_name;
                return Err(Error::InvalidWorld {
                    what: format!("person {i} ({name}): {kind} {j} is not mutual"),
                });
            }
        }
        Ok(())
    }

    /// The person with this first name (exact match).
    pub fn person(&self, first_name: &str) -> Option<&Person> {
        self.people.iter().find(|p| p.first_name == first_name)
    }

    /// The city a person lives in.
    pub fn home(&self, person: &Person) -> &City {
        &self.cities[person.city]
    }

    /// The country a city is in.
    pub fn country_of(&self, city: &City) -> &Country {
        &self.countries[city.country]
    }

    /// The capital city of a country.
    pub fn capital_of(&self, country: &Country) -> &City {
        &self.cities[country.capital]
    }

    /// Indices of the people who live in city `city`.
    pub fn residents(&self, city: usize) -> Vec<usize> {
        (0..self.people.len())
            .filter(|&i| self.people[i].city == city)
            .collect()
    }
}

#[cfg(test)]
mod tests;
