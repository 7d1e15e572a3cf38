//! Arithmetic, counting, ordering and spelling questions with their gold replies.
//!
//! Replies are short and always put the answer last, so that "the last number in the reply"
//! is the answer ("7 + 5 = 12.", "After 41 comes 42.", "The bigger number is 42.").

use super::names::{capitalize, GOODS};
use super::numbers::{join_and, words};
use super::questions::{Count, Op, Order, SpellMode};
use super::tasks::{Answer, Turn};
use super::World;
use crate::Rng;

/// "1 apple" / "3 apples".
fn n_of(n: u64, singular: &str, plural: &str) -> String {
    if n == 1 {
        format!("1 {singular}")
    } else {
        format!("{n} {plural}")
    }
}

/// `a op b`, asked plainly or (sometimes, when the numbers read naturally) as a short story
/// about someone from the world buying fruit. The reply is the equation.
pub(super) fn arithmetic(w: &World, op: Op, a: u64, b: u64, rng: &mut Rng) -> Turn {
    let c = op.apply(a, b);
    let (aw, bw) = (words(a), words(b));
    let story = rng.bernoulli(0.25);
    let f = &w.people[rng.index(w.people.len())].first_name;
    let (one, many) = *rng.choose(GOODS);
    let user = match op {
        Op::Add if story && a >= 1 && b >= 1 => {
            let first = n_of(a, one, many);
            pick!(rng;
                "{f} buys {first} at the market, then {b} more. How many {many} did {f} buy?",
                "{f} picks {first} in the morning and {b} more in the evening. How many {many} is that?",
            )
        }
        Op::Sub if story && b >= 1 => {
            let first = n_of(a, one, many);
            pick!(rng;
                "{f} has {first} and gives {b} away. How many {many} are left?",
                "{f} buys {first} and eats {b} of them. How many {many} are left?",
            )
        }
        Op::Mul if story && a >= 2 && b >= 2 => pick!(rng;
            "{f} buys {a} bags with {b} {many} in each bag. How many {many} is that?",
            "There are {a} baskets and each holds {b} {many}. How many {many} are there?",
        ),
        Op::Div if story && a >= 1 && b >= 2 => pick!(rng;
            "{f} shares {a} {many} equally among {b} friends. How many does each friend get?",
            "{f} puts {a} {many} into {b} bags, the same number in each. How many go in each bag?",
        ),
        Op::Add => pick!(rng;
            "What is {a} + {b}?",
            "What is {a} plus {b}?",
            "How much is {a} plus {b}?",
            "Calculate {a} + {b}.",
            "What do you get if you add {a} and {b}?",
            "What is {aw} plus {bw}?",
            "Add {a} and {b}.",
        ),
        Op::Sub => pick!(rng;
            "What is {a} - {b}?",
            "What is {a} minus {b}?",
            "How much is {a} minus {b}?",
            "Calculate {a} - {b}.",
            "What do you get if you take {b} away from {a}?",
            "What is {aw} minus {bw}?",
            "Subtract {b} from {a}.",
        ),
        Op::Mul => pick!(rng;
            "What is {a} * {b}?",
            "What is {a} times {b}?",
            "How much is {a} times {b}?",
            "Calculate {a} * {b}.",
            "What is {a} multiplied by {b}?",
            "What is {aw} times {bw}?",
        ),
        Op::Div => pick!(rng;
            "What is {a} / {b}?",
            "What is {a} divided by {b}?",
            "How much is {a} divided by {b}?",
            "Calculate {a} / {b}.",
            "What is {aw} divided by {bw}?",
        ),
    };
    Turn {
        user,
        reply: format!("{a} {} {b} = {c}.", op.symbol()),
        answer: Answer::Number(c),
    }
}

/// "the word cat" / "the name Druk" (names are capitalised).
fn word_or_name(word: &str) -> String {
    if word.starts_with(|c: char| c.is_uppercase()) {
        format!("the name {word}")
    } else {
        format!("the word {word}")
    }
}

/// A counting question.
pub(super) fn counting(w: &World, c: &Count, rng: &mut Rng) -> Turn {
    let num = |user: String, reply: String, n: u64| Turn {
        user,
        reply,
        answer: Answer::Number(n),
    };
    match c {
        Count::Letters(word) => {
            let n = word.chars().count() as u64;
            let the = word_or_name(word);
            let user = pick!(rng;
                "How many letters are in {the}?",
                "How many letters does {the} have?",
                "Count the letters in {the}.",
            );
            num(user, format!("{} has {n} letters.", capitalize(&the)), n)
        }
        Count::Stars(k) => {
            let (mark, noun, nouns) =
                *rng.choose(&[("*", "star", "stars"), ("#", "mark", "marks")]);
            let row = vec![mark; *k as usize].join(" ");
            let user = pick!(rng;
                "Count the {nouns}: {row}",
                "How many {nouns} are here? {row}",
            );
            let reply = if *k == 1 {
                format!("There is 1 {noun}.")
            } else {
                format!("There are {k} {nouns}.")
            };
            num(user, reply, *k)
        }
        Count::Items(xs) => {
            let list = xs.join(", ");
            let n = xs.len() as u64;
            let user = pick!(rng;
                "How many words are in this list: {list}?",
                "Count the words: {list}.",
            );
            num(user, format!("There are {n} words."), n)
        }
        Count::After(n) => {
            let user = pick!(rng;
                "What number comes after {n}?",
                "What comes after {n}?",
                "Which number is one more than {n}?",
                "What is the next number after {n}?",
            );
            num(user, format!("After {n} comes {}.", n + 1), n + 1)
        }
        Count::Before(n) => {
            let user = pick!(rng;
                "What number comes before {n}?",
                "What comes before {n}?",
                "Which number is one less than {n}?",
            );
            num(user, format!("Before {n} comes {}.", n - 1), n - 1)
        }
        Count::Range(a, b) => {
            let items: Vec<String> = (*a..=*b).map(|k| k.to_string()).collect();
            let user = pick!(rng;
                "Count from {a} to {b}.",
                "Can you count from {a} to {b}?",
                "Please count from {a} up to {b}.",
            );
            Turn {
                user,
                reply: format!("{}.", items.join(", ")),
                answer: Answer::Sequence(items),
            }
        }
        Count::Cities(k) => {
            let c = &w.countries[*k];
            let (name, n) = (&c.name, c.cities.len() as u64);
            let user = pick!(rng;
                "How many cities are there in {name}?",
                "How many cities does {name} have?",
            );
            num(
                user,
                format!("{name} has {}.", n_of(n, "city", "cities")),
                n,
            )
        }
        Count::Friends(p) => {
            let person = &w.people[*p];
            let (f, n) = (&person.first_name, person.friends.len() as u64);
            let user = pick!(rng;
                "How many friends does {f} have?",
                "How many friends has {f} got?",
            );
            num(
                user,
                format!("{f} has {}.", n_of(n, "friend", "friends")),
                n,
            )
        }
        Count::Siblings(p) => {
            let person = &w.people[*p];
            let (f, n) = (&person.first_name, person.siblings.len() as u64);
            let user = pick!(rng;
                "How many siblings does {f} have?",
                "How many brothers and sisters does {f} have?",
            );
            num(
                user,
                format!("{f} has {}.", n_of(n, "sibling", "siblings")),
                n,
            )
        }
    }
}

fn list(xs: &[u64]) -> String {
    xs.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
}

/// An ordering or comparison question.
pub(super) fn ordering(w: &World, o: &Order, rng: &mut Rng) -> Turn {
    let num = |user: String, reply: String, n: u64| Turn {
        user,
        reply,
        answer: Answer::Number(n),
    };
    let contains = |user: String, reply: String, s: String| Turn {
        user,
        reply,
        answer: Answer::Contains(vec![s]),
    };
    match o {
        Order::Bigger(a, b) => {
            let user = pick!(rng;
                "Which is bigger, {a} or {b}?",
                "Which number is larger: {a} or {b}?",
                "Is {a} or {b} bigger?",
            );
            let m = *a.max(b);
            num(user, format!("The bigger number is {m}."), m)
        }
        Order::Smaller(a, b) => {
            let user = pick!(rng;
                "Which is smaller, {a} or {b}?",
                "Which number is less: {a} or {b}?",
                "Is {a} or {b} smaller?",
            );
            let m = *a.min(b);
            num(user, format!("The smaller number is {m}."), m)
        }
        Order::Sort { xs, descending } => {
            let (given, and) = (
                list(xs),
                join_and(&xs.iter().map(u64::to_string).collect::<Vec<_>>()),
            );
            let mut sorted = xs.clone();
            sorted.sort_unstable();
            let (user, head) = if *descending {
                sorted.reverse();
                (
                    pick!(rng;
                        "Sort these numbers from largest to smallest: {given}.",
                        "Put {and} in order from largest to smallest.",
                    ),
                    "From largest to smallest",
                )
            } else {
                (
                    pick!(rng;
                        "Sort these numbers from smallest to largest: {given}.",
                        "Put {and} in order from smallest to largest.",
                        "Order these numbers from smallest to biggest: {given}.",
                    ),
                    "From smallest to largest",
                )
            };
            Turn {
                user,
                reply: format!("{head}: {}.", list(&sorted)),
                answer: Answer::Sequence(sorted.iter().map(u64::to_string).collect()),
            }
        }
        Order::Max(xs) | Order::Min(xs) => {
            let (given, and) = (
                list(xs),
                join_and(&xs.iter().map(u64::to_string).collect::<Vec<_>>()),
            );
            let (user, reply, m) = if matches!(o, Order::Max(_)) {
                let m = xs.iter().copied().max().unwrap_or(0);
                let user = pick!(rng;
                    "What is the largest number in this list: {given}?",
                    "Which is the biggest of {and}?",
                );
                (user, format!("The largest number is {m}."), m)
            } else {
                let m = xs.iter().copied().min().unwrap_or(0);
                let user = pick!(rng;
                    "What is the smallest number in this list: {given}?",
                    "Which is the smallest of {and}?",
                );
                (user, format!("The smallest number is {m}."), m)
            };
            num(user, reply, m)
        }
        Order::Alphabet(xs) => {
            let given = xs.join(", ");
            let mut sorted = xs.clone();
            sorted.sort_unstable();
            let user = pick!(rng;
                "Put these words in alphabetical order: {given}.",
                "Sort these words alphabetically: {given}.",
            );
            Turn {
                user,
                reply: format!("In alphabetical order: {}.", sorted.join(", ")),
                answer: Answer::Sequence(sorted.iter().map(|s| s.to_string()).collect()),
            }
        }
        Order::Older(a, b) | Order::Younger(a, b) => {
            let (pa, pb) = (&w.people[*a], &w.people[*b]);
            let (an, bn) = (&pa.first_name, &pb.first_name);
            let older = matches!(o, Order::Older(..));
            let (x, y) = if (pa.age > pb.age) == older {
                (an, bn)
            } else {
                (bn, an)
            };
            let word = if older { "older" } else { "younger" };
            let user = pick!(rng;
                "Who is {word}, {an} or {bn}?",
                "Which of {an} and {bn} is {word}?",
            );
            contains(
                user,
                format!("{x} is {word} than {y}."),
                format!("{x} is {word}"),
            )
        }
        Order::BiggerCity(a, b) => {
            let (ca, cb) = (&w.cities[*a], &w.cities[*b]);
            let (an, bn) = (&ca.name, &cb.name);
            let (x, y) = if ca.population > cb.population {
                (an, bn)
            } else {
                (bn, an)
            };
            let user = pick!(rng;
                "Which city is bigger, {an} or {bn}?",
                "Which has more people, {an} or {bn}?",
            );
            contains(
                user,
                format!("{x} is bigger than {y}."),
                format!("{x} is bigger"),
            )
        }
    }
}

/// A spelling question about `word`.
pub(super) fn spelling(mode: SpellMode, word: &str, rng: &mut Rng) -> Turn {
    let letters: Vec<String> = word.chars().map(|c| c.to_string()).collect();
    let the = word_or_name(word);
    let cap_the = capitalize(&the);
    let contains = |user: String, reply: String, s: String| Turn {
        user,
        reply,
        answer: Answer::Contains(vec![s]),
    };
    match mode {
        SpellMode::Spell => {
            let dashed = letters.join("-");
            let user = pick!(rng;
                "How do you spell {word}?",
                "Spell {the}.",
                "Can you spell {word} letter by letter?",
            );
            contains(user, format!("{cap_the} is spelled {dashed}."), dashed)
        }
        SpellMode::First | SpellMode::Last => {
            let (which, l) = if mode == SpellMode::First {
                ("first", letters.first())
            } else {
                ("last", letters.last())
            };
            let l = l.map_or(String::new(), |l| l.to_lowercase());
            let user = if mode == SpellMode::First {
                pick!(rng;
                    "What is the first letter of {the}?",
                    "Which letter does {word} start with?",
                )
            } else {
                pick!(rng;
                    "What is the last letter of {the}?",
                    "Which letter does {word} end with?",
                )
            };
            // The answer must read "<word> is <letter>", so a stray "a" elsewhere never counts.
            contains(
                user,
                format!("The {which} letter of {word} is {l}."),
                format!("{word} is {l}"),
            )
        }
        SpellMode::Backwards => {
            let rev: String = word.chars().rev().collect::<String>().to_lowercase();
            let user = pick!(rng;
                "Spell {word} backwards.",
                "What is {word} written backwards?",
                "How do you write {the} backwards?",
            );
            contains(user, format!("{cap_the} written backwards is {rev}."), rev)
        }
    }
}
