//! `MANIFEST.json`: the list of a checkpoint's files with sizes and sha256, written last.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::{CheckpointError, Result};
use super::layout::MANIFEST_NAME;

/// The `format` field of every manifest.
pub const MANIFEST_FORMAT: &str = "chatforge-checkpoint";

/// The manifest format version this code writes and reads.
pub const MANIFEST_VERSION: u32 = 1;

/// A manifest larger than this is refused before it is read (16 MiB).
pub const MAX_MANIFEST_BYTES: u64 = 16 << 20;

/// The contents of `MANIFEST.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`MANIFEST_FORMAT`].
    pub format: String,
    /// Format version, [`MANIFEST_VERSION`].
    pub version: u32,
    /// The training step this checkpoint was taken at.
    pub step: u64,
    /// Every file of the checkpoint except the manifest itself, sorted by name.
    pub files: Vec<ManifestEntry>,
}

/// One file of a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// Plain file name inside the checkpoint directory.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Lowercase hex sha256 of the contents.
    pub sha256: String,
}

impl Manifest {
    /// The manifest of `files` (name, contents) at `step`, entries sorted by name.
    pub(crate) fn for_files(step: u64, files: &[(&str, &[u8])]) -> Manifest {
        let mut entries: Vec<ManifestEntry> = files
            .iter()
            .map(|(name, bytes)| ManifestEntry {
                name: (*name).to_string(),
                size: bytes.len() as u64,
                sha256: sha256_hex(bytes),
            })
            .collect();
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Manifest {
            format: MANIFEST_FORMAT.to_string(),
            version: MANIFEST_VERSION,
            step,
            files: entries,
        }
    }

    /// The entry for the file `name`, if listed.
    pub fn entry(&self, name: &str) -> Option<&ManifestEntry> {
        self.files.iter().find(|e| e.name == name)
    }

    /// Serializes to pretty JSON with a trailing newline.
    pub(crate) fn to_json_bytes(&self, path: &Path) -> Result<Vec<u8>> {
        let mut bytes =
            serde_json::to_vec_pretty(self).map_err(|e| CheckpointError::BadManifest {
                path: path.to_path_buf(),
                reason: format!("cannot serialize: {e}"),
            })?;
        bytes.push(b'\n');
        Ok(bytes)
    }

    /// Reads and validates `dir/MANIFEST.json`: size under [`MAX_MANIFEST_BYTES`], JSON of the
    /// right shape, known format and version, plain unique file names, 64-hex-digit hashes.
    pub(crate) fn read(dir: &Path) -> Result<Manifest> {
        let path = dir.join(MANIFEST_NAME);
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(CheckpointError::MissingFile { path })
            }
            Err(e) => return Err(CheckpointError::io("open", &path)(e)),
        };
        let size = file
            .metadata()
            .map_err(CheckpointError::io("stat", &path))?
            .len();
        if size > MAX_MANIFEST_BYTES {
            return Err(CheckpointError::ManifestTooLarge {
                path,
                size,
                limit: MAX_MANIFEST_BYTES,
            });
        }
        let mut bytes = Vec::with_capacity(size as usize);
        (&mut file)
            .take(MAX_MANIFEST_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(CheckpointError::io("read", &path))?;
        let bad = |reason: String| CheckpointError::BadManifest {
            path: path.clone(),
            reason,
        };
        let manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| bad(format!("not a manifest: {e}")))?;
        if manifest.format != MANIFEST_FORMAT {
            return Err(bad(format!(
                "format {:?} is not {MANIFEST_FORMAT:?}",
                manifest.format
            )));
        }
        if manifest.version != MANIFEST_VERSION {
            return Err(bad(format!(
                "version {} is not supported (this build reads {MANIFEST_VERSION})",
                manifest.version
            )));
        }
        let mut seen = BTreeSet::new();
        for entry in &manifest.files {
            validate_file_name(&entry.name)?;
            if !seen.insert(entry.name.as_str()) {
                return Err(bad(format!("file {:?} is listed twice", entry.name)));
            }
            if !is_sha256_hex(&entry.sha256) {
                return Err(bad(format!(
                    "file {:?}: sha256 {:?} is not 64 lowercase hex digits",
                    entry.name, entry.sha256
                )));
            }
        }
        // Every byte must matter: a flipped byte that leaves the meaning intact (whitespace, an
        // escape) would otherwise go unnoticed, so the file must be exactly what we write.
        if manifest.to_json_bytes(&path)? != bytes {
            return Err(bad(
                "not in canonical form (edited or corrupted)".to_string()
            ));
        }
        Ok(manifest)
    }
}

/// Checks that `name` is a plain file name that may live in a checkpoint directory: not empty,
/// no path separators or NUL, not `.`/`..`, not hidden, not the manifest's own name.
pub(crate) fn validate_file_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.contains(['/', '\\', '\0']) {
        Some("contains a path separator or NUL")
    } else if name.starts_with('.') {
        Some("starts with '.'")
    } else if name == MANIFEST_NAME {
        Some("reserved for the manifest")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(CheckpointError::InvalidFileName {
            name: name.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Lowercase hex sha256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Streams the file at `path` through sha256; returns (bytes read, lowercase hex digest).
pub(crate) fn sha256_file(path: &Path) -> Result<(u64, String)> {
    let mut file = File::open(path).map_err(CheckpointError::io("open", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CheckpointError::io("read", path)(e)),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((total, hex(&hasher.finalize())))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_matches_fips_180_test_vectors() {
        // FIPS 180-2 appendix B.1 and the empty-string digest.
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn file_names_are_plain() {
        for ok in ["model.safetensors", "config.json", "a b", "x..y"] {
            assert!(validate_file_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a/b",
            "..",
            ".",
            ".hidden",
            "a\\b",
            "a\0b",
            MANIFEST_NAME,
        ] {
            assert!(
                matches!(
                    validate_file_name(bad),
                    Err(CheckpointError::InvalidFileName { .. })
                ),
                "{bad:?}"
            );
        }
    }
}
