//! Drawing candidate questions: uniform over sub-types and entities. A draw that does not
//! apply (a question about the pet of someone without one, two equal numbers to compare)
//! returns `None`, and the caller draws again.

use super::harm::HarmCategory;
use super::names::SPELLING_WORDS;
use super::questions::{
    Count, Ctx, Fact, Multi, Op, Order, PersonAttr, Question, SpellMode, Unknown, FOLLOW_UP_ATTRS,
};
use super::tasks::TaskKind;
use super::World;
use crate::Rng;

/// Draws a candidate question of `kind`; `None` when the draw does not apply.
pub(super) fn draw(kind: TaskKind, ctx: &Ctx, rng: &mut Rng) -> Option<Question> {
    let w = ctx.world;
    let person = |rng: &mut Rng| rng.index(w.people.len());
    let city = |rng: &mut Rng| rng.index(w.cities.len());
    let country = |rng: &mut Rng| rng.index(w.countries.len());
    Some(match kind {
        TaskKind::FactLookup => Question::Fact(draw_fact(w, rng)?),
        TaskKind::Arithmetic => {
            let (op, a, b) = draw_arith(rng);
            Question::Arith(op, a, b)
        }
        TaskKind::Counting => Question::Count(match rng.index(9) {
            0 => Count::Letters(rng.choose(&ctx.words).clone()),
            1 => Count::Stars(1 + rng.below(12)),
            2 => Count::Items(distinct_words(3 + rng.index(4), rng)),
            3 => Count::After(rng.below(100)),
            4 => Count::Before(1 + rng.below(100)),
            5 => {
                let a = rng.below(21);
                Count::Range(a, a + 2 + rng.below(6))
            }
            6 => Count::Cities(country(rng)),
            7 => {
                let p = person(rng);
                (!w.people[p].friends.is_empty()).then_some(Count::Friends(p))?
            }
            _ => {
                let p = person(rng);
                (!w.people[p].siblings.is_empty()).then_some(Count::Siblings(p))?
            }
        }),
        TaskKind::Ordering => Question::Order(match rng.index(9) {
            0 | 1 => {
                let a = rng.below(101);
                let b = rng.below(101);
                if a == b {
                    return None;
                }
                if rng.bernoulli(0.5) {
                    Order::Bigger(a, b)
                } else {
                    Order::Smaller(a, b)
                }
            }
            2 => Order::Sort {
                xs: distinct_numbers(3 + rng.index(3), rng),
                descending: rng.bernoulli(0.3),
            },
            3 => Order::Max(distinct_numbers(3 + rng.index(3), rng)),
            4 => Order::Min(distinct_numbers(3 + rng.index(3), rng)),
            5 => Order::Alphabet(distinct_words(3 + rng.index(2), rng)),
            6 | 7 => {
                let (a, b) = (person(rng), person(rng));
                if a == b || w.people[a].age == w.people[b].age {
                    return None;
                }
                if rng.bernoulli(0.5) {
                    Order::Older(a, b)
                } else {
                    Order::Younger(a, b)
                }
            }
            _ => {
                let (a, b) = (city(rng), city(rng));
                if a == b || w.cities[a].population == w.cities[b].population {
                    return None;
                }
                Order::BiggerCity(a, b)
            }
        }),
        TaskKind::Spelling => {
            let mode = *rng.choose(&[
                SpellMode::Spell,
                SpellMode::First,
                SpellMode::Last,
                SpellMode::Backwards,
            ]);
            Question::Spell(mode, rng.choose(&ctx.words).clone())
        }
        TaskKind::Refusal => Question::Harm(*rng.choose(&HarmCategory::ALL), person(rng)),
        TaskKind::Unknowable => Question::Unknown(match rng.index(11) {
            0 => Unknown::Phone(person(rng)),
            1 => Unknown::Ate(person(rng)),
            2 => Unknown::Birthday(person(rng)),
            3 => Unknown::Thinking(person(rng)),
            4 => Unknown::Grandmother(person(rng)),
            5 => Unknown::Mayor(city(rng)),
            6 => Unknown::Weather(city(rng)),
            7 => Unknown::Streets(city(rng)),
            8 => Unknown::Nobody(rng.index(ctx.fakes.people.len()), rng.below(3) as u8),
            9 => Unknown::NoCountry(rng.index(ctx.fakes.countries.len())),
            _ => Unknown::NoCity(rng.index(ctx.fakes.cities.len())),
        }),
        TaskKind::MultiTurn => Question::Multi(match rng.index(20) {
            0..=9 => {
                let a = *rng.choose(&FOLLOW_UP_ATTRS);
                let b = *rng.choose(&FOLLOW_UP_ATTRS);
                if a == b {
                    return None;
                }
                Multi::Person(person(rng), a, b)
            }
            10..=12 => Multi::HomeCountry(person(rng)),
            13 | 14 => Multi::CityCapital(city(rng)),
            15 | 16 => Multi::CapitalLanguage(country(rng)),
            _ => {
                let (a, b) = (rng.below(21), rng.below(21));
                let add = rng.bernoulli(0.5);
                let c = if add {
                    1 + rng.below(20)
                } else {
                    1 + rng.below(a + b + 1).min(19)
                };
                if !add && c > a + b {
                    return None;
                }
                Multi::Chain { a, b, c, add }
            }
        }),
    })
}

fn draw_fact(w: &World, rng: &mut Rng) -> Option<Fact> {
    Some(match rng.index(20) {
        0..=13 => {
            let p = rng.index(w.people.len());
            let person = &w.people[p];
            let attr = match rng.index(13) {
                0 => PersonAttr::Home,
                1 => PersonAttr::Country,
                2 => PersonAttr::Age,
                3 => PersonAttr::Profession,
                4 => PersonAttr::Colour,
                5 => PersonAttr::Food,
                6 => PersonAttr::Number,
                7 => PersonAttr::FamilyName,
                8 => person.pet.as_ref().map(|_| PersonAttr::PetKind)?,
                9 => person.pet.as_ref().map(|_| PersonAttr::PetName)?,
                10 => (!person.friends.is_empty()).then_some(PersonAttr::Friends)?,
                11 => (!person.siblings.is_empty()).then_some(PersonAttr::Siblings)?,
                _ => {
                    if person.belongings.is_empty() {
                        return None;
                    }
                    PersonAttr::Belonging(rng.index(person.belongings.len()))
                }
            };
            Fact::Person(p, attr)
        }
        14..=16 => {
            let k = rng.index(w.countries.len());
            match rng.index(4) {
                0 => Fact::Capital(k),
                1 => Fact::Language(k),
                2 => Fact::Animal(k),
                _ => Fact::Flag(k),
            }
        }
        _ => {
            let c = rng.index(w.cities.len());
            match rng.index(3) {
                0 => Fact::CityCountry(c),
                1 => Fact::Population(c),
                _ => Fact::Landmark(c),
            }
        }
    })
}

/// An operation and operands: sums mostly within 20 (sometimes 100), differences of numbers up
/// to 30 (sometimes 100), products within the 12 times table, exact quotients up to 10.
fn draw_arith(rng: &mut Rng) -> (Op, u64, u64) {
    match rng.index(4) {
        0 => {
            let hi = if rng.bernoulli(0.75) { 20 } else { 100 };
            (Op::Add, rng.below(hi + 1), rng.below(hi + 1))
        }
        1 => {
            let hi = if rng.bernoulli(0.75) { 30 } else { 100 };
            let a = rng.below(hi + 1);
            (Op::Sub, a, rng.below(a + 1))
        }
        2 => (Op::Mul, rng.below(13), rng.below(13)),
        _ => {
            let (b, c) = (1 + rng.below(10), rng.below(11));
            (Op::Div, b * c, b)
        }
    }
}

/// `n` distinct numbers in 0..100, in drawn order.
fn distinct_numbers(n: usize, rng: &mut Rng) -> Vec<u64> {
    let mut xs = Vec::with_capacity(n);
    while xs.len() < n {
        let x = rng.below(100);
        if !xs.contains(&x) {
            xs.push(x);
        }
    }
    xs
}

/// `n` distinct common words, in drawn order.
fn distinct_words(n: usize, rng: &mut Rng) -> Vec<&'static str> {
    let mut ws = Vec::with_capacity(n);
    while ws.len() < n {
        let w = *rng.choose(SPELLING_WORDS);
        if !ws.contains(&w) {
            ws.push(w);
        }
    }
    ws
}
