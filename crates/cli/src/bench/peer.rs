//! The PyTorch peer: `scripts/bench/torch_peer.py` run with `--serve`, one JSON command per line
//! on its stdin and one JSON answer per line on its stdout (the protocol is in the script's
//! docstring). The script is compiled into the binary and written to a scratch directory, so the
//! benchmark works from any directory; only a Python with torch is needed, and only for the peer.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use serde_json::Value;

/// The script, as committed.
const TORCH_PEER_PY: &str = include_str!("../../../../scripts/bench/torch_peer.py");

/// Lines of the peer's stderr kept to explain a failure.
const STDERR_TAIL: usize = 12;

/// A running peer process.
pub struct Peer {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    stderr_thread: Option<JoinHandle<()>>,
    /// The `ready` line: torch version, threads, parameter count, memory after setup.
    pub info: Value,
}

impl Peer {
    /// Starts `python script --model model_dir --mode mode --device device --serve` and waits
    /// for its `ready` line. `Err` carries a one-line reason to print (interpreter missing, torch
    /// not installed, the model not loadable, no such device).
    pub fn start(
        python: &str,
        scratch: &Path,
        model_dir: &Path,
        mode: &str,
        device: &str,
    ) -> Result<Peer, String> {
        let script = scratch.join("torch_peer.py");
        std::fs::write(&script, TORCH_PEER_PY)
            .map_err(|e| format!("cannot write {}: {e}", script.display()))?;
        let mut child = Command::new(python)
            .arg(&script)
            .arg("--model")
            .arg(model_dir)
            .args(["--mode", mode, "--device", device, "--serve"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {python:?}: {e}"))?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            return Err("the peer's pipes were not set up".into());
        };
        // Forward the peer's stderr (torch warnings) to ours and keep its tail for errors.
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let tail = Arc::clone(&stderr_tail);
        let stderr_thread = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("  [torch] {line}");
                if let Ok(mut t) = tail.lock() {
                    if t.len() == STDERR_TAIL {
                        t.pop_front();
                    }
                    t.push_back(line);
                }
            }
        });
        let mut peer = Peer {
            child,
            stdin: Some(stdin),
            stdout: BufReader::new(stdout),
            stderr_tail,
            stderr_thread: Some(stderr_thread),
            info: Value::Null,
        };
        let ready = peer.read_line()?;
        if ready.get("ready").and_then(Value::as_bool) != Some(true) {
            return Err(format!("unexpected first line from the peer: {ready}"));
        }
        peer.info = ready;
        Ok(peer)
    }

    /// Sends one command and returns its answer; an `{"error": ...}` answer is an `Err`.
    pub fn request(&mut self, cmd: &Value) -> Result<Value, String> {
        let stdin = self.stdin.as_mut().ok_or("the peer's stdin is closed")?;
        writeln!(stdin, "{cmd}")
            .and_then(|_| stdin.flush())
            .map_err(|e| format!("writing to the peer: {e}; {}", self.stderr_summary()))?;
        let answer = self.read_line()?;
        match answer.get("error") {
            Some(e) => Err(format!("the peer failed: {e}")),
            None => Ok(answer),
        }
    }

    /// `request`, then the number under `key`.
    pub fn request_f64(&mut self, cmd: &Value, key: &str) -> Result<(f64, Value), String> {
        let answer = self.request(cmd)?;
        let x = answer
            .get(key)
            .and_then(Value::as_f64)
            .ok_or_else(|| format!("the peer's answer lacks {key}: {answer}"))?;
        Ok((x, answer))
    }

    fn read_line(&mut self) -> Result<Value, String> {
        let mut line = String::new();
        match self.stdout.read_line(&mut line) {
            Ok(0) => {
                // The process ended: let the stderr thread drain so the reason is complete.
                let _ = self.child.wait();
                if let Some(t) = self.stderr_thread.take() {
                    let _ = t.join();
                }
                Err(format!("the peer exited; {}", self.stderr_summary()))
            }
            Ok(_) => serde_json::from_str(line.trim())
                .map_err(|e| format!("the peer wrote {:?}, not JSON: {e}", line.trim())),
            Err(e) => Err(format!("reading from the peer: {e}")),
        }
    }

    /// The last meaningful stderr line (e.g. `ModuleNotFoundError: No module named 'torch'`).
    fn stderr_summary(&self) -> String {
        let tail = self
            .stderr_tail
            .lock()
            .map(|t| t.clone())
            .unwrap_or_default();
        match tail.iter().rev().find(|l| !l.trim().is_empty()) {
            Some(l) => format!("its last message: {}", l.trim()),
            None => "it printed nothing on stderr".into(),
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = writeln!(stdin, "{}", serde_json::json!({"cmd": "quit"}));
        } // closing stdin ends the serve loop even if the quit line was lost
        let _ = self.child.wait();
        if let Some(t) = self.stderr_thread.take() {
            let _ = t.join();
        }
    }
}

/// The peer if it is running, or why not. Once a command fails the peer is dropped for the rest
/// of the run and its numbers are left out (a partial comparison would mislead).
pub struct PeerSlot {
    peer: Option<Peer>,
    /// Why there is no peer (`--no-peer`, no torch, a failed command).
    pub skipped: Option<String>,
}

impl PeerSlot {
    /// Starts the peer on `device` (`cpu`, `cuda:N`) unless `disabled`; a failure to start is
    /// recorded, not returned.
    pub fn start(
        disabled: bool,
        python: &str,
        scratch: &Path,
        model_dir: &Path,
        mode: &str,
        device: &str,
    ) -> PeerSlot {
        if disabled {
            return PeerSlot {
                peer: None,
                skipped: Some("--no-peer was given".into()),
            };
        }
        eprintln!(
            "starting the PyTorch peer ({python} torch_peer.py --mode {mode} --device {device})"
        );
        match Peer::start(python, scratch, model_dir, mode, device) {
            Ok(p) => PeerSlot {
                peer: Some(p),
                skipped: None,
            },
            Err(e) => {
                eprintln!("PyTorch peer skipped: {e}");
                PeerSlot {
                    peer: None,
                    skipped: Some(e),
                }
            }
        }
    }

    /// Runs `f` on the running peer; on failure records the reason and drops the peer.
    pub fn call<T>(&mut self, f: impl FnOnce(&mut Peer) -> Result<T, String>) -> Option<T> {
        let peer = self.peer.as_mut()?;
        match f(peer) {
            Ok(v) => Some(v),
            Err(e) => {
                eprintln!("PyTorch peer dropped: {e}");
                self.skipped = Some(e);
                self.peer = None;
                None
            }
        }
    }

    /// Whether the peer is running and has not failed.
    pub fn alive(&self) -> bool {
        self.peer.is_some()
    }

    /// The peer's `ready` line.
    pub fn info(&self) -> Option<&Value> {
        self.peer.as_ref().map(|p| &p.info)
    }
}
