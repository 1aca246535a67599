//! Symmetric Lanczos on the Gram operator `B = AᵀA` (equivalent to Golub–Kahan–Lanczos
//! bidiagonalisation of `A`), with full reorthogonalisation, breakdown handling and explicit
//! restarts from the current Ritz vector when the basis reaches its memory budget.

use super::dense_la::symmetric_top_eigen;
use super::probabilistic::{lanczos_upper, largest_eigenvalue, log_epsilon};
use super::{
    basis_capacity, certified_ratio, finish, orthogonalize, rng_for, sigma_upper_from_lambda,
    start_vector, BestUpper, Budget, Hints,
};
use crate::bound::{meets_tolerance, Bound, Certificate, Method, Options, Stop};
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
    let budget = Budget::new(opts);
    let (n, m) = (op.input_len(), op.output_len());
    let capacity = basis_capacity(n, 1, opts)?;
    let mut rng = rng_for(opts.seed, 0);
    let (mut v, sigma) = start_vector(n, &mut rng, hints);
    let log_eps = log_epsilon(opts.delta, sigma);
    let certificate = Certificate::Probabilistic { delta: opts.delta };

    let mut upper = BestUpper::from_hints(hints);
    let mut lower = 0.0f64;
    let mut iterations = 0u32;
    let mut matvecs = 0u64;
    let mut tmp = vec![0.0; m];
    let mut w = vec![0.0; n];
    let mut coeffs = vec![0.0; capacity];
    let mut basis: Vec<f64> = Vec::new();
    // The probabilistic bound is valid for the Krylov space of the random start, i.e. the
    // first cycle; restarted cycles only improve the lower end.
    let mut first_cycle = sigma > 0.0;
    let mut best: Vec<f64> = Vec::new();
    let mut history: Vec<(f64, f64, f64)> = Vec::new();
    let mut probabilistic = f64::INFINITY;

    loop {
        let start_norm = norm2(&v);
        if start_norm == 0.0 || !start_norm.is_finite() {
            // Only a zero warm start with no random part gets here; fall back to noise.
            v = super::gaussian(n, &mut rng);
            first_cycle = false;
            continue;
        }
        let log_start_norm = start_norm.ln();
        scale(1.0 / start_norm, &mut v);
        basis.clear();
        basis.extend_from_slice(&v);
        let mut alpha: Vec<f64> = Vec::new();
        let mut beta: Vec<f64> = Vec::new();
        let mut next_check = 0usize;

        loop {
            let j = alpha.len();
            let vj = &basis[j * n..(j + 1) * n];
            op.gram(vj, &mut w, &mut tmp);
            matvecs += 2;
            iterations += 1;
            let mut a = dot(vj, &w);
            axpy(-a, vj, &mut w);
            if j > 0 {
                axpy(-beta[j - 1], &basis[(j - 1) * n..j * n], &mut w);
            }
            coeffs[..=j].fill(0.0);
            orthogonalize(&basis, j + 1, n, &mut w, &mut coeffs);
            a += coeffs[j];
            let b = norm2(&w);
            alpha.push(a);
            beta.push(b);

            let theta = largest_eigenvalue(&alpha, &beta[..j]);
            if first_cycle {
                let t = lanczos_upper(&alpha, &beta, log_start_norm, log_eps, usize::MAX);
                probabilistic = sigma_upper_from_lambda(op, t, iterations as usize);
                upper.offer(probabilistic, certificate);
            }
            let estimate = theta.max(0.0).sqrt();
            history.push((estimate, upper.value, probabilistic));
            let stagnated = history.len() > STAGNATION_WINDOW
                && upper_limited(&history, STAGNATION_WINDOW, opts.rtol, iterations);
            let breakdown =
                b <= 64.0 * UNIT_ROUNDOFF * theta.max(f64::MIN_POSITIVE) * (j + 1) as f64;
            let cap = budget
                .exhausted(iterations)
                .or(stagnated.then_some(Stop::UpperLimited));
            let full = j + 2 > capacity;
            let looks_done = meets_tolerance(estimate, upper.value, opts.rtol) && j >= next_check;

            if looks_done || breakdown || cap.is_some() || full {
                let ritz = ritz_vector(&alpha, &beta, &basis, n)?;
                let ratio = certified_ratio(op, &ritz, &mut tmp);
                if ratio > lower || best.is_empty() {
                    lower = lower.max(ratio);
                    best.clone_from(&ritz);
                }
                matvecs += 1;
                if meets_tolerance(lower, upper.value, opts.rtol) {
                    return Ok((
                        done(lower, upper, iterations, matvecs, Stop::Converged, &budget),
                        best,
                    ));
                }
                if let Some(stop) = cap {
                    return Ok((done(lower, upper, iterations, matvecs, stop, &budget), best));
                }
                if full && stagnated_estimate(&history, STAGNATION_WINDOW, opts.rtol) {
                    // A restart would freeze the probabilistic bound at its current value, and
                    // the Ritz value has converged: nothing left to gain.
                    return Ok((
                        done(
                            lower,
                            upper,
                            iterations,
                            matvecs,
                            Stop::UpperLimited,
                            &budget,
                        ),
                        best,
                    ));
                }
                if breakdown || full {
                    v = ritz;
                    first_cycle = false;
                    break;
                }
                next_check = j + 2 + j / 4;
            }
            scale(1.0 / b, &mut w);
            basis.extend_from_slice(&w);
        }
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

fn done(
    lower: f64,
    upper: BestUpper,
    iterations: u32,
    matvecs: u64,
    stop: Stop,
    budget: &Budget,
) -> Bound {
    finish(
        lower,
        upper,
        Method::Lanczos,
        iterations,
        matvecs,
        stop,
        budget,
    )
}

/// The Ritz vector of the largest Ritz value: `V y` with `y` the top eigenvector of `T`.
fn ritz_vector(alpha: &[f64], beta: &[f64], basis: &[f64], n: usize) -> Result<Vec<f64>> {
    let k = alpha.len();
    let t = super::dense_la::tridiagonal(alpha, beta);
    let (_, y) = symmetric_top_eigen(&t, k)?;
    let mut x = vec![0.0; n];
    for (i, yi) in y.iter().enumerate() {
        axpy(*yi, &basis[i * n..(i + 1) * n], &mut x);
    }
    Ok(x)
}
