//! The window bound: a deterministic upper bound for zero-padded convs on small images,
//! tighter than the circular embedding.
//!
//! The zero-padded layer is `P·C·E` (embed the `h × w` image in the `N_h × N_w` grid, apply the
//! circular conv, crop). For any input `x`, by Parseval on the grid,
//! `‖P C E x‖² ≤ ‖C E x‖² = Σ_f ‖M(f) x̂(f)‖² ≤ Σ_f s(f)·‖x̂(f)‖²` with `s(f) ≥ σ₁(M(f))²`.
//! The last form splits over input channels: `Σ_c x_cᵀ T x_c`, where `T` is the `hw × hw`
//! Toeplitz-block-Toeplitz matrix `T[(a,b),(a',b')] = r(a − a', b − b')` of the autocorrelation
//! `r = IDFT(s)`. Hence `‖P C E‖² ≤ λ_max(T)`. The circular bound is `max_f s(f)`; `λ_max(T)`
//! is smaller because an image-supported `x` cannot put all its energy on the maximising
//! frequency (a plane wave on `h` pixels has a spectral line of width ~`N/h`). On a random
//! 64-channel 3×3 layer it cuts the excess over the true norm about tenfold at 28×28.
//!
//! Valid for any stride (subsampling only drops rows), dilation and groups (`s` is the maximum
//! over groups), and for any pads (cropped outputs only lower the norm).

use super::spectrum::KernelSymbol;
use crate::error::{Error, Result};
use crate::kernels::{gamma, UNIT_ROUNDOFF};
use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::cholesky::llt::factor::{cholesky_in_place, cholesky_in_place_scratch};
use faer::linalg::evd::{self, ComputeEigenvectors};
use faer::{Mat, Par};

/// Largest image (pixels) for which the bound is always computed: `T` is `hw × hw`.
pub(crate) const MAX_WINDOW: usize = 1024;
/// Largest image for which it is computed when the embedding bound is not tight enough
/// (112×112: `T` of order 12 544 takes 1.26 GB and a Cholesky factorisation of ~7 s on two
/// cores; larger layers are close enough to their circular embedding anyway). The memory
/// limit may refuse it earlier.
pub(crate) const MAX_LARGE_WINDOW: usize = 12_544;
/// Largest `T` whose dense eigenvalues are the fallback when the certificate fails.
const MAX_DENSE_EIGEN: usize = 3136;
/// Lanczos steps at most on `T` before the Cholesky certificate.
const WINDOW_LANCZOS_STEPS: usize = 300;

/// Whether the `n × n` window matrix (`n` pixels) fits in three quarters of `memory_limit`
/// (it is the one large allocation of the bound; the factorisation works in place).
pub(crate) fn fits(n: usize, memory_limit: usize) -> bool {
    (n as u128).pow(2) * 8 <= memory_limit as u128 / 4 * 3
}

/// An upper bound on `λ_max(T)` including rounding, from `s` on the half grid of `symbol`,
/// within about `slack` (relative) of `λ_max(T)`: Lanczos on `T` gives a Ritz value `θ` and its
/// residual `ρ`, and a Cholesky factorisation of `μI − T` with `μ = (θ + ρ)(1 + slack)` proves
/// `λ_max(T) ≤ μ` (plus Higham's backward error). Should that fail, the dense eigenvalues
/// decide (small `T`) or `max s` is returned (always valid: `T` is a section of the circulant
/// whose eigenvalues are the `s(f)`). `T` must [`fits`], else `max s` is returned.
pub(crate) fn window_bound_squared(
    symbol: &KernelSymbol,
    s_half: &[f64],
    input: [usize; 2],
    slack: f64,
    memory_limit: usize,
) -> Result<f64> {
    let r = Autocorrelation::new(symbol, s_half, input);
    let n = input[0] * input[1];
    // Rounding: each r is a sum of N_h·N_w + 2w terms bounded by s_max (plus the cosines'
    // own errors), so |Δr| ≤ 4(N_h N_w + h + w)·u·s_max; Weyl bounds the eigenvalue shift
    // by n·max|Δr|.
    let [nh, nw] = symbol.grid();
    let dr = 4.0 * (nh * nw + input[0] + input[1]) as f64 * UNIT_ROUNDOFF * r.s_max;
    let formed = n as f64 * dr;
    if !fits(n, memory_limit) {
        return Ok(r.s_max + formed);
    }
    let t = r.window_matrix();
    // Sequential below 1024 (fast, and the layer may be one of several bounded at once).
    let par = if n > MAX_WINDOW {
        Par::rayon(0)
    } else {
        Par::Seq
    };
    let frobenius = t.norm_l2();
    let (theta, residual) = top_ritz_of(&t, slack, par)?;
    let mu = (theta + residual).max(0.0) * (1.0 + slack) + f64::MIN_POSITIVE;
    if let Some(cholesky) = certify_below(t, mu, par) {
        return Ok(mu + cholesky + UNIT_ROUNDOFF * (mu + r.s_max) + formed);
    }
    if n > MAX_DENSE_EIGEN {
        return Ok(r.s_max + formed);
    }
    let lambda = largest_eigenvalue(&r.window_matrix(), par)?;
    // The eigensolver's backward error: a few n·u·‖T‖_F.
    Ok(lambda + formed + 16.0 * n as f64 * UNIT_ROUNDOFF * frobenius)
}

/// The autocorrelation `r = IDFT(s)` at the lags an `h × w` image needs.
struct Autocorrelation {
    /// `r(dh, dw)` for `dh ∈ [0, h)`, `dw ∈ (−w, w)`, row-major.
    r: Vec<f64>,
    w: usize,
    n: usize,
    /// `max_f s(f)`.
    s_max: f64,
}

impl Autocorrelation {
    fn new(symbol: &KernelSymbol, s_half: &[f64], input: [usize; 2]) -> Self {
        let [nh, nw] = symbol.grid();
        let (h, w) = (input[0], input[1]);
        // s on the full grid: real kernels give s(−f) = s(f).
        let mut s = vec![0.0f64; nh * nw];
        for (f, &v) in s_half.iter().enumerate() {
            let (fh, fw) = symbol.coordinates(f);
            s[fh * nw + fw] = v;
            s[((nh - fh) % nh) * nw + (nw - fw) % nw] = v;
        }
        let s_max = s.iter().copied().fold(0.0, f64::max);
        // Separably: first over f_w, then f_h.
        let tau = std::f64::consts::TAU;
        let lags_w = 2 * w - 1;
        let mut cs = vec![0.0f64; nh * lags_w];
        let mut sn = vec![0.0f64; nh * lags_w];
        for fh in 0..nh {
            for (l, dw) in (-(w as i64 - 1)..w as i64).enumerate() {
                let (mut c, mut si) = (0.0, 0.0);
                for fw in 0..nw {
                    let phase = tau * ((fw as i64 * dw).rem_euclid(nw as i64)) as f64 / nw as f64;
                    c += s[fh * nw + fw] * phase.cos();
                    si += s[fh * nw + fw] * phase.sin();
                }
                cs[fh * lags_w + l] = c;
                sn[fh * lags_w + l] = si;
            }
        }
        let scale = 1.0 / (nh * nw) as f64;
        let mut r = vec![0.0f64; h * lags_w];
        for dh in 0..h {
            for l in 0..lags_w {
                let mut acc = 0.0;
                for fh in 0..nh {
                    let phase = tau * ((fh * dh) % nh) as f64 / nh as f64;
                    acc += phase.cos() * cs[fh * lags_w + l] - phase.sin() * sn[fh * lags_w + l];
                }
                r[dh * lags_w + l] = acc * scale;
            }
        }
        Autocorrelation {
            r,
            w,
            n: h * w,
            s_max,
        }
    }

    /// `r(dh, dw)` for any lag (r is even: `r(−d) = r(d)`).
    fn lag(&self, dh: i64, dw: i64) -> f64 {
        let (dh, dw) = if dh < 0 { (-dh, -dw) } else { (dh, dw) };
        let lags_w = 2 * self.w - 1;
        self.r[dh as usize * lags_w + (dw + self.w as i64 - 1) as usize]
    }

    /// The `hw × hw` Toeplitz-block-Toeplitz matrix `T`.
    fn window_matrix(&self) -> Mat<f64> {
        let w = self.w;
        Mat::<f64>::from_fn(self.n, self.n, |i, j| {
            let (a, b) = ((i / w) as i64, (i % w) as i64);
            let (a2, b2) = ((j / w) as i64, (j % w) as i64);
            self.lag(a - a2, b - b2)
        })
    }
}

/// The top Ritz value of `t` and its residual, by Lanczos to a residual well inside `slack`.
fn top_ritz_of(t: &Mat<f64>, slack: f64, par: Par) -> Result<(f64, f64)> {
    let n = t.nrows();
    let mut x = vec![0.0f64; n];
    let mut y = vec![0.0f64; n];
    super::circular::top_ritz(n, WINDOW_LANCZOS_STEPS, slack / 4.0, |xc, yc| {
        x.iter_mut().zip(xc).for_each(|(r, c)| *r = c.re);
        faer::linalg::matmul::matmul(
            faer::MatMut::from_column_major_slice_mut(&mut y, n, 1),
            faer::Accum::Replace,
            t.as_ref(),
            faer::MatRef::from_column_major_slice(&x, n, 1),
            1.0,
            par,
        );
        yc.iter_mut().zip(&y).for_each(|(c, &r)| *c = r.into());
    })
}

/// Proves `λ_max(t) ≤ μ` by a Cholesky factorisation of `μI − t` (formed in place of `t`):
/// the margin to add to `μ` (Higham's backward error), or `None` when the factorisation
/// fails.
fn certify_below(t: Mat<f64>, mu: f64, par: Par) -> Option<f64> {
    let n = t.nrows();
    let mut a = t;
    for j in 0..n {
        for i in 0..n {
            a[(i, j)] = -a[(i, j)];
        }
        a[(j, j)] += mu;
    }
    let mut mem = MemBuffer::new(cholesky_in_place_scratch::<f64>(n, par, Default::default()));
    cholesky_in_place(
        a.as_mut(),
        Default::default(),
        par,
        MemStack::new(&mut mem),
        Default::default(),
    )
    .ok()?;
    let factor_norm2: f64 = (0..n)
        .map(|j| (j..n).map(|i| a[(i, j)] * a[(i, j)]).sum::<f64>())
        .sum();
    // Higham Thm 10.3 (constant 2 for safety), the shift's rounding, the sum's rounding.
    Some(2.0 * gamma(n + 1) * factor_norm2 * (1.0 + 1e-10))
}

/// The largest eigenvalue of the symmetric `t` by a dense eigensolver.
fn largest_eigenvalue(t: &Mat<f64>, par: Par) -> Result<f64> {
    let n = t.nrows();
    let mut values = faer::diag::Diag::<f64>::zeros(n);
    let mut mem = MemBuffer::new(evd::self_adjoint_evd_scratch::<f64>(
        n,
        ComputeEigenvectors::No,
        par,
        Default::default(),
    ));
    evd::self_adjoint_evd(
        t.as_ref(),
        values.as_mut(),
        None,
        par,
        MemStack::new(&mut mem),
        Default::default(),
    )
    .map_err(|e| Error::Numerical(format!("eigenvalues of the {n}×{n} window matrix: {e:?}")))?;
    Ok(values.column_vector().iter().copied().fold(0.0, f64::max))
}
