//! The samples to certify: inputs and labels read from `.npy` / `.npz` files (untrusted, like
//! models: sizes checked, every value finite, every label a class).

use crate::error::{Error, Result};
use crate::npy::{read_npy, read_npz, NpyArray};
use std::path::Path;

/// Inputs in the model's layout and their labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Samples {
    /// Number of samples.
    pub n: usize,
    /// Values per sample (the model's input size).
    pub dim: usize,
    /// `n × dim` values, sample after sample.
    pub inputs: Vec<f64>,
    /// The true class of each sample.
    pub labels: Vec<usize>,
}

impl Samples {
    /// Checks inputs (`n × dim` values) and labels against a model with `classes` outputs.
    pub fn new(inputs: Vec<f64>, dim: usize, labels: Vec<usize>, classes: usize) -> Result<Self> {
        crate::error::check_positive("values per sample", dim)?;
        if inputs.len() != labels.len() * dim {
            return Err(Error::length("inputs", labels.len() * dim, inputs.len()));
        }
        if let Some(at) = inputs.iter().position(|v| !v.is_finite()) {
            return Err(Error::invalid(
                "input",
                inputs[at],
                &format!("sample {}, value {} is not finite", at / dim, at % dim),
            ));
        }
        if let Some((i, &l)) = labels.iter().enumerate().find(|(_, &l)| l >= classes) {
            return Err(Error::invalid(
                "label",
                l,
                &format!("sample {i}: the model has {classes} classes (0..{classes})"),
            ));
        }
        Ok(Samples {
            n: labels.len(),
            dim,
            inputs,
            labels,
        })
    }

    /// Sample `i`'s input.
    pub fn input(&self, i: usize) -> &[f64] {
        &self.inputs[i * self.dim..(i + 1) * self.dim]
    }

    /// Reads inputs from `inputs` (`.npy`, or `.npz` with arrays `x` and `y`) and labels from
    /// `labels` (`.npy`; optional with an `.npz` that holds `y`). `sample_shape` is one
    /// sample's shape in the model (its input shape without the batch axis): the inputs
    /// must be `N × sample_shape`, or `N × dim` flattened.
    pub fn read(
        inputs: &Path,
        labels: Option<&Path>,
        sample_shape: &[usize],
        classes: usize,
    ) -> Result<Self> {
        let is_npz = inputs
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("npz"));
        let (x, mut y) = if is_npz {
            let mut arrays = read_npz(inputs)?;
            let mut take = |name: &str| {
                arrays
                    .iter()
                    .position(|(k, _)| k == name)
                    .map(|i| arrays.swap_remove(i).1)
            };
            let x = take("x").ok_or_else(|| {
                Error::invalid("npz file", inputs.display(), "has no array named 'x'")
            })?;
            (x, take("y"))
        } else {
            (read_npy(inputs)?, None)
        };
        if let Some(path) = labels {
            y = Some(read_npy(path)?);
        }
        let y = y.ok_or_else(|| {
            Error::invalid(
                "labels",
                inputs.display(),
                "none given: pass --labels Y.npy (or an .npz with an array 'y')",
            )
        })?;
        let what = inputs.display().to_string();
        let (n, dim) = input_layout(&x, sample_shape, &what)?;
        let labels = label_values(&y, n)?;
        debug_assert_eq!(labels.len(), n);
        Samples::new(x.values, dim, labels, classes)
            .map_err(|e| Error::invalid("samples", &what, &e.to_string()))
    }
}

/// `(N, values per sample)` of an input array, checked against the model's sample shape.
fn input_layout(x: &NpyArray, sample_shape: &[usize], what: &str) -> Result<(usize, usize)> {
    if !x.dtype.is_float() {
        return Err(Error::invalid(
            "inputs",
            what,
            &format!(
                "hold {}; give float32 or float64 values, scaled as the model expects",
                x.dtype.name()
            ),
        ));
    }
    let dim: usize = sample_shape.iter().product();
    // A model that takes flat vectors reads any sample shape flattened in C order (what
    // `torch.flatten` does); a structured one only its own shape, so that a channels-last
    // array is not silently read as channels-first.
    let fits = match x.shape.split_first() {
        Some((_, rest)) if sample_shape.len() == 1 => rest.iter().product::<usize>() == dim,
        Some((_, rest)) => rest == sample_shape || rest == [dim],
        None => false,
    };
    if !fits {
        return Err(Error::invalid(
            "inputs",
            what,
            &format!(
                "have shape {:?}; the model takes samples of shape {sample_shape:?}: expected \
                 (N, {}){}",
                x.shape,
                sample_shape
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                if sample_shape.len() > 1 {
                    format!(" or (N, {dim})")
                } else {
                    String::new()
                }
            ),
        ));
    }
    Ok((x.shape[0], dim))
}

/// Class indices from an integer array of shape `(n,)` or `(n, 1)` (floats holding whole
/// numbers are accepted too).
fn label_values(y: &NpyArray, n: usize) -> Result<Vec<usize>> {
    if !(y.shape == [n] || y.shape == [n, 1]) {
        return Err(Error::invalid(
            "labels",
            format!("shape {:?}", y.shape),
            &format!("expected ({n},): one class index per input sample"),
        ));
    }
    y.values
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            if v >= 0.0 && v.fract() == 0.0 && v < u32::MAX as f64 {
                Ok(v as usize)
            } else {
                Err(Error::invalid(
                    "label",
                    v,
                    &format!("sample {i}: a class index is a whole number ≥ 0"),
                ))
            }
        })
        .collect()
}
