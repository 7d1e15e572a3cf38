//! The labelling server over real HTTP (a std `TcpStream` client, no browser): the happy path
//! and what lands in the rankings file, resume from the file, skips, typed JSON errors for every
//! bad request, the body limit, a torn last line, a failing model, and the page being
//! self-contained. The responder is a fake that writes fixed text and counts its calls, so
//! these tests need no model; `crates/cli/tests/label_browser.rs` runs the real one.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chatforge_data::conversation::{Message, Role};
use chatforge_data::corpus::ReadOptions;
use chatforge_data::ranking::{read_rankings, RankGroup};
use chatforge_server::label::{serve, LabelApp, OpenReport, Responder, ResponderError};
use serde_json::{json, Value};

/// Response `j` to prompt `i` is "answer j to prompt i"; prompts listed in `fail` error out.
struct Fake {
    calls: AtomicUsize,
    fail: Vec<usize>,
    delay: Duration,
}

impl Fake {
    fn new() -> Arc<Fake> {
        Arc::new(Fake {
            calls: AtomicUsize::new(0),
            fail: vec![],
            delay: Duration::ZERO,
        })
    }
}

impl Responder for Fake {
    fn responses(
        &self,
        index: usize,
        prompt: &[Message],
        k: usize,
    ) -> Result<Vec<String>, ResponderError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(self.delay);
        if self.fail.contains(&index) {
            return Err(format!("the model is broken for prompt {index}").into());
        }
        assert_eq!(prompt.last().unwrap().role, Role::User);
        Ok((0..k)
            .map(|j| format!("answer {j} to prompt {index}"))
            .collect())
    }
}

fn prompts(n: usize) -> Vec<Vec<Message>> {
    (0..n)
        .map(|i| {
            vec![Message {
                role: Role::User,
                content: format!("question number {i}?"),
            }]
        })
        .collect()
}

/// A server on 127.0.0.1:0 in its own runtime; dropped, it stops.
struct Server {
    addr: SocketAddr,
    report: OpenReport,
    _rt: tokio::runtime::Runtime,
}

fn start(prompts: Vec<Vec<Message>>, k: usize, responder: Arc<Fake>, out: &Path) -> Server {
    let (app, report) = LabelApp::open(prompts, k, responder, out).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(serve(app, listener, std::future::pending()));
    Server {
        addr,
        report,
        _rt: rt,
    }
}

struct Reply {
    status: u16,
    headers: String,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// A typed error: this status, JSON with this `error` code and a non-empty message.
    fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{}", self.body);
        let v = self.json();
        assert_eq!(v["error"], code, "{v}");
        assert!(
            !v["message"].as_str().unwrap_or("").is_empty(),
            "no message: {v}"
        );
        assert!(
            self.headers
                .to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{}",
            self.headers
        );
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`), read to the end.
fn http(addr: SocketAddr, method: &str, path: &str, ctype: Option<&str>, body: &[u8]) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(t) = ctype {
        head.push_str(&format!("Content-Type: {t}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    // The server may answer (413) and close before reading an oversize body: ignore that.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (headers, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    let status = headers
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {headers:?}"));
    Reply {
        status,
        headers: headers.to_string(),
        body: body.to_string(),
    }
}

fn get(addr: SocketAddr, path: &str) -> Reply {
    http(addr, "GET", path, None, b"")
}

fn post(addr: SocketAddr, path: &str, body: &Value) -> Reply {
    http(
        addr,
        "POST",
        path,
        Some("application/json"),
        body.to_string().as_bytes(),
    )
}

fn read_file(path: &Path) -> Vec<chatforge_data::ranking::RankingRecord> {
    read_rankings(&[PathBuf::from(path)], &ReadOptions::default())
        .unwrap()
        .0
}

#[test]
fn rank_submit_resume_and_skip() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("rankings.jsonl");
    let fake = Fake::new();
    let srv = start(prompts(3), 4, fake.clone(), &out);
    assert_eq!(srv.report.existing_records, 0);
    assert_eq!(get(srv.addr, "/health").json()["status"], "ok");

    // Concurrent first requests generate once; a reload shows the same item.
    let addr = srv.addr;
    let items: Vec<Value> = (0..3)
        .map(|_| std::thread::spawn(move || get(addr, "/api/next").json()))
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    let item = items[0].clone();
    assert!(items.iter().all(|i| *i == item), "{items:?}");
    assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
    assert_eq!(item["done"], false);
    assert_eq!(item["index"], 0);
    assert_eq!(
        (item["ranked"].clone(), item["total"].clone()),
        (json!(0), json!(3))
    );
    assert_eq!(item["prompt"][0]["role"], "user");
    assert_eq!(item["prompt"][0]["content"], "question number 0?");
    assert_eq!(item["responses"].as_array().unwrap().len(), 4);
    assert_eq!(item["responses"][2], "answer 2 to prompt 0");

    let r = post(
        srv.addr,
        "/api/submit",
        &json!({"index": 0, "item": item["item"], "ranking": [1, [0, 2], 3], "flagged": [2]}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["ranked"], 1);
    assert_eq!(r.json()["total"], 3);
    let recs = read_file(&out);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].prompt, prompts(3)[0]);
    assert_eq!(recs[0].responses[3], "answer 3 to prompt 0");
    assert_eq!(
        recs[0].ranking,
        vec![
            RankGroup::One(1),
            RankGroup::Tie(vec![0, 2]),
            RankGroup::One(3)
        ]
    );
    assert_eq!(recs[0].flagged, vec![2]);

    // A second submission of the same item is stale, and nothing more is written.
    let again = post(
        srv.addr,
        "/api/submit",
        &json!({"index": 0, "item": item["item"], "ranking": [0, 1, 2, 3]}),
    );
    again.assert_error(409, "stale_item");
    assert_eq!(read_file(&out).len(), 1);
    assert_eq!(get(srv.addr, "/api/next").json()["index"], 1);
    drop(srv);

    // A second instance over the same file resumes: prompt 0 is never served again.
    let fake2 = Fake::new();
    let srv = start(prompts(3), 4, fake2.clone(), &out);
    assert_eq!(srv.report.existing_records, 1);
    assert_eq!(srv.report.progress.ranked, 1);
    let item = get(srv.addr, "/api/next").json();
    assert_eq!(
        (item["index"].clone(), item["ranked"].clone()),
        (json!(1), json!(1))
    );
    let r = post(srv.addr, "/api/skip", &json!({"index": 1}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["skipped"], 1);
    let item = get(srv.addr, "/api/next").json();
    assert_eq!(item["index"], 2);
    let r = post(
        srv.addr,
        "/api/submit",
        &json!({"index": 2, "item": item["item"], "ranking": [3, 2, 1, 0]}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let done = get(srv.addr, "/api/next").json();
    assert_eq!(
        done,
        json!({"done": true, "ranked": 2, "total": 3, "skipped": 1})
    );
    drop(srv);

    // Skips are not stored: the skipped prompt is back after a restart, and only it.
    let srv = start(prompts(3), 4, Fake::new(), &out);
    assert_eq!(srv.report.progress.ranked, 2);
    assert_eq!(get(srv.addr, "/api/next").json()["index"], 1);
    let recs = read_file(&out);
    assert_eq!(recs.len(), 2);
    assert!(recs[1].flagged.is_empty());
    assert_eq!(recs[1].prompt, prompts(3)[2]);
}

#[test]
fn bad_requests_get_typed_json_errors_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("rankings.jsonl");
    let srv = start(prompts(2), 3, Fake::new(), &out);
    let a = srv.addr;
    let item = get(a, "/api/next").json();
    let id = item["item"].clone();
    let submit = |body: Value| post(a, "/api/submit", &body);

    http(
        a,
        "POST",
        "/api/submit",
        Some("application/json"),
        b"{\"index\": 0,",
    )
    .assert_error(400, "bad_json");
    submit(json!({"index": 0, "item": id, "ranking": "first"})).assert_error(400, "bad_json");
    submit(json!({"index": -1, "item": id, "ranking": [0, 1, 2]})).assert_error(400, "bad_json");
    submit(json!({"index": 0, "item": id, "ranking": [0, 1, 2], "extra": 1}))
        .assert_error(400, "bad_json");
    submit(json!({"index": 0, "item": id, "ranking": [0, 1]})).assert_error(400, "bad_ranking");
    submit(json!({"index": 0, "item": id, "ranking": [0, 1, 1, 2]}))
        .assert_error(400, "bad_ranking");
    submit(json!({"index": 0, "item": id, "ranking": [0, [1, 3], 2]}))
        .assert_error(400, "bad_ranking");
    submit(json!({"index": 0, "item": id, "ranking": [0, 1, 2], "flagged": [3]}))
        .assert_error(400, "bad_ranking");
    submit(json!({"index": 0, "item": id, "ranking": [0, 1, 2], "flagged": [1, 1]}))
        .assert_error(400, "bad_ranking");
    submit(json!({"index": 7, "item": id, "ranking": [0, 1, 2]}))
        .assert_error(400, "unknown_index");
    // Prompt 1 exists but its responses were never shown; a wrong fingerprint is stale too.
    submit(json!({"index": 1, "item": id, "ranking": [0, 1, 2]})).assert_error(409, "stale_item");
    submit(json!({"index": 0, "item": "0000000000000000", "ranking": [0, 1, 2]}))
        .assert_error(409, "stale_item");
    post(a, "/api/skip", &json!({"index": 9})).assert_error(400, "unknown_index");
    http(a, "POST", "/api/submit", None, b"{}").assert_error(415, "unsupported_media_type");
    let big = format!(
        "{{\"index\": 0, \"item\": {id}, \"ranking\": [0, 1, 2], \"pad\": \"{}\"}}",
        "x".repeat(100 * 1024)
    );
    http(
        a,
        "POST",
        "/api/submit",
        Some("application/json"),
        big.as_bytes(),
    )
    .assert_error(413, "body_too_large");
    get(a, "/api/nope").assert_error(404, "not_found");

    assert_eq!(std::fs::read_to_string(&out).unwrap_or_default(), "");
    // The same item is still there and takes a valid ranking.
    let r = submit(json!({"index": 0, "item": id, "ranking": [[0, 2], 1]}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(read_file(&out).len(), 1);
}

#[test]
fn a_torn_last_line_is_dropped_and_labelling_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("rankings.jsonl");
    let srv = start(prompts(3), 2, Fake::new(), &out);
    let item = get(srv.addr, "/api/next").json();
    let r = post(
        srv.addr,
        "/api/submit",
        &json!({"index": 0, "item": item["item"], "ranking": [1, 0]}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    drop(srv);
    // A crash in the middle of the next append leaves half a line.
    let mut f = std::fs::OpenOptions::new().append(true).open(&out).unwrap();
    f.write_all(b"{\"prompt\": [{\"role\": \"user\", \"content\": \"question numb")
        .unwrap();
    drop(f);

    let srv = start(prompts(3), 2, Fake::new(), &out);
    assert_eq!(srv.report.existing_records, 1);
    assert!(srv.report.truncated_bytes > 0);
    assert_eq!(srv.report.progress.ranked, 1);
    let item = get(srv.addr, "/api/next").json();
    assert_eq!(item["index"], 1);
    let r = post(
        srv.addr,
        "/api/submit",
        &json!({"index": 1, "item": item["item"], "ranking": [0, 1]}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.ends_with('\n'));
    assert_eq!(read_file(&out).len(), 2);
}

#[test]
fn a_failing_model_is_reported_and_the_prompt_can_be_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("rankings.jsonl");
    let fake = Arc::new(Fake {
        calls: AtomicUsize::new(0),
        fail: vec![0],
        delay: Duration::from_millis(20),
    });
    let srv = start(prompts(2), 2, fake, &out);
    let r = get(srv.addr, "/api/next");
    r.assert_error(500, "generation_failed");
    assert_eq!(r.json()["index"], 0);
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("broken for prompt 0"));
    assert_eq!(
        post(srv.addr, "/api/skip", &json!({"index": 0})).status,
        200
    );
    assert_eq!(get(srv.addr, "/api/next").json()["index"], 1);
}

#[test]
fn open_checks_its_inputs_and_merges_duplicate_prompts() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("rankings.jsonl");
    let fake: Arc<dyn Responder> = Fake::new();
    for k in [0, 1, 10] {
        let e = LabelApp::open(prompts(2), k, fake.clone(), &out)
            .err()
            .unwrap();
        assert!(e.to_string().contains(&format!("K = {k}")), "{e}");
    }
    assert!(LabelApp::open(vec![], 2, fake.clone(), &out).is_err());
    let mut bad = prompts(3);
    bad[1].push(Message {
        role: Role::Assistant,
        content: "an answer".into(),
    });
    let e = LabelApp::open(bad, 2, fake.clone(), &out).err().unwrap();
    assert!(e.to_string().starts_with("prompt 1:"), "{e}");

    let mut dup = prompts(3);
    dup.push(dup[0].clone());
    dup.push(dup[2].clone());
    let (app, report) = LabelApp::open(dup, 2, fake, &out).unwrap();
    assert_eq!(report.duplicate_prompts, 2);
    assert_eq!(app.progress().total, 3);
}

#[test]
fn the_page_is_one_self_contained_html_file() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = start(prompts(1), 2, Fake::new(), &tmp.path().join("r.jsonl"));
    let r = get(srv.addr, "/");
    assert_eq!(r.status, 200);
    assert!(r
        .headers
        .to_ascii_lowercase()
        .contains("content-type: text/html"));
    assert!(r.body.starts_with("<!doctype html>"));
    for needle in ["/api/next", "/api/submit", "/api/skip", "ranked "] {
        assert!(r.body.contains(needle), "{needle}");
    }
    // No external resources, and model text never goes through innerHTML.
    for banned in ["http://", "https://", "<link", "src=", "innerHTML"] {
        assert!(!r.body.contains(banned), "the page contains {banned:?}");
    }
}
