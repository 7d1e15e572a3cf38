//! Chat templates: render a [`Conversation`] to token ids and a loss mask for training, or a
//! prompt to the ids a model continues from.
//!
//! # The templates, exactly
//!
//! Control tokens are pushed as ids; every message's content is encoded with
//! [`Tokenizer::encode`], so special-token text typed into a message (`"<|user_end|>"`,
//! `"<|im_end|>"`) stays ordinary text and never becomes a control id.
//!
//! [`ChatTemplate::Native`] uses the tokenizer's own role tokens ([`Special`]). A conversation
//! (system, user, assistant) renders as the text
//!
//! ```text
//! <|bos|><|system_start|>SYSTEM<|system_end|><|user_start|>USER<|user_end|><|assistant_start|>ASSISTANT<|assistant_end|>
//! ```
//!
//! with no separators. Later turns follow the same way, each message as
//! `<|ROLE_start|>CONTENT<|ROLE_end|>`.
//!
//! [`ChatTemplate::ChatMl`] is the ChatML format of OpenAI, Qwen and SmolLM2, with no
//! beginning-of-sequence token; each message is
//!
//! ```text
//! <|im_start|>ROLE\nCONTENT<|im_end|>\n
//! ```
//!
//! where `ROLE` is `system`, `user` or `assistant` and `\n` is one newline. `<|im_start|>` and
//! `<|im_end|>` must be special tokens of the tokenizer (role-less extras, see
//! [`add_chatml_specials`]); rendering with a tokenizer that lacks them is
//! [`Error::MissingTemplateToken`].
//!
//! # The loss mask
//!
//! [`Rendered::loss_mask`]`[i]` is true exactly for the tokens of assistant contents and for
//! the token that ends each assistant turn (`<|assistant_end|>`, or `<|im_end|>` after an
//! assistant message): what SFT trains the model to produce. Everything else is false: the
//! `<|bos|>`, system and user messages with their control tokens, the assistant-start token
//! (Native) or `<|im_start|>assistant\n` (ChatML), and the `\n` after each `<|im_end|>`.
//!
//! # Prompts
//!
//! [`render_prompt`] renders the messages, then the assistant-start prefix (`<|assistant_start|>`
//! or `<|im_start|>assistant\n`), so that a model continues with the assistant's reply and stops
//! at [`assistant_end`]. Each piece (control id, role header, content) is encoded on its own,
//! never across a boundary, so for every assistant turn `k` of a conversation
//! `render_prompt(&messages[..k])` is exactly a prefix of `render(conv).ids`, followed by
//! `encode(messages[k].content)`: what the model saw in training is what it sees when chatting.
//! (A consequence for ChatML: `ROLE\n` and a content that starts with whitespace are encoded
//! separately, so their ids can differ from a tokenizer run over the whole string at once; the
//! decoded text is the same.)
//!
//! # Validation
//!
//! [`render`] accepts the conversations [`Conversation::validate`] accepts (non-empty, a system
//! message only first, user and assistant alternating from the user, ending with the assistant,
//! no empty content); [`render_prompt`] the prompts [`validate_prompt`] accepts (the same, but
//! ending with the user). Anything else is [`Error::InvalidConversation`], naming the message.

use chatforge_data::conversation::{validate_prompt, Conversation, Message, Role};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::special::{Special, SpecialToken};
use crate::tokenizer::Tokenizer;

/// The text of ChatML's message-start token.
pub const IM_START: &str = "<|im_start|>";
/// The text of ChatML's message-end token.
pub const IM_END: &str = "<|im_end|>";

/// How a conversation is laid out in tokens (module docs give the exact strings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatTemplate {
    /// The tokenizer's own role tokens: `<|user_start|>…<|user_end|>` and so on. Works with
    /// every [`Tokenizer`].
    #[default]
    Native,
    /// `<|im_start|>role\ncontent<|im_end|>\n`. Needs `<|im_start|>` and `<|im_end|>` special
    /// tokens.
    ChatMl,
}

impl ChatTemplate {
    /// Every template.
    pub const ALL: [ChatTemplate; 2] = [ChatTemplate::Native, ChatTemplate::ChatMl];

    /// The name as written in configs: `"native"` or `"chatml"`.
    pub fn name(self) -> &'static str {
        match self {
            ChatTemplate::Native => "native",
            ChatTemplate::ChatMl => "chatml",
        }
    }
}

impl std::fmt::Display for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A rendered conversation: token ids and which of them are training targets.
///
/// `loss_mask[i]` says whether token `i` is a target; as in next-token training it is predicted
/// from the tokens before it, so the first token is never a target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rendered {
    /// Token ids.
    pub ids: Vec<u32>,
    /// One flag per id: true for assistant content tokens and each assistant-end token.
    pub loss_mask: Vec<bool>,
}

impl Rendered {
    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Number of target tokens (true entries of the mask).
    pub fn num_targets(&self) -> usize {
        self.loss_mask.iter().filter(|&&m| m).count()
    }
}

/// Renders a training conversation: ids and loss mask (module docs give the layout).
///
/// Errors: [`Error::InvalidConversation`] if `conv` breaks [`Conversation::validate`]'s rules;
/// [`Error::MissingTemplateToken`] for ChatML on a tokenizer without its tokens.
pub fn render(tok: &Tokenizer, conv: &Conversation, template: ChatTemplate) -> Result<Rendered> {
    conv.validate().map_err(invalid)?;
    let mut w = Writer::new(tok, template)?;
    for m in &conv.messages {
        w.message(m);
    }
    Ok(w.out)
}

/// Renders a prompt for generation: the messages, then the assistant-start prefix
/// (`<|assistant_start|>` or `<|im_start|>assistant\n`). Generation should stop at
/// [`assistant_end`].
///
/// Errors: [`Error::InvalidConversation`] if `messages` breaks [`validate_prompt`]'s rules
/// (empty, out of order, empty content, not ending with the user);
/// [`Error::MissingTemplateToken`] for ChatML on a tokenizer without its tokens.
pub fn render_prompt(
    tok: &Tokenizer,
    messages: &[Message],
    template: ChatTemplate,
) -> Result<Vec<u32>> {
    validate_prompt(messages).map_err(invalid)?;
    let mut w = Writer::new(tok, template)?;
    for m in messages {
        w.message(m);
    }
    w.header(Role::Assistant);
    Ok(w.out.ids)
}

/// The token that ends an assistant turn: the stop token for generation
/// (`<|assistant_end|>`, or `<|im_end|>` for ChatML).
pub fn assistant_end(tok: &Tokenizer, template: ChatTemplate) -> Result<u32> {
    match template {
        ChatTemplate::Native => Ok(tok.special(Special::AssistantEnd)),
        ChatTemplate::ChatMl => find_special(tok, ChatTemplate::ChatMl, IM_END),
    }
}

/// A copy of `tok` with [`IM_START`] and [`IM_END`] appended as role-less special tokens (ids
/// `vocab_size()` and `vocab_size() + 1`), so that it can render [`ChatTemplate::ChatMl`].
/// Tokens it already has are not added again; every existing id keeps its meaning. A model
/// trained with the old vocabulary needs its embedding grown to the new
/// [`Tokenizer::vocab_size`].
pub fn add_chatml_specials(tok: &Tokenizer) -> Result<Tokenizer> {
    let mut specials: Vec<SpecialToken> = tok.specials().to_vec();
    let mut next = tok.vocab_size();
    for text in [IM_START, IM_END] {
        if specials.iter().all(|s| s.text != text) {
            let id = u32::try_from(next).map_err(|_| Error::TooMany {
                what: "token ids",
                count: next + 1,
                max: u32::MAX as usize,
            })?;
            specials.push(SpecialToken {
                id,
                text: text.to_string(),
                role: None,
            });
            next += 1;
        }
    }
    Tokenizer::from_parts(
        tok.pattern(),
        *tok.byte_ids(),
        tok.merges().to_vec(),
        specials,
    )
}

/// The id of the special token whose text is exactly `text`.
fn find_special(tok: &Tokenizer, template: ChatTemplate, text: &'static str) -> Result<u32> {
    tok.specials()
        .iter()
        .find(|s| s.text == text)
        .map(|s| s.id)
        .ok_or(Error::MissingTemplateToken {
            template: template.name(),
            text,
        })
}

/// Turns the data crate's validation error into ours, keeping its message.
fn invalid(e: chatforge_data::Error) -> Error {
    match e {
        chatforge_data::Error::InvalidConversation { reason } => {
            Error::InvalidConversation { reason }
        }
        other => Error::InvalidConversation {
            reason: other.to_string(),
        },
    }
}

/// A template with its control ids looked up.
#[derive(Debug, Clone, Copy)]
enum Layout {
    Native,
    ChatMl { im_start: u32, im_end: u32 },
}

/// Appends messages to a [`Rendered`]; every piece is encoded on its own (module docs, Prompts).
struct Writer<'t> {
    tok: &'t Tokenizer,
    layout: Layout,
    out: Rendered,
}

impl<'t> Writer<'t> {
    /// A writer holding the template's opening tokens (`<|bos|>` for Native, nothing for ChatML).
    fn new(tok: &'t Tokenizer, template: ChatTemplate) -> Result<Self> {
        let layout = match template {
            ChatTemplate::Native => Layout::Native,
            ChatTemplate::ChatMl => Layout::ChatMl {
                im_start: find_special(tok, template, IM_START)?,
                im_end: find_special(tok, template, IM_END)?,
            },
        };
        let mut w = Writer {
            tok,
            layout,
            out: Rendered::default(),
        };
        if let Layout::Native = layout {
            w.control(tok.special(Special::Bos), false);
        }
        Ok(w)
    }

    fn control(&mut self, id: u32, target: bool) {
        self.out.ids.push(id);
        self.out.loss_mask.push(target);
    }

    fn text(&mut self, text: &str, target: bool) {
        let ids = self.tok.encode(text);
        self.out
            .loss_mask
            .extend(std::iter::repeat_n(target, ids.len()));
        self.out.ids.extend(ids);
    }

    /// What opens a message from `role` (never a target).
    fn header(&mut self, role: Role) {
        match self.layout {
            Layout::Native => {
                let start = match role {
                    Role::System => Special::SystemStart,
                    Role::User => Special::UserStart,
                    Role::Assistant => Special::AssistantStart,
                };
                self.control(self.tok.special(start), false);
            }
            Layout::ChatMl { im_start, .. } => {
                self.control(im_start, false);
                self.text(&format!("{role}\n"), false);
            }
        }
    }

    /// A whole message: header, content, end token (and ChatML's newline).
    fn message(&mut self, m: &Message) {
        let target = m.role == Role::Assistant;
        self.header(m.role);
        self.text(&m.content, target);
        match self.layout {
            Layout::Native => {
                let end = match m.role {
                    Role::System => Special::SystemEnd,
                    Role::User => Special::UserEnd,
                    Role::Assistant => Special::AssistantEnd,
                };
                self.control(self.tok.special(end), target);
            }
            Layout::ChatMl { im_end, .. } => {
                self.control(im_end, target);
                self.text("\n", false);
            }
        }
    }
}
