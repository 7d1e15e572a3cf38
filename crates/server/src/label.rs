//! The labelling page: people rank K sampled responses to each prompt, best first, and every
//! submission is appended durably to a rankings file (InstructGPT §3.4 comparison data).
//!
//! # Flow
//!
//! [`LabelApp::open`] takes the prompts, K, a [`Responder`] (the model, behind a trait) and the
//! rankings file. It opens the file with [`RankingWriter::open`], which truncates a torn last
//! line away, and counts a prompt as *ranked* when a record with an identical prompt (every
//! role and content) is in the file; so a restart resumes where the file left off and never
//! serves a ranked prompt again. Identical prompts in the list are served once.
//!
//! The page asks `GET /api/next` for the first prompt, in list order, that is neither ranked nor
//! skipped in this session. Its K responses are generated on first request (on tokio's blocking
//! pool, one generation at a time) and cached per prompt index, so a reload shows the same
//! responses. `POST /api/submit` validates the ranking, appends the record (fsync before the
//! reply) and marks the prompt ranked. `POST /api/skip` moves past a prompt for this session
//! only: skips are not written anywhere, so skipped prompts come back the next time the server
//! starts.
//!
//! # Routes
//!
//! | route | body | answer |
//! | --- | --- | --- |
//! | `GET /` | | the page (one self-contained HTML file, no external resources) |
//! | `GET /health` | | `{"status":"ok","ranked","total"}` |
//! | `GET /api/next` | | [`NextItem`]: `{"done":false,"index","item","prompt":[messages],"responses","ranked","total","skipped"}` or `{"done":true,"ranked","total","skipped"}` |
//! | `POST /api/submit` | [`Submission`]: `{"index","item","ranking":[1,[0,2],3],"flagged":[2]}` | [`Progress`] |
//! | `POST /api/skip` | [`Skip`]: `{"index"}` | [`Progress`] |
//!
//! `item` is a fingerprint of the prompt index and the responses the page showed; a submission
//! whose fingerprint is not that of the responses this server instance holds (it was restarted
//! and the page is old, or another tab already ranked the prompt) is refused as stale rather
//! than stored against responses the labeller never saw.
//!
//! Errors are JSON `{"error": code, "message": text}`: 400 `bad_json` (malformed JSON or wrong
//! field types), 400 `unknown_index`, 400 `bad_ranking` (breaks [`RankingRecord::validate`]:
//! not every response exactly once, a flag out of range or repeated; everything tied is
//! allowed), 409 `stale_item`, 413 `body_too_large` (over
//! [`BODY_LIMIT`]), 415 `unsupported_media_type`, 404 `not_found`, 500 `generation_failed`
//! (with the `index`, so the page can offer to skip it) and 500 `write_failed` (the record was
//! not stored; the prompt stays unranked).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chatforge_data::conversation::{validate_prompt, Message};
use chatforge_data::ranking::{RankGroup, RankingRecord, RankingWriter};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The largest request body accepted (a submission is a few hundred bytes).
pub const BODY_LIMIT: usize = 64 * 1024;

/// The fewest and most responses per prompt a rankings record allows.
pub const K_RANGE: std::ops::RangeInclusive<usize> = 2..=9;

/// The page, embedded in the binary.
const PAGE: &str = include_str!("label.html");

/// An error a [`Responder`] reports; shown to the labeller.
pub type ResponderError = Box<dyn std::error::Error + Send + Sync>;

/// Produces the responses to rank. The CLI implements it with the engine; tests use fixed text.
pub trait Responder: Send + Sync {
    /// Exactly `k` responses to `prompt` (which ends with a user message), none empty or only
    /// whitespace. `index` is the prompt's position in the list, for seeding: the same index
    /// and prompt should give the same responses after a restart. Called on a blocking thread.
    fn responses(
        &self,
        index: usize,
        prompt: &[Message],
        k: usize,
    ) -> std::result::Result<Vec<String>, ResponderError>;
}

/// How many prompts are ranked out of how many, and how many were skipped in this session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Distinct prompts of the list with a record in the rankings file.
    pub ranked: usize,
    /// Distinct prompts in the list.
    pub total: usize,
    /// Prompts skipped since the server started (they come back after a restart).
    pub skipped: usize,
}

/// The answer of `GET /api/next`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum NextItem {
    /// A prompt to rank.
    Item {
        /// Always `false`.
        done: bool,
        /// The prompt's position in the (deduplicated) list.
        index: usize,
        /// Fingerprint of `index` and `responses`, echoed back by a submission.
        item: String,
        /// The conversation so far; the last message is the user's.
        prompt: Vec<Message>,
        /// K responses in the order generated.
        responses: Vec<String>,
        /// Progress before this prompt.
        #[serde(flatten)]
        progress: Progress,
    },
    /// Nothing left to rank in this session.
    Done {
        /// Always `true`.
        done: bool,
        /// Final progress.
        #[serde(flatten)]
        progress: Progress,
    },
}

/// The body of `POST /api/submit`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Submission {
    /// The prompt index from `/api/next`.
    pub index: usize,
    /// The `item` fingerprint from `/api/next`.
    pub item: String,
    /// Response indices best first; a tie is an array (`[1, [0, 2], 3]`).
    pub ranking: Vec<RankGroup>,
    /// Responses flagged as harmful.
    #[serde(default)]
    pub flagged: Vec<usize>,
}

/// The body of `POST /api/skip`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Skip {
    /// The prompt index from `/api/next`.
    pub index: usize,
}

/// What [`LabelApp::open`] found in the prompt list and the rankings file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenReport {
    /// Records already in the rankings file (after a torn last line was dropped).
    pub existing_records: usize,
    /// Of those, records whose prompt is not in the list (kept in the file, not counted).
    pub unmatched_records: usize,
    /// Bytes of a torn last line (a crash mid-append) cut from the end of the file.
    pub truncated_bytes: u64,
    /// Prompts dropped from the list because an identical one came earlier.
    pub duplicate_prompts: usize,
    /// Progress at start.
    pub progress: Progress,
}

/// The labelling server's state; cheap to clone (shared).
#[derive(Clone)]
pub struct LabelApp {
    shared: Arc<Shared>,
}

struct Shared {
    prompts: Vec<Vec<Message>>,
    k: usize,
    responder: Arc<dyn Responder>,
    state: Mutex<LabelState>,
    /// One generation at a time: a second request for the same prompt waits and then finds the
    /// responses cached instead of generating them twice.
    generating: tokio::sync::Mutex<()>,
}

struct LabelState {
    writer: RankingWriter,
    ranked: Vec<bool>,
    skipped: Vec<bool>,
    cache: HashMap<usize, Vec<String>>,
}

impl LabelApp {
    /// Opens (or creates) the rankings file at `out` and sets up labelling of `prompts` with
    /// `k` responses each. Errors on K outside [`K_RANGE`], an empty prompt list, a prompt that
    /// is empty or does not end with a user message, or an unreadable rankings file.
    pub fn open(
        prompts: Vec<Vec<Message>>,
        k: usize,
        responder: Arc<dyn Responder>,
        out: &std::path::Path,
    ) -> Result<(LabelApp, OpenReport)> {
        if !K_RANGE.contains(&k) {
            return Err(Error::Config(format!(
                "K = {k}: a ranking compares {} to {} responses",
                K_RANGE.start(),
                K_RANGE.end()
            )));
        }
        if prompts.is_empty() {
            return Err(Error::Config("no prompts to label".into()));
        }
        for (index, p) in prompts.iter().enumerate() {
            check_prompt(p).map_err(|msg| Error::InvalidPrompt { index, msg })?;
        }
        let before = prompts.len();
        let mut seen = std::collections::HashSet::new();
        let prompts: Vec<Vec<Message>> = prompts
            .into_iter()
            .filter(|p| seen.insert(p.clone()))
            .collect();
        let duplicate_prompts = before - prompts.len();

        let (writer, existing) = RankingWriter::open(out)?;
        let position: HashMap<&[Message], usize> = prompts
            .iter()
            .enumerate()
            .map(|(i, p)| (p.as_slice(), i))
            .collect();
        let mut ranked = vec![false; prompts.len()];
        let mut unmatched_records = 0;
        for rec in &existing {
            match position.get(rec.prompt.as_slice()) {
                Some(&i) => ranked[i] = true,
                None => unmatched_records += 1,
            }
        }
        let state = LabelState {
            writer,
            skipped: vec![false; prompts.len()],
            ranked,
            cache: HashMap::new(),
        };
        let progress = state.progress();
        let app = LabelApp {
            shared: Arc::new(Shared {
                prompts,
                k,
                responder,
                state: Mutex::new(state),
                generating: tokio::sync::Mutex::new(()),
            }),
        };
        let report = OpenReport {
            existing_records: existing.len(),
            unmatched_records,
            truncated_bytes: app.shared.lock().writer.truncated_bytes(),
            duplicate_prompts,
            progress,
        };
        tracing::info!(?report, "labelling app opened");
        Ok((app, report))
    }

    /// Current progress.
    pub fn progress(&self) -> Progress {
        self.shared.lock().progress()
    }

    /// The routes (see the module docs), with the body limit applied.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/", get(page))
            .route("/health", get(health))
            .route("/api/next", get(next))
            .route("/api/submit", post(submit))
            .route("/api/skip", post(skip))
            .fallback(not_found)
            .layer(DefaultBodyLimit::max(BODY_LIMIT))
            .with_state(self.clone())
    }
}

/// Serves `app` on `listener` until `shutdown` completes. Bind the listener yourself (port 0
/// picks a free port; `listener.local_addr()` tells which).
pub async fn serve(
    app: LabelApp,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let what = match listener.local_addr() {
        Ok(a) => format!("serving on {a}"),
        Err(_) => "serving".to_string(),
    };
    axum::serve(listener, app.router())
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| Error::Io { what, source })
}

impl Shared {
    /// The state; a panic elsewhere while holding the lock leaves nothing half-written that
    /// matters (the file is appended to atomically per record), so poisoning is ignored.
    fn lock(&self) -> MutexGuard<'_, LabelState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl LabelState {
    fn progress(&self) -> Progress {
        Progress {
            ranked: self.ranked.iter().filter(|&&r| r).count(),
            total: self.ranked.len(),
            skipped: self.skipped.iter().filter(|&&s| s).count(),
        }
    }

    /// The first prompt neither ranked nor skipped.
    fn next_index(&self) -> Option<usize> {
        (0..self.ranked.len()).find(|&i| !self.ranked[i] && !self.skipped[i])
    }
}

/// The rules of [`validate_prompt`] (ordered roles, no empty message, ends with the user), as
/// text.
fn check_prompt(p: &[Message]) -> std::result::Result<(), String> {
    validate_prompt(p).map_err(|e| match e {
        chatforge_data::Error::InvalidConversation { reason } => reason,
        e => e.to_string(),
    })
}

/// FNV-1a over the index and the responses: identifies what the page was shown.
fn fingerprint(index: usize, responses: &[String]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    eat(&(index as u64).to_le_bytes());
    for r in responses {
        eat(&(r.len() as u64).to_le_bytes());
        eat(r.as_bytes());
    }
    format!("{h:016x}")
}

/// An error answer: `{"error": code, "message": text}` plus any extra fields.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    index: Option<usize>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            index: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({"error": self.code, "message": self.message});
        if let Some(i) = self.index {
            body["index"] = i.into();
        }
        (self.status, Json(body)).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let status = r.status();
        let code = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            _ => "bad_json",
        };
        // Malformed JSON (400) and JSON of the wrong shape (axum's 422) are both a bad request.
        let status = if code == "bad_json" {
            StatusCode::BAD_REQUEST
        } else {
            status
        };
        ApiError::new(status, code, r.body_text())
    }
}

type ApiResult<T> = std::result::Result<Json<T>, ApiError>;

async fn page() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-store")], Html(PAGE))
}

async fn health(State(app): State<LabelApp>) -> Json<serde_json::Value> {
    let p = app.progress();
    Json(serde_json::json!({"status": "ok", "ranked": p.ranked, "total": p.total}))
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

async fn next(State(app): State<LabelApp>) -> ApiResult<NextItem> {
    let shared = &app.shared;
    loop {
        let (index, cached, progress) = {
            let st = shared.lock();
            let progress = st.progress();
            let Some(i) = st.next_index() else {
                return Ok(Json(NextItem::Done {
                    done: true,
                    progress,
                }));
            };
            (i, st.cache.get(&i).cloned(), progress)
        };
        if let Some(responses) = cached {
            return Ok(Json(NextItem::Item {
                done: false,
                index,
                item: fingerprint(index, &responses),
                prompt: shared.prompts[index].clone(),
                responses,
                progress,
            }));
        }
        let _one_at_a_time = shared.generating.lock().await;
        if shared.lock().cache.contains_key(&index) {
            continue; // generated while we waited
        }
        let responder = Arc::clone(&shared.responder);
        let prompt = shared.prompts[index].clone();
        let k = shared.k;
        let generated =
            tokio::task::spawn_blocking(move || responder.responses(index, &prompt, k)).await;
        let failed = |message: String| {
            tracing::warn!(index, %message, "generation failed");
            ApiError {
                index: Some(index),
                ..ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "generation_failed",
                    message,
                )
            }
        };
        let responses = match generated {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(failed(e.to_string())),
            Err(e) => return Err(failed(format!("the generation task failed: {e}"))),
        };
        if responses.len() != k {
            return Err(failed(format!(
                "expected {k} responses, the model gave {}",
                responses.len()
            )));
        }
        if let Some(j) = responses.iter().position(|r| r.trim().is_empty()) {
            return Err(failed(format!("response {j} is empty")));
        }
        shared.lock().cache.insert(index, responses);
    }
}

async fn submit(
    State(app): State<LabelApp>,
    body: std::result::Result<Json<Submission>, JsonRejection>,
) -> ApiResult<Progress> {
    let Json(sub) = body?;
    // Validation, the append and its fsync are blocking work: off the async threads.
    let shared = Arc::clone(&app.shared);
    tokio::task::spawn_blocking(move || record(&shared, sub))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "write_failed",
                e.to_string(),
            )
        })?
        .map(Json)
}

/// Checks a submission against the item it names and appends its record.
fn record(shared: &Shared, sub: Submission) -> std::result::Result<Progress, ApiError> {
    let mut st = shared.lock();
    let Some(prompt) = shared.prompts.get(sub.index) else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "unknown_index",
            format!(
                "there is no prompt {} (there are {})",
                sub.index,
                shared.prompts.len()
            ),
        ));
    };
    let stale = |why: &str| {
        ApiError::new(
            StatusCode::CONFLICT,
            "stale_item",
            format!("prompt {}: {why}; load the next item", sub.index),
        )
    };
    if st.ranked[sub.index] {
        return Err(stale("it is already ranked"));
    }
    let Some(responses) = st.cache.get(&sub.index) else {
        return Err(stale(
            "this server has not shown its responses (was it restarted?)",
        ));
    };
    if fingerprint(sub.index, responses) != sub.item {
        return Err(stale("the responses differ from the ones the page shows"));
    }
    let mut flagged = sub.flagged.clone();
    flagged.sort_unstable();
    flagged.dedup();
    if flagged.len() != sub.flagged.len() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_ranking",
            "a response is flagged twice",
        ));
    }
    let rec = RankingRecord {
        prompt: prompt.clone(),
        responses: responses.clone(),
        ranking: sub.ranking,
        flagged,
    };
    rec.validate()
        .map_err(|msg| ApiError::new(StatusCode::BAD_REQUEST, "bad_ranking", msg))?;
    st.writer.append(&rec).map_err(|e| {
        tracing::error!(error = %e, "appending a ranking failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "write_failed",
            format!("the ranking was not saved: {e}"),
        )
    })?;
    st.ranked[sub.index] = true;
    st.cache.remove(&sub.index);
    tracing::info!(index = sub.index, "ranking saved");
    Ok(st.progress())
}

async fn skip(
    State(app): State<LabelApp>,
    body: std::result::Result<Json<Skip>, JsonRejection>,
) -> ApiResult<Progress> {
    let Json(s) = body?;
    let mut st = app.shared.lock();
    if s.index >= st.ranked.len() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "unknown_index",
            format!(
                "there is no prompt {} (there are {})",
                s.index,
                st.ranked.len()
            ),
        ));
    }
    if st.ranked[s.index] {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "stale_item",
            format!("prompt {} is already ranked; load the next item", s.index),
        ));
    }
    st.skipped[s.index] = true;
    Ok(Json(st.progress()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatforge_data::conversation::Role;

    #[test]
    fn fingerprint_depends_on_index_and_every_response() {
        let r = vec!["a".to_string(), "bc".to_string()];
        let f = fingerprint(0, &r);
        assert_eq!(f.len(), 16);
        assert_ne!(f, fingerprint(1, &r));
        assert_ne!(f, fingerprint(0, &["ab".to_string(), "c".to_string()]));
        assert_eq!(f, fingerprint(0, &r.clone()));
    }

    #[test]
    fn prompts_must_end_with_the_user() {
        let u = Message {
            role: Role::User,
            content: "hi".into(),
        };
        let a = Message {
            role: Role::Assistant,
            content: "hello".into(),
        };
        assert!(check_prompt(std::slice::from_ref(&u)).is_ok());
        assert!(check_prompt(&[]).is_err());
        assert!(check_prompt(&[u.clone(), a]).is_err());
    }
}
