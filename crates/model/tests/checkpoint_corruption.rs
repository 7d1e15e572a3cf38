//! Corrupted checkpoints are detected and skipped (TESTING.md families 7 and 8): every flipped
//! byte of every file, truncated or missing files, hostile manifests.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use chatforge_data::Rng;
use chatforge_model::checkpoint::{
    latest_checkpoint, save_checkpoint, Checkpoint, CheckpointError, MANIFEST_NAME,
};

const NAMES: [&str; 4] = [
    "model.safetensors",
    "optimizer.safetensors",
    "config.json",
    "trainer_state.json",
];

/// Deterministic contents of file `name` at `step`.
fn contents(step: u64, name: &str) -> Vec<u8> {
    let mut rng = Rng::derive(step, name);
    let len = 2000 + rng.index(3000);
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

/// A run with complete checkpoints at steps 1 and 2; returns the run and step 2's directory.
fn two_checkpoints() -> (tempfile::TempDir, PathBuf) {
    let run = tempfile::tempdir().unwrap();
    for step in [1, 2] {
        let files: Vec<Vec<u8>> = NAMES.iter().map(|n| contents(step, n)).collect();
        let refs: Vec<(&str, &[u8])> = NAMES
            .iter()
            .zip(&files)
            .map(|(n, b)| (*n, b.as_slice()))
            .collect();
        save_checkpoint(run.path(), step, &refs, 5).unwrap();
    }
    let dir = run.path().join("checkpoints/step-00000002");
    (run, dir)
}

/// `latest_checkpoint` returns step 1 intact.
fn assert_falls_back_to_step_1(run: &Path, what: &str) {
    let ckpt = latest_checkpoint(run)
        .unwrap()
        .unwrap_or_else(|| panic!("{what}: no checkpoint found"));
    assert_eq!(ckpt.step, 1, "{what}");
    for name in NAMES {
        assert_eq!(
            ckpt.read(name).unwrap(),
            contents(1, name),
            "{what}: {name}"
        );
    }
}

/// XORs byte `pos` of the file with `mask`, in place (rewriting the whole file through a
/// truncation would make ext4 flush it on close, which is slow over thousands of flips).
fn flip(path: &Path, pos: usize, mask: u8) {
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut byte = [0u8];
    file.seek(SeekFrom::Start(pos as u64)).unwrap();
    file.read_exact(&mut byte).unwrap();
    file.seek(SeekFrom::Start(pos as u64)).unwrap();
    file.write_all(&[byte[0] ^ mask]).unwrap();
}

#[test]
fn one_flipped_byte_in_any_data_file_is_detected() {
    let (run, dir) = two_checkpoints();
    let mut rng = Rng::new(11);
    for name in NAMES {
        let path = dir.join(name);
        let len = fs::metadata(&path).unwrap().len() as usize;
        let mut positions = vec![0, len / 2, len - 1];
        positions.extend((0..5).map(|_| rng.index(len)));
        for pos in positions {
            let mask = 1 + rng.below(255) as u8;
            flip(&path, pos, mask);
            let what = format!("{name} byte {pos} ^ {mask:#04x}");
            let err = Checkpoint::verify(&dir).unwrap_err();
            assert!(
                matches!(err, CheckpointError::HashMismatch { .. }),
                "{what}: {err}"
            );
            assert_falls_back_to_step_1(run.path(), &what);
            flip(&path, pos, mask);
            assert!(Checkpoint::verify(&dir).is_ok(), "{what}: restored");
        }
    }
}

#[test]
fn every_flipped_byte_of_the_manifest_is_detected() {
    let (run, dir) = two_checkpoints();
    let path = dir.join(MANIFEST_NAME);
    let mut rng = Rng::new(12);
    let original = fs::read(&path).unwrap();
    // Every position, each with a random non-zero mask, a one-bit flip, and every JSON
    // whitespace byte (which would leave the meaning intact where the byte was whitespace).
    for (pos, &byte) in original.iter().enumerate() {
        let mut masks = vec![1 + rng.below(255) as u8, 1 << rng.below(8)];
        masks.extend(b" \t\n\r".iter().map(|ws| ws ^ byte).filter(|&m| m != 0));
        for mask in masks {
            flip(&path, pos, mask);
            assert!(
                Checkpoint::verify(&dir).is_err(),
                "manifest byte {pos} ^ {mask:#04x} went unnoticed"
            );
            flip(&path, pos, mask);
        }
    }
    flip(&path, original.len() / 2, 0x20);
    assert_falls_back_to_step_1(run.path(), "flipped manifest");
}

#[test]
fn truncated_or_missing_files_are_detected() {
    type Damage = fn(&Path);
    let cases: [(&str, Damage); 6] = [
        ("manifest truncated to half", |dir| {
            let path = dir.join(MANIFEST_NAME);
            let bytes = fs::read(&path).unwrap();
            fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        }),
        ("manifest empty", |dir| {
            fs::write(dir.join(MANIFEST_NAME), b"").unwrap()
        }),
        ("manifest missing", |dir| {
            fs::remove_file(dir.join(MANIFEST_NAME)).unwrap()
        }),
        ("model missing", |dir| {
            fs::remove_file(dir.join("model.safetensors")).unwrap()
        }),
        ("model truncated by one byte", |dir| {
            let path = dir.join("model.safetensors");
            let bytes = fs::read(&path).unwrap();
            fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        }),
        ("config replaced by a directory", |dir| {
            fs::remove_file(dir.join("config.json")).unwrap();
            fs::create_dir(dir.join("config.json")).unwrap();
        }),
    ];
    for (what, damage) in cases {
        let (run, dir) = two_checkpoints();
        damage(&dir);
        assert!(Checkpoint::verify(&dir).is_err(), "{what}");
        assert_falls_back_to_step_1(run.path(), what);
    }
}

#[test]
fn extra_files_are_ignored() {
    let (run, dir) = two_checkpoints();
    fs::write(dir.join("notes.txt"), b"added by a user").unwrap();
    assert_eq!(latest_checkpoint(run.path()).unwrap().unwrap().step, 2);
}

#[test]
fn a_step_that_disagrees_with_its_directory_name_is_skipped() {
    let (run, dir) = two_checkpoints();
    let copy = run.path().join("checkpoints/step-00000003");
    fs::create_dir(&copy).unwrap();
    for entry in fs::read_dir(&dir).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
    }
    let err = Checkpoint::verify(&copy).unwrap_err();
    assert!(
        matches!(
            err,
            CheckpointError::StepMismatch {
                dir_step: 3,
                manifest_step: 2,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(latest_checkpoint(run.path()).unwrap().unwrap().step, 2);
}

#[test]
fn junk_directory_names_are_ignored() {
    let (run, dir) = two_checkpoints();
    // Complete copies of step 2 under names that are not checkpoint names must not be picked,
    // even though they would verify and their names contain bigger numbers.
    for junk in [
        "step-9",
        "step-000000099",
        "step-00000099.bak",
        "Step-00000099",
        "99",
    ] {
        let copy = run.path().join("checkpoints").join(junk);
        fs::create_dir(&copy).unwrap();
        for entry in fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
        }
    }
    fs::write(run.path().join("checkpoints/step-00000100"), b"a file").unwrap();
    assert_eq!(latest_checkpoint(run.path()).unwrap().unwrap().step, 2);
}

#[test]
fn all_checkpoints_corrupt_gives_none() {
    let (run, dir) = two_checkpoints();
    flip(&dir.join("config.json"), 0, 1);
    flip(
        &run.path()
            .join("checkpoints/step-00000001/model.safetensors"),
        7,
        1,
    );
    assert!(latest_checkpoint(run.path()).unwrap().is_none());
}

/// Writes `manifest` (a JSON value) as step 2's manifest.
fn write_manifest(dir: &Path, manifest: serde_json::Value) {
    fs::write(
        dir.join(MANIFEST_NAME),
        serde_json::to_vec_pretty(&manifest).unwrap(),
    )
    .unwrap();
}

#[test]
fn hostile_manifests_are_refused() {
    let (run, dir) = two_checkpoints();
    let good: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join(MANIFEST_NAME)).unwrap()).unwrap();
    let outside = run.path().join("outside.txt");
    fs::write(&outside, b"abc").unwrap();
    let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    let mut escape = good.clone();
    escape["files"][0] = serde_json::json!({"name": "../../outside.txt", "size": 3, "sha256": abc});
    let mut duplicate = good.clone();
    let first = good["files"][1].clone();
    duplicate["files"][0] = first.clone();
    duplicate["files"][1] = first;
    let mut bad_hash = good.clone();
    bad_hash["files"][0]["sha256"] = "ABCDEF".into();
    let mut version = good.clone();
    version["version"] = 99.into();
    let mut format = good.clone();
    format["format"] = "something-else".into();
    let mut negative = good.clone();
    negative["files"][0]["size"] = (-1).into();
    let cases = [
        ("path escape", escape),
        ("duplicate", duplicate),
        ("bad hash", bad_hash),
        ("version", version),
        ("format", format),
        ("negative size", negative),
        ("not an object", serde_json::json!([1, 2, 3])),
    ];
    for (what, manifest) in cases {
        write_manifest(&dir, manifest);
        let err = Checkpoint::verify(&dir).unwrap_err();
        assert!(
            matches!(
                err,
                CheckpointError::BadManifest { .. } | CheckpointError::InvalidFileName { .. }
            ),
            "{what}: {err}"
        );
        assert_falls_back_to_step_1(run.path(), what);
    }

    // A manifest too large to be plausible is refused by size, before it is read.
    let path = dir.join(MANIFEST_NAME);
    fs::File::create(&path).unwrap().set_len(64 << 20).unwrap();
    let err = Checkpoint::verify(&dir).unwrap_err();
    assert!(
        matches!(err, CheckpointError::ManifestTooLarge { .. }),
        "{err}"
    );
    assert_falls_back_to_step_1(run.path(), "huge manifest");
}
