//! Hostile safetensors input (TESTING.md family 8): every malformation gets its own typed error,
//! and no input makes the loader panic (property tests over mutated and truncated files).

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use chatforge_model::checkpoint::{
    safetensors_from_bytes, tensors_to_safetensors, CheckpointError as E, MAX_HEADER_BYTES,
};
use proptest::prelude::*;

/// An 8-byte length prefix, the header text, then the data section.
fn blob(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn load(bytes: &[u8]) -> Result<BTreeMap<String, Tensor>, E> {
    safetensors_from_bytes(bytes, &Device::Cpu)
}

/// One F32 tensor `name` with the given shape and offsets over `data_len` bytes of data.
fn one(dtype: &str, shape: &str, offsets: &str, data_len: usize) -> Vec<u8> {
    let header =
        format!(r#"{{"t":{{"dtype":"{dtype}","shape":{shape},"data_offsets":{offsets}}}}}"#);
    blob(&header, &vec![0u8; data_len])
}

#[test]
fn a_valid_hand_written_file_loads() {
    let t = load(&one("F32", "[2,2]", "[0,16]", 16)).unwrap();
    assert_eq!(t["t"].dims(), &[2, 2]);
    let meta = r#"{"__metadata__":{"k":"v"},"t":{"dtype":"U32","shape":[1],"data_offsets":[0,4]}}"#;
    assert_eq!(
        load(&blob(meta, &[1, 0, 0, 0])).unwrap()["t"]
            .to_vec1::<u32>()
            .unwrap(),
        [1]
    );
}

#[test]
fn too_short_files() {
    for len in [0, 1, 7] {
        let err = load(&vec![0u8; len]).unwrap_err();
        assert!(
            matches!(err, E::SafetensorsTooShort { len: l } if l == len),
            "{len}: {err}"
        );
    }
}

#[test]
fn bad_header_lengths() {
    for n in [u64::MAX, 1 << 40, MAX_HEADER_BYTES + 1] {
        let mut bytes = n.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{}");
        let err = load(&bytes).unwrap_err();
        assert!(
            matches!(err, E::HeaderTooLarge { header_len, .. } if header_len == n),
            "{err}"
        );
    }
    let mut bytes = 50u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(&[b' '; 20]);
    let err = load(&bytes).unwrap_err();
    assert!(
        matches!(
            err,
            E::HeaderPastEnd {
                header_len: 50,
                available: 20
            }
        ),
        "{err}"
    );
    // Exactly 8 bytes declaring an empty header: not JSON.
    let err = load(&0u64.to_le_bytes()).unwrap_err();
    assert!(matches!(err, E::HeaderNotJson { .. }), "{err}");
}

#[test]
fn headers_that_are_not_json() {
    let mut invalid_utf8 = 4u64.to_le_bytes().to_vec();
    invalid_utf8.extend_from_slice(&[b'{', 0xff, 0xfe, b'}']);
    let deep = "[".repeat(100_000);
    for bytes in [
        blob("not json", &[]),
        blob("{\"t\":", &[]),
        invalid_utf8,
        blob(&deep, &[]),
        blob("{} trailing", &[]),
    ] {
        let err = load(&bytes).unwrap_err();
        assert!(matches!(err, E::HeaderNotJson { .. }), "{err}");
    }
}

#[test]
fn headers_with_the_wrong_structure() {
    for header in [
        "[1,2]",
        "\"string\"",
        "null",
        r#"{"t":5}"#,
        r#"{"t":{"dtype":"F32","shape":[1]}}"#,
        r#"{"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"extra":1}}"#,
        r#"{"t":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#,
        r#"{"t":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}}"#,
        r#"{"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}"#,
        r#"{"t":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}}"#,
        r#"{"t":{"dtype":7,"shape":[1],"data_offsets":[0,4]}}"#,
        r#"{"__metadata__":{"k":1}}"#,
        r#"{"__metadata__":[]}"#,
    ] {
        let err = load(&blob(header, &[0; 4])).unwrap_err();
        assert!(matches!(err, E::BadHeader { .. }), "{header}: {err}");
    }
}

#[test]
fn unknown_dtypes() {
    for dtype in ["F7", "BOOL", "f32", "F8_E4M3", ""] {
        let err = load(&one(dtype, "[1]", "[0,4]", 4)).unwrap_err();
        assert!(
            matches!(err, E::UnsupportedDtype { dtype: ref d, .. } if d == dtype),
            "{err}"
        );
    }
}

#[test]
fn shape_products_that_overflow() {
    let big = 1u64 << 40;
    for shape in [
        format!("[{big},{big}]"),
        format!("[{big},{big},0]"),
        format!("[0,{big},{big}]"),
        format!("[{}]", 1u64 << 62),
        format!("[{}]", u64::MAX),
    ] {
        let err = load(&one("F32", &shape, "[0,0]", 0)).unwrap_err();
        assert!(matches!(err, E::ShapeOverflow { .. }), "{shape}: {err}");
    }
    // A zero dimension with small others is simply an empty tensor.
    let t = load(&one("F64", "[0,1000000]", "[0,0]", 0)).unwrap();
    assert_eq!(t["t"].dims(), &[0, 1_000_000]);
}

#[test]
fn offsets_out_of_range_or_inconsistent() {
    let err = load(&one("F32", "[2]", "[0,8]", 4)).unwrap_err();
    assert!(
        matches!(
            err,
            E::OffsetsPastEnd {
                end: 8,
                data_len: 4,
                ..
            }
        ),
        "{err}"
    );
    let err = load(&one("F32", "[2]", &format!("[0,{}]", u64::MAX), 8)).unwrap_err();
    assert!(matches!(err, E::OffsetsPastEnd { .. }), "{err}");
    let err = load(&one("F32", "[1]", "[8,4]", 8)).unwrap_err();
    assert!(
        matches!(
            err,
            E::OffsetsReversed {
                begin: 8,
                end: 4,
                ..
            }
        ),
        "{err}"
    );
    let err = load(&one("F32", "[3]", "[0,8]", 8)).unwrap_err();
    assert!(
        matches!(
            err,
            E::TensorSizeMismatch {
                expected: 12,
                actual: 8,
                ..
            }
        ),
        "{err}"
    );
    let err = load(&one("F64", "[1]", "[0,4]", 4)).unwrap_err();
    assert!(
        matches!(
            err,
            E::TensorSizeMismatch {
                expected: 8,
                actual: 4,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn overlapping_tensors_holes_and_trailing_bytes() {
    let two = |a: &str, b: &str, len: usize| {
        let header = format!(
            r#"{{"a":{{"dtype":"F32","shape":[2],"data_offsets":{a}}},"b":{{"dtype":"F32","shape":[2],"data_offsets":{b}}}}}"#
        );
        load(&blob(&header, &vec![0u8; len]))
    };
    assert!(two("[0,8]", "[8,16]", 16).is_ok());
    let err = two("[0,8]", "[4,12]", 16).unwrap_err();
    assert!(
        matches!(err, E::TensorsOverlap { ref first, ref second } if first == "a" && second == "b"),
        "{err}"
    );
    let err = two("[0,8]", "[0,8]", 8).unwrap_err();
    assert!(matches!(err, E::TensorsOverlap { .. }), "{err}");
    let err = two("[0,8]", "[12,20]", 20).unwrap_err();
    assert!(matches!(err, E::UnusedBytes { offset: 8, len: 4 }), "{err}");
    let err = two("[0,8]", "[8,16]", 20).unwrap_err();
    assert!(
        matches!(err, E::UnusedBytes { offset: 16, len: 4 }),
        "{err}"
    );
    let err = two("[4,12]", "[12,20]", 20).unwrap_err();
    assert!(matches!(err, E::UnusedBytes { offset: 0, len: 4 }), "{err}");
}

/// A valid file of several dtypes to mutate.
fn valid_blob() -> Vec<u8> {
    let dev = Device::Cpu;
    let mut t = BTreeMap::new();
    t.insert(
        "w".to_string(),
        Tensor::ones((3, 4), DType::F32, &dev).unwrap(),
    );
    t.insert("b".to_string(), Tensor::ones(5, DType::BF16, &dev).unwrap());
    t.insert("ids".to_string(), Tensor::new(&[1u32, 2, 3], &dev).unwrap());
    t.insert("n".to_string(), Tensor::new(&[7i64], &dev).unwrap());
    t.insert("s".to_string(), Tensor::new(0.5f64, &dev).unwrap());
    tensors_to_safetensors(&t).unwrap()
}

/// Whatever loads must be consistent with the bytes it came from.
fn check_loaded(bytes: &[u8]) {
    if let Ok(tensors) = load(bytes) {
        let total: usize = tensors
            .values()
            .map(|t| t.elem_count() * t.dtype().size_in_bytes())
            .sum();
        assert!(total <= bytes.len());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn mutated_files_never_panic(
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..8),
        cut in prop::option::of(any::<prop::sample::Index>()),
    ) {
        let mut bytes = valid_blob();
        for (pos, mask) in flips {
            let i = pos.index(bytes.len());
            bytes[i] ^= mask;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        check_loaded(&bytes);
    }

    #[test]
    fn mutated_headers_never_panic(
        pos in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        insert in any::<bool>(),
    ) {
        // Edit the JSON text itself (replace or insert one byte) and fix the length prefix, so
        // that the edit reaches the header parser and validator instead of the length check.
        let bytes = valid_blob();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let mut header = bytes[8..8 + n].to_vec();
        let i = pos.index(header.len());
        if insert { header.insert(i, byte) } else { header[i] = byte }
        let mut edited = (header.len() as u64).to_le_bytes().to_vec();
        edited.extend_from_slice(&header);
        edited.extend_from_slice(&bytes[8 + n..]);
        check_loaded(&edited);
    }

    #[test]
    fn arbitrary_entries_never_panic(
        dtype in prop::sample::select(vec!["F32", "F64", "BF16", "F16", "U32", "I64", "U8", "X"]),
        shape in prop::collection::vec(
            prop_oneof![0u64..4, Just(1u64 << 32), Just(u64::MAX), any::<u64>()], 0..5),
        begin in prop_oneof![0u64..64, any::<u64>()],
        end in prop_oneof![0u64..64, any::<u64>()],
        data_len in 0usize..64,
    ) {
        let shape = format!("{shape:?}");
        let bytes = one(dtype, &shape, &format!("[{begin},{end}]"), data_len);
        check_loaded(&bytes);
    }
}

#[test]
fn every_truncation_of_a_valid_file_is_an_error() {
    let bytes = valid_blob();
    for len in 0..bytes.len() {
        assert!(load(&bytes[..len]).is_err(), "truncated to {len}");
    }
    assert!(load(&bytes).is_ok());
}
