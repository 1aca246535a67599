//! Exact σ₁ by a dense SVD, for small layers and as the oracle of the tests.
//!
//! The computed `σ̂₁` is the exact σ₁ of some `A + E` with `‖E‖₂ ≲ c·(m+n)·u·‖A‖_F` (backward
//! stability of Householder bidiagonalisation), so by Weyl `σ₁ ≤ σ̂₁ + 8(m+n)u‖A‖_F`, which is
//! the upper end we report. The lower end is the top right singular vector pushed through the
//! operator and certified like any other ([`super::certified_ratio`]).

use super::dense_la::top_singular;
use super::krylov::Tracker;
use super::Hints;
use crate::bound::{Bound, Certificate, Method, Options, Stop};
use crate::error::{Error, Result};
use crate::kernels::{norm2, UNIT_ROUNDOFF};
use crate::operator::{explicit_matrix, LinearOperator};
use faer::MatRef;

fn check_memory(m: usize, n: usize, opts: &Options) -> Result<()> {
    let needed = (m as u128) * (n as u128) * 8 * 3;
    if needed > opts.memory_limit as u128 {
        return Err(Error::TooLarge {
            what: format!("exact SVD of a {m}×{n} matrix"),
            needed,
            limit: opts.memory_limit as u128,
        });
    }
    Ok(())
}

/// Exact σ₁ of a dense layer from its own row-major `f32` weights (no rounding in forming
/// the matrix); `op` applies the same matrix and `frobenius` is its Frobenius norm.
pub(crate) fn exact_from_rows(
    op: &dyn LinearOperator,
    w: &[f32],
    frobenius: f64,
    opts: &Options,
) -> Result<(Bound, Vec<f64>)> {
    let (m, n) = (op.output_len(), op.input_len());
    check_memory(m, n, opts)?;
    let run = Tracker::new(Method::Exact, opts, &Hints::default());
    let a: Vec<f64> = w.iter().map(|&v| v as f64).collect();
    // Row-major m×n data read column-major is Aᵀ (n×m); its transpose view is A itself.
    let at = MatRef::from_column_major_slice(&a, n, m);
    let (sigma, v) = top_singular(at.transpose())?;
    let margin = 8.0 * (m + n) as f64 * UNIT_ROUNDOFF * frobenius;
    conclude(op, sigma, margin, &v, run)
}

/// Exact σ₁ of any operator from its explicit matrix, formed column by column.
pub(crate) fn exact_operator(op: &dyn LinearOperator, opts: &Options) -> Result<(Bound, Vec<f64>)> {
    let (m, n) = (op.output_len(), op.input_len());
    check_memory(m, n, opts)?;
    let run = Tracker::new(Method::Exact, opts, &Hints::default());
    let a = explicit_matrix(op, opts.memory_limit)?;
    let (sigma, v) = top_singular(MatRef::from_column_major_slice(&a, m, n))?;
    // Each formed column carries the operator's rounding error e, so ‖Â − A‖₂ ≤ e·√n.
    let formed = op.forward_error() * (n as f64).sqrt();
    let margin = 8.0 * (m + n) as f64 * UNIT_ROUNDOFF * norm2(&a) + formed;
    conclude(op, sigma, margin, &v, run)
}

fn conclude(
    op: &dyn LinearOperator,
    sigma: f64,
    margin: f64,
    v: &[f64],
    mut run: Tracker,
) -> Result<(Bound, Vec<f64>)> {
    let mut tmp = vec![0.0; op.output_len()];
    run.offer_upper(sigma + margin, Certificate::Exact);
    run.certify(op, v, &mut tmp, None);
    let (mut bound, _) = run.finish(Stop::Direct);
    bound.matvecs = 1;
    Ok((bound, v.to_vec()))
}
