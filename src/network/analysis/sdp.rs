//! The LipSDP-Neuron semidefinite program (Fazlyab et al., NeurIPS 2019) over a network's
//! unrolled matrices, and the rigorous check that turns any multipliers (a solver's,
//! `interior.rs`, or closed-form ones, `eclipse.rs`) into a certified bound.
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
//! `‖Δy‖² ≤ ρ‖Δx‖²` for every pair: `L ≤ √ρ`. [`verify`] proves `M ⪯ 0` for given
//! multipliers with a Cholesky factorisation of `−M` shifted by every rounding error, so
//! the certificate never rests on the solver's accuracy.

use crate::kernels::{gamma, UNIT_ROUNDOFF};
use faer::{Mat, Side};

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
    pub(super) fn coefficients(&self) -> Vec<(f64, f64)> {
        let mut c = vec![(0.0, 0.0); self.units()];
        for b in &self.blocks {
            c[b.rows.clone()].fill((b.sum, b.product));
        }
        c
    }

    /// `S = −M(ρ, t)` in floating point; `gy = E_yᵀE_y`.
    pub(super) fn negated(&self, gy: &Mat<f64>, rho: f64, t: &[f64]) -> Mat<f64> {
        let mut s = self.pencil(rho, t);
        s -= gy;
        s
    }

    /// The part of `S` linear in `(ρ, t)`: `ρP_x − Σ t_i G_i` (any signs).
    pub(super) fn pencil(&self, rho: f64, t: &[f64]) -> Mat<f64> {
        let (n0, n) = (self.n0, self.size());
        let mut s = Mat::<f64>::zeros(n, n);
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
        // The couplings −(α+β)tᵢ(zᵢeᵢᵀ + eᵢzᵢᵀ) as K = −Zᵀ diag((α+β)t) (`N × units`), added
        // to the unit columns and, transposed, to the unit rows: every pass contiguous.
        let coef = self.coefficients();
        let h = self.units();
        let mut k = self.z.transpose().to_owned();
        for (i, &(sum, _)) in coef.iter().enumerate() {
            let scale = -sum * t[i];
            k.col_mut(i).iter_mut().for_each(|v| *v *= scale);
        }
        let mut columns = s.submatrix_mut(0, n0, n, h);
        columns += &k;
        let mut rows = s.submatrix_mut(n0, 0, h, n);
        rows += k.transpose();
        for (i, &ti) in t.iter().enumerate() {
            s[(n0 + i, n0 + i)] += 2.0 * ti;
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
    let (n, n0) = (p.size(), p.n0);
    const BUMPS: [f64; 6] = [0.0, 1e-9, 1e-7, 1e-5, 1e-3, 1e-2];
    // `S(0, t)` once: each `ρ` tried only adds to the input block's diagonal, one more term
    // of each entry's sum, which the error bound (a bound for any summation order) already
    // counts. The bound is increasing in `ρ`: taken at the largest `ρ` tried.
    let base = p.negated(gy, 0.0, &t);
    let err = p.error((rho * (1.0 + BUMPS[BUMPS.len() - 1])).next_up(), &t);
    for bump in BUMPS {
        let rho = (rho * (1.0 + bump)).next_up();
        let diagonal: Vec<f64> = (0..n)
            .map(|i| {
                if i < n0 {
                    base[(i, i)] + rho
                } else {
                    base[(i, i)]
                }
            })
            .collect();
        let trace: f64 = diagonal.iter().map(|d| d.abs()).sum();
        let max_diag = diagonal.iter().fold(0.0f64, |m, d| m.max(d.abs()));
        let shift = 2.0 * (err + gamma(n + 1) * trace) + 4.0 * UNIT_ROUNDOFF * max_diag;
        let mut shifted = base.clone();
        for (i, d) in diagonal.iter().enumerate() {
            shifted[(i, i)] = d - shift;
        }
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

#[cfg(test)]
pub(super) mod tests {
    use super::super::interior::solve;
    use super::*;
    use std::time::Instant;

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
