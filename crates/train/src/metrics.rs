//! `metrics.jsonl`: one JSON line per optimizer step (and per evaluation), appended as the run
//! goes. On resume, lines past the checkpoint's step are dropped first, so the file always
//! describes exactly one history.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use crate::error::io_at;
use crate::events::StepMetrics;
use crate::{Error, Result};

/// An append-only metrics file.
pub struct MetricsLog {
    path: PathBuf,
    file: File,
}

impl MetricsLog {
    /// Opens `path` for appending, keeping only records with `step <= keep_through`.
    pub fn open(path: &Path, keep_through: u64) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io_at(dir))?;
        }
        if path.exists() {
            let reader = BufReader::new(File::open(path).map_err(io_at(path))?);
            let mut kept = Vec::new();
            for line in reader.lines() {
                let line = line.map_err(io_at(path))?;
                let step = serde_json::from_str::<serde_json::Value>(&line)
                    .ok()
                    .and_then(|v| v.get("step").and_then(|s| s.as_u64()));
                if matches!(step, Some(s) if s <= keep_through) {
                    kept.push(line);
                }
            }
            let mut text = kept.join("\n");
            if !text.is_empty() {
                text.push('\n');
            }
            chatforge_data::atomic::write_atomic(path, text.as_bytes()).map_err(io_at(path))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io_at(path))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    fn write_value(&mut self, v: &serde_json::Value) -> Result<()> {
        let mut line = serde_json::to_string(v).map_err(|e| Error::State(e.to_string()))?;
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .map_err(io_at(&self.path))
    }

    /// Appends any JSON record (it should carry `"step"` so that resume can trim it).
    pub fn append_json(&mut self, v: &serde_json::Value) -> Result<()> {
        self.write_value(v)
    }

    /// Appends one step record.
    pub fn append(&mut self, m: &StepMetrics) -> Result<()> {
        let v = serde_json::to_value(m).map_err(|e| Error::State(e.to_string()))?;
        self.write_value(&v)
    }

    /// Appends one evaluation record (`"kind": "eval"`).
    pub fn append_eval(&mut self, step: u64, val_loss: f64, val_bpb: f64) -> Result<()> {
        self.write_value(&serde_json::json!({
            "kind": "eval", "step": step, "val_loss": val_loss, "val_bpb": val_bpb
        }))
    }
}
