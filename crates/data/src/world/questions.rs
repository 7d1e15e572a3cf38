//! The questions SFT tasks ask, as data, before any phrasing: which fact, which sum, which
//! word. Each question has canonical keys (one per question asked in the conversation; two for a
//! multi-turn task), and the split a task belongs to is decided by its keys alone
//! ([`super::tasks::Split::of`]), never by phrasing or seed, so the same underlying question
//! cannot land in two splits.
//!
//! Candidates are drawn in `world/draw.rs`.

use super::harm::HarmCategory;
use super::names::{NameGen, SPELLING_WORDS};
use super::tasks::TaskKind;
use super::World;
use crate::Rng;

/// A fact about a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PersonAttr {
    Home,
    Country,
    Age,
    Profession,
    Colour,
    Food,
    Number,
    FamilyName,
    PetKind,
    PetName,
    Friends,
    Siblings,
    /// Index into the person's belongings: how many of that thing they have.
    Belonging(usize),
}

/// Person facts asked as a follow-up in multi-turn tasks (always defined for everyone).
pub(super) const FOLLOW_UP_ATTRS: [PersonAttr; 8] = [
    PersonAttr::Home,
    PersonAttr::Country,
    PersonAttr::Age,
    PersonAttr::Profession,
    PersonAttr::Colour,
    PersonAttr::Food,
    PersonAttr::Number,
    PersonAttr::FamilyName,
];

/// A fact of the world.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fact {
    Person(usize, PersonAttr),
    Capital(usize),
    Language(usize),
    Animal(usize),
    Flag(usize),
    CityCountry(usize),
    Population(usize),
    Landmark(usize),
}

/// An arithmetic operation; subtraction never goes below zero and division is exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Add,
    Sub,
    Mul,
    Div,
}

impl Op {
    pub(super) fn apply(self, a: u64, b: u64) -> u64 {
        match self {
            Op::Add => a + b,
            Op::Sub => a - b,
            Op::Mul => a * b,
            Op::Div => a / b,
        }
    }

    pub(super) fn symbol(self) -> &'static str {
        match self {
            Op::Add => "+",
            Op::Sub => "-",
            Op::Mul => "*",
            Op::Div => "/",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Op::Add => "add",
            Op::Sub => "sub",
            Op::Mul => "mul",
            Op::Div => "div",
        }
    }
}

/// A counting question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Count {
    Letters(String),
    Stars(u64),
    /// Count the words of a list (distinct words).
    Items(Vec<&'static str>),
    After(u64),
    Before(u64),
    /// Count from `.0` to `.1` inclusive.
    Range(u64, u64),
    Cities(usize),
    Friends(usize),
    Siblings(usize),
}

/// An ordering or comparison question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Order {
    Bigger(u64, u64),
    Smaller(u64, u64),
    Sort { xs: Vec<u64>, descending: bool },
    Max(Vec<u64>),
    Min(Vec<u64>),
    Alphabet(Vec<&'static str>),
    Older(usize, usize),
    Younger(usize, usize),
    BiggerCity(usize, usize),
}

/// What to do with a word's letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SpellMode {
    Spell,
    First,
    Last,
    Backwards,
}

/// A question the world cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unknown {
    Phone(usize),
    Ate(usize),
    Birthday(usize),
    Thinking(usize),
    Grandmother(usize),
    Mayor(usize),
    Weather(usize),
    Streets(usize),
    /// A person who does not exist ([`Fakes::people`]), asked where they live (0), how old
    /// they are (1) or what they do (2).
    Nobody(usize, u8),
    NoCountry(usize),
    NoCity(usize),
}

/// Two questions in a row, the second referring back to the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Multi {
    /// Two different facts about one person; the follow-up uses a pronoun.
    Person(usize, PersonAttr, PersonAttr),
    /// Where someone lives, then which country that is in.
    HomeCountry(usize),
    /// Which country a city is in, then that country's capital.
    CityCapital(usize),
    /// A country's capital, then the language spoken there.
    CapitalLanguage(usize),
    /// `a + b`, then add (or take away) `c`.
    Chain { a: u64, b: u64, c: u64, add: bool },
}

/// One task's underlying question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Question {
    Fact(Fact),
    Arith(Op, u64, u64),
    Count(Count),
    Order(Order),
    Spell(SpellMode, String),
    Harm(HarmCategory, usize),
    Unknown(Unknown),
    Multi(Multi),
}

/// Names that no one and nothing in the world has, for questions about things that do not
/// exist. Depends only on the world, so keys are stable across seeds and splits.
#[derive(Debug, Clone)]
pub(super) struct Fakes {
    pub people: Vec<String>,
    pub countries: Vec<String>,
    pub cities: Vec<String>,
}

impl Fakes {
    pub(super) fn new(world: &World) -> Fakes {
        let mut names = NameGen::new();
        for p in &world.people {
            names.reserve(&p.first_name);
            names.reserve(&p.family_name);
            if let Some(pet) = &p.pet {
                names.reserve(&pet.name);
            }
        }
        for c in &world.countries {
            names.reserve(&c.name);
            names.reserve(&c.language);
        }
        for c in &world.cities {
            names.reserve(&c.name);
        }
        let mut rng = Rng::derive(world.config.seed, "sft-unknown-names");
        Fakes {
            people: (0..24).map(|_| names.first_name(&mut rng)).collect(),
            countries: (0..8).map(|_| names.country(&mut rng)).collect(),
            cities: (0..8).map(|_| names.city(&mut rng)).collect(),
        }
    }
}

/// What drawing and rendering need besides the world.
pub(super) struct Ctx<'a> {
    pub world: &'a World,
    pub fakes: Fakes,
    /// Words for spelling and letter counting: common words and the world's names.
    pub words: Vec<String>,
}

impl<'a> Ctx<'a> {
    pub(super) fn new(world: &'a World) -> Ctx<'a> {
        let words = SPELLING_WORDS
            .iter()
            .map(|w| w.to_string())
            .chain(world.people.iter().map(|p| p.first_name.clone()))
            .chain(world.cities.iter().map(|c| c.name.clone()))
            .collect();
        Ctx {
            world,
            fakes: Fakes::new(world),
            words,
        }
    }
}

impl Fact {
    pub(super) fn key(self, w: &World) -> String {
        let country = |i: usize| &w.countries[i].name;
        let city = |i: usize| &w.cities[i].name;
        match self {
            Fact::Person(p, attr) => {
                let f = &w.people[p].first_name;
                let a = match attr {
                    PersonAttr::Home => "home",
                    PersonAttr::Country => "country",
                    PersonAttr::Age => "age",
                    PersonAttr::Profession => "profession",
                    PersonAttr::Colour => "colour",
                    PersonAttr::Food => "food",
                    PersonAttr::Number => "number",
                    PersonAttr::FamilyName => "family_name",
                    PersonAttr::PetKind => "pet_kind",
                    PersonAttr::PetName => "pet_name",
                    PersonAttr::Friends => "friends",
                    PersonAttr::Siblings => "siblings",
                    PersonAttr::Belonging(b) => {
                        return format!("fact:has:{f}:{}", w.people[p].belongings[b].object)
                    }
                };
                format!("fact:{a}:{f}")
            }
            Fact::Capital(k) => format!("fact:capital:{}", country(k)),
            Fact::Language(k) => format!("fact:language:{}", country(k)),
            Fact::Animal(k) => format!("fact:animal:{}", country(k)),
            Fact::Flag(k) => format!("fact:flag:{}", country(k)),
            Fact::CityCountry(c) => format!("fact:city_country:{}", city(c)),
            Fact::Population(c) => format!("fact:population:{}", city(c)),
            Fact::Landmark(c) => format!("fact:landmark:{}", city(c)),
        }
    }
}

/// `xs` sorted and comma-joined: the canonical form of an unordered set.
fn set_key<T: ToString + Ord + Clone>(xs: &[T]) -> String {
    let mut v = xs.to_vec();
    v.sort();
    v.iter().map(T::to_string).collect::<Vec<_>>().join(",")
}

fn arith_key(op: Op, a: u64, b: u64) -> String {
    // a + b and b + a are one question (likewise for *).
    let (a, b) = match op {
        Op::Add | Op::Mul => (a.min(b), a.max(b)),
        Op::Sub | Op::Div => (a, b),
    };
    format!("arith:{}:{a}:{b}", op.name())
}

impl Question {
    /// The canonical keys of every question asked (see the module docs).
    pub(super) fn keys(&self, ctx: &Ctx) -> Vec<String> {
        let w = ctx.world;
        let person = |p: usize| w.people[p].first_name.as_str();
        let pair = |a: &str, b: &str| set_key(&[a.to_string(), b.to_string()]);
        let one = match self {
            Question::Fact(f) => f.key(w),
            Question::Arith(op, a, b) => arith_key(*op, *a, *b),
            Question::Count(c) => match c {
                Count::Letters(word) => format!("count:letters:{}", word.to_lowercase()),
                Count::Stars(k) => format!("count:stars:{k}"),
                Count::Items(xs) => format!("count:items:{}", set_key(xs)),
                Count::After(n) => format!("count:after:{n}"),
                Count::Before(n) => format!("count:before:{n}"),
                Count::Range(a, b) => format!("count:range:{a}:{b}"),
                Count::Cities(k) => format!("count:cities:{}", w.countries[*k].name),
                Count::Friends(p) => format!("count:friends:{}", person(*p)),
                Count::Siblings(p) => format!("count:siblings:{}", person(*p)),
            },
            Question::Order(o) => match o {
                Order::Bigger(a, b) => format!("order:bigger:{}", set_key(&[*a, *b])),
                Order::Smaller(a, b) => format!("order:smaller:{}", set_key(&[*a, *b])),
                Order::Sort { xs, descending } => {
                    let dir = if *descending { "desc" } else { "asc" };
                    format!("order:sort_{dir}:{}", set_key(xs))
                }
                Order::Max(xs) => format!("order:max:{}", set_key(xs)),
                Order::Min(xs) => format!("order:min:{}", set_key(xs)),
                Order::Alphabet(xs) => format!("order:alphabet:{}", set_key(xs)),
                Order::Older(a, b) => format!("order:older:{}", pair(person(*a), person(*b))),
                Order::Younger(a, b) => {
                    format!("order:younger:{}", pair(person(*a), person(*b)))
                }
                Order::BiggerCity(a, b) => {
                    let (a, b) = (&w.cities[*a].name, &w.cities[*b].name);
                    format!("order:bigger_city:{}", pair(a, b))
                }
            },
            Question::Spell(mode, word) => {
                let m = match mode {
                    SpellMode::Spell => "spell",
                    SpellMode::First => "first",
                    SpellMode::Last => "last",
                    SpellMode::Backwards => "backwards",
                };
                format!("spell:{m}:{}", word.to_lowercase())
            }
            Question::Harm(cat, p) => format!("harm:{}:{}", cat.name(), person(*p)),
            Question::Unknown(u) => match *u {
                Unknown::Phone(p) => format!("unknown:phone:{}", person(p)),
                Unknown::Ate(p) => format!("unknown:ate:{}", person(p)),
                Unknown::Birthday(p) => format!("unknown:birthday:{}", person(p)),
                Unknown::Thinking(p) => format!("unknown:thinking:{}", person(p)),
                Unknown::Grandmother(p) => format!("unknown:grandmother:{}", person(p)),
                Unknown::Mayor(c) => format!("unknown:mayor:{}", w.cities[c].name),
                Unknown::Weather(c) => format!("unknown:weather:{}", w.cities[c].name),
                Unknown::Streets(c) => format!("unknown:streets:{}", w.cities[c].name),
                Unknown::Nobody(i, what) => {
                    format!("unknown:nobody:{}:{what}", ctx.fakes.people[i])
                }
                Unknown::NoCountry(i) => format!("unknown:no_country:{}", ctx.fakes.countries[i]),
                Unknown::NoCity(i) => format!("unknown:no_city:{}", ctx.fakes.cities[i]),
            },
            Question::Multi(m) => {
                return m.parts(w).iter().map(|q| q.keys(ctx)[0].clone()).collect()
            }
        };
        vec![one]
    }

    /// The task kind this question makes.
    pub(super) fn kind(&self) -> TaskKind {
        match self {
            Question::Fact(_) => TaskKind::FactLookup,
            Question::Arith(..) => TaskKind::Arithmetic,
            Question::Count(_) => TaskKind::Counting,
            Question::Order(_) => TaskKind::Ordering,
            Question::Spell(..) => TaskKind::Spelling,
            Question::Harm(..) => TaskKind::Refusal,
            Question::Unknown(_) => TaskKind::Unknowable,
            Question::Multi(_) => TaskKind::MultiTurn,
        }
    }
}

impl Multi {
    /// The two single questions it asks, in order.
    pub(super) fn parts(self, w: &World) -> [Question; 2] {
        let f = Question::Fact;
        match self {
            Multi::Person(p, a, b) => [f(Fact::Person(p, a)), f(Fact::Person(p, b))],
            Multi::HomeCountry(p) => [
                f(Fact::Person(p, PersonAttr::Home)),
                f(Fact::CityCountry(w.people[p].city)),
            ],
            Multi::CityCapital(c) => [
                f(Fact::CityCountry(c)),
                f(Fact::Capital(w.cities[c].country)),
            ],
            Multi::CapitalLanguage(k) => [f(Fact::Capital(k)), f(Fact::Language(k))],
            Multi::Chain { a, b, c, add } => {
                let op = if add { Op::Add } else { Op::Sub };
                [
                    Question::Arith(Op::Add, a, b),
                    Question::Arith(op, a + b, c),
                ]
            }
        }
    }
}
