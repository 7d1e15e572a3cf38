//! Names on disk: `checkpoints/step-00000100/`, the hidden `.step-00000100.<kind>-<pid>`
//! directories of saves and deletions in progress, and directory fsync.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use super::error::{CheckpointError, Result};

/// Name of the directory inside a run directory that holds the checkpoints.
pub const CHECKPOINTS_DIR: &str = "checkpoints";

/// Name of the manifest file inside a checkpoint directory (written last).
pub const MANIFEST_NAME: &str = "MANIFEST.json";

/// The directory name of the checkpoint of `step`: `step-` and at least eight digits.
pub fn step_dir_name(step: u64) -> String {
    format!("step-{step:08}")
}

/// The step of a checkpoint directory name, or `None` when `name` is not exactly
/// `step_dir_name(step)` for some step (so `step-100`, `step-00000100.bak`, `step-x` are not).
pub(crate) fn parse_step_dir_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("step-")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let step: u64 = digits.parse().ok()?;
    (step_dir_name(step) == name).then_some(step)
}

/// What a hidden working directory is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WorkKind {
    /// A save being written.
    Tmp,
    /// A checkpoint being replaced by a re-save of the same step.
    Old,
    /// A checkpoint being deleted by pruning.
    Del,
}

impl WorkKind {
    fn as_str(self) -> &'static str {
        match self {
            WorkKind::Tmp => "tmp",
            WorkKind::Old => "old",
            WorkKind::Del => "del",
        }
    }
}

/// The hidden working directory name `.step-00000100.<kind>-<pid>`.
pub(crate) fn work_dir_name(step: u64, kind: WorkKind, pid: u32) -> String {
    format!(".{}.{}-{pid}", step_dir_name(step), kind.as_str())
}

/// Parses a hidden working directory name into its step, kind and writer pid.
pub(crate) fn parse_work_dir_name(name: &str) -> Option<(u64, WorkKind, u32)> {
    let rest = name.strip_prefix('.')?;
    let (step_part, work_part) = rest.split_once('.')?;
    let step = parse_step_dir_name(step_part)?;
    let (kind, pid) = work_part.split_once('-')?;
    let kind = match kind {
        "tmp" => WorkKind::Tmp,
        "old" => WorkKind::Old,
        "del" => WorkKind::Del,
        _ => return None,
    };
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let pid: u32 = pid.parse().ok()?;
    (work_dir_name(step, kind, pid) == name).then_some((step, kind, pid))
}

/// The `step-*` directories under `root` as `(step, path)`, newest (highest step) first.
/// Other entries (files, junk names, hidden working directories) are ignored. A missing
/// `root` gives an empty list.
pub(crate) fn step_dirs(root: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let entries = match fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(CheckpointError::io("list", root)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(CheckpointError::io("list", root))?;
        let name = entry.file_name();
        let Some(step) = name.to_str().and_then(parse_step_dir_name) else {
            continue;
        };
        let path = entry.path();
        if path.is_dir() {
            out.push((step, path));
        }
    }
    out.sort_by_key(|(step, _)| std::cmp::Reverse(*step));
    Ok(out)
}

/// The hidden working directories under `root` as `(step, kind, pid, path)`.
pub(crate) fn work_dirs(root: &Path) -> Result<Vec<(u64, WorkKind, u32, PathBuf)>> {
    let entries = fs::read_dir(root).map_err(CheckpointError::io("list", root))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(CheckpointError::io("list", root))?;
        let name = entry.file_name();
        if let Some((step, kind, pid)) = name.to_str().and_then(parse_work_dir_name) {
            out.push((step, kind, pid, entry.path()));
        }
    }
    Ok(out)
}

/// Whether process `pid` may still be running. Only Linux (`/proc`) can say "no"; everywhere
/// else, and when `/proc` is not mounted, every process counts as alive so nothing is deleted.
/// A zombie (killed but not yet reaped) counts as alive.
pub(crate) fn process_may_be_alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") && Path::new("/proc/self").exists() {
        Path::new("/proc").join(pid.to_string()).exists()
    } else {
        true
    }
}

/// fsyncs a directory so that creations, renames and deletions inside it are durable.
/// A no-op on platforms that cannot open a directory as a file (Windows).
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    if cfg!(unix) {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        File::open(dir)
            .and_then(|f| f.sync_all())
            .map_err(CheckpointError::io("fsync directory", dir))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_names_round_trip_and_reject_near_misses() {
        assert_eq!(step_dir_name(100), "step-00000100");
        assert_eq!(step_dir_name(123_456_789_012), "step-123456789012");
        assert_eq!(parse_step_dir_name("step-00000100"), Some(100));
        assert_eq!(
            parse_step_dir_name("step-123456789012"),
            Some(123_456_789_012)
        );
        for bad in [
            "step-100",
            "step-000000100",
            "step-",
            "step-0000010x",
            "step-00000100.bak",
            "step--0000100",
            "step-+0000100",
            "Step-00000100",
            "step-99999999999999999999999",
        ] {
            assert_eq!(parse_step_dir_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn work_names_round_trip() {
        let name = work_dir_name(7, WorkKind::Tmp, 4242);
        assert_eq!(name, ".step-00000007.tmp-4242");
        assert_eq!(parse_work_dir_name(&name), Some((7, WorkKind::Tmp, 4242)));
        assert_eq!(
            parse_work_dir_name(".step-00000007.old-1"),
            Some((7, WorkKind::Old, 1))
        );
        assert_eq!(
            parse_work_dir_name(".step-00000007.del-1"),
            Some((7, WorkKind::Del, 1))
        );
        for bad in [
            ".step-00000007.tmp-",
            ".step-00000007.tmp-x",
            ".step-00000007.foo-1",
            ".step-7.tmp-1",
            "step-00000007.tmp-1",
            ".step-00000007.tmp-01",
        ] {
            assert_eq!(parse_work_dir_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn this_process_is_alive() {
        assert!(process_may_be_alive(std::process::id()));
    }
}
