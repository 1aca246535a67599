//! Constant tensors: decoding initializers (typed fields, `raw_data`, external files inside
//! the model's folder), the memory budget every decoded size is charged against, and the
//! conversions weights go through.

use super::importer::Importer;
use super::proto::{tensor_proto::DataType, TensorProto};
use crate::bound::round_to_f32;
use crate::error::{Error, Result};
use crate::network::MAX_RANK;
use std::io::{Read, Seek, SeekFrom};

/// Memory the importer may still allocate: every allocation proportional to a size read from
/// the file is charged here before it is made, and refused past the limit.
pub(super) struct Budget {
    source: String,
    pub(super) limit: usize,
    left: u128,
}

impl Budget {
    pub(super) fn new(source: &str, limit: usize) -> Self {
        Budget {
            source: source.to_string(),
            limit,
            left: limit as u128,
        }
    }

    pub(super) fn charge(&mut self, bytes: u128, what: &str) -> Result<()> {
        if bytes > self.left {
            return Err(Error::TooLarge {
                what: format!("{}: {what}", self.source),
                needed: bytes,
                limit: self.limit as u128,
            });
        }
        self.left -= bytes;
        Ok(())
    }

    /// Returns memory charged for something now freed.
    pub(super) fn refund(&mut self, bytes: u128) {
        self.left = (self.left + bytes).min(self.limit as u128);
    }
}

/// A constant tensor (initializer, Constant node, or a folded shape computation).
#[derive(Debug, Clone)]
pub(super) struct Const {
    pub(super) dims: Vec<usize>,
    pub(super) data: ConstData,
    /// A bound on `max_i |value_i − runtime_i|` for a constant folded from others (see
    /// `const_eval`); 0 for stored tensors and integers.
    pub(super) error: f64,
}

/// Values as stored in the file: floats of up to 32 bits as `f32` (exact), doubles as `f64`
/// (so that the interval can contain the norm of the weights as stored), integers as `i64`.
#[derive(Debug, Clone)]
pub(super) enum ConstData {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
}

/// Layer weights as `f32` and `‖W_file − W‖_F` rounded up (0 when the conversion is exact).
pub(super) struct Weights {
    pub(super) values: Vec<f32>,
    pub(super) error: f64,
}

impl Const {
    pub(super) fn len(&self) -> usize {
        match &self.data {
            ConstData::F32(v) => v.len(),
            ConstData::F64(v) => v.len(),
            ConstData::I64(v) => v.len(),
        }
    }

    /// The values as `f32` weights, with a bound on the Frobenius norm of what the
    /// conversion changed (see [`crate::bound::round_to_f32`]).
    pub(super) fn weights(&self) -> Weights {
        let (values, error) = match &self.data {
            ConstData::F32(v) => (v.clone(), 0.0),
            ConstData::F64(v) => round_to_f32(v),
            ConstData::I64(v) => {
                // Integers beyond 2⁵³ are not exact in f64: take the differences in i128.
                let w: Vec<f32> = v.iter().map(|&x| x as f32).collect();
                let sq: f64 = v
                    .iter()
                    .zip(&w)
                    .map(|(&x, &y)| ((x as i128 - y as i128) as f64).powi(2))
                    .sum();
                let e = sq.sqrt() * (1.0 + (v.len() as f64 + 4.0) * f64::EPSILON);
                (w, if sq > 0.0 { e.next_up() } else { 0.0 })
            }
        };
        // A folded constant's own error, as a Frobenius norm.
        let folded = self.error * (self.len() as f64).sqrt() * (1.0 + 1e-12);
        Weights {
            values,
            error: error + folded,
        }
    }

    pub(super) fn f32s(&self) -> Vec<f32> {
        self.weights().values
    }

    pub(super) fn f64s(&self) -> Vec<f64> {
        match &self.data {
            ConstData::F32(v) => v.iter().map(|&x| x as f64).collect(),
            ConstData::F64(v) => v.clone(),
            ConstData::I64(v) => v.iter().map(|&x| x as f64).collect(),
        }
    }

    pub(super) fn i64s(&self) -> Vec<i64> {
        match &self.data {
            ConstData::F32(v) => v.iter().map(|&x| x as i64).collect(),
            ConstData::F64(v) => v.iter().map(|&x| x as i64).collect(),
            ConstData::I64(v) => v.clone(),
        }
    }

    pub(super) fn is_int(&self) -> bool {
        matches!(self.data, ConstData::I64(_))
    }
}

impl Importer {
    pub(super) fn decode_tensor(&mut self, t: &TensorProto) -> Result<Const> {
        let what = format!("tensor '{}'", t.name);
        if t.dims.len() > MAX_RANK {
            return Err(self.err(format!(
                "{what} has rank {}, over the limit of {MAX_RANK}",
                t.dims.len()
            )));
        }
        let mut dims = Vec::with_capacity(t.dims.len());
        let mut count: u128 = 1;
        for &d in &t.dims {
            if d < 0 {
                return Err(self.err(format!("{what} has a negative dimension {d}")));
            }
            dims.push(d as usize);
            count = count.saturating_mul(d as u128);
        }
        let dt = DataType::try_from(t.data_type).unwrap_or(DataType::Undefined);
        let Some((size, kept)) = element_sizes(dt) else {
            return Err(self.err(format!(
                "{what} has data type {} ({dt:?}), which is not supported (float, double, \
                 float16, bfloat16 and integer types are)",
                t.data_type
            )));
        };
        // The decoded values, and the raw bytes of an external tensor while they are read.
        let external = t.data_location == 1;
        let raw_bytes = if external {
            count.saturating_mul(size)
        } else {
            0
        };
        let needed = count.saturating_mul(kept).saturating_add(raw_bytes);
        self.budget
            .charge(needed, &format!("{what} (shape {:?})", t.dims))?;
        let count = count as usize;
        let raw_len = count * size as usize;
        let external_bytes;
        let raw: Option<&[u8]> = if external {
            external_bytes = self.read_external(t, raw_len)?;
            Some(&external_bytes)
        } else if !t.raw_data.is_empty() {
            Some(&t.raw_data)
        } else {
            None
        };
        let data = match raw {
            Some(bytes) if bytes.len() != raw_len => {
                return Err(self.err(format!(
                    "{what}: {} data bytes for shape {:?} of {dt:?} (expected {raw_len})",
                    bytes.len(),
                    t.dims,
                )))
            }
            Some(bytes) => from_raw(bytes, dt),
            None => typed_data(t, dt, count).map_err(|e| self.err(format!("{what}: {e}")))?,
        };
        // The raw bytes of an external tensor are dropped here.
        self.budget.refund(raw_bytes);
        if let Some((i, v)) = first_non_finite(&data) {
            return Err(self.err(format!("{what} has a non-finite value {v} at index {i}")));
        }
        Ok(Const {
            dims,
            data,
            error: 0.0,
        })
    }

    /// Reads an external-data tensor's bytes from a regular file inside the model's folder
    /// (the rules of `crate::untrusted`).
    fn read_external(&mut self, t: &TensorProto, expected: usize) -> Result<Vec<u8>> {
        let what = format!("tensor '{}'", t.name);
        let mut location = None;
        let (mut offset, mut length) = (0u64, None);
        for kv in &t.external_data {
            match kv.key.as_str() {
                "location" => location = Some(kv.value.clone()),
                "offset" => {
                    offset = kv.value.parse().map_err(|_| {
                        self.err(format!("{what}: bad external data offset '{}'", kv.value))
                    })?
                }
                "length" => {
                    length = Some(kv.value.parse::<u64>().map_err(|_| {
                        self.err(format!("{what}: bad external data length '{}'", kv.value))
                    })?)
                }
                _ => {}
            }
        }
        let location = location
            .ok_or_else(|| self.err(format!("{what}: external data without a location")))?;
        let base = self.base_dir.clone().ok_or_else(|| {
            self.err(format!(
                "{what} is stored in external file '{location}', but the model was given as bytes"
            ))
        })?;
        if let Some(l) = length {
            if l != expected as u64 {
                return Err(self.err(format!(
                    "{what}: external data length {l} does not match its shape ({expected} bytes)"
                )));
            }
        }
        let (file, real) = crate::untrusted::open_inside(&base, &location, &self.src, &what)?;
        let file = self.files.entry(real.clone()).or_insert(file);
        let file_len = file.metadata().map(|m| m.len()).unwrap_or(0);
        if offset.saturating_add(expected as u64) > file_len {
            return Err(Error::model(
                &self.src,
                format!(
                    "{what}: external data [{offset}, +{expected}) lies beyond the end of '{location}' ({file_len} bytes)"
                ),
            ));
        }
        let mut buf = vec![0u8; expected];
        file.seek(SeekFrom::Start(offset))
            .and_then(|_| file.read_exact(&mut buf))
            .map_err(|e| {
                Error::model(&self.src, format!("{what}: cannot read external data: {e}"))
            })?;
        Ok(buf)
    }
}

fn from_raw(bytes: &[u8], dt: DataType) -> ConstData {
    match dt {
        DataType::Float => ConstData::F32(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        ),
        DataType::Double => ConstData::F64(
            bytes
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
                .collect(),
        ),
        DataType::Float16 => ConstData::F32(
            bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
        ),
        DataType::Bfloat16 => ConstData::F32(
            bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
        ),
        DataType::Int64 => ConstData::I64(
            bytes
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
                .collect(),
        ),
        DataType::Int32 => ConstData::I64(
            bytes
                .chunks_exact(4)
                .map(|b| i32::from_le_bytes(b.try_into().unwrap()) as i64)
                .collect(),
        ),
        DataType::Int16 => ConstData::I64(
            bytes
                .chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]]) as i64)
                .collect(),
        ),
        DataType::Int8 => ConstData::I64(bytes.iter().map(|&b| b as i8 as i64).collect()),
        _ => ConstData::I64(bytes.iter().map(|&b| b as i64).collect()),
    }
}

pub(super) fn transpose(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0; v.len()];
    for i in 0..rows {
        for j in 0..cols {
            t[j * rows + i] = v[i * cols + j];
        }
    }
    t
}

/// Bytes per element as stored and as kept once decoded, for the supported data types.
fn element_sizes(dt: DataType) -> Option<(u128, u128)> {
    Some(match dt {
        DataType::Float => (4, 4),
        DataType::Float16 | DataType::Bfloat16 => (2, 4),
        DataType::Double | DataType::Int64 => (8, 8),
        DataType::Int32 => (4, 8),
        DataType::Int16 => (2, 8),
        DataType::Int8 | DataType::Uint8 | DataType::Bool => (1, 8),
        _ => return None,
    })
}

/// The values of a tensor stored in its typed fields (`float_data`, `int32_data`, …).
fn typed_data(t: &TensorProto, dt: DataType, count: usize) -> Result<ConstData> {
    let typed_len = match dt {
        DataType::Float => t.float_data.len(),
        DataType::Double => t.double_data.len(),
        DataType::Int64 => t.int64_data.len(),
        _ => t.int32_data.len(),
    };
    if typed_len != count {
        return Err(Error::invalid(
            "typed data",
            format!("{typed_len} values"),
            &format!(
                "shape {:?} needs {count}; missing or truncated data",
                t.dims
            ),
        ));
    }
    let halves =
        |f: fn(u16) -> f32| ConstData::F32(t.int32_data.iter().map(|&v| f(v as u16)).collect());
    Ok(match dt {
        DataType::Float => ConstData::F32(t.float_data.clone()),
        DataType::Double => ConstData::F64(t.double_data.clone()),
        DataType::Int64 => ConstData::I64(t.int64_data.clone()),
        DataType::Float16 => halves(|b| half::f16::from_bits(b).to_f32()),
        DataType::Bfloat16 => halves(|b| half::bf16::from_bits(b).to_f32()),
        _ => ConstData::I64(t.int32_data.iter().map(|&v| v as i64).collect()),
    })
}

/// The first value that is NaN or infinite, with its index.
fn first_non_finite(data: &ConstData) -> Option<(usize, f64)> {
    match data {
        ConstData::F32(v) => v
            .iter()
            .position(|x| !x.is_finite())
            .map(|i| (i, v[i] as f64)),
        ConstData::F64(v) => v.iter().position(|x| !x.is_finite()).map(|i| (i, v[i])),
        ConstData::I64(_) => None,
    }
}
