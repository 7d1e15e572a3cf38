//! Word lists of the built-in world and the syllable-based name generator.
//!
//! Every proper name (countries, cities, people, pets, languages) is made from syllables, so the
//! world's facts are unlike anything in real data: a model can only know them from our corpus.

use std::collections::HashSet;

use crate::Rng;

/// Syllable onsets. Chosen so that names are pronounceable and rarely English words.
const ONSETS: &[&str] = &[
    "b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gr", "kr",
    "tr", "th", "sh", "st", "bl", "fl", "vr", "zh", "h", "j", "y", "w",
];
const VOWELS: &[&str] = &[
    "a", "e", "i", "o", "u", "a", "e", "i", "o", "ai", "ei", "ou", "au", "ia", "y",
];
const CODAS: &[&str] = &[
    "", "", "", "", "n", "r", "l", "s", "m", "th", "k", "x", "nd", "rn",
];

/// Country name endings.
const COUNTRY_ENDINGS: &[&str] = &[
    "ia", "ora", "and", "ar", "esh", "ovia", "istan", "ene", "ura",
];
/// City name endings (some cities have none).
const CITY_ENDINGS: &[&str] = &["", "", "", "mar", "dor", "vik", "ford", "holm", "ton", "ra"];
/// Language endings, added to a country's stem.
const LANGUAGE_ENDINGS: &[&str] = &["ish", "ese", "ic", "ian"];

/// Professions with their indefinite article.
pub const PROFESSIONS: &[(&str, &str)] = &[
    ("a", "baker"),
    ("a", "teacher"),
    ("a", "farmer"),
    ("a", "doctor"),
    ("a", "painter"),
    ("a", "builder"),
    ("a", "fisher"),
    ("a", "singer"),
    ("a", "tailor"),
    ("a", "potter"),
    ("a", "nurse"),
    ("a", "carpenter"),
    ("a", "gardener"),
    ("a", "librarian"),
    ("a", "cook"),
    ("a", "driver"),
    ("an", "engineer"),
    ("an", "artist"),
    ("an", "astronomer"),
    ("an", "actor"),
];

/// Colours.
pub const COLOURS: &[&str] = &[
    "red", "blue", "green", "yellow", "orange", "purple", "white", "black", "brown", "pink", "grey",
];

/// Foods a person can like (all read naturally after "likes").
pub const FOODS: &[&str] = &[
    "bread", "soup", "apples", "rice", "cheese", "honey", "plums", "fish", "noodles", "pie",
    "carrots", "pears", "beans", "cake", "eggs", "potatoes",
];

/// Pet kinds.
pub const PETS: &[&str] = &[
    "cat", "dog", "bird", "rabbit", "horse", "turtle", "goat", "parrot", "hamster", "duck",
];

/// National animals.
pub const ANIMALS: &[&str] = &[
    "owl", "fox", "bear", "deer", "heron", "wolf", "hare", "eagle", "swan", "lynx", "otter",
    "falcon",
];

/// Things a person can own several of: (singular, plural).
pub const OBJECTS: &[(&str, &str)] = &[
    ("book", "books"),
    ("cup", "cups"),
    ("ball", "balls"),
    ("hat", "hats"),
    ("box", "boxes"),
    ("lamp", "lamps"),
    ("chair", "chairs"),
    ("basket", "baskets"),
    ("stone", "stones"),
    ("key", "keys"),
    ("shell", "shells"),
    ("candle", "candles"),
    ("spoon", "spoons"),
    ("kite", "kites"),
    ("pencil", "pencils"),
    ("coat", "coats"),
    ("bottle", "bottles"),
    ("brush", "brushes"),
];

/// Things bought at a market in stories: (singular, plural).
pub const GOODS: &[(&str, &str)] = &[
    ("apple", "apples"),
    ("pear", "pears"),
    ("egg", "eggs"),
    ("loaf", "loaves"),
    ("plum", "plums"),
    ("carrot", "carrots"),
    ("melon", "melons"),
    ("onion", "onions"),
    ("peach", "peaches"),
    ("lemon", "lemons"),
];

/// City landmarks, written to follow "has" or "is known for".
pub const LANDMARKS: &[&str] = &[
    "an old stone bridge",
    "a tall clock tower",
    "a busy market",
    "a quiet lake",
    "a large library",
    "a green park",
    "a white lighthouse",
    "a famous bakery",
    "a big harbour",
    "a round theatre",
    "a long canal",
    "an old castle",
    "a small zoo",
    "a flower garden",
];

/// Ways to travel, written to follow the verb "went".
pub const TRAVEL: &[&str] = &[
    "by train",
    "by bus",
    "on foot",
    "by boat",
    "on a bicycle",
    "by car",
];

/// Simple words for spelling lessons (besides the world's own names).
pub const SPELLING_WORDS: &[&str] = &[
    "cat", "dog", "sun", "tree", "house", "river", "apple", "green", "water", "bread", "friend",
    "city", "school", "garden", "yellow", "number", "seven", "twelve", "morning", "window",
];

/// Ordinary English words (those our templates use, and other frequent ones) that are never
/// used as names, so a name never reads as a word. Whitespace-separated.
const COMMON_WORDS: &str = "\
    able about above across actor add after again against age ago all along alphabetical also \
    always among and animal answer any appear apple apples april are area artist astronomer ate \
    august away baby back backwards bag baker bakery balls baskets beans bear beauty because \
    become bed been before begin behind besides best better between bicycle big bigger biggest \
    bird birds black blue boat body books both bottles bought box boxes boy bread bridge bring \
    brother brothers brought brown brushes build builder bus busy but cake call called came can \
    canal candles capital car care carpenter carrot carrots castle cat center certain chair \
    chairs check cheese child children cities city class clear clock close coat coats cold \
    colour colours comes common complete contain cook cooked correct could count counted \
    counting country course cover cross cry cups dark day december decide decided deep deer \
    develop did digits dinner direct distant divided doctor does dog done door down draw drive \
    driver dry duck during each eagle early earth ease east egg eggs eight eighteen eighty \
    eleven engineer enough equate even evening ever every example eye fact falcon fall family \
    famous far farm farmer fast father favourite february feel feet few field fifteen fifty \
    figure fill final find fine fire first fish fisher five flag flower fly food foot for force \
    forty found four fourteen free friday friend friends from front full game garden gardener \
    gave get gets girl give goat goes gold good got govern green grey ground group grow had half \
    hamster happen happy harbour hard has hats have head heard heat her here him his hold home \
    honey horse hot hour house how hundred inch interest into island its january july june just \
    keep keeps keys king kites knew know known lady lake lamps language large largest last late \
    later laugh lay lead learn leave left lemon lemons less let letter letters librarian library \
    lies life lighthouse like liked likes list listen live lives loaf loaves long lord love \
    lunch lynx machine madam made make makes mama man many map march mark market measure meet \
    melon melons men might mile million mind minus minute miss mister monday money moon more \
    morning most mother much multiplied multiply music name named national near never new next \
    night nine nineteen ninety noodles north not note nothing notice noun november now number \
    numeral nurse object ocean october odd off often oil old older one onion onions only open \
    orange order other otter our out over owl own owns page paint painted painter papa paper \
    park parrot part pass pattern peach peaches pear pears pencils people person pet pets pie \
    piece pink plain plan plane plant played plum plums plus point population pose possible \
    potatoes potter pound power press prince princess problem produce product profession pull \
    purple put queen question quick quiet rabbit rain ran reach ready real record red remember \
    rest returned rice river road rock round rule run said same sat saturday saw say school sea \
    second see seem self september serve seven seventeen seventy several shape share she shells \
    ship short should showed siblings side simple since sing singer sir sister sisters six \
    sixteen sixty slow small smaller smallest snow some song soon sorted sound soup south space \
    speak special spell spelled spoons stand star stars start state stay stayed stead step still \
    stone stones stood story street strong study sun sunday sunny surface system table tail \
    tailor take talk talked tall teach teacher tell ten test than that the theatre their them \
    then there these they think thirteen thirty this those though thought thousand three \
    thursday time times tire tired today together told tomorrow too took top toward tower town \
    train travel travelled tree true tuesday turtle twelve twenty two unit until use usual verb \
    very visit visited visitors voice vowel wait walk walked want wanted war warm was watched \
    water way wednesday week well went were west what wheel when where which while white who \
    whole will wind window with wolf woman women wonder word words work works world would \
    written year years yellow yes yesterday you young younger your zero zoo";

/// Hands out unique, generated proper names.
///
/// Names never repeat across kinds (a person is never named like a city) and never equal a
/// word from the lists above or a common English word, so every name refers to exactly one
/// thing and never reads as an ordinary word.
#[derive(Debug, Default)]
pub struct NameGen {
    used: HashSet<String>,
}

impl NameGen {
    /// A generator that refuses the world's common words as names.
    pub fn new() -> Self {
        let mut used = HashSet::new();
        let words = PROFESSIONS
            .iter()
            .map(|p| p.1)
            .chain(COLOURS.iter().copied())
            .chain(FOODS.iter().copied())
            .chain(PETS.iter().copied())
            .chain(ANIMALS.iter().copied())
            .chain(OBJECTS.iter().flat_map(|o| [o.0, o.1]))
            .chain(GOODS.iter().flat_map(|o| [o.0, o.1]))
            .chain(SPELLING_WORDS.iter().copied())
            .chain(COMMON_WORDS.split_whitespace());
        for w in words {
            used.insert(w.to_string());
        }
        Self { used }
    }

    /// Reserves `name` (lower-cased); false if it was taken.
    pub fn reserve(&mut self, name: &str) -> bool {
        self.used.insert(name.to_lowercase())
    }

    /// A fresh capitalised name of `min..=max` syllables plus one of `endings` (may be empty).
    pub fn fresh(&mut self, rng: &mut Rng, min: usize, max: usize, endings: &[&str]) -> String {
        let mut tries = 0usize;
        loop {
            // After many collisions, allow longer names: the space grows ~300x per syllable.
            let extra = tries / 64;
            let n = min + rng.index(max - min + 1) + extra;
            let mut s = String::new();
            for _ in 0..n {
                s.push_str(rng.choose::<&str>(ONSETS));
                s.push_str(rng.choose::<&str>(VOWELS));
                if rng.bernoulli(0.35) {
                    s.push_str(rng.choose::<&str>(CODAS));
                }
            }
            if !endings.is_empty() {
                s.push_str(rng.choose::<&str>(endings));
            }
            let name = capitalize(&s);
            if name.len() >= 3 && name.len() <= 14 + 3 * extra && self.reserve(&name) {
                return name;
            }
            tries += 1;
        }
    }

    /// A person's first name (2 syllables, sometimes 1 or 3).
    pub fn first_name(&mut self, rng: &mut Rng) -> String {
        self.fresh(rng, 1, 3, &[])
    }

    /// A family name (2 to 3 syllables).
    pub fn family_name(&mut self, rng: &mut Rng) -> String {
        self.fresh(rng, 2, 3, &[])
    }

    /// A country name.
    pub fn country(&mut self, rng: &mut Rng) -> String {
        self.fresh(rng, 1, 2, COUNTRY_ENDINGS)
    }

    /// A city name.
    pub fn city(&mut self, rng: &mut Rng) -> String {
        self.fresh(rng, 1, 2, CITY_ENDINGS)
    }

    /// A pet's name (short).
    pub fn pet(&mut self, rng: &mut Rng) -> String {
        self.fresh(rng, 1, 2, &[])
    }

    /// The language of a country: its stem plus an ending ("Vemora" → "Vemorish"), or a fresh
    /// name if that is taken.
    pub fn language(&mut self, rng: &mut Rng, country: &str) -> String {
        let stem = country.trim_end_matches(['a', 'e', 'i', 'o', 'u', 'y']);
        let stem = if stem.len() >= 2 { stem } else { country };
        let name = format!("{stem}{}", rng.choose(LANGUAGE_ENDINGS));
        if self.reserve(&name) {
            name
        } else {
            self.fresh(rng, 2, 2, LANGUAGE_ENDINGS)
        }
    }
}

/// `word` with its first letter upper-cased.
pub fn capitalize(word: &str) -> String {
    let mut c = word.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_capitalised_and_not_common_words() {
        let mut g = NameGen::new();
        let mut r = Rng::new(5);
        let mut seen = HashSet::new();
        for i in 0..3000 {
            let n = match i % 4 {
                0 => g.first_name(&mut r),
                1 => g.city(&mut r),
                2 => g.country(&mut r),
                _ => g.pet(&mut r),
            };
            assert!(n.chars().next().unwrap().is_ascii_uppercase(), "{n}");
            assert!(n[1..].chars().all(|c| c.is_ascii_lowercase()), "{n}");
            assert!(seen.insert(n.to_lowercase()), "duplicate {n}");
        }
        assert!(!g.reserve("Cat") && !g.reserve("baker"));
    }

    #[test]
    fn language_derives_from_country() {
        let mut g = NameGen::new();
        let mut r = Rng::new(1);
        g.reserve("Vemora");
        let l = g.language(&mut r, "Vemora");
        assert!(l.starts_with("Vemor") && l.len() > 6, "{l}");
    }
}
