//! ECLipsE-Fast (Xu & Sivaranjani, NeurIPS 2024): multipliers for the LipSDP-Neuron program
//! in closed form, one per activation node, chosen node by node from the input side. The
//! bound they give is checked by the same Cholesky test as LipSDP-Neuron's (`sdp::verify`).
//!
//! Write `S(ρ, t) = −M(ρ, t)` (`sdp.rs`) without its output term and with `ρ = 1`, and
//! leave out the `2αβ t_i z_i z_iᵀ` terms, which only add a positive semidefinite matrix
//! when `αβ ≥ 0`. What remains is `P_x` on the input block, `2t_i` on unit `i`'s diagonal
//! and the couplings `−(α+β)t_i z_i`, which only reach earlier blocks. So the leading
//! blocks up to node `k` are fixed once the multipliers of the nodes before `k` are, and
//! the factorisation can be built block by block: node `k` with the single multiplier `l`
//! adds the Schur complement `D_k = 2l·I − (α+β)²l²K_k`, `K_k = Z_k S_{<k}⁻¹ Z_kᵀ`. Its
//! smallest eigenvalue `2l − (α+β)²l²κ` (`κ = λ_max(K_k)`) is largest, `1/((α+β)²κ)`, at
//! `l = 1/((α+β)²κ)`: the greedy choice of ECLipsE-Fast, which on a chain of dense layers
//! is exactly its recursion `X_i = l_i I − l_i² m² W_i X_{i−1}⁻¹ W_iᵀ` (with `l` halved
//! for our factor 2 in `G_i`), and which here applies to any graph the unrolling handles
//! (residual connections, concatenations). Finally the output term is scaled in: with
//! `S₀` the full matrix at `ρ = 1` without the output and `μ = λ_max(E_y S₀⁻¹ E_yᵀ)`,
//! `S(μ, μt) = μS₀ − E_yᵀE_y ⪰ 0`, so `L ≤ √μ`; the verified value is what is reported.

use super::interior::smallest_rho;
use super::sdp::Problem;
use faer::linalg::triangular_solve::solve_lower_triangular_in_place;
use faer::{Mat, Par, Side};

/// Relative margin by which the start is moved inside the feasible set.
const INSIDE: f64 = 1e-6;

/// ECLipsE-Fast's `(ρ, t)` for the problem, strictly feasible up to rounding (the caller
/// verifies), or `None` when its greedy multipliers do not make `S₀` positive definite
/// (possible only with slopes of both signs, `αβ < 0`).
pub(super) fn multipliers(p: &Problem, gy: &Mat<f64>) -> Option<(f64, Vec<f64>)> {
    let (n0, n) = (p.n0, p.size());
    // The factor of the matrix without the output and `αβ` terms, built block by block.
    let mut factor = Mat::<f64>::zeros(n, n);
    for i in 0..n0 {
        factor[(i, i)] = 1.0;
    }
    let mut t = vec![0.0; p.units()];
    let mut previous = 1.0;
    for b in &p.blocks {
        let (c, d) = (n0 + b.rows.start, b.rows.len());
        // Y = L_{<k}⁻¹ Z_kᵀ on the earlier columns, so K_k = YᵀY. Rows of Z_kᵀ before the
        // first coordinate node k reads are zero, and so are Y's: the solve starts there
        // (a chain's node reads only the node before it).
        let mut y = Mat::from_fn(c, d, |i, j| p.z[(b.rows.start + j, i)]);
        let first = (0..c)
            .find(|&i| (0..d).any(|j| y[(i, j)] != 0.0))
            .unwrap_or(c);
        solve_lower_triangular_in_place(
            factor.submatrix(first, first, c - first, c - first),
            y.as_mut().subrows_mut(first, c - first),
            Par::rayon(0),
        );
        let reached = y.subrows(first, c - first);
        let k = reached.transpose() * reached;
        let kappa = k
            .self_adjoint_eigenvalues(Side::Lower)
            .ok()?
            .last()
            .copied()?;
        let s2 = b.sum * b.sum;
        // A node its inputs do not reach (κ = 0) is uncoupled: any multiplier works.
        let l = if kappa * s2 > 0.0 {
            1.0 / (s2 * kappa)
        } else {
            previous
        };
        previous = l;
        t[b.rows.clone()].fill(l);
        for i in 0..d {
            for j in 0..c {
                factor[(c + i, j)] = -b.sum * l * y[(j, i)];
            }
        }
        let schur = Mat::from_fn(d, d, |i, j| {
            let diagonal = if i == j { 2.0 * l } else { 0.0 };
            diagonal - s2 * l * l * k[(i, j)]
        });
        let llt = schur.llt(Side::Lower).ok()?;
        let lk = llt.L();
        for j in 0..d {
            for i in j..d {
                factor[(c + i, c + j)] = lk[(i, j)];
            }
        }
    }
    // μ = λ_max(E_y S₀⁻¹ E_yᵀ) with the full S₀ (the αβ terms back in).
    let mut s0 = p.negated(gy, 1.0, &t);
    s0 += gy;
    let llt = s0.llt(Side::Lower).ok()?;
    let mut w = p.ey.transpose().to_owned();
    solve_lower_triangular_in_place(llt.L(), w.as_mut(), Par::rayon(0));
    let mu = (w.transpose() * &w)
        .self_adjoint_eigenvalues(Side::Lower)
        .ok()?
        .last()
        .copied()?
        * (1.0 + INSIDE);
    if !(mu.is_finite() && mu > 0.0) {
        return None;
    }
    let t: Vec<f64> = t.iter().map(|v| v * mu).collect();
    // For these multipliers the input block may need less than μ: take the least ρ.
    let rho = smallest_rho(p, gy, &t)
        .filter(|r| r.is_finite() && *r > 0.0 && *r <= mu)
        .map_or(mu, |r| r * (1.0 + INSIDE));
    Some((rho, t))
}

#[cfg(test)]
mod tests {
    use super::super::interior;
    use super::super::sdp::{self, tests::problem};
    use super::*;
    use faer::linalg::solvers::DenseSolveCore;
    use std::time::{Duration, Instant};

    /// The multipliers pass the check, and prove no less than the optimum.
    fn check(p: &Problem) -> f64 {
        let gy = p.ey.transpose() * &p.ey;
        let (rho, t) = multipliers(p, &gy).unwrap();
        let proven = sdp::verify(p, &gy, rho, &t).unwrap();
        let far = Instant::now() + Duration::from_secs(60);
        let best = interior::solve(p, &gy, far).unwrap();
        assert!(best.converged);
        assert!(
            proven >= best.rho.sqrt() * (1.0 - 1e-9),
            "{proven} vs {}",
            best.rho
        );
        proven
    }

    #[test]
    fn on_a_chain_it_is_the_published_recursion() {
        let mut p = problem();
        // Both nodes ReLU (αβ = 0), as in the published recursion.
        p.blocks[1].sum = 1.0;
        p.blocks[1].product = 0.0;
        let proven = check(&p);
        // X₀ = I; X_i = l_i I − l_i² m² K_i with K_i = W_i X_{i−1}⁻¹ W_iᵀ, m = ½ and
        // l_i = 1/(2m²λ_max(K_i)); L² = λ_max(W_out X⁻¹ W_outᵀ).
        let w1 = p.z.submatrix(0, 0, 4, 3).to_owned();
        let w2 = p.z.submatrix(4, 3, 3, 4).to_owned();
        let wo = p.ey.submatrix(0, 7, 2, 3).to_owned();
        let lmax = |m: &Mat<f64>| {
            *m.self_adjoint_eigenvalues(Side::Lower)
                .unwrap()
                .last()
                .unwrap()
        };
        let inv = |m: &Mat<f64>| m.llt(Side::Lower).unwrap().inverse();
        let mut x = Mat::<f64>::identity(3, 3);
        for w in [&w1, &w2] {
            let k = w * inv(&x) * w.transpose();
            let l = 1.0 / (0.5 * lmax(&k));
            x = Mat::from_fn(k.nrows(), k.nrows(), |i, j| if i == j { l } else { 0.0 })
                - (l * l * 0.25) * &k;
        }
        let want = lmax(&(&wo * inv(&x) * wo.transpose())).sqrt();
        // The least ρ for the scaled multipliers can lie a little below the recursion's
        // (here by 5e-6): ρ alone moves only the input block.
        assert!(
            proven >= want * (1.0 - 1e-4) && proven <= want * (1.0 + 1e-6),
            "{proven} vs {want}"
        );
    }

    #[test]
    fn with_a_skip_connection_and_leaky_units_it_stays_sound() {
        let mut p = problem();
        // The second node also reads the input (a residual connection).
        for i in 4..7 {
            for j in 0..3 {
                p.z[(i, j)] = 0.3 * (i as f64 - j as f64);
            }
        }
        check(&p);
    }
}
