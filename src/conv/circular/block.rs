//! The work on one frequency block: its top Ritz value by Lanczos, a Cholesky certificate
//! that `μI − G(f)` is positive definite, exact eigenvalues, and Gram iteration.

use super::super::spectrum::C64;
use super::gram::{hermitian_largest_eigenvalue, Planes};
use crate::error::Result;
use crate::kernels::{gamma, UNIT_ROUNDOFF};
use crate::spectral::{dense_la, tridiagonal};
use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::cholesky::llt::factor::cholesky_in_place;
use faer::{Mat, MatMut, MatRef, Par};

/// Top Ritz value of a Hermitian operator of dimension `n` by Lanczos with full
/// reorthogonalisation from a fixed start, and the residual `‖Hy − θy‖` of its Ritz vector (an
/// eigenvalue lies within it of `θ`). Stops after `max_steps`, at breakdown, or once the
/// residual is below `tol·θ`. `apply(x, y)` writes `Hx` into `y`.
pub(crate) fn top_ritz(
    n: usize,
    max_steps: usize,
    tol: f64,
    mut apply: impl FnMut(&[C64], &mut [C64]),
) -> Result<(f64, f64)> {
    let steps = max_steps.min(n).max(1);
    let mut basis: Vec<C64> = Vec::with_capacity(steps * n);
    let mut start: Vec<C64> = (0..n)
        .map(|i| C64::new(1.0 + 0.5 * ((i as f64 * 0.754_877_666).fract() - 0.5), 0.0))
        .collect();
    let norm = start.iter().map(|v| v.norm_sqr()).sum::<f64>().sqrt();
    start.iter_mut().for_each(|v| *v /= norm);
    basis.extend_from_slice(&start);
    let (mut alpha, mut beta) = (Vec::new(), Vec::new());
    let mut w = vec![C64::default(); n];
    let mut result = (0.0, f64::INFINITY);
    for k in 0..steps {
        apply(&basis[k * n..(k + 1) * n], &mut w);
        // Two passes of classical Gram–Schmidt against the whole basis.
        for pass in 0..2 {
            for j in 0..=k {
                let q = &basis[j * n..(j + 1) * n];
                let dot: C64 = q.iter().zip(&w).map(|(a, b)| a.conj() * b).sum();
                if pass == 0 && j == k {
                    alpha.push(dot.re);
                }
                w.iter_mut().zip(q).for_each(|(v, a)| *v -= dot * a);
            }
        }
        let b = w.iter().map(|v| v.norm_sqr()).sum::<f64>().sqrt();
        let last = k + 1 == steps || b <= 1e-14 * alpha.iter().fold(0.0f64, |m, a| m.max(a.abs()));
        if last && tol == 0.0 {
            // Only the value is wanted: bisection is far cheaper than a dense eigensolver.
            return Ok((
                tridiagonal::largest_eigenvalue_bracket(&alpha, &beta).0,
                f64::INFINITY,
            ));
        }
        if last || (k + 1) % 8 == 0 {
            let m = k + 1;
            let t = tridiagonal::dense(&alpha, &beta);
            let (values, vector) = dense_la::symmetric_top_eigen(&t, m)?;
            let theta = values[m - 1];
            result = (theta, b * vector[m - 1].abs());
            if last || result.1 <= tol * theta {
                return Ok(result);
            }
        }
        beta.push(b);
        basis.extend(w.iter().map(|v| v / b));
    }
    Ok(result)
}

/// Per-thread scratch vectors.
pub(super) struct ScratchVectors {
    /// The symbol's blocks of one frequency (`groups·og·cg`).
    pub(super) blocks: Vec<C64>,
    /// One complex `n × n` matrix (Cholesky, eigenvalues, the symbol route's Gram).
    pub(super) complex: Vec<C64>,
    /// Split vectors for the matrix-vector products.
    pub(super) split: [Vec<f64>; 4],
    pub(super) stack: MemBuffer,
}

impl ScratchVectors {
    /// Top Ritz value and residual of the Gram matrix in `planes`.
    pub(super) fn ritz(
        &mut self,
        n: usize,
        planes: &Planes,
        steps: usize,
        tol: f64,
    ) -> Result<(f64, f64)> {
        let [xr, xi, yr, yi] = &mut self.split;
        top_ritz(n, steps, tol, |x, y| {
            for (v, (r, i)) in x.iter().zip(xr.iter_mut().zip(xi.iter_mut())) {
                (*r, *i) = (v.re, v.im);
            }
            planes.matvec(n, xr, xi, yr, yi);
            for (v, (r, i)) in y.iter_mut().zip(yr.iter().zip(yi.iter())) {
                *v = C64::new(*r, *i);
            }
        })
    }

    /// Whether `λ_max(G) ≤ μ` is proven by a Cholesky factorisation of `μI − G`; if so, the
    /// certified bound (`μ` plus the factorisation's rounding), without the Gram margin.
    /// `s2` bounds `‖G‖`.
    pub(super) fn certify(&mut self, n: usize, planes: &Planes, mu: f64, s2: f64) -> Option<f64> {
        planes.shifted_negative(n, mu, &mut self.complex);
        let a = MatMut::from_column_major_slice_mut(&mut self.complex, n, n);
        let stack = MemStack::new(&mut self.stack);
        cholesky_in_place(a, Default::default(), Par::Seq, stack, Default::default()).ok()?;
        let factor_norm2: f64 = (0..n)
            .flat_map(|j| self.complex[j * n + j..(j + 1) * n].iter())
            .map(|v| v.norm_sqr())
            .sum();
        // Higham Thm 10.3 with complex arithmetic (constant 4), the shift's rounding, and the
        // rounding of the sum itself.
        Some(mu + 4.0 * gamma(n + 1) * factor_norm2 * (1.0 + 1e-10) + UNIT_ROUNDOFF * (mu + s2))
    }

    pub(super) fn exact(&mut self, n: usize, planes: &Planes) -> Result<f64> {
        planes.full(n, &mut self.complex);
        hermitian_largest_eigenvalue(MatRef::from_column_major_slice(&self.complex, n, n))
    }

    /// Gram-iteration bound on `λ_max(G)` with `squarings` squarings in `f64`, each iterate
    /// rescaled to unit Frobenius norm; widened by the squarings' relative rounding (each
    /// `γ_n`), not including the Gram margin.
    pub(super) fn gram_iteration(&mut self, n: usize, planes: &Planes, squarings: usize) -> f64 {
        planes.full(n, &mut self.complex);
        let mut a = Mat::<C64>::from_fn(n, n, |i, j| self.complex[j * n + i]);
        let mut next = Mat::<C64>::zeros(n, n);
        let mut log_scale = 0.0f64;
        let mut power = 1.0f64;
        for _ in 0..squarings {
            let norm = a.norm_l2();
            if norm == 0.0 || !norm.is_finite() {
                return norm;
            }
            log_scale += norm.ln() / power;
            let inv = C64::new(1.0 / (norm * norm), 0.0);
            faer::linalg::matmul::matmul(
                next.as_mut(),
                faer::Accum::Replace,
                a.as_ref(),
                a.as_ref(),
                inv,
                Par::Seq,
            );
            std::mem::swap(&mut a, &mut next);
            power *= 2.0;
        }
        let bound = (log_scale + a.norm_l2().ln() / power).exp();
        bound * (1.0 + 8.0 * (squarings + 1) as f64 * gamma(n + 2))
    }
}

/// What the scan learns about one block's `λ_max = σ₁²` (without the Gram margin).
pub(super) struct BlockValue {
    /// A lower estimate (a Rayleigh quotient: below `λ_max` up to rounding; it only ranks
    /// blocks and picks the maximiser, no output relies on it being a bound).
    pub(super) lower: f64,
    /// A certified upper bound.
    pub(super) upper: f64,
    /// Whether `λ_max` was resolved (computed, or refined to the slack) rather than bounded.
    pub(super) resolved: bool,
}

impl BlockValue {
    pub(super) fn exact(v: f64) -> Self {
        BlockValue {
            lower: v,
            upper: v,
            resolved: true,
        }
    }
}

/// Work done on one assembled block.
pub(super) type BlockWork<'a> =
    dyn Fn(&mut ScratchVectors, &Planes) -> Result<BlockValue> + Sync + 'a;
