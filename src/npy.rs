//! Readers for NumPy files: a `.npy` matrix, so that a weight saved with `numpy.save` can be
//! analysed directly (`lipschitz dense W.npy`); arrays of any rank and `.npz` archives, for
//! the inputs and labels `lipschitz certify` reads. Files are untrusted: sizes are checked
//! before anything is allocated.

use crate::error::{Error, Result};
use std::path::Path;

/// A row-major `f32` matrix read from a `.npy` file.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyMatrix {
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// Row-major entries (rounded from `f64` when the file holds doubles).
    pub data: Vec<f32>,
    /// An upper bound on `‖W_file − W‖_F` where `W` is `data`: 0 for float32 files, the
    /// rounding of the doubles otherwise. Widen a bound computed on `data` by it
    /// ([`crate::Bound::widen`]) so that it contains the norm of the matrix as stored.
    pub conversion_error: f64,
}

/// Largest `.npy` file read (2 GiB).
pub const MAX_NPY_BYTES: u64 = 2 << 30;

fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::invalid("npy file", path.display(), &reason.into())
}

/// Reads a 2-D `<f4` or `<f8` array (C or Fortran order). A 1-D array is read as one row.
/// The path must name a regular file of at most [`MAX_NPY_BYTES`] (a FIFO or a device such as
/// `/dev/zero` is refused, not read).
pub fn read_npy_matrix(path: &Path) -> Result<NpyMatrix> {
    let bytes = crate::untrusted::read_user_file(path, MAX_NPY_BYTES)
        .map_err(|e| bad(path, format!("cannot read: {e}")))?;
    parse_npy_matrix(&bytes).map_err(|reason| bad(path, reason))
}

fn parse_npy_matrix(bytes: &[u8]) -> std::result::Result<NpyMatrix, String> {
    let array = parse_npy(bytes)?;
    let (rows, cols) = match array.shape.as_slice() {
        [n] => (1, *n),
        [r, c] => (*r, *c),
        other => return Err(format!("shape {other:?} is not 1-D or 2-D")),
    };
    if !array.dtype.is_float() {
        return Err(format!(
            "dtype {} is not supported (use float32 or float64)",
            array.dtype.name()
        ));
    }
    let (data, conversion_error) = if array.dtype == Dtype::F32 {
        (array.values.iter().map(|&v| v as f32).collect(), 0.0)
    } else {
        crate::bound::round_to_f32(&array.values)
    };
    Ok(NpyMatrix {
        rows,
        cols,
        data,
        conversion_error,
    })
}

/// The element types read from `.npy` files (little-endian, or single bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    /// `<f4`
    F32,
    /// `<f8`
    F64,
    /// `<i1`, `<i2`, `<i4`, `<i8` (the width in bytes)
    Int(usize),
    /// `<u1`, `<u2`, `<u4`, `<u8`
    UInt(usize),
    /// `|b1`
    Bool,
}

impl Dtype {
    fn parse(descr: &str) -> std::result::Result<Self, String> {
        let unsupported = || {
            format!("dtype {descr} is not supported (float32/64, little-endian integers or bool)")
        };
        // Byte order: little-endian, native (`=`, little on every supported target) or not
        // applicable (`|`); big-endian only for single bytes.
        let code = match descr.as_bytes().first() {
            Some(b'<' | b'|' | b'=') => &descr[1..],
            Some(b'>') if descr.ends_with('1') => &descr[1..],
            Some(b'>') => return Err(unsupported()),
            _ => descr,
        };
        Ok(match code {
            "f4" => Dtype::F32,
            "f8" => Dtype::F64,
            "b1" => Dtype::Bool,
            "i1" => Dtype::Int(1),
            "i2" => Dtype::Int(2),
            "i4" => Dtype::Int(4),
            "i8" => Dtype::Int(8),
            "u1" => Dtype::UInt(1),
            "u2" => Dtype::UInt(2),
            "u4" => Dtype::UInt(4),
            "u8" => Dtype::UInt(8),
            _ => return Err(unsupported()),
        })
    }

    /// Bytes per element.
    pub fn width(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F64 => 8,
            Dtype::Int(w) | Dtype::UInt(w) => w,
            Dtype::Bool => 1,
        }
    }

    /// Whether it is float32 or float64.
    pub fn is_float(self) -> bool {
        matches!(self, Dtype::F32 | Dtype::F64)
    }

    /// numpy's name for it.
    pub fn name(self) -> String {
        match self {
            Dtype::F32 => "float32".into(),
            Dtype::F64 => "float64".into(),
            Dtype::Int(w) => format!("int{}", 8 * w),
            Dtype::UInt(w) => format!("uint{}", 8 * w),
            Dtype::Bool => "bool".into(),
        }
    }

    fn decode(self, c: &[u8]) -> f64 {
        match self {
            Dtype::F32 => f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64,
            Dtype::F64 => f64::from_le_bytes(c.try_into().expect("8 bytes")),
            Dtype::Bool | Dtype::UInt(1) => c[0] as f64,
            Dtype::Int(1) => c[0] as i8 as f64,
            Dtype::Int(2) => i16::from_le_bytes([c[0], c[1]]) as f64,
            Dtype::Int(4) => i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64,
            Dtype::Int(_) => i64::from_le_bytes(c.try_into().expect("8 bytes")) as f64,
            Dtype::UInt(2) => u16::from_le_bytes([c[0], c[1]]) as f64,
            Dtype::UInt(4) => u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64,
            Dtype::UInt(_) => u64::from_le_bytes(c.try_into().expect("8 bytes")) as f64,
        }
    }
}

/// An array of any rank read from a `.npy` file, its values in `f64` (exact for float32,
/// float64 and integers up to 2⁵³), row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    /// The shape (empty for a scalar).
    pub shape: Vec<usize>,
    /// The element type stored in the file.
    pub dtype: Dtype,
    /// The values in C (row-major) order, whatever order the file used.
    pub values: Vec<f64>,
}

/// Reads a `.npy` file of any rank (see [`parse_npy`]), with the same file rules as
/// [`read_npy_matrix`].
pub fn read_npy(path: &Path) -> Result<NpyArray> {
    let bytes = crate::untrusted::read_user_file(path, MAX_NPY_BYTES)
        .map_err(|e| bad(path, format!("cannot read: {e}")))?;
    parse_npy(&bytes).map_err(|reason| bad(path, reason))
}

/// Parses the bytes of a `.npy` file (format versions 1–3): float32/float64, integer or bool
/// arrays of any rank, C or Fortran order.
pub fn parse_npy(bytes: &[u8]) -> std::result::Result<NpyArray, String> {
    let (header, data_start) = split_header(bytes)?;
    let descr = dict_value(header, "descr").ok_or("header has no 'descr'")?;
    let dtype = Dtype::parse(descr.trim_matches(|c| c == '\'' || c == '"'))?;
    let fortran = dict_value(header, "fortran_order").ok_or("header has no 'fortran_order'")?;
    let fortran = fortran.trim() == "True";
    let shape = array_shape(header)?;
    let count = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or("shape overflows")?;
    let needed = count.checked_mul(dtype.width()).ok_or("shape overflows")?;
    let payload = &bytes[data_start..];
    if payload.len() < needed {
        return Err(format!(
            "data holds {} bytes, shape {shape:?} needs {needed}",
            payload.len()
        ));
    }
    let stored: Vec<f64> = payload[..needed]
        .chunks_exact(dtype.width())
        .map(|c| dtype.decode(c))
        .collect();
    let values = if fortran && shape.len() > 1 {
        from_fortran(&stored, &shape)
    } else {
        stored
    };
    Ok(NpyArray {
        shape,
        dtype,
        values,
    })
}

/// Reads the arrays of a `.npz` archive (`numpy.savez` or `savez_compressed`), by name
/// without the `.npy` suffix, in archive order. Every entry's declared and actual size is
/// checked against [`MAX_NPY_BYTES`] in total before and while it is inflated.
pub fn read_npz(path: &Path) -> Result<Vec<(String, NpyArray)>> {
    let bytes = crate::untrusted::read_user_file(path, MAX_NPY_BYTES)
        .map_err(|e| bad(path, format!("cannot read: {e}")))?;
    parse_npz(&bytes).map_err(|reason| bad(path, reason))
}

fn parse_npz(bytes: &[u8]) -> std::result::Result<Vec<(String, NpyArray)>, String> {
    use std::io::Read;
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| format!("not a .npz (zip) archive: {e}"))?;
    let mut budget = MAX_NPY_BYTES;
    let mut arrays = Vec::new();
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(|e| format!("entry {i}: {e}"))?;
        let name = entry.name().to_string();
        if entry.size() > budget {
            return Err(format!(
                "entry '{name}' inflates to {} bytes, over the limit of {MAX_NPY_BYTES} in all",
                entry.size()
            ));
        }
        let mut data = Vec::with_capacity(entry.size() as usize);
        (&mut entry)
            .take(budget + 1)
            .read_to_end(&mut data)
            .map_err(|e| format!("entry '{name}': {e}"))?;
        if data.len() as u64 > budget {
            return Err(format!(
                "entry '{name}' inflates past the limit of {MAX_NPY_BYTES} bytes in all"
            ));
        }
        budget -= data.len() as u64;
        let array = parse_npy(&data).map_err(|e| format!("entry '{name}': {e}"))?;
        let key = name.strip_suffix(".npy").unwrap_or(&name).to_string();
        arrays.push((key, array));
    }
    Ok(arrays)
}

/// Reorders column-major (Fortran) values to row-major.
fn from_fortran(stored: &[f64], shape: &[usize]) -> Vec<f64> {
    let mut out = vec![0.0; stored.len()];
    let mut index = vec![0usize; shape.len()];
    for &v in stored {
        // `index` runs over the array with the first axis fastest (Fortran order).
        let mut flat = 0;
        for (i, &d) in index.iter().zip(shape) {
            flat = flat * d + i;
        }
        out[flat] = v;
        for (i, &d) in index.iter_mut().zip(shape) {
            *i += 1;
            if *i < d {
                break;
            }
            *i = 0;
        }
    }
    out
}

/// The header text (a Python dict literal) and where the data starts.
fn split_header(bytes: &[u8]) -> std::result::Result<(&str, usize), String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not a .npy file (missing \\x93NUMPY magic)".into());
    }
    let major = bytes[6];
    let (header_len, header_start): (usize, usize) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        _ => return Err(format!("unsupported .npy format version {major}")),
    };
    let data_start = header_start
        .checked_add(header_len)
        .filter(|&end| end <= bytes.len())
        .ok_or("truncated header")?;
    let header =
        std::str::from_utf8(&bytes[header_start..data_start]).map_err(|_| "header is not text")?;
    Ok((header, data_start))
}

/// The dimensions in the header's shape tuple.
fn array_shape(header: &str) -> std::result::Result<Vec<usize>, String> {
    let shape_text = dict_value(header, "shape").ok_or("header has no 'shape'")?;
    shape_text
        .trim_matches(|c| c == '(' || c == ')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| format!("bad shape entry '{s}'"))
        })
        .collect()
}

/// The text after `'key':` in a Python dict literal, up to the next top-level comma.
fn dict_value<'h>(header: &'h str, key: &str) -> Option<&'h str> {
    let at = header
        .find(&format!("'{key}'"))
        .or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = &header[at + key.len() + 2..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let mut depth = 0;
    for (i, ch) in rest.char_indices() {
        match ch {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' | '}' if depth == 0 => return Some(rest[..i].trim()),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(descr: &str, fortran: bool, shape: &str, payload: &[u8]) -> Vec<u8> {
        let header = format!(
            "{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape}, }}",
            if fortran { "True" } else { "False" }
        );
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend((header.len() as u16).to_le_bytes());
        out.extend(header.as_bytes());
        out.extend(payload);
        out
    }

    #[test]
    fn reads_c_and_fortran_order_f32_and_f64() {
        let vals = [1f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let f4: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        let m = parse_npy_matrix(&npy("<f4", false, "(2, 3)", &f4)).unwrap();
        assert_eq!((m.rows, m.cols, m.data), (2, 3, vals.to_vec()));
        let f8: Vec<u8> = vals
            .iter()
            .flat_map(|v| (*v as f64).to_le_bytes())
            .collect();
        let m = parse_npy_matrix(&npy("<f8", true, "(2, 3)", &f8)).unwrap();
        assert_eq!(m.data, vec![1.0, 3.0, 5.0, 2.0, 4.0, 6.0]);
        let m = parse_npy_matrix(&npy("<f4", false, "(6,)", &f4)).unwrap();
        assert_eq!((m.rows, m.cols), (1, 6));
    }

    #[test]
    fn reads_any_rank_integers_and_fortran_order() {
        let vals: Vec<u8> = (0..24i64).flat_map(|v| v.to_le_bytes()).collect();
        let a = parse_npy(&npy("<i8", true, "(2, 3, 4)", &vals)).unwrap();
        assert_eq!(a.shape, vec![2, 3, 4]);
        assert_eq!(a.dtype, Dtype::Int(8));
        // Fortran order: element (i, j, k) is stored at i + 2j + 6k.
        for i in 0..2 {
            for j in 0..3 {
                for k in 0..4 {
                    let stored = (i + 2 * j + 6 * k) as f64;
                    assert_eq!(a.values[(i * 3 + j) * 4 + k], stored);
                }
            }
        }
        let a = parse_npy(&npy("|u1", false, "(3,)", &[7, 0, 255])).unwrap();
        assert_eq!(a.values, vec![7.0, 0.0, 255.0]);
        let a = parse_npy(&npy("<i2", false, "()", &(-5i16).to_le_bytes())).unwrap();
        assert_eq!((a.shape.len(), a.values[0]), (0, -5.0));
    }

    #[test]
    fn reads_npz_archives_stored_and_deflated() {
        use std::io::Write;
        for method in [
            zip::CompressionMethod::Stored,
            zip::CompressionMethod::Deflated,
        ] {
            let mut buffer = std::io::Cursor::new(Vec::new());
            let mut w = zip::ZipWriter::new(&mut buffer);
            let options = zip::write::SimpleFileOptions::default().compression_method(method);
            let x: Vec<u8> = [1.5f32, -2.0]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            w.start_file("x.npy", options).unwrap();
            w.write_all(&npy("<f4", false, "(1, 2)", &x)).unwrap();
            w.start_file("y.npy", options).unwrap();
            w.write_all(&npy("<i4", false, "(1,)", &3i32.to_le_bytes()))
                .unwrap();
            w.finish().unwrap();
            let arrays = parse_npz(buffer.get_ref()).unwrap();
            assert_eq!(arrays[0].0, "x");
            assert_eq!(arrays[0].1.values, vec![1.5, -2.0]);
            assert_eq!((arrays[1].0.as_str(), arrays[1].1.values[0]), ("y", 3.0));
        }
        assert!(parse_npz(b"PK nonsense").unwrap_err().contains("zip"));
    }

    #[test]
    fn rejects_bad_files_with_reasons() {
        assert!(parse_npy_matrix(b"hello").unwrap_err().contains("magic"));
        let e = parse_npy_matrix(&npy("<i4", false, "(1,)", &[0; 4])).unwrap_err();
        assert!(e.contains("int32"), "{e}");
        let e = parse_npy(&npy(">f8", false, "(1,)", &[0; 8])).unwrap_err();
        assert!(e.contains(">f8"), "{e}");
        let e = parse_npy_matrix(&npy("<f4", false, "(2, 3)", &[0; 8])).unwrap_err();
        assert!(e.contains("needs 24"), "{e}");
        let e = parse_npy_matrix(&npy("<f4", false, "(2, 3, 4)", &[0; 96])).unwrap_err();
        assert!(e.contains("not 1-D or 2-D"), "{e}");
        let e =
            parse_npy_matrix(&npy("<f4", false, "(99999999999999, 99999999999)", &[])).unwrap_err();
        assert!(e.contains("overflows"), "{e}");
    }
}
