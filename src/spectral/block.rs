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
use super::probabilistic::{lanczos_upper, largest_eigenvalue, log_epsilon};
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
) -> Result<(Bound, Vec<f64>)> {
    let budget = Budget::new(opts);
    let (n, m) = (op.input_len(), op.output_len());
    let b = opts.block_size.min(n);
    let mut best: Vec<f64> = Vec::new();
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
        let mut small = SmallLanczos::new(&c_start, kmax);
        let mut rr_theta = 0.0f64;
        let mut next_rr = 1usize;

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
            // The Krylov polynomials of x₁, one step per block step (degree ≤ J−1 after J
            // block steps): a cheap Ritz estimate every step, and the probabilistic bound.
            if blocks_done >= 2 {
                small.step(&h, kmax, k_before);
            }
            let small_theta = small.theta();
            if first_cycle && blocks_done >= 2 {
                let t = lanczos_upper(&small.alpha, &small.beta, log_x1, log_eps, blocks_done - 1);
                upper.offer(sigma_upper_from_lambda(op, t, blocks_done), certificate);
            }
            let exhausted = k == k_before; // no new direction: invariant subspace
            let cap = budget.exhausted(iterations);
            let full = !room || k + (k - k_before) > kmax;
            let cheap_estimate = small_theta.max(rr_theta).max(0.0).sqrt();
            let scheduled = blocks_done >= next_rr;
            let looks_done = meets_tolerance(cheap_estimate, upper.value, opts.rtol)
                && blocks_done >= next_check;
            if !(scheduled || looks_done || exhausted || cap.is_some() || full) {
                block_start = k_before;
                continue;
            }
            // Rayleigh–Ritz on the columns whose images are known: [0, k_before). Dense and
            // O(k³), so it runs on a geometric schedule and when the cheap estimate says done.
            next_rr = blocks_done + 1 + blocks_done / 4;
            let kk = k_before;
            let mut hs = vec![0.0; kk * kk];
            for q in 0..kk {
                for p in 0..kk {
                    hs[q * kk + p] = 0.5 * (h[q * kmax + p] + h[p * kmax + q]);
                }
            }
            let (values, y) = symmetric_top_eigen(&hs, kk)?;
            let theta = values[kk - 1];
            rr_theta = rr_theta.max(theta);
            norm_estimate = norm_estimate.max(theta);
            if exhausted && first_cycle {
                // The space is invariant and contains x₁, so it holds every eigenvector that
                // x₁ touches; unless γ₁ = 0 (an event inside the δ already spent), λ₁ = θ.
                upper.offer(sigma_upper_from_lambda(op, theta, blocks_done), certificate);
            }
            let estimate = theta.max(0.0).sqrt();
            let looks_done =
                meets_tolerance(estimate, upper.value, opts.rtol) && blocks_done >= next_check;
            if looks_done || exhausted || cap.is_some() || full {
                let mut ritz = vec![0.0; n];
                for (p, yp) in y.iter().enumerate() {
                    axpy(*yp, &basis[p * n..(p + 1) * n], &mut ritz);
                }
                let ratio = certified_ratio(op, &ritz, &mut certify_tmp);
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

/// Single-vector Lanczos on the projected matrix `H` from `c = Qᵀx₁`, advanced one step per
/// block step. Step `i` only reads columns of `H` for blocks `≤ i`, which are final once
/// computed, so the coefficients equal those of Lanczos on `(B, x₁)` itself.
struct SmallLanczos {
    vectors: Vec<Vec<f64>>,
    alpha: Vec<f64>,
    beta: Vec<f64>,
    finished: bool,
}

impl SmallLanczos {
    fn new(c: &[f64], kmax: usize) -> Self {
        let cn = norm2(c);
        let mut v = vec![0.0; kmax];
        for (vi, ci) in v.iter_mut().zip(c) {
            *vi = ci / cn;
        }
        SmallLanczos {
            vectors: vec![v],
            alpha: Vec::new(),
            beta: Vec::new(),
            finished: cn == 0.0 || !cn.is_finite(),
        }
    }

    /// One step using the known columns `[0, known)` of `h` (column-major, stride `kmax`).
    fn step(&mut self, h: &[f64], kmax: usize, known: usize) {
        if self.finished {
            return;
        }
        let v = self.vectors.last().expect("at least the start vector");
        let mut w = vec![0.0; kmax];
        for (q, vq) in v.iter().enumerate().take(known) {
            if *vq != 0.0 {
                axpy(*vq, &h[q * kmax..(q + 1) * kmax], &mut w);
            }
        }
        let j = self.alpha.len();
        let mut a = 0.0;
        for _ in 0..2 {
            for (i, u) in self.vectors.iter().enumerate() {
                let ci = dot(u, &w);
                axpy(-ci, u, &mut w);
                if i == j {
                    a += ci;
                }
            }
        }
        let bn = norm2(&w);
        self.alpha.push(a);
        self.beta.push(bn);
        if bn == 0.0 {
            self.finished = true;
            return;
        }
        scale(1.0 / bn, &mut w);
        self.vectors.push(w);
    }

    /// Largest Ritz value so far (0 before the first step).
    fn theta(&self) -> f64 {
        if self.alpha.is_empty() {
            0.0
        } else {
            largest_eigenvalue(&self.alpha, &self.beta[..self.alpha.len() - 1])
        }
    }
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
