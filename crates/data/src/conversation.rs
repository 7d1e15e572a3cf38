//! Conversations for supervised fine-tuning: the TRL "conversational" record.
//!
//! # File format
//!
//! JSONL, one conversation a line, field names as in TRL and the OpenAI chat API:
//!
//! ```text
//! {"messages": [{"role": "system", "content": "You are a helpful assistant."},
//!               {"role": "user", "content": "Where does Druk live?"},
//!               {"role": "assistant", "content": "Druk lives in Flythholm."}]}
//! ```
//!
//! (one line in the file). Other top-level fields of a record (`"id"`, `"source"`, ... as TRL
//! datasets carry) are ignored; inside a message only `"role"` and `"content"` are allowed, so
//! a misspelt key (`"contnet"`) or an unsupported feature (`"name"`, `"tool_calls"`, content as
//! a list of parts) is an error rather than silently lost text. Blank lines are skipped.
//!
//! # Rules ([`Conversation::validate`])
//!
//! At least one message; a system message only as the first; after it the roles alternate
//! user, assistant, user, ... starting with the user; the last message is the assistant's (the
//! reply being trained on); no content is empty or only whitespace.
//!
//! # Bad records
//!
//! [`read_conversations`] fails on the first bad record with `file:line` and what is wrong
//! (invalid UTF-8, bad JSON, not an object, missing `"messages"`, `"messages"` not an array, a
//! message that is not an object or has an unknown field, a missing or unknown role, content
//! missing or not a string, empty content, messages out of order). With
//! [`ReadOptions::skip_bad_records`] it skips such records and counts them in
//! [`ReadStats::skipped_bad`] instead. Nothing is dropped silently.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::atomic::write_atomic;
pub use crate::corpus::{ReadOptions, ReadStats};
use crate::error::{Error, Result};

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions for the assistant, before the conversation.
    System,
    /// The person talking to the assistant.
    User,
    /// The model.
    Assistant,
}

impl Role {
    /// "system" / "user" / "assistant", as written in files.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }

    /// The role named `s` (exactly as written in files).
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "system" => Some(Role::System),
            "user" => Some(Role::User),
            "assistant" => Some(Role::Assistant),
            _ => None,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// One message: `{"role": ..., "content": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    /// Who wrote it.
    pub role: Role,
    /// The text.
    pub content: String,
}

impl Message {
    /// A message from `role`.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
        }
    }

    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new(Role::System, content)
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new(Role::User, content)
    }

    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new(Role::Assistant, content)
    }
}

/// A conversation: the TRL record `{"messages": [...]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Conversation {
    /// The messages in order.
    pub messages: Vec<Message>,
}

impl Conversation {
    /// A conversation of these messages (not validated).
    pub fn new(messages: Vec<Message>) -> Self {
        Self { messages }
    }

    /// Checks the rules of a training conversation (module docs): non-empty, system only
    /// first, user/assistant alternating from the user, ending with the assistant, no empty
    /// content. The error names the first offending message by its 0-based index.
    pub fn validate(&self) -> Result<()> {
        check_messages(&self.messages, Role::Assistant)
            .map_err(|reason| Error::InvalidConversation { reason })
    }

    /// The final assistant message's content, if the conversation ends with one.
    pub fn reply(&self) -> Option<&str> {
        match self.messages.last() {
            Some(m) if m.role == Role::Assistant => Some(&m.content),
            _ => None,
        }
    }

    /// Every message but a final assistant reply: what a model is asked to continue.
    pub fn prompt(&self) -> &[Message] {
        match self.messages.split_last() {
            Some((last, rest)) if last.role == Role::Assistant => rest,
            _ => &self.messages,
        }
    }
}

/// Checks the rules for a prompt: as [`Conversation::validate`], but the last message must be
/// the user's (the turn a model is asked to answer).
pub fn validate_prompt(messages: &[Message]) -> Result<()> {
    check_messages(messages, Role::User).map_err(|reason| Error::InvalidConversation { reason })
}

/// The ordering and content rules, with `last` the role the last message must have.
fn check_messages(messages: &[Message], last: Role) -> std::result::Result<(), String> {
    if messages.is_empty() {
        return Err("no messages".into());
    }
    let mut expect = Role::User;
    for (i, m) in messages.iter().enumerate() {
        if m.content.trim().is_empty() {
            return Err(format!("message {i} ({}): content is empty", m.role));
        }
        match m.role {
            Role::System if i == 0 => continue,
            Role::System => {
                return Err(format!(
                    "message {i}: a system message is only allowed first"
                ))
            }
            role if role != expect => {
                let a = if expect == Role::Assistant { "an" } else { "a" };
                return Err(format!(
                    "message {i}: expected {a} {expect} message, found {role}"
                ));
            }
            _ => {}
        }
        expect = match expect {
            Role::User => Role::Assistant,
            _ => Role::User,
        };
    }
    let got = messages[messages.len() - 1].role;
    if got != last {
        return Err(format!(
            "the last message must be from the {last}, found {got}"
        ));
    }
    Ok(())
}

/// Reads conversations from `paths` (JSONL files of any extension, or directories, whose
/// `.jsonl` files are read in sorted name order), in order. See the module docs for the format
/// and the bad-record rules. In the returned stats `documents` counts conversations, `bytes`
/// the UTF-8 bytes of all their contents, and `skipped_empty` is always 0 (a record with no
/// messages is a bad record; blank lines are not records).
pub fn read_conversations(
    paths: &[PathBuf],
    opts: &ReadOptions,
) -> Result<(Vec<Conversation>, ReadStats)> {
    let mut out = Vec::new();
    let mut stats = ReadStats::default();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if meta.is_dir() {
            let files = jsonl_files(path)?;
            if files.is_empty() {
                return Err(Error::NoInputFiles { path: path.clone() });
            }
            for f in files {
                read_file(&f, opts, &mut out, &mut stats)?;
            }
        } else {
            read_file(path, opts, &mut out, &mut stats)?;
        }
    }
    Ok((out, stats))
}

/// Writes `convs` to `path` as JSONL, one conversation a line, atomically. Every conversation
/// is validated first, so the file reads back with [`read_conversations`] unchanged.
pub fn write_conversations(path: &Path, convs: &[Conversation]) -> Result<()> {
    let mut text = String::new();
    for (index, c) in convs.iter().enumerate() {
        if let Err(Error::InvalidConversation { reason }) = c.validate() {
            return Err(Error::UnwritableConversation { index, reason });
        }
        let line = serde_json::to_string(c).map_err(|e| Error::UnwritableConversation {
            index,
            reason: e.to_string(),
        })?;
        text.push_str(&line);
        text.push('\n');
    }
    write_atomic(path, text.as_bytes()).map_err(|e| Error::io(path, e))
}

/// Reads every record of the JSONL `paths` (files, or directories whose `.jsonl` files are read
/// in sorted name order) with `parse(line_bytes, path, line, byte_offset)`, which returns
/// `Ok(None)` for a blank line. Bad records fail or are skipped and counted as `opts` says;
/// `size` gives the bytes a record counts in [`ReadStats::bytes`]. Shared by the readers of
/// rankings and prompt sets.
pub(crate) fn read_jsonl_records<T>(
    paths: &[PathBuf],
    opts: &ReadOptions,
    mut parse: impl FnMut(&[u8], &Path, u64, u64) -> Result<Option<T>>,
    size: impl Fn(&T) -> usize,
) -> Result<(Vec<T>, ReadStats)> {
    let mut out = Vec::new();
    let mut stats = ReadStats::default();
    let mut files = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if meta.is_dir() {
            let inside = jsonl_files(path)?;
            if inside.is_empty() {
                return Err(Error::NoInputFiles { path: path.clone() });
            }
            files.extend(inside);
        } else {
            files.push(path.clone());
        }
    }
    for path in &files {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let input = BufReader::with_capacity(1 << 16, file);
        crate::corpus::for_each_line(path, input, |buf, line, line_offset| {
            match parse(buf, path, line, line_offset) {
                Ok(Some(rec)) => {
                    stats.documents += 1;
                    stats.bytes += size(&rec);
                    out.push(rec);
                }
                Ok(None) => {} // blank line
                Err(_) if opts.skip_bad_records => stats.skipped_bad += 1,
                Err(err) => return Err(err),
            }
            Ok(())
        })?;
    }
    Ok((out, stats))
}

/// One JSONL line as a JSON object: `Ok(None)` for a blank line; invalid UTF-8, bad JSON and
/// anything but an object are errors naming the file and line.
pub(crate) fn json_object_line(
    buf: &[u8],
    path: &Path,
    line: u64,
    line_offset: u64,
) -> Result<Option<serde_json::Map<String, Value>>> {
    let text = std::str::from_utf8(buf).map_err(|e| Error::InvalidUtf8 {
        path: path.to_path_buf(),
        line,
        offset: line_offset + e.valid_up_to() as u64,
    })?;
    let text = text.strip_suffix('\n').unwrap_or(text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    if text.trim().is_empty() {
        return Ok(None);
    }
    let bad_json = |message: String| Error::BadJson {
        path: path.to_path_buf(),
        line,
        message,
    };
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(Some(map)),
        Ok(_) => Err(bad_json("expected a JSON object".into())),
        Err(e) => Err(bad_json(e.to_string())),
    }
}

/// A prompt given as a string (one user message) or as a list of messages, checked by
/// [`validate_prompt`]; the error says what is wrong, naming `field`.
pub(crate) fn prompt_from_json(field: &str, v: Value) -> std::result::Result<Vec<Message>, String> {
    let messages = match v {
        Value::String(s) => vec![Message::user(s)],
        Value::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| message_from_json(i, v))
            .collect::<std::result::Result<Vec<_>, String>>()
            .map_err(|e| format!("\"{field}\": {e}"))?,
        v => {
            return Err(format!(
                "\"{field}\" is {}, expected a string or an array of messages",
                json_type(&v)
            ))
        }
    };
    check_messages(&messages, Role::User).map_err(|e| format!("\"{field}\": {e}"))?;
    Ok(messages)
}

/// The `.jsonl` files directly inside `dir`, sorted by name.
pub(crate) fn jsonl_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if path.is_file() && path.extension().is_some_and(|x| x == "jsonl") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn read_file(
    path: &Path,
    opts: &ReadOptions,
    out: &mut Vec<Conversation>,
    stats: &mut ReadStats,
) -> Result<()> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let input = BufReader::with_capacity(1 << 16, file);
    crate::corpus::for_each_line(path, input, |buf, line, line_offset| {
        match parse_line(buf, path, line, line_offset) {
            Ok(Some(conv)) => {
                stats.documents += 1;
                stats.bytes += conv.messages.iter().map(|m| m.content.len()).sum::<usize>();
                out.push(conv);
            }
            Ok(None) => {} // blank line
            Err(_) if opts.skip_bad_records => stats.skipped_bad += 1,
            Err(err) => return Err(err),
        }
        Ok(())
    })
}

/// The top level of a record: only `messages` is looked at; other fields are skipped unparsed.
#[derive(Deserialize)]
struct Record {
    /// `None` when absent; `Some(Value::Null)` for `"messages": null`.
    #[serde(default, deserialize_with = "present")]
    messages: Option<Value>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

pub(crate) fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Parses one line: `Ok(None)` for a blank line.
fn parse_line(
    buf: &[u8],
    path: &Path,
    line: u64,
    line_offset: u64,
) -> Result<Option<Conversation>> {
    let text = std::str::from_utf8(buf).map_err(|e| Error::InvalidUtf8 {
        path: path.to_path_buf(),
        line,
        offset: line_offset + e.valid_up_to() as u64,
    })?;
    let text = text.strip_suffix('\n').unwrap_or(text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    if text.trim().is_empty() {
        return Ok(None);
    }
    let bad_json = |message: String| Error::BadJson {
        path: path.to_path_buf(),
        line,
        message,
    };
    // serde would also accept `[...]` for a one-field struct; a record must be an object.
    if !text.trim_start().starts_with('{') {
        return Err(bad_json("expected a JSON object".into()));
    }
    let record: Record = serde_json::from_str(text).map_err(|e| bad_json(e.to_string()))?;
    let bad = |reason: String| Error::BadConversation {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let messages = match record.messages {
        None => return Err(bad("record has no \"messages\" field".into())),
        Some(Value::Array(items)) => items,
        Some(v) => {
            return Err(bad(format!(
                "\"messages\" is {}, expected an array",
                json_type(&v)
            )))
        }
    };
    let messages = messages
        .into_iter()
        .enumerate()
        .map(|(i, v)| message_from_json(i, v))
        .collect::<std::result::Result<Vec<_>, String>>()
        .map_err(bad)?;
    let conv = Conversation { messages };
    check_messages(&conv.messages, Role::Assistant).map_err(bad)?;
    Ok(Some(conv))
}

/// Message `i` of a record, or what is wrong with it.
pub(crate) fn message_from_json(i: usize, v: Value) -> std::result::Result<Message, String> {
    let mut map = match v {
        Value::Object(map) => map,
        v => {
            return Err(format!(
                "message {i} is {}, expected an object",
                json_type(&v)
            ))
        }
    };
    let role = map.remove("role");
    let content = map.remove("content");
    if let Some(key) = map.keys().next() {
        return Err(format!(
            "message {i}: unknown field \"{key}\" (a message has only \"role\" and \"content\")"
        ));
    }
    let role = match role {
        None => return Err(format!("message {i} has no \"role\"")),
        Some(Value::String(r)) => Role::parse(&r).ok_or_else(|| {
            format!("message {i}: unknown role \"{r}\" (expected system, user or assistant)")
        })?,
        Some(v) => {
            return Err(format!(
                "message {i}: \"role\" is {}, expected a string",
                json_type(&v)
            ))
        }
    };
    let content = match content {
        None => return Err(format!("message {i} has no \"content\"")),
        Some(Value::String(c)) => c,
        Some(v) => {
            return Err(format!(
                "message {i}: \"content\" is {}, expected a string",
                json_type(&v)
            ))
        }
    };
    Ok(Message { role, content })
}

#[cfg(test)]
mod tests;
