//! Encyclopedic paragraphs about countries, cities and people, and short question-and-answer
//! quizzes, each stating the world's facts in one of several phrasings.
//!
//! An article opens with an introduction and then gives its facts in a random order, each fact in
//! a randomly chosen template, so a model sees every fact many ways and learns the fact, not a
//! sentence.

use super::numbers::{a_or_an, digits_grouped, join_and, words};
use super::text::Doc;
use super::World;
use crate::Rng;

/// An article about country `ci`.
pub fn country_article(world: &World, ci: usize, rng: &mut Rng) -> String {
    let c = &world.countries[ci];
    let name = &c.name;
    let capital = &world.capital_of(c).name;
    let n = words(c.cities.len() as u64);
    let n_cities = if c.cities.len() == 1 {
        "one city".to_string()
    } else {
        format!("{n} cities")
    };
    let mut doc = Doc::new();
    doc.say(pick!(rng;
        "{name} is a country.",
        "{name} is a country with {n_cities}.",
        "The country of {name} has {n_cities}.",
    ));
    let others: Vec<&str> = c.cities[1..]
        .iter()
        .map(|&i| world.cities[i].name.as_str())
        .collect();
    let all: Vec<&str> = c
        .cities
        .iter()
        .map(|&i| world.cities[i].name.as_str())
        .collect();
    let (list, all) = (join_and(&others), join_and(&all));
    let language = &c.language;
    let [a, b] = &c.flag;
    let a_flag = format!("{} {a}", a_or_an(a));
    let animal = &c.animal;
    let pop = digits_grouped(world.capital_of(c).population);
    let mut facts: Vec<String> = vec![
        pick!(rng;
            "The capital of {name} is {capital}.",
            "{capital} is the capital of {name}.",
            "The capital city of {name} is {capital}.",
            "{name}'s capital is {capital}.",
        ),
        pick!(rng;
            "People in {name} speak {language}.",
            "The language of {name} is {language}.",
            "In {name}, people speak {language}.",
        ),
        pick!(rng;
            "The flag of {name} is {a} and {b}.",
            "{name} has {a_flag} and {b} flag.",
            "The colours of the flag of {name} are {a} and {b}.",
        ),
        pick!(rng;
            "The national animal of {name} is the {animal}.",
            "The {animal} is the national animal of {name}.",
        ),
        pick!(rng;
            "The biggest city in {name} is {capital}, with about {pop} people.",
            "{capital} is the largest city in {name}.",
        ),
    ];
    if !others.is_empty() {
        facts.push(pick!(rng;
            "Other cities in {name} are {list}.",
            "Besides {capital}, {name} has the cities {list}.",
            "The cities of {name} are {all}.",
        ));
    }
    rng.shuffle(&mut facts);
    for f in facts {
        doc.say(f);
    }
    doc.finish()
}

/// An article about city `ci`.
pub fn city_article(world: &World, ci: usize, rng: &mut Rng) -> String {
    let city = &world.cities[ci];
    let country = world.country_of(city);
    let (x, cn) = (&city.name, &country.name);
    let is_capital = country.capital == ci;
    let mut doc = Doc::new();
    doc.say(if is_capital {
        pick!(rng;
            "{x} is the capital of {cn}.",
            "{x} is a city in {cn}. It is the capital.",
            "{x}, the capital of {cn}, is the biggest city in the country.",
        )
    } else {
        pick!(rng;
            "{x} is a city in {cn}.",
            "{x} is a town in the country of {cn}.",
            "The city of {x} lies in {cn}.",
        )
    });
    let pop = digits_grouped(city.population);
    let pop_words = words(city.population);
    let landmark = &city.landmark;
    let mut facts: Vec<String> = vec![
        pick!(rng;
            "About {pop} people live in {x}.",
            "{x} has a population of {pop}.",
            "{x} is home to about {pop_words} people.",
        ),
        pick!(rng;
            "{x} is known for {landmark}.",
            "In {x} there is {landmark}.",
            "Visitors to {x} like to see {landmark}.",
        ),
    ];
    let residents: Vec<&str> = world
        .residents(ci)
        .into_iter()
        .map(|i| world.people[i].first_name.as_str())
        .collect();
    if !residents.is_empty() {
        let list = join_and(&residents);
        facts.push(if residents.len() == 1 {
            pick!(rng; "{list} lives in {x}.", "One of the people of {x} is {list}.")
        } else {
            pick!(rng; "{list} live in {x}.", "Among the people of {x} are {list}.")
        });
    }
    // A comparison with another city of the same country, when there is one.
    let others: Vec<usize> = country
        .cities
        .iter()
        .copied()
        .filter(|&o| o != ci)
        .collect();
    if !others.is_empty() {
        let other = &world.cities[*rng.choose(&others)];
        let y = &other.name;
        facts.push(if city.population > other.population {
            pick!(rng; "{x} is bigger than {y}.", "{y} is smaller than {x}.")
        } else {
            pick!(rng; "{x} is smaller than {y}.", "{y} is bigger than {x}.")
        });
    }
    if !is_capital {
        let k = &world.capital_of(country).name;
        facts.push(pick!(rng;
            "The capital of {cn} is {k}.",
            "From {x}, people travel to {k}, the capital of {cn}.",
        ));
    }
    rng.shuffle(&mut facts);
    for f in facts {
        doc.say(f);
    }
    doc.finish()
}

/// Facts about person `pi`, each as one sentence in a random phrasing (introduction excluded),
/// with whether the sentence names another person.
fn person_facts(world: &World, pi: usize, rng: &mut Rng) -> Vec<(String, bool)> {
    let p = &world.people[pi];
    let f = &p.first_name;
    let (she, her) = (p.pronoun.subject_cap(), p.pronoun.possessive_cap());
    let city = world.home(p);
    let (home, country) = (&city.name, &world.country_of(city).name);
    let (age, age_words) = (p.age, words(p.age));
    let job = p.profession_with_article();
    let mut facts = vec![
        pick!(rng;
            "{f} is {age} years old.",
            "{she} is {age_words} years old.",
            "{f}'s age is {age}.",
        ),
        pick!(rng;
            "{f} works as {job}.",
            "{she} is {job}.",
            "{f} is {job} by profession.",
        ),
        if world.countries[city.country].capital == p.city {
            pick!(rng;
                "{f} lives in {home}, the capital of {country}.",
                "{f}'s home is in {home}.",
                "{she} lives in {home}.",
            )
        } else {
            pick!(rng;
                "{f} lives in {home}.",
                "{she} lives in {home}, in {country}.",
                "{f}'s home is in {home}, a city in {country}.",
            )
        },
    ];
    facts.push(match &p.pet {
        Some(pet) => {
            let (kind, name) = (&pet.kind, &pet.name);
            pick!(rng;
                "{f} has a {kind} named {name}.",
                "{f}'s pet is a {kind} called {name}.",
                "{she} has a pet {kind}. Its name is {name}.",
            )
        }
        None => pick!(rng; "{f} has no pets.", "{f} does not have a pet."),
    });
    let (colour, food) = (&p.favourite_colour, &p.favourite_food);
    let (num, num_words) = (p.favourite_number, words(p.favourite_number));
    facts.push(pick!(rng;
        "{f}'s favourite colour is {colour}.",
        "{her} favourite colour is {colour}.",
        "{f} likes the colour {colour} best.",
    ));
    facts.push(pick!(rng;
        "{f}'s favourite food is {food}.",
        "{f} likes {food} more than any other food.",
        "{her} favourite food is {food}.",
    ));
    facts.push(pick!(rng;
        "{f}'s favourite number is {num}.",
        "The number {num} is {f}'s favourite.",
        "{her} favourite number is {num_words}.",
    ));
    for b in &p.belongings {
        let (n, nw, colour, things) = (b.count, words(b.count), &b.colour, &b.plural);
        facts.push(pick!(rng;
            "{f} has {nw} {colour} {things}.",
            "{she} owns {n} {colour} {things}.",
            "At home, {f} keeps {nw} {colour} {things}.",
        ));
    }
    let mut facts: Vec<(String, bool)> = facts.into_iter().map(|s| (s, false)).collect();
    let friends: Vec<&str> = p
        .friends
        .iter()
        .map(|&j| world.people[j].first_name.as_str())
        .collect();
    if !friends.is_empty() {
        let list = join_and(&friends);
        let s = if friends.len() == 1 {
            pick!(rng;
                "{f}'s friend is {list}.",
                "{f} is friends with {list}.",
                "{list} is a good friend of {f}.",
            )
        } else {
            pick!(rng;
                "{f}'s friends are {list}.",
                "{f} is friends with {list}.",
                "{list} are friends of {f}.",
            )
        };
        facts.push((s, true));
    }
    if p.siblings.is_empty() {
        let s = pick!(rng; "{f} has no brothers or sisters.", "{f} is an only child.");
        facts.push((s, false));
    }
    for &j in &p.siblings {
        let s = &world.people[j];
        let (sn, full, rel) = (&s.first_name, s.full_name(), s.pronoun.sibling_word());
        let (older, an_older) = if s.age > p.age {
            ("older", "an older")
        } else {
            ("younger", "a younger")
        };
        let s = pick!(rng;
            "{f} has {an_older} {rel} called {sn}.",
            "{full} is {f}'s {older} {rel}.",
            "{f} and {sn} are siblings; {sn} is the {older} one.",
        );
        facts.push((s, true));
    }
    facts
}

/// An article about person `pi`.
pub fn person_article(world: &World, pi: usize, rng: &mut Rng) -> String {
    let p = &world.people[pi];
    let (f, full) = (&p.first_name, p.full_name());
    let city = &world.home(p).name;
    let job = p.profession_with_article();
    let mut doc = Doc::new();
    doc.say(pick!(rng;
        "{full} is {job} who lives in {city}.",
        "This is {full}.",
        "{full} is a person from {city}.",
        "Let me tell you about {f}. {f}'s full name is {full}.",
    ));
    let mut facts = person_facts(world, pi, rng);
    rng.shuffle(&mut facts);
    // A sentence that opens with "She"/"Her" right after one naming someone else would be
    // ambiguous: name the person instead.
    let (she, her) = (p.pronoun.subject_cap(), p.pronoun.possessive_cap());
    let mut after_other = false;
    for (s, names_other) in facts {
        let s = match (after_other, s.split_once(' ')) {
            (true, Some((first, rest))) if first == she => format!("{f} {rest}"),
            (true, Some((first, rest))) if first == her => format!("{f}'s {rest}"),
            _ => s,
        };
        doc.say(s);
        after_other = names_other;
    }
    doc.finish()
}

/// A quiz of `n` questions about the world, each followed by its answer, e.g.
/// "Question: Where does Mira live?\nAnswer: Mira lives in Tolbar."
pub fn quiz(world: &World, n: usize, rng: &mut Rng) -> String {
    let mut doc = Doc::new();
    for _ in 0..n {
        let (q, a) = quiz_item(world, rng);
        doc.line(format!("Question: {q}"));
        doc.line(format!("Answer: {a}"));
    }
    doc.finish()
}

/// One question about a random fact and its full-sentence answer.
fn quiz_item(world: &World, rng: &mut Rng) -> (String, String) {
    let p = &world.people[rng.index(world.people.len())];
    let f = &p.first_name;
    let city = world.home(p);
    let home = &city.name;
    let c = &world.countries[rng.index(world.countries.len())];
    let cn = &c.name;
    match rng.index(8) {
        0 => (
            format!("Where does {f} live?"),
            format!("{f} lives in {home}."),
        ),
        1 => {
            let k = &world.capital_of(c).name;
            (
                format!("What is the capital of {cn}?"),
                format!("The capital of {cn} is {k}."),
            )
        }
        2 => (
            format!("How old is {f}?"),
            format!("{f} is {} years old.", p.age),
        ),
        3 => {
            let job = p.profession_with_article();
            (format!("What does {f} do?"), format!("{f} is {job}."))
        }
        4 => {
            let colour = &p.favourite_colour;
            (
                format!("What is {f}'s favourite colour?"),
                format!("{f}'s favourite colour is {colour}."),
            )
        }
        5 => {
            let l = &c.language;
            (
                format!("What language do people speak in {cn}?"),
                format!("People in {cn} speak {l}."),
            )
        }
        6 => {
            let b = rng.choose(&p.belongings);
            let (things, colour) = (&b.plural, &b.colour);
            (
                format!("How many {things} does {f} have?"),
                format!("{f} has {} {colour} {things}.", b.count),
            )
        }
        _ => {
            let country = &world.country_of(city).name;
            let q = format!("Which country is {home} in?");
            (
                q,
                pick!(rng; "{home} is in {country}.", "{home} is a city in {country}."),
            )
        }
    }
}

/// A short note comparing two numbers from the world: people's ages or cities' sizes.
pub fn world_comparison(world: &World, rng: &mut Rng) -> String {
    let mut doc = Doc::new();
    for _ in 0..3 {
        if rng.bernoulli(0.5) && world.people.len() >= 2 {
            let i = rng.index(world.people.len());
            let j = (i + 1 + rng.index(world.people.len() - 1)) % world.people.len();
            let (a, b) = (&world.people[i], &world.people[j]);
            let (an, bn, aa, ba) = (&a.first_name, &b.first_name, a.age, b.age);
            let cmp = if aa > ba {
                pick!(rng; "{an} is older than {bn}.", "{bn} is younger than {an}.")
            } else if aa < ba {
                pick!(rng; "{an} is younger than {bn}.", "{bn} is older than {an}.")
            } else {
                pick!(rng; "{an} and {bn} are the same age.", "{an} is as old as {bn}.")
            };
            doc.say(format!("{an} is {aa} and {bn} is {ba}. {cmp}"));
        } else if world.cities.len() >= 2 {
            let i = rng.index(world.cities.len());
            let j = (i + 1 + rng.index(world.cities.len() - 1)) % world.cities.len();
            let (a, b) = (&world.cities[i], &world.cities[j]);
            let (an, bn) = (&a.name, &b.name);
            let (ap, bp) = (digits_grouped(a.population), digits_grouped(b.population));
            let cmp = if a.population > b.population {
                pick!(rng; "So {an} is bigger than {bn}.", "{bn} is smaller than {an}.")
            } else {
                pick!(rng; "So {an} is smaller than {bn}.", "{bn} is bigger than {an}.")
            };
            doc.say(format!(
                "{an} has {ap} people and {bn} has {bp} people. {cmp}"
            ));
        }
    }
    doc.finish()
}
