//! Safetensors I/O against the reference implementation: a fixture written by the Python
//! `safetensors` library (scripts/reference/safetensors_fixture.py), candle's own reader, and
//! bytes pinned from the format specification.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use chatforge_model::checkpoint::{
    check_shapes, safetensors_from_bytes, tensors_to_safetensors, CheckpointError,
};
use half::{bf16, f16};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/dtypes.safetensors"
);

/// The tensor's elements, row-major, as little-endian bytes (written independently of the
/// library's writer).
fn raw(t: &Tensor) -> Vec<u8> {
    let t = t.flatten_all().unwrap();
    match t.dtype() {
        DType::F32 => t
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        DType::F64 => t
            .to_vec1::<f64>()
            .unwrap()
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        DType::BF16 => t
            .to_vec1::<bf16>()
            .unwrap()
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        DType::F16 => t
            .to_vec1::<f16>()
            .unwrap()
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        DType::U32 => t
            .to_vec1::<u32>()
            .unwrap()
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        DType::I64 => t
            .to_vec1::<i64>()
            .unwrap()
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        DType::U8 => t.to_vec1::<u8>().unwrap(),
        other => panic!("no raw view for {other:?}"),
    }
}

fn f32_bits(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn the_reference_fixture_reads_bitwise() {
    let bytes = std::fs::read(FIXTURE).unwrap();
    let t = safetensors_from_bytes(&bytes, &Device::Cpu).unwrap();
    let keys: Vec<&str> = t.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["bf16", "empty", "f16", "f32", "f64", "i64", "scalar", "u32"]
    );
    assert_eq!(t["f32"].dims(), &[2, 3]);
    assert_eq!(
        raw(&t["f32"]),
        f32_bits(&[0.0, 1.5, -2.0, 1e-3, f32::INFINITY, -0.0])
    );
    let f64_expected: Vec<u8> = [1.0 / 3.0, -1e300, f64::from_bits(1)]
        .iter()
        .flat_map(|x: &f64| x.to_le_bytes())
        .collect();
    assert_eq!(raw(&t["f64"]), f64_expected);
    assert_eq!(t["bf16"].dtype(), DType::BF16);
    assert_eq!(t["bf16"].dims(), &[2, 2]);
    assert_eq!(
        t["bf16"].flatten_all().unwrap().to_vec1::<bf16>().unwrap(),
        [1.0, -2.5, 3.140625, 65280.0].map(bf16::from_f32)
    );
    assert_eq!(
        t["f16"].to_vec1::<f16>().unwrap(),
        [0.5, -65504.0, 2f32.powi(-14), 1.0].map(f16::from_f32)
    );
    assert_eq!(t["u32"].to_vec1::<u32>().unwrap(), [0, u32::MAX]);
    assert_eq!(t["i64"].to_vec2::<i64>().unwrap(), [[i64::MIN, 42]]);
    assert_eq!(t["scalar"].dims(), &[] as &[usize]);
    assert_eq!(t["scalar"].to_scalar::<f32>().unwrap(), 7.25);
    assert_eq!(t["empty"].dims(), &[0, 4]);
}

#[test]
fn every_dtype_round_trips_bitwise() {
    let dev = Device::Cpu;
    let mut tensors = BTreeMap::new();
    let f32s = [
        1.0,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::from_bits(0x7fc0_1234), // NaN with a payload
        f32::from_bits(1),           // smallest subnormal
    ];
    tensors.insert(
        "a.f32".to_string(),
        Tensor::from_slice(&f32s, (2, 3), &dev).unwrap(),
    );
    let f64s = [f64::from_bits(0x7ff8_0000_dead_beef), -1e-310, 3.5];
    tensors.insert(
        "b.f64".to_string(),
        Tensor::from_slice(&f64s, 3, &dev).unwrap(),
    );
    let bf16s = [0x3f80u16, 0x7f81, 0x8000, 0x0001].map(bf16::from_bits);
    tensors.insert(
        "c.bf16".to_string(),
        Tensor::from_slice(&bf16s, (2, 2), &dev).unwrap(),
    );
    let f16s = [0x3c00u16, 0x7e01, 0xfc00, 0x0001].map(f16::from_bits);
    tensors.insert(
        "d.f16".to_string(),
        Tensor::from_slice(&f16s, (4, 1), &dev).unwrap(),
    );
    let u32s = [0u32, 1, u32::MAX];
    tensors.insert(
        "e.u32".to_string(),
        Tensor::from_slice(&u32s, 3, &dev).unwrap(),
    );
    let i64s = [i64::MIN, -1, i64::MAX, 0];
    tensors.insert(
        "f.i64".to_string(),
        Tensor::from_slice(&i64s, (1, 2, 2), &dev).unwrap(),
    );
    tensors.insert(
        "g.u8".to_string(),
        Tensor::from_slice(&[7u8, 255], 2, &dev).unwrap(),
    );
    tensors.insert("h.scalar".to_string(), Tensor::new(2.5f32, &dev).unwrap());
    tensors.insert(
        "i.empty".to_string(),
        Tensor::zeros((3, 0), DType::F64, &dev).unwrap(),
    );

    let bytes = tensors_to_safetensors(&tensors).unwrap();
    assert_eq!(
        bytes,
        tensors_to_safetensors(&tensors).unwrap(),
        "deterministic"
    );
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    assert_eq!(header_len % 8, 0, "header padded to 8 bytes");
    let back = safetensors_from_bytes(&bytes, &dev).unwrap();
    assert_eq!(back.len(), tensors.len());
    for (key, t) in &tensors {
        let b = &back[key];
        assert_eq!(b.dtype(), t.dtype(), "{key}");
        assert_eq!(b.dims(), t.dims(), "{key}");
        assert_eq!(raw(b), raw(t), "{key}");
    }
    // And the reference fixture survives our writer and reader unchanged.
    let fixture = safetensors_from_bytes(&std::fs::read(FIXTURE).unwrap(), &dev).unwrap();
    let again = safetensors_from_bytes(&tensors_to_safetensors(&fixture).unwrap(), &dev).unwrap();
    for (key, t) in &fixture {
        assert_eq!(raw(&again[key]), raw(t), "{key}");
        assert_eq!(again[key].dims(), t.dims(), "{key}");
    }
}

#[test]
fn a_single_tensor_matches_the_reference_bytes() {
    // `safetensors.numpy.save({"a": np.array([1.0, -2.0], dtype=np.float32)})` gives exactly
    // these bytes: header length 56 (54 bytes of JSON + 2 spaces of padding), JSON, data.
    let mut expected = 56u64.to_le_bytes().to_vec();
    expected.extend_from_slice(br#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}  "#);
    expected.extend_from_slice(&[0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0xc0]);
    let mut tensors = BTreeMap::new();
    tensors.insert(
        "a".to_string(),
        Tensor::new(&[1f32, -2.0], &Device::Cpu).unwrap(),
    );
    assert_eq!(tensors_to_safetensors(&tensors).unwrap(), expected);
    // An empty map is an empty object padded to 8 bytes.
    let empty = tensors_to_safetensors(&BTreeMap::new()).unwrap();
    assert_eq!(empty, b"\x08\0\0\0\0\0\0\0{}      ");
    assert!(safetensors_from_bytes(&empty, &Device::Cpu)
        .unwrap()
        .is_empty());
}

#[test]
fn candles_reader_agrees_with_ours_both_ways() {
    let dev = Device::Cpu;
    // candle reads what we write.
    let fixture = safetensors_from_bytes(&std::fs::read(FIXTURE).unwrap(), &dev).unwrap();
    let ours = tensors_to_safetensors(&fixture).unwrap();
    let by_candle = candle_core::safetensors::load_buffer(&ours, &dev).unwrap();
    assert_eq!(by_candle.len(), fixture.len());
    for (key, t) in &fixture {
        assert_eq!(raw(&by_candle[key]), raw(t), "{key}");
        assert_eq!(by_candle[key].dims(), t.dims(), "{key}");
    }
    // We read what candle writes (through the reference `safetensors` crate).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("candle.safetensors");
    candle_core::safetensors::save(&by_candle, &path).unwrap();
    let back = safetensors_from_bytes(&std::fs::read(&path).unwrap(), &dev).unwrap();
    for (key, t) in &fixture {
        assert_eq!(raw(&back[key]), raw(t), "{key}");
    }
}

#[test]
fn non_contiguous_tensors_are_written_in_logical_order() {
    let dev = Device::Cpu;
    let t = Tensor::arange(0u32, 6, &dev)
        .unwrap()
        .reshape((2, 3))
        .unwrap();
    let tt = t.t().unwrap(); // (3, 2): [[0, 3], [1, 4], [2, 5]]
    let mut tensors = BTreeMap::new();
    tensors.insert("t".to_string(), tt);
    let back = safetensors_from_bytes(&tensors_to_safetensors(&tensors).unwrap(), &dev).unwrap();
    assert_eq!(
        back["t"].to_vec2::<u32>().unwrap(),
        [[0, 3], [1, 4], [2, 5]]
    );
}

#[test]
fn writing_refuses_the_reserved_key_and_unsupported_dtypes() {
    let dev = Device::Cpu;
    let mut tensors = BTreeMap::new();
    tensors.insert("__metadata__".to_string(), Tensor::new(1f32, &dev).unwrap());
    let err = tensors_to_safetensors(&tensors).unwrap_err();
    assert!(matches!(err, CheckpointError::ReservedKey { .. }), "{err}");

    let mut tensors = BTreeMap::new();
    let f8 = Tensor::zeros(2, DType::F8E4M3, &dev).unwrap();
    tensors.insert("f8".to_string(), f8);
    let err = tensors_to_safetensors(&tensors).unwrap_err();
    assert!(
        matches!(err, CheckpointError::UnsupportedDtype { ref key, .. } if key == "f8"),
        "{err}"
    );
}

#[test]
fn check_shapes_names_the_first_problem() {
    let dev = Device::Cpu;
    let t = |dims: &[usize]| Tensor::zeros(dims, DType::F32, &dev).unwrap();
    let mut tensors = BTreeMap::new();
    tensors.insert("a".to_string(), t(&[2, 3]));
    tensors.insert("b".to_string(), t(&[4]));
    let mut expected = BTreeMap::new();
    expected.insert("a".to_string(), vec![2, 3]);
    expected.insert("b".to_string(), vec![4]);
    check_shapes(&tensors, &expected).unwrap();

    expected.insert("c".to_string(), vec![1]);
    let err = check_shapes(&tensors, &expected).unwrap_err();
    assert!(
        matches!(err, CheckpointError::MissingTensor { ref key } if key == "c"),
        "{err}"
    );
    expected.remove("c");

    tensors.insert("z".to_string(), t(&[1]));
    let err = check_shapes(&tensors, &expected).unwrap_err();
    assert!(
        matches!(err, CheckpointError::UnexpectedTensor { ref key } if key == "z"),
        "{err}"
    );
    tensors.remove("z");

    expected.insert("b".to_string(), vec![2, 2]);
    let err = check_shapes(&tensors, &expected).unwrap_err();
    match err {
        CheckpointError::ShapeMismatch { key, expected, got } => {
            assert_eq!((key.as_str(), expected, got), ("b", vec![2, 2], vec![4]));
        }
        other => panic!("{other}"),
    }
}
