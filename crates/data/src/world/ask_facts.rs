//! Questions about the world's facts and their gold replies, single and multi-turn.
//!
//! Questions come in several phrasings; each fact has exactly one reply template, a short full
//! sentence that names its subject ("Druk lives in Flythholm."), so that a tiny model learns one
//! consistent answer style. Follow-up questions use a pronoun ("And how old is she?"), and
//! their reply is the same sentence as for the direct question.

use super::numbers::{digits_grouped, join_and};
use super::questions::{Fact, Multi, Op, PersonAttr};
use super::tasks::{Answer, Turn};
use super::World;
use crate::Rng;

/// `landmark` without its article: "an old stone bridge" → "old stone bridge".
pub(super) fn bare_landmark(landmark: &str) -> &str {
    landmark
        .strip_prefix("a ")
        .or_else(|| landmark.strip_prefix("an "))
        .unwrap_or(landmark)
}

/// A direct question about `fact`.
pub(super) fn fact_question(w: &World, fact: Fact, rng: &mut Rng) -> String {
    match fact {
        Fact::Person(p, attr) => {
            let person = &w.people[p];
            let f = &person.first_name;
            match attr {
                PersonAttr::Home => pick!(rng;
                    "Where does {f} live?",
                    "In which city does {f} live?",
                    "Which city is {f}'s home?",
                    "Where is {f}'s home?",
                    "Do you know where {f} lives?",
                    "Tell me where {f} lives.",
                ),
                PersonAttr::Country => pick!(rng;
                    "Which country does {f} live in?",
                    "In what country does {f} live?",
                    "What country is {f}'s home in?",
                ),
                PersonAttr::Age => pick!(rng;
                    "How old is {f}?",
                    "What is {f}'s age?",
                    "Do you know how old {f} is?",
                    "Tell me {f}'s age.",
                ),
                PersonAttr::Profession => pick!(rng;
                    "What does {f} do?",
                    "What is {f}'s job?",
                    "What does {f} do for a living?",
                    "What is {f}'s profession?",
                    "What work does {f} do?",
                ),
                PersonAttr::Colour => pick!(rng;
                    "What is {f}'s favourite colour?",
                    "Which colour does {f} like best?",
                    "What colour does {f} like most?",
                ),
                PersonAttr::Food => pick!(rng;
                    "What is {f}'s favourite food?",
                    "What food does {f} like best?",
                    "Which food does {f} like most?",
                ),
                PersonAttr::Number => pick!(rng;
                    "What is {f}'s favourite number?",
                    "Which number does {f} like best?",
                ),
                PersonAttr::FamilyName => pick!(rng;
                    "What is {f}'s family name?",
                    "What is {f}'s surname?",
                    "What is {f}'s last name?",
                ),
                PersonAttr::PetKind => pick!(rng;
                    "What kind of pet does {f} have?",
                    "What pet does {f} have?",
                    "What animal does {f} keep as a pet?",
                ),
                PersonAttr::PetName => {
                    let kind = person.pet.as_ref().map_or("pet", |x| x.kind.as_str());
                    pick!(rng;
                        "What is the name of {f}'s {kind}?",
                        "What is {f}'s {kind} called?",
                        "What is {f}'s pet called?",
                    )
                }
                PersonAttr::Friends => pick!(rng;
                    "Who are {f}'s friends?",
                    "Who is {f} friends with?",
                    "Name {f}'s friends.",
                ),
                PersonAttr::Siblings => pick!(rng;
                    "Who are {f}'s siblings?",
                    "Who are {f}'s brothers and sisters?",
                    "Tell me the names of {f}'s siblings.",
                ),
                PersonAttr::Belonging(b) => {
                    let things = &person.belongings[b].plural;
                    pick!(rng;
                        "How many {things} does {f} have?",
                        "How many {things} does {f} own?",
                        "How many {things} are there in {f}'s home?",
                    )
                }
            }
        }
        Fact::Capital(k) => {
            let k = &w.countries[k].name;
            pick!(rng;
                "What is the capital of {k}?",
                "Which city is the capital of {k}?",
                "What is {k}'s capital?",
                "Name the capital of {k}.",
            )
        }
        Fact::Language(k) => {
            let k = &w.countries[k].name;
            pick!(rng;
                "What language do people speak in {k}?",
                "What is the language of {k}?",
                "Which language is spoken in {k}?",
            )
        }
        Fact::Animal(k) => {
            let k = &w.countries[k].name;
            pick!(rng;
                "What is the national animal of {k}?",
                "Which animal is the national animal of {k}?",
            )
        }
        Fact::Flag(k) => {
            let k = &w.countries[k].name;
            pick!(rng;
                "What colours are on the flag of {k}?",
                "What are the colours of {k}'s flag?",
                "What does the flag of {k} look like?",
            )
        }
        Fact::CityCountry(c) => {
            let x = &w.cities[c].name;
            pick!(rng;
                "Which country is {x} in?",
                "In which country is {x}?",
                "Where is {x}?",
                "{x} is a city in which country?",
            )
        }
        Fact::Population(c) => {
            let x = &w.cities[c].name;
            pick!(rng;
                "How many people live in {x}?",
                "What is the population of {x}?",
                "How big is {x}?",
            )
        }
        Fact::Landmark(c) => {
            let x = &w.cities[c].name;
            pick!(rng;
                "What is {x} known for?",
                "What can visitors see in {x}?",
                "What is {x} famous for?",
            )
        }
    }
}

/// The gold reply to a question about `fact`, and what a correct reply must contain.
pub(super) fn fact_reply(w: &World, fact: Fact) -> (String, Answer) {
    let has = |xs: &[&str]| Answer::Contains(xs.iter().map(|s| s.to_string()).collect());
    match fact {
        Fact::Person(p, attr) => {
            let person = &w.people[p];
            let f = &person.first_name;
            let names = |ids: &[usize]| -> Vec<&str> {
                ids.iter()
                    .map(|&j| w.people[j].first_name.as_str())
                    .collect()
            };
            match attr {
                PersonAttr::Home => {
                    let c = &w.home(person).name;
                    (format!("{f} lives in {c}."), has(&[c]))
                }
                PersonAttr::Country => {
                    let city = w.home(person);
                    let k = &w.country_of(city).name;
                    (format!("{f} lives in {}, in {k}.", city.name), has(&[k]))
                }
                PersonAttr::Age => (
                    format!("{f} is {} years old.", person.age),
                    Answer::Number(person.age),
                ),
                PersonAttr::Profession => (
                    format!("{f} is {}.", person.profession_with_article()),
                    has(&[&person.profession]),
                ),
                PersonAttr::Colour => {
                    let c = &person.favourite_colour;
                    (format!("{f}'s favourite colour is {c}."), has(&[c]))
                }
                PersonAttr::Food => {
                    let x = &person.favourite_food;
                    (format!("{f}'s favourite food is {x}."), has(&[x]))
                }
                PersonAttr::Number => {
                    let n = person.favourite_number;
                    (format!("{f}'s favourite number is {n}."), Answer::Number(n))
                }
                PersonAttr::FamilyName => {
                    let x = &person.family_name;
                    (format!("{f}'s family name is {x}."), has(&[x]))
                }
                PersonAttr::PetKind | PersonAttr::PetName => match &person.pet {
                    Some(pet) if attr == PersonAttr::PetKind => (
                        format!("{f} has a {} called {}.", pet.kind, pet.name),
                        has(&[&pet.kind]),
                    ),
                    Some(pet) => (
                        format!("{f}'s {} is called {}.", pet.kind, pet.name),
                        has(&[&pet.name]),
                    ),
                    // Never drawn for someone without a pet; stay truthful anyway.
                    None => (format!("{f} does not have a pet."), has(&["not"])),
                },
                PersonAttr::Friends => {
                    let xs = names(&person.friends);
                    let s = if xs.len() == 1 {
                        format!("{f}'s friend is {}.", xs[0])
                    } else {
                        format!("{f}'s friends are {}.", join_and(&xs))
                    };
                    (s, has(&xs))
                }
                PersonAttr::Siblings => {
                    let xs = names(&person.siblings);
                    let s = match person.siblings.as_slice() {
                        [j] => {
                            let rel = w.people[*j].pronoun.sibling_word();
                            format!("{f}'s {rel} is {}.", xs[0])
                        }
                        _ => format!("{f}'s siblings are {}.", join_and(&xs)),
                    };
                    (s, has(&xs))
                }
                PersonAttr::Belonging(b) => {
                    let b = &person.belongings[b];
                    (
                        format!("{f} has {} {} {}.", b.count, b.colour, b.plural),
                        Answer::Number(b.count),
                    )
                }
            }
        }
        Fact::Capital(k) => {
            let c = &w.countries[k];
            let cap = &w.capital_of(c).name;
            (format!("The capital of {} is {cap}.", c.name), has(&[cap]))
        }
        Fact::Language(k) => {
            let c = &w.countries[k];
            let l = &c.language;
            (format!("People in {} speak {l}.", c.name), has(&[l]))
        }
        Fact::Animal(k) => {
            let c = &w.countries[k];
            let a = &c.animal;
            (
                format!("The national animal of {} is the {a}.", c.name),
                has(&[a]),
            )
        }
        Fact::Flag(k) => {
            let c = &w.countries[k];
            let [a, b] = &c.flag;
            (
                format!("The flag of {} is {a} and {b}.", c.name),
                has(&[a, b]),
            )
        }
        Fact::CityCountry(c) => {
            let city = &w.cities[c];
            let k = &w.country_of(city).name;
            (format!("{} is in {k}.", city.name), has(&[k]))
        }
        Fact::Population(c) => {
            let city = &w.cities[c];
            let pop = digits_grouped(city.population);
            (
                format!("About {pop} people live in {}.", city.name),
                Answer::Number(city.population),
            )
        }
        Fact::Landmark(c) => {
            let city = &w.cities[c];
            (
                format!("{} is known for {}.", city.name, city.landmark),
                has(&[bare_landmark(&city.landmark)]),
            )
        }
    }
}

/// A single-turn fact question.
pub(super) fn fact(w: &World, f: Fact, rng: &mut Rng) -> Turn {
    let user = fact_question(w, f, rng);
    let (reply, answer) = fact_reply(w, f);
    Turn {
        user,
        reply,
        answer,
    }
}

/// A follow-up question about person `p`'s `attr`, referring to them by pronoun.
fn person_follow_up(w: &World, p: usize, attr: PersonAttr, rng: &mut Rng) -> String {
    let pr = w.people[p].pronoun;
    let (she, her) = (pr.subject(), pr.possessive());
    match attr {
        PersonAttr::Home => pick!(rng; "And where does {she} live?", "Where does {she} live?"),
        PersonAttr::Country => pick!(rng;
            "Which country does {she} live in?",
            "And in which country does {she} live?",
        ),
        PersonAttr::Age => pick!(rng; "And how old is {she}?", "How old is {she}?"),
        PersonAttr::Profession => pick!(rng; "What does {she} do?", "And what is {her} job?"),
        PersonAttr::Colour => pick!(rng;
            "What is {her} favourite colour?",
            "And which colour does {she} like best?",
        ),
        PersonAttr::Food => pick!(rng;
            "And what is {her} favourite food?",
            "What food does {she} like best?",
        ),
        PersonAttr::Number => pick!(rng;
            "What is {her} favourite number?",
            "And which number does {she} like best?",
        ),
        PersonAttr::FamilyName => pick!(rng;
            "What is {her} family name?",
            "And what is {her} surname?",
        ),
        // Not used as follow-ups (see FOLLOW_UP_ATTRS); ask directly.
        _ => fact_question(w, super::questions::Fact::Person(p, attr), rng),
    }
}

/// A two-turn conversation: a question, its gold reply, and a follow-up that refers back.
pub(super) fn multi(w: &World, m: Multi, rng: &mut Rng) -> [Turn; 2] {
    match m {
        Multi::Person(p, a, b) => {
            let first = fact(w, Fact::Person(p, a), rng);
            let user = person_follow_up(w, p, b, rng);
            let (reply, answer) = fact_reply(w, Fact::Person(p, b));
            [
                first,
                Turn {
                    user,
                    reply,
                    answer,
                },
            ]
        }
        Multi::HomeCountry(p) => {
            let first = fact(w, Fact::Person(p, PersonAttr::Home), rng);
            let user = pick!(rng;
                "Which country is that in?",
                "And which country is that city in?",
                "In which country is that?",
            );
            let (reply, answer) = fact_reply(w, Fact::CityCountry(w.people[p].city));
            [
                first,
                Turn {
                    user,
                    reply,
                    answer,
                },
            ]
        }
        Multi::CityCapital(c) => {
            let first = fact(w, Fact::CityCountry(c), rng);
            let user = pick!(rng;
                "What is its capital?",
                "And what is the capital of that country?",
                "Which city is the capital there?",
            );
            let (reply, answer) = fact_reply(w, Fact::Capital(w.cities[c].country));
            [
                first,
                Turn {
                    user,
                    reply,
                    answer,
                },
            ]
        }
        Multi::CapitalLanguage(k) => {
            let first = fact(w, Fact::Capital(k), rng);
            let user = pick!(rng;
                "What language do people speak there?",
                "And which language do they speak in that country?",
            );
            let (reply, answer) = fact_reply(w, Fact::Language(k));
            [
                first,
                Turn {
                    user,
                    reply,
                    answer,
                },
            ]
        }
        Multi::Chain { a, b, c, add } => {
            let first = super::ask_drills::arithmetic(w, Op::Add, a, b, rng);
            let s = a + b;
            let (op, user) = if add {
                (
                    Op::Add,
                    pick!(rng; "And if you add {c} more?", "Now add {c}.", "What if I add {c} to that?"),
                )
            } else {
                (
                    Op::Sub,
                    pick!(rng; "Now take away {c}.", "And if you subtract {c}?", "What if I take {c} from that?"),
                )
            };
            let t = op.apply(s, c);
            let reply = format!("{s} {} {c} = {t}.", op.symbol());
            [
                first,
                Turn {
                    user,
                    reply,
                    answer: Answer::Number(t),
                },
            ]
        }
    }
}
