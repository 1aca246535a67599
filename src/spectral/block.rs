//! Block Lanczos (randomised block Krylov) on `B = AᵀA`.
//!
//! One pass of the operator serves a whole block (`gram_block`), which is what makes block
//! methods pay on operators that stream large weights (a conv kernel spectrum), and a block
//! resolves clusters of nearly equal top singular values that single-vector methods crawl
//! through. The Rayleigh–Ritz matrix `H = QᵀBQ` is accumulated from the orthogonalisation
//! coefficients; columns that become dependent are deflated.
//!
//! Probabilistic upper bound: the Krylov space of the first start column `x₁` lies inside the
//! block space, and for degree `≤ J−1` (after `J` block steps) `p(B)x₁ = Q·p(H)·c` with
//! `c = Qᵀx₁`. Single-vector Lanczos on the small pair `(H, c)` therefore reproduces the
//! Lanczos polynomials of `x₁` and the bound of [`super::probabilistic`] applies unchanged.

use super::dense_la::{symmetric_eigen, symmetric_top_eigen};
use super::probabilistic::{lanczos_upper, log_epsilon};
use super::{
    basis_capacity, certified_ratio, finish, gaussian, orthogonalize, rng_for,
    sigma_upper_from_lambda, start_vector, BestUpper, Budget, Hints,
};
use crate::bound::{meets_tolerance, Bound, Certificate, Method, Options, Stop};
use crate::error::Result;
use crate::kernels::{axpy, dot, norm2, scale, UNIT_ROUNDOFF};
use crate::operator::LinearOperator;

/// Largest Rayleigh–Ritz problem we allow (columns of the projected matrix).
const MAX_PROJECTED: usize = 2048;

pub(crate) fn block_lanczos(
    op: &dyn LinearOperator,
    opts: &Options,
    hints: &Hints<'_>,
) -> Result<Bound> {
    let budget = Budget::new(opts);
    let (n, m) = (op.input_len(), op.output_len());
    let b = opts.block_size.min(n);
    let max_blocks = basis_capacity(n, b, opts)?.min(MAX_PROJECTED / b).max(2);
    let kmax = max_blocks * b;
    let mut rng = rng_for(opts.seed, 0);
    let (first, sigma) = start_vector(n, &mut rng, hints);
    let log_eps = log_epsilon(opts.delta, sigma);
    let certificate = Certificate::Probabilistic { delta: opts.delta };

    let mut upper = BestUpper::from_hints(hints);
    let mut lower = 0.0f64;
    let mut iterations = 0u32;
    let mut matvecs = 0u64;
    let mut tmp = vec![0.0; m.saturating_mul(b)];
    let mut certify_tmp = vec![0.0; m];

    // Start block: the (warm + random) vector first, Gaussian columns after it.
    let mut start = first;
    for _ in 1..b {
        start.extend(gaussian(n, &mut rng));
    }
    let mut first_cycle = sigma > 0.0;
    let mut x1 = start[..n].to_vec();

    loop {
        let mut basis: Vec<f64> = Vec::with_capacity(kmax * n);
        let mut h = vec![0.0; kmax * kmax]; // column-major, h[q*kmax + p] = q_pᵀ B q_q
        let mut coef = vec![0.0; kmax];
        let mut k = 0usize; // basis columns so far
        for c in 0..b {
            let mut w = start[c * n..(c + 1) * n].to_vec();
            coef.fill(0.0);
            orthogonalize(&basis, k, n, &mut w, &mut coef);
            let wn = norm2(&w);
            if wn > 1e-10 * norm2(&start[c * n..(c + 1) * n]) && wn > 0.0 {
                scale(1.0 / wn, &mut w);
                basis.extend_from_slice(&w);
                k += 1;
            }
        }
        let c_start: Vec<f64> = (0..k)
            .map(|p| dot(&basis[p * n..(p + 1) * n], &x1))
            .collect();
        let log_x1 = norm2(&x1).ln();
        let mut block_start = 0usize;
        let mut blocks_done = 0usize;
        let mut next_check = 0usize;
        let mut wblock = vec![0.0; b * n];
        let mut norm_estimate = 0.0f64;

        loop {
            let bj = k - block_start;
            let qblock = basis[block_start * n..k * n].to_vec();
            op.gram_block(&qblock, &mut wblock[..bj * n], &mut tmp[..bj * m], bj);
            matvecs += 2 * bj as u64;
            iterations += 1;
            blocks_done += 1;
            let k_before = k;
            let room = k + bj <= kmax;
            for c in 0..bj {
                let q = block_start + c;
                let w = &mut wblock[c * n..(c + 1) * n];
                coef.fill(0.0);
                orthogonalize(&basis, k, n, w, &mut coef);
                let wn = norm2(w);
                for p in 0..k {
                    h[q * kmax + p] += coef[p];
                }
                // Deflate directions that are rounding noise relative to ‖B‖ (≈ θ so far).
                norm_estimate = norm_estimate.max(h[q * kmax + q].abs()).max(wn);
                let noise = 64.0 * UNIT_ROUNDOFF * norm_estimate * (k + 1) as f64;
                if room && wn > noise.max(f64::MIN_POSITIVE) {
                    h[q * kmax + k] = wn;
                    scale(1.0 / wn, w);
                    basis.extend_from_slice(w);
                    k += 1;
                }
            }
            // Rayleigh–Ritz on the columns whose images are known: [0, k_before).
            let kk = k_before;
            let mut hs = vec![0.0; kk * kk];
            for q in 0..kk {
                for p in 0..kk {
                    hs[q * kk + p] = 0.5 * (h[q * kmax + p] + h[p * kmax + q]);
                }
            }
            let (values, y) = symmetric_top_eigen(&hs, kk)?;
            let theta = values[kk - 1];
            norm_estimate = norm_estimate.max(theta);
            if first_cycle && blocks_done >= 2 {
                let (alpha, beta) = small_lanczos(&hs, kk, &c_start, blocks_done - 1);
                let t = lanczos_upper(&alpha, &beta, log_x1, log_eps, blocks_done - 1);
                upper.offer(sigma_upper_from_lambda(op, t, blocks_done), certificate);
            }
            let estimate = theta.max(0.0).sqrt();
            let exhausted = k == k_before; // no new direction: invariant subspace
            if exhausted && first_cycle {
                // The space is invariant and contains x₁, so it holds every eigenvector that
                // x₁ touches; unless γ₁ = 0 (an event inside the δ already spent), λ₁ = θ.
                upper.offer(sigma_upper_from_lambda(op, theta, blocks_done), certificate);
            }
            let cap = budget.exhausted(iterations);
            let full = !room || k + (k - k_before) > kmax;
            let looks_done =
                meets_tolerance(estimate, upper.value, opts.rtol) && blocks_done >= next_check;
            if looks_done || exhausted || cap.is_some() || full {
                let mut ritz = vec![0.0; n];
                for (p, yp) in y.iter().enumerate() {
                    axpy(*yp, &basis[p * n..(p + 1) * n], &mut ritz);
                }
                lower = lower.max(certified_ratio(op, &ritz, &mut certify_tmp));
                matvecs += 1;
                if meets_tolerance(lower, upper.value, opts.rtol) {
                    return Ok(done(
                        lower,
                        upper,
                        iterations,
                        matvecs,
                        Stop::Converged,
                        &budget,
                    ));
                }
                if let Some(stop) = cap {
                    return Ok(done(lower, upper, iterations, matvecs, stop, &budget));
                }
                if exhausted || full {
                    // Restart from the top Ritz vectors of this cycle.
                    start = top_ritz_block(&hs, kk, &basis, n, b)?;
                    x1 = start[..n].to_vec();
                    first_cycle = false;
                    break;
                }
                next_check = blocks_done + 1 + blocks_done / 4;
            }
            block_start = k_before;
        }
    }
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
        Method::BlockLanczos,
        iterations,
        matvecs,
        stop,
        budget,
    )
}

/// Single-vector Lanczos on a small symmetric matrix `h` (column-major `k × k`) from `c`,
/// for at most `steps` steps, with full reorthogonalisation. Returns `(α, β)`.
fn small_lanczos(h: &[f64], k: usize, c: &[f64], steps: usize) -> (Vec<f64>, Vec<f64>) {
    let mut alpha = Vec::new();
    let mut beta = Vec::new();
    let cn = norm2(c);
    if cn == 0.0 {
        return (alpha, beta);
    }
    let mut basis: Vec<Vec<f64>> = vec![c.iter().map(|v| v / cn).collect()];
    for j in 0..steps.min(k) {
        let v = &basis[j];
        let mut w = vec![0.0; k];
        for (q, vq) in v.iter().enumerate() {
            axpy(*vq, &h[q * k..(q + 1) * k], &mut w);
        }
        let mut a = 0.0;
        for _ in 0..2 {
            for (i, u) in basis.iter().enumerate() {
                let ci = dot(u, &w);
                axpy(-ci, u, &mut w);
                if i == j {
                    a += ci;
                }
            }
        }
        let bn = norm2(&w);
        alpha.push(a);
        beta.push(bn);
        if bn == 0.0 {
            break;
        }
        basis.push(w.iter().map(|x| x / bn).collect());
    }
    (alpha, beta)
}

/// The `b` Ritz vectors of the largest Ritz values, stored one after another.
fn top_ritz_block(hs: &[f64], kk: usize, basis: &[f64], n: usize, b: usize) -> Result<Vec<f64>> {
    let (_, u) = symmetric_eigen(hs, kk)?;
    let take = b.min(kk);
    let mut out = vec![0.0; b * n];
    for r in 0..take {
        let col = kk - 1 - r;
        for p in 0..kk {
            axpy(
                u[col * kk + p],
                &basis[p * n..(p + 1) * n],
                &mut out[r * n..(r + 1) * n],
            );
        }
    }
    Ok(out)
}
