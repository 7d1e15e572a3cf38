//! `chatforge label` tried as a person would: the real binary serving a real (tiny, barely
//! trained) model, driven by headless Chromium over the DevTools protocol. The test loads the
//! page, reorders with a ↓ button, marks a tie, flags a response, submits, checks the rankings
//! file, reloads, skips, finishes, and checks that model and prompt text are shown as text
//! (never parsed as HTML). It saves screenshots to the temp directory
//! (`label_screenshot.png`: the item with a tie and a flag marked; `label_screenshot_done.png`:
//! the end screen) after checking they decode.
//!
//! Needs Debian's `chromium` (or `$CHROMIUM`); without it the test says so and passes.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chatforge_data::corpus::ReadOptions;
use chatforge_data::ranking::{read_rankings, RankGroup};
use headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption;
use headless_chrome::{Browser, LaunchOptions, Tab};
use serde_json::Value;

fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |d| d.join(name)))
        .find(|p| p.is_file())
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn chatforge(args: &[&str]) {
    let o = Command::new(env!("CARGO_BIN_EXE_chatforge"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "chatforge {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A tokenizer and a two-step pretrained `tiny` model: real weights through the real loader
/// and engine, writing (random-looking) text.
fn tiny_model(dir: &Path) -> PathBuf {
    let mut text = String::new();
    for i in 0..400 {
        text.push_str(&format!(
            "Story {i}: Mira walked to the market of Flythholm and bought {} apples. \
             The weather was {}. She said hello to the baker.\n",
            i % 17,
            ["sunny", "cold", "windy", "grey"][i % 4]
        ));
    }
    let corpus = dir.join("corpus.txt");
    std::fs::write(&corpus, &text).unwrap();
    let tok = dir.join("tok.json");
    chatforge(&[
        "tokenizer",
        "train",
        "--input",
        p(&corpus),
        "--vocab-size",
        "300",
        "--out",
        p(&tok),
    ]);
    let cfg = dir.join("pretrain.toml");
    std::fs::write(
        &cfg,
        "preset = \"tiny\"\ncontext_length = 128\nbatch_size = 2\nsteps = 2\n\
         eval_every = 2\nsample_every = 2\nsample_tokens = 4\n[optim]\nwarmup_steps = 1\n",
    )
    .unwrap();
    let run = dir.join("run");
    chatforge(&[
        "pretrain",
        "--train",
        p(&corpus),
        "--val",
        p(&corpus),
        "--tokenizer",
        p(&tok),
        "--out",
        p(&run),
        "--config",
        p(&cfg),
    ]);
    run
}

/// The `chatforge label` process; killed when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_label(model: &Path, prompts: &Path, out: &Path) -> Server {
    let child = Command::new(env!("CARGO_BIN_EXE_chatforge"))
        .args([
            "label",
            "--model",
            p(model),
            "--prompts",
            p(prompts),
            "--k",
            "4",
            "--out",
            p(out),
            "--bind",
            "127.0.0.1:0",
            "--max-tokens",
            "24",
            "--seed",
            "5",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Owned by the guard from here on, so every way out of this function ends the process.
    let mut server = Server {
        child,
        url: String::new(),
    };
    let stderr = server.child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(rest) = line.strip_prefix("open ") {
                    server.url = rest.split_whitespace().next().unwrap().to_string();
                    return server;
                }
                seen.push(line);
            }
            Err(_) => panic!("chatforge label printed no URL; stderr: {seen:#?}"),
        }
    }
}

/// Evaluates a JS expression that returns a string (use JSON.stringify for anything else).
fn js(tab: &Tab, expr: &str) -> String {
    let v = tab.evaluate(expr, false).unwrap().value;
    match v {
        Some(Value::String(s)) => s,
        other => panic!("{expr} gave {other:?}"),
    }
}

fn js_json(tab: &Tab, expr: &str) -> Value {
    serde_json::from_str(&js(tab, &format!("JSON.stringify({expr})"))).unwrap()
}

/// Waits until `expr` (a JS boolean expression) holds.
fn wait_for(tab: &Tab, expr: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if js(tab, &format!("String(!!({expr}))")) == "true" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {expr}; page text: {}",
            js(tab, "document.body.innerText")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The visible item: progress text and the response texts in card order.
fn shown(tab: &Tab) -> (String, Vec<String>) {
    let progress = js(tab, "document.getElementById('progress-text').textContent");
    let texts = js_json(
        tab,
        "[...document.querySelectorAll('#responses .card .text')].map(e => e.textContent)",
    );
    let texts = serde_json::from_value(texts).unwrap();
    (progress, texts)
}

/// Clicks `selector` inside the card at `pos` (cards are re-rendered after every change, so
/// they are looked up afresh).
fn click_in_card(tab: &Tab, pos: usize, selector: &str) {
    let cards = tab.find_elements("#responses .card").unwrap();
    cards[pos].find_element(selector).unwrap().click().unwrap();
}

fn item_visible(tab: &Tab) -> bool {
    js(
        tab,
        "String(!document.getElementById('item').classList.contains('hidden') && \
         document.querySelectorAll('#responses .card').length === 4)",
    ) == "true"
}

fn screenshot(tab: &Tab, path: &Path) {
    let png = tab
        .capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)
        .unwrap();
    assert!(png.len() > 1000, "a {}-byte screenshot", png.len());
    let decoder = png::Decoder::new(std::io::Cursor::new(&png));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert!(info.width >= 800 && info.height >= 600, "{info:?}");
    // Not a blank image: some pixels differ from the first one.
    let px = info.line_size / info.width as usize;
    assert!(buf[..info.buffer_size()]
        .chunks(px)
        .any(|c| c != &buf[..px]));
    std::fs::write(path, &png).unwrap();
}

#[test]
fn a_person_ranks_responses_in_a_real_browser() {
    let Some(browser_path) = chromium() else {
        eprintln!(
            "SKIPPED a_person_ranks_responses_in_a_real_browser: no chromium on PATH \
             (apt-get install chromium, or set CHROMIUM)"
        );
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let prompts = tmp.path().join("prompts.jsonl");
    let hostile = "Is <b>this</b> bold? <img src=x onerror=\"document.title='pwned'\">";
    std::fs::write(
        &prompts,
        format!(
            "{}\n{}\n{}\n",
            serde_json::json!({"prompt": [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": hostile}]}),
            serde_json::json!({"prompt": [{"role": "user", "content": "Where does Mira live?"}]}),
            serde_json::json!({"prompt": [{"role": "user", "content": "Say hello to the baker."}]}),
        ),
    )
    .unwrap();
    let out = tmp.path().join("rankings.jsonl");
    let server = start_label(&model, &prompts, &out);

    let browser = Browser::new(
        LaunchOptions::default_builder()
            .path(Some(browser_path))
            .headless(true)
            .sandbox(false)
            .window_size(Some((1100, 1300)))
            .idle_browser_timeout(Duration::from_secs(300))
            .args(vec![std::ffi::OsStr::new("--disable-dev-shm-usage")])
            .build()
            .unwrap(),
    )
    .unwrap();
    let tab = browser.new_tab().unwrap();
    tab.set_default_timeout(Duration::from_secs(120));
    tab.navigate_to(&server.url)
        .unwrap()
        .wait_until_navigated()
        .unwrap();
    wait_for(
        &tab,
        "document.querySelectorAll('#responses .card').length === 4",
    );
    assert!(item_visible(&tab));
    let (progress, before) = shown(&tab);
    assert_eq!(progress, "ranked 0 / 3");
    assert!(before.iter().all(|t| !t.trim().is_empty()), "{before:?}");

    // The prompt is shown as text: no element was made from it and no script ran.
    let prompt_box = js_json(
        &tab,
        "({text: document.getElementById('prompt').innerText, \
           tags: document.querySelectorAll('#prompt b, #prompt img').length, \
           title: document.title})",
    );
    assert!(
        prompt_box["text"].as_str().unwrap().contains(hostile),
        "{prompt_box}"
    );
    assert!(prompt_box["text"]
        .as_str()
        .unwrap()
        .contains("You are a helpful assistant."));
    assert_eq!(prompt_box["tags"], 0);
    assert_ne!(prompt_box["title"], "pwned");

    // Move the best card down one (order B A C D), tie C with A, flag D.
    click_in_card(&tab, 0, "button.down");
    click_in_card(&tab, 2, "input.tie");
    click_in_card(&tab, 3, "input.harmful");
    let (_, now) = shown(&tab);
    assert_eq!(
        now,
        vec![
            before[1].clone(),
            before[0].clone(),
            before[2].clone(),
            before[3].clone()
        ]
    );
    let badges = js_json(
        &tab,
        "[...document.querySelectorAll('#responses .card .num')].map(e => e.textContent)",
    );
    assert_eq!(badges, serde_json::json!(["#1", "#2", "#2", "#3"]));
    let shot = std::env::temp_dir().join("label_screenshot.png");
    screenshot(&tab, &shot);

    tab.find_element("#submit").unwrap().click().unwrap();
    wait_for(
        &tab,
        "document.getElementById('progress-text').textContent === 'ranked 1 / 3' && \
         document.querySelectorAll('#responses .card').length === 4 && \
         document.getElementById('prompt').innerText.includes('Where does Mira live?')",
    );

    let recs = read_rankings(std::slice::from_ref(&out), &ReadOptions::default())
        .unwrap()
        .0;
    assert_eq!(recs.len(), 1);
    let rec = &recs[0];
    assert_eq!(rec.responses, before);
    assert_eq!(rec.prompt.len(), 2);
    assert_eq!(rec.prompt[1].content, hostile);
    assert_eq!(
        rec.ranking,
        vec![
            RankGroup::One(1),
            RankGroup::Tie(vec![0, 2]),
            RankGroup::One(3)
        ]
    );
    assert_eq!(rec.flagged, vec![3]);

    // A reload shows the same item and the progress kept on the server.
    let (_, second) = shown(&tab);
    tab.reload(true, None)
        .unwrap()
        .wait_until_navigated()
        .unwrap();
    wait_for(
        &tab,
        "document.querySelectorAll('#responses .card').length === 4",
    );
    let (progress, again) = shown(&tab);
    assert_eq!(progress, "ranked 1 / 3");
    assert_eq!(again, second);

    // Skip it, drag the last response of the next prompt to the top, submit, and reach the
    // end screen. (The drag is dispatched as DOM drag events: the CDP mouse does not start an
    // HTML5 drag in headless Chromium.)
    tab.find_element("#skip").unwrap().click().unwrap();
    wait_for(
        &tab,
        "document.getElementById('prompt').innerText.includes('Say hello to the baker.') && \
         document.querySelectorAll('#responses .card').length === 4",
    );
    let (progress, third) = shown(&tab);
    assert_eq!(progress, "ranked 1 / 3 · 1 skipped");
    js(
        &tab,
        "(() => { const cards = document.querySelectorAll('#responses .card'); \
           const dt = new DataTransfer(); \
           const fire = (el, type) => el.dispatchEvent(new DragEvent(type, \
             {bubbles: true, cancelable: true, dataTransfer: dt})); \
           fire(cards[3], 'dragstart'); fire(cards[0], 'dragover'); fire(cards[0], 'drop'); \
           fire(cards[3], 'dragend'); return 'dropped'; })()",
    );
    assert_eq!(
        shown(&tab).1,
        vec![
            third[3].clone(),
            third[0].clone(),
            third[1].clone(),
            third[2].clone()
        ]
    );
    tab.find_element("#submit").unwrap().click().unwrap();
    wait_for(
        &tab,
        "!document.getElementById('done').classList.contains('hidden')",
    );
    let done = js(&tab, "document.getElementById('done').innerText");
    assert!(done.contains("Nothing left for this session"), "{done}");
    assert!(
        done.contains("2 of 3 prompts are ranked and saved."),
        "{done}"
    );
    assert!(
        done.contains("The prompt you skipped will be offered again"),
        "{done}"
    );
    screenshot(
        &tab,
        &std::env::temp_dir().join("label_screenshot_done.png"),
    );

    let recs = read_rankings(std::slice::from_ref(&out), &ReadOptions::default())
        .unwrap()
        .0;
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[1].ranking, [3, 0, 1, 2].map(RankGroup::One).to_vec());
    assert_eq!(recs[1].responses, third);
    assert!(recs[1].flagged.is_empty());
    assert_eq!(recs[1].prompt[0].content, "Say hello to the baker.");
    drop(server);

    // A restart resumes from the file: the skipped prompt is the only one left.
    let server = start_label(&model, &prompts, &out);
    tab.navigate_to(&server.url)
        .unwrap()
        .wait_until_navigated()
        .unwrap();
    wait_for(
        &tab,
        "document.querySelectorAll('#responses .card').length === 4 && \
         document.getElementById('prompt').innerText.includes('Where does Mira live?')",
    );
    assert_eq!(shown(&tab).0, "ranked 2 / 3");
    // Same seed, same prompt index: the same responses as before the restart.
    assert_eq!(shown(&tab).1, second);
    eprintln!("screenshots: {}", shot.display());
}
