//! Reading (and writing) pretraining corpora: plain-text files and JSONL.
//!
//! # File formats
//!
//! **`.txt`** — UTF-8 text. Documents are separated by a line that consists exactly of
//! [`DOC_SEPARATOR`] (`<|eot|>`, the end-of-text token's name), so documents may contain blank
//! lines and paragraphs freely. A file without a separator line is one document (e.g.
//! `tinyshakespeare/input.txt`). The line break just before a separator line belongs to the
//! separator, not to the document; a final separator at the end of the file ends the last
//! document rather than starting an empty one. Lines may end in `\n` or `\r\n`. So
//!
//! ```text
//! First document,
//! two lines.
//! <|eot|>
//! Second document.
//! <|eot|>
//! ```
//!
//! holds `"First document,\ntwo lines."` and `"Second document."`. [`write_txt`] writes exactly
//! this form, and reading it back gives the documents unchanged.
//!
//! **`.jsonl`** — one JSON object per line with a string field `"text"`; other fields are
//! ignored and blank lines are skipped.
//!
//! **A directory** — its `.txt` and `.jsonl` files (not subdirectories), in sorted name order.
//!
//! # Empty and bad records
//!
//! A document that is empty or only whitespace is skipped and counted in
//! [`ReadStats::skipped_empty`]; it is never an error. A bad record (a JSONL line that is not
//! UTF-8, not a JSON object, lacks `"text"` or has a non-string `"text"`; a `.txt` document with
//! invalid UTF-8) is an error naming the file, the line and what is wrong — or, with
//! [`ReadOptions::skip_bad_records`], is skipped and counted in [`ReadStats::skipped_bad`].
//! Files are streamed line by line; a document is held once, in the buffer it is read into, so
//! a 100 MB line costs about 100 MB.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::atomic::write_atomic;
use crate::error::{Error, Result};

/// The line that separates documents in a `.txt` corpus file.
pub const DOC_SEPARATOR: &str = "<|eot|>";

/// How [`read_documents`] treats bad records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// Skip and count bad records instead of failing on the first one.
    pub skip_bad_records: bool,
}

/// What [`read_documents`] read and what it skipped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// Documents returned.
    pub documents: usize,
    /// Total UTF-8 bytes of the documents returned.
    pub bytes: usize,
    /// Bad records skipped (only with `skip_bad_records`).
    pub skipped_bad: usize,
    /// Empty or whitespace-only documents skipped.
    pub skipped_empty: usize,
}

/// Reads every document from `paths` (files or directories; see the module docs for formats),
/// in order.
pub fn read_documents(paths: &[PathBuf], opts: &ReadOptions) -> Result<(Vec<String>, ReadStats)> {
    let mut reader = Reader {
        opts: *opts,
        docs: Vec::new(),
        stats: ReadStats::default(),
    };
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if meta.is_dir() {
            let files = list_dir(path)?;
            if files.is_empty() {
                return Err(Error::NoInputFiles { path: path.clone() });
            }
            for f in files {
                reader.read_file(&f)?;
            }
        } else {
            reader.read_file(path)?;
        }
    }
    Ok((reader.docs, reader.stats))
}

/// Writes `docs` to `path` as a `.txt` corpus (separator convention above), atomically.
///
/// A document that would not read back as itself is refused: one that contains a separator
/// line, ends in `"\r"`, or is empty or only whitespace.
pub fn write_txt(path: &Path, docs: &[String]) -> Result<()> {
    write_atomic(path, render_txt(docs)?.as_bytes()).map_err(|e| Error::io(path, e))
}

/// The `.txt` corpus text for `docs` (what [`write_txt`] writes).
pub fn render_txt(docs: &[String]) -> Result<String> {
    let total: usize = docs.iter().map(|d| d.len() + DOC_SEPARATOR.len() + 2).sum();
    let mut out = String::with_capacity(total);
    for (index, doc) in docs.iter().enumerate() {
        let bad = |reason| Err(Error::UnwritableDocument { index, reason });
        if doc.trim().is_empty() {
            return bad("document is empty or only whitespace");
        }
        if doc.ends_with('\r') {
            return bad("document ends in a carriage return");
        }
        if doc
            .split('\n')
            .any(|l| l.strip_suffix('\r').unwrap_or(l) == DOC_SEPARATOR)
        {
            return bad("document contains a separator line");
        }
        out.push_str(doc);
        out.push('\n');
        out.push_str(DOC_SEPARATOR);
        out.push('\n');
    }
    Ok(out)
}

/// The `.txt` and `.jsonl` files directly inside `dir`, sorted by name.
fn list_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if path.is_file() && Format::of(&path).is_some() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

#[derive(Clone, Copy)]
enum Format {
    Txt,
    Jsonl,
}

impl Format {
    fn of(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()? {
            "txt" => Some(Format::Txt),
            "jsonl" => Some(Format::Jsonl),
            _ => None,
        }
    }
}

/// One JSONL record: only `text` is looked at; other fields are skipped by serde unparsed.
#[derive(Deserialize)]
struct Record {
    /// `None` when the field is absent; `Some(Value::Null)` for `"text": null`.
    #[serde(default, deserialize_with = "present")]
    text: Option<serde_json::Value>,
}

fn present<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(d).map(Some)
}

fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

struct Reader {
    opts: ReadOptions,
    docs: Vec<String>,
    stats: ReadStats,
}

impl Reader {
    fn read_file(&mut self, path: &Path) -> Result<()> {
        let format = Format::of(path).ok_or_else(|| Error::UnsupportedFormat {
            path: path.to_path_buf(),
        })?;
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let input = BufReader::with_capacity(1 << 16, file);
        match format {
            Format::Txt => self.read_txt(path, input),
            Format::Jsonl => self.read_jsonl(path, input),
        }
    }

    /// Keeps a finished document, or counts it as empty.
    fn push(&mut self, doc: String) {
        if doc.trim().is_empty() {
            self.stats.skipped_empty += 1;
        } else {
            self.stats.documents += 1;
            self.stats.bytes += doc.len();
            self.docs.push(doc);
        }
    }

    /// A bad record: an error, or skipped and counted.
    fn bad(&mut self, err: Error) -> Result<()> {
        if self.opts.skip_bad_records {
            self.stats.skipped_bad += 1;
            Ok(())
        } else {
            Err(err)
        }
    }

    fn read_txt(&mut self, path: &Path, mut input: impl BufRead) -> Result<()> {
        // Lines are read straight into the document buffer; a separator line is cut off again.
        let mut doc: Vec<u8> = Vec::new();
        let mut doc_is_bad = false;
        let mut line_no: u64 = 0;
        let mut offset: u64 = 0; // file offset of the line being read
        let mut seen_separator = false;
        loop {
            let start = doc.len();
            let n = input
                .read_until(b'\n', &mut doc)
                .map_err(|e| Error::io(path, e))?;
            if n == 0 {
                break;
            }
            line_no += 1;
            let line = &doc[start..];
            let content = line.strip_suffix(b"\n").unwrap_or(line);
            let content = content.strip_suffix(b"\r").unwrap_or(content);
            if content == DOC_SEPARATOR.as_bytes() {
                seen_separator = true;
                // Drop the separator line and the line break before it.
                doc.truncate(start);
                if doc.ends_with(b"\n") {
                    doc.pop();
                    if doc.ends_with(b"\r") {
                        doc.pop();
                    }
                }
                self.finish_txt_doc(std::mem::take(&mut doc), doc_is_bad);
                doc_is_bad = false;
            } else if doc_is_bad {
                doc.truncate(start); // the rest of a skipped document is not kept
            } else if let Err(e) = std::str::from_utf8(line) {
                let err = Error::InvalidUtf8 {
                    path: path.to_path_buf(),
                    line: line_no,
                    offset: offset + e.valid_up_to() as u64,
                };
                self.bad(err)?;
                doc_is_bad = true;
                doc.clear();
            }
            offset += n as u64;
        }
        // Text after the last separator is a document, unless the file simply ended with one.
        if !(seen_separator && doc.is_empty() && !doc_is_bad) {
            self.finish_txt_doc(doc, doc_is_bad);
        }
        Ok(())
    }

    fn finish_txt_doc(&mut self, doc: Vec<u8>, skipped: bool) {
        if skipped {
            return; // already counted in skipped_bad
        }
        // Every line was validated as it was read, so this cannot fail; stay panic-free anyway.
        match String::from_utf8(doc) {
            Ok(s) => self.push(s),
            Err(_) => self.stats.skipped_bad += 1,
        }
    }

    fn read_jsonl(&mut self, path: &Path, input: impl BufRead) -> Result<()> {
        for_each_line(path, input, |buf, line, line_offset| {
            match parse_record(buf, path, line, line_offset) {
                Ok(Some(doc)) => self.push(doc),
                Ok(None) => {} // blank line
                Err(err) => self.bad(err)?,
            }
            Ok(())
        })
    }
}

/// Parses one JSONL line: `Ok(None)` for a blank line, `Ok(Some(text))` for a good record.
fn parse_record(buf: &[u8], path: &Path, line: u64, line_offset: u64) -> Result<Option<String>> {
    let p = || path.to_path_buf();
    let text = std::str::from_utf8(buf).map_err(|e| Error::InvalidUtf8 {
        path: p(),
        line,
        offset: line_offset + e.valid_up_to() as u64,
    })?;
    let text = text.strip_suffix('\n').unwrap_or(text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    if text.trim().is_empty() {
        return Ok(None);
    }
    // serde would also accept `["x"]` for a one-field struct; a record must be an object.
    if !text.trim_start().starts_with('{') {
        return Err(Error::BadJson {
            path: p(),
            line,
            message: "expected a JSON object".into(),
        });
    }
    let record: Record = serde_json::from_str(text).map_err(|e| Error::BadJson {
        path: p(),
        line,
        message: e.to_string(),
    })?;
    match record.text {
        Some(serde_json::Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(Error::TextNotString {
            path: p(),
            line,
            found: json_type(&v),
        }),
        None => Err(Error::MissingText { path: p(), line }),
    }
}

#[cfg(test)]
mod tests;

/// Calls `f(line_bytes, line_number, byte_offset)` for every `\n`-terminated line of `input`
/// (the last line may lack the newline), reusing one buffer; a buffer grown past 16 MB by a
/// huge line is released rather than kept for the rest of the file.
pub(crate) fn for_each_line(
    path: &Path,
    mut input: impl BufRead,
    mut f: impl FnMut(&[u8], u64, u64) -> Result<()>,
) -> Result<()> {
    let mut buf: Vec<u8> = Vec::new();
    let (mut line, mut offset) = (0u64, 0u64);
    loop {
        if buf.capacity() > (1 << 24) {
            buf = Vec::new();
        } else {
            buf.clear();
        }
        let n = input
            .read_until(b'\n', &mut buf)
            .map_err(|e| Error::io(path, e))?;
        if n == 0 {
            return Ok(());
        }
        line += 1;
        f(&buf, line, offset)?;
        offset += n as u64;
    }
}
