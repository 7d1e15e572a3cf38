//! Kill test (TESTING.md family 7): a child process saves checkpoints of a few MB in a loop and
//! is SIGKILLed at pseudo-random moments; every time, `latest_checkpoint` must find a complete
//! checkpoint whose files are exactly what the child wrote for that step, at least as new as the
//! last save the child saw complete; and a new save must then succeed and clean up the dead
//! child's temporary directory.
//!
//! The test re-executes its own binary (`current_exe()` with `--exact <this test>`); the
//! environment variable [`CHILD_ENV`] makes that copy act as the child.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use std::{env, fs, thread};

use chatforge_data::Rng;
use chatforge_model::checkpoint::{latest_checkpoint, save_checkpoint};

const CHILD_ENV: &str = "CHATFORGE_CHECKPOINT_KILL_CHILD";
const TEST_NAME: &str = "killed_saves_always_leave_a_complete_checkpoint";
const TRIALS: usize = 20;
/// The child stops by itself after this long, in case the parent died without killing it.
const CHILD_LIFETIME: Duration = Duration::from_secs(20);

/// What the child saves at `step`: about 3 MB, a deterministic function of the step.
fn files_for(step: u64) -> Vec<(&'static str, Vec<u8>)> {
    let blob = |label: &str, len: usize| {
        let mut rng = Rng::derive(step, label);
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            out.extend_from_slice(&rng.next_u64().to_le_bytes());
        }
        out.truncate(len);
        out
    };
    vec![
        (
            "model.safetensors",
            blob("model", 1_500_000 + step as usize),
        ),
        ("optimizer.safetensors", blob("optimizer", 1_500_000)),
        (
            "trainer_state.json",
            format!("{{\"step\":{step}}}").into_bytes(),
        ),
        ("config.json", b"{\"n_layer\":2}".to_vec()),
    ]
}

/// The child: save steps 1, 2, 3, ... with keep = 2; after each completed save, create the
/// marker `done/<step>` (so a marker proves that save had returned).
fn child(run: &Path) {
    let done = run.join("done");
    fs::create_dir_all(&done).unwrap();
    fs::write(run.join("started"), b"").unwrap();
    let start = Instant::now();
    let mut step = 1;
    while start.elapsed() < CHILD_LIFETIME {
        let files = files_for(step);
        let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (*n, b.as_slice())).collect();
        save_checkpoint(run, step, &refs, 2).unwrap();
        fs::write(done.join(step.to_string()), b"").unwrap();
        step += 1;
    }
}

/// Kills the child when dropped, so a failing assertion never leaves it running.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The highest step with a `done` marker.
fn last_completed(run: &Path) -> Option<u64> {
    fs::read_dir(run.join("done"))
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .max()
}

fn hidden_dirs(run: &Path) -> Vec<PathBuf> {
    match fs::read_dir(run.join("checkpoints")) {
        Ok(entries) => entries
            .map(|e| e.unwrap())
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| e.path())
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn killed_saves_always_leave_a_complete_checkpoint() {
    if let Some(run) = env::var_os(CHILD_ENV) {
        child(Path::new(&run));
        return;
    }
    let exe = env::current_exe().unwrap();
    let mut rng = Rng::new(2024);
    let mut trials_with_a_save = 0;
    let mut kills_mid_save = 0;
    for trial in 0..TRIALS {
        let run = tempfile::tempdir().unwrap();
        let child = Command::new(&exe)
            .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, run.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut child = KillOnDrop(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !run.path().join("started").exists() {
            assert!(
                Instant::now() < deadline,
                "trial {trial}: child never started"
            );
            thread::sleep(Duration::from_millis(1));
        }
        // Odd trials kill from the start (often during the first save); even trials first
        // wait for save 1, 2 or 3 to complete, so that kills also land in later saves and their
        // pruning, and so that half the trials certainly have a checkpoint to find.
        if trial % 2 == 0 {
            let wait_for = 1 + rng.below(3);
            while last_completed(run.path()).unwrap_or(0) < wait_for {
                assert!(
                    Instant::now() < deadline,
                    "trial {trial}: no save completed"
                );
                thread::sleep(Duration::from_millis(1));
            }
        }
        thread::sleep(Duration::from_millis(rng.below(51)));
        if let Some(status) = child.0.try_wait().unwrap() {
            panic!("trial {trial}: the child exited by itself ({status}); run it alone to see why");
        }
        child.0.kill().unwrap();
        child.0.wait().unwrap();

        let completed = last_completed(run.path());
        let stale = hidden_dirs(run.path());
        kills_mid_save += usize::from(!stale.is_empty());
        let latest = latest_checkpoint(run.path()).unwrap();
        match (&latest, completed) {
            (None, Some(step)) => panic!("trial {trial}: step {step} completed but none found"),
            (None, None) => {}
            (Some(ckpt), _) => {
                trials_with_a_save += 1;
                assert!(
                    ckpt.step >= completed.unwrap_or(0),
                    "trial {trial}: found step {} older than completed step {completed:?}",
                    ckpt.step
                );
                let expected = files_for(ckpt.step);
                assert_eq!(ckpt.manifest.files.len(), expected.len(), "trial {trial}");
                for (name, bytes) in expected {
                    assert!(ckpt.read(name).unwrap() == bytes, "trial {trial}: {name}");
                }
            }
        }

        // Resume: the next save succeeds, is found, and removes the dead child's leftovers.
        let next = latest.map_or(1, |c| c.step + 1);
        let files = files_for(next);
        let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (*n, b.as_slice())).collect();
        save_checkpoint(run.path(), next, &refs, 2).unwrap();
        assert_eq!(latest_checkpoint(run.path()).unwrap().unwrap().step, next);
        assert_eq!(
            hidden_dirs(run.path()),
            Vec::<PathBuf>::new(),
            "trial {trial}"
        );
    }
    eprintln!(
        "{TRIALS} kills: {trials_with_a_save} after at least one save, \
         {kills_mid_save} left a save half-written"
    );
    // Every even trial waited for a completed save before killing.
    assert!(trials_with_a_save >= TRIALS / 2);
}
