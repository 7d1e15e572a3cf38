//! Finding and verifying checkpoints: [`latest_checkpoint`] and [`Checkpoint`].

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use super::error::{CheckpointError, Result};
use super::layout::{parse_step_dir_name, step_dirs, CHECKPOINTS_DIR};
use super::manifest::{sha256_file, sha256_hex, Manifest, ManifestEntry};
use super::safetensors_io::safetensors_from_bytes;

/// A checkpoint directory whose manifest and files have been verified.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// The checkpoint directory (e.g. `run/checkpoints/step-00000100`).
    pub dir: PathBuf,
    /// The step it was taken at.
    pub step: u64,
    /// Its manifest.
    pub manifest: Manifest,
}

impl Checkpoint {
    /// Verifies the checkpoint in `dir`: the manifest parses and is valid, every listed file
    /// exists with exactly the listed size and sha256, and, when the directory is named
    /// `step-NNNNNNNN`, that step equals the manifest's. (A directory with another name, e.g. a
    /// copy a user renamed, is trusted to hold the manifest's step.) Files not in the manifest
    /// are ignored.
    pub fn verify(dir: &Path) -> Result<Checkpoint> {
        let manifest = Manifest::read(dir)?;
        let dir_step = dir
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(parse_step_dir_name);
        if let Some(dir_step) = dir_step {
            if dir_step != manifest.step {
                return Err(CheckpointError::StepMismatch {
                    dir: dir.to_path_buf(),
                    dir_step,
                    manifest_step: manifest.step,
                });
            }
        }
        for entry in &manifest.files {
            let path = dir.join(&entry.name);
            check_size(&path, entry)?;
            let (size, hash) = sha256_file(&path)?;
            if size != entry.size {
                // The file changed size between the stat and the read.
                return Err(CheckpointError::SizeMismatch {
                    path,
                    expected: entry.size,
                    actual: size,
                });
            }
            if hash != entry.sha256 {
                return Err(CheckpointError::HashMismatch {
                    path,
                    expected: entry.sha256.clone(),
                    actual: hash,
                });
            }
        }
        Ok(Checkpoint {
            dir: dir.to_path_buf(),
            step: manifest.step,
            manifest,
        })
    }

    /// Reads the file `name`, checking its size and sha256 against the manifest again (the file
    /// may have changed since [`Checkpoint::verify`]). The size is checked before the buffer is
    /// allocated.
    pub fn read(&self, name: &str) -> Result<Vec<u8>> {
        let entry = self
            .manifest
            .entry(name)
            .ok_or_else(|| CheckpointError::NotInManifest {
                dir: self.dir.clone(),
                name: name.to_string(),
            })?;
        let path = self.dir.join(name);
        check_size(&path, entry)?;
        // The size was just checked against the file on disk, so this allocation is bounded
        // by the file, not by what the manifest claims.
        let mut bytes = Vec::with_capacity(usize::try_from(entry.size).unwrap_or(0));
        File::open(&path)
            .and_then(|f| f.take(entry.size.saturating_add(1)).read_to_end(&mut bytes))
            .map_err(CheckpointError::io("read", &path))?;
        if bytes.len() as u64 != entry.size {
            return Err(CheckpointError::SizeMismatch {
                path,
                expected: entry.size,
                actual: bytes.len() as u64,
            });
        }
        let hash = sha256_hex(&bytes);
        if hash != entry.sha256 {
            return Err(CheckpointError::HashMismatch {
                path,
                expected: entry.sha256.clone(),
                actual: hash,
            });
        }
        Ok(bytes)
    }

    /// Reads the safetensors file `name` (verified as in [`Checkpoint::read`]) into tensors on
    /// `device`; a parse error is wrapped in [`CheckpointError::InFile`] with the file's path.
    pub fn read_tensors(&self, name: &str, device: &Device) -> Result<BTreeMap<String, Tensor>> {
        let bytes = self.read(name)?;
        safetensors_from_bytes(&bytes, device).map_err(|e| CheckpointError::InFile {
            path: self.dir.join(name),
            source: Box::new(e),
        })
    }
}

/// The newest checkpoint under `run_dir/checkpoints/` that verifies, or `None` when there is
/// none (including when `checkpoints/` does not exist). Directories that fail verification are
/// skipped with a `tracing` warning naming the reason; names that are not `step-NNNNNNNN`
/// directories are ignored.
pub fn latest_checkpoint(run_dir: &Path) -> Result<Option<Checkpoint>> {
    for (step, dir) in step_dirs(&run_dir.join(CHECKPOINTS_DIR))? {
        match Checkpoint::verify(&dir) {
            Ok(ckpt) => return Ok(Some(ckpt)),
            Err(error) => {
                tracing::warn!(step, dir = %dir.display(), %error, "skipping invalid checkpoint");
            }
        }
    }
    Ok(None)
}

/// Whether `dir` looks complete without hashing: the manifest reads and every listed file
/// exists with the listed size. Used by pruning, which must not hash every kept checkpoint on
/// every save; corruption inside a file is caught by [`Checkpoint::verify`] at load time.
pub(crate) fn is_structurally_complete(dir: &Path) -> bool {
    match Manifest::read(dir) {
        Ok(manifest) => manifest
            .files
            .iter()
            .all(|entry| check_size(&dir.join(&entry.name), entry).is_ok()),
        Err(_) => false,
    }
}

/// Checks that `path` is a regular file of exactly `entry.size` bytes.
fn check_size(path: &Path, entry: &ManifestEntry) -> Result<()> {
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CheckpointError::MissingFile {
                path: path.to_path_buf(),
            })
        }
        Err(e) => return Err(CheckpointError::io("stat", path)(e)),
    };
    if !meta.is_file() {
        return Err(CheckpointError::MissingFile {
            path: path.to_path_buf(),
        });
    }
    if meta.len() != entry.size {
        return Err(CheckpointError::SizeMismatch {
            path: path.to_path_buf(),
            expected: entry.size,
            actual: meta.len(),
        });
    }
    Ok(())
}
