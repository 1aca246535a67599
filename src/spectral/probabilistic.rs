//! Probabilistic upper bounds for Krylov methods started from a Gaussian random vector.
//!
//! Let `B = AᵀA` have eigenpairs `(λⱼ, xⱼ)` and let the start be `v₁ = w + g` with `w` fixed
//! and `g ~ N(0, σ²I)`. Then `γ₁ = ⟨v₁, x₁⟩` is Gaussian with variance `σ²`, whatever `w` is,
//! so `P(|γ₁| < ε) ≤ 2ε/(σ√(2π))`; we pick `ε` to make that `δ`.
//!
//! For any polynomial `p` whose roots are real and below `t`, `|p|` increases on `[t, ∞)` and
//! `‖p(B)v₁‖ ≥ |γ₁|·|p(λ₁)|`. Hence `λ₁ > t` forces `|γ₁| < ‖p(B)v₁‖/|p(t)|`, and choosing `t`
//! with `|p(t)| = ‖p(B)v₁‖/ε` gives `P(λ₁ > t) ≤ δ` (Hochstenbach 2013, "Probabilistic upper
//! bounds for the matrix two-norm"). Lanczos hands us such polynomials for free: the
//! characteristic polynomial `pᵢ` of the leading `i × i` tridiagonal `Tᵢ` has its roots at
//! Ritz values and `‖pᵢ(B)v₁‖ = ‖v₁‖·β₁⋯βᵢ`. Every prefix `i` refers to the same event
//! `|γ₁| < ε`, so taking the best `i` costs no union bound. For power iteration `p(x) = xᵏ`.

use super::tridiagonal::largest_eigenvalue;
use crate::kernels::UNIT_ROUNDOFF;

/// `ln ε` such that `P(|γ₁| < ε) ≤ δ` when `γ₁ ~ N(μ, σ²)` for any mean `μ`.
pub(crate) fn log_epsilon(delta: f64, sigma: f64) -> f64 {
    // 2ε/(σ√(2π)) = δ  ⇒  ε = δ·σ·√(π/2)
    delta.ln() + sigma.ln() + 0.5 * (std::f64::consts::PI / 2.0).ln()
}

/// The a-posteriori bound on `λ₁(B)` after `k` Lanczos steps; holds with probability
/// `≥ 1 − δ` for `ln ε` from [`log_epsilon`].
///
/// With `qⱼ = pⱼ/(β₁⋯βⱼ)` the normalised Lanczos polynomials (`qⱼ(B)v₁ = ‖v₁‖·vⱼ₊₁`, an
/// orthonormal family), the kernel polynomial `P(x) = Σⱼ qⱼ(t)·qⱼ(x)` has
/// `‖P(B)v₁‖ = ‖v₁‖·√S` with `S = Σⱼ qⱼ(t)²`, and for `t` above every Ritz value each `qⱼ`
/// is positive and increasing on `[t, ∞)`, so `P(λ₁) ≥ S` when `λ₁ ≥ t`. Hence `λ₁ ≥ t`
/// forces `|γ₁| ≤ ‖v₁‖/√S`, and the smallest `t` with `S(t) ≥ (‖v₁‖/ε)²` is the bound. Using
/// the whole sum instead of the best single `qⱼ` (Hochstenbach's choice) is never worse.
///
/// `alpha[0..k]`, `beta[0..k]`: Lanczos coefficients, `beta[i]` being the norm of the residual
/// after step `i + 1`. `max_degree` limits the polynomials used (block methods need it).
pub(crate) fn lanczos_upper(
    alpha: &[f64],
    beta: &[f64],
    log_start_norm: f64,
    log_eps: f64,
    max_degree: usize,
) -> f64 {
    let k = alpha.len().min(max_degree);
    if k == 0 {
        return f64::INFINITY;
    }
    let (alpha, beta) = (&alpha[..k], &beta[..k]);
    if let Some(i) = beta.iter().position(|&b| b == 0.0) {
        // Exact breakdown: the Krylov space of v₁ is invariant, so unless γ₁ = 0 it contains
        // x₁ and λ₁ is the top Ritz value of that prefix.
        return largest_eigenvalue(&alpha[..=i], &beta[..i]);
    }
    let theta = largest_eigenvalue(alpha, beta);
    let target = 2.0 * (log_start_norm - log_eps);
    // ln S(t) by a running log-sum-exp of 2·ln qⱼ(t), j = 0..k; false if t is not above
    // every Ritz value.
    let satisfied = |t: f64| -> bool {
        let mut log_q = 0.0f64; // ln q₀ = 0
        let mut lse = 0.0f64; // ln Σ qⱼ², starting from q₀² = 1
        let mut r = 1.0f64;
        for i in 0..k {
            let coupling = if i == 0 {
                0.0
            } else {
                beta[i - 1] * beta[i - 1] / r
            };
            r = (t - alpha[i]) - coupling;
            if r <= 0.0 {
                return false;
            }
            log_q += r.ln() - beta[i].ln(); // β = 0 (exact breakdown) gives +∞: satisfied
            let x = 2.0 * log_q;
            lse = if x > lse {
                x + (lse - x).exp().ln_1p()
            } else {
                lse + (x - lse).exp().ln_1p()
            };
            if lse >= target {
                return true;
            }
        }
        lse >= target
    };
    let base = theta.max(0.0);
    let mut step = (base * 4.0 * UNIT_ROUNDOFF).max(f64::MIN_POSITIVE);
    let mut hi = base + step;
    let mut doublings = 0;
    while !satisfied(hi) {
        step *= 2.0;
        hi = base + step;
        doublings += 1;
        if doublings > 2100 || !hi.is_finite() {
            return f64::INFINITY;
        }
    }
    let mut lo = base;
    // `hi` always satisfies the bound, so stopping early only loosens it; to 1e-10 of the
    // value (far inside any tolerance) the search takes ~35 halvings instead of ~60.
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi || hi - lo <= 1e-10 * hi {
            break;
        }
        if satisfied(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi
}

/// Power iteration's a-posteriori bound with `p(x) = xᵏ`: `λ₁ ≤ (‖Bᵏv₁‖/ε)^{1/k}`, where
/// `ln‖Bᵏv₁‖ = ln‖v₁‖ + Σ ln‖B v̂ᵢ‖` over the normalised iterates.
pub(crate) fn power_upper(log_norm_bk_v1: f64, k: usize, log_eps: f64) -> f64 {
    if k == 0 {
        return f64::INFINITY;
    }
    ((log_norm_bk_v1 - log_eps) / k as f64).exp()
}

/// Kuczyński & Woźniakowski (1992), the a-priori bound for Lanczos from a start uniform on the
/// sphere: `P(θ_k < (1−ε)λ₁) ≤ 1.648·√n·e^{−√ε(2k−1)}`, so `λ₁ ≤ θ_k/(1−ε)` with probability
/// `≥ 1−δ` for `√ε = ln(1.648√n/δ)/(2k−1)`. Kept for comparison: the a-posteriori bound above
/// is far tighter on real spectra.
pub fn kuczynski_wozniakowski_upper(theta_k: f64, k: usize, n: usize, delta: f64) -> f64 {
    if k == 0 {
        return f64::INFINITY;
    }
    let root_eps = (1.648 * (n as f64).sqrt() / delta).ln() / (2.0 * k as f64 - 1.0);
    let eps = root_eps * root_eps;
    if eps >= 1.0 {
        f64::INFINITY
    } else {
        theta_k / (1.0 - eps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_breakdown_gives_the_top_ritz_value() {
        let alpha = [3.0, 1.0];
        let beta = [0.5, 0.0];
        let t = lanczos_upper(&alpha, &beta, 0.0, log_epsilon(1e-6, 1.0), usize::MAX);
        let theta = largest_eigenvalue(&alpha, &beta[..1]);
        assert!(t >= theta && t <= theta * (1.0 + 1e-12), "{t} vs {theta}");
    }

    #[test]
    fn a_posteriori_bound_is_monotone_in_delta() {
        let alpha = [4.0, 2.0, 1.0];
        let beta = [1.0, 0.5, 0.1];
        let loose = lanczos_upper(&alpha, &beta, 0.0, log_epsilon(1e-12, 1.0), usize::MAX);
        let tight = lanczos_upper(&alpha, &beta, 0.0, log_epsilon(1e-2, 1.0), usize::MAX);
        assert!(loose > tight && tight > largest_eigenvalue(&alpha, &beta[..2]));
    }
}
