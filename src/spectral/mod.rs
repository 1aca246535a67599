//! The spectral-norm engine: `σ₁(A) = ‖A‖₂` of any [`LinearOperator`] as a certified
//! [`Bound`].
//!
//! * [`Method::Exact`]: dense SVD (faer) of the explicit matrix, upper end widened by a
//!   backward-error margin.
//! * [`Method::Lanczos`]: symmetric Lanczos on `AᵀA` with full reorthogonalisation and explicit
//!   restarts when the basis reaches its memory budget; lower end from the Ritz vector
//!   evaluated through the operator, upper end from the a-posteriori probabilistic bound
//!   ([`probabilistic`]) or a caller-supplied proven bound, whichever is smaller.
//! * [`Method::BlockLanczos`]: the same on a block of vectors, one pass over the operator per
//!   block; suited to clustered top spectra and to operators whose block apply is cheap.
//! * [`Method::Power`]: power iteration on `AᵀA`, the reference the benchmarks compare with.
//!
//! Every estimator stops as soon as `upper ≤ lower·(1 + rtol)`, or at the iteration/time caps
//! with the interval reached. Results depend only on the seed, not on the thread count.

mod block;
pub(crate) mod dense_la;
pub(crate) mod exact;
mod krylov;
mod lanczos;
mod power;
mod probabilistic;
pub(crate) mod tridiagonal;

use crate::bound::{Bound, Certificate, Method, Options};
use crate::error::{Error, Result};
use crate::kernels::{gamma, norm2};
use crate::operator::LinearOperator;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;

pub use probabilistic::kuczynski_wozniakowski_upper;

/// What a caller knows beyond the operator: a starting vector close to the top right singular
/// vector, and an upper bound proven by other means (e.g. the circular embedding of a conv).
#[derive(Debug, Clone, Copy)]
pub struct Hints<'a> {
    /// Warm start (length `input_len()`); it need not be normalised.
    pub start: Option<&'a [f64]>,
    /// Weight of the Gaussian component added to a warm start, relative to the start's norm.
    /// Positive keeps the probabilistic bound valid; 0 disables it.
    pub random_weight: f64,
    /// A proven upper bound on `σ₁` and its certificate.
    pub upper: Option<(f64, Certificate)>,
}

impl Default for Hints<'_> {
    fn default() -> Self {
        Hints {
            start: None,
            random_weight: 1.0,
            upper: None,
        }
    }
}

/// Certified interval for `‖A‖₂` of any operator, by `opts.method`.
///
/// ```
/// use lipschitz::{spectral_norm, DenseMatrix, Options};
/// let a = DenseMatrix::new(vec![2.0, 0.0, 0.0, 1.0], 2, 2)?;
/// let b = spectral_norm(&a, &Options::default())?;
/// assert!(b.lower <= 2.0 && 2.0 <= b.upper && b.meets(1e-4));
/// # Ok::<(), lipschitz::Error>(())
/// ```
pub fn spectral_norm(op: &dyn LinearOperator, opts: &Options) -> Result<Bound> {
    spectral_norm_with(op, opts, &Hints::default())
}

/// [`spectral_norm`] with a warm start and/or a known upper bound.
pub fn spectral_norm_with(
    op: &dyn LinearOperator,
    opts: &Options,
    hints: &Hints<'_>,
) -> Result<Bound> {
    spectral_norm_with_vector(op, opts, hints).map(|(b, _)| b)
}

/// [`spectral_norm_with`], also returning the vector that attains `lower` (a certified
/// `‖Av‖/‖v‖ ≥ lower`), e.g. to re-evaluate it with a more accurate operator.
pub fn spectral_norm_with_vector(
    op: &dyn LinearOperator,
    opts: &Options,
    hints: &Hints<'_>,
) -> Result<(Bound, Vec<f64>)> {
    opts.validate()?;
    validate_operator(op)?;
    validate_hints(op, hints)?;
    match choose_method(op, opts) {
        Method::Exact => exact::exact_operator(op, opts),
        Method::Power => power::power(op, opts, hints),
        Method::BlockLanczos => block::block_lanczos(op, opts, hints),
        _ => lanczos::lanczos(op, opts, hints),
    }
}

pub(crate) fn choose_method(op: &dyn LinearOperator, opts: &Options) -> Method {
    if opts.method != Method::Auto {
        return opts.method;
    }
    let (m, n) = (op.output_len() as f64, op.input_len() as f64);
    let small = m.min(n);
    let fits = m * n * 8.0 * 3.0 <= opts.memory_limit as f64;
    if small * small * m.max(n) <= opts.exact_flop_limit && fits {
        Method::Exact
    } else {
        Method::Lanczos
    }
}

fn validate_operator(op: &dyn LinearOperator) -> Result<()> {
    crate::error::check_positive("operator input length", op.input_len())?;
    crate::error::check_positive("operator output length", op.output_len())?;
    let e = op.forward_error();
    if !(e >= 0.0 && e.is_finite()) {
        return Err(Error::invalid(
            "operator forward_error()",
            e,
            "must be finite and ≥ 0",
        ));
    }
    Ok(())
}

fn validate_hints(op: &dyn LinearOperator, hints: &Hints<'_>) -> Result<()> {
    if let Some(start) = hints.start {
        if start.len() != op.input_len() {
            return Err(Error::length(
                "warm start vector",
                op.input_len(),
                start.len(),
            ));
        }
        crate::error::check_finite("warm start vector", start)?;
    }
    if !(hints.random_weight >= 0.0 && hints.random_weight.is_finite()) {
        return Err(Error::invalid(
            "random_weight",
            hints.random_weight,
            "must be finite and ≥ 0",
        ));
    }
    if let Some((u, _)) = hints.upper {
        if u.is_nan() || u < 0.0 {
            return Err(Error::invalid("known upper bound", u, "must be ≥ 0"));
        }
    }
    Ok(())
}

/// Gaussian vector of length `n` from a seeded stream (sequential, so thread-count independent).
pub(crate) fn gaussian(n: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
    (0..n).map(|_| StandardNormal.sample(rng)).collect()
}

pub(crate) fn rng_for(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

/// The start vector `w/‖w‖ + (ρ/√n)·g`, and `σ`, the standard deviation of its Gaussian part
/// (0 when there is none, which disables the probabilistic bound).
pub(crate) fn start_vector(n: usize, rng: &mut ChaCha8Rng, hints: &Hints<'_>) -> (Vec<f64>, f64) {
    let g = gaussian(n, rng);
    match hints.start {
        None => (g, 1.0),
        Some(w) => {
            let wn = norm2(w);
            let sigma = hints.random_weight / (n as f64).sqrt();
            if wn == 0.0 {
                return (g, 1.0);
            }
            let v = w
                .iter()
                .zip(&g)
                .map(|(wi, gi)| wi / wn + sigma * gi)
                .collect();
            (v, sigma)
        }
    }
}

/// A certified lower bound `‖A x‖/‖x‖`, rounding margins subtracted: some vector attains it.
/// `tmp` has length `op.output_len()`.
pub fn certified_ratio(op: &dyn LinearOperator, x: &[f64], tmp: &mut [f64]) -> f64 {
    let nx = norm2(x);
    if nx == 0.0 || !nx.is_finite() {
        return 0.0;
    }
    op.forward(x, tmp);
    let nax = norm2(tmp);
    if !nax.is_finite() {
        return 0.0;
    }
    let (m, n) = (op.output_len(), op.input_len());
    let num = nax * (1.0 - gamma(m + 2)) - op.forward_error() * nx;
    (num.max(0.0) / (nx * (1.0 + gamma(n + 2)))).max(0.0)
}

/// Widens an upper bound on `λ₁(AᵀA)` from a `k`-step Krylov method into one on `σ₁(A)`:
/// rounding in the recurrence (`O(k·u)` relative) and the operator's own error `e`.
pub(crate) fn sigma_upper_from_lambda(op: &dyn LinearOperator, lambda: f64, k: usize) -> f64 {
    if !lambda.is_finite() {
        return f64::INFINITY;
    }
    (lambda.max(0.0) * (1.0 + gamma(16 * (k + 8)))).sqrt() + 2.0 * op.forward_error()
}

/// Krylov vectors of length `n` that fit in the memory budget (at least 3, at most
/// `max_iterations + 1`).
pub(crate) fn basis_capacity(n: usize, width: usize, opts: &Options) -> Result<usize> {
    let per_vector = (n as u128) * 8 * width as u128;
    let cap = (opts.memory_limit as u128 / per_vector.max(1)).saturating_sub(2);
    if cap < 3 {
        return Err(Error::TooLarge {
            what: format!("Krylov basis of 3 blocks of {width} vectors of length {n}"),
            needed: per_vector * 5,
            limit: opts.memory_limit as u128,
        });
    }
    Ok((cap as usize).min(opts.max_iterations as usize + 1))
}

/// Orthogonalises `w` against the first `count` vectors of `basis` by classical Gram–Schmidt,
/// adding the coefficients into `coeffs[..count]`.
///
/// A pass leaves `w` orthogonal to about `u·‖w_ref‖/‖w‖`, where `w_ref` is the vector before
/// any projection (`reference` is its norm: for Lanczos `‖B vⱼ‖`, before the three-term
/// recurrence removed `αⱼvⱼ + βⱼ₋₁vⱼ₋₁`). A second pass runs when that ratio could be large —
/// the pass removed more than half of `w` (Daniel, Gragg, Kaufman & Stewart's `1/√2`) or `w`
/// is below `2⁻⁸‖w_ref‖` — and is skipped otherwise: it is a full read of the basis, the
/// largest cost of a Lanczos step on a cheap operator. `reference = ∞` always runs both.
pub(crate) fn orthogonalize(
    basis: &[f64],
    count: usize,
    n: usize,
    w: &mut [f64],
    coeffs: &mut [f64],
    reference: f64,
) {
    if count == 0 {
        return;
    }
    let mut c = vec![0.0; count];
    let parallel = count * n >= 1 << 16; // small problems: threads cost more than they save
    for _pass in 0..2 {
        let before = crate::kernels::norm2(w);
        if parallel {
            c.par_iter_mut()
                .enumerate()
                .for_each(|(i, ci)| *ci = crate::kernels::dot(&basis[i * n..(i + 1) * n], w));
            w.par_chunks_mut(4096).enumerate().for_each(|(s, ws)| {
                let off = s * 4096;
                for (i, ci) in c.iter().enumerate() {
                    let v = &basis[i * n + off..i * n + off + ws.len()];
                    crate::kernels::axpy(-ci, v, ws);
                }
            });
        } else {
            for (i, ci) in c.iter_mut().enumerate() {
                *ci = crate::kernels::dot(&basis[i * n..(i + 1) * n], w);
            }
            for (i, ci) in c.iter().enumerate() {
                crate::kernels::axpy(-ci, &basis[i * n..(i + 1) * n], w);
            }
        }
        for (acc, ci) in coeffs.iter_mut().zip(&c) {
            *acc += ci;
        }
        let after = crate::kernels::norm2(w);
        if after > before * std::f64::consts::FRAC_1_SQRT_2 && after > reference / 256.0 {
            return;
        }
    }
}
