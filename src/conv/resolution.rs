//! A resolution-independent upper bound: `sup_ω σ₁(M(ω))` over continuous frequencies
//! `ω ∈ [0, 2π)²`, with `M(ω) = Σ_{p,q} w[:,:,p,q]·e^{i(ω_h·p·d_h + ω_w·q·d_w)}`. It bounds the
//! layer at *every* input size: a zero-padded layer by its circular embedding on any grid,
//! a circular one because its grid frequencies are points of the continuum (times the
//! repetition factor when circular outputs wrap, see [`Conv2d::circular_multiplicity`]).
//!
//! Certification: with taps centred (`P = (p − c_h)·d_h`, a unimodular factor that leaves σ₁
//! alone), `‖M(ω) − M(ω₀)‖ ≤ Σ_{p,q} ‖w_pq‖₂·(|P|·|Δω_h| + |Q|·|Δω_w|)`. A cell of half-widths
//! `(r_h, r_w)` around `ω₀` is therefore bounded by `σ₁(M(ω₀)) + a_h·r_h + a_w·r_w`. We start
//! from a grid, then repeatedly split the cell with the largest bound (4 children) until the
//! bound is within `rtol` of the best value found or the evaluation budget is spent. Real
//! kernels give `σ₁(M(−ω)) = σ₁(M(ω))`, so `ω_w ∈ [0, π]` suffices.

use super::circular::{block_sigma_squared, sigma_squared_margin};
use super::spectrum::C64;
use super::Conv2d;
use crate::error::Result;
use rayon::prelude::*;
use serde::Serialize;
use std::collections::BinaryHeap;
use std::f64::consts::PI;

/// The resolution-independent bound and how it was reached.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ResolutionBound {
    /// Proven `sup_ω σ₁(M(ω))` (times the circular repetition factor, if any): valid for the
    /// layer at every input size.
    pub upper: f64,
    /// The largest `σ₁(M(ω))` found at an evaluated frequency (a lower bound on the supremum,
    /// not on the layer at a given size).
    pub best: f64,
    /// Frequencies evaluated.
    pub evaluations: usize,
}

/// A cell of the frequency domain with its certified bound.
#[derive(Debug, Clone, Copy)]
struct Cell {
    bound: f64,
    centre: [f64; 2],
    half: [f64; 2],
}

impl PartialEq for Cell {
    fn eq(&self, other: &Self) -> bool {
        self.bound.total_cmp(&other.bound).is_eq()
    }
}
impl Eq for Cell {}
impl PartialOrd for Cell {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Cell {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.bound.total_cmp(&other.bound)
    }
}

/// Evaluates σ₁ of every group's `M(ω)` (the maximum), with its rounding margin, as
/// `(lower, upper)` estimates of σ₁.
struct Evaluator<'a> {
    conv: &'a Conv2d,
    weights: &'a [f32],
    margin: f64,
    centre: [f64; 2],
}

impl Evaluator<'_> {
    fn sigma(&self, omega: [f64; 2]) -> Result<(f64, f64)> {
        let c = self.conv;
        let (og, cg) = (c.group_out(), c.group_in());
        let (kh, kw) = (c.kernel[0], c.kernel[1]);
        let phase: Vec<C64> = (0..kh * kw)
            .map(|t| {
                let p = (t / kw) as f64 * c.dilation[0] as f64 - self.centre[0];
                let q = (t % kw) as f64 * c.dilation[1] as f64 - self.centre[1];
                let angle = omega[0] * p + omega[1] * q;
                C64::new(angle.cos(), angle.sin())
            })
            .collect();
        let mut best = 0.0f64;
        let mut block = vec![C64::default(); og * cg];
        for g in 0..c.groups {
            for (j, v) in block.iter_mut().enumerate() {
                let base = (g * og * cg + j) * kh * kw;
                *v = self.weights[base..base + kh * kw]
                    .iter()
                    .zip(&phase)
                    .map(|(w, e)| e * *w as f64)
                    .sum();
            }
            best = best.max(block_sigma_squared(&block, og, cg)?);
        }
        Ok((best.sqrt(), (best + self.margin).sqrt()))
    }
}

/// Certified `sup_ω σ₁(M(ω))` for a validated layer (OIHW `weights`), starting from an
/// `initial × initial` grid and spending at most `max_evaluations` block norms; stops early
/// once the bound is within `rtol` of the best value found.
pub fn resolution_independent_bound(
    conv: &Conv2d,
    weights: &[f32],
    initial: usize,
    max_evaluations: usize,
    rtol: f64,
) -> Result<ResolutionBound> {
    conv.validate_weights(weights)?;
    let (og, cg) = (conv.group_out(), conv.group_in());
    let (kh, kw) = (conv.kernel[0], conv.kernel[1]);
    let centre = [
        (kh - 1) as f64 * conv.dilation[0] as f64 / 2.0,
        (kw - 1) as f64 * conv.dilation[1] as f64 / 2.0,
    ];
    // Lipschitz weights a_h = Σ ‖w_pq‖₂·|P|, a_w = Σ ‖w_pq‖₂·|Q| (max over groups per tap).
    let mut a = [0.0f64; 2];
    for p in 0..kh {
        for q in 0..kw {
            let mut tap_norm = 0.0f64;
            for g in 0..conv.groups {
                let tap: Vec<f32> = (0..og * cg)
                    .map(|j| weights[((g * og * cg + j) * kh + p) * kw + q])
                    .collect();
                let opts = crate::Options::with_rtol(1e-6);
                tap_norm = tap_norm.max(crate::dense_norm(&tap, og, cg, &opts)?.upper);
            }
            a[0] += tap_norm * (p as f64 * conv.dilation[0] as f64 - centre[0]).abs();
            a[1] += tap_norm * (q as f64 * conv.dilation[1] as f64 - centre[1]).abs();
        }
    }
    let [mh, mw] = conv.circular_multiplicity()?;
    let repetition = ((mh * mw) as f64).sqrt() * (1.0 + 4.0 * crate::kernels::UNIT_ROUNDOFF);
    let eval = Evaluator {
        conv,
        weights,
        margin: sigma_squared_margin(conv, weights),
        centre,
    };
    let n = initial.max(2);
    let step = 2.0 * PI / n as f64;
    let half = [step / 2.0, step / 2.0];
    let centres: Vec<[f64; 2]> = (0..n)
        .flat_map(|i| (0..=n / 2).map(move |j| [i as f64 * step, j as f64 * step]))
        .collect();
    let values: Vec<Result<(f64, f64)>> = centres.par_iter().map(|&c| eval.sigma(c)).collect();
    let mut best = 0.0f64;
    let mut heap = BinaryHeap::new();
    for (centre, value) in centres.iter().zip(values) {
        let (lower, upper) = value?;
        best = best.max(lower);
        heap.push(Cell {
            bound: upper + a[0] * half[0] + a[1] * half[1],
            centre: *centre,
            half,
        });
    }
    let mut evaluations = centres.len();
    while let Some(top) = heap.peek().copied() {
        if top.bound <= best * (1.0 + rtol) || evaluations + 4 > max_evaluations {
            break;
        }
        heap.pop();
        let h = [top.half[0] / 2.0, top.half[1] / 2.0];
        let children: Vec<[f64; 2]> = [(-1.0, -1.0), (-1.0, 1.0), (1.0, -1.0), (1.0, 1.0)]
            .iter()
            .map(|(dh, dw)| [top.centre[0] + dh * h[0], top.centre[1] + dw * h[1]])
            .collect();
        let values: Vec<Result<(f64, f64)>> = children.par_iter().map(|&c| eval.sigma(c)).collect();
        for (centre, value) in children.iter().zip(values) {
            let (lower, upper) = value?;
            best = best.max(lower);
            heap.push(Cell {
                bound: upper + a[0] * h[0] + a[1] * h[1],
                centre: *centre,
                half: h,
            });
        }
        evaluations += 4;
    }
    let upper = heap.peek().map_or(best, |c| c.bound.max(best));
    Ok(ResolutionBound {
        upper: upper * repetition,
        best,
        evaluations,
    })
}
