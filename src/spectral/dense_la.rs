//! Thin wrappers over faer's dense decompositions, always run sequentially so that results
//! do not depend on the thread count. The matrices here are small: projected
//! Krylov matrices and the explicit matrices of small layers.

use crate::error::{Error, Result};
use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::evd::{self, ComputeEigenvectors};
use faer::linalg::svd::{self, ComputeSvdVectors};
use faer::{Mat, MatRef, Par};

/// Largest singular value of `a` and its right singular vector.
pub(crate) fn top_singular(a: MatRef<'_, f64>) -> Result<(f64, Vec<f64>)> {
    // The SVD is run on the matrix scaled by a power of two that brings its largest entry
    // near 1 (exact, up to entries far below the rounding margin): faer's SVD returned σ = 0
    // for a conv layer with weights near f32::MAX (entries 3e38, found by fuzzing).
    let (m, n) = a.shape();
    let largest = (0..n)
        .flat_map(|j| (0..m).map(move |i| (i, j)))
        .fold(0.0f64, |mx, (i, j)| mx.max(a[(i, j)].abs()));
    if !largest.is_finite() {
        return Err(Error::Numerical(format!(
            "dense SVD of a {m}×{n} matrix with a non-finite entry"
        )));
    }
    if largest == 0.0 {
        return Ok((0.0, vec![0.0; n]));
    }
    let exponent = largest.log2().round() as i32;
    let (sigma, v) = if exponent.abs() > 64 {
        let scale = 2f64.powi(-exponent);
        let scaled = Mat::from_fn(m, n, |i, j| a[(i, j)] * scale);
        let (sigma, v) = top_singular_unscaled(scaled.as_ref())?;
        (sigma / scale, v)
    } else {
        top_singular_unscaled(a)?
    };
    // ‖A‖_F/√min(m,n) ≤ σ₁ ≤ ‖A‖_F: a σ₁ outside (NaN, or 0 for a non-zero matrix, as faer
    // returned for entries near 1e38) is an error, never a bound.
    let frobenius = (0..n)
        .flat_map(|j| (0..m).map(move |i| (i, j)))
        .map(|(i, j)| (a[(i, j)] / largest).powi(2))
        .sum::<f64>()
        .sqrt()
        * largest;
    let floor = frobenius / (m.min(n) as f64).sqrt() * (1.0 - 1e-6);
    if !sigma.is_finite() || sigma < floor || sigma > frobenius * (1.0 + 1e-6) {
        return Err(Error::Numerical(format!(
            "dense SVD of a {m}×{n} matrix returned σ₁ = {sigma}, outside [{floor:e}, {frobenius:e}]"
        )));
    }
    Ok((sigma, v))
}

fn top_singular_unscaled(a: MatRef<'_, f64>) -> Result<(f64, Vec<f64>)> {
    let (m, n) = a.shape();
    let k = m.min(n);
    let mut s = faer::diag::Diag::<f64>::zeros(k);
    let mut v = Mat::<f64>::zeros(n, k);
    let par = Par::Seq;
    let mut mem = MemBuffer::new(svd::svd_scratch::<f64>(
        m,
        n,
        ComputeSvdVectors::No,
        ComputeSvdVectors::Thin,
        par,
        Default::default(),
    ));
    svd::svd(
        a,
        s.as_mut(),
        None,
        Some(v.as_mut()),
        par,
        MemStack::new(&mut mem),
        Default::default(),
    )
    .map_err(|e| Error::Numerical(format!("dense SVD of a {m}×{n} matrix: {e:?}")))?;
    let sigma = s.column_vector()[0];
    let vec = (0..n).map(|i| v[(i, 0)]).collect();
    Ok((sigma, vec))
}

/// Eigen-decomposition of a symmetric `k × k` matrix given column-major in `h`: eigenvalues
/// in nondecreasing order and the eigenvectors, column-major `k × k`.
pub(crate) fn symmetric_eigen(h: &[f64], k: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    let a = MatRef::from_column_major_slice(h, k, k);
    let mut s = faer::diag::Diag::<f64>::zeros(k);
    let mut u = Mat::<f64>::zeros(k, k);
    let par = Par::Seq;
    let mut mem = MemBuffer::new(evd::self_adjoint_evd_scratch::<f64>(
        k,
        ComputeEigenvectors::Yes,
        par,
        Default::default(),
    ));
    evd::self_adjoint_evd(
        a,
        s.as_mut(),
        Some(u.as_mut()),
        par,
        MemStack::new(&mut mem),
        Default::default(),
    )
    .map_err(|e| Error::Numerical(format!("symmetric eigensolver on a {k}×{k} matrix: {e:?}")))?;
    let values: Vec<f64> = s.column_vector().iter().copied().collect();
    let vectors = (0..k * k).map(|i| u[(i % k, i / k)]).collect();
    Ok((values, vectors))
}

/// Eigenvalues (nondecreasing) and the eigenvector of the largest one.
pub(crate) fn symmetric_top_eigen(h: &[f64], k: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    let (values, vectors) = symmetric_eigen(h, k)?;
    Ok((values, vectors[(k - 1) * k..].to_vec()))
}
