//! A reader for NumPy `.npy` files holding a 2-D float matrix, so that a weight saved with
//! `numpy.save` can be analysed directly (`lipschitz dense W.npy`).

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
    let (header, data_start) = split_header(bytes)?;
    let descr = dict_value(header, "descr").ok_or("header has no 'descr'")?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    let width = match descr {
        "<f4" | "f4" => 4,
        "<f8" | "f8" => 8,
        other => {
            return Err(format!(
                "dtype {other} is not supported (use float32 or float64)"
            ))
        }
    };
    let fortran = dict_value(header, "fortran_order").ok_or("header has no 'fortran_order'")?;
    let fortran = fortran.trim() == "True";
    let (rows, cols) = matrix_shape(header)?;
    let count = rows.checked_mul(cols).ok_or("shape overflows")?;
    let needed = count.checked_mul(width).ok_or("shape overflows")?;
    let payload = &bytes[data_start..];
    if payload.len() < needed {
        return Err(format!(
            "data holds {} bytes, shape ({rows}, {cols}) needs {needed}",
            payload.len()
        ));
    }
    let (values, conversion_error) = decode(&payload[..needed], width);
    let data = if fortran {
        let mut t = vec![0f32; count];
        for j in 0..cols {
            for i in 0..rows {
                t[i * cols + j] = values[j * rows + i];
            }
        }
        t
    } else {
        values
    };
    Ok(NpyMatrix {
        rows,
        cols,
        data,
        conversion_error,
    })
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

/// `(rows, cols)` from the header's shape (a 1-D array is one row).
fn matrix_shape(header: &str) -> std::result::Result<(usize, usize), String> {
    let shape_text = dict_value(header, "shape").ok_or("header has no 'shape'")?;
    let dims: Vec<usize> = shape_text
        .trim_matches(|c| c == '(' || c == ')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| format!("bad shape entry '{s}'"))
        })
        .collect::<std::result::Result<_, _>>()?;
    match dims.as_slice() {
        [n] => Ok((1, *n)),
        [r, c] => Ok((*r, *c)),
        _ => Err(format!("shape {shape_text} is not 1-D or 2-D")),
    }
}

/// Little-endian `f32` or `f64` values as `f32`, with the Frobenius norm of what rounding
/// doubles changed.
fn decode(payload: &[u8], width: usize) -> (Vec<f32>, f64) {
    if width == 4 {
        let v = payload
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        (v, 0.0)
    } else {
        let doubles: Vec<f64> = payload
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        crate::bound::round_to_f32(&doubles)
    }
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
    fn rejects_bad_files_with_reasons() {
        assert!(parse_npy_matrix(b"hello").unwrap_err().contains("magic"));
        let e = parse_npy_matrix(&npy("<i4", false, "(1,)", &[0; 4])).unwrap_err();
        assert!(e.contains("<i4"), "{e}");
        let e = parse_npy_matrix(&npy("<f4", false, "(2, 3)", &[0; 8])).unwrap_err();
        assert!(e.contains("needs 24"), "{e}");
        let e = parse_npy_matrix(&npy("<f4", false, "(2, 3, 4)", &[])).unwrap_err();
        assert!(e.contains("not 1-D or 2-D"), "{e}");
        let e =
            parse_npy_matrix(&npy("<f4", false, "(99999999999999, 99999999999)", &[])).unwrap_err();
        assert!(e.contains("overflows"), "{e}");
    }
}
