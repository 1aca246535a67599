//! A resolution-independent upper bound: `sup_ω σ₁(M(ω))` over continuous frequencies
//! `ω ∈ [0, 2π)²`, with `M(ω) = Σ_{p,q} w[:,:,p,q]·e^{i(ω_h·p·d_h + ω_w·q·d_w)}`. It bounds the
//! layer at *every* input size: a zero-padded layer by its circular embedding on any grid,
//! a circular one because its grid frequencies are points of the continuum (times the
//! repetition factor when circular outputs wrap, see [`Conv2d::circular_multiplicity`]).
//!
//! Certification: with taps centred (`P = (p − c_h)·d_h`, a unimodular factor that leaves σ₁
//! alone), σ₁ is bounded on a rectangular cell of widths `(H_h, H_w)` from its four corners:
//!
//! * first order: `‖M(ω) − M(ω₀)‖ ≤ Σ_{p,q} ‖w_pq‖₂·(|P|·|Δω_h| + |Q|·|Δω_w|)` and every point
//!   is within half a width of a corner, so `σ₁ ≤ max_corners σ₁ + (a_h·H_h + a_w·H_w)/2`;
//! * second order: for unit `u, v` the function `g(ω) = Re uᴴM(ω)v` has
//!   `|∂²g/∂ω_h²| ≤ b_h = Σ‖w_pq‖₂·P²` (likewise `b_w`), so it is at most its bilinear
//!   interpolant plus `(b_h·H_h² + b_w·H_w²)/8`; the interpolant is a convex combination of
//!   corner values `g ≤ σ₁`, and σ₁ at any point is `g` for its own singular pair, so
//!   `σ₁ ≤ max_corners σ₁ + (b_h·H_h² + b_w·H_w²)/8` — quadratic in the cell size.
//!
//! Each cell takes the smaller slack. We start from a grid, then repeatedly split the cell with
//! the largest bound (4 children, 5 new corners, shared corners evaluated once) until the bound
//! is within `rtol` of the best value found or the evaluation budget is spent. Real kernels
//! give `σ₁(M(−ω)) = σ₁(M(ω))`, so `ω_w ∈ [0, π]` suffices.

use super::circular::{block_sigma_squared, sigma_squared_margin};
use super::spectrum::C64;
use super::Conv2d;
use crate::error::Result;
use rayon::prelude::*;
use serde::Serialize;
use std::collections::{BinaryHeap, HashMap};
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

/// A cell of the frequency domain with its certified bound: corners `origin` and
/// `origin + size` in lattice units (see [`Lattice`]).
#[derive(Debug, Clone, Copy)]
struct Cell {
    bound: f64,
    origin: [u64; 2],
    size: u64,
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
    let centre = [0, 1].map(|a| (conv.kernel[a] - 1) as f64 * conv.dilation[a] as f64 / 2.0);
    let (first, second) = slack_weights(conv, weights, centre)?;
    let [mh, mw] = conv.circular_multiplicity()?;
    let repetition = ((mh * mw) as f64).sqrt() * (1.0 + 4.0 * crate::kernels::UNIT_ROUNDOFF);
    let n = initial.max(2).div_ceil(2) * 2;
    let mut lattice = Lattice {
        eval: Evaluator {
            conv,
            weights,
            margin: sigma_squared_margin(conv, weights),
            centre,
        },
        unit: 2.0 * PI / n as f64 / (1u64 << DEPTH) as f64,
        first,
        second,
        cache: HashMap::new(),
        best: 0.0,
    };
    let initial_size = 1u64 << DEPTH;
    // ω_h ∈ [0, 2π) in n cells, ω_w ∈ [0, π] in n/2 cells.
    let cells: Vec<Cell> = (0..n as u64)
        .flat_map(|i| (0..n as u64 / 2).map(move |j| (i, j)))
        .map(|(i, j)| Cell {
            bound: 0.0,
            origin: [i * initial_size, j * initial_size],
            size: initial_size,
        })
        .collect();
    let mut heap = BinaryHeap::new();
    lattice.add(cells, &mut heap)?;
    while let Some(top) = heap.peek().copied() {
        let enough = top.bound <= lattice.best * (1.0 + rtol);
        if enough || lattice.cache.len() + 5 > max_evaluations || top.size < 2 {
            break;
        }
        heap.pop();
        let half = top.size / 2;
        let children: Vec<Cell> = [[0, 0], [half, 0], [0, half], [half, half]]
            .iter()
            .map(|&[dh, dw]| Cell {
                bound: 0.0,
                origin: [top.origin[0] + dh, top.origin[1] + dw],
                size: half,
            })
            .collect();
        lattice.add(children, &mut heap)?;
    }
    let best = lattice.best;
    let upper = heap.peek().map_or(best, |c| c.bound.max(best));
    Ok(ResolutionBound {
        upper: upper * repetition,
        best,
        evaluations: lattice.cache.len(),
    })
}

/// Lattice coordinates: the initial step is 2^DEPTH units, so corners of cells split up to
/// DEPTH times are integers and shared corners are found in the cache.
const DEPTH: u32 = 30;

/// The slack weights per axis (max over groups per tap): first order `Σ‖w_pq‖₂·|P|`, second
/// order `Σ‖w_pq‖₂·P²`, `P` the tap's offset from the kernel's centre.
fn slack_weights(conv: &Conv2d, weights: &[f32], centre: [f64; 2]) -> Result<([f64; 2], [f64; 2])> {
    let (og, cg) = (conv.group_out(), conv.group_in());
    let (kh, kw) = (conv.kernel[0], conv.kernel[1]);
    let mut a = [0.0f64; 2];
    let mut b = [0.0f64; 2];
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
            let offset = [
                p as f64 * conv.dilation[0] as f64 - centre[0],
                q as f64 * conv.dilation[1] as f64 - centre[1],
            ];
            for axis in 0..2 {
                a[axis] += tap_norm * offset[axis].abs();
                b[axis] += tap_norm * offset[axis] * offset[axis];
            }
        }
    }
    Ok((a, b))
}

/// The block norms computed so far on the lattice of frequencies, and the best lower value.
struct Lattice<'a> {
    eval: Evaluator<'a>,
    /// Frequency per lattice unit.
    unit: f64,
    /// Slack weights (see [`slack_weights`]).
    first: [f64; 2],
    second: [f64; 2],
    /// Certified upper value of `σ₁` at each lattice point visited.
    cache: HashMap<[u64; 2], f64>,
    best: f64,
}

impl Lattice<'_> {
    /// How far `σ₁` can rise inside a cell of `size` units above its corners' maximum.
    fn slack(&self, size: u64) -> f64 {
        let width = size as f64 * self.unit;
        let (a, b) = (self.first, self.second);
        let first = (a[0] + a[1]) * width / 2.0;
        let second = (b[0] + b[1]) * width * width / 8.0;
        first.min(second)
    }

    fn corners(c: &Cell) -> [[u64; 2]; 4] {
        let [h, w] = c.origin;
        let s = c.size;
        [[h, w], [h + s, w], [h, w + s], [h + s, w + s]]
    }

    /// Evaluates the corners of `cells` not seen yet (in parallel), then bounds each cell and
    /// pushes it.
    fn add(&mut self, cells: Vec<Cell>, heap: &mut BinaryHeap<Cell>) -> Result<()> {
        let fresh: Vec<[u64; 2]> = cells
            .iter()
            .flat_map(Self::corners)
            .filter(|p| !self.cache.contains_key(p))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let unit = self.unit;
        let values: Vec<Result<(f64, f64)>> = fresh
            .par_iter()
            .map(|&[h, w]| self.eval.sigma([h as f64 * unit, w as f64 * unit]))
            .collect();
        for (point, value) in fresh.into_iter().zip(values) {
            let (lower, upper) = value?;
            self.best = self.best.max(lower);
            self.cache.insert(point, upper);
        }
        for mut cell in cells {
            let corners = Self::corners(&cell);
            cell.bound =
                corners.iter().map(|p| self.cache[p]).fold(0.0, f64::max) + self.slack(cell.size);
            heap.push(cell);
        }
        Ok(())
    }
}
