//! A primal–dual interior-point method for the LipSDP-Neuron program (`sdp.rs`), written
//! for its structure.
//!
//! In the standard dual form the program is: maximise `bᵀy` over `y = (ρ, t)` subject to
//! `S(y) = −E_yᵀE_y + ρP_x − Σ t_i G_i ⪰ 0` and `t ≥ 0`, with `b = −(1, ε, …, ε)` (the
//! small `ε` keeps multipliers finite, see [`REGULARISATION`]). Its primal: minimise
//! `−⟨E_yᵀE_y, X⟩` over `X ⪰ 0`, `x ≥ 0` subject to `tr(X_input) = 1` and
//! `x_i = ⟨G_i, X⟩ + ε`. Each iteration is a Mehrotra predictor–corrector step in the HKM
//! direction: the Schur complement matrix `M_kl = tr(A_k X A_l S⁻¹)` (plus `x_i/t_i` on the
//! multipliers' diagonal) is formed from the `2×2` blocks of `[z_i e_i]ᵀ X [z_k e_k]` and
//! `[z_i e_i]ᵀ S⁻¹ [z_k e_k]`, because every `G_i` is `[z_i e_i] C_i [z_i e_i]ᵀ`.
//!
//! The dual iterate is kept exactly feasible: `S` is recomputed from `y` and factored at
//! every step, so every iterate is a candidate certificate for `sdp::verify`. The primal
//! only steers: it starts centred (`X = μ₀S⁻¹`, `x = μ₀/t`) and need not be feasible
//! until the end. The method stops when the duality gap `⟨X, S⟩ + xᵀt` is below
//! [`GAP`]`·ρ` with the primal residual below [`FEASIBLE`]: after 10–18 iterations on
//! the test networks, where the log-barrier path method it replaced took 250–420 Newton
//! steps of about a third of the cost (`digits_mlp3`: 3.5 s → 0.9 s).

use super::sdp::Problem;
use faer::linalg::matmul::matmul;
use faer::linalg::solvers::{DenseSolveCore, Solve};
use faer::linalg::triangular_solve::{
    solve_lower_triangular_in_place, solve_upper_triangular_in_place,
};
use faer::{Accum, Mat, MatRef, Side};
use std::ops::Range;
use std::time::Instant;

/// What the solver returns: the last iterate (strictly feasible) and its effort.
pub(super) struct Solution {
    /// `ρ`.
    pub rho: f64,
    /// The multipliers.
    pub t: Vec<f64>,
    /// Iterations taken.
    pub steps: usize,
    /// Whether the gap target was reached (else the deadline or the iteration cap ended it).
    pub converged: bool,
    /// A few earlier iterates, most recent last: further from the boundary than the last
    /// one, so they are the fallback when its check fails.
    pub earlier: Vec<(f64, Vec<f64>)>,
}

/// Relative duality gap the solver stops at: `⟨X, S⟩ + xᵀt ≤ GAP·ρ`.
const GAP: f64 = 1e-6;

/// Relative primal residual the solver stops at: `‖b − 𝒜(X) − 𝒶(x)‖ ≤ FEASIBLE·(1 + ‖b‖)`.
const FEASIBLE: f64 = 1e-7;

/// Most iterations.
const MAX_ITERATIONS: usize = 120;

/// Fraction of the step to the boundary of the cones that is taken: 0.95 and 0.99 made
/// the iteration counts erratic on the test networks (up to 41 and the cap), 0.9 kept them
/// at 10–18.
const STEP_FRACTION: f64 = 0.9;

/// Factor a step is shortened by when the factorisation at its end fails (the Lanczos
/// estimate of the boundary was a little beyond it).
const BACKTRACK: f64 = 0.9;

/// Lanczos steps that estimate the step to the boundary of the semidefinite cone: 12 is
/// as good as 30 for the iteration counts, at a third of the cost.
const LANCZOS_STEPS: usize = 12;

/// Weight of `Σ t_i` in the objective, relative to `ρ₀/Σ t₀` at the start. A unit whose
/// pre-activation barely depends on anything (`‖z_i‖ ≈ 0`: trained networks have such
/// units, their weights decayed) lets its multiplier grow almost without bound, towards
/// values where the rounding of `M` swamps the check. The penalty keeps every multiplier
/// finite and moves the optimum by about this fraction.
const REGULARISATION: f64 = 1e-7;

/// Iterates kept as fallbacks for the check.
const KEPT: usize = 5;

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
    llt.solve_in_place(dib.as_mut());
    let schur = s.submatrix(0, n0, n0, h) * &dib - s.submatrix(0, 0, n0, n0);
    let eig = schur.self_adjoint_eigenvalues(Side::Lower).ok()?;
    eig.last().copied()
}

/// A strictly feasible start. Each node gets one multiplier for all its units, growing
/// geometrically towards the input by a ratio `c` (a node's multiplier must dominate the
/// couplings from later nodes: some `c` always works); for the smallest ratio that works,
/// the overall scale is scanned over powers of 4 and the one with the smallest `ρ` kept,
/// with `ρ` a little above the smallest feasible one.
pub(super) fn start(p: &Problem, gy: &Mat<f64>) -> Option<(f64, Vec<f64>)> {
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
                && p.negated(gy, rho, &t).llt(Side::Lower).is_ok()
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

/// Minimises `ρ + εΣt` subject to `S(ρ, t) ≻ 0`, `t > 0` (module docs), from [`start`]'s
/// point, until the gap and residual targets are met, [`MAX_ITERATIONS`] or `deadline`.
/// `None` if no strictly feasible start was found.
pub(super) fn solve(p: &Problem, gy: &Mat<f64>, deadline: Instant) -> Option<Solution> {
    let (rho0, t0) = start(p, gy)?;
    let (n0, n, h) = (p.n0, p.size(), p.units());
    let hulls = hulls(p);
    let coef = p.coefficients();
    let eps = REGULARISATION * rho0 / t0.iter().sum::<f64>();
    let b: Vec<f64> = std::iter::once(-1.0)
        .chain(std::iter::repeat_n(-eps, h))
        .collect();
    let b_norm = b.iter().map(|v| v * v).sum::<f64>().sqrt();
    let mut y: Vec<f64> = std::iter::once(rho0).chain(t0).collect();
    let mut s = p.negated(gy, y[0], &y[1..]);
    let mut s_llt = s.llt(Side::Lower).ok()?;
    let mut sinv = s_llt.inverse();
    // A centred primal start: X = μ₀S⁻¹, x = μ₀/t, with μ₀ making tr(X_input) = 1.
    let mu0 = 1.0 / (0..n0).map(|i| sinv[(i, i)]).sum::<f64>();
    let mut x = Mat::from_fn(n, n, |i, j| mu0 * sinv[(i, j)]);
    let mut x_llt = x.llt(Side::Lower).ok()?;
    let mut xl: Vec<f64> = y[1..].iter().map(|t| mu0 / t).collect();
    let mut earlier: Vec<(f64, Vec<f64>)> = Vec::new();
    let mut steps = 0;
    let converged = loop {
        let t = &y[1..];
        let (zx, zxz) = z_products(p, &hulls, &x);
        let ax = apply_a(p, &coef, &x, &zx, &zxz);
        // r_p = b − 𝒜(X) − 𝒶(x), where 𝒶(x) is −x on the multipliers.
        let rp: Vec<f64> = (0..=h)
            .map(|k| b[k] - ax[k] + if k > 0 { xl[k - 1] } else { 0.0 })
            .collect();
        let gap = dot(&x, &s) + (0..h).map(|i| xl[i] * t[i]).sum::<f64>();
        let mu = gap / (n + h) as f64;
        let residual = rp.iter().map(|v| v * v).sum::<f64>().sqrt() / (1.0 + b_norm);
        if gap <= GAP * y[0] && residual <= FEASIBLE {
            break true;
        }
        if steps >= MAX_ITERATIONS || Instant::now() > deadline {
            break false;
        }
        steps += 1;
        let (zs, zsz) = z_products(p, &hulls, &sinv);
        let mut m = schur(p, &coef, (&x, &zx, &zxz), (&sinv, &zs, &zsz));
        for i in 0..h {
            m[(i + 1, i + 1)] += xl[i] / t[i];
        }
        let Ok(m_llt) = m.llt(Side::Lower) else {
            break false;
        };
        let solve_m = |rhs: &[f64]| -> Vec<f64> {
            let mut v = Mat::from_fn(h + 1, 1, |i, _| rhs[i]);
            m_llt.solve_in_place(v.as_mut());
            (0..=h).map(|i| v[(i, 0)]).collect()
        };
        // Predictor (σ = 0): the right-hand side is b.
        let dy_a = solve_m(&b);
        let ds_a = p.pencil(dy_a[0], &dy_a[1..]);
        let xdss = &x * &ds_a * &sinv;
        let dx_a = symmetrise(&(-&x - &xdss));
        let dxl_a: Vec<f64> = (0..h)
            .map(|i| -xl[i] - xl[i] * dy_a[i + 1] / t[i])
            .collect();
        let ap = max_step(x_llt.L(), &dx_a, &xl, &dxl_a).min(1.0);
        let ad = max_step(s_llt.L(), &ds_a, t, &dy_a[1..]).min(1.0);
        let mu_aff = (dot(&x, &s)
            + ad * dot(&x, &ds_a)
            + ap * dot(&dx_a, &s)
            + ap * ad * dot(&dx_a, &ds_a)
            + (0..h)
                .map(|i| (xl[i] + ap * dxl_a[i]) * (t[i] + ad * dy_a[i + 1]))
                .sum::<f64>())
            / (n + h) as f64;
        let sigma = (mu_aff / mu).clamp(0.0, 1.0).powi(3);
        // Corrector: V = σμS⁻¹ − X − ΔX_a ΔS_a S⁻¹, v = σμ/t − x − Δx_a Δt_a / t.
        let second = &dx_a * &ds_a * &sinv;
        let v = symmetrise(&Mat::from_fn(n, n, |i, j| {
            sigma * mu * sinv[(i, j)] - x[(i, j)] - second[(i, j)]
        }));
        let vl: Vec<f64> = (0..h)
            .map(|i| sigma * mu / t[i] - xl[i] - dxl_a[i] * dy_a[i + 1] / t[i])
            .collect();
        let (zv, zvz) = z_products(p, &hulls, &v);
        let av = apply_a(p, &coef, &v, &zv, &zvz);
        let rhs: Vec<f64> = (0..=h)
            .map(|k| rp[k] - av[k] + if k > 0 { vl[k - 1] } else { 0.0 })
            .collect();
        let dy = solve_m(&rhs);
        let ds = p.pencil(dy[0], &dy[1..]);
        let xdss = &x * &ds * &sinv;
        let dx = symmetrise(&(&v - &xdss));
        let dxl: Vec<f64> = (0..h).map(|i| vl[i] - xl[i] * dy[i + 1] / t[i]).collect();
        let mut ap = (STEP_FRACTION * max_step(x_llt.L(), &dx, &xl, &dxl)).min(1.0);
        let mut ad = (STEP_FRACTION * max_step(s_llt.L(), &ds, t, &dy[1..])).min(1.0);
        // The steps are estimates (Lanczos): shorten them until the factorisations succeed.
        let (x_new, x_new_llt) = loop {
            let cand = Mat::from_fn(n, n, |i, j| x[(i, j)] + ap * dx[(i, j)]);
            let positive = (0..h).all(|i| xl[i] + ap * dxl[i] > 0.0);
            if let (true, Ok(f)) = (positive, cand.llt(Side::Lower)) {
                break (cand, f);
            }
            ap *= BACKTRACK;
            if ap < 1e-12 {
                return Some(finish(y, steps, false, earlier));
            }
        };
        let (y_new, s_new, s_new_llt) = loop {
            let cand: Vec<f64> = (0..=h).map(|k| y[k] + ad * dy[k]).collect();
            if cand[1..].iter().all(|&v| v > 0.0) {
                let s_cand = p.negated(gy, cand[0], &cand[1..]);
                if let Ok(f) = s_cand.llt(Side::Lower) {
                    break (cand, s_cand, f);
                }
            }
            ad *= BACKTRACK;
            if ad < 1e-12 {
                return Some(finish(y, steps, false, earlier));
            }
        };
        for i in 0..h {
            xl[i] += ap * dxl[i];
        }
        x = x_new;
        x_llt = x_new_llt;
        earlier.push((y[0], y[1..].to_vec()));
        if earlier.len() > KEPT {
            earlier.remove(0);
        }
        y = y_new;
        s = s_new;
        sinv = s_new_llt.inverse();
        s_llt = s_new_llt;
    };
    Some(finish(y, steps, converged, earlier))
}

fn finish(y: Vec<f64>, steps: usize, converged: bool, earlier: Vec<(f64, Vec<f64>)>) -> Solution {
    Solution {
        rho: y[0],
        t: y[1..].to_vec(),
        steps,
        converged,
        earlier,
    }
}

/// `⟨A, B⟩ = Σ a_ij b_ij`.
fn dot(a: &Mat<f64>, b: &Mat<f64>) -> f64 {
    (0..a.ncols())
        .map(|j| {
            let (ca, cb) = (a.col(j), b.col(j));
            (0..a.nrows()).map(|i| ca[i] * cb[i]).sum::<f64>()
        })
        .sum()
}

/// `(A + Aᵀ)/2`.
fn symmetrise(a: &Mat<f64>) -> Mat<f64> {
    Mat::from_fn(a.nrows(), a.ncols(), |i, j| 0.5 * (a[(i, j)] + a[(j, i)]))
}

/// `𝒜(V)`: `⟨A_ρ, V⟩ = −tr(V_input)` and `⟨G_i, V⟩` for a symmetric `V`, from `ZV` and
/// `ZVZᵀ`.
fn apply_a(
    p: &Problem,
    coef: &[(f64, f64)],
    v: &Mat<f64>,
    zv: &Mat<f64>,
    zvz: &Mat<f64>,
) -> Vec<f64> {
    let n0 = p.n0;
    let input = -(0..n0).map(|i| v[(i, i)]).sum::<f64>();
    std::iter::once(input)
        .chain(coef.iter().enumerate().map(|(i, &(sum, product))| {
            -2.0 * product * zvz[(i, i)] + 2.0 * sum * zv[(i, n0 + i)] - 2.0 * v[(n0 + i, n0 + i)]
        }))
        .collect()
}

/// The Schur complement matrix `M_kl = tr(A_k X A_l Σ)` (`Σ = S⁻¹`) without the multipliers'
/// `x_i/t_i`, from `X`, `ZX`, `ZXZᵀ` and the same for `Σ` (module docs): with
/// `G_i = U_i C_i U_iᵀ`, `U_i = [z_i e_i]`, the entry for units `i, k` is
/// `tr(C_i P C_k Q)` with `P = U_iᵀXU_k` and `Q = U_kᵀΣU_i`.
fn schur(
    p: &Problem,
    coef: &[(f64, f64)],
    (x, zx, zxz): (&Mat<f64>, &Mat<f64>, &Mat<f64>),
    (sg, zs, zsz): (&Mat<f64>, &Mat<f64>, &Mat<f64>),
) -> Mat<f64> {
    let (n0, h) = (p.n0, p.units());
    let c = |i: usize| {
        let (sum, product) = coef[i];
        [[-2.0 * product, sum], [sum, -2.0]]
    };
    let mut m = Mat::<f64>::zeros(h + 1, h + 1);
    m[(0, 0)] = (0..n0)
        .map(|j| (0..n0).map(|i| x[(i, j)] * sg[(i, j)]).sum::<f64>())
        .sum();
    for i in 0..h {
        // −tr(C_i Y_Σᵀ Y_X), Y = the input rows of [Xz_i Xe_i] and of [Σz_i Σe_i].
        let (mut zz, mut ze, mut ez, mut ee) = (0.0, 0.0, 0.0, 0.0);
        for j in 0..n0 {
            let (xz, xe) = (zx[(i, j)], x[(n0 + i, j)]);
            let (sz, se) = (zs[(i, j)], sg[(n0 + i, j)]);
            zz += xz * sz;
            ze += xz * se;
            ez += xe * sz;
            ee += xe * se;
        }
        let ci = c(i);
        let cross = -(ci[0][0] * zz + ci[0][1] * (ze + ez) + ci[1][1] * ee);
        m[(0, i + 1)] = cross;
        m[(i + 1, 0)] = cross;
    }
    for i in 0..h {
        let ci = c(i);
        for k in 0..=i {
            let ck = c(k);
            let pm = [
                [zxz[(i, k)], zx[(i, n0 + k)]],
                [zx[(k, n0 + i)], x[(n0 + i, n0 + k)]],
            ];
            let qm = [
                [zsz[(k, i)], zs[(k, n0 + i)]],
                [zs[(i, n0 + k)], sg[(n0 + k, n0 + i)]],
            ];
            let mut v = 0.0;
            for a in 0..2 {
                for d in 0..2 {
                    // (C_i P)_{ad} · (C_k Q)_{da}
                    let cip = ci[a][0] * pm[0][d] + ci[a][1] * pm[1][d];
                    let ckq = ck[d][0] * qm[0][a] + ck[d][1] * qm[1][a];
                    v += cip * ckq;
                }
            }
            m[(i + 1, k + 1)] = v;
            m[(k + 1, i + 1)] = v;
        }
    }
    m
}

/// The largest `α` with `A + αD ⪰ 0` and `a + αd ≥ 0` (`L` the factor of `A ≻ 0`), from a
/// Lanczos estimate of `λ_min(L⁻¹DL⁻ᵀ)` (an estimate from above, so the step may be a
/// little long: the caller checks it).
fn max_step(l: MatRef<'_, f64>, d: &Mat<f64>, a: &[f64], da: &[f64]) -> f64 {
    let lambda = smallest_eigenvalue(l, d);
    let mut alpha = if lambda < 0.0 {
        -1.0 / lambda
    } else {
        f64::INFINITY
    };
    for (v, dv) in a.iter().zip(da) {
        if *dv < 0.0 {
            alpha = alpha.min(-v / dv);
        }
    }
    alpha
}

/// The smallest Ritz value of `L⁻¹DL⁻ᵀ` after [`LANCZOS_STEPS`] Lanczos steps with full
/// reorthogonalisation.
fn smallest_eigenvalue(l: MatRef<'_, f64>, d: &Mat<f64>) -> f64 {
    let n = d.nrows();
    let steps = LANCZOS_STEPS.min(n);
    let par = faer::Par::Seq;
    let apply = |v: &Mat<f64>| -> Mat<f64> {
        let mut w = v.clone();
        solve_upper_triangular_in_place(l.transpose(), w.as_mut(), par);
        let mut w = d * &w;
        solve_lower_triangular_in_place(l, w.as_mut(), par);
        w
    };
    let norm = |v: &Mat<f64>| dot(v, v).sqrt();
    // A fixed start with every component nonzero.
    let mut v = Mat::from_fn(n, 1, |i, _| 1.0 + ((i * 7919) % 17) as f64 / 17.0);
    v = &v * (1.0 / norm(&v));
    let mut basis: Vec<Mat<f64>> = Vec::with_capacity(steps);
    let (mut alpha, mut beta) = (Vec::new(), Vec::new());
    for j in 0..steps {
        basis.push(v.clone());
        let mut w = apply(&v);
        let a = dot(&w, &v);
        alpha.push(a);
        for _ in 0..2 {
            for q in &basis {
                let c = dot(&w, q);
                w -= q * c;
            }
        }
        let bn = norm(&w);
        if j + 1 == steps || bn <= 1e-12 * (1.0 + a.abs()) {
            break;
        }
        beta.push(bn);
        v = &w * (1.0 / bn);
    }
    let k = alpha.len();
    let t = Mat::from_fn(k, k, |i, j| {
        if i == j {
            alpha[i]
        } else if i == j + 1 {
            beta[j]
        } else if j == i + 1 {
            beta[i]
        } else {
            0.0
        }
    });
    t.self_adjoint_eigenvalues(Side::Lower)
        .ok()
        .and_then(|e| e.first().copied())
        .unwrap_or(f64::NEG_INFINITY)
}

/// Each node's column range of `Z`: its rows are zero outside it (in a chain a node reads
/// only the previous one), so the products with `Z` need only those columns.
fn hulls(p: &Problem) -> Vec<Range<usize>> {
    let n = p.size();
    p.blocks
        .iter()
        .map(|b| {
            let used = |c: usize| b.rows.clone().any(|i| p.z[(i, c)] != 0.0);
            let first = (0..n).find(|&c| used(c)).unwrap_or(0);
            let end = (first..n).rev().find(|&c| used(c)).map_or(first, |c| c + 1);
            first..end
        })
        .collect()
}

/// `ZX` and `ZXZᵀ` for a symmetric `X`, each node's rows of `Z` taken on its column range.
fn z_products(p: &Problem, hulls: &[Range<usize>], x: &Mat<f64>) -> (Mat<f64>, Mat<f64>) {
    let (h, n) = (p.units(), p.size());
    let par = faer::get_global_parallelism();
    let mut zx = Mat::<f64>::zeros(h, n);
    for (b, c) in p.blocks.iter().zip(hulls) {
        let zb = p.z.submatrix(b.rows.start, c.start, b.rows.len(), c.len());
        matmul(
            zx.as_mut().subrows_mut(b.rows.start, b.rows.len()),
            Accum::Replace,
            zb,
            x.submatrix(c.start, 0, c.len(), n),
            1.0,
            par,
        );
    }
    let mut zxz = Mat::<f64>::zeros(h, h);
    for (b, c) in p.blocks.iter().zip(hulls) {
        let zb = p.z.submatrix(b.rows.start, c.start, b.rows.len(), c.len());
        matmul(
            zxz.as_mut().subcols_mut(b.rows.start, b.rows.len()),
            Accum::Replace,
            zx.submatrix(0, c.start, h, c.len()),
            zb.transpose(),
            1.0,
            par,
        );
    }
    (zx, zxz)
}

#[cfg(test)]
mod tests {
    use super::super::sdp::tests::problem;
    use super::*;

    /// `A_ρ = −P_x` and `G_i` as explicit matrices.
    fn explicit(p: &Problem) -> Vec<Mat<f64>> {
        let n = p.size();
        let mut a = vec![Mat::from_fn(n, n, |i, j| {
            if i == j && i < p.n0 {
                -1.0
            } else {
                0.0
            }
        })];
        for (i, &(sum, product)) in p.coefficients().iter().enumerate() {
            let e = p.n0 + i;
            a.push(Mat::from_fn(n, n, |r, c| {
                let (zr, zc) = (p.z[(i, r)], p.z[(i, c)]);
                let (er, ec) = (f64::from(u8::from(r == e)), f64::from(u8::from(c == e)));
                -2.0 * product * zr * zc + sum * (zr * ec + er * zc) - 2.0 * er * ec
            }));
        }
        a
    }

    /// A symmetric positive definite matrix with a seed.
    fn spd(n: usize, seed: usize) -> Mat<f64> {
        let g = Mat::from_fn(n, n, |i, j| {
            (((i * 31 + j * 17 + seed * 7) % 23) as f64 - 11.0) / 11.0
        });
        &g * g.transpose() + Mat::<f64>::identity(n, n)
    }

    #[test]
    fn schur_matrix_operator_and_pencil_match_explicit_matrices() {
        let mut p = problem();
        // A skip connection, so that the column ranges overlap.
        p.z[(5, 1)] = 0.7;
        let n = p.size();
        let a = explicit(&p);
        let (x, sg) = (spd(n, 1), spd(n, 2));
        let hulls = hulls(&p);
        let coef = p.coefficients();
        let (zx, zxz) = z_products(&p, &hulls, &x);
        let (zs, zsz) = z_products(&p, &hulls, &sg);
        let m = schur(&p, &coef, (&x, &zx, &zxz), (&sg, &zs, &zsz));
        let ax = apply_a(&p, &coef, &x, &zx, &zxz);
        for k in 0..a.len() {
            let want = dot(&a[k], &x);
            assert!((ax[k] - want).abs() <= 1e-12 * (1.0 + want.abs()), "𝒜[{k}]");
            for l in 0..a.len() {
                let want = (&a[k] * &x * &a[l] * &sg).diagonal().column_vector().sum();
                let got = m[(k, l)];
                assert!(
                    (got - want).abs() <= 1e-10 * (1.0 + want.abs()),
                    "M[{k},{l}]: {got} vs {want}"
                );
            }
        }
        let y: Vec<f64> = (0..a.len()).map(|k| 0.3 - 0.1 * k as f64).collect();
        let pencil = p.pencil(y[0], &y[1..]);
        let mut want = Mat::<f64>::zeros(n, n);
        for k in 0..a.len() {
            want -= &a[k] * y[k];
        }
        assert!((&pencil - &want).norm_max() <= 1e-13);
    }

    #[test]
    fn the_step_to_the_boundary_is_estimated_from_above_and_closely() {
        let n = 40;
        let a = spd(n, 3);
        let d = Mat::from_fn(n, n, |i, j| {
            let v = (((i * 13 + j * 5) % 7) as f64 - 3.0) + (((j * 13 + i * 5) % 7) as f64 - 3.0);
            0.1 * v
        });
        let llt = a.llt(Side::Lower).unwrap();
        let step = max_step(llt.L(), &d, &[], &[]);
        // Exactly: the largest α with A + αD ⪰ 0, from the generalised eigenvalues.
        let l_inv = llt.L().to_owned();
        let mut b = d.clone();
        solve_lower_triangular_in_place(l_inv.as_ref(), b.as_mut(), faer::Par::Seq);
        let mut bt = b.transpose().to_owned();
        solve_lower_triangular_in_place(l_inv.as_ref(), bt.as_mut(), faer::Par::Seq);
        let lmin = bt.self_adjoint_eigenvalues(Side::Lower).unwrap()[0];
        let exact = -1.0 / lmin;
        assert!(
            step >= exact * (1.0 - 1e-9) && step <= exact * 1.05,
            "{step} vs {exact}"
        );
    }
}
