//! Checkpoint directories: save, find, read back, manifest contents, pruning (TESTING.md family 7).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use chatforge_model::checkpoint::{
    latest_checkpoint, save_checkpoint, tensors_to_safetensors, Checkpoint, CheckpointError,
    MANIFEST_NAME,
};

/// Names of the entries of `run/checkpoints/`, sorted.
fn listing(run: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn files_for(step: u64) -> Vec<(String, Vec<u8>)> {
    vec![
        (
            "model.safetensors".into(),
            vec![step as u8; 1000 + step as usize],
        ),
        (
            "meta.json".into(),
            format!("{{\"step\": {step}}}").into_bytes(),
        ),
    ]
}

fn save(run: &Path, step: u64, keep: usize) {
    let files = files_for(step);
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    save_checkpoint(run, step, &refs, keep).unwrap();
}

#[test]
fn saved_files_read_back_and_the_manifest_lists_sizes_and_hashes() {
    let run = tempfile::tempdir().unwrap();
    let model: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
    let files: [(&str, &[u8]); 3] = [
        ("model.safetensors", &model),
        ("abc.txt", b"abc"),
        ("empty.bin", b""),
    ];
    let dir = save_checkpoint(run.path(), 100, &files, 3).unwrap();
    assert_eq!(dir, run.path().join("checkpoints").join("step-00000100"));
    assert_eq!(
        listing(run.path()),
        ["step-00000100"],
        "no temporary directory is left"
    );

    let ckpt = latest_checkpoint(run.path()).unwrap().unwrap();
    assert_eq!(ckpt.step, 100);
    assert_eq!(ckpt.dir, dir);
    for (name, bytes) in files {
        assert_eq!(ckpt.read(name).unwrap(), bytes, "{name}");
    }

    // The manifest read as plain JSON, independently of our types; hashes are the FIPS 180-2
    // test vector for "abc" and the well-known digest of the empty string.
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join(MANIFEST_NAME)).unwrap()).unwrap();
    assert_eq!(manifest["format"], "chatforge-checkpoint");
    assert_eq!(manifest["version"], 1);
    assert_eq!(manifest["step"], 100);
    let entries = manifest["files"].as_array().unwrap();
    let names: Vec<&str> = entries
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["abc.txt", "empty.bin", "model.safetensors"]);
    assert_eq!(entries[0]["size"], 3);
    assert_eq!(
        entries[0]["sha256"],
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(entries[1]["size"], 0);
    assert_eq!(
        entries[1]["sha256"],
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(entries[2]["size"], 5000);
    assert_eq!(entries[2]["sha256"].as_str().unwrap().len(), 64);
}

#[test]
fn keep_two_deletes_older_checkpoints() {
    let run = tempfile::tempdir().unwrap();
    for step in 1..=5 {
        save(run.path(), step * 10, 2);
    }
    assert_eq!(listing(run.path()), ["step-00000040", "step-00000050"]);
    assert_eq!(latest_checkpoint(run.path()).unwrap().unwrap().step, 50);
}

#[test]
fn keep_below_two_is_raised_to_two() {
    for keep in [0, 1] {
        let run = tempfile::tempdir().unwrap();
        for step in 1..=4 {
            save(run.path(), step, keep);
        }
        assert_eq!(
            listing(run.path()),
            ["step-00000003", "step-00000004"],
            "keep={keep}"
        );
    }
}

#[test]
fn keep_three_keeps_three() {
    let run = tempfile::tempdir().unwrap();
    for step in 1..=6 {
        save(run.path(), step, 3);
    }
    assert_eq!(
        listing(run.path()),
        ["step-00000004", "step-00000005", "step-00000006"]
    );
}

#[test]
fn steps_sort_numerically_past_eight_digits() {
    let run = tempfile::tempdir().unwrap();
    save(run.path(), 99_999_999, 5);
    save(run.path(), 100_000_000, 5);
    save(run.path(), 7, 5);
    let ckpt = latest_checkpoint(run.path()).unwrap().unwrap();
    assert_eq!(ckpt.step, 100_000_000);
    assert_eq!(ckpt.dir.file_name().unwrap(), "step-100000000");
}

#[test]
fn resaving_a_step_replaces_it_and_leaves_nothing_behind() {
    let run = tempfile::tempdir().unwrap();
    save(run.path(), 1, 2);
    save_checkpoint(run.path(), 2, &[("a.bin", b"first")], 2).unwrap();
    save_checkpoint(run.path(), 2, &[("a.bin", b"second"), ("b.bin", b"x")], 2).unwrap();
    assert_eq!(listing(run.path()), ["step-00000001", "step-00000002"]);
    let ckpt = latest_checkpoint(run.path()).unwrap().unwrap();
    assert_eq!(ckpt.step, 2);
    assert_eq!(ckpt.read("a.bin").unwrap(), b"second");
    assert_eq!(ckpt.read("b.bin").unwrap(), b"x");
    assert_eq!(ckpt.manifest.files.len(), 2);
}

#[test]
fn bad_file_names_are_refused_before_anything_is_written() {
    let run = tempfile::tempdir().unwrap();
    for name in [
        "",
        "../escape",
        "a/b",
        ".hidden",
        "MANIFEST.json",
        "..",
        "a\\b",
    ] {
        let err = save_checkpoint(run.path(), 1, &[(name, b"x")], 2).unwrap_err();
        assert!(
            matches!(err, CheckpointError::InvalidFileName { .. }),
            "{name:?}: {err}"
        );
    }
    let err = save_checkpoint(run.path(), 1, &[("a", b"x"), ("a", b"y")], 2).unwrap_err();
    assert!(
        matches!(err, CheckpointError::InvalidFileName { .. }),
        "{err}"
    );
    assert!(!run.path().join("checkpoints").exists());
    assert!(!run.path().parent().unwrap().join("escape").exists());
}

#[test]
fn no_checkpoint_gives_none() {
    let run = tempfile::tempdir().unwrap();
    assert!(latest_checkpoint(run.path()).unwrap().is_none());
    assert!(latest_checkpoint(&run.path().join("absent"))
        .unwrap()
        .is_none());
    fs::create_dir(run.path().join("checkpoints")).unwrap();
    assert!(latest_checkpoint(run.path()).unwrap().is_none());
}

#[test]
fn stale_working_directories_of_dead_processes_are_deleted() {
    let run = tempfile::tempdir().unwrap();
    save(run.path(), 1, 2);
    // A process that has exited and been reaped: its pid names a dead writer.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let ours = std::process::id();
    let root = run.path().join("checkpoints");
    for name in [
        format!(".step-00000002.tmp-{dead}"),
        format!(".step-00000001.del-{dead}"),
        format!(".step-00000001.old-{dead}"),
        format!(".step-00000009.tmp-{ours}"),
    ] {
        fs::create_dir(root.join(&name)).unwrap();
        fs::write(root.join(&name).join("model.safetensors"), b"partial").unwrap();
    }
    save(run.path(), 2, 2);
    // Ours is not stale while we live (a save of ours might be using it); the dead ones go.
    assert_eq!(
        listing(run.path()),
        [
            format!(".step-00000009.tmp-{ours}"),
            "step-00000001".to_string(),
            "step-00000002".to_string()
        ]
    );
}

#[test]
fn junk_in_checkpoints_is_ignored_and_kept() {
    let run = tempfile::tempdir().unwrap();
    save(run.path(), 5, 2);
    let root = run.path().join("checkpoints");
    for dir in ["step-abc", "step-9", "notes", "step-00000001.bak"] {
        fs::create_dir(root.join(dir)).unwrap();
    }
    fs::write(root.join("step-00000009"), b"a file, not a directory").unwrap();
    save(run.path(), 6, 2);
    save(run.path(), 7, 2);
    assert_eq!(latest_checkpoint(run.path()).unwrap().unwrap().step, 7);
    assert_eq!(
        listing(run.path()),
        [
            "notes",
            "step-00000001.bak",
            "step-00000006",
            "step-00000007",
            "step-00000009",
            "step-9",
            "step-abc"
        ]
    );
}

#[test]
fn reading_an_unlisted_file_is_an_error() {
    let run = tempfile::tempdir().unwrap();
    save(run.path(), 1, 2);
    let ckpt = latest_checkpoint(run.path()).unwrap().unwrap();
    let err = ckpt.read("optimizer.safetensors").unwrap_err();
    assert!(
        matches!(err, CheckpointError::NotInManifest { .. }),
        "{err}"
    );
    let err = ckpt.read(MANIFEST_NAME).unwrap_err();
    assert!(
        matches!(err, CheckpointError::NotInManifest { .. }),
        "{err}"
    );
}

#[test]
fn a_file_changed_after_verification_fails_to_read() {
    let run = tempfile::tempdir().unwrap();
    save(run.path(), 1, 2);
    let ckpt = Checkpoint::verify(&run.path().join("checkpoints/step-00000001")).unwrap();
    let path = ckpt.dir.join("meta.json");
    let mut bytes = fs::read(&path).unwrap();
    bytes[0] ^= 1;
    fs::write(&path, &bytes).unwrap();
    let err = ckpt.read("meta.json").unwrap_err();
    assert!(matches!(err, CheckpointError::HashMismatch { .. }), "{err}");
    bytes.push(b'\n');
    fs::write(&path, &bytes).unwrap();
    let err = ckpt.read("meta.json").unwrap_err();
    assert!(matches!(err, CheckpointError::SizeMismatch { .. }), "{err}");
}

#[test]
fn tensors_round_trip_through_a_checkpoint() {
    let run = tempfile::tempdir().unwrap();
    let dev = Device::Cpu;
    let mut tensors = BTreeMap::new();
    let w = Tensor::arange(0f32, 12., &dev)
        .unwrap()
        .reshape((3, 4))
        .unwrap();
    tensors.insert("wte.weight".to_string(), w.clone());
    tensors.insert(
        "step".to_string(),
        Tensor::new(&[41i64], &dev)
            .unwrap()
            .to_dtype(DType::I64)
            .unwrap(),
    );
    let bytes = tensors_to_safetensors(&tensors).unwrap();
    save_checkpoint(run.path(), 3, &[("model.safetensors", &bytes)], 2).unwrap();
    let ckpt = latest_checkpoint(run.path()).unwrap().unwrap();
    let back = ckpt.read_tensors("model.safetensors", &dev).unwrap();
    assert_eq!(back["wte.weight"].dims(), &[3, 4]);
    assert_eq!(
        back["wte.weight"].to_vec2::<f32>().unwrap(),
        w.to_vec2::<f32>().unwrap()
    );
    assert_eq!(back["step"].to_vec1::<i64>().unwrap(), [41]);
}
