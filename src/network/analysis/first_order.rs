//! LipSDP-Neuron for LMIs too large for the interior-point method (`interior.rs`): a
//! first-order method on the program's eigenvalue form, whose multipliers are then checked
//! like any others (`sdp::verify`), so the bound is as sound as the interior point's and
//! only its distance to the optimum differs.
//!
//! Split `S(ρ, t) = −M(ρ, t)` (`sdp.rs`) into input and unit blocks, `S(0, t) =
//! [[A, B], [Bᵀ, D]]`. For multipliers with `D ≻ 0` the smallest `ρ` that makes `S ⪰ 0` is
//! `f(t) = λ_max(R(t))`, `R = B D⁻¹ Bᵀ − A` (`n0 × n0`), so LipSDP-Neuron is
//! `min_t f(t)` over `{t ≥ 0 : D(t) ≻ 0}`: a convex function (the partial minimum of the
//! convex LMI over `ρ`) of one variable per unit, with no matrix variable at all. With `u`
//! the top unit eigenvector of `R` and `ξ = (u, −D⁻¹Bᵀu)` the null vector of `S(f(t), t)`,
//! `∂f/∂tᵢ = ξᵀGᵢξ` (envelope theorem; `Gᵢ` as in `sdp.rs`): one product `Zξ` gives the
//! whole gradient. (This is the eigenvalue route of LipDiff, Wang et al. ICLR 2024, with
//! the inputs eliminated exactly instead of penalised.)
//!
//! `f` is not smooth where the top eigenvalue is multiple — at the optimum it usually is —
//! so the method minimises the soft maximum `f_μ = μ·ln Σⱼ exp(λⱼ/μ)` (`f ≤ f_μ ≤ f + μ ln n0`,
//! its gradient the softmax-weighted eigenvalue gradients) by L-BFGS in `s = ln t` (which
//! keeps `t > 0`), for a decreasing sequence of `μ`. Every evaluation's exact `f(t)` is
//! kept, and the best multipliers go to the check. Each evaluation is one Cholesky
//! factorisation of `D`, by blocks that skip its structural zeros ([`Panels`]), one
//! triangular solve `W = L⁻¹Bᵀ` with `n0` right-hand sides (`R = WᵀW − A`) and an `n0 × n0`
//! eigendecomposition. On random 64-w×3-10 ReLU MLPs the [`MAX_EVALUATIONS`] end
//! 0.3–0.4 % above the interior-point optimum (`N` = 1024, 1600, 2044: 3.7539 vs 3.7413,
//! 4.4104 vs 4.3983, 4.7399 vs 4.7219) in 1.1, 3.1 and 4.7 s against 8.2, 27.5 and 48.5 s
//! (`cargo run --release --example lipsdp_scaling`).

use super::sdp::Problem;
use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::cholesky::llt::factor::{cholesky_in_place, cholesky_in_place_scratch};
use faer::linalg::matmul::triangular::{self, BlockStructure};
use faer::linalg::triangular_solve::{
    solve_lower_triangular_in_place, solve_upper_triangular_in_place,
};
use faer::reborrow::{Reborrow, ReborrowMut};
use faer::{Accum, Mat, Par, Side};
use rayon::prelude::*;
use std::time::Instant;

/// Soft-maximum temperatures, relative to the best `f` when each stage starts, used in
/// turn (from 1e-2 of the start's `f`, the first stage stalled 1 % above the optimum at
/// `N` = 2044; these reach 0.5 % in 50 evaluations).
const TEMPERATURES: [f64; 3] = [3e-3, 1e-3, 3e-4];

/// L-BFGS iterations per temperature at most.
const ITERATIONS_PER_STAGE: usize = 60;

/// Objective evaluations in all (each a Cholesky factorisation of the unit block). A count,
/// not a time, so that results do not depend on the machine: ~40 reach 1 % of the optimum
/// on the test networks, 60 a few tenths of a percent.
pub(super) const MAX_EVALUATIONS: usize = 60;

/// L-BFGS memory.
const MEMORY: usize = 12;

/// Relative decrease of `f_μ` over [`STALL_WINDOW`] iterations below which a stage ends.
const STALL: f64 = 1e-5;
const STALL_WINDOW: usize = 5;

/// The best multipliers found and the effort.
pub(super) struct Solution {
    /// `f(t)` at the best multipliers (an estimate: the check decides).
    pub rho: f64,
    pub t: Vec<f64>,
    /// Objective evaluations made.
    pub evaluations: usize,
    /// Whether the deadline ended the run.
    pub timed_out: bool,
}

/// One evaluation: the soft maximum, its gradient in `s = ln t`, and the exact `f(t)`.
struct Value {
    soft: f64,
    gradient: Vec<f64>,
    exact: f64,
}

/// The program's data split into input (`x`) and unit (`h`) blocks, formed once: every
/// evaluation assembles `S(0, t)`'s blocks from these in `O(units²)` (plus one product for
/// units with `αβ ≠ 0`), never the whole `N × N` matrix.
struct Blocks {
    /// Input coordinates, after the reduction below.
    n0: usize,
    /// Eigenvalues `R` has at 0 besides the reduced problem's: the input directions no unit
    /// and no output reads (their null vectors `(u, 0)` have zero gradient).
    null: usize,
    /// `Z`'s input columns (`units × n0`) and unit columns (`units × units`), and their
    /// transposes.
    zx: Mat<f64>,
    zh: Mat<f64>,
    zx_t: Mat<f64>,
    zh_t: Mat<f64>,
    /// `E_yᵀE_y`'s blocks.
    gy_xx: Mat<f64>,
    gy_xh: Mat<f64>,
    gy_hh: Mat<f64>,
    /// `(α+β, αβ)` per unit.
    coef: Vec<(f64, f64)>,
    /// Whether any unit has `αβ ≠ 0`.
    curved: bool,
    /// `D`'s block structure.
    panels: Panels,
}

/// Units grouped into panels of consecutive nonlinear nodes, and which blocks of `D` (and
/// of its Cholesky factor) can be nonzero. A unit couples only to the units its
/// pre-activation reads and to those reading it (`Z_h` is block lower triangular in
/// topological order) and, through `E_yᵀE_y`, to the units feeding the output: an MLP's
/// `D` is block tridiagonal, and factorising it by blocks skips the zeros (a 64-660×3-10
/// MLP: 37 → ~20 ms per evaluation).
struct Panels {
    ranges: Vec<std::ops::Range<usize>>,
    /// `nonzero[i][j]` for `i ≥ j`, closed under the factorisation's fill.
    nonzero: Vec<Vec<bool>>,
}

/// Closes a block pattern (`nonzero[i][j]`, `i ≥ j`) under the Cholesky factorisation's
/// fill: eliminating block `k` couples every pair of blocks it couples to.
fn fill_in(nonzero: &mut [Vec<bool>]) {
    let m = nonzero.len();
    for k in 0..m {
        for i in k + 1..m {
            for j in k + 1..=i {
                if nonzero[i][k] && nonzero[j][k] {
                    nonzero[i][j] = true;
                }
            }
        }
    }
}

/// Fewest units per panel: smaller nonlinear nodes (pooling trees) are merged with their
/// neighbours so that every block operation is a worthwhile BLAS-3 call.
const PANEL_MIN: usize = 64;

impl Panels {
    fn new(p: &Problem, zh: &Mat<f64>, gy_hh: &Mat<f64>, curved: bool) -> Panels {
        let mut ranges: Vec<std::ops::Range<usize>> = Vec::new();
        for b in &p.blocks {
            match ranges.last_mut() {
                Some(last) if last.len() < PANEL_MIN => last.end = b.rows.end,
                _ => ranges.push(b.rows.clone()),
            }
        }
        let m = ranges.len();
        let any = |mat: &Mat<f64>, r: &std::ops::Range<usize>, c: &std::ops::Range<usize>| {
            r.clone().any(|i| c.clone().any(|j| mat[(i, j)] != 0.0))
        };
        // reads[i][j]: panel i's pre-activations read panel j's units.
        let reads: Vec<Vec<bool>> = (0..m)
            .map(|i| (0..m).map(|j| any(zh, &ranges[i], &ranges[j])).collect())
            .collect();
        let mut nonzero = vec![vec![false; m]; m];
        for i in 0..m {
            for j in 0..=i {
                nonzero[i][j] = i == j
                    || reads[i][j]
                    || reads[j][i]
                    || any(gy_hh, &ranges[i], &ranges[j])
                    || (curved && (0..m).any(|k| reads[k][i] && reads[k][j]));
            }
        }
        fill_in(&mut nonzero);
        Panels { ranges, nonzero }
    }

    /// Factorises the symmetric `d` (lower triangle read) in place as `LLᵀ`, block by
    /// block, skipping the blocks that stay zero; `None` unless positive definite. The
    /// upper triangle is left as it was.
    fn cholesky(&self, mut d: faer::MatMut<'_, f64>, par: Par) -> Option<()> {
        let widest = self.ranges.iter().map(|r| r.len()).max().unwrap_or(0);
        let mut mem = MemBuffer::new(cholesky_in_place_scratch::<f64>(
            widest,
            par,
            Default::default(),
        ));
        let m = self.ranges.len();
        for k in 0..m {
            let rk = self.ranges[k].clone();
            let (left, mut right) = d.rb_mut().split_at_col_mut(rk.end);
            let column = left.subcols_mut(rk.start, rk.len());
            let (top, mut below) = column.split_at_row_mut(rk.end);
            let mut diagonal = top.subrows_mut(rk.start, rk.len());
            cholesky_in_place(
                diagonal.rb_mut(),
                Default::default(),
                par,
                MemStack::new(&mut mem),
                Default::default(),
            )
            .ok()?;
            let rows = |i: usize| self.ranges[i].start - rk.end..self.ranges[i].end - rk.end;
            let under: Vec<usize> = (k + 1..m).filter(|&i| self.nonzero[i][k]).collect();
            for &i in &under {
                let r = rows(i);
                let block = below.rb_mut().subrows_mut(r.start, r.len());
                solve_lower_triangular_in_place(diagonal.rb(), block.transpose_mut(), par);
            }
            for (a, &j) in under.iter().enumerate() {
                let (rj, cj) = (rows(j), &self.ranges[j]);
                for &i in &under[a..] {
                    let ri = rows(i);
                    let target = right.rb_mut().submatrix_mut(
                        self.ranges[i].start,
                        cj.start - rk.end,
                        ri.len(),
                        cj.len(),
                    );
                    // Diagonal blocks: only their lower triangle is read, so only it is formed.
                    let shape = if i == j {
                        BlockStructure::TriangularLower
                    } else {
                        BlockStructure::Rectangular
                    };
                    triangular::matmul(
                        target,
                        shape,
                        Accum::Add,
                        below.rb().subrows(ri.start, ri.len()),
                        BlockStructure::Rectangular,
                        below.rb().subrows(rj.start, rj.len()).transpose(),
                        BlockStructure::Rectangular,
                        -1.0,
                        par,
                    );
                }
            }
        }
        Some(())
    }
}

impl Blocks {
    fn new(p: &Problem, gy: &Mat<f64>) -> Blocks {
        Self::reduced(p, gy, true)
    }

    /// With `reduce`, the input block is written in an orthonormal basis `Q` of the input
    /// directions that some unit or output reads (`Zₓ`'s and `E_yₓ`'s rows) when there are
    /// fewer of those than inputs: `A`, `B` and `R` live in that span (`R = Q R̃ Qᵀ`), so
    /// `R`'s spectrum is `R̃`'s and zeros. An MLP on MNIST (784 inputs, 300 first-layer
    /// units) solves a 300×300 eigenproblem per evaluation instead of 784×784.
    fn reduced(p: &Problem, gy: &Mat<f64>, reduce: bool) -> Blocks {
        let (n0, h) = (p.n0, p.units());
        let coef = p.coefficients();
        let zh = p.z.submatrix(0, n0, h, h).to_owned();
        let gy_hh = gy.submatrix(n0, n0, h, h).to_owned();
        let curved = coef.iter().any(|c| c.1 != 0.0);
        let zx_full = p.z.submatrix(0, 0, h, n0);
        let ey_x = p.ey.submatrix(0, 0, p.ey.nrows(), n0);
        let reading: Vec<faer::RowRef<'_, f64>> = (0..h)
            .map(|i| zx_full.row(i))
            .chain((0..ey_x.nrows()).map(|i| ey_x.row(i)))
            .filter(|row| row.iter().any(|&v| v != 0.0))
            .collect();
        let (zx, gy_xx, gy_xh, null) = if reduce && reading.len() < n0 {
            let spanning = Mat::from_fn(n0, reading.len(), |i, j| reading[j][i]);
            let q = spanning.qr().compute_thin_Q();
            let gy_xx = q.transpose() * gy.submatrix(0, 0, n0, n0) * &q;
            let gy_xh = q.transpose() * gy.submatrix(0, n0, n0, h);
            (zx_full * &q, gy_xx, gy_xh, n0 - q.ncols())
        } else {
            let gy_xx = gy.submatrix(0, 0, n0, n0).to_owned();
            let gy_xh = gy.submatrix(0, n0, n0, h).to_owned();
            (zx_full.to_owned(), gy_xx, gy_xh, 0)
        };
        Blocks {
            panels: Panels::new(p, &zh, &gy_hh, curved),
            n0: zx.ncols(),
            null,
            zx_t: zx.transpose().to_owned(),
            zx,
            zh_t: zh.transpose().to_owned(),
            zh,
            gy_xx,
            gy_xh,
            gy_hh,
            curved,
            coef,
        }
    }

    /// `S(0, t) = −Σ tᵢGᵢ − E_yᵀE_y` as `(A, B, D)`: with `a = 2αβt`, `b = (α+β)t`,
    /// `A = Zₓᵀ diag(a) Zₓ − Gₓₓ`, `B = Zₓᵀ diag(a) Z_h − Zₓᵀ diag(b) − Gₓₕ`,
    /// `D = Z_hᵀ diag(a) Z_h − Z_hᵀ diag(b) − diag(b) Z_h + 2 diag(t) − Gₕₕ`.
    fn assemble(&self, t: &[f64]) -> (Mat<f64>, Mat<f64>, Mat<f64>) {
        let h = t.len();
        let b: Vec<f64> = t.iter().zip(&self.coef).map(|(t, c)| c.0 * t).collect();
        let mut a_blk = -&self.gy_xx;
        // Column by column, every access contiguous (column-major): `B[:, j] = −b_j·Zₓ[j, :]ᵀ
        // − Gₓₕ[:, j]` and `D[:, j] = −b_j·Z_h[j, :]ᵀ − b ⊙ Z_h[:, j] − Gₕₕ[:, j]`.
        let mut b_blk = -&self.gy_xh;
        let mut d_blk = -&self.gy_hh;
        b_blk
            .par_col_iter_mut()
            .zip(d_blk.par_col_iter_mut())
            .enumerate()
            .for_each(|(j, (mut bc, mut dc))| {
                let (bj, zx_row, zh_row, zh_col) =
                    (b[j], self.zx_t.col(j), self.zh_t.col(j), self.zh.col(j));
                for i in 0..self.n0 {
                    bc[i] -= bj * zx_row[i];
                }
                for i in 0..h {
                    dc[i] -= bj * zh_row[i] + b[i] * zh_col[i];
                }
                dc[j] += 2.0 * t[j];
            });
        if self.curved {
            let a: Vec<f64> = t
                .iter()
                .zip(&self.coef)
                .map(|(t, c)| 2.0 * c.1 * t)
                .collect();
            let azx = Mat::from_fn(h, self.n0, |i, j| a[i] * self.zx[(i, j)]);
            let azh = Mat::from_fn(h, h, |i, j| a[i] * self.zh[(i, j)]);
            a_blk += self.zx.transpose() * &azx;
            b_blk += self.zx.transpose() * &azh;
            d_blk += self.zh.transpose() * &azh;
        }
        (a_blk, b_blk, d_blk)
    }
}

/// The objective at `s` for temperature `mu`; `None` when `D(t)` is not positive definite
/// (outside the domain).
fn evaluate(blocks: &Blocks, s: &[f64], mu: f64) -> Option<Value> {
    let n0 = blocks.n0;
    let t: Vec<f64> = s.iter().map(|v| v.exp()).collect();
    let h = t.len();
    let (a, b, mut l) = blocks.assemble(&t);
    // D = LLᵀ in place, by blocks (`Panels`).
    let par = Par::rayon(0);
    blocks.panels.cholesky(l.as_mut(), par)?;
    // With W = L⁻¹Bᵀ, R = B D⁻¹ Bᵀ − A = WᵀW − A: one triangular solve with n0 columns.
    let mut w = b.transpose().to_owned();
    solve_lower_triangular_in_place(l.as_ref(), w.as_mut(), par);
    let r = w.transpose() * &w - &a;
    let r = Mat::from_fn(n0, n0, |i, j| 0.5 * (r[(i, j)] + r[(j, i)]));
    let eig = r.self_adjoint_eigen(Side::Lower).ok()?;
    let values: Vec<f64> = eig.S().column_vector().iter().copied().collect();
    let reduced_top = *values.last()?;
    if !reduced_top.is_finite() {
        return None;
    }
    // The null directions' eigenvalue 0 counts in the maximum and the soft maximum.
    let top = if blocks.null > 0 {
        reduced_top.max(0.0)
    } else {
        reduced_top
    };
    let weights: Vec<f64> = values.iter().map(|&l| ((l - top) / mu).exp()).collect();
    let total: f64 = weights.iter().sum::<f64>() + blocks.null as f64 * ((0.0 - top) / mu).exp();
    let soft = top + mu * total.ln();
    // The eigenvectors that carry weight: ξⱼ = (uⱼ, −Y uⱼ), and per unit
    // ∂λⱼ/∂tᵢ = ξᵀGᵢξ = −2αβ(zᵢᵀξ)² + 2(α+β)(zᵢᵀξ)ξᵢ − 2ξᵢ² (ξᵢ its unit coordinate).
    let heavy: Vec<usize> = (0..n0)
        .rev()
        .take_while(|&j| weights[j] / total >= 1e-12)
        .collect();
    let k = heavy.len();
    let ux = Mat::from_fn(n0, k, |i, c| eig.U()[(i, heavy[c])]);
    // −D⁻¹Bᵀu = −L⁻ᵀ(W u): a solve with the heavy eigenvectors only.
    let mut xh = -(&w * &ux);
    solve_upper_triangular_in_place(l.transpose(), xh.as_mut(), par);
    let zxi = &blocks.zx * &ux + &blocks.zh * &xh;
    let mut gradient = vec![0.0; h];
    for (c, &j) in heavy.iter().enumerate() {
        let pj = weights[j] / total;
        for i in 0..h {
            let (sum, product) = blocks.coef[i];
            let (z, e) = (zxi[(i, c)], xh[(i, c)]);
            gradient[i] += pj * (-2.0 * product * z * z + 2.0 * sum * z * e - 2.0 * e * e);
        }
    }
    for (g, ti) in gradient.iter_mut().zip(&t) {
        *g *= ti; // d/ds = t·d/dt
    }
    Some(Value {
        soft,
        gradient,
        exact: top,
    })
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Minimises `f` from the strictly feasible multipliers `t0` (module docs) until
/// [`MAX_EVALUATIONS`], the stages' ends or `deadline`.
pub(super) fn solve(p: &Problem, gy: &Mat<f64>, t0: &[f64], deadline: Instant) -> Option<Solution> {
    let blocks = Blocks::new(p, gy);
    let mut s: Vec<f64> = t0.iter().map(|v| v.max(f64::MIN_POSITIVE).ln()).collect();
    let mut evaluations = 0usize;
    let first = evaluate(&blocks, &s, 1.0)?;
    evaluations += 1;
    let mut best = (first.exact, t0.to_vec());
    let mut timed_out = false;
    'stages: for &relative in &TEMPERATURES {
        let mu = relative * best.0.abs().max(f64::MIN_POSITIVE);
        let Some(mut here) = evaluate(&blocks, &s, mu) else {
            break;
        };
        evaluations += 1;
        let mut pairs: Vec<(Vec<f64>, Vec<f64>)> = Vec::new();
        let mut history = vec![here.soft];
        for _ in 0..ITERATIONS_PER_STAGE {
            // Two-loop recursion: d = −H·∇.
            let mut q: Vec<f64> = here.gradient.iter().map(|g| -g).collect();
            let mut alphas = Vec::with_capacity(pairs.len());
            for (ds, dg) in pairs.iter().rev() {
                let a = dot(ds, &q) / dot(dg, ds);
                q.iter_mut().zip(dg).for_each(|(v, g)| *v -= a * g);
                alphas.push(a);
            }
            let gamma = pairs
                .last()
                .map_or(1.0, |(ds, dg)| dot(ds, dg) / dot(dg, dg));
            q.iter_mut().for_each(|v| *v *= gamma);
            for ((ds, dg), a) in pairs.iter().zip(alphas.iter().rev()) {
                let b = dot(dg, &q) / dot(dg, ds);
                q.iter_mut().zip(ds).for_each(|(v, d)| *v += (a - b) * d);
            }
            let mut slope = dot(&q, &here.gradient);
            if slope >= 0.0 || slope.is_nan() {
                // Not a descent direction: restart from the steepest descent.
                pairs.clear();
                q = here.gradient.iter().map(|g| -g).collect();
                slope = -dot(&q, &q);
                if slope == 0.0 {
                    break;
                }
            }
            // Multipliers change by at most a factor e per step on the first one.
            let longest = q.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            let mut step = if pairs.is_empty() && longest > 1.0 {
                1.0 / longest
            } else {
                1.0
            };
            let mut accepted = None;
            for _ in 0..30 {
                if Instant::now() > deadline || evaluations >= MAX_EVALUATIONS {
                    timed_out = Instant::now() > deadline;
                    break 'stages;
                }
                let trial: Vec<f64> = s.iter().zip(&q).map(|(a, d)| a + step * d).collect();
                let value = evaluate(&blocks, &trial, mu);
                evaluations += 1;
                if let Some(v) = value {
                    if v.exact < best.0 {
                        best = (v.exact, trial.iter().map(|x| x.exp()).collect());
                    }
                    if v.soft <= here.soft + 1e-4 * step * slope {
                        accepted = Some((trial, v));
                        break;
                    }
                }
                step *= 0.5;
            }
            let Some((trial, value)) = accepted else {
                break;
            };
            let ds: Vec<f64> = trial.iter().zip(&s).map(|(a, b)| a - b).collect();
            let dg: Vec<f64> = value
                .gradient
                .iter()
                .zip(&here.gradient)
                .map(|(a, b)| a - b)
                .collect();
            if dot(&ds, &dg) > 1e-12 * dot(&dg, &dg).sqrt() * dot(&ds, &ds).sqrt() {
                pairs.push((ds, dg));
                if pairs.len() > MEMORY {
                    pairs.remove(0);
                }
            }
            s = trial;
            here = value;
            history.push(here.soft);
            let k = history.len();
            if k > STALL_WINDOW
                && history[k - 1 - STALL_WINDOW] - history[k - 1] <= STALL * history[k - 1].abs()
            {
                break;
            }
        }
    }
    Some(Solution {
        rho: best.0,
        t: best.1,
        evaluations,
        timed_out,
    })
}

#[cfg(test)]
mod tests {
    use super::super::interior;
    use super::super::sdp::{tests::problem, verify, Block};
    use super::*;
    use std::time::Duration;

    /// The block factorisation equals the dense one on matrices with the structures it
    /// meets: a chain (block tridiagonal), and a skip connection whose block fills in.
    #[test]
    fn the_block_cholesky_equals_the_dense_one() {
        let ranges = vec![0..5, 5..12, 12..16, 16..19];
        // (i, j) couplings, i > j: chain 1–0, 2–1, 3–2, and a skip 3–0 (fill at 3–1, 3–2).
        for couplings in [vec![(1, 0), (2, 1), (3, 2)], vec![(1, 0), (2, 1), (3, 0)]] {
            let n = 19;
            let block = |i: usize| ranges.iter().position(|r| r.contains(&i)).unwrap();
            let coupled = |a: usize, b: usize| a == b || couplings.contains(&(a.max(b), a.min(b)));
            let value = |i: usize, j: usize| (((i * 31 + j * 17) % 13) as f64 - 6.0) / 6.0;
            let mut d = Mat::from_fn(n, n, |i, j| {
                let (lo, hi) = (i.min(j), i.max(j));
                if coupled(block(i), block(j)) {
                    value(hi, lo)
                } else {
                    0.0
                }
            });
            for i in 0..n {
                d[(i, i)] += 12.0; // diagonally dominant: positive definite
            }
            let m = ranges.len();
            let mut nonzero: Vec<Vec<bool>> = (0..m)
                .map(|i| (0..m).map(|j| j <= i && coupled(i, j)).collect())
                .collect();
            fill_in(&mut nonzero);
            let panels = Panels {
                ranges: ranges.clone(),
                nonzero,
            };
            let want = d.llt(Side::Lower).unwrap().L().to_owned();
            let mut got = d.clone();
            panels.cholesky(got.as_mut(), Par::Seq).unwrap();
            for j in 0..n {
                for i in j..n {
                    assert!(
                        (got[(i, j)] - want[(i, j)]).abs() <= 1e-13,
                        "{couplings:?}: L[{i}, {j}] = {} vs {}",
                        got[(i, j)],
                        want[(i, j)]
                    );
                }
            }
            // Not positive definite: refused.
            let mut bad = d.clone();
            bad[(14, 14)] = -1.0;
            assert!(panels.cholesky(bad.as_mut(), Par::Seq).is_none());
        }
    }

    /// Writing the inputs in the basis of the directions the network reads changes nothing:
    /// on a problem with 6 inputs of which 2 units read a 3-dimensional span, the reduced
    /// and the full evaluation agree in `f`, the soft maximum and the gradient.
    #[test]
    fn the_reduced_input_space_gives_the_same_objective() {
        let r = |i: usize, j: usize| (((i * 7 + j * 13) % 11) as f64 - 5.0) / 5.0;
        let (n0, units) = (6, 2 + 3);
        let mut z = Mat::<f64>::zeros(units, n0 + units);
        for i in 0..2 {
            for j in 0..3 {
                z[(i, j)] = r(i, j); // only inputs 0..3 are read
            }
        }
        for i in 2..5 {
            for j in n0..n0 + 2 {
                z[(i, j)] = r(i + 3, j);
            }
        }
        let mut ey = Mat::<f64>::zeros(2, n0 + units);
        for i in 0..2 {
            for j in n0 + 2..n0 + units {
                ey[(i, j)] = r(i + 20, j);
            }
        }
        let p = Problem {
            n0,
            ey,
            z,
            blocks: vec![
                Block {
                    rows: 0..2,
                    sum: 1.0,
                    product: 0.0,
                    error: 0.0,
                },
                Block {
                    rows: 2..5,
                    sum: 1.1,
                    product: 0.1,
                    error: 0.0,
                },
            ],
            ey_error: 0.0,
        };
        let gy = p.ey.transpose() * &p.ey;
        let (reduced, full) = (
            Blocks::reduced(&p, &gy, true),
            Blocks::reduced(&p, &gy, false),
        );
        assert_eq!((reduced.n0, reduced.null, full.n0), (2, 4, 6));
        let (_, t0) = interior::start(&p, &gy).unwrap();
        let s: Vec<f64> = t0.iter().map(|v| v.ln()).collect();
        for mu in [1.0, 0.01] {
            let (a, b) = (
                evaluate(&reduced, &s, mu).unwrap(),
                evaluate(&full, &s, mu).unwrap(),
            );
            let close = |x: f64, y: f64| (x - y).abs() <= 1e-10 * (1.0 + y.abs());
            assert!(close(a.exact, b.exact), "{} vs {}", a.exact, b.exact);
            assert!(close(a.soft, b.soft), "{} vs {}", a.soft, b.soft);
            for (x, y) in a.gradient.iter().zip(&b.gradient) {
                assert!(close(*x, *y), "{:?} vs {:?}", a.gradient, b.gradient);
            }
        }
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    #[test]
    fn the_gradient_matches_finite_differences() {
        let p = problem();
        let gy = p.ey.transpose() * &p.ey;
        let blocks = Blocks::new(&p, &gy);
        let (_, t0) = interior::start(&p, &gy).unwrap();
        let s: Vec<f64> = t0.iter().map(|v| v.ln()).collect();
        for mu in [1.0, 0.1] {
            let v = evaluate(&blocks, &s, mu).unwrap();
            assert!(v.exact <= v.soft && v.soft <= v.exact + mu * (p.n0 as f64).ln() + 1e-12);
            for i in 0..s.len() {
                let h = 1e-6;
                let mut up = s.clone();
                up[i] += h;
                let mut down = s.clone();
                down[i] -= h;
                let fd = (evaluate(&blocks, &up, mu).unwrap().soft
                    - evaluate(&blocks, &down, mu).unwrap().soft)
                    / (2.0 * h);
                assert!(
                    (fd - v.gradient[i]).abs() <= 1e-5 * (1.0 + fd.abs()),
                    "μ = {mu}, unit {i}: finite difference {fd} vs gradient {}",
                    v.gradient[i]
                );
            }
        }
    }

    #[test]
    fn the_verified_bound_is_near_the_interior_point_optimum() {
        let p = problem();
        let gy = p.ey.transpose() * &p.ey;
        let optimum = interior::solve(&p, &gy, far()).unwrap();
        let exact = verify(&p, &gy, optimum.rho, &optimum.t).unwrap();
        let (_, t0) = interior::start(&p, &gy).unwrap();
        let sol = solve(&p, &gy, &t0, far()).unwrap();
        let proven = verify(&p, &gy, sol.rho, &sol.t).unwrap();
        // Never below the optimum (no multipliers prove less), within 1 % of it.
        assert!(
            proven >= exact * (1.0 - 1e-6) && proven <= exact * 1.01,
            "first-order {proven} vs optimum {exact}"
        );
        assert!(sol.evaluations <= MAX_EVALUATIONS && !sol.timed_out);
    }
}
