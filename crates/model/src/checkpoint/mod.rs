//! Crash-consistent checkpoint directories and validated safetensors I/O.
//!
//! A run directory holds `checkpoints/step-00000100/` directories. A checkpoint is a set of
//! named files (the trainer passes e.g. `model.safetensors`, `optimizer.safetensors`,
//! `config.json`, `meta.json`, `trainer_state.json`, `tokenizer.json`) plus `MANIFEST.json`,
//! written last, that lists every file with its size and sha256, the step and a format version.
//!
//! # How a save survives a crash
//!
//! [`save_checkpoint`] writes every file into a hidden sibling directory
//! (`.step-00000100.tmp-<pid>`), fsyncs each file, writes and fsyncs the manifest, fsyncs the
//! directory, renames it to `step-00000100` and fsyncs `checkpoints/`. A `step-*` directory
//! therefore only ever appears complete; a process killed mid-save leaves a hidden temporary
//! directory that the next save of any process deletes once its writer is dead. Then the newest
//! `keep` (at least [`MIN_KEEP`]) complete checkpoints are kept and older ones deleted (each
//! renamed to a hidden name first, so a half-deleted directory never looks like a checkpoint).
//!
//! [`latest_checkpoint`] scans `step-*` directories newest first and returns the newest that
//! verifies (manifest parses, every file has the listed size and sha256, the step matches the
//! directory name); the others are skipped with a `tracing` warning.
//!
//! One writer per run directory is assumed (two processes saving into the same `checkpoints/`
//! at once is not supported).
//!
//! # Safetensors
//!
//! [`tensors_to_safetensors`] and [`safetensors_from_bytes`] read and write the safetensors
//! format with our own validation of hostile input: every length, dtype, shape product and
//! offset is checked before any tensor memory is allocated.

mod error;
mod layout;
mod load;
mod manifest;
mod safetensors_io;
mod save;

pub use error::{CheckpointError, Result};
pub use layout::{step_dir_name, CHECKPOINTS_DIR, MANIFEST_NAME};
pub use load::{latest_checkpoint, Checkpoint};
pub use manifest::{
    Manifest, ManifestEntry, MANIFEST_FORMAT, MANIFEST_VERSION, MAX_MANIFEST_BYTES,
};
pub use safetensors_io::{
    check_shapes, safetensors_from_bytes, tensors_to_safetensors, MAX_HEADER_BYTES,
};
pub use save::{save_checkpoint, MIN_KEEP};
