//! Short lessons: arithmetic in words and digits, counting, comparing and ordering numbers, and
//! spelling (common words and the world's own names). Every statement is computed, so it is true.

use super::names::{capitalize, SPELLING_WORDS};
use super::numbers::{cap_words, join_and, words};
use super::text::Doc;
use super::World;
use crate::Rng;

/// `n` arithmetic facts, one per line: "Seven plus five is twelve. 7 + 5 = 12."
pub fn arithmetic(n: usize, rng: &mut Rng) -> String {
    let mut doc = Doc::new();
    for _ in 0..n {
        doc.line(arithmetic_fact(rng));
    }
    doc.finish()
}

fn arithmetic_fact(rng: &mut Rng) -> String {
    match rng.index(4) {
        0 => {
            let hi = if rng.bernoulli(0.8) { 20 } else { 100 };
            let (a, b) = (rng.below(hi + 1), rng.below(hi + 1));
            let c = a + b;
            let (aw, bw, cw, cap_a) = (words(a), words(b), words(c), cap_words(a));
            pick!(rng;
                "{cap_a} plus {bw} is {cw}. {a} + {b} = {c}.",
                "{cap_a} and {bw} make {cw}. {a} + {b} = {c}.",
                "If you add {aw} and {bw}, you get {cw}.",
                "{a} + {b} = {c}.",
                "What is {a} plus {b}? The answer is {c}.",
            )
        }
        1 => {
            let a = rng.below(31);
            let b = rng.below(a + 1);
            let c = a - b;
            let (aw, bw, cw, cap_a) = (words(a), words(b), words(c), cap_words(a));
            pick!(rng;
                "{cap_a} minus {bw} is {cw}. {a} - {b} = {c}.",
                "If you take {bw} away from {aw}, you have {cw} left.",
                "{a} - {b} = {c}.",
                "What is {a} minus {b}? The answer is {c}.",
            )
        }
        2 => {
            let (a, b) = (rng.below(13), rng.below(13));
            let c = a * b;
            let (bw, cw, cap_a) = (words(b), words(c), cap_words(a));
            pick!(rng;
                "{cap_a} times {bw} is {cw}. {a} * {b} = {c}.",
                "{a} multiplied by {b} is {c}.",
                "{a} * {b} = {c}.",
                "What is {a} times {b}? The answer is {c}.",
            )
        }
        _ => {
            let (b, c) = (1 + rng.below(10), rng.below(11));
            let a = b * c;
            let (bw, cw, cap_a, aw) = (words(b), words(c), cap_words(a), words(a));
            pick!(rng;
                "{cap_a} divided by {bw} is {cw}. {a} / {b} = {c}.",
                "If you share {aw} apples among {bw} friends, each friend gets {cw}.",
                "{a} / {b} = {c}.",
            )
        }
    }
}

/// A counting lesson: counting up a range, the numbers before and after, counting marks, and
/// even and odd numbers.
pub fn counting(rng: &mut Rng) -> String {
    let mut doc = Doc::new();
    // Count up a short range, in words and in digits.
    let start = rng.below(20);
    let len = 3 + rng.below(8);
    let range: Vec<u64> = (start..start + len).collect();
    let (from, to) = (words(start), words(start + len - 1));
    let spelled: Vec<String> = range.iter().map(|&k| words(k)).collect();
    let digits: Vec<String> = range.iter().map(|k| k.to_string()).collect();
    let (spelled, digits) = (spelled.join(", "), digits.join(", "));
    doc.say(pick!(rng;
        "Let us count from {from} to {to}: {spelled}.",
        "Counting from {from} to {to} goes {spelled}.",
    ));
    doc.say(format!("In digits: {digits}."));
    // Before and after.
    let n = 1 + rng.below(99);
    let (nw, next, prev) = (words(n), words(n + 1), words(n - 1));
    let (n_next, n_prev) = (n + 1, n - 1);
    doc.say(pick!(rng;
        "The number after {nw} is {next}. After {n} comes {n_next}.",
        "The number before {nw} is {prev}. Before {n} comes {n_prev}.",
        "{n_prev}, {n}, {n_next}: {nw} comes between {prev} and {next}.",
    ));
    // Counting marks.
    let k = 1 + rng.below(9);
    let marks = vec!["*"; k as usize].join(" ");
    let kw = words(k);
    let noun = if k == 1 { "star" } else { "stars" };
    let is = if k == 1 { "is" } else { "are" };
    doc.say(pick!(rng;
        "Count the stars: {marks}. There {is} {kw} {noun}.",
        "Here {is} {kw} {noun}: {marks}.",
    ));
    // Even and odd.
    let m = rng.below(50);
    let (mw, parity) = (cap_words(m), if m % 2 == 1 { "odd" } else { "even" });
    doc.say(format!("{mw} is an {parity} number."));
    doc.finish()
}

/// A lesson comparing and ordering numbers (and words, alphabetically).
pub fn ordering(rng: &mut Rng) -> String {
    let mut doc = Doc::new();
    // Compare two different numbers.
    let a = rng.below(100);
    let b = (a + 1 + rng.below(99)) % 100;
    let (aw, bw, cap_a) = (words(a), words(b), cap_words(a));
    doc.say(if a > b {
        pick!(rng;
            "{cap_a} is bigger than {bw}. {a} > {b}.",
            "{b} is smaller than {a}, because {bw} is less than {aw}.",
        )
    } else {
        pick!(rng;
            "{cap_a} is smaller than {bw}. {a} < {b}.",
            "{b} is bigger than {a}, because {bw} is more than {aw}.",
        )
    });
    // Sort three to five distinct numbers.
    let count = 3 + rng.index(3);
    let mut xs: Vec<u64> = Vec::with_capacity(count);
    while xs.len() < count {
        let x = rng.below(100);
        if !xs.contains(&x) {
            xs.push(x);
        }
    }
    let given = join_and(&xs.iter().map(u64::to_string).collect::<Vec<_>>());
    let mut up = xs.clone();
    up.sort_unstable();
    let (min, max) = (up[0], up[up.len() - 1]);
    let up_s = join_and(&up.iter().map(u64::to_string).collect::<Vec<_>>());
    let down_s = join_and(&up.iter().rev().map(u64::to_string).collect::<Vec<_>>());
    doc.say(pick!(rng;
        "From smallest to largest, {given} are {up_s}.",
        "Sorted from largest to smallest, {given} become {down_s}.",
        "The biggest of {given} is {max}, and the smallest is {min}.",
    ));
    // Alphabetical order of three distinct words.
    let mut ws: Vec<&str> = Vec::with_capacity(3);
    while ws.len() < 3 {
        let w = *rng.choose(SPELLING_WORDS);
        if !ws.contains(&w) {
            ws.push(w);
        }
    }
    let given = join_and(&ws);
    ws.sort_unstable();
    let sorted = join_and(&ws);
    doc.say(format!(
        "In alphabetical order, the words {given} are {sorted}."
    ));
    doc.finish()
}

/// A spelling lesson about `n` words: common words and the world's names.
pub fn spelling(world: &World, n: usize, rng: &mut Rng) -> String {
    let mut doc = Doc::new();
    for _ in 0..n {
        let word: String = match rng.index(4) {
            0 | 1 => rng.choose(SPELLING_WORDS).to_string(),
            2 => world.people[rng.index(world.people.len())]
                .first_name
                .clone(),
            _ => world.cities[rng.index(world.cities.len())].name.clone(),
        };
        doc.line(spell(&word, rng));
    }
    doc.finish()
}

/// One spelling statement about `w`.
fn spell(w: &str, rng: &mut Rng) -> String {
    let letters: Vec<String> = w.chars().map(|c| c.to_string()).collect();
    let dashed = letters.join("-");
    let listed = letters.join(", ");
    let n = words(letters.len() as u64);
    let first = &letters[0];
    let last = &letters[letters.len() - 1];
    let cap = capitalize(w);
    let backwards: String = w.chars().rev().collect();
    pick!(rng;
        "The word {w} is spelled {dashed}.",
        "{cap} has {n} letters: {listed}.",
        "The first letter of {w} is {first}, and the last letter is {last}.",
        "How do you spell {w}? {dashed}.",
        "Written backwards, {w} is {backwards}.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every arithmetic statement's digit form `a op b = c` holds.
    #[test]
    fn arithmetic_statements_are_true() {
        let mut rng = Rng::new(3);
        let text = arithmetic(500, &mut rng);
        let mut checked = 0;
        for line in text.lines() {
            let Some(eq) = line.split(". ").find(|s| s.contains(" = ")) else {
                continue;
            };
            let eq = eq.trim_end_matches('.');
            let t: Vec<&str> = eq.split(' ').collect();
            let (a, op, b, c): (i64, &str, i64, i64) = (
                t[0].parse().unwrap(),
                t[1],
                t[2].parse().unwrap(),
                t[4].parse().unwrap(),
            );
            let want = match op {
                "+" => a + b,
                "-" => a - b,
                "*" => a * b,
                "/" => a / b,
                _ => panic!("{line}"),
            };
            assert_eq!(c, want, "{line}");
            if op == "/" {
                assert_eq!(a % b, 0, "{line}");
            }
            checked += 1;
        }
        assert!(checked > 200, "{checked}");
        // The word forms: "Seven plus five is twelve", "... times ...", "... divided by ...".
        let value = |w: &str| (0..=300u64).find(|&n| words(n) == w.to_lowercase());
        let mut checked_words = 0;
        for line in text.lines() {
            let first = line.split(". ").next().unwrap().trim_end_matches('.');
            for (op, f) in [
                (" plus ", (|a, b| a + b) as fn(u64, u64) -> u64),
                (" minus ", |a, b| a - b),
                (" times ", |a, b| a * b),
                (" divided by ", |a, b| a / b),
            ] {
                let Some((a, rest)) = first.split_once(op) else {
                    continue;
                };
                let Some((b, c)) = rest.split_once(" is ") else {
                    continue;
                };
                let (Some(a), Some(b), Some(c)) = (value(a), value(b), value(c)) else {
                    continue; // "What is 3 plus 4? ..." uses digits, checked above
                };
                assert_eq!(f(a, b), c, "{line}");
                checked_words += 1;
            }
        }
        assert!(checked_words > 50, "{checked_words}");
    }

    #[test]
    fn spelling_is_exact() {
        let mut rng = Rng::new(1);
        for _ in 0..50 {
            let s = spell("river", &mut rng);
            assert!(
                [
                    "The word river is spelled r-i-v-e-r.",
                    "River has five letters: r, i, v, e, r.",
                    "The first letter of river is r, and the last letter is r.",
                    "How do you spell river? r-i-v-e-r.",
                    "Written backwards, river is revir.",
                ]
                .contains(&s.as_str()),
                "{s}"
            );
        }
    }
}
