//! The LipSDP-Neuron semidefinite program (Fazlyab et al., NeurIPS 2019) over a network's
//! unrolled matrices: a barrier (interior-point) solver that exploits its structure, and the
//! rigorous check that turns a solver's multipliers into a certified bound.
//!
//! Write the network's differences in the coordinates `ξ = (Δx, Δw_1, …, Δw_H)`: the input
//! and every activation *output* (one unit per coordinate). Every value of a network whose
//! only nonlinearities are elementwise activations is linear in `ξ`: the output is `E_y ξ`
//! and unit `i`'s pre-activation is `z_iᵀ ξ` (rows of `Z`). A unit with slopes in `[α, β]`
//! satisfies, for any pair of inputs, `(Δw_i − αΔz_i)(βΔz_i − Δw_i) ≥ 0`. So if, for some
//! `ρ` and multipliers `t ≥ 0`,
//!
//! `M(ρ, t) = E_yᵀE_y − ρ P_x + Σ_i t_i G_i ⪯ 0`, with
//! `G_i = −2αβ z_i z_iᵀ + (α+β)(z_i e_iᵀ + e_i z_iᵀ) − 2 e_i e_iᵀ`
//!
//! (`P_x` the projection on the input block, `e_i` unit `i`'s coordinate), then
//! `‖Δy‖² ≤ ρ‖Δx‖²` for every pair: `L ≤ √ρ`. [`solve`] minimises `ρ` with a log-barrier
//! path-following Newton method (every iterate strictly feasible); [`verify`] proves
//! `M ⪯ 0` for the multipliers it returns with a Cholesky factorisation of `−M` shifted by
//! every rounding error, so the certificate never rests on the solver's accuracy.

use crate::kernels::{gamma, UNIT_ROUNDOFF};
use faer::linalg::solvers::DenseSolveCore;
use faer::{Mat, Side};
use std::time::Instant;

/// One nonlinear node: its units are rows `rows` of `Z`, its slopes `[α, β]`.
#[derive(Debug, Clone)]
pub(super) struct Block {
    /// Its units' rows in `Z` (and coordinates `n0 + i` in `ξ`).
    pub rows: std::ops::Range<usize>,
    /// `α + β`.
    pub sum: f64,
    /// `α·β`.
    pub product: f64,
    /// A bound on the spectral norm of the rounding error of its rows of `Z`.
    pub error: f64,
}

/// The program's data: `E_y`, `Z`, the blocks, and the error bounds of the unrolled matrices.
pub(super) struct Problem {
    /// Input coordinates.
    pub n0: usize,
    /// `E_y` (outputs × `N`).
    pub ey: Mat<f64>,
    /// `Z` (units × `N`).
    pub z: Mat<f64>,
    /// The nonlinear nodes.
    pub blocks: Vec<Block>,
    /// A bound on the spectral norm of `E_y`'s rounding error.
    pub ey_error: f64,
}

impl Problem {
    /// `N`, the LMI's dimension.
    pub fn size(&self) -> usize {
        self.n0 + self.z.nrows()
    }

    pub(super) fn units(&self) -> usize {
        self.z.nrows()
    }

    /// `(α+β, αβ)` of every unit.
    fn coefficients(&self) -> Vec<(f64, f64)> {
        let mut c = vec![(0.0, 0.0); self.units()];
        for b in &self.blocks {
            c[b.rows.clone()].fill((b.sum, b.product));
        }
        c
    }

    /// `S = −M(ρ, t)` in floating point; `gy = E_yᵀE_y`.
    pub(super) fn negated(&self, gy: &Mat<f64>, rho: f64, t: &[f64]) -> Mat<f64> {
        let (n0, n) = (self.n0, self.size());
        let mut s = Mat::from_fn(n, n, |i, j| -gy[(i, j)]);
        for i in 0..n0 {
            s[(i, i)] += rho;
        }
        for b in &self.blocks {
            if b.product != 0.0 {
                let zb = self.z.subrows(b.rows.start, b.rows.len());
                let tz = Mat::from_fn(zb.nrows(), n, |i, j| t[b.rows.start + i] * zb[(i, j)]);
                let ztz = zb.transpose() * &tz;
                let k = 2.0 * b.product;
                for j in 0..n {
                    for i in 0..n {
                        s[(i, j)] += k * ztz[(i, j)];
                    }
                }
            }
        }
        for (i, &(sum, _)) in self.coefficients().iter().enumerate() {
            let col = n0 + i;
            for j in 0..n {
                let v = sum * t[i] * self.z[(i, j)];
                s[(j, col)] -= v;
                s[(col, j)] -= v;
            }
            s[(col, col)] += 2.0 * t[i];
        }
        s
    }

    /// A bound on `‖S_exact − S_computed‖₂` for [`Problem::negated`] at `(ρ, t)`: the
    /// rounding of its assembly (every entry a sum of at most `max(outputs, units) + 8`
    /// rounded terms, bounded through the Frobenius norms of the terms' absolute values) and
    /// the propagated rounding errors of the unrolled `E_y` and `Z`.
    fn error(&self, rho: f64, t: &[f64]) -> f64 {
        let fro2 = |m: faer::MatRef<'_, f64>| -> f64 {
            (0..m.ncols())
                .map(|j| (0..m.nrows()).map(|i| m[(i, j)] * m[(i, j)]).sum::<f64>())
                .sum()
        };
        let ey2 = fro2(self.ey.as_ref());
        let mut terms = ey2 + rho * (self.n0 as f64).sqrt();
        let mut propagated = 2.0 * ey2.sqrt() * self.ey_error + self.ey_error * self.ey_error;
        for b in &self.blocks {
            let zb = self.z.subrows(b.rows.start, b.rows.len());
            let tb = &t[b.rows.clone()];
            let tmax = tb.iter().fold(0.0f64, |m, &v| m.max(v));
            let z2 = fro2(zb);
            let tz2: f64 = (0..zb.nrows())
                .map(|i| tb[i] * tb[i] * (0..zb.ncols()).map(|j| zb[(i, j)].powi(2)).sum::<f64>())
                .sum();
            let t2: f64 = tb.iter().map(|v| v * v).sum();
            terms += 2.0 * b.product.abs() * tmax * z2
                + 2.0 * b.sum.abs() * tz2.sqrt()
                + 2.0 * t2.sqrt();
            propagated += tmax
                * (2.0 * b.sum.abs() * b.error
                    + 2.0 * b.product.abs() * (2.0 * z2.sqrt() * b.error + b.error * b.error));
        }
        let k = self.ey.nrows().max(self.units()) + 8;
        (gamma(k) * terms + propagated) * (1.0 + 1e-6)
    }
}

/// Whether `S ≻ 0`, by a Cholesky factorisation, and if so `log det S`.
fn log_det(s: &Mat<f64>) -> Option<f64> {
    let llt = s.llt(Side::Lower).ok()?;
    let l = llt.L();
    Some((0..s.nrows()).map(|i| 2.0 * l[(i, i)].ln()).sum())
}

/// The certified bound `√ρ` that the multipliers `(ρ, t)` prove, or `None` when the check
/// fails for `ρ` and for `ρ` raised by up to 1 %.
///
/// The check: a Cholesky factorisation of `fl(S − σI)` with `S = −M(ρ, t)` computed in
/// floating point (negative multipliers are first set to 0). If it runs to completion with
/// factor `L`, then `S − σI + Δ = LLᵀ ⪰ 0` with `‖Δ‖₂ ≤ γ_{N+1}‖L‖_F² + 2u·max|s_ii − σ|`
/// (Higham, Thm 10.3, and the shift's rounding), so `S_exact ⪰ (σ − that − ε)·I` where `ε`
/// bounds `‖S_exact − S‖₂` ([`Problem::error`]). The bound holds when that is ≥ 0.
pub(super) fn verify(p: &Problem, gy: &Mat<f64>, rho: f64, t: &[f64]) -> Option<f64> {
    let t: Vec<f64> = t.iter().map(|&v| v.max(0.0)).collect();
    let n = p.size();
    for bump in [0.0, 1e-9, 1e-7, 1e-5, 1e-3, 1e-2] {
        let rho = (rho * (1.0 + bump)).next_up();
        let s = p.negated(gy, rho, &t);
        let err = p.error(rho, &t);
        let trace: f64 = (0..n).map(|i| s[(i, i)].abs()).sum();
        let max_diag = (0..n).fold(0.0f64, |m, i| m.max(s[(i, i)].abs()));
        let shift = 2.0 * (err + gamma(n + 1) * trace) + 4.0 * UNIT_ROUNDOFF * max_diag;
        let shifted = Mat::from_fn(
            n,
            n,
            |i, j| if i == j { s[(i, j)] - shift } else { s[(i, j)] },
        );
        let Ok(llt) = shifted.llt(Side::Lower) else {
            continue;
        };
        let l = llt.L();
        let l2: f64 = (0..n)
            .map(|j| (j..n).map(|i| l[(i, j)] * l[(i, j)]).sum::<f64>())
            .sum();
        let slack = shift
            - gamma(n + 1) * l2 * (1.0 + 1e-10)
            - 2.0 * UNIT_ROUNDOFF * (max_diag + shift)
            - err;
        if slack >= 0.0 {
            // √ρ rounded up: the square root is correctly rounded, one step up covers it.
            return Some(rho.sqrt().next_up());
        }
    }
    None
}

/// What the solver returns: the last iterate (strictly feasible) and its effort.
pub(super) struct Solution {
    /// `ρ`.
    pub rho: f64,
    /// The multipliers.
    pub t: Vec<f64>,
    /// Newton steps taken.
    pub steps: usize,
    /// Whether the gap target was reached (else the deadline or the step cap ended it).
    pub converged: bool,
    /// The iterates at the end of each earlier centring, most recent last: further from the
    /// boundary than the last one, so they are the fallback when its check fails.
    pub earlier: Vec<(f64, Vec<f64>)>,
}

/// Relative duality gap the solver stops at: `ν/τ ≤ GAP·ρ`.
const GAP: f64 = 1e-5;

/// Factor `τ` grows by after each centring: centring is the cost (the barrier's Newton
/// steps cover a bounded decrease each), and on the test networks 2 needs the fewest steps
/// in total (residual fixture: 270 steps against 400+ for 10).
const MU: f64 = 2.0;

/// Weight of `Σ t_i` in the objective, relative to `ρ₀/Σ t₀` at the start. A unit whose
/// pre-activation barely depends on anything (`‖z_i‖ ≈ 0`: trained networks have such
/// units, their weights decayed) lets its multiplier grow almost without bound, and the
/// barrier drives it towards `10¹³`, where the rounding of `M` swamps the check. The
/// penalty keeps every multiplier finite and moves the optimum by about this fraction.
const REGULARISATION: f64 = 1e-7;

/// Newton decrement `λ²` below which an iterate counts as centred.
const CENTRED: f64 = 1e-3;

/// Most Newton steps.
const MAX_STEPS: usize = 600;

/// The smallest `ρ` with `S(ρ, t) ≻ 0` (`None` when no `ρ` works): writing `S(0, t)` in
/// input/unit blocks `[[A, B], [Bᵀ, D]]`, `S ≻ 0` iff `D ≻ 0` and
/// `ρ > λ_max(B D⁻¹ Bᵀ − A)` (Schur complement). An estimate in floating point: the start
/// it gives is checked by a factorisation.
pub(super) fn smallest_rho(p: &Problem, gy: &Mat<f64>, t: &[f64]) -> Option<f64> {
    let (n0, h) = (p.n0, p.units());
    let s = p.negated(gy, 0.0, t);
    let d = s.submatrix(n0, n0, h, h).to_owned();
    let llt = d.llt(Side::Lower).ok()?;
    let mut dib = s.submatrix(n0, 0, h, n0).to_owned();
    faer::linalg::solvers::Solve::solve_in_place(&llt, dib.as_mut());
    let schur = s.submatrix(0, n0, n0, h) * &dib - s.submatrix(0, 0, n0, n0);
    let eig = schur.self_adjoint_eigenvalues(Side::Lower).ok()?;
    eig.last().copied()
}

/// A strictly feasible start. Each node gets one multiplier for all its units, growing
/// geometrically towards the input by a ratio `c` (a node's multiplier must dominate the
/// couplings from later nodes: some `c` always works); for the smallest ratio that works,
/// the overall scale is scanned over powers of 4 and the one with the smallest `ρ` kept,
/// with `ρ` a little above the smallest feasible one.
fn start(p: &Problem, gy: &Mat<f64>) -> Option<(f64, Vec<f64>)> {
    let k = p.blocks.len() as i32;
    let mut c = 1.0f64;
    while c < 1e12 {
        let mut best: Option<(f64, Vec<f64>)> = None;
        for e in -12..=12 {
            let scale = 4.0f64.powi(e);
            let mut t = vec![0.0; p.units()];
            for (j, b) in p.blocks.iter().enumerate() {
                t[b.rows.clone()].fill(scale * c.powi(k - 1 - j as i32));
            }
            let Some(rho) = smallest_rho(p, gy, &t) else {
                continue;
            };
            let rho = rho.max(0.0) * 1.05 + 1e-9 * (1.0 + rho.abs());
            if best.as_ref().is_none_or(|(r, _)| rho < *r)
                && log_det(&p.negated(gy, rho, &t)).is_some()
            {
                best = Some((rho, t));
            }
        }
        if best.is_some() {
            return best;
        }
        c *= 4.0;
    }
    None
}

/// Minimises `ρ` subject to `M(ρ, t) ≺ 0`, `t > 0` by the barrier method: Newton steps on
/// `τρ − log det(−M) − Σ log t_i` with backtracking, `τ` raised by [`MU`] after each centring,
/// until the gap bound `ν/τ` (`ν = N + units`) is below [`GAP`]·ρ or `deadline` passes.
/// `τ` starts at `ν/ρ₀`, where the start's own gap bound would be.
/// `None` if no strictly feasible start was found.
pub(super) fn solve(p: &Problem, gy: &Mat<f64>, deadline: Instant) -> Option<Solution> {
    let (mut rho, mut t) = start(p, gy)?;
    let h = p.units();
    let nu = (p.size() + h) as f64;
    let mut tau = nu / rho;
    // The multipliers' weight in the objective (module docs of `REGULARISATION`).
    let eps = REGULARISATION * rho / t.iter().sum::<f64>();
    let mut steps = 0;
    let mut earlier = Vec::new();
    let barrier = |rho: f64, t: &[f64], tau: f64| -> Option<f64> {
        if t.iter().any(|&v| v <= 0.0) {
            return None;
        }
        let ld = log_det(&p.negated(gy, rho, t))?;
        let penalty: f64 = eps * t.iter().sum::<f64>();
        Some(tau * (rho + penalty) - ld - t.iter().map(|v| v.ln()).sum::<f64>())
    };
    let converged = 'path: loop {
        // Centre for this τ.
        loop {
            if steps >= MAX_STEPS || Instant::now() > deadline {
                break 'path false;
            }
            steps += 1;
            let Some((g, hess)) = newton_system(p, gy, rho, &t, tau, tau * eps) else {
                break 'path false;
            };
            let Ok(llt) = hess.llt(Side::Lower) else {
                break 'path false;
            };
            let mut d = Mat::from_fn(h + 1, 1, |i, _| -g[i]);
            faer::linalg::solvers::Solve::solve_in_place(&llt, d.as_mut());
            let decrement: f64 = -(0..=h).map(|i| g[i] * d[(i, 0)]).sum::<f64>();
            if decrement <= CENTRED {
                break;
            }
            let Some(f0) = barrier(rho, &t, tau) else {
                break 'path false;
            };
            let try_step = |s: f64| -> Option<(f64, f64, Vec<f64>)> {
                let r = rho + s * d[(0, 0)];
                let tt: Vec<f64> = (0..h).map(|i| t[i] + s * d[(i + 1, 0)]).collect();
                barrier(r, &tt, tau).map(|f| (f, r, tt))
            };
            // Backtrack from the Newton step until the Armijo condition holds.
            let mut s = 1.0;
            let mut accepted = None;
            while s > 1e-10 {
                match try_step(s) {
                    Some(c) if c.0 <= f0 - 0.25 * s * decrement => {
                        accepted = Some(c);
                        break;
                    }
                    _ => s *= 0.5,
                }
            }
            let Some((_, r, tt)) = accepted else {
                break;
            };
            rho = r;
            t = tt;
        }
        if nu / tau <= GAP * rho {
            break 'path true;
        }
        earlier.push((rho, t.clone()));
        tau *= MU;
    };
    Some(Solution {
        rho,
        t,
        steps,
        converged,
        earlier,
    })
}

/// The gradient and Hessian of the barrier function at `(ρ, t)` (module docs for the
/// terms): with `X = S⁻¹`, `tr(X G_i)` and `tr(X G_i X G_k)` come from the `2×2` blocks of
/// `[z_i e_i]ᵀ X [z_k e_k]`, i.e. from `ZX`, `ZXZᵀ` and `X`'s unit block.
fn newton_system(
    p: &Problem,
    gy: &Mat<f64>,
    rho: f64,
    t: &[f64],
    tau: f64,
    tau_t: f64,
) -> Option<(Vec<f64>, Mat<f64>)> {
    let (n0, h) = (p.n0, p.units());
    let s = p.negated(gy, rho, t);
    let x = s.llt(Side::Lower).ok()?.inverse();
    let zx = &p.z * &x;
    let zxz = &zx * p.z.transpose();
    let coef = p.coefficients();
    let c = |i: usize| {
        let (sum, product) = coef[i];
        [[-2.0 * product, sum], [sum, -2.0]]
    };
    let mut g = vec![0.0; h + 1];
    let mut hess = Mat::<f64>::zeros(h + 1, h + 1);
    g[0] = tau - (0..n0).map(|i| x[(i, i)]).sum::<f64>();
    hess[(0, 0)] = (0..n0)
        .map(|j| (0..n0).map(|i| x[(i, j)] * x[(i, j)]).sum::<f64>())
        .sum();
    for i in 0..h {
        let (sum, product) = coef[i];
        g[i + 1] = -2.0 * product * zxz[(i, i)] + 2.0 * sum * zx[(i, n0 + i)]
            - 2.0 * x[(n0 + i, n0 + i)]
            - 1.0 / t[i]
            + tau_t;
        // ∂²/∂ρ∂t_i = −tr(C_i Y_i Y_iᵀ), Y_i = [z_i e_i]ᵀ X[:, input].
        let (mut aa, mut ab, mut bb) = (0.0, 0.0, 0.0);
        for j in 0..n0 {
            let (a, b) = (zx[(i, j)], x[(n0 + i, j)]);
            aa += a * a;
            ab += a * b;
            bb += b * b;
        }
        let ci = c(i);
        let cross = -(ci[0][0] * aa + 2.0 * ci[0][1] * ab + ci[1][1] * bb);
        hess[(0, i + 1)] = cross;
        hess[(i + 1, 0)] = cross;
    }
    for i in 0..h {
        let ci = c(i);
        for k in 0..=i {
            let ck = c(k);
            // P = [z_i e_i]ᵀ X [z_k e_k].
            let pm = [
                [zxz[(i, k)], zx[(i, n0 + k)]],
                [zx[(k, n0 + i)], x[(n0 + i, n0 + k)]],
            ];
            // tr(C_i P C_k Pᵀ).
            let mut v = 0.0;
            for a in 0..2 {
                for b in 0..2 {
                    // (C_i P)_{ab} · (C_k Pᵀ)_{ba}
                    let cip = ci[a][0] * pm[0][b] + ci[a][1] * pm[1][b];
                    let ckpt = ck[b][0] * pm[a][0] + ck[b][1] * pm[a][1];
                    v += cip * ckpt;
                }
            }
            if i == k {
                v += 1.0 / (t[i] * t[i]);
            }
            hess[(i + 1, k + 1)] = v;
            hess[(k + 1, i + 1)] = v;
        }
    }
    Some((g, hess))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A two-layer problem: 3 inputs, 4 ReLU units then 3 leaky units (α = 0.1), 2 outputs.
    pub(in super::super) fn problem() -> Problem {
        let r = |i: usize, j: usize| (((i * 7 + j * 13) % 11) as f64 - 5.0) / 5.0;
        let n0 = 3;
        let n = n0 + 7;
        let mut z = Mat::<f64>::zeros(7, n);
        for i in 0..4 {
            for j in 0..n0 {
                z[(i, j)] = r(i, j);
            }
        }
        for i in 4..7 {
            for j in n0..n0 + 4 {
                z[(i, j)] = r(i + 3, j);
            }
        }
        let mut ey = Mat::<f64>::zeros(2, n);
        for i in 0..2 {
            for j in n0 + 4..n {
                ey[(i, j)] = r(i + 20, j);
            }
        }
        Problem {
            n0,
            ey,
            z,
            blocks: vec![
                Block {
                    rows: 0..4,
                    sum: 1.0,
                    product: 0.0,
                    error: 0.0,
                },
                Block {
                    rows: 4..7,
                    sum: 1.1,
                    product: 0.1,
                    error: 0.0,
                },
            ],
            ey_error: 0.0,
        }
    }

    fn barrier(p: &Problem, gy: &Mat<f64>, y: &[f64], tau: f64) -> f64 {
        let ld = log_det(&p.negated(gy, y[0], &y[1..])).unwrap();
        let penalty = 0.3 * y[1..].iter().sum::<f64>();
        tau * y[0] + penalty - ld - y[1..].iter().map(|v| v.ln()).sum::<f64>()
    }

    #[test]
    fn newton_system_matches_finite_differences() {
        let p = problem();
        let gy = p.ey.transpose() * &p.ey;
        let (rho, t) = start(&p, &gy).unwrap();
        // An interior point with unequal multipliers.
        let mut y: Vec<f64> = std::iter::once(4.0 * rho)
            .chain(t.iter().copied())
            .collect();
        for (i, v) in y[1..].iter_mut().enumerate() {
            *v *= 1.0 + 0.05 * i as f64;
        }
        assert!(log_det(&p.negated(&gy, y[0], &y[1..])).is_some());
        let tau = 0.7;
        let (g, h) = newton_system(&p, &gy, y[0], &y[1..], tau, 0.3).unwrap();
        for k in 0..y.len() {
            let e = 1e-5 * y[k].abs().max(1e-3);
            let (mut up, mut down) = (y.clone(), y.clone());
            up[k] += e;
            down[k] -= e;
            let fd = (barrier(&p, &gy, &up, tau) - barrier(&p, &gy, &down, tau)) / (2.0 * e);
            assert!(
                (fd - g[k]).abs() <= 1e-5 * (1.0 + g[k].abs()),
                "g[{k}]: {} vs {fd}",
                g[k]
            );
            let (gu, _) = newton_system(&p, &gy, up[0], &up[1..], tau, 0.3).unwrap();
            let (gd, _) = newton_system(&p, &gy, down[0], &down[1..], tau, 0.3).unwrap();
            for i in 0..y.len() {
                let fd = (gu[i] - gd[i]) / (2.0 * e);
                let scale = 1.0 + h[(i, k)].abs();
                assert!(
                    (fd - h[(i, k)]).abs() <= 1e-4 * scale,
                    "H[{i},{k}]: {} vs {fd}",
                    h[(i, k)]
                );
            }
        }
    }

    #[test]
    fn verification_accepts_the_solution_and_rejects_a_smaller_rho() {
        let p = problem();
        let gy = p.ey.transpose() * &p.ey;
        let far = Instant::now() + std::time::Duration::from_secs(60);
        let sol = solve(&p, &gy, far).unwrap();
        assert!(sol.converged);
        let proven = verify(&p, &gy, sol.rho, &sol.t).unwrap();
        assert!(proven >= sol.rho.sqrt() && proven <= sol.rho.sqrt() * (1.0 + 1e-6));
        // The optimum: no multipliers prove 0.98ρ*, these least of all.
        assert!(verify(&p, &gy, 0.98 * sol.rho, &sol.t).is_none());
        // Negative multipliers are not multipliers: they are set to 0 before the check.
        let negative: Vec<f64> = sol.t.iter().map(|v| -v).collect();
        assert!(verify(&p, &gy, sol.rho, &negative).is_none());
    }

    #[test]
    fn the_optimum_of_one_relu_unit_is_its_constant() {
        // f(x) = v·relu(wᵀx): L = |v|·‖w‖, and LipSDP-Neuron is exact.
        let (w, v) = ([0.6, -0.8, 1.2], -1.5);
        let n = 4;
        let mut z = Mat::<f64>::zeros(1, n);
        for j in 0..3 {
            z[(0, j)] = w[j];
        }
        let mut ey = Mat::<f64>::zeros(1, n);
        ey[(0, 3)] = v;
        let p = Problem {
            n0: 3,
            ey,
            z,
            blocks: vec![Block {
                rows: 0..1,
                sum: 1.0,
                product: 0.0,
                error: 0.0,
            }],
            ey_error: 0.0,
        };
        let gy = p.ey.transpose() * &p.ey;
        let far = Instant::now() + std::time::Duration::from_secs(60);
        let sol = solve(&p, &gy, far).unwrap();
        let proven = verify(&p, &gy, sol.rho, &sol.t).unwrap();
        let exact = 1.5 * (0.36f64 + 0.64 + 1.44).sqrt();
        assert!(
            proven >= exact && proven <= exact * (1.0 + 1e-4),
            "{proven} vs {exact}"
        );
    }
}
