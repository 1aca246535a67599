//! Symmetric Lanczos on the Gram operator `B = AᵀA` (equivalent to Golub–Kahan–Lanczos
//! bidiagonalisation of `A`), with full reorthogonalisation, breakdown handling and explicit
//! restarts from the current Ritz vector when the basis reaches its memory budget.

use super::dense_la::symmetric_top_eigen;
use super::krylov::{End, Tracker};
use super::probabilistic::{lanczos_upper, log_epsilon};
use super::tridiagonal::largest_eigenvalue;
use super::{basis_capacity, orthogonalize, rng_for, sigma_upper_from_lambda, start_vector, Hints};
use crate::bound::{Bound, Certificate, Method, Options, Stop};
use crate::error::Result;
use crate::kernels::{axpy, dot, norm2, scale, UNIT_ROUNDOFF};
use crate::operator::LinearOperator;

/// Steps over which a converged Ritz value and an unmoving upper bound mean "stop".
const STAGNATION_WINDOW: usize = 12;

pub(crate) fn lanczos(
    op: &dyn LinearOperator,
    opts: &Options,
    hints: &Hints<'_>,
) -> Result<(Bound, Vec<f64>)> {
    let n = op.input_len();
    let mut rng = rng_for(opts.seed, 0);
    let (mut v, sigma) = start_vector(n, &mut rng, hints);
    let mut state = State {
        run: Tracker::new(Method::Lanczos, opts, hints),
        opts,
        capacity: basis_capacity(n, 1, opts)?,
        log_eps: log_epsilon(opts.delta, sigma),
        // The probabilistic bound is valid for the Krylov space of the random start, i.e.
        // the first cycle; restarted cycles only improve the lower end.
        first_cycle: sigma > 0.0,
        history: Vec::new(),
        probabilistic: f64::INFINITY,
        tmp: vec![0.0; op.output_len()],
    };
    loop {
        let start_norm = norm2(&v);
        if start_norm == 0.0 || !start_norm.is_finite() {
            // Only a zero warm start with no random part gets here; fall back to noise.
            v = super::gaussian(n, &mut rng);
            state.first_cycle = false;
            continue;
        }
        scale(1.0 / start_norm, &mut v);
        match state.cycle(op, v, start_norm.ln())? {
            End::Stop(stop) => return Ok(state.run.finish(stop)),
            End::Restart(ritz) => {
                v = ritz;
                state.first_cycle = false;
            }
        }
    }
}

/// Everything that outlives one cycle.
struct State<'o> {
    run: Tracker,
    opts: &'o Options,
    /// Basis vectors that fit in the memory budget.
    capacity: usize,
    log_eps: f64,
    first_cycle: bool,
    /// Per step: the Ritz estimate, the best upper end and the probabilistic bound.
    history: Vec<(f64, f64, f64)>,
    probabilistic: f64,
    tmp: Vec<f64>,
}

impl State<'_> {
    /// Lanczos steps from the unit vector `v` until the run stops or must restart.
    fn cycle(&mut self, op: &dyn LinearOperator, v: Vec<f64>, log_start_norm: f64) -> Result<End> {
        let (n, rtol) = (op.input_len(), self.opts.rtol);
        let certificate = Certificate::Probabilistic {
            delta: self.opts.delta,
        };
        let mut basis = v;
        let mut w = vec![0.0; n];
        let mut coeffs = vec![0.0; self.capacity];
        let (mut alpha, mut beta): (Vec<f64>, Vec<f64>) = (Vec::new(), Vec::new());
        let mut next_check = 0usize;
        loop {
            let j = alpha.len();
            let b = self.step(op, &basis, &mut alpha, &beta, &mut w, &mut coeffs);
            beta.push(b);
            self.run.iterations += 1;
            let theta = largest_eigenvalue(&alpha, &beta[..j]);
            if self.first_cycle {
                let t = lanczos_upper(&alpha, &beta, log_start_norm, self.log_eps, usize::MAX);
                self.probabilistic = sigma_upper_from_lambda(op, t, self.run.iterations as usize);
                self.run.offer_upper(self.probabilistic, certificate);
            }
            let estimate = theta.max(0.0).sqrt();
            self.history
                .push((estimate, self.run.upper, self.probabilistic));
            let stagnated = self.history.len() > STAGNATION_WINDOW
                && upper_limited(&self.history, STAGNATION_WINDOW, rtol, self.run.iterations);
            let breakdown =
                b <= 64.0 * UNIT_ROUNDOFF * theta.max(f64::MIN_POSITIVE) * (j + 1) as f64;
            let cap = self.run.cap().or(stagnated.then_some(Stop::UpperLimited));
            let full = j + 2 > self.capacity;
            let looks_done = self.run.looks_done(estimate) && j >= next_check;
            if looks_done || breakdown || cap.is_some() || full {
                let ritz = ritz_vector(&alpha, &beta, &basis, n)?;
                if let Some(stop) = self.run.certify(op, &ritz, &mut self.tmp, cap) {
                    return Ok(End::Stop(stop));
                }
                if full && stagnated_estimate(&self.history, STAGNATION_WINDOW, rtol) {
                    // A restart would freeze the probabilistic bound at its current value, and
                    // the Ritz value has converged: nothing left to gain.
                    return Ok(End::Stop(Stop::UpperLimited));
                }
                if breakdown || full {
                    return Ok(End::Restart(ritz));
                }
                next_check = j + 2 + j / 4;
            }
            scale(1.0 / b, &mut w);
            basis.extend_from_slice(&w);
        }
    }

    /// One Lanczos step on `B = AᵀA` from the last basis vector: appends `αⱼ` and returns
    /// `βⱼ = ‖w‖`, `w` left as the (unnormalised) next vector, fully reorthogonalised.
    fn step(
        &mut self,
        op: &dyn LinearOperator,
        basis: &[f64],
        alpha: &mut Vec<f64>,
        beta: &[f64],
        w: &mut [f64],
        coeffs: &mut [f64],
    ) -> f64 {
        let n = op.input_len();
        let j = alpha.len();
        let vj = &basis[j * n..(j + 1) * n];
        op.gram(vj, w, &mut self.tmp);
        self.run.matvecs += 2;
        let reference = norm2(w);
        let mut a = dot(vj, w);
        axpy(-a, vj, w);
        if j > 0 {
            axpy(-beta[j - 1], &basis[(j - 1) * n..j * n], w);
        }
        coeffs[..=j].fill(0.0);
        orthogonalize(basis, j + 1, n, w, coeffs, reference);
        a += coeffs[j];
        alpha.push(a);
        norm2(w)
    }
}

/// Whether iterating on cannot meet `rtol`: the Ritz value has converged far below the
/// tolerance, and the upper end either has not moved over the window or, if the probabilistic
/// bound is still shrinking, would need more than four times the steps taken so far at its
/// current rate.
/// Whether the Ritz value has moved less than `0.01·rtol` (relative) over the window.
fn stagnated_estimate(history: &[(f64, f64, f64)], window: usize, rtol: f64) -> bool {
    history.len() > window && {
        let est = history[history.len() - 1].0;
        est - history[history.len() - 1 - window].0 <= 0.01 * rtol * est
    }
}

fn upper_limited(history: &[(f64, f64, f64)], window: usize, rtol: f64, iterations: u32) -> bool {
    let (est, best, prob) = history[history.len() - 1];
    let (old_est, old_best, old_prob) = history[history.len() - 1 - window];
    if !stagnated_estimate(history, window, rtol) {
        return false; // the lower end is still moving
    }
    if prob.is_finite() && old_prob.is_finite() && prob < old_prob {
        let (width, old_width) = (prob / est - 1.0, old_prob / old_est - 1.0);
        if width <= rtol {
            return false;
        }
        let rate = (width / old_width).ln(); // < 0 per window
        if rate < 0.0 {
            let steps_needed = window as f64 * (rtol / width).ln() / rate;
            // The bound's convergence accelerates, so a linear extrapolation is pessimistic:
            // give it four times the steps taken so far before calling it hopeless.
            return steps_needed > (4.0 * iterations as f64).max(400.0);
        }
    }
    best >= old_best
}

/// The Ritz vector of the largest Ritz value: `V y` with `y` the top eigenvector of `T`.
fn ritz_vector(alpha: &[f64], beta: &[f64], basis: &[f64], n: usize) -> Result<Vec<f64>> {
    let k = alpha.len();
    let t = super::tridiagonal::dense(alpha, beta);
    let (_, y) = symmetric_top_eigen(&t, k)?;
    let mut x = vec![0.0; n];
    for (i, yi) in y.iter().enumerate() {
        axpy(*yi, &basis[i * n..(i + 1) * n], &mut x);
    }
    Ok(x)
}
