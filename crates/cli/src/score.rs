//! `chatforge score`: score responses with a reward model, one JSON line per response on
//! stdout.
//!
//! Each input file is either
//! - prompt/response lines: `{"prompt": [messages] | "text", "response": "...", "ended"?: bool}`
//!   (`ended`, default true, says whether the reply was finished: the assistant-end token is
//!   then part of the scored row); output `{"file", "line", "response", "score"}`; or
//! - ranking records (the reward model's training format, K-wise or pairwise); output
//!   `{"file", "record", "index", "rank", "response", "score"}` per response, and the held-out
//!   measures (pairwise accuracy, Kendall τ) of the file on stderr.
//!
//! The kind of a file is decided by its first record (a `"response"` field means
//! prompt/response lines). A bad line is an error naming `file:line`; a row longer than the
//! reward model's context is an error too (nothing is truncated).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use chatforge_data::conversation::Message;
use chatforge_data::corpus::ReadOptions;
use chatforge_data::ranking::read_rankings;
use chatforge_train::reward::{evaluate_rankings, RewardModel};
use serde_json::{json, Value};

#[derive(clap::Args, Debug)]
pub struct ScoreArgs {
    /// The reward model: a checkpoint directory or a run directory (its newest checkpoint).
    #[arg(long)]
    reward: PathBuf,
    /// Prompt/response JSONL or ranking JSONL files.
    #[arg(long = "data", required = true, num_args = 1..)]
    data: Vec<PathBuf>,
    /// Skip (and count) bad ranking records instead of failing.
    #[arg(long)]
    skip_bad_records: bool,
    #[command(flatten)]
    device: crate::device::DeviceOpt,
}

/// One prompt/response line.
struct Pair {
    line: usize,
    prompt: Vec<Message>,
    response: String,
    ended: bool,
}

fn parse_prompt(v: Value) -> std::result::Result<Vec<Message>, String> {
    match v {
        Value::String(s) => Ok(vec![Message::user(s)]),
        v @ Value::Array(_) => serde_json::from_value(v).map_err(|e| format!("\"prompt\": {e}")),
        _ => Err("\"prompt\" must be a string or a list of messages".into()),
    }
}

fn parse_pair(text: &str) -> std::result::Result<(Vec<Message>, String, bool), String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("bad JSON: {e}"))?;
    let Value::Object(mut m) = v else {
        return Err("not a JSON object".into());
    };
    if let Some(k) = m
        .keys()
        .find(|k| !["prompt", "response", "ended"].contains(&k.as_str()))
    {
        return Err(format!(
            "unknown field \"{k}\" (expected \"prompt\", \"response\", \"ended\")"
        ));
    }
    let prompt = parse_prompt(m.remove("prompt").ok_or("no \"prompt\" field")?)?;
    let response = match m.remove("response") {
        Some(Value::String(s)) => s,
        Some(_) => return Err("\"response\" must be a string".into()),
        None => return Err("no \"response\" field".into()),
    };
    let ended = match m.remove("ended") {
        None => true,
        Some(Value::Bool(b)) => b,
        Some(_) => return Err("\"ended\" must be true or false".into()),
    };
    chatforge_data::conversation::validate_prompt(&prompt).map_err(|e| format!("prompt: {e}"))?;
    Ok((prompt, response, ended))
}

fn read_pairs(path: &Path) -> Result<Vec<Pair>> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| anyhow!("{}:{}: {e}", path.display(), i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let (prompt, response, ended) =
            parse_pair(&line).map_err(|e| anyhow!("{}:{}: {e}", path.display(), i + 1))?;
        out.push(Pair {
            line: i + 1,
            prompt,
            response,
            ended,
        });
    }
    Ok(out)
}

/// Whether the first non-blank line of `path` is a prompt/response record.
fn is_pair_file(path: &Path) -> Result<bool> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    for line in BufReader::new(f).lines() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        return Ok(serde_json::from_str::<Value>(&line)
            .ok()
            .and_then(|v| v.get("response").map(|_| ()))
            .is_some());
    }
    Ok(false)
}

pub fn run(a: ScoreArgs) -> Result<()> {
    let device = a.device.open()?;
    let rm = RewardModel::load(&a.reward, &device)
        .with_context(|| format!("loading a reward model from {}", a.reward.display()))?;
    let ctx = rm.config().context_length;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for path in &a.data {
        let file = path.display().to_string();
        if path.is_file() && is_pair_file(path)? {
            let pairs = read_pairs(path)?;
            let mut rows = Vec::with_capacity(pairs.len());
            for p in &pairs {
                let row = rm
                    .rows(&p.prompt, &[(p.response.clone(), p.ended)])
                    .map_err(|e| anyhow!("{file}:{}: {e}", p.line))?
                    .remove(0);
                if row.len() > ctx {
                    bail!(
                        "{file}:{}: prompt + response + readout is {} tokens, more than the \
                         reward model's context of {ctx}",
                        p.line,
                        row.len()
                    );
                }
                rows.push(row);
            }
            let scores = rm.score_ids(&rows)?;
            for (p, s) in pairs.iter().zip(scores) {
                let v = json!({"file": file, "line": p.line, "response": p.response, "score": s});
                writeln!(out, "{v}")?;
            }
            eprintln!("{file}: scored {} responses", pairs.len());
        } else {
            let opts = ReadOptions {
                skip_bad_records: a.skip_bad_records,
            };
            let (recs, stats) = read_rankings(std::slice::from_ref(path), &opts)?;
            for (i, r) in recs.iter().enumerate() {
                let scores = rm
                    .score(&r.prompt, &r.responses)
                    .map_err(|e| anyhow!("{file}: ranking record {}: {e}", i + 1))?;
                let rank = r.rank_of();
                for (j, s) in scores.iter().enumerate() {
                    let v = json!({"file": file, "record": i + 1, "index": j, "rank": rank[j],
                                   "response": r.responses[j], "score": s});
                    writeln!(out, "{v}")?;
                }
            }
            let (e, dropped) = evaluate_rankings(&rm, &recs)?;
            eprintln!(
                "{file}: {} rankings ({} pairs): pairwise accuracy {:.1}%, Kendall τ-b {:.3}, \
                 reward {:+.3} ± {:.3}{}{}",
                e.records,
                e.pairs,
                100.0 * e.accuracy,
                e.kendall_tau,
                e.reward_mean,
                e.reward_std,
                if dropped > 0 {
                    format!(", {dropped} too long for the context")
                } else {
                    String::new()
                },
                if stats.skipped_bad > 0 {
                    format!(", {} bad records skipped", stats.skipped_bad)
                } else {
                    String::new()
                }
            );
        }
        out.flush()?;
    }
    Ok(())
}
