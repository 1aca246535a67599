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
use super::krylov::{End, Tracker};
use super::probabilistic::{lanczos_upper, log_epsilon};
use super::tridiagonal::largest_eigenvalue;
use super::{
    basis_capacity, gaussian, orthogonalize, rng_for, sigma_upper_from_lambda, start_vector, Hints,
};
use crate::bound::{Bound, Certificate, Method, Options};
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
    let (n, m) = (op.input_len(), op.output_len());
    let b = opts.block_size.min(n);
    let max_blocks = basis_capacity(n, b, opts)?.min(MAX_PROJECTED / b).max(2);
    let mut rng = rng_for(opts.seed, 0);
    let (first, sigma) = start_vector(n, &mut rng, hints);
    // Start block: the (warm + random) vector first, Gaussian columns after it.
    let mut start = first;
    for _ in 1..b {
        start.extend(gaussian(n, &mut rng));
    }
    let mut state = State {
        run: Tracker::new(Method::BlockLanczos, opts, hints),
        opts,
        b,
        kmax: max_blocks * b,
        log_eps: log_epsilon(opts.delta, sigma),
        first_cycle: sigma > 0.0,
        tmp: vec![0.0; m.saturating_mul(b)],
        certify_tmp: vec![0.0; m],
    };
    let mut x1 = start[..n].to_vec();
    loop {
        match state.cycle(op, &start, &x1)? {
            End::Stop(stop) => return Ok(state.run.finish(stop)),
            End::Restart(block) => {
                // Restart from the top Ritz vectors of this cycle.
                start = block;
                x1 = start[..n].to_vec();
                state.first_cycle = false;
            }
        }
    }
}

/// Everything that outlives one cycle.
struct State<'o> {
    run: Tracker,
    opts: &'o Options,
    /// Block size.
    b: usize,
    /// Basis columns per cycle.
    kmax: usize,
    log_eps: f64,
    first_cycle: bool,
    tmp: Vec<f64>,
    certify_tmp: Vec<f64>,
}

/// One cycle's Krylov basis and its projected matrix.
struct Space {
    /// Orthonormal columns, one after another.
    basis: Vec<f64>,
    /// `h[q·kmax + p] = q_pᵀ B q_q`, column-major.
    h: Vec<f64>,
    /// Columns so far.
    k: usize,
    /// Estimate of `‖B‖` for deflation.
    norm_estimate: f64,
}

impl State<'_> {
    /// Block steps from `start` until the run stops or must restart.
    fn cycle(&mut self, op: &dyn LinearOperator, start: &[f64], x1: &[f64]) -> Result<End> {
        let n = op.input_len();
        let kmax = self.kmax;
        let certificate = Certificate::Probabilistic {
            delta: self.opts.delta,
        };
        let mut space = self.start_space(start, n);
        let c_start: Vec<f64> = (0..space.k)
            .map(|p| dot(&space.basis[p * n..(p + 1) * n], x1))
            .collect();
        let log_x1 = norm2(x1).ln();
        let mut small = SmallLanczos::new(&c_start, kmax);
        let (mut block_start, mut blocks_done, mut next_check) = (0usize, 0usize, 0usize);
        let (mut rr_theta, mut next_rr) = (0.0f64, 1usize);
        loop {
            let k_before = space.k;
            let room = self.block_step(op, &mut space, block_start);
            blocks_done += 1;
            // The Krylov polynomials of x₁, one step per block step (degree ≤ J−1 after J
            // block steps): a cheap Ritz estimate every step, and the probabilistic bound.
            if blocks_done >= 2 {
                small.step(&space.h, kmax, k_before);
                if self.first_cycle {
                    let t = lanczos_upper(
                        &small.alpha,
                        &small.beta,
                        log_x1,
                        self.log_eps,
                        blocks_done - 1,
                    );
                    self.run
                        .offer_upper(sigma_upper_from_lambda(op, t, blocks_done), certificate);
                }
            }
            let exhausted = space.k == k_before; // no new direction: invariant subspace
            let cap = self.run.cap();
            let full = !room || space.k + (space.k - k_before) > kmax;
            let cheap_estimate = small.theta().max(rr_theta).max(0.0).sqrt();
            let looks_done = self.run.looks_done(cheap_estimate) && blocks_done >= next_check;
            if !(blocks_done >= next_rr || looks_done || exhausted || cap.is_some() || full) {
                block_start = k_before;
                continue;
            }
            // Rayleigh–Ritz on the columns whose images are known: [0, k_before). Dense and
            // O(k³), so it runs on a geometric schedule and when the cheap estimate says done.
            next_rr = blocks_done + 1 + blocks_done / 4;
            let kk = k_before;
            let hs = symmetric_part(&space.h, kmax, kk);
            let (values, y) = symmetric_top_eigen(&hs, kk)?;
            let theta = values[kk - 1];
            rr_theta = rr_theta.max(theta);
            space.norm_estimate = space.norm_estimate.max(theta);
            if exhausted && self.first_cycle {
                // The space is invariant and contains x₁, so it holds every eigenvector that
                // x₁ touches; unless γ₁ = 0 (an event inside the δ already spent), λ₁ = θ.
                self.run
                    .offer_upper(sigma_upper_from_lambda(op, theta, blocks_done), certificate);
            }
            let looks_done =
                self.run.looks_done(theta.max(0.0).sqrt()) && blocks_done >= next_check;
            if looks_done || exhausted || cap.is_some() || full {
                let mut ritz = vec![0.0; n];
                for (p, yp) in y.iter().enumerate() {
                    axpy(*yp, &space.basis[p * n..(p + 1) * n], &mut ritz);
                }
                if let Some(stop) = self.run.certify(op, &ritz, &mut self.certify_tmp, cap) {
                    return Ok(End::Stop(stop));
                }
                if exhausted || full {
                    return top_ritz_block(&hs, kk, &space.basis, n, self.b).map(End::Restart);
                }
                next_check = blocks_done + 1 + blocks_done / 4;
            }
            block_start = k_before;
        }
    }

    /// The orthonormalised start block (dependent columns dropped).
    fn start_space(&self, start: &[f64], n: usize) -> Space {
        let kmax = self.kmax;
        let mut space = Space {
            basis: Vec::with_capacity(kmax * n),
            h: vec![0.0; kmax * kmax],
            k: 0,
            norm_estimate: 0.0,
        };
        let mut coef = vec![0.0; kmax];
        for c in 0..self.b {
            let mut w = start[c * n..(c + 1) * n].to_vec();
            coef.fill(0.0);
            orthogonalize(&space.basis, space.k, n, &mut w, &mut coef, f64::INFINITY);
            let wn = norm2(&w);
            if wn > 1e-10 * norm2(&start[c * n..(c + 1) * n]) && wn > 0.0 {
                scale(1.0 / wn, &mut w);
                space.basis.extend_from_slice(&w);
                space.k += 1;
            }
        }
        space
    }

    /// Applies `B` to the columns `[block_start, k)` in one pass, orthogonalises the images
    /// against the basis (their coefficients fill `H`) and appends the new directions that
    /// are not rounding noise. Returns whether the basis had room for them.
    fn block_step(
        &mut self,
        op: &dyn LinearOperator,
        space: &mut Space,
        block_start: usize,
    ) -> bool {
        let (n, m, kmax) = (op.input_len(), op.output_len(), self.kmax);
        let k = space.k;
        let bj = k - block_start;
        let qblock = space.basis[block_start * n..k * n].to_vec();
        let mut wblock = vec![0.0; bj * n];
        op.gram_block(&qblock, &mut wblock, &mut self.tmp[..bj * m], bj);
        self.run.matvecs += 2 * bj as u64;
        self.run.iterations += 1;
        let room = k + bj <= kmax;
        let mut coef = vec![0.0; kmax];
        for c in 0..bj {
            let q = block_start + c;
            let w = &mut wblock[c * n..(c + 1) * n];
            coef.fill(0.0);
            orthogonalize(&space.basis, space.k, n, w, &mut coef, f64::INFINITY);
            let wn = norm2(w);
            for (p, cp) in coef.iter().enumerate().take(space.k) {
                space.h[q * kmax + p] += cp;
            }
            // Deflate directions that are rounding noise relative to ‖B‖ (≈ θ so far).
            space.norm_estimate = space.norm_estimate.max(space.h[q * kmax + q].abs()).max(wn);
            let noise = 64.0 * UNIT_ROUNDOFF * space.norm_estimate * (space.k + 1) as f64;
            if room && wn > noise.max(f64::MIN_POSITIVE) {
                space.h[q * kmax + space.k] = wn;
                scale(1.0 / wn, w);
                space.basis.extend_from_slice(w);
                space.k += 1;
            }
        }
        room
    }
}

/// The symmetric part of the leading `kk × kk` block of `h` (column-major, stride `kmax`).
fn symmetric_part(h: &[f64], kmax: usize, kk: usize) -> Vec<f64> {
    let mut hs = vec![0.0; kk * kk];
    for q in 0..kk {
        for p in 0..kk {
            hs[q * kk + p] = 0.5 * (h[q * kmax + p] + h[p * kmax + q]);
        }
    }
    hs
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
