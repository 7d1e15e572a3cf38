//! The two tools every renderer uses: `pick!` (one of several phrasings, chosen by the RNG and
//! formatted only when chosen) and [`Doc`] (a document assembled sentence by sentence).

/// `pick!(rng; "template {x}", "other {x}")` formats one of the templates, chosen uniformly by
/// `rng` (an `&mut Rng`). Templates capture variables in scope, like `format!`.
macro_rules! pick {
    ($rng:expr; $($fmt:literal),+ $(,)?) => {{
        const N: usize = [$($fmt),+].len();
        let chosen = $rng.index(N);
        let mut k = 0usize;
        let mut out = String::new();
        $(
            if k == chosen {
                out = format!($fmt);
            }
            k += 1;
        )+
        debug_assert_eq!(k, N);
        out
    }};
}

/// A document built from sentences: `say` separates sentences with a space, `paragraph` starts
/// a new paragraph, `line` starts a new line.
#[derive(Debug, Default)]
pub struct Doc {
    out: String,
}

impl Doc {
    /// An empty document.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a sentence (a space before it unless at the start of a line).
    pub fn say(&mut self, sentence: impl AsRef<str>) {
        if !self.out.is_empty() && !self.out.ends_with('\n') {
            self.out.push(' ');
        }
        self.out.push_str(sentence.as_ref());
    }

    /// Starts a new paragraph (a blank line), unless the document is empty.
    pub fn paragraph(&mut self) {
        if !self.out.is_empty() {
            self.out.push_str("\n\n");
        }
    }

    /// Appends `text` on a line of its own.
    pub fn line(&mut self, text: impl AsRef<str>) {
        if !self.out.is_empty() && !self.out.ends_with('\n') {
            self.out.push('\n');
        }
        self.out.push_str(text.as_ref());
    }

    /// The finished text.
    pub fn finish(self) -> String {
        self.out
    }
}
