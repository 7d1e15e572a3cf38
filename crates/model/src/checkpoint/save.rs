//! Writing a checkpoint atomically ([`save_checkpoint`]) and pruning old ones.

use std::collections::BTreeSet;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::error::{CheckpointError, Result};
use super::layout::{
    process_may_be_alive, step_dir_name, step_dirs, sync_dir, work_dir_name, work_dirs, WorkKind,
    CHECKPOINTS_DIR, MANIFEST_NAME,
};
use super::load::is_structurally_complete;
use super::manifest::{validate_file_name, Manifest};

/// The fewest checkpoints pruning keeps; a smaller `keep` is raised to this, so that a crash
/// while one checkpoint is being replaced or corrupted still leaves another to resume from.
pub const MIN_KEEP: usize = 2;

/// Saves `files` (name, contents) as the checkpoint of `step` under `run_dir/checkpoints/` and
/// returns its directory (`run_dir/checkpoints/step-NNNNNNNN`).
///
/// The files are written into the hidden directory `.step-NNNNNNNN.tmp-<pid>`, each fsynced;
/// then `MANIFEST.json` (sizes and sha256 of every file, the step, the format version) is
/// written and fsynced, the directory fsynced, renamed to its final name, and `checkpoints/`
/// fsynced. If a checkpoint of the same step already exists it is first renamed aside and
/// deleted after the new one is in place; a crash between those two renames leaves this step
/// absent (the older checkpoints remain and are found), never a mixture of the two.
///
/// Then pruning keeps the newest `keep.max(MIN_KEEP)` structurally complete checkpoints
/// (manifest reads, every file has its listed size), deletes `step-*` directories older than
/// the oldest kept one, and deletes hidden working directories left by dead processes. Pruning
/// failures are logged with `tracing::warn!` and do not fail the save, which has succeeded.
///
/// File names must be plain (no separators, not hidden, not `MANIFEST.json`) and unique.
pub fn save_checkpoint(
    run_dir: &Path,
    step: u64,
    files: &[(&str, &[u8])],
    keep: usize,
) -> Result<PathBuf> {
    let mut names = BTreeSet::new();
    for (name, _) in files {
        validate_file_name(name)?;
        if !names.insert(*name) {
            return Err(CheckpointError::InvalidFileName {
                name: (*name).to_string(),
                reason: "given twice",
            });
        }
    }
    let root = run_dir.join(CHECKPOINTS_DIR);
    if !root.is_dir() {
        fs::create_dir_all(&root).map_err(CheckpointError::io("create directory", &root))?;
        sync_dir(run_dir)?;
    }
    let pid = std::process::id();
    let tmp = root.join(work_dir_name(step, WorkKind::Tmp, pid));
    remove_if_present(&tmp)?;
    let final_dir = root.join(step_dir_name(step));
    let written =
        write_dir(&tmp, step, files).and_then(|()| publish(&root, &tmp, &final_dir, step));
    if let Err(error) = written {
        if let Err(cleanup) = remove_if_present(&tmp) {
            tracing::warn!(%cleanup, "could not remove the temporary checkpoint directory");
        }
        return Err(error);
    }
    prune(&root, keep.max(MIN_KEEP));
    Ok(final_dir)
}

/// Creates `dir` and writes every file and then the manifest into it, each fsynced, then
/// fsyncs `dir`.
fn write_dir(dir: &Path, step: u64, files: &[(&str, &[u8])]) -> Result<()> {
    fs::create_dir(dir).map_err(CheckpointError::io("create directory", dir))?;
    for (name, bytes) in files {
        write_synced(&dir.join(name), bytes)?;
    }
    let manifest_path = dir.join(MANIFEST_NAME);
    let manifest = Manifest::for_files(step, files).to_json_bytes(&manifest_path)?;
    write_synced(&manifest_path, &manifest)?;
    sync_dir(dir)
}

/// Moves the finished `tmp` to `final_dir` (replacing an existing one) and fsyncs `root`.
fn publish(root: &Path, tmp: &Path, final_dir: &Path, step: u64) -> Result<()> {
    let replaced = if fs::symlink_metadata(final_dir).is_ok() {
        let old = root.join(work_dir_name(step, WorkKind::Old, std::process::id()));
        remove_if_present(&old)?;
        fs::rename(final_dir, &old).map_err(CheckpointError::io("rename", final_dir))?;
        Some(old)
    } else {
        None
    };
    if let Err(e) = fs::rename(tmp, final_dir) {
        if let Some(old) = &replaced {
            // Put the previous checkpoint back rather than leave the step absent.
            if let Err(error) = fs::rename(old, final_dir) {
                tracing::warn!(%error, "could not restore the checkpoint being replaced");
            }
        }
        return Err(CheckpointError::io("rename", tmp)(e));
    }
    sync_dir(root)?;
    if let Some(old) = replaced {
        if let Err(error) = remove_if_present(&old) {
            tracing::warn!(%error, "could not delete the replaced checkpoint");
        }
    }
    Ok(())
}

/// Keeps the newest `keep` structurally complete checkpoints, deletes older `step-*`
/// directories and the working directories of dead processes. Logs failures, never fails.
fn prune(root: &Path, keep: usize) {
    let dirs = match step_dirs(root) {
        Ok(dirs) => dirs,
        Err(error) => {
            tracing::warn!(%error, "could not list checkpoints to prune");
            return;
        }
    };
    let mut complete = 0;
    let mut oldest_kept = None;
    for (step, dir) in &dirs {
        if is_structurally_complete(dir) {
            complete += 1;
            if complete == keep {
                oldest_kept = Some(*step);
                break;
            }
        }
    }
    let pid = std::process::id();
    if let Some(oldest_kept) = oldest_kept {
        for (step, dir) in dirs.iter().filter(|(step, _)| *step < oldest_kept) {
            // Renamed first so that a half-deleted directory never looks like a checkpoint.
            let doomed = root.join(work_dir_name(*step, WorkKind::Del, pid));
            let result = remove_if_present(&doomed)
                .and_then(|()| fs::rename(dir, &doomed).map_err(CheckpointError::io("rename", dir)))
                .and_then(|()| sync_dir(root))
                .and_then(|()| remove_if_present(&doomed));
            if let Err(error) = result {
                tracing::warn!(step, %error, "could not delete an old checkpoint");
            }
        }
    }
    match work_dirs(root) {
        Ok(work) => {
            for (step, _kind, owner, dir) in work {
                if owner == pid || process_may_be_alive(owner) {
                    continue;
                }
                if let Err(error) = remove_if_present(&dir) {
                    tracing::warn!(step, %error, "could not delete a stale checkpoint directory");
                }
            }
        }
        Err(error) => tracing::warn!(%error, "could not list stale checkpoint directories"),
    }
}

/// Writes `bytes` to a new file at `path` and fsyncs it.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(CheckpointError::io("create", path))?;
    file.write_all(bytes)
        .map_err(CheckpointError::io("write", path))?;
    file.sync_all().map_err(CheckpointError::io("fsync", path))
}

/// Removes the directory (or file) at `path` if it exists.
fn remove_if_present(path: &Path) -> Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(CheckpointError::io("stat", path)(e)),
    };
    let removed = if meta.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    match removed {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CheckpointError::io("remove", path)(e)),
    }
}
