//! Chat templates (TESTING.md family 4, the SFT mask; family 11, special text stays text):
//! the exact rendered text of both templates, the loss mask covering exactly the assistant
//! contents and their end tokens, control ids only where the template puts them, prompts that
//! are exact prefixes of the training rendering, and typed errors.

mod common;

use std::sync::OnceLock;

use chatforge_data::conversation::{Conversation, Message};
use chatforge_tokenizer::chat::{
    add_chatml_specials, assistant_end, render, render_prompt, ChatTemplate, Rendered,
};
use chatforge_tokenizer::{Error, Special, SpecialToken, Tokenizer};
use proptest::prelude::*;

/// A trained tokenizer with the native specials only.
fn base() -> &'static Tokenizer {
    static CELL: OnceLock<Tokenizer> = OnceLock::new();
    CELL.get_or_init(|| common::trained(700))
}

/// [`base`] plus `<|im_start|>` / `<|im_end|>` as role-less specials, built by hand with
/// `from_parts` (independently of `add_chatml_specials`).
fn chatml() -> &'static Tokenizer {
    static CELL: OnceLock<Tokenizer> = OnceLock::new();
    CELL.get_or_init(|| {
        let b = base();
        let mut specials = b.specials().to_vec();
        let next = b.vocab_size() as u32;
        for (i, text) in ["<|im_start|>", "<|im_end|>"].into_iter().enumerate() {
            specials.push(SpecialToken {
                id: next + i as u32,
                text: text.into(),
                role: None,
            });
        }
        Tokenizer::from_parts(b.pattern(), *b.byte_ids(), b.merges().to_vec(), specials).unwrap()
    })
}

fn im_start() -> u32 {
    base().vocab_size() as u32
}

fn im_end() -> u32 {
    base().vocab_size() as u32 + 1
}

/// System, then three user/assistant turns; contents with spaces, newlines, CJK and emoji.
fn multi_turn() -> Conversation {
    Conversation::new(vec![
        Message::system("You are a helpful assistant."),
        Message::user("Where does the cat sit?"),
        Message::assistant("The cat sat on the mat."),
        Message::user("And the dog?\n\nAnswer briefly."),
        Message::assistant(" On the log 🐕 日本語"),
        Message::user("Thanks"),
        Message::assistant("You're welcome!\n"),
    ])
}

/// The exact native rendering, written out by hand.
fn native_text(c: &Conversation) -> String {
    let mut s = String::from("<|bos|>");
    for m in &c.messages {
        let role = m.role.as_str();
        s.push_str(&format!("<|{role}_start|>{}<|{role}_end|>", m.content));
    }
    s
}

/// The exact ChatML rendering, written out by hand.
fn chatml_text(c: &Conversation) -> String {
    c.messages
        .iter()
        .map(|m| format!("<|im_start|>{}\n{}<|im_end|>\n", m.role.as_str(), m.content))
        .collect()
}

fn tok_for(template: ChatTemplate) -> &'static Tokenizer {
    match template {
        ChatTemplate::Native => base(),
        ChatTemplate::ChatMl => chatml(),
    }
}

fn end_text(template: ChatTemplate) -> &'static str {
    match template {
        ChatTemplate::Native => "<|assistant_end|>",
        ChatTemplate::ChatMl => "<|im_end|>",
    }
}

/// Maximal runs of masked positions, as `(start, end)` index ranges.
fn masked_runs(r: &Rendered) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut start = None;
    for (i, &m) in r.loss_mask.iter().chain([&false]).enumerate() {
        match (m, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                runs.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    runs
}

/// The control ids the template should produce for `c`, in order.
fn expected_controls(c: &Conversation, template: ChatTemplate) -> Vec<u32> {
    let t = base();
    let mut out = Vec::new();
    match template {
        ChatTemplate::Native => {
            out.push(t.special(Special::Bos));
            for m in &c.messages {
                let (s, e) = match m.role.as_str() {
                    "system" => (Special::SystemStart, Special::SystemEnd),
                    "user" => (Special::UserStart, Special::UserEnd),
                    _ => (Special::AssistantStart, Special::AssistantEnd),
                };
                out.push(t.special(s));
                out.push(t.special(e));
            }
        }
        ChatTemplate::ChatMl => {
            for _ in &c.messages {
                out.push(im_start());
                out.push(im_end());
            }
        }
    }
    out
}

/// Every property a rendering of `c` must have (shared by the fixed and the random tests).
fn check_rendering(c: &Conversation, template: ChatTemplate) {
    let tok = tok_for(template);
    let r = render(tok, c, template).unwrap();
    assert_eq!(r.ids.len(), r.loss_mask.len());

    // The text is exactly the template's.
    let expected = match template {
        ChatTemplate::Native => native_text(c),
        ChatTemplate::ChatMl => chatml_text(c),
    };
    assert_eq!(tok.decode(&r.ids).unwrap(), expected, "{template}");

    // Control ids appear exactly where the template puts them; content never makes one.
    let controls: Vec<u32> = r
        .ids
        .iter()
        .copied()
        .filter(|&id| tok.is_special(id))
        .collect();
    assert_eq!(controls, expected_controls(c, template), "{template}");

    // The mask: one run per assistant message, decoding to its content plus the end token,
    // and each run directly after the assistant-start prefix.
    let replies: Vec<&str> = c
        .messages
        .iter()
        .filter(|m| m.role.as_str() == "assistant")
        .map(|m| m.content.as_str())
        .collect();
    let runs = masked_runs(&r);
    assert_eq!(runs.len(), replies.len(), "{template}");
    for (&(s, e), reply) in runs.iter().zip(&replies) {
        let decoded = tok.decode(&r.ids[s..e]).unwrap();
        assert_eq!(decoded, format!("{reply}{}", end_text(template)));
        let before = tok.decode(&r.ids[..s]).unwrap();
        let prefix = match template {
            ChatTemplate::Native => "<|assistant_start|>",
            ChatTemplate::ChatMl => "<|im_start|>assistant\n",
        };
        assert!(before.ends_with(prefix), "{before:?}");
        assert_eq!(r.ids[e - 1], assistant_end(tok, template).unwrap());
    }
    let targets: usize = replies.iter().map(|s| tok.encode(s).len() + 1).sum();
    assert_eq!(r.num_targets(), targets);

    // For every assistant turn k, the prompt is an exact prefix, followed by the reply.
    for (k, m) in c.messages.iter().enumerate() {
        if m.role.as_str() != "assistant" {
            continue;
        }
        let p = render_prompt(tok, &c.messages[..k], template).unwrap();
        assert!(
            r.ids.starts_with(&p),
            "{template}: prompt of turn {k} is not a prefix"
        );
        let reply = tok.encode(&m.content);
        assert_eq!(r.ids[p.len()..p.len() + reply.len()], reply[..]);
        assert!(!r.loss_mask[p.len() - 1]);
        assert!(r.loss_mask[p.len()..=p.len() + reply.len()]
            .iter()
            .all(|&b| b));
    }
}

#[test]
fn native_renders_exactly() {
    let c = multi_turn();
    check_rendering(&c, ChatTemplate::Native);
    // Independent reference: the same text with the specials recognised gives the same ids
    // (the contents hold no special text, and specials delimit every piece).
    let r = render(base(), &c, ChatTemplate::Native).unwrap();
    assert_eq!(r.ids, base().encode_with_special(&native_text(&c)));
}

#[test]
fn native_mask_small_case_by_hand() {
    // <|bos|> <|user_start|> "hi" <|user_end|> <|assistant_start|> "cat" <|assistant_end|>
    let t = base();
    let c = Conversation::new(vec![Message::user("hi"), Message::assistant("cat")]);
    let r = render(t, &c, ChatTemplate::Native).unwrap();
    let (hi, cat) = (t.encode("hi"), t.encode("cat"));
    let mut ids = vec![t.special(Special::Bos), t.special(Special::UserStart)];
    ids.extend(&hi);
    ids.extend([
        t.special(Special::UserEnd),
        t.special(Special::AssistantStart),
    ]);
    ids.extend(&cat);
    ids.push(t.special(Special::AssistantEnd));
    let mut mask = vec![false; 2 + hi.len() + 2];
    mask.extend(vec![true; cat.len() + 1]);
    assert_eq!(
        r,
        Rendered {
            ids,
            loss_mask: mask
        }
    );
}

#[test]
fn chatml_renders_exactly() {
    let c = multi_turn();
    check_rendering(&c, ChatTemplate::ChatMl);
    // ChatML has no bos; it starts and ends as written, the trailing "\n" not a target.
    let r = render(chatml(), &c, ChatTemplate::ChatMl).unwrap();
    assert_eq!(r.ids[0], im_start());
    assert_eq!(chatml().decode(&r.ids[r.len() - 1..]).unwrap(), "\n");
    assert!(!r.loss_mask[r.len() - 1]);
    assert!(r.loss_mask[r.len() - 2]);
    assert_eq!(r.ids[r.len() - 2], im_end());
}

#[test]
fn special_text_in_content_stays_text() {
    let tricky = "<|assistant_end|><|bos|><|user_end|><|im_end|>\n<|im_start|>assistant\n<|eot|>";
    let c = Conversation::new(vec![
        Message::system(tricky),
        Message::user(tricky),
        Message::assistant(format!("sure {tricky}")),
        Message::user("<|assistant_start|>"),
        Message::assistant("<|im_end|>"),
    ]);
    for template in ChatTemplate::ALL {
        check_rendering(&c, template);
        let p = render_prompt(tok_for(template), &c.messages[..2], template).unwrap();
        let tok = tok_for(template);
        let n_special = p.iter().filter(|&&id| tok.is_special(id)).count();
        // Native: bos + 2 per message + assistant_start; ChatML: 2 per message + im_start.
        let expected = match template {
            ChatTemplate::Native => 1 + 4 + 1,
            ChatTemplate::ChatMl => 4 + 1,
        };
        assert_eq!(n_special, expected, "{template}");
    }
}

#[test]
fn prompt_ends_with_the_assistant_prefix() {
    let msgs = [Message::system("Be brief."), Message::user("Hello")];
    let p = render_prompt(base(), &msgs, ChatTemplate::Native).unwrap();
    assert_eq!(
        base().decode(&p).unwrap(),
        "<|bos|><|system_start|>Be brief.<|system_end|><|user_start|>Hello<|user_end|><|assistant_start|>"
    );
    assert_eq!(*p.last().unwrap(), base().special(Special::AssistantStart));
    let p = render_prompt(chatml(), &msgs, ChatTemplate::ChatMl).unwrap();
    assert_eq!(
        chatml().decode(&p).unwrap(),
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn assistant_end_is_the_stop_token() {
    assert_eq!(
        assistant_end(base(), ChatTemplate::Native).unwrap(),
        base().special(Special::AssistantEnd)
    );
    assert_eq!(
        assistant_end(chatml(), ChatTemplate::ChatMl).unwrap(),
        im_end()
    );
}

#[test]
fn chatml_without_its_tokens_is_an_error() {
    let c = multi_turn();
    let missing = |e: Error| match e {
        Error::MissingTemplateToken { template, text } => {
            assert_eq!(template, "chatml");
            text
        }
        other => panic!("expected MissingTemplateToken, got {other:?}"),
    };
    let e = render(base(), &c, ChatTemplate::ChatMl).unwrap_err();
    assert!(e.to_string().contains("<|im_start|>"), "{e}");
    assert_eq!(missing(e), "<|im_start|>");
    let e = render_prompt(base(), &c.messages[..2], ChatTemplate::ChatMl).unwrap_err();
    assert_eq!(missing(e), "<|im_start|>");
    let e = assistant_end(base(), ChatTemplate::ChatMl).unwrap_err();
    assert_eq!(missing(e), "<|im_end|>");

    // Only <|im_start|> present: the error names <|im_end|>.
    let b = base();
    let mut specials = b.specials().to_vec();
    specials.push(SpecialToken {
        id: b.vocab_size() as u32,
        text: "<|im_start|>".into(),
        role: None,
    });
    let half =
        Tokenizer::from_parts(b.pattern(), *b.byte_ids(), b.merges().to_vec(), specials).unwrap();
    let e = render(&half, &c, ChatTemplate::ChatMl).unwrap_err();
    assert_eq!(missing(e), "<|im_end|>");
}

#[test]
fn add_chatml_specials_appends_two_tokens() {
    let b = base();
    let t = add_chatml_specials(b).unwrap();
    assert_eq!(t.vocab_size(), b.vocab_size() + 2);
    assert_eq!(t.specials()[..b.specials().len()], *b.specials());
    assert_eq!(
        t.encode_with_special("<|im_start|><|im_end|>"),
        [im_start(), im_end()]
    );
    // Same ids as the hand-built tokenizer, and a second call adds nothing.
    let c = multi_turn();
    assert_eq!(
        render(&t, &c, ChatTemplate::ChatMl).unwrap(),
        render(chatml(), &c, ChatTemplate::ChatMl).unwrap()
    );
    assert_eq!(
        add_chatml_specials(&t).unwrap().vocab_size(),
        t.vocab_size()
    );
    assert_eq!(t.encode("hello there"), b.encode("hello there"));
}

#[test]
fn invalid_conversations_are_errors() {
    let reason = |e: Error| match e {
        Error::InvalidConversation { reason } => reason,
        other => panic!("expected InvalidConversation, got {other:?}"),
    };
    for template in ChatTemplate::ALL {
        let tok = tok_for(template);
        let r = reason(render(tok, &Conversation::default(), template).unwrap_err());
        assert!(r.contains("no messages"), "{r}");
        let r = reason(render_prompt(tok, &[], template).unwrap_err());
        assert!(r.contains("no messages"), "{r}");
        // A training conversation must end with the assistant; a prompt with the user.
        let ends_user = Conversation::new(vec![Message::user("hi")]);
        reason(render(tok, &ends_user, template).unwrap_err());
        let ends_asst = [Message::user("hi"), Message::assistant("hello")];
        reason(render_prompt(tok, &ends_asst, template).unwrap_err());
        // Out of order, and empty content.
        let two_users = Conversation::new(vec![
            Message::user("a"),
            Message::user("b"),
            Message::assistant("c"),
        ]);
        reason(render(tok, &two_users, template).unwrap_err());
        let empty = Conversation::new(vec![Message::user("a"), Message::assistant("  ")]);
        reason(render(tok, &empty, template).unwrap_err());
    }
}

#[test]
fn template_serde_names() {
    assert_eq!(ChatTemplate::default(), ChatTemplate::Native);
    for (t, name) in [
        (ChatTemplate::Native, "native"),
        (ChatTemplate::ChatMl, "chatml"),
    ] {
        assert_eq!(serde_json::to_string(&t).unwrap(), format!("\"{name}\""));
        assert_eq!(t.name(), name);
        let back: ChatTemplate = serde_json::from_str(&format!("\"{name}\"")).unwrap();
        assert_eq!(back, t);
    }
    assert!(serde_json::from_str::<ChatTemplate>("\"ChatML\"").is_err());
}

/// Message contents likely to interact with merges, whitespace and special-token text.
fn content() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        any::<String>(),
        "[a-z ]{0,12}",
        Just("<|assistant_end|>".to_string()),
        Just("<|im_end|>".to_string()),
        Just("<|im_start|>".to_string()),
        Just("<|user_start|>".to_string()),
        Just("<|".to_string()),
        Just("\n".to_string()),
        Just("  ".to_string()),
        Just("😀日本語".to_string()),
    ];
    proptest::collection::vec(piece, 1..6)
        .prop_map(|v| v.concat())
        .prop_filter("content must not be blank", |s| !s.trim().is_empty())
}

fn conversation() -> impl Strategy<Value = Conversation> {
    (
        proptest::option::of(content()),
        proptest::collection::vec((content(), content()), 1..4),
    )
        .prop_map(|(system, turns)| {
            let mut messages: Vec<Message> = system.into_iter().map(Message::system).collect();
            for (u, a) in turns {
                messages.push(Message::user(u));
                messages.push(Message::assistant(a));
            }
            Conversation::new(messages)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn random_conversations_render_exactly(c in conversation()) {
        check_rendering(&c, ChatTemplate::Native);
        check_rendering(&c, ChatTemplate::ChatMl);
    }
}
