//! Special (control) tokens: the roles a chat model needs, and how they are found in text.
//!
//! Every [`crate::Tokenizer`] has exactly one token for each [`Special`] role. Their ids come after
//! the merged tokens. [`crate::Tokenizer::encode`] never produces them (text that looks like a
//! special token is encoded as ordinary text); only [`crate::Tokenizer::encode_with_special`] and
//! callers that push ids directly (chat templates) do.

use serde::{Deserialize, Serialize};

/// The role of a control token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Special {
    /// `<|bos|>`: beginning of a sequence.
    Bos,
    /// `<|eot|>`: end of a text (document separator in pretraining).
    Eot,
    /// `<|system_start|>`.
    SystemStart,
    /// `<|system_end|>`.
    SystemEnd,
    /// `<|user_start|>`.
    UserStart,
    /// `<|user_end|>`.
    UserEnd,
    /// `<|assistant_start|>`.
    AssistantStart,
    /// `<|assistant_end|>`.
    AssistantEnd,
    /// `<|reward|>`: the reward-model readout position.
    Reward,
    /// `<|tool_call_start|>`.
    ToolCallStart,
    /// `<|tool_call_end|>`.
    ToolCallEnd,
    /// `<|tool_result_start|>`.
    ToolResultStart,
    /// `<|tool_result_end|>`.
    ToolResultEnd,
}

impl Special {
    /// Every role, in the order their ids are assigned by training.
    pub const ALL: [Special; 13] = [
        Special::Bos,
        Special::Eot,
        Special::SystemStart,
        Special::SystemEnd,
        Special::UserStart,
        Special::UserEnd,
        Special::AssistantStart,
        Special::AssistantEnd,
        Special::Reward,
        Special::ToolCallStart,
        Special::ToolCallEnd,
        Special::ToolResultStart,
        Special::ToolResultEnd,
    ];

    /// Number of roles.
    pub const COUNT: usize = Self::ALL.len();

    /// The canonical text of this role's token, e.g. `<|eot|>`.
    pub fn as_str(self) -> &'static str {
        match self {
            Special::Bos => "<|bos|>",
            Special::Eot => "<|eot|>",
            Special::SystemStart => "<|system_start|>",
            Special::SystemEnd => "<|system_end|>",
            Special::UserStart => "<|user_start|>",
            Special::UserEnd => "<|user_end|>",
            Special::AssistantStart => "<|assistant_start|>",
            Special::AssistantEnd => "<|assistant_end|>",
            Special::Reward => "<|reward|>",
            Special::ToolCallStart => "<|tool_call_start|>",
            Special::ToolCallEnd => "<|tool_call_end|>",
            Special::ToolResultStart => "<|tool_result_start|>",
            Special::ToolResultEnd => "<|tool_result_end|>",
        }
    }

    /// The role's name as written in tokenizer files (`"eot"`, `"user_start"`, ...).
    pub fn name(self) -> &'static str {
        let text = self.as_str();
        &text[2..text.len() - 2]
    }

    /// Position of this role in [`Special::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Special {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A control token of a tokenizer: its text, id, and role (if it has one of [`Special`]'s roles;
/// imported vocabularies may carry extra control tokens without a role).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecialToken {
    /// Token id.
    pub id: u32,
    /// The exact text that [`crate::Tokenizer::encode_with_special`] turns into this id.
    pub text: String,
    /// The role, if any.
    pub role: Option<Special>,
}

/// A piece of text cut by [`SpecialMatcher::split`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Piece<'t> {
    /// Ordinary text.
    Text(&'t str),
    /// The id of a special token whose exact text was found.
    Special(u32),
}

/// Finds special-token texts in a string: leftmost match first, longest text on a tie.
///
/// Linear in the text length times the number of specials (each special's next occurrence is
/// searched once per position it is passed, never from the start again).
#[derive(Debug, Clone)]
pub(crate) struct SpecialMatcher {
    /// `(text, id)` of every special token.
    texts: Vec<(String, u32)>,
}

impl SpecialMatcher {
    pub(crate) fn new(specials: &[SpecialToken]) -> SpecialMatcher {
        SpecialMatcher {
            texts: specials.iter().map(|s| (s.text.clone(), s.id)).collect(),
        }
    }

    /// Splits `text` into ordinary pieces and special ids, calling `f` on each in order.
    pub(crate) fn split<'t>(&self, text: &'t str, mut f: impl FnMut(Piece<'t>)) {
        // next[k]: byte offset of the next occurrence of special k at or after `pos`, if any.
        let mut next: Vec<Option<usize>> = self
            .texts
            .iter()
            .map(|(t, _)| text.find(t.as_str()))
            .collect();
        let mut pos = 0;
        loop {
            let mut best: Option<(usize, usize)> = None; // (start, k)
            for (k, found) in next.iter_mut().enumerate() {
                if let Some(start) = *found {
                    if start < pos {
                        *found = text[pos..].find(self.texts[k].0.as_str()).map(|i| i + pos);
                    }
                }
                if let Some(start) = *found {
                    let better = match best {
                        None => true,
                        Some((bs, bk)) => {
                            start < bs
                                || (start == bs && self.texts[k].0.len() > self.texts[bk].0.len())
                        }
                    };
                    if better {
                        best = Some((start, k));
                    }
                }
            }
            match best {
                None => {
                    if pos < text.len() {
                        f(Piece::Text(&text[pos..]));
                    }
                    return;
                }
                Some((start, k)) => {
                    if start > pos {
                        f(Piece::Text(&text[pos..start]));
                    }
                    f(Piece::Special(self.texts[k].1));
                    pos = start + self.texts[k].0.len();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_texts() {
        assert_eq!(Special::Eot.as_str(), "<|eot|>");
        assert_eq!(Special::ToolResultEnd.name(), "tool_result_end");
        for (i, s) in Special::ALL.iter().enumerate() {
            assert_eq!(s.index(), i);
            let json = serde_json::to_string(s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.name()));
        }
    }

    #[test]
    fn matcher_leftmost_longest() {
        let specials = vec![
            SpecialToken {
                id: 10,
                text: "<|a|>".into(),
                role: None,
            },
            SpecialToken {
                id: 11,
                text: "<|a|><|b|>".into(),
                role: None,
            },
            SpecialToken {
                id: 12,
                text: "<|b|>".into(),
                role: None,
            },
        ];
        let m = SpecialMatcher::new(&specials);
        let mut out = Vec::new();
        m.split("x<|a|><|b|>y<|b|><|a|>", |p| match p {
            Piece::Text(s) => out.push(format!("T:{s}")),
            Piece::Special(id) => out.push(format!("S:{id}")),
        });
        assert_eq!(out, ["T:x", "S:11", "T:y", "S:12", "S:10"]);
    }
}
