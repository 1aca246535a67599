//! Separable interpolation (`Resize` in modes `linear` and `cubic`): along each resized axis
//! output position `o` is `Σ_t w_{o,t}·x[i_{o,t}]`, a sparse matrix `M_k`, and the whole
//! operator is `⊗_k M_k`, whose norm is `Π_k ‖M_k‖₂`. Each factor is bounded by Schur's test
//! `‖M‖₂ ≤ √(‖M‖₁·‖M‖_∞)`, which is exact for the usual upsampling (every row sums to 1 and
//! every column to the scale factor, so the constant vector attains it).

use super::{linear_kernel, single, Context, Kernel, LinearPart, Operation, Role};
use crate::error::{Error, Result};
use crate::util::{mul_up, sqrt_up};

/// The interpolation along one axis: `taps[o]` are the `(input index, weight)` pairs of
/// output position `o`.
#[derive(Debug, Clone, PartialEq)]
pub struct AxisMap {
    /// Input length along the axis.
    pub input: usize,
    /// Taps of every output position.
    pub taps: Vec<Vec<(usize, f64)>>,
}

impl AxisMap {
    /// `√(‖M‖₁·‖M‖_∞)`, rounded up.
    fn schur(&self) -> f64 {
        let slack = 1.0 + 4.0 * (self.taps.len() + self.input) as f64 * f64::EPSILON;
        let rows = self
            .taps
            .iter()
            .map(|t| t.iter().map(|(_, w)| w.abs()).sum::<f64>())
            .fold(0.0f64, f64::max);
        let mut cols = vec![0.0f64; self.input];
        for t in &self.taps {
            for &(i, w) in t {
                cols[i] += w.abs();
            }
        }
        let cols = cols.into_iter().fold(0.0f64, f64::max);
        sqrt_up(mul_up(mul_up(rows, cols), slack))
    }
}

/// A separable interpolation: `maps[k]` resizes axis `k` (`None`: left alone).
#[derive(Debug, Clone, PartialEq)]
pub struct Interpolate {
    /// The ONNX mode (`linear`, `cubic`), for messages.
    pub mode: &'static str,
    /// One map per axis.
    pub maps: Vec<Option<AxisMap>>,
}

impl super::Sealed for Interpolate {}

impl Operation for Interpolate {
    fn op_type(&self) -> &'static str {
        "Resize"
    }
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        let s = single(inputs)?;
        if s.len() != self.maps.len() {
            return Err(Error::invalid(
                "resize input rank",
                s.len(),
                &format!("the resize has {} axes", self.maps.len()),
            ));
        }
        let mut out = s.to_vec();
        for (k, m) in self.maps.iter().enumerate() {
            if let Some(m) = m {
                let bad = m.input != s[k]
                    || m.taps
                        .iter()
                        .flatten()
                        .any(|&(i, w)| i >= s[k] || !w.is_finite());
                if bad || m.taps.is_empty() {
                    return Err(Error::invalid(
                        "resize taps",
                        k,
                        &format!("do not fit axis {k} of {s:?}"),
                    ));
                }
                out[k] = m.taps.len();
            }
        }
        Ok(out)
    }
    fn role(&self) -> Role {
        Role::Linear { heavy: true }
    }
    fn lipschitz(&self, _inputs: &[&[usize]]) -> Result<f64> {
        Ok(self
            .maps
            .iter()
            .flatten()
            .fold(1.0, |p, m| mul_up(p, m.schur())))
    }
    fn prepare<'a>(&'a self, cx: &Context<'_>) -> Result<Box<dyn Kernel + 'a>> {
        Ok(linear_kernel(Separable {
            maps: &self.maps,
            input: cx.inputs[0].to_vec(),
        }))
    }
}

struct Separable<'a> {
    maps: &'a [Option<AxisMap>],
    input: Vec<usize>,
}

impl Separable<'_> {
    /// Applies `m` (or its transpose) along axis `k` of a tensor of shape `shape`.
    fn along(m: &AxisMap, k: usize, shape: &[usize], x: &[f64], adjoint: bool) -> Vec<f64> {
        let outer: usize = shape[..k].iter().product();
        let inner: usize = shape[k + 1..].iter().product();
        let (n_from, n_to) = if adjoint {
            (m.taps.len(), m.input)
        } else {
            (m.input, m.taps.len())
        };
        let mut y = vec![0.0; outer * n_to * inner];
        for o in 0..outer {
            let (xs, ys) = (&x[o * n_from * inner..], &mut y[o * n_to * inner..]);
            for (p, taps) in m.taps.iter().enumerate() {
                for &(i, w) in taps {
                    let (from, to) = if adjoint { (p, i) } else { (i, p) };
                    for j in 0..inner {
                        ys[to * inner + j] += w * xs[from * inner + j];
                    }
                }
            }
        }
        y
    }
}

impl LinearPart for Separable<'_> {
    fn apply(&self, ins: &[&[f64]], y: &mut [f64]) {
        let mut shape = self.input.clone();
        let mut cur = ins[0].to_vec();
        for (k, m) in self.maps.iter().enumerate() {
            if let Some(m) = m {
                cur = Self::along(m, k, &shape, &cur, false);
                shape[k] = m.taps.len();
            }
        }
        y.copy_from_slice(&cur);
    }
    fn adjoint(&self, g: &[f64], outs: &mut [Vec<f64>]) {
        let mut shape: Vec<usize> = self
            .maps
            .iter()
            .zip(&self.input)
            .map(|(m, &d)| m.as_ref().map_or(d, |m| m.taps.len()))
            .collect();
        let mut cur = g.to_vec();
        for (k, m) in self.maps.iter().enumerate().rev() {
            if let Some(m) = m {
                cur = Self::along(m, k, &shape, &cur, true);
                shape[k] = m.input;
            }
        }
        outs[0].copy_from_slice(&cur);
    }
}
