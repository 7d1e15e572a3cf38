//! The error type of checkpoint directories and safetensors I/O.

use std::path::PathBuf;

/// `Result` with [`CheckpointError`] as the default error.
pub type Result<T, E = CheckpointError> = std::result::Result<T, E>;

/// Everything that can go wrong saving, verifying or loading a checkpoint, or parsing
/// safetensors bytes. Each variant carries what is needed to act on it (path, key, sizes).
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// An I/O operation on `path` failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done ("create", "write", "rename", ...).
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file name given to `save_checkpoint` or listed in a manifest is not a plain file name.
    #[error("invalid checkpoint file name {name:?}: {reason}")]
    InvalidFileName {
        /// The offending name.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// `MANIFEST.json` does not parse or says something impossible.
    #[error("manifest {path}: {reason}")]
    BadManifest {
        /// Path of the manifest.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// `MANIFEST.json` is larger than [`super::MAX_MANIFEST_BYTES`]; it is not read.
    #[error("manifest {path} is {size} bytes, over the {limit}-byte limit")]
    ManifestTooLarge {
        /// Path of the manifest.
        path: PathBuf,
        /// Its size on disk.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The directory name and the manifest disagree about the step.
    #[error("checkpoint {dir}: the directory name says step {dir_step}, the manifest says {manifest_step}")]
    StepMismatch {
        /// The checkpoint directory.
        dir: PathBuf,
        /// The step in the directory name.
        dir_step: u64,
        /// The step in the manifest.
        manifest_step: u64,
    },
    /// A file listed in the manifest does not exist.
    #[error("checkpoint file {path} is missing")]
    MissingFile {
        /// The missing file.
        path: PathBuf,
    },
    /// A file's size differs from the manifest.
    #[error("checkpoint file {path} has {actual} bytes, the manifest says {expected}")]
    SizeMismatch {
        /// The file.
        path: PathBuf,
        /// Size listed in the manifest.
        expected: u64,
        /// Size found.
        actual: u64,
    },
    /// A file's sha256 differs from the manifest (the file is corrupt).
    #[error("checkpoint file {path} has sha256 {actual}, the manifest says {expected}")]
    HashMismatch {
        /// The file.
        path: PathBuf,
        /// Hex sha256 listed in the manifest.
        expected: String,
        /// Hex sha256 found.
        actual: String,
    },
    /// `Checkpoint::read` was asked for a file the manifest does not list.
    #[error("checkpoint {dir} has no file named {name:?}")]
    NotInManifest {
        /// The checkpoint directory.
        dir: PathBuf,
        /// The requested name.
        name: String,
    },
    /// An error while parsing the named file (wraps a safetensors error with its path).
    #[error("{path}: {source}")]
    InFile {
        /// The file being parsed.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: Box<CheckpointError>,
    },
    /// Safetensors bytes shorter than the 8-byte header-length prefix.
    #[error("safetensors data is {len} bytes, shorter than its 8-byte header-length prefix")]
    SafetensorsTooShort {
        /// Total length of the bytes.
        len: usize,
    },
    /// The declared header length exceeds [`super::MAX_HEADER_BYTES`].
    #[error("safetensors header length {header_len} exceeds the {limit}-byte limit")]
    HeaderTooLarge {
        /// Declared header length.
        header_len: u64,
        /// The limit.
        limit: u64,
    },
    /// The declared header length runs past the end of the bytes.
    #[error(
        "safetensors header length {header_len} exceeds the {available} bytes after the prefix"
    )]
    HeaderPastEnd {
        /// Declared header length.
        header_len: u64,
        /// Bytes available after the 8-byte prefix.
        available: u64,
    },
    /// The header is not valid UTF-8 JSON.
    #[error("safetensors header is not valid JSON: {reason}")]
    HeaderNotJson {
        /// The JSON parser's message.
        reason: String,
    },
    /// The header is JSON but not the expected structure (not an object, bad entry).
    #[error("safetensors header: {reason}")]
    BadHeader {
        /// What is wrong.
        reason: String,
    },
    /// A tensor's dtype is unknown or not supported.
    #[error("tensor {key:?}: unknown or unsupported dtype {dtype}")]
    UnsupportedDtype {
        /// Tensor name.
        key: String,
        /// The dtype as written (or as candle names it when saving).
        dtype: String,
    },
    /// The tensor name `__metadata__` is reserved by the safetensors format.
    #[error("tensor name {key:?} is reserved by the safetensors format")]
    ReservedKey {
        /// The reserved name.
        key: String,
    },
    /// The shape's element count times the dtype size overflows 64 bits.
    #[error("tensor {key:?}: shape {shape:?} overflows the byte count")]
    ShapeOverflow {
        /// Tensor name.
        key: String,
        /// The declared shape.
        shape: Vec<u64>,
    },
    /// `data_offsets` has end < begin.
    #[error("tensor {key:?}: data_offsets [{begin}, {end}] end before begin")]
    OffsetsReversed {
        /// Tensor name.
        key: String,
        /// Declared begin.
        begin: u64,
        /// Declared end.
        end: u64,
    },
    /// `data_offsets` ends past the data section.
    #[error("tensor {key:?}: data_offsets end {end} is past the {data_len}-byte data section")]
    OffsetsPastEnd {
        /// Tensor name.
        key: String,
        /// Declared end.
        end: u64,
        /// Length of the data section.
        data_len: u64,
    },
    /// The byte range does not match shape × dtype size.
    #[error(
        "tensor {key:?}: data_offsets span {actual} bytes but shape {shape:?} needs {expected}"
    )]
    TensorSizeMismatch {
        /// Tensor name.
        key: String,
        /// Declared shape.
        shape: Vec<u64>,
        /// Bytes needed by shape × dtype size.
        expected: u64,
        /// Bytes spanned by the offsets.
        actual: u64,
    },
    /// Two tensors' byte ranges overlap.
    #[error("tensors {first:?} and {second:?} overlap in the data section")]
    TensorsOverlap {
        /// The tensor starting first.
        first: String,
        /// The tensor starting inside it.
        second: String,
    },
    /// Bytes of the data section belong to no tensor (a hole or trailing bytes).
    #[error(
        "safetensors data section has {len} bytes at offset {offset} that belong to no tensor"
    )]
    UnusedBytes {
        /// Start of the unused range within the data section.
        offset: u64,
        /// Its length.
        len: u64,
    },
    /// An expected tensor is absent.
    #[error("missing tensor {key:?}")]
    MissingTensor {
        /// The expected name.
        key: String,
    },
    /// A tensor that is not expected is present.
    #[error("unexpected tensor {key:?}")]
    UnexpectedTensor {
        /// The unexpected name.
        key: String,
    },
    /// A tensor has the wrong shape.
    #[error("tensor {key:?}: expected shape {expected:?}, got {got:?}")]
    ShapeMismatch {
        /// Tensor name.
        key: String,
        /// Expected shape.
        expected: Vec<usize>,
        /// Actual shape.
        got: Vec<usize>,
    },
    /// candle failed while building or reading the named tensor.
    #[error("tensor {key:?}: {source}")]
    Tensor {
        /// Tensor name.
        key: String,
        /// The candle error.
        #[source]
        source: candle_core::Error,
    },
}

impl CheckpointError {
    /// Builds an [`CheckpointError::Io`] (used with `map_err`).
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| CheckpointError::Io { op, path, source }
    }
}
