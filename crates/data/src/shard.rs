//! Token shards: a tokenized corpus on disk, memory-mapped for training.
//!
//! # Format (version 1, all integers little-endian)
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `b"CFSHARD\0"` |
//! | 8 | 4 | version, `u32` = 1 |
//! | 12 | 4 | dtype, `u32`: bytes per token, 2 (`u16`) or 4 (`u32`) |
//! | 16 | 8 | count, `u64`: number of tokens |
//! | 24 | count × dtype | the tokens |
//!
//! The writer picks `u16` when every id fits (`vocab_size <= 65536`), else `u32`. The file is
//! written to a temporary file, fsynced and renamed into place, so a reader never sees a torn
//! shard. [`Shard::open`] checks the whole header against the file size (with checked arithmetic,
//! before touching the body) and returns a typed error for anything else: a shard is trusted
//! only after it validates.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::Mmap;

use crate::atomic::sync_dir;
use crate::error::{Error, Result};

/// The eight bytes every shard starts with.
pub const MAGIC: [u8; 8] = *b"CFSHARD\0";
/// The format version this build writes and reads.
pub const VERSION: u32 = 1;
/// Length of the fixed header in bytes.
pub const HEADER_LEN: usize = 24;

/// Bytes per token a writer uses for a vocabulary of `vocab_size` ids.
pub fn dtype_for_vocab(vocab_size: usize) -> Result<u32> {
    match vocab_size {
        0 => Err(Error::InvalidVocabSize { vocab_size }),
        1..=65_536 => Ok(2),
        v if (v as u64) <= (u32::MAX as u64) + 1 => Ok(4),
        _ => Err(Error::InvalidVocabSize { vocab_size }),
    }
}

/// The 24-byte header for `count` tokens of `dtype` bytes.
fn header(dtype: u32, count: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&dtype.to_le_bytes());
    h[16..24].copy_from_slice(&count.to_le_bytes());
    h
}

/// Writes `tokens` to `path` as a shard, atomically (temp file, fsync, rename, fsync directory).
///
/// Every token must be `< vocab_size`; the first one that is not is reported with its position
/// and nothing is written. Parent directories are created.
pub fn write_shard(path: &Path, tokens: &[u32], vocab_size: usize) -> Result<()> {
    let dtype = dtype_for_vocab(vocab_size)?;
    if let Some((index, &token)) = tokens
        .iter()
        .enumerate()
        .find(|&(_, &t)| (t as u64) >= vocab_size as u64)
    {
        return Err(Error::TokenOutOfRange {
            index,
            token,
            vocab_size,
        });
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let name = path.file_name().ok_or_else(|| Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "path has no file name"),
    })?;
    // Unique per process and per call, so concurrent writers never share a temp file.
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let result = write_body(&tmp, tokens, dtype).and_then(|()| {
        fs::rename(&tmp, path)
            .map_err(|e| Error::io(path, e))
            .and_then(|()| sync_dir(&dir).map_err(|e| Error::io(&dir, e)))
    });
    if result.is_err() {
        // Best effort: do not leave a half-written temp file behind; the write error is what matters.
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Streams header and tokens into `tmp` in fixed-size chunks, then fsyncs it.
fn write_body(tmp: &Path, tokens: &[u32], dtype: u32) -> Result<()> {
    let io = |e| Error::io(tmp, e);
    let file = File::create(tmp).map_err(io)?;
    let mut w = BufWriter::with_capacity(1 << 16, file);
    w.write_all(&header(dtype, tokens.len() as u64))
        .map_err(io)?;
    let mut buf = Vec::with_capacity(1 << 16);
    for chunk in tokens.chunks(1 << 14) {
        buf.clear();
        if dtype == 2 {
            for &t in chunk {
                buf.extend_from_slice(&(t as u16).to_le_bytes());
            }
        } else {
            for &t in chunk {
                buf.extend_from_slice(&t.to_le_bytes());
            }
        }
        w.write_all(&buf).map_err(io)?;
    }
    let file = w.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)
}

/// A validated, memory-mapped token shard.
#[derive(Debug)]
pub struct Shard {
    path: PathBuf,
    map: Mmap,
    dtype: u32,
    len: usize,
}

impl Shard {
    /// Opens and validates the shard at `path`: the size must hold the header, the magic,
    /// version and dtype must be known, and `count × dtype` must equal the body size exactly.
    /// Nothing is allocated in proportion to the header's claims.
    pub fn open(path: &Path) -> Result<Shard> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if file_len < HEADER_LEN as u64 {
            return Err(Error::ShardTruncatedHeader {
                path: path.to_path_buf(),
                len: file_len,
                need: HEADER_LEN as u64,
            });
        }
        // SAFETY: the map is read-only. As with any memory map, another process truncating or
        // rewriting the file while it is mapped is undefined behaviour; shards are written once,
        // atomically (a new inode is renamed over the old), and never modified in place.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let (dtype, len) = validate(path, &map)?;
        Ok(Shard {
            path: path.to_path_buf(),
            map,
            dtype,
            len,
        })
    }

    /// The file this shard was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the shard holds no tokens.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes per token on disk: 2 (`u16`) or 4 (`u32`).
    pub fn dtype(&self) -> u32 {
        self.dtype
    }

    /// The token at position `i`, or `None` past the end.
    pub fn get(&self, i: usize) -> Option<u32> {
        if i >= self.len {
            return None;
        }
        let body = &self.map[HEADER_LEN..];
        Some(match self.dtype {
            2 => u16::from_le_bytes([body[2 * i], body[2 * i + 1]]) as u32,
            _ => u32::from_le_bytes([
                body[4 * i],
                body[4 * i + 1],
                body[4 * i + 2],
                body[4 * i + 3],
            ]),
        })
    }

    /// The tokens in `range`, widened to `u32`. A range past the end (or reversed) is an error.
    pub fn tokens(&self, range: Range<usize>) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        self.read_into(range, &mut out)?;
        Ok(out)
    }

    /// Appends the tokens in `range` to `out` (reuse one buffer across reads in a data loader).
    pub fn read_into(&self, range: Range<usize>, out: &mut Vec<u32>) -> Result<()> {
        let Range { start, end } = range;
        if start > end || end > self.len {
            return Err(Error::RangeOutOfBounds {
                start,
                end,
                len: self.len,
            });
        }
        let d = self.dtype as usize;
        let bytes = &self.map[HEADER_LEN + start * d..HEADER_LEN + end * d];
        out.reserve(end - start);
        if d == 2 {
            out.extend(
                bytes
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]) as u32),
            );
        } else {
            out.extend(
                bytes
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            );
        }
        Ok(())
    }
}

/// Checks a whole shard image; returns (dtype, token count).
fn validate(path: &Path, bytes: &[u8]) -> Result<(u32, usize)> {
    let p = || path.to_path_buf();
    let Some(h) = bytes.get(..HEADER_LEN) else {
        return Err(Error::ShardTruncatedHeader {
            path: p(),
            len: bytes.len() as u64,
            need: HEADER_LEN as u64,
        });
    };
    let mut magic = [0u8; 8];
    magic.copy_from_slice(&h[0..8]);
    if magic != MAGIC {
        return Err(Error::ShardBadMagic {
            path: p(),
            found: magic,
        });
    }
    let u32_at = |o: usize| u32::from_le_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
    let version = u32_at(8);
    if version != VERSION {
        return Err(Error::ShardVersion {
            path: p(),
            version,
            supported: VERSION,
        });
    }
    let dtype = u32_at(12);
    if dtype != 2 && dtype != 4 {
        return Err(Error::ShardDtype { path: p(), dtype });
    }
    let mut c = [0u8; 8];
    c.copy_from_slice(&h[16..24]);
    let count = u64::from_le_bytes(c);
    let body_bytes = (bytes.len() - HEADER_LEN) as u64;
    let mismatch = || Error::ShardSizeMismatch {
        path: p(),
        count,
        dtype,
        body_bytes,
    };
    if count.checked_mul(dtype as u64) != Some(body_bytes) {
        return Err(mismatch());
    }
    let len = usize::try_from(count).map_err(|_| mismatch())?;
    Ok((dtype, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard_bytes(dtype: u32, count: u64, body: &[u8]) -> Vec<u8> {
        let mut v = header(dtype, count).to_vec();
        v.extend_from_slice(body);
        v
    }

    fn open_bytes(bytes: &[u8]) -> Result<Shard> {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.bin");
        fs::write(&p, bytes).unwrap();
        Shard::open(&p)
    }

    #[test]
    fn u16_roundtrip_and_exact_layout() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/a.bin");
        let toks = [0u32, 1, 258, 65_535];
        write_shard(&p, &toks, 65_536).unwrap();
        // Layout pinned byte by byte against the documented format.
        let raw = fs::read(&p).unwrap();
        let mut want = b"CFSHARD\0".to_vec();
        want.extend_from_slice(&[1, 0, 0, 0, 2, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0]);
        want.extend_from_slice(&[0, 0, 1, 0, 2, 1, 0xFF, 0xFF]);
        assert_eq!(raw, want);
        let s = Shard::open(&p).unwrap();
        assert_eq!((s.len(), s.dtype()), (4, 2));
        assert_eq!(s.tokens(0..4).unwrap(), toks);
        assert_eq!(s.tokens(1..3).unwrap(), [1, 258]);
        assert_eq!(s.get(2), Some(258));
        assert_eq!(s.get(4), None);
        // Only the shard is left in the directory (the temp file was renamed).
        assert_eq!(fs::read_dir(d.path().join("sub")).unwrap().count(), 1);
    }

    #[test]
    fn u32_when_vocab_exceeds_u16() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("b.bin");
        let toks = [65_536u32, 7, 100_276];
        write_shard(&p, &toks, 100_277).unwrap();
        let raw = fs::read(&p).unwrap();
        assert_eq!(raw.len(), HEADER_LEN + 12);
        assert_eq!(&raw[24..28], &[0, 0, 1, 0]);
        let s = Shard::open(&p).unwrap();
        assert_eq!(s.dtype(), 4);
        assert_eq!(s.tokens(0..3).unwrap(), toks);
        assert_eq!(s.get(2), Some(100_276));
    }

    #[test]
    fn empty_shard_is_valid() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("e.bin");
        write_shard(&p, &[], 10).unwrap();
        let s = Shard::open(&p).unwrap();
        assert!(s.is_empty());
        assert_eq!(s.tokens(0..0).unwrap(), Vec::<u32>::new());
    }

    #[test]
    fn writer_rejects_out_of_range_tokens_and_bad_vocab() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.bin");
        match write_shard(&p, &[1, 2, 10, 3], 10) {
            Err(Error::TokenOutOfRange {
                index: 2,
                token: 10,
                vocab_size: 10,
            }) => {}
            other => panic!("{other:?}"),
        }
        assert!(!p.exists());
        assert!(matches!(
            write_shard(&p, &[], 0),
            Err(Error::InvalidVocabSize { vocab_size: 0 })
        ));
        assert_eq!(dtype_for_vocab(65_536).unwrap(), 2);
        assert_eq!(dtype_for_vocab(65_537).unwrap(), 4);
    }

    #[test]
    fn out_of_range_reads_are_errors() {
        let s = open_bytes(&shard_bytes(2, 3, &[1, 0, 2, 0, 3, 0])).unwrap();
        assert_eq!(s.tokens(0..3).unwrap(), [1, 2, 3]);
        for (a, b) in [(0, 4), (3, 4), (usize::MAX - 1, usize::MAX)] {
            match s.tokens(a..b) {
                Err(Error::RangeOutOfBounds { start, end, len: 3 }) => {
                    assert_eq!((start, end), (a, b))
                }
                other => panic!("{other:?}"),
            }
        }
        #[allow(clippy::reversed_empty_ranges)]
        let reversed = s.tokens(2..1);
        assert!(matches!(reversed, Err(Error::RangeOutOfBounds { .. })));
    }

    // Hostile files (TESTING.md family 8): a typed error every time.

    #[test]
    fn empty_file() {
        match open_bytes(&[]) {
            Err(Error::ShardTruncatedHeader {
                len: 0, need: 24, ..
            }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn truncated_header() {
        let full = shard_bytes(2, 0, &[]);
        match open_bytes(&full[..23]) {
            Err(Error::ShardTruncatedHeader { len: 23, .. }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_magic() {
        let mut b = shard_bytes(2, 1, &[5, 0]);
        b[0] = b'X';
        match open_bytes(&b) {
            Err(Error::ShardBadMagic { found, .. }) => assert_eq!(&found, b"XFSHARD\0"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn wrong_version() {
        let mut b = shard_bytes(2, 1, &[5, 0]);
        b[8] = 2;
        assert!(matches!(
            open_bytes(&b),
            Err(Error::ShardVersion {
                version: 2,
                supported: 1,
                ..
            })
        ));
    }

    #[test]
    fn wrong_dtype() {
        for dtype in [0u32, 1, 3, 8, u32::MAX] {
            match open_bytes(&shard_bytes(dtype, 1, &[0, 0, 0, 0])) {
                Err(Error::ShardDtype { dtype: d, .. }) => assert_eq!(d, dtype),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn truncated_body() {
        match open_bytes(&shard_bytes(2, 3, &[1, 0, 2, 0, 3])) {
            Err(Error::ShardSizeMismatch {
                count: 3,
                dtype: 2,
                body_bytes: 5,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn count_mismatch_with_trailing_bytes() {
        assert!(matches!(
            open_bytes(&shard_bytes(4, 1, &[1, 0, 0, 0, 9, 9, 9, 9])),
            Err(Error::ShardSizeMismatch {
                count: 1,
                body_bytes: 8,
                ..
            })
        ));
    }

    #[test]
    fn huge_counts_do_not_overflow_or_allocate() {
        // u64::MAX * 4 overflows; 2^63 * 2 overflows to exactly 0 in wrapping arithmetic,
        // which would match an empty body if the check were not checked_mul.
        for (dtype, count) in [
            (4, u64::MAX),
            (2, 1u64 << 63),
            (4, 1u64 << 62),
            (2, 1 << 40),
        ] {
            match open_bytes(&shard_bytes(dtype, count, &[])) {
                Err(Error::ShardSizeMismatch { count: c, .. }) => assert_eq!(c, count),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn missing_file_names_the_path() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("nope.bin");
        match Shard::open(&p) {
            Err(Error::NotFound { path }) => assert_eq!(path, p),
            other => panic!("{other:?}"),
        }
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Random byte edits and truncations of a valid shard: open either fails with a
            /// typed error or yields a shard whose every token reads back.
            #[test]
            fn mutated_shards_never_panic(
                toks in proptest::collection::vec(0u32..70_000, 0..40),
                wide in any::<bool>(),
                edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
                cut in proptest::option::of(any::<prop::sample::Index>()),
            ) {
                let vocab = if wide { 70_000 } else { 65_536 };
                let toks: Vec<u32> = toks.into_iter().map(|t| t % vocab as u32).collect();
                let d = tempfile::tempdir().unwrap();
                let p = d.path().join("s.bin");
                write_shard(&p, &toks, vocab).unwrap();
                let mut bytes = fs::read(&p).unwrap();
                for (at, val) in edits {
                    let i = at.index(bytes.len());
                    bytes[i] = val;
                }
                if let Some(c) = cut {
                    bytes.truncate(c.index(bytes.len() + 1));
                }
                fs::write(&p, &bytes).unwrap();
                if let Ok(s) = Shard::open(&p) {
                    let all = s.tokens(0..s.len()).unwrap();
                    prop_assert_eq!(all.len(), s.len());
                    prop_assert_eq!(s.get(s.len()), None);
                    prop_assert_eq!(HEADER_LEN + s.len() * s.dtype() as usize, bytes.len());
                }
            }
        }
    }
}
