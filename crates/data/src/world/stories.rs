//! Short stories that use the world's facts: a person visits a friend where the friend really
//! lives and counts the friend's real belongings, travels to their country's real capital,
//! meets a sibling whose age difference is computed, or spends a day with their real pet.
//!
//! Stories add events (a trip, a purchase) but never contradict a fact.

use super::names::{GOODS, TRAVEL};
use super::numbers::{a_or_an, cap_words, digits_grouped, words};
use super::text::Doc;
use super::World;
use crate::Rng;

/// A random story about person `pi`.
pub fn story(world: &World, pi: usize, rng: &mut Rng) -> String {
    let p = &world.people[pi];
    match rng.index(4) {
        0 if !p.friends.is_empty() => visit_friend(world, pi, rng),
        1 => trip_to_capital(world, pi, rng),
        2 if !p.siblings.is_empty() => siblings(world, pi, rng),
        3 => day_at_home(world, pi, rng),
        _ if !p.friends.is_empty() => visit_friend(world, pi, rng),
        _ => trip_to_capital(world, pi, rng),
    }
}

/// "one, two, three" for 1..=n.
fn count_up(n: u64) -> String {
    (1..=n).map(words).collect::<Vec<_>>().join(", ")
}

/// A visit to a friend in the friend's home city, counting the friend's belongings.
fn visit_friend(world: &World, pi: usize, rng: &mut Rng) -> String {
    let p = &world.people[pi];
    let q = &world.people[*rng.choose(&p.friends)];
    let (f, g) = (&p.first_name, &q.first_name);
    let (she, her) = (p.pronoun.subject_cap(), p.pronoun.possessive());
    let (home, there) = (&world.home(p).name, &world.home(q).name);
    let mode = rng.choose(TRAVEL);
    let mut doc = Doc::new();
    doc.say(pick!(rng;
        "One morning, {f} wanted to visit {her} friend {g}.",
        "{f} lives in {home}. One day, {f} went to see {her} friend {g}.",
        "It was a sunny day, and {f} decided to visit {g}.",
    ));
    if p.city == q.city {
        doc.say(pick!(rng;
            "{g} lives in {home}, like {f}, so the way was short.",
            "{g} also lives in {home}, so {f} walked across the town.",
        ));
    } else {
        doc.say(pick!(rng;
            "{g} lives in {there}, so {f} went there {mode}.",
            "{f} travelled {mode} from {home} to {there}, where {g} lives.",
        ));
    }
    if let Some(pet) = &p.pet {
        let (kind, name) = (&pet.kind, &pet.name);
        doc.say(pick!(rng;
            "{she} took {her} {kind} {name} along.",
            "{name} the {kind} came too.",
        ));
    }
    let landmark = &world.home(q).landmark;
    doc.say(pick!(rng;
        "In {there}, the two friends went to see {landmark}.",
        "{g} showed {f} {landmark} in {there}.",
    ));
    let b = rng.choose(&q.belongings);
    let (colour, things, n) = (&b.colour, &b.plural, b.count);
    let (counted, nw) = (count_up(n), words(n));
    doc.paragraph();
    doc.say(format!(
        "At {g}'s home, {f} saw some {colour} {things}. {she} counted them: {counted}."
    ));
    doc.say(pick!(rng;
        "\"You have {nw} {colour} {things}!\" said {f}.",
        "There were {nw} {colour} {things}.",
    ));
    let food = &q.favourite_food;
    doc.say(pick!(rng;
        "Then they ate {food}, because {food} is {g}'s favourite food.",
        "For lunch they had {food}. It is {g}'s favourite food.",
    ));
    doc.say(if p.city == q.city {
        pick!(rng; "In the evening, {f} walked home.", "Later, {f} went home, happy.")
    } else {
        pick!(rng;
            "In the evening, {f} went back home to {home}.",
            "Then {f} returned to {home}, happy and tired.",
        )
    });
    doc.finish()
}

/// A trip to the capital (or, for someone who lives there, to another city), with a purchase
/// whose total is computed.
fn trip_to_capital(world: &World, pi: usize, rng: &mut Rng) -> String {
    let p = &world.people[pi];
    let f = &p.first_name;
    let (she, she_l, her) = (
        p.pronoun.subject_cap(),
        p.pronoun.subject(),
        p.pronoun.possessive(),
    );
    let city = world.home(p);
    let country = world.country_of(city);
    let (home, cn) = (&city.name, &country.name);
    let capital = world.capital_of(country);
    let mode = rng.choose(TRAVEL);
    let mut doc = Doc::new();
    let dest = if country.capital != p.city {
        let k = &capital.name;
        doc.say(pick!(rng;
            "{f} lives in {home}, a city in {cn}. One day, {f} travelled {mode} to {k}, the capital of {cn}.",
            "One day, {f} went from {home} to {k} {mode}. {k} is the capital of {cn}.",
        ));
        let (kp, hp) = (
            digits_grouped(capital.population),
            digits_grouped(city.population),
        );
        doc.say(pick!(rng;
            "{k} is bigger than {home}: about {kp} people live in {k}, and about {hp} in {home}.",
            "{f} saw that {k} is bigger than {home}.",
        ));
        capital
    } else {
        // Lives in the capital: visit another city of the same country, or of another country.
        let others: Vec<usize> = country.cities[1..].to_vec();
        let dest_i = if others.is_empty() {
            rng.index(world.cities.len())
        } else {
            *rng.choose(&others)
        };
        let dest = &world.cities[dest_i];
        let (y, yc) = (&dest.name, &world.country_of(dest).name);
        if dest_i == p.city {
            doc.say(format!(
                "{f} lives in {home}, the capital of {cn}. One day, {f} went for a long walk around the city."
            ));
        } else {
            doc.say(pick!(rng;
                "{f} lives in {home}, the capital of {cn}. One day, {f} travelled {mode} to {y}, a city in {yc}.",
                "One day, {f} left {home}, the capital of {cn}, and went {mode} to {y} in {yc}.",
            ));
        }
        dest
    };
    let (y, landmark) = (&dest.name, &dest.landmark);
    doc.say(pick!(rng;
        "In {y}, {she_l} visited {landmark}.",
        "{she} liked {landmark} in {y} very much.",
    ));
    let (one, many) = *rng.choose(GOODS);
    let (a, b) = (1 + rng.below(6), 1 + rng.below(6));
    let (aw, bw, cw) = (words(a), words(b), words(a + b));
    let first = if a == 1 { one } else { many };
    let more = if b == 1 { one } else { many };
    doc.paragraph();
    let c = a + b;
    doc.say(pick!(rng;
        "At the market, {f} bought {aw} {first}. Then {she_l} bought {bw} more {more}. Now {she_l} had {cw} {many}, because {a} + {b} = {c}.",
        "{f} went to the market and bought {aw} {first} and {bw} {more}. That makes {cw} {many} in all.",
    ));
    doc.say(pick!(rng;
        "In the evening, {f} went home to {home}.",
        "Then {f} went back to {home} with {her} bag.",
    ));
    doc.finish()
}

/// Two siblings meet; their age difference is computed.
fn siblings(world: &World, pi: usize, rng: &mut Rng) -> String {
    let p = &world.people[pi];
    let s = &world.people[*rng.choose(&p.siblings)];
    let (f, sn, fam) = (&p.first_name, &s.first_name, &p.family_name);
    let rel = s.pronoun.sibling_word();
    let older = if s.age > p.age { "older" } else { "younger" };
    let (home, shome) = (&world.home(p).name, &world.home(s).name);
    let mut doc = Doc::new();
    let an = if older == "older" { "an" } else { "a" };
    doc.say(pick!(rng;
        "{f} {fam} has {an} {older} {rel}, {sn}.",
        "{sn} is {f}'s {older} {rel}. They are both from the {fam} family.",
    ));
    if p.city == s.city {
        doc.say(format!("They both live in {home}."));
    } else {
        doc.say(pick!(rng;
            "{f} lives in {home}, and {sn} lives in {shome}.",
            "{sn} lives in {shome}, but {f} lives in {home}.",
        ));
    }
    let (pa, sa) = (p.age, s.age);
    let (big, small) = if pa > sa { (f, sn) } else { (sn, f) };
    let diff = pa.abs_diff(sa);
    let (dw, years) = (words(diff), if diff == 1 { "year" } else { "years" });
    doc.say(format!(
        "{f} is {pa} years old and {sn} is {sa}, so {big} is {dw} {years} older than {small}."
    ));
    let visitor = if rng.bernoulli(0.5) {
        (f, sn, shome)
    } else {
        (sn, f, home)
    };
    let (v, host, place) = visitor;
    if p.city != s.city {
        doc.say(format!(
            "Last week, {v} went to {place} to see {host}. They talked about their family all day."
        ));
    } else {
        doc.say(format!(
            "Every Sunday, {v} and {host} have lunch together in {place}."
        ));
    }
    doc.finish()
}

/// A day at home with the person's favourite things and pet.
fn day_at_home(world: &World, pi: usize, rng: &mut Rng) -> String {
    let p = &world.people[pi];
    let f = &p.first_name;
    let (she, her, she_l) = (
        p.pronoun.subject_cap(),
        p.pronoun.possessive(),
        p.pronoun.subject(),
    );
    let home = &world.home(p).name;
    let (colour, food, job) = (
        &p.favourite_colour,
        &p.favourite_food,
        p.profession_with_article(),
    );
    let mut doc = Doc::new();
    doc.say(pick!(rng;
        "{f} is {job} in {home}.",
        "In {home} there lives {job} called {f}.",
    ));
    doc.say(pick!(rng;
        "On {her} day off, {f} stayed at home.",
        "One quiet day, {f} did not go to work.",
    ));
    match &p.pet {
        Some(pet) => {
            let (kind, name) = (&pet.kind, &pet.name);
            doc.say(pick!(rng;
                "{she} played with {her} {kind}, {name}.",
                "{name}, {f}'s {kind}, stayed close to {f} all day.",
            ));
        }
        None => doc.say(format!(
            "{f} has no pet, so {she_l} sat by the window and watched the birds."
        )),
    }
    let colour_cap = super::names::capitalize(colour);
    let a = a_or_an(colour);
    doc.say(pick!(rng;
        "{she} painted a chair {colour}, because {colour} is {her} favourite colour.",
        "{f} put on {a} {colour} coat. {colour_cap} is {her} favourite colour.",
    ));
    doc.say(pick!(rng;
        "For dinner, {f} had {food}, {her} favourite food.",
        "{f} cooked {food}, because {she_l} likes {food} best.",
    ));
    let n = p.favourite_number;
    let nw = cap_words(n);
    doc.say(format!(
        "Before bed, {f} thought about the number {n}. {nw} is {her} favourite number."
    ));
    doc.finish()
}
