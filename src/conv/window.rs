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
use crate::kernels::UNIT_ROUNDOFF;
use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::evd::{self, ComputeEigenvectors};
use faer::{Mat, Par};

/// Largest image (pixels) for which the bound is always computed: `T` is `hw × hw`.
pub(crate) const MAX_WINDOW: usize = 1024;
/// Largest image for which it is computed when the embedding bound is not tight enough
/// (56×56: an eigenvalue problem of order 3136, about a second on two cores).
pub(crate) const MAX_LARGE_WINDOW: usize = 3136;

/// `λ_max(T)` plus its rounding margin, from `s` on the half grid of `symbol`.
pub(crate) fn window_bound_squared(
    symbol: &KernelSymbol,
    s_half: &[f64],
    input: [usize; 2],
) -> Result<f64> {
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
    // r(dh, dw) for dh ∈ [0, h), dw ∈ (−w, w), separably: first over f_w, then f_h.
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
    let lag = |dh: i64, dw: i64| -> f64 {
        // r is even: r(−d) = r(d).
        let (dh, dw) = if dh < 0 { (-dh, -dw) } else { (dh, dw) };
        r[dh as usize * lags_w + (dw + w as i64 - 1) as usize]
    };
    let n = h * w;
    let t = Mat::<f64>::from_fn(n, n, |i, j| {
        let (a, b) = ((i / w) as i64, (i % w) as i64);
        let (a2, b2) = ((j / w) as i64, (j % w) as i64);
        lag(a - a2, b - b2)
    });
    let mut values = faer::diag::Diag::<f64>::zeros(n);
    // Sequential below 1024 (fast, and the layer may be one of several bounded at once).
    let par = if n > MAX_WINDOW {
        Par::rayon(0)
    } else {
        Par::Seq
    };
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
    let lambda = values.column_vector().iter().copied().fold(0.0, f64::max);
    // Rounding: each r is a sum of N_h·N_w + 2w terms bounded by s_max (plus the cosines'
    // own errors), so |Δr| ≤ 4(N_h N_w + h + w)·u·s_max; Weyl bounds the eigenvalue shift
    // by n·max|Δr| plus the eigensolver's backward error, a few n·u·‖T‖_F.
    let dr = 4.0 * (nh * nw + h + w) as f64 * UNIT_ROUNDOFF * s_max;
    let frobenius = t.norm_l2();
    let margin = n as f64 * dr + 16.0 * n as f64 * UNIT_ROUNDOFF * frobenius;
    Ok(lambda + margin)
}
