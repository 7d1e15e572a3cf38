//! Prompt sets: what PPO rollouts, labelling sessions and evaluations ask a model.
//!
//! # File format
//!
//! JSONL, one record a line:
//!
//! ```text
//! {"prompt": [{"role": "user", "content": "What is 7 + 5?"}],
//!  "reference": "7 + 5 = 12.",
//!  "task": {"kind": "arithmetic", "answer": {"number": 12}}}
//! ```
//!
//! (one line in the file). `prompt` is a list of messages ending with the user's turn (the
//! rules of [`validate_prompt`]) or a string, read as one user message. `reference` (optional)
//! is a good reply, used to centre the reward model and to bound reply length in the gold
//! judge; `task` (optional) is what the built-in world's judge needs to grade a reply: the
//! [`TaskKind`] and the [`Answer`]. Records are always written with the prompt as messages.
//!
//! # Bad records
//!
//! [`read_prompts`] fails on the first bad record with `file:line` and what is wrong (invalid
//! UTF-8, bad JSON, not an object, no `prompt`, a bad prompt, a `reference` that is not a
//! string or is empty, a `task` that does not parse, an unknown field — a misspelt
//! `"refrence"` would otherwise silently lose the reference). With
//! [`ReadOptions::skip_bad_records`] it skips such records and counts them in
//! [`ReadStats::skipped_bad`]. Blank lines are not records.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::atomic::write_atomic;
use crate::conversation::{
    json_object_line, json_type, prompt_from_json, read_jsonl_records, validate_prompt,
    Conversation, Message,
};
pub use crate::corpus::{ReadOptions, ReadStats};
use crate::error::{Error, Result};
use crate::world::{Answer, Task, TaskKind};

/// The assistant message that ends the conversation of [`PromptRecord::task`] when a record
/// has no reference (a conversation may not end in an empty message). The gold judge reads it
/// as "no reference".
pub const NO_REFERENCE: &str = "(no reference)";

/// What the gold judge needs to grade a reply: a task's kind and answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// The kind of task.
    pub kind: TaskKind,
    /// What a correct reply must contain.
    pub answer: Answer,
}

/// One prompt (module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptRecord {
    /// The conversation so far; ends with a user message.
    pub prompt: Vec<Message>,
    /// A good reply, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The task, for prompts of the built-in world.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskSpec>,
}

impl PromptRecord {
    /// Checks the prompt and that a reference, if any, is not empty.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if let Err(e) = validate_prompt(&self.prompt) {
            return Err(match e {
                Error::InvalidConversation { reason } => format!("\"prompt\": {reason}"),
                e => format!("\"prompt\": {e}"),
            });
        }
        if self.reference.as_ref().is_some_and(|r| r.trim().is_empty()) {
            return Err("\"reference\" is empty".into());
        }
        Ok(())
    }

    /// The world task this prompt asks, for the gold judge: the conversation is the prompt
    /// plus the reference as the assistant's reply ([`NO_REFERENCE`] when there is none).
    /// `None` when the record has no task.
    pub fn task(&self) -> Option<Task> {
        let spec = self.task.as_ref()?;
        let reply = self.reference.as_deref().unwrap_or(NO_REFERENCE);
        let mut messages = self.prompt.clone();
        messages.push(Message::assistant(reply));
        Some(Task {
            kind: spec.kind,
            conversation: Conversation::new(messages),
            answer: spec.answer.clone(),
        })
    }

    /// The UTF-8 bytes of the prompt's and the reference's text.
    fn text_bytes(&self) -> usize {
        self.prompt.iter().map(|m| m.content.len()).sum::<usize>()
            + self.reference.as_ref().map_or(0, String::len)
    }
}

/// Reads prompt records from `paths` (JSONL files of any extension, or directories, whose
/// `.jsonl` files are read in sorted name order), in order. In the returned stats `documents`
/// counts records, `bytes` the UTF-8 bytes of their prompts and references, and
/// `skipped_empty` is always 0.
pub fn read_prompts(
    paths: &[PathBuf],
    opts: &ReadOptions,
) -> Result<(Vec<PromptRecord>, ReadStats)> {
    read_jsonl_records(paths, opts, parse_line, PromptRecord::text_bytes)
}

/// Writes `recs` to `path` as JSONL, one record a line, atomically. Every record is validated
/// first, so the file reads back with [`read_prompts`] unchanged.
pub fn write_prompts(path: &Path, recs: &[PromptRecord]) -> Result<()> {
    let mut text = String::new();
    for (index, rec) in recs.iter().enumerate() {
        rec.validate()
            .map_err(|reason| Error::UnwritablePrompt { index, reason })?;
        let line = serde_json::to_string(rec).map_err(|e| Error::UnwritablePrompt {
            index,
            reason: e.to_string(),
        })?;
        text.push_str(&line);
        text.push('\n');
    }
    write_atomic(path, text.as_bytes()).map_err(|e| Error::io(path, e))
}

/// Parses one line: `Ok(None)` for a blank line.
fn parse_line(
    buf: &[u8],
    path: &Path,
    line: u64,
    line_offset: u64,
) -> Result<Option<PromptRecord>> {
    let Some(map) = json_object_line(buf, path, line, line_offset)? else {
        return Ok(None);
    };
    let rec = record_from_json(map)
        .and_then(|rec| rec.validate().map(|()| rec))
        .map_err(|reason| Error::BadPrompt {
            path: path.to_path_buf(),
            line,
            reason,
        })?;
    Ok(Some(rec))
}

fn record_from_json(mut map: Map<String, Value>) -> std::result::Result<PromptRecord, String> {
    const FIELDS: [&str; 3] = ["prompt", "reference", "task"];
    if let Some(key) = map.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(format!(
            "unknown field \"{key}\" (a prompt record has only \"prompt\", \"reference\" and \
             \"task\")"
        ));
    }
    let prompt = map
        .remove("prompt")
        .ok_or_else(|| "record has no \"prompt\" field".to_string())?;
    let prompt = prompt_from_json("prompt", prompt)?;
    let reference = match map.remove("reference") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(v) => {
            return Err(format!(
                "\"reference\" is {}, expected a string",
                json_type(&v)
            ))
        }
    };
    let task = match map.remove("task") {
        None | Some(Value::Null) => None,
        Some(v) => Some(serde_json::from_value(v).map_err(|e| format!("\"task\": {e}"))?),
    };
    Ok(PromptRecord {
        prompt,
        reference,
        task,
    })
}

#[cfg(test)]
mod tests;
