//! Symmetric tridiagonal matrices (the Lanczos matrices `T`): eigenvalue counts by Sturm
//! sequences and the largest eigenvalue by bisection. Used by every Krylov method here and by
//! the per-frequency ranking of circular convs.

/// Number of eigenvalues of the symmetric tridiagonal matrix (diagonal `alpha`, off-diagonal
/// `beta`, `beta.len() ≥ alpha.len() − 1`) strictly greater than `t` (Sturm sequence: the
/// negative pivots of the LDLᵀ factorisation of `tI − T`).
pub(crate) fn count_above(alpha: &[f64], beta: &[f64], t: f64) -> usize {
    let mut count = 0;
    let mut r = 1.0f64;
    for i in 0..alpha.len() {
        let coupling = if i == 0 {
            0.0
        } else {
            beta[i - 1] * beta[i - 1] / r
        };
        r = (t - alpha[i]) - coupling;
        if r == 0.0 {
            r = -f64::MIN_POSITIVE.sqrt();
        }
        if r < 0.0 {
            count += 1;
        }
    }
    count
}

/// A bracket `[lo, hi]` of the largest eigenvalue, narrowed by bisection until it cannot
/// shrink in floating point; it starts from the largest diagonal entry and Gershgorin's
/// upper end.
pub(crate) fn largest_eigenvalue_bracket(alpha: &[f64], beta: &[f64]) -> (f64, f64) {
    let k = alpha.len();
    if k == 1 {
        return (alpha[0], alpha[0]);
    }
    let off = |i: usize| if i < beta.len() { beta[i].abs() } else { 0.0 };
    let mut lo = alpha.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut hi = (0..k)
        .map(|i| alpha[i] + off(i) + if i > 0 { off(i - 1) } else { 0.0 })
        .fold(f64::NEG_INFINITY, f64::max);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if count_above(alpha, beta, mid) >= 1 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    (lo, hi)
}

/// The largest eigenvalue, as the upper end of the final bracket (never below the true
/// value by more than rounding).
pub(crate) fn largest_eigenvalue(alpha: &[f64], beta: &[f64]) -> f64 {
    largest_eigenvalue_bracket(alpha, beta).1
}

/// The dense `k × k` symmetric tridiagonal matrix with diagonal `alpha` (length `k`) and
/// off-diagonal `beta` (its first `k − 1` values), column-major.
pub(crate) fn dense(alpha: &[f64], beta: &[f64]) -> Vec<f64> {
    let k = alpha.len();
    let mut t = vec![0.0; k * k];
    for i in 0..k {
        t[i * k + i] = alpha[i];
        if i + 1 < k {
            t[i * k + i + 1] = beta[i];
            t[(i + 1) * k + i] = beta[i];
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sturm_count_and_bisection_match_known_spectrum() {
        // T = tridiag(1, 2, 1) of size 5 has eigenvalues 2 + 2cos(jπ/6), j = 1..5.
        let alpha = [2.0; 5];
        let beta = [1.0; 5];
        let top = 2.0 + 2.0 * (std::f64::consts::PI / 6.0).cos();
        let got = largest_eigenvalue(&alpha, &beta[..4]);
        assert!((got - top).abs() < 1e-13, "{got} vs {top}");
        let (lo, hi) = largest_eigenvalue_bracket(&alpha, &beta[..4]);
        assert!(lo <= top && top <= hi && hi - lo < 1e-13);
        assert_eq!(count_above(&alpha, &beta, 2.0 - 1e-9), 3);
        assert_eq!(count_above(&alpha, &beta, top + 1e-9), 0);
    }

    #[test]
    fn tridiagonal_bisection_matches_the_dense_eigensolver() {
        let alpha = [2.0, -1.0, 0.5, 3.0, 1.0];
        let beta = [0.7, -1.2, 0.3, 2.0];
        let m = alpha.len();
        let t = dense(&alpha, &beta);
        let (values, _) = crate::spectral::dense_la::symmetric_eigen(&t, m).unwrap();
        let largest = largest_eigenvalue_bracket(&alpha, &beta).0;
        assert!((largest - values[m - 1]).abs() <= 1e-12 * values[m - 1].abs());
    }
}
