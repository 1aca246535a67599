//! Classical cheap upper bounds on a conv layer's norm, reported next to the certified result
//! so users can see how much tighter it is. Each is valid for every padding, stride, dilation
//! and group setting we support:
//!
//! * `tap_sum = Σ_{p,q} ‖w[:,:,p,q]‖₂`: the layer is a sum over taps of a channel matrix
//!   times a shift/crop/subsample operator, each of norm ≤ 1 (triangle inequality) — or
//!   `√(m_h·m_w)` when circular outputs wrap onto the same input rows `m` times (every bound
//!   here carries that factor).
//! * `frobenius = √(kH·kW)·‖w‖_F ≥ Σ‖w_pq‖_F ≥ tap_sum` (Cauchy–Schwarz): the crudest bound.
//! * `fantastic_four = √(kH·kW)·min(‖R‖₂, ‖S‖₂, ‖T‖₂, ‖U‖₂)` over the four unfoldings of the
//!   kernel (Singla & Feizi, ICLR 2021): `R: (C_out·kH) × (C_in·kW)`, `S: (C_out·kW) × (C_in·kH)`,
//!   `T: C_out × (C_in·kH·kW)`, `U: (C_out·kH·kW) × C_in`; per group, maximum over groups.
//!
//! Matrix norms come from [`crate::dense_norm`] and their upper ends are used, so each bound is
//! as certified as those (exact for matrices up to 128 on a side, probabilistic(δ) beyond).

use super::Conv2d;
use crate::bound::Options;
use crate::error::Result;
use serde::Serialize;

/// The classical bounds of one layer (see the module docs for their definitions).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ClassicBounds {
    /// `Σ_{p,q} ‖w[:,:,p,q]‖₂` (maximum over groups).
    pub tap_sum: f64,
    /// `√(kH·kW)·‖w‖_F` (maximum over groups).
    pub frobenius: f64,
    /// `√(kH·kW)·min` of the four unfoldings' norms (maximum over groups).
    pub fantastic_four: f64,
}

/// Upper end of a certified matrix norm: exact SVD for small matrices, Lanczos to rtol 1e-3
/// (probabilistic) for large ones, so the comparison costs milliseconds even at 512 channels.
fn norm(matrix: &[f32], rows: usize, cols: usize) -> Result<f64> {
    let opts = if rows.min(cols) <= 128 {
        Options::with_rtol(1e-6)
    } else {
        Options {
            method: crate::bound::Method::Lanczos,
            ..Options::with_rtol(1e-3)
        }
    };
    Ok(crate::dense_norm(matrix, rows, cols, &opts)?.upper)
}

/// Computes the classical bounds of a validated layer with OIHW `weights`.
pub fn classic_bounds(conv: &Conv2d, weights: &[f32]) -> Result<ClassicBounds> {
    conv.validate_weights(weights)?;
    let (og, cg) = (conv.group_out(), conv.group_in());
    let (kh, kw) = (conv.kernel[0], conv.kernel[1]);
    let taps = kh * kw;
    let root_taps = (taps as f64).sqrt();
    // Circular outputs that wrap re-read input rows: each tap's shift has norm √(m_h·m_w).
    let [mh, mw] = conv.circular_multiplicity()?;
    let repeat = ((mh * mw) as f64).sqrt();
    let mut out = ClassicBounds {
        tap_sum: 0.0,
        frobenius: 0.0,
        fantastic_four: 0.0,
    };
    for g in 0..conv.groups {
        let w = &weights[g * og * cg * taps..(g + 1) * og * cg * taps];
        let at = |o: usize, c: usize, p: usize, q: usize| w[((o * cg + c) * kh + p) * kw + q];
        let mut tap_sum = 0.0;
        for p in 0..kh {
            for q in 0..kw {
                let tap: Vec<f32> = (0..og)
                    .flat_map(|o| (0..cg).map(move |c| (o, c)))
                    .map(|(o, c)| at(o, c, p, q))
                    .collect();
                tap_sum += norm(&tap, og, cg)?;
            }
        }
        let frob = w.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
        let unfold = |rows: usize, cols: usize, index: &dyn Fn(usize, usize) -> f32| {
            let m: Vec<f32> = (0..rows * cols)
                .map(|i| index(i / cols, i % cols))
                .collect();
            norm(&m, rows, cols)
        };
        let r = unfold(og * kh, cg * kw, &|row, col| {
            at(row / kh, col / kw, row % kh, col % kw)
        })?;
        let s = unfold(og * kw, cg * kh, &|row, col| {
            at(row / kw, col / kh, col % kh, row % kw)
        })?;
        let t = unfold(og, cg * taps, &|row, col| {
            at(row, col / taps, (col % taps) / kw, col % kw)
        })?;
        let u = unfold(og * taps, cg, &|row, col| {
            at(row / taps, col, (row % taps) / kw, row % kw)
        })?;
        out.tap_sum = out.tap_sum.max(repeat * tap_sum);
        out.frobenius = out.frobenius.max(repeat * root_taps * frob);
        out.fantastic_four = out
            .fantastic_four
            .max(repeat * root_taps * r.min(s).min(t).min(u));
    }
    Ok(out)
}
