//! English number words and small text helpers shared by the renderers.
//!
//! British style, as in the rest of the world's text: "one hundred and five",
//! "two thousand and twelve", hyphenated tens ("forty-two").

const ONES: [&str; 20] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
];
const TENS: [&str; 10] = [
    "", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
];
const SCALES: [(u64, &str); 6] = [
    (1_000_000_000_000_000_000, "quintillion"),
    (1_000_000_000_000_000, "quadrillion"),
    (1_000_000_000_000, "trillion"),
    (1_000_000_000, "billion"),
    (1_000_000, "million"),
    (1_000, "thousand"),
];

/// `n` in English words: 0 → "zero", 105 → "one hundred and five", 230_400 → "two hundred and
/// thirty thousand four hundred", 1_005 → "one thousand and five".
pub fn words(n: u64) -> String {
    if n == 0 {
        return ONES[0].to_string();
    }
    let mut parts: Vec<String> = Vec::new();
    let mut rest = n;
    for (scale, name) in SCALES {
        if rest >= scale {
            parts.push(format!("{} {name}", below_thousand(rest / scale)));
            rest %= scale;
        }
    }
    if rest > 0 {
        // "one thousand and five": a final group below one hundred after a larger group.
        if !parts.is_empty() && rest < 100 {
            parts.push(format!("and {}", below_thousand(rest)));
        } else {
            parts.push(below_thousand(rest));
        }
    }
    parts.join(" ")
}

/// 1..=999 in words.
fn below_thousand(n: u64) -> String {
    let (h, r) = (n / 100, n % 100);
    match (h, r) {
        (0, r) => below_hundred(r),
        (h, 0) => format!("{} hundred", ONES[h as usize]),
        (h, r) => format!("{} hundred and {}", ONES[h as usize], below_hundred(r)),
    }
}

/// 0..=99 in words.
fn below_hundred(n: u64) -> String {
    match (n / 10, n % 10) {
        (0 | 1, _) => ONES[n as usize].to_string(),
        (t, 0) => TENS[t as usize].to_string(),
        (t, u) => format!("{}-{}", TENS[t as usize], ONES[u as usize]),
    }
}

/// `n` in words with its first letter upper-cased, for the start of a sentence.
pub fn cap_words(n: u64) -> String {
    super::names::capitalize(&words(n))
}

/// `n` in digits with thousands separators: 12000 → "12,000".
pub fn digits_grouped(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, ch) in s.chars().enumerate() {
        let left = s.len() - i; // digits from here to the end
        if i > 0 && left % 3 != 1 && left % 3 != 2 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// Ordinal word for 1..=20 ("first", "second", ...); digits with a suffix beyond.
pub fn ordinal(n: u64) -> String {
    const ORD: [&str; 21] = [
        "zeroth",
        "first",
        "second",
        "third",
        "fourth",
        "fifth",
        "sixth",
        "seventh",
        "eighth",
        "ninth",
        "tenth",
        "eleventh",
        "twelfth",
        "thirteenth",
        "fourteenth",
        "fifteenth",
        "sixteenth",
        "seventeenth",
        "eighteenth",
        "nineteenth",
        "twentieth",
    ];
    if let Some(w) = ORD.get(n as usize) {
        return w.to_string();
    }
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// "a", "a and b", "a, b and c".
pub fn join_and<S: AsRef<str>>(items: &[S]) -> String {
    match items {
        [] => String::new(),
        [a] => a.as_ref().to_string(),
        [init @ .., last] => {
            let head: Vec<&str> = init.iter().map(|s| s.as_ref()).collect();
            format!("{} and {}", head.join(", "), last.as_ref())
        }
    }
}

/// The indefinite article for `word`: "an" before a vowel letter ("an orange"), else "a".
/// (Spelling-based; the world's word lists have no exceptions like "an hour" or "a unit".)
pub fn a_or_an(word: &str) -> &'static str {
    match word.bytes().next().map(|b| b.to_ascii_lowercase()) {
        Some(b'a' | b'e' | b'i' | b'o' | b'u') => "an",
        _ => "a",
    }
}

/// "one book" / "three books", with the count in words.
pub fn count_noun(n: u64, singular: &str, plural: &str) -> String {
    if n == 1 {
        format!("one {singular}")
    } else {
        format!("{} {plural}", words(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_words_pinned_by_hand() {
        let cases: &[(u64, &str)] = &[
            (0, "zero"),
            (7, "seven"),
            (13, "thirteen"),
            (20, "twenty"),
            (21, "twenty-one"),
            (99, "ninety-nine"),
            (100, "one hundred"),
            (105, "one hundred and five"),
            (342, "three hundred and forty-two"),
            (1_000, "one thousand"),
            (1_005, "one thousand and five"),
            (1_100, "one thousand one hundred"),
            (2_012, "two thousand and twelve"),
            (12_000, "twelve thousand"),
            (230_400, "two hundred and thirty thousand four hundred"),
            (1_000_001, "one million and one"),
            (
                7_003_080_090,
                "seven billion three million eighty thousand and ninety",
            ),
            (
                u64::MAX,
                "eighteen quintillion four hundred and forty-six quadrillion seven hundred and \
                 forty-four trillion seventy-three billion seven hundred and nine million five \
                 hundred and fifty-one thousand six hundred and fifteen",
            ),
        ];
        for &(n, w) in cases {
            assert_eq!(words(n), w, "{n}");
        }
        assert_eq!(cap_words(42), "Forty-two");
    }

    #[test]
    fn helpers() {
        assert_eq!(digits_grouped(0), "0");
        assert_eq!(digits_grouped(999), "999");
        assert_eq!(digits_grouped(12_000), "12,000");
        assert_eq!(digits_grouped(1_234_567), "1,234,567");
        assert_eq!(ordinal(3), "third");
        assert_eq!(ordinal(21), "21st");
        assert_eq!(ordinal(112), "112th");
        assert_eq!(ordinal(23), "23rd");
        assert_eq!(join_and::<&str>(&[]), "");
        assert_eq!(join_and(&["a"]), "a");
        assert_eq!(join_and(&["a", "b"]), "a and b");
        assert_eq!(join_and(&["a", "b", "c"]), "a, b and c");
        assert_eq!(count_noun(1, "box", "boxes"), "one box");
        assert_eq!(count_noun(3, "box", "boxes"), "three boxes");
        assert_eq!(a_or_an("orange"), "an");
        assert_eq!(a_or_an("Ivo"), "an");
        assert_eq!(a_or_an("red"), "a");
    }
}
