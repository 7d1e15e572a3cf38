//! Rankings of K responses to one prompt, the reward model's training data (InstructGPT's
//! K-wise comparisons), and the append-only file a labeller writes them to.
//!
//! # File format
//!
//! JSONL, one record a line:
//!
//! ```text
//! {"prompt": [{"role": "user", "content": "Where does Druk live?"}],
//!  "responses": ["Druk lives in Flythholm.", "I don't know.", "Druk lives in Vemora."],
//!  "ranking": [0, 1, 2]}
//! ```
//!
//! (one line in the file). `ranking` lists the response indices best first; a group of
//! indices is a tie (`[[0, 2], 1]`: 0 and 2 equally good, both better than 1). An optional
//! `flagged` lists responses a labeller marked as harmful. The prompt is a list of messages
//! (the rules of [`validate_prompt`]: it ends with the user's turn) or a string, read as one
//! user message.
//!
//! The pairwise preference record of TRL, `{"prompt": ..., "chosen": ..., "rejected": ...}`,
//! is read as the K = 2 ranking `responses = [chosen, rejected]`, `ranking = [0, 1]`; `chosen`
//! and `rejected` are strings, or (TRL's conversational form) a list holding one assistant
//! message. The implicit-prompt form (no `prompt`, the prompt repeated inside `chosen`) is not
//! read. Records are always written in the K-wise form.
//!
//! # Rules ([`RankingRecord::validate`])
//!
//! A valid prompt; K = 2..=9 responses ([`MAX_K`]), none empty or only whitespace; the
//! ranking names every response exactly once (no index missing, repeated or out of range, no
//! empty group); flagged indices in range and not repeated. A ranking with everything tied is
//! valid (a labeller, or the gold judge, may see no difference) but states no preference: it
//! has no ordered pairs, and a trainer must skip it rather than divide by its pair count. Identical responses are allowed (a sampler can
//! produce the same text twice); [`RankingRecord::duplicate_responses`] lists them. When they
//! sit in different groups their pair is a contradiction the model cannot learn (one text gets
//! one score), and its loss stays at log 2 without moving the weights. The pairwise form is
//! stricter: `"chosen"` equal to `"rejected"` is an error, since that record is nothing but
//! such a pair.
//!
//! # Bad records
//!
//! [`read_rankings`] fails on the first bad record with `file:line` and what is wrong (invalid
//! UTF-8, bad JSON — including `NaN`, which JSON does not have —, not an object, an unknown
//! field, a missing or mistyped field, an index that is not a non-negative integer, a record
//! that breaks the rules above). With [`ReadOptions::skip_bad_records`] it skips such records
//! and counts them in [`ReadStats::skipped_bad`]. Blank lines are not records.
//!
//! # Durable appends ([`RankingWriter`])
//!
//! A labelling session appends one validated record a line and `fdatasync`s after each, so an
//! answer that was acknowledged survives a crash. A crash can leave only the last line torn
//! (one `write` of `record + "\n"` cut short). On open the writer reads the existing records;
//! bytes after the last newline are a complete record (kept, and given its newline) when they
//! parse as a valid record, else a torn one that is truncated away
//! ([`RankingWriter::truncated_bytes`] says how much). A bad line that ends in a newline is not
//! a torn write but a damaged file, and opening fails with its line number.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::atomic::sync_dir;
use crate::conversation::{
    json_object_line, json_type, prompt_from_json, read_jsonl_records, validate_prompt, Message,
    Role,
};
pub use crate::corpus::{ReadOptions, ReadStats};
use crate::error::{Error, Result};

/// Most responses a ranking may hold (InstructGPT ranked K = 4 to 9).
pub const MAX_K: usize = 9;

/// One place in a ranking: a single response, or several tied ones.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RankGroup {
    /// One response (its index).
    One(usize),
    /// Equally good responses (their indices).
    Tie(Vec<usize>),
}

impl RankGroup {
    /// The response indices in this group.
    pub fn indices(&self) -> Vec<usize> {
        match self {
            RankGroup::One(i) => vec![*i],
            RankGroup::Tie(v) => v.clone(),
        }
    }
}

/// K responses to one prompt, ranked best first (module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RankingRecord {
    /// The conversation so far; ends with a user message.
    pub prompt: Vec<Message>,
    /// The K responses (2..=9), none empty.
    pub responses: Vec<String>,
    /// Response indices, best first; a group is a tie. Every index exactly once.
    pub ranking: Vec<RankGroup>,
    /// Responses a labeller flagged as harmful.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flagged: Vec<usize>,
}

impl RankingRecord {
    /// Checks the rules of the module docs; the error says what is wrong.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if let Err(e) = validate_prompt(&self.prompt) {
            return Err(match e {
                Error::InvalidConversation { reason } => format!("\"prompt\": {reason}"),
                e => format!("\"prompt\": {e}"),
            });
        }
        let k = self.responses.len();
        if !(2..=MAX_K).contains(&k) {
            return Err(format!(
                "{k} responses; a ranking needs 2 to {MAX_K} (K = 2..={MAX_K})"
            ));
        }
        if let Some(i) = self.responses.iter().position(|r| r.trim().is_empty()) {
            return Err(format!("response {i} is empty"));
        }
        let mut seen = vec![false; k];
        for (g, group) in self.ranking.iter().enumerate() {
            let indices = group.indices();
            if indices.is_empty() {
                return Err(format!("ranking[{g}] is an empty group"));
            }
            for i in indices {
                if i >= k {
                    return Err(format!(
                        "ranking[{g}]: index {i} is out of range for {k} responses"
                    ));
                }
                if std::mem::replace(&mut seen[i], true) {
                    return Err(format!("response {i} appears twice in the ranking"));
                }
            }
        }
        let missing: Vec<String> = (0..k)
            .filter(|&i| !seen[i])
            .map(|i| i.to_string())
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "the ranking leaves out response {} (every response must be ranked once)",
                missing.join(", ")
            ));
        }
        let mut flagged = vec![false; k];
        for &i in &self.flagged {
            if i >= k {
                return Err(format!(
                    "flagged index {i} is out of range for {k} responses"
                ));
            }
            if std::mem::replace(&mut flagged[i], true) {
                return Err(format!("response {i} is flagged twice"));
            }
        }
        Ok(())
    }

    /// K, the number of responses.
    pub fn k(&self) -> usize {
        self.responses.len()
    }

    /// The ranking as groups of indices, best first.
    pub fn groups(&self) -> Vec<Vec<usize>> {
        self.ranking.iter().map(RankGroup::indices).collect()
    }

    /// Every `(better, worse)` pair of responses in different groups, better group first:
    /// C(K, 2) pairs when nothing is tied, fewer with ties (tied pairs are skipped).
    pub fn ordered_pairs(&self) -> Vec<(usize, usize)> {
        let groups = self.groups();
        let mut pairs = Vec::new();
        for (g, better) in groups.iter().enumerate() {
            for worse in &groups[g + 1..] {
                for &b in better {
                    for &w in worse {
                        pairs.push((b, w));
                    }
                }
            }
        }
        pairs
    }

    /// The group position of each response (0 = best), indexed by response. For a record
    /// that does not validate, a response the ranking leaves out gets `usize::MAX`.
    pub fn rank_of(&self) -> Vec<usize> {
        let mut rank = vec![usize::MAX; self.k()];
        for (g, group) in self.ranking.iter().enumerate() {
            for i in group.indices() {
                if let Some(r) = rank.get_mut(i) {
                    *r = g;
                }
            }
        }
        rank
    }

    /// Pairs `(i, j)`, `i < j`, of responses with identical text (allowed; module docs).
    pub fn duplicate_responses(&self) -> Vec<(usize, usize)> {
        let r = &self.responses;
        let mut out = Vec::new();
        for i in 0..r.len() {
            for j in i + 1..r.len() {
                if r[i] == r[j] {
                    out.push((i, j));
                }
            }
        }
        out
    }

    /// The UTF-8 bytes of the prompt's and the responses' text.
    fn text_bytes(&self) -> usize {
        self.prompt.iter().map(|m| m.content.len()).sum::<usize>()
            + self.responses.iter().map(String::len).sum::<usize>()
    }
}

/// Reads ranking records (K-wise or pairwise; module docs) from `paths` (JSONL files of any
/// extension, or directories, whose `.jsonl` files are read in sorted name order), in order.
/// In the returned stats `documents` counts records, `bytes` the UTF-8 bytes of their prompts
/// and responses, and `skipped_empty` is always 0.
pub fn read_rankings(
    paths: &[PathBuf],
    opts: &ReadOptions,
) -> Result<(Vec<RankingRecord>, ReadStats)> {
    read_jsonl_records(paths, opts, parse_line, RankingRecord::text_bytes)
}

/// Parses one line: `Ok(None)` for a blank line.
fn parse_line(
    buf: &[u8],
    path: &Path,
    line: u64,
    line_offset: u64,
) -> Result<Option<RankingRecord>> {
    let Some(map) = json_object_line(buf, path, line, line_offset)? else {
        return Ok(None);
    };
    let rec = record_from_json(map)
        .and_then(|rec| rec.validate().map(|()| rec))
        .map_err(|reason| Error::BadRanking {
            path: path.to_path_buf(),
            line,
            reason,
        })?;
    Ok(Some(rec))
}

const KWISE_FIELDS: [&str; 4] = ["prompt", "responses", "ranking", "flagged"];
const PAIR_FIELDS: [&str; 3] = ["prompt", "chosen", "rejected"];

/// A record's fields, K-wise or pairwise (not yet validated, except `chosen != rejected`).
fn record_from_json(mut map: Map<String, Value>) -> std::result::Result<RankingRecord, String> {
    let kwise = map.contains_key("responses") || map.contains_key("ranking");
    let pairwise = map.contains_key("chosen") || map.contains_key("rejected");
    let fields: &[&str] =
        match (kwise, pairwise) {
            (true, true) => return Err(
                "record mixes the K-wise fields (\"responses\", \"ranking\") with the pairwise \
                 ones (\"chosen\", \"rejected\")"
                    .into(),
            ),
            (true, false) => &KWISE_FIELDS,
            (false, true) => &PAIR_FIELDS,
            (false, false) => {
                return Err(
                    "record has neither \"responses\" and \"ranking\" nor \"chosen\" and \
                 \"rejected\""
                        .into(),
                )
            }
        };
    if let Some(key) = map.keys().find(|k| !fields.contains(&k.as_str())) {
        return Err(format!(
            "unknown field \"{key}\" (a {} record has only {})",
            if kwise { "ranking" } else { "pairwise" },
            fields
                .iter()
                .map(|f| format!("\"{f}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let mut take = |field: &str| {
        map.remove(field)
            .ok_or_else(|| format!("record has no \"{field}\" field"))
    };
    let prompt = prompt_from_json("prompt", take("prompt")?)?;
    if kwise {
        let responses = match take("responses")? {
            Value::Array(items) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s),
                    v => Err(format!(
                        "\"responses\"[{i}] is {}, expected a string",
                        json_type(&v)
                    )),
                })
                .collect::<std::result::Result<Vec<_>, String>>()?,
            v => {
                return Err(format!(
                    "\"responses\" is {}, expected an array of strings",
                    json_type(&v)
                ))
            }
        };
        let ranking = match take("ranking")? {
            Value::Array(items) => items
                .into_iter()
                .enumerate()
                .map(|(g, v)| group_from_json(g, v))
                .collect::<std::result::Result<Vec<_>, String>>()?,
            v => {
                return Err(format!(
                    "\"ranking\" is {}, expected an array of indices and groups",
                    json_type(&v)
                ))
            }
        };
        let flagged = match take("flagged") {
            Err(_) => Vec::new(),
            Ok(Value::Array(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| index_from_json(&format!("\"flagged\"[{i}]"), v))
                .collect::<std::result::Result<Vec<_>, String>>()?,
            Ok(v) => {
                return Err(format!(
                    "\"flagged\" is {}, expected an array of indices",
                    json_type(&v)
                ))
            }
        };
        Ok(RankingRecord {
            prompt,
            responses,
            ranking,
            flagged,
        })
    } else {
        let chosen = response_from_json("chosen", take("chosen")?)?;
        let rejected = response_from_json("rejected", take("rejected")?)?;
        if chosen == rejected {
            return Err("\"chosen\" and \"rejected\" are the same text".into());
        }
        Ok(RankingRecord {
            prompt,
            responses: vec![chosen, rejected],
            ranking: vec![RankGroup::One(0), RankGroup::One(1)],
            flagged: Vec::new(),
        })
    }
}

/// A response index: a non-negative integer (not `1.0`, not `-1`).
fn index_from_json(what: &str, v: Value) -> std::result::Result<usize, String> {
    match &v {
        Value::Number(n) => n
            .as_u64()
            .and_then(|i| usize::try_from(i).ok())
            .ok_or_else(|| format!("{what} is {n}, not a response index")),
        v => Err(format!(
            "{what} is {}, expected a response index",
            json_type(v)
        )),
    }
}

/// `ranking[g]`: an index, or an array of indices (a tie).
fn group_from_json(g: usize, v: Value) -> std::result::Result<RankGroup, String> {
    match v {
        Value::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(j, v)| index_from_json(&format!("\"ranking\"[{g}][{j}]"), v))
            .collect::<std::result::Result<Vec<_>, String>>()
            .map(RankGroup::Tie),
        v => index_from_json(&format!("\"ranking\"[{g}]"), v).map(RankGroup::One),
    }
}

/// `chosen` / `rejected`: a string, or a list of exactly one assistant message.
fn response_from_json(field: &str, v: Value) -> std::result::Result<String, String> {
    match v {
        Value::String(s) => Ok(s),
        Value::Array(mut items) if items.len() == 1 => {
            let m = crate::conversation::message_from_json(0, items.remove(0))
                .map_err(|e| format!("\"{field}\": {e}"))?;
            if m.role != Role::Assistant {
                return Err(format!(
                    "\"{field}\": expected an assistant message, found {}",
                    m.role
                ));
            }
            Ok(m.content)
        }
        Value::Array(items) => Err(format!(
            "\"{field}\" holds {} messages, expected one assistant message",
            items.len()
        )),
        v => Err(format!(
            "\"{field}\" is {}, expected a string",
            json_type(&v)
        )),
    }
}

/// Appends ranking records to a JSONL file durably (module docs).
#[derive(Debug)]
pub struct RankingWriter {
    file: File,
    path: PathBuf,
    /// Bytes in the file (all complete lines).
    len: u64,
    /// Records in the file.
    records: usize,
    /// Bytes of a torn last record dropped on open.
    truncated: u64,
}

impl RankingWriter {
    /// Opens (or creates, with its directory) the ranking file at `path` for appending, and
    /// returns the records already in it. A torn last line is truncated away; a bad complete
    /// line is an error naming its line (module docs).
    pub fn open(path: &Path) -> Result<(RankingWriter, Vec<RankingRecord>)> {
        let io = |e| Error::io(path, e);
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let existed = path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io)?;
        if !existed {
            sync_dir(dir).map_err(io)?;
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;

        let mut records = Vec::new();
        let (mut offset, mut line) = (0usize, 0u64);
        let mut len = bytes.len() as u64;
        let mut truncated = 0u64;
        while offset < bytes.len() {
            line += 1;
            let rest = &bytes[offset..];
            match rest.iter().position(|&b| b == b'\n') {
                Some(nl) => {
                    let buf = &rest[..=nl];
                    if let Some(rec) = parse_line(buf, path, line, offset as u64)? {
                        records.push(rec);
                    }
                    offset += nl + 1;
                }
                None => {
                    // The last line has no newline: a complete record or a torn write.
                    match parse_line(rest, path, line, offset as u64) {
                        Ok(Some(rec)) => {
                            records.push(rec);
                            file.write_all(b"\n").map_err(io)?;
                            len += 1;
                        }
                        Ok(None) | Err(_) => {
                            truncated = rest.len() as u64;
                            len = offset as u64;
                            file.set_len(len).map_err(io)?;
                        }
                    }
                    file.sync_all().map_err(io)?;
                    break;
                }
            }
        }
        let writer = RankingWriter {
            file,
            path: path.to_path_buf(),
            len,
            records: records.len(),
            truncated,
        };
        Ok((writer, records))
    }

    /// Validates `rec`, writes it as one line and syncs the file's data to disk. If the write
    /// fails, the file is cut back to its previous length so no torn line stays behind.
    pub fn append(&mut self, rec: &RankingRecord) -> Result<()> {
        rec.validate()
            .map_err(|reason| Error::UnwritableRanking { reason })?;
        let mut line = serde_json::to_string(rec).map_err(|e| Error::UnwritableRanking {
            reason: e.to_string(),
        })?;
        line.push('\n');
        let io = |e| Error::io(&self.path, e);
        if let Err(e) = self.file.write_all(line.as_bytes()) {
            // Best effort: a failing disk may refuse this too; open() would then truncate.
            let _ = self.file.set_len(self.len);
            return Err(io(e));
        }
        self.file.sync_data().map_err(io)?;
        self.len += line.len() as u64;
        self.records += 1;
        Ok(())
    }

    /// Records in the file (those found on open plus those appended).
    pub fn records(&self) -> usize {
        self.records
    }

    /// Bytes of a torn last record that [`open`](Self::open) truncated away (0 if none).
    pub fn truncated_bytes(&self) -> u64 {
        self.truncated
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests;
