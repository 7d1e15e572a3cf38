//! The safetensors format, read with our own validation of hostile input.
//!
//! Layout: an 8-byte little-endian header length `n`, `n` bytes of JSON header
//! (`{"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...}`, with an
//! optional `"__metadata__"` object of strings), then the data section; offsets are relative to
//! the data section. Every length, dtype, shape product and offset is checked, and the tensors'
//! byte ranges must tile the data section exactly (no overlap, no hole, no trailing bytes, as
//! the format requires), before any tensor memory is allocated.
//!
//! Supported dtypes: F32, F64, BF16, F16, U32, I64, U8, I32, I16 (values are little-endian).

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor, WithDType};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::{CheckpointError, Result};

/// The largest safetensors header accepted (100 MB, as the reference implementation).
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

const METADATA_KEY: &str = "__metadata__";

/// A tensor entry of the header as written.
#[derive(Serialize)]
struct HeaderEntry<'a> {
    dtype: &'a str,
    shape: &'a [usize],
    data_offsets: [u64; 2],
}

/// A tensor entry of the header as read, before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: [u64; 2],
}

/// A tensor entry that passed validation: its bytes are `data[begin..end]`.
struct Entry {
    key: String,
    dtype: DType,
    shape: Vec<usize>,
    begin: usize,
    end: usize,
}

fn dtype_from_name(name: &str) -> Option<DType> {
    Some(match name {
        "F32" => DType::F32,
        "F64" => DType::F64,
        "BF16" => DType::BF16,
        "F16" => DType::F16,
        "U32" => DType::U32,
        "I64" => DType::I64,
        "U8" => DType::U8,
        "I32" => DType::I32,
        "I16" => DType::I16,
        _ => return None,
    })
}

fn dtype_name(dtype: DType) -> Option<&'static str> {
    Some(match dtype {
        DType::F32 => "F32",
        DType::F64 => "F64",
        DType::BF16 => "BF16",
        DType::F16 => "F16",
        DType::U32 => "U32",
        DType::I64 => "I64",
        DType::U8 => "U8",
        DType::I32 => "I32",
        DType::I16 => "I16",
        _ => return None,
    })
}

/// Serializes `tensors` to safetensors bytes. Keys are written in the map's (sorted) order and
/// data is laid out in the same order, so equal inputs give identical bytes. The header is
/// padded with spaces to a multiple of 8 bytes. Tensors on any device are copied to host memory.
///
/// # Shapes
/// Any shape, including scalars `()` and empty tensors; non-contiguous tensors are written in
/// row-major (logical) order.
pub fn tensors_to_safetensors(tensors: &BTreeMap<String, Tensor>) -> Result<Vec<u8>> {
    let mut header = BTreeMap::new();
    let mut offset = 0u64;
    for (key, tensor) in tensors {
        if key == METADATA_KEY {
            return Err(CheckpointError::ReservedKey { key: key.clone() });
        }
        let dtype =
            dtype_name(tensor.dtype()).ok_or_else(|| CheckpointError::UnsupportedDtype {
                key: key.clone(),
                dtype: format!("{:?}", tensor.dtype()),
            })?;
        let len = (tensor.elem_count() * tensor.dtype().size_in_bytes()) as u64;
        header.insert(
            key.as_str(),
            HeaderEntry {
                dtype,
                shape: tensor.dims(),
                data_offsets: [offset, offset + len],
            },
        );
        offset += len;
    }
    let mut json = serde_json::to_vec(&header).map_err(|e| CheckpointError::BadHeader {
        reason: format!("cannot serialize the header: {e}"),
    })?;
    while json.len() % 8 != 0 {
        json.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + json.len() + offset as usize);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    for (key, tensor) in tensors {
        append_le_bytes(&mut out, tensor).map_err(|source| CheckpointError::Tensor {
            key: key.clone(),
            source,
        })?;
    }
    Ok(out)
}

/// Appends the tensor's elements in row-major order as little-endian bytes.
fn append_le_bytes(out: &mut Vec<u8>, tensor: &Tensor) -> candle_core::Result<()> {
    let flat = tensor.flatten_all()?;
    match tensor.dtype() {
        DType::F32 => out.extend(flat.to_vec1::<f32>()?.iter().flat_map(|x| x.to_le_bytes())),
        DType::F64 => out.extend(flat.to_vec1::<f64>()?.iter().flat_map(|x| x.to_le_bytes())),
        DType::BF16 => out.extend(
            flat.to_vec1::<half::bf16>()?
                .iter()
                .flat_map(|x| x.to_bits().to_le_bytes()),
        ),
        DType::F16 => out.extend(
            flat.to_vec1::<half::f16>()?
                .iter()
                .flat_map(|x| x.to_bits().to_le_bytes()),
        ),
        DType::U32 => out.extend(flat.to_vec1::<u32>()?.iter().flat_map(|x| x.to_le_bytes())),
        DType::I64 => out.extend(flat.to_vec1::<i64>()?.iter().flat_map(|x| x.to_le_bytes())),
        DType::U8 => out.extend(flat.to_vec1::<u8>()?),
        DType::I32 => out.extend(flat.to_vec1::<i32>()?.iter().flat_map(|x| x.to_le_bytes())),
        DType::I16 => out.extend(flat.to_vec1::<i16>()?.iter().flat_map(|x| x.to_le_bytes())),
        other => {
            return Err(candle_core::Error::Msg(format!(
                "dtype {other:?} cannot be written to safetensors"
            )))
        }
    }
    Ok(())
}

/// Parses safetensors `bytes` into tensors on `device`, validating everything first: the
/// buffer holds the 8-byte prefix; the header length is at most [`MAX_HEADER_BYTES`] and fits
/// in the buffer; the header is a JSON object; every entry has a supported dtype, a shape whose
/// byte count does not overflow, and `data_offsets` `[begin, end]` with `begin <= end <= data
/// length` and `end - begin == elements × dtype size`; the ranges tile the data section with no
/// overlap or unused byte. Only then are tensors built (their total size is at most the input's).
/// Each failure is its own [`CheckpointError`] variant; no input makes this panic.
///
/// # Shapes
/// Each tensor gets the shape its header entry declares.
pub fn safetensors_from_bytes(bytes: &[u8], device: &Device) -> Result<BTreeMap<String, Tensor>> {
    let (data, entries) = validate(bytes)?;
    let mut out = BTreeMap::new();
    for entry in entries {
        let raw = &data[entry.begin..entry.end];
        let tensor = decode(raw, entry.dtype, &entry.shape, device).map_err(|source| {
            CheckpointError::Tensor {
                key: entry.key.clone(),
                source,
            }
        })?;
        out.insert(entry.key, tensor);
    }
    Ok(out)
}

/// Validates the whole buffer; returns the data section and the entries sorted by offset.
fn validate(bytes: &[u8]) -> Result<(&[u8], Vec<Entry>)> {
    let Some((prefix, rest)) = bytes.split_first_chunk::<8>() else {
        return Err(CheckpointError::SafetensorsTooShort { len: bytes.len() });
    };
    let header_len = u64::from_le_bytes(*prefix);
    if header_len > MAX_HEADER_BYTES {
        return Err(CheckpointError::HeaderTooLarge {
            header_len,
            limit: MAX_HEADER_BYTES,
        });
    }
    let available = rest.len() as u64;
    if header_len > available {
        return Err(CheckpointError::HeaderPastEnd {
            header_len,
            available,
        });
    }
    // header_len <= rest.len(), so it fits in usize and the split is in bounds.
    let (header, data) = rest.split_at(header_len as usize);
    let value: Value =
        serde_json::from_slice(header).map_err(|e| CheckpointError::HeaderNotJson {
            reason: e.to_string(),
        })?;
    let Value::Object(map) = value else {
        return Err(CheckpointError::BadHeader {
            reason: "the header is not a JSON object".to_string(),
        });
    };
    let data_len = data.len() as u64;
    let mut entries = Vec::with_capacity(map.len());
    for (key, value) in map {
        if key == METADATA_KEY {
            check_metadata(&value)?;
            continue;
        }
        entries.push(validate_entry(key, &value, data_len)?);
    }
    entries.sort_by_key(|e| (e.begin, e.end));
    let mut cursor = 0usize;
    for (i, entry) in entries.iter().enumerate() {
        if entry.begin < cursor {
            let first = i.checked_sub(1).map(|j| entries[j].key.clone());
            return Err(CheckpointError::TensorsOverlap {
                first: first.unwrap_or_default(),
                second: entry.key.clone(),
            });
        }
        if entry.begin > cursor {
            return Err(CheckpointError::UnusedBytes {
                offset: cursor as u64,
                len: (entry.begin - cursor) as u64,
            });
        }
        cursor = entry.end;
    }
    if cursor < data.len() {
        return Err(CheckpointError::UnusedBytes {
            offset: cursor as u64,
            len: (data.len() - cursor) as u64,
        });
    }
    Ok((data, entries))
}

/// `__metadata__` must be an object of strings.
fn check_metadata(value: &Value) -> Result<()> {
    let ok = value
        .as_object()
        .is_some_and(|m| m.values().all(Value::is_string));
    if ok {
        Ok(())
    } else {
        Err(CheckpointError::BadHeader {
            reason: format!("{METADATA_KEY} is not an object of strings"),
        })
    }
}

/// Validates one header entry against a data section of `data_len` bytes.
fn validate_entry(key: String, value: &Value, data_len: u64) -> Result<Entry> {
    let raw = RawEntry::deserialize(value).map_err(|e| CheckpointError::BadHeader {
        reason: format!("tensor {key:?}: {e}"),
    })?;
    let Some(dtype) = dtype_from_name(&raw.dtype) else {
        return Err(CheckpointError::UnsupportedDtype {
            key,
            dtype: raw.dtype,
        });
    };
    let overflow = |key: String, shape: Vec<u64>| CheckpointError::ShapeOverflow { key, shape };
    // The product of the non-zero dimensions bounds every partial product (strides, element
    // counts) that building the tensor computes, so it must fit even when a dimension is 0.
    let bound = raw
        .shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d.max(1)))
        .and_then(|n| n.checked_mul(dtype.size_in_bytes() as u64))
        .filter(|&n| n <= isize::MAX as u64);
    let Some(bound) = bound else {
        return Err(overflow(key, raw.shape));
    };
    let expected = if raw.shape.contains(&0) { 0 } else { bound };
    let [begin, end] = raw.data_offsets;
    if end < begin {
        return Err(CheckpointError::OffsetsReversed { key, begin, end });
    }
    if end > data_len {
        return Err(CheckpointError::OffsetsPastEnd { key, end, data_len });
    }
    if end - begin != expected {
        return Err(CheckpointError::TensorSizeMismatch {
            key,
            shape: raw.shape,
            expected,
            actual: end - begin,
        });
    }
    let shape: Option<Vec<usize>> = raw.shape.iter().map(|&d| usize::try_from(d).ok()).collect();
    let Some(shape) = shape else {
        return Err(overflow(key, raw.shape));
    };
    // end <= data_len, which is a slice length, so both offsets fit in usize.
    Ok(Entry {
        key,
        dtype,
        shape,
        begin: begin as usize,
        end: end as usize,
    })
}

/// Builds a tensor from validated little-endian bytes (length = elements × dtype size).
fn decode(
    raw: &[u8],
    dtype: DType,
    shape: &[usize],
    device: &Device,
) -> candle_core::Result<Tensor> {
    match dtype {
        DType::F32 => from_le(raw, shape, device, f32::from_le_bytes),
        DType::F64 => from_le(raw, shape, device, f64::from_le_bytes),
        DType::BF16 => from_le(raw, shape, device, |b| {
            half::bf16::from_bits(u16::from_le_bytes(b))
        }),
        DType::F16 => from_le(raw, shape, device, |b| {
            half::f16::from_bits(u16::from_le_bytes(b))
        }),
        DType::U32 => from_le(raw, shape, device, u32::from_le_bytes),
        DType::I64 => from_le(raw, shape, device, i64::from_le_bytes),
        DType::U8 => from_le(raw, shape, device, u8::from_le_bytes),
        DType::I32 => from_le(raw, shape, device, i32::from_le_bytes),
        DType::I16 => from_le(raw, shape, device, i16::from_le_bytes),
        other => Err(candle_core::Error::Msg(format!(
            "dtype {other:?} cannot be read from safetensors"
        ))),
    }
}

fn from_le<T: WithDType, const N: usize>(
    raw: &[u8],
    shape: &[usize],
    device: &Device,
    convert: impl Fn([u8; N]) -> T,
) -> candle_core::Result<Tensor> {
    let values: Vec<T> = raw
        .chunks_exact(N)
        .filter_map(|c| c.first_chunk::<N>().copied())
        .map(convert)
        .collect();
    Tensor::from_vec(values, shape, device)
}

/// Checks that `tensors` has exactly the keys of `expected` with those shapes. The error names
/// the first (in key order) missing key, else the first unexpected key, else the first key
/// whose shape differs, with both shapes.
pub fn check_shapes(
    tensors: &BTreeMap<String, Tensor>,
    expected: &BTreeMap<String, Vec<usize>>,
) -> Result<()> {
    if let Some(key) = expected.keys().find(|k| !tensors.contains_key(*k)) {
        return Err(CheckpointError::MissingTensor { key: key.clone() });
    }
    if let Some(key) = tensors.keys().find(|k| !expected.contains_key(*k)) {
        return Err(CheckpointError::UnexpectedTensor { key: key.clone() });
    }
    for (key, shape) in expected {
        let got = tensors
            .get(key)
            .map(|t| t.dims().to_vec())
            .unwrap_or_default();
        if &got != shape {
            return Err(CheckpointError::ShapeMismatch {
                key: key.clone(),
                expected: shape.clone(),
                got,
            });
        }
    }
    Ok(())
}
