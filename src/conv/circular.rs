//! The circular norm on a grid, `max_f σ₁(M(f))` over the half grid of frequencies,
//! computed without an eigen-decomposition per frequency.
//!
//! Every (frequency, group) block is reduced to its smaller Gram matrix `G(f) = MᴴM` (or
//! `MMᴴ`), whose largest eigenvalue is `σ₁²`. The eigenvalues of a 512×512 Hermitian matrix
//! cost tens of times more than its Cholesky factorisation (~3 ms), so the maximum is found so:
//!
//! 1. six Lanczos steps on every block give Ritz values that rank the blocks; the best four
//!    are refined (Lanczos until the residual is well inside the slack, then certified just
//!    above their Ritz value as in 2.), and the largest Ritz value `λ*` is attained;
//! 2. every other block is *certified* below `μ = λ*(1 + ρ)²` by a Cholesky factorisation of
//!    `μI − G(f)` (it succeeds only for a positive definite matrix; Higham's backward error of
//!    the computed factor `L` moves the eigenvalues by at most `4γ_{n+1}‖L‖_F²`, which is added);
//! 3. a block whose factorisation fails may exceed `λ*`: it is refined like the candidates
//!    (exact eigenvalues if even that certificate fails).
//!
//! The upper end is the largest certified bound plus the margin for forming `G(f)`; which
//! block attains the maximum only matters for the plane wave that the caller turns into the
//! certified lower end. Blocks below 16×16 simply get exact eigenvalues.
//!
//! `G(f)` itself is cheap for small kernels: `G(f) = Σ_Δ E_Δ·e^{iφ_Δ(f)}` where
//! `E_Δ = Σ_{t'−t=Δ} W_tᵀW_{t'}` sums the real tap products at each tap offset `Δ`, so a 3×3
//! kernel needs 81 real GEMMs once instead of a complex GEMM per frequency. Larger kernels on
//! small grids form `G(f)` from the kernel symbol instead, whichever costs fewer flops.

use super::spectrum::{KernelSymbol, C64};
use super::Conv2d;
use crate::error::{Error, Result};
use crate::kernels::{axpy_pair, gamma, hermitian_column, UNIT_ROUNDOFF};
use crate::spectral::{dense_la, tridiagonal};
use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::cholesky::llt::factor::{cholesky_in_place, cholesky_in_place_scratch};
use faer::linalg::evd::{self, ComputeEigenvectors};
use faer::{Mat, MatMut, MatRef, Par};
use rayon::prelude::*;

/// The circular norm on a grid: `max_f σ₁(M(f))`, with where it is attained.
pub(crate) struct CircularNorm {
    pub upper: f64,
    /// Per half-grid frequency, an upper bound on `max_g σ₁(M_g(f))²` (exact where the
    /// block's eigenvalues were computed, the certified bound elsewhere), without `margin`.
    pub per_frequency: Vec<f64>,
    /// The rounding margin on each `σ²` (forming `G(f)` and its eigenvalues).
    pub margin: f64,
    /// The frequency and group of the largest block found.
    pub frequency: usize,
    pub group: usize,
    /// Blocks whose σ₁ was resolved (refined to the slack, or exact eigenvalues).
    pub visited: usize,
    /// Frequencies in the half grid.
    pub total: usize,
}

/// How [`circular_norm`] treats the blocks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Scan {
    /// Every block's `σ₁²` to the slack (the window bound integrates over all of them):
    /// blocks below 16×16 exactly, larger ones refined (Lanczos, then a Cholesky certificate
    /// just above the Ritz value).
    Every { slack: f64 },
    /// The maximum: exact for the largest block, every other certified below
    /// `λ*(1 + ρ)²` by Cholesky, `ρ` the slack given.
    Maximum { slack: f64 },
    /// Delattre et al.'s Gram iteration per block with this many squarings: a deterministic
    /// upper bound `‖G^{2^t}‖_F^{1/2^t}` without eigenvalues (the comparison method).
    Gram { squarings: usize },
}

/// Blocks smaller than this get exact eigenvalues (no estimates, no certification).
const SMALL_BLOCK: usize = 16;
/// Lanczos steps per block for the estimates that rank the blocks.
const ESTIMATE_STEPS: usize = 6;
/// Blocks with the best estimates that are refined up front.
const CANDIDATES: usize = 4;
/// Lanczos steps at most when refining a block (then exact eigenvalues if still needed).
const REFINE_STEPS: usize = 160;

/// The smaller Gram matrix of `m` into `dst`: `MᴴM` when `M` is tall (or square), `MMᴴ` when
/// wide; both have the nonzero eigenvalues `σᵢ²`. Sequential, for reproducible results.
fn smaller_gram<T: faer::traits::ComplexField>(m: MatRef<'_, T>, dst: MatMut<'_, T>) {
    let one = T::one_impl();
    if m.ncols() <= m.nrows() {
        faer::linalg::matmul::matmul(dst, faer::Accum::Replace, m.adjoint(), m, one, Par::Seq);
    } else {
        faer::linalg::matmul::matmul(dst, faer::Accum::Replace, m, m.adjoint(), one, Par::Seq);
    }
}

/// Largest eigenvalue of a Hermitian matrix (column-major, full), by faer's eigensolver.
fn hermitian_largest_eigenvalue(g: MatRef<'_, C64>) -> Result<f64> {
    let n = g.nrows();
    if n == 1 {
        return Ok(g[(0, 0)].re.max(0.0));
    }
    let mut s = faer::diag::Diag::<C64>::zeros(n);
    let mut mem = MemBuffer::new(evd::self_adjoint_evd_scratch::<C64>(
        n,
        ComputeEigenvectors::No,
        Par::Seq,
        Default::default(),
    ));
    evd::self_adjoint_evd(
        g,
        s.as_mut(),
        None,
        Par::Seq,
        MemStack::new(&mut mem),
        Default::default(),
    )
    .map_err(|e| Error::Numerical(format!("eigenvalues of a {n}×{n} frequency block: {e:?}")))?;
    Ok(s.column_vector().iter().map(|v| v.re).fold(0.0, f64::max))
}

/// σ₁² of a block `og × cg` (row-major) via the eigenvalues of its smaller Gram matrix.
pub(crate) fn block_sigma_squared(block: &[C64], og: usize, cg: usize) -> Result<f64> {
    let m = MatRef::from_row_major_slice(block, og, cg);
    let n = og.min(cg);
    let mut gram = Mat::<C64>::zeros(n, n);
    smaller_gram(m, gram.as_mut());
    hermitian_largest_eigenvalue(gram.as_ref())
}

/// Absolute margin on a computed `σ₁(M(ω))²` covering rounding in the symbol or the tap
/// products (`kH·kW` terms each way, `≤ 4·kH·kW` offsets), the Gram product (`C` terms) and the
/// eigensolver's backward error, all relative to `S²` with `S = Σ_{p,q} ‖w[:,:,p,q]‖_F ≥
/// ‖M(ω)‖_F` for every ω (so every entrywise error sum is at most `S²` in norm).
pub(crate) fn sigma_squared_margin(conv: &Conv2d, weights: &[f32]) -> f64 {
    let taps = conv.kernel[0] * conv.kernel[1];
    let (og, cg) = (conv.group_out(), conv.group_in());
    32.0 * (og.max(cg) + 5 * taps + 8) as f64 * UNIT_ROUNDOFF * tap_norm_sum(conv, weights).powi(2)
}

/// `S = Σ_{p,q} ‖w[:,:,p,q]‖_F`.
fn tap_norm_sum(conv: &Conv2d, weights: &[f32]) -> f64 {
    let taps = conv.kernel[0] * conv.kernel[1];
    (0..taps)
        .map(|t| {
            (0..conv.out_channels * conv.group_in())
                .map(|pair| (weights[pair * taps + t] as f64).powi(2))
                .sum::<f64>()
                .sqrt()
        })
        .sum()
}

/// The lower triangle of a Hermitian Gram matrix as real and imaginary planes (column-major
/// `n × n`, entries `i ≥ j` only): the form in which assembly and matrix-vector products
/// vectorise.
struct Planes {
    re: Vec<f64>,
    im: Vec<f64>,
}

impl Planes {
    fn new(n: usize) -> Self {
        Planes {
            re: vec![0.0; n * n],
            im: vec![0.0; n * n],
        }
    }

    /// `y = Gx` from the lower triangle; `x` and `y` split into real and imaginary parts.
    fn matvec(&self, n: usize, xr: &[f64], xi: &[f64], yr: &mut [f64], yi: &mut [f64]) {
        yr.fill(0.0);
        yi.fill(0.0);
        for j in 0..n {
            let below = j * n + j + 1..(j + 1) * n;
            let [dr, di] = hermitian_column(
                &self.re[below.clone()],
                &self.im[below],
                [&xr[j + 1..], &xi[j + 1..]],
                [xr[j], xi[j]],
                &mut yr[j + 1..],
                &mut yi[j + 1..],
            );
            let d = self.re[j * n + j];
            yr[j] += d * xr[j] + dr;
            yi[j] += d * xi[j] + di;
        }
    }

    /// Writes `shift·I − G` (lower triangle) as complex column-major into `out`.
    fn shifted_negative(&self, n: usize, shift: f64, out: &mut [C64]) {
        for j in 0..n {
            for i in j..n {
                out[j * n + i] = C64::new(-self.re[j * n + i], -self.im[j * n + i]);
            }
            out[j * n + j] = C64::new(shift - self.re[j * n + j], 0.0);
        }
    }

    /// Writes the full Hermitian `G` as complex column-major into `out`.
    fn full(&self, n: usize, out: &mut [C64]) {
        for j in 0..n {
            for i in j..n {
                let v = C64::new(self.re[j * n + i], self.im[j * n + i]);
                out[j * n + i] = v;
                out[i * n + j] = v.conj();
            }
        }
    }
}

/// Where the per-frequency Gram matrices come from.
struct GramSource<'a> {
    symbol: &'a KernelSymbol,
    /// Size of the smaller Gram matrix.
    n: usize,
    /// Tap route: the offsets `Δ = (Δp·d_h, Δq·d_w)` of one half (`Δp > 0`, or `Δp = 0 < Δq`)
    /// in grid units, and per group the real `n × n` terms (column-major) `[E_0,
    /// E_Δ + E_Δᵀ, E_Δ − E_Δᵀ, …]`, so that `Re G(f) = E_0 + Σ_Δ (E_Δ + E_Δᵀ) cos φ_Δ(f)`
    /// and `Im G(f) = Σ_Δ (E_Δ − E_Δᵀ) sin φ_Δ(f)` (`E_{−Δ} = E_Δᵀ`). Empty: the symbol route.
    offsets: Vec<[i64; 2]>,
    terms: Vec<f64>,
}

impl<'a> GramSource<'a> {
    /// Chooses the cheaper way to form `G(f)` and prepares it. Tap products are used when
    /// they cost fewer flops than a complex GEMM per frequency and their matrices fit in a
    /// quarter of `memory_limit`.
    fn new(conv: &Conv2d, weights: &[f32], symbol: &'a KernelSymbol, memory_limit: usize) -> Self {
        let (groups, og, cg) = symbol.block_shape();
        let (n, k) = (og.min(cg), og.max(cg));
        let (kh, kw) = (conv.kernel[0], conv.kernel[1]);
        let taps = kh * kw;
        let half = ((2 * kh - 1) * (2 * kw - 1) - 1) / 2;
        let (n2, kf) = ((n * n) as f64, k as f64);
        let frequencies = symbol.frequencies() as f64;
        let taps_cost = (taps * taps) as f64 * n2 * kf + frequencies * (2 * half + 1) as f64 * n2;
        let symbol_cost = frequencies * n2 * kf * 8.0;
        let bytes = (groups * (2 * half + 1)) as u128 * (n * n) as u128 * 8;
        let mut source = GramSource {
            symbol,
            n,
            offsets: Vec::new(),
            terms: Vec::new(),
        };
        if n < 2 || taps_cost >= symbol_cost || bytes > memory_limit as u128 / 4 {
            return source;
        }
        // F_t (k × n, column-major): W_t when tall (n = C_in/g), W_tᵀ when wide; both give
        // Grams with the eigenvalues σᵢ² (the wide one is the conjugate: same eigenvalues).
        let tall = cg <= og;
        let factors: Vec<Mat<f64>> = (0..groups * taps)
            .map(|gt| {
                let (g, t) = (gt / taps, gt % taps);
                Mat::from_fn(k, n, |r, c| {
                    let (o, i) = if tall { (r, c) } else { (c, r) };
                    weights[((g * og + o) * cg + i) * taps + t] as f64
                })
            })
            .collect();
        let (kh_i, kw_i) = (kh as i64, kw as i64);
        // Δ = 0 first, then the half.
        let deltas: Vec<[i64; 2]> = std::iter::once([0, 0])
            .chain(
                (0..kh_i)
                    .flat_map(|a| (-(kw_i - 1)..kw_i).map(move |b| [a, b]))
                    .filter(|&[a, b]| a > 0 || b > 0),
            )
            .collect();
        // E_Δ = Σ_{t' − t = Δ} F_tᵀ F_{t'}, per (group, Δ), in a fixed order.
        let mut sums = vec![0.0f64; groups * deltas.len() * n * n];
        sums.par_chunks_mut(n * n)
            .enumerate()
            .for_each(|(index, dst)| {
                let (g, [da, db]) = (index / deltas.len(), deltas[index % deltas.len()]);
                let mut e = MatMut::from_column_major_slice_mut(dst, n, n);
                for p in 0..kh_i {
                    for q in 0..kw_i {
                        let (p2, q2) = (p + da, q + db);
                        if (0..kh_i).contains(&p2) && (0..kw_i).contains(&q2) {
                            let t = (p * kw_i + q) as usize;
                            let t2 = (p2 * kw_i + q2) as usize;
                            faer::linalg::matmul::matmul(
                                e.as_mut(),
                                faer::Accum::Add,
                                factors[g * taps + t].transpose(),
                                factors[g * taps + t2].as_ref(),
                                1.0,
                                Par::Seq,
                            );
                        }
                    }
                }
            });
        let per_group = 2 * half + 1;
        let mut terms = vec![0.0f64; groups * per_group * n * n];
        terms
            .par_chunks_mut(per_group * n * n)
            .enumerate()
            .for_each(|(g, dst)| {
                let e = |d: usize| &sums[(g * deltas.len() + d) * n * n..][..n * n];
                dst[..n * n].copy_from_slice(e(0));
                for d in 1..deltas.len() {
                    let src = e(d);
                    let (sym, anti) =
                        dst[(2 * d - 1) * n * n..(2 * d + 1) * n * n].split_at_mut(n * n);
                    for j in 0..n {
                        for i in 0..n {
                            sym[j * n + i] = src[j * n + i] + src[i * n + j];
                            anti[j * n + i] = src[j * n + i] - src[i * n + j];
                        }
                    }
                }
            });
        let [dh, dw] = conv.dilation.map(|d| d as i64);
        source.offsets = deltas[1..].iter().map(|&[a, b]| [a * dh, b * dw]).collect();
        source.terms = terms;
        source
    }

    /// Assembles the blocks `items` (index `f·groups + g`) into `planes` (one each).
    fn assemble(&self, items: &[usize], planes: &mut [Planes], s: &mut ScratchVectors) {
        let n = self.n;
        let (groups, og, cg) = self.symbol.block_shape();
        if self.offsets.is_empty() {
            for (&b, p) in items.iter().zip(planes.iter_mut()) {
                let (f, g) = (b / groups, b % groups);
                self.symbol.blocks(f, &mut s.blocks);
                let m =
                    MatRef::from_row_major_slice(&s.blocks[g * og * cg..(g + 1) * og * cg], og, cg);
                smaller_gram(m, MatMut::from_column_major_slice_mut(&mut s.complex, n, n));
                for (v, (r, i)) in s.complex.iter().zip(p.re.iter_mut().zip(p.im.iter_mut())) {
                    (*r, *i) = (v.re, v.im);
                }
            }
            return;
        }
        let [nh, nw] = self.symbol.grid().map(|v| v as i64);
        let phases: Vec<Vec<(f64, f64)>> = items
            .iter()
            .map(|&b| {
                let (f_h, f_w) = self.symbol.coordinates(b / groups);
                self.offsets
                    .iter()
                    .map(|&[a, b]| {
                        let turns = (f_h as i64 * a).rem_euclid(nh) as f64 / nh as f64
                            + (f_w as i64 * b).rem_euclid(nw) as f64 / nw as f64;
                        let angle = 2.0 * std::f64::consts::PI * turns;
                        (angle.cos(), angle.sin())
                    })
                    .collect()
            })
            .collect();
        let per_group = 2 * self.offsets.len() + 1;
        // Column by column, so that the terms' column segments are reused across the batch
        // from cache.
        for j in 0..n {
            let col = j * n + j..(j + 1) * n;
            for ((&b, p), phase) in items.iter().zip(planes.iter_mut()).zip(&phases) {
                let terms = &self.terms[(b % groups) * per_group * n * n..][..per_group * n * n];
                let (re, im) = (&mut p.re[col.clone()], &mut p.im[col.clone()]);
                re.copy_from_slice(&terms[col.clone()]);
                im.fill(0.0);
                for (d, &(c, s)) in phase.iter().enumerate() {
                    let sym = &terms[(2 * d + 1) * n * n..][col.clone()];
                    let anti = &terms[(2 * d + 2) * n * n..][col.clone()];
                    axpy_pair(c, sym, re, s, anti, im);
                }
            }
        }
    }
}

/// Top Ritz value of a Hermitian operator of dimension `n` by Lanczos with full
/// reorthogonalisation from a fixed start, and the residual `‖Hy − θy‖` of its Ritz vector (an
/// eigenvalue lies within it of `θ`). Stops after `max_steps`, at breakdown, or once the
/// residual is below `tol·θ`. `apply(x, y)` writes `Hx` into `y`.
pub(crate) fn top_ritz(
    n: usize,
    max_steps: usize,
    tol: f64,
    mut apply: impl FnMut(&[C64], &mut [C64]),
) -> Result<(f64, f64)> {
    let steps = max_steps.min(n).max(1);
    let mut basis: Vec<C64> = Vec::with_capacity(steps * n);
    let mut start: Vec<C64> = (0..n)
        .map(|i| C64::new(1.0 + 0.5 * ((i as f64 * 0.754_877_666).fract() - 0.5), 0.0))
        .collect();
    let norm = start.iter().map(|v| v.norm_sqr()).sum::<f64>().sqrt();
    start.iter_mut().for_each(|v| *v /= norm);
    basis.extend_from_slice(&start);
    let (mut alpha, mut beta) = (Vec::new(), Vec::new());
    let mut w = vec![C64::default(); n];
    let mut result = (0.0, f64::INFINITY);
    for k in 0..steps {
        apply(&basis[k * n..(k + 1) * n], &mut w);
        // Two passes of classical Gram–Schmidt against the whole basis.
        for pass in 0..2 {
            for j in 0..=k {
                let q = &basis[j * n..(j + 1) * n];
                let dot: C64 = q.iter().zip(&w).map(|(a, b)| a.conj() * b).sum();
                if pass == 0 && j == k {
                    alpha.push(dot.re);
                }
                w.iter_mut().zip(q).for_each(|(v, a)| *v -= dot * a);
            }
        }
        let b = w.iter().map(|v| v.norm_sqr()).sum::<f64>().sqrt();
        let last = k + 1 == steps || b <= 1e-14 * alpha.iter().fold(0.0f64, |m, a| m.max(a.abs()));
        if last && tol == 0.0 {
            // Only the value is wanted: bisection is far cheaper than a dense eigensolver.
            return Ok((
                tridiagonal::largest_eigenvalue_bracket(&alpha, &beta).0,
                f64::INFINITY,
            ));
        }
        if last || (k + 1) % 8 == 0 {
            let m = k + 1;
            let t = tridiagonal::dense(&alpha, &beta);
            let (values, vector) = dense_la::symmetric_top_eigen(&t, m)?;
            let theta = values[m - 1];
            result = (theta, b * vector[m - 1].abs());
            if last || result.1 <= tol * theta {
                return Ok(result);
            }
        }
        beta.push(b);
        basis.extend(w.iter().map(|v| v / b));
    }
    Ok(result)
}

/// Per-thread scratch vectors.
struct ScratchVectors {
    /// The symbol's blocks of one frequency (`groups·og·cg`).
    blocks: Vec<C64>,
    /// One complex `n × n` matrix (Cholesky, eigenvalues, the symbol route's Gram).
    complex: Vec<C64>,
    /// Split vectors for the matrix-vector products.
    split: [Vec<f64>; 4],
    stack: MemBuffer,
}

impl ScratchVectors {
    /// Top Ritz value and residual of the Gram matrix in `planes`.
    fn ritz(&mut self, n: usize, planes: &Planes, steps: usize, tol: f64) -> Result<(f64, f64)> {
        let [xr, xi, yr, yi] = &mut self.split;
        top_ritz(n, steps, tol, |x, y| {
            for (v, (r, i)) in x.iter().zip(xr.iter_mut().zip(xi.iter_mut())) {
                (*r, *i) = (v.re, v.im);
            }
            planes.matvec(n, xr, xi, yr, yi);
            for (v, (r, i)) in y.iter_mut().zip(yr.iter().zip(yi.iter())) {
                *v = C64::new(*r, *i);
            }
        })
    }

    /// Whether `λ_max(G) ≤ μ` is proven by a Cholesky factorisation of `μI − G`; if so, the
    /// certified bound (`μ` plus the factorisation's rounding), without the Gram margin.
    /// `s2` bounds `‖G‖`.
    fn certify(&mut self, n: usize, planes: &Planes, mu: f64, s2: f64) -> Option<f64> {
        planes.shifted_negative(n, mu, &mut self.complex);
        let a = MatMut::from_column_major_slice_mut(&mut self.complex, n, n);
        let stack = MemStack::new(&mut self.stack);
        cholesky_in_place(a, Default::default(), Par::Seq, stack, Default::default()).ok()?;
        let factor_norm2: f64 = (0..n)
            .flat_map(|j| self.complex[j * n + j..(j + 1) * n].iter())
            .map(|v| v.norm_sqr())
            .sum();
        // Higham Thm 10.3 with complex arithmetic (constant 4), the shift's rounding, and the
        // rounding of the sum itself.
        Some(mu + 4.0 * gamma(n + 1) * factor_norm2 * (1.0 + 1e-10) + UNIT_ROUNDOFF * (mu + s2))
    }

    fn exact(&mut self, n: usize, planes: &Planes) -> Result<f64> {
        planes.full(n, &mut self.complex);
        hermitian_largest_eigenvalue(MatRef::from_column_major_slice(&self.complex, n, n))
    }

    /// Gram-iteration bound on `λ_max(G)` with `squarings` squarings in `f64`, each iterate
    /// rescaled to unit Frobenius norm; widened by the squarings' relative rounding (each
    /// `γ_n`), not including the Gram margin.
    fn gram_iteration(&mut self, n: usize, planes: &Planes, squarings: usize) -> f64 {
        planes.full(n, &mut self.complex);
        let mut a = Mat::<C64>::from_fn(n, n, |i, j| self.complex[j * n + i]);
        let mut next = Mat::<C64>::zeros(n, n);
        let mut log_scale = 0.0f64;
        let mut power = 1.0f64;
        for _ in 0..squarings {
            let norm = a.norm_l2();
            if norm == 0.0 || !norm.is_finite() {
                return norm;
            }
            log_scale += norm.ln() / power;
            let inv = C64::new(1.0 / (norm * norm), 0.0);
            faer::linalg::matmul::matmul(
                next.as_mut(),
                faer::Accum::Replace,
                a.as_ref(),
                a.as_ref(),
                inv,
                Par::Seq,
            );
            std::mem::swap(&mut a, &mut next);
            power *= 2.0;
        }
        let bound = (log_scale + a.norm_l2().ln() / power).exp();
        bound * (1.0 + 8.0 * (squarings + 1) as f64 * gamma(n + 2))
    }
}

/// What the scan learns about one block's `λ_max = σ₁²` (without the Gram margin).
struct BlockValue {
    /// A lower estimate (a Rayleigh quotient: below `λ_max` up to rounding; it only ranks
    /// blocks and picks the maximiser, no output relies on it being a bound).
    lower: f64,
    /// A certified upper bound.
    upper: f64,
    /// Whether `λ_max` was resolved (computed, or refined to the slack) rather than bounded.
    resolved: bool,
}

impl BlockValue {
    fn exact(v: f64) -> Self {
        BlockValue {
            lower: v,
            upper: v,
            resolved: true,
        }
    }
}

/// Work done on one assembled block.
type BlockWork<'a> = dyn Fn(&mut ScratchVectors, &Planes) -> Result<BlockValue> + Sync + 'a;

/// Blocks assembled together (they share reads of the tap terms).
const BATCH: usize = 4;

/// `max_f σ₁(M(f))` over the half grid (see the module docs); `memory_limit` caps the tap
/// product matrices and the per-thread scratch.
pub(crate) fn circular_norm(
    conv: &Conv2d,
    weights: &[f32],
    symbol: &KernelSymbol,
    scan: Scan,
    memory_limit: usize,
) -> Result<CircularNorm> {
    let (groups, og, cg) = symbol.block_shape();
    let total = symbol.frequencies();
    let source = GramSource::new(conv, weights, symbol, memory_limit);
    let n = source.n;
    // Each thread holds a batch of planes (16n² bytes each), a complex n² matrix and a
    // Lanczos basis: refuse blocks whose scratch alone exceeds the limit.
    let per_block_bytes = 16 * (n * n) as u128;
    let threads = rayon::current_num_threads().max(1) as u128;
    let least = threads * (2 * per_block_bytes + 16 * (REFINE_STEPS * n) as u128);
    if least > memory_limit as u128 {
        return Err(Error::TooLarge {
            what: format!("per-frequency Gram matrices of {n}×{n} ({threads} threads)"),
            needed: least,
            limit: memory_limit as u128,
        });
    }
    let batch = ((memory_limit as u128 / 4 / threads / per_block_bytes).saturating_sub(1) as usize)
        .clamp(1, BATCH);
    // Scratch is pooled: rayon may call a map_init initialiser once per split, and a fresh
    // 16n²-byte batch each time costs page faults.
    let pool = std::sync::Mutex::new(Vec::new());
    let scratch = || {
        (
            ScratchVectors {
                blocks: vec![C64::default(); groups * og * cg],
                complex: vec![C64::default(); n * n],
                split: std::array::from_fn(|_| vec![0.0; n]),
                stack: MemBuffer::new(cholesky_in_place_scratch::<C64>(
                    n,
                    Par::Seq,
                    Default::default(),
                )),
            },
            (0..batch).map(|_| Planes::new(n)).collect::<Vec<_>>(),
        )
    };
    // Runs `work` on every block of `items` (batched assembly), in parallel, results in order.
    let each = |items: &[usize], work: &BlockWork<'_>| -> Result<Vec<BlockValue>> {
        let chunks: Vec<Result<Vec<BlockValue>>> = items
            .par_chunks(batch)
            .map(|chunk| {
                let taken = pool.lock().ok().and_then(|mut p| p.pop());
                let (mut s, mut planes) = taken.unwrap_or_else(scratch);
                source.assemble(chunk, &mut planes, &mut s);
                let values = chunk
                    .iter()
                    .zip(planes.iter())
                    .map(|(_, p)| work(&mut s, p))
                    .collect();
                if let Ok(mut p) = pool.lock() {
                    p.push((s, planes));
                }
                values
            })
            .collect();
        let mut out = Vec::with_capacity(items.len());
        for c in chunks {
            out.extend(c?);
        }
        Ok(out)
    };
    let margin = sigma_squared_margin(conv, weights);
    let blocks_total = total * groups;
    // Per block, the fields of its BlockValue.
    let mut lower = vec![0.0f64; blocks_total];
    let mut upper = vec![0.0f64; blocks_total];
    let mut resolved = vec![false; blocks_total];
    let mut record = |items: &[usize], values: Vec<BlockValue>| {
        for (&b, v) in items.iter().zip(values) {
            (lower[b], upper[b], resolved[b]) = (v.lower, v.upper, v.resolved);
        }
    };
    let all: Vec<usize> = (0..blocks_total).collect();
    let s2 = tap_norm_sum(conv, weights).powi(2);
    // A block refined: Lanczos to a residual well inside the slack, then a Cholesky
    // certificate just above the Ritz value; exact eigenvalues if that fails (and for blocks
    // too small for the rest to pay).
    let refine = |s: &mut ScratchVectors, p: &Planes, slack: f64| -> Result<BlockValue> {
        if n < SMALL_BLOCK {
            return s.exact(n, p).map(BlockValue::exact);
        }
        let (theta, residual) = s.ritz(n, p, REFINE_STEPS, slack / 4.0)?;
        let mu = (theta + residual) * (1.0 + slack);
        if let Some(upper) = s.certify(n, p, mu, s2) {
            return Ok(BlockValue {
                lower: theta,
                upper,
                resolved: true,
            });
        }
        s.exact(n, p).map(BlockValue::exact)
    };
    let scan = match scan {
        Scan::Maximum { slack } if n < SMALL_BLOCK => Scan::Every { slack },
        other => other,
    };
    match scan {
        Scan::Every { slack } => {
            let values = each(&all, &|s, p| refine(s, p, slack))?;
            record(&all, values);
        }
        Scan::Gram { squarings } => {
            let values = each(&all, &|s, p| {
                let v = s.gram_iteration(n, p, squarings);
                Ok(BlockValue {
                    lower: v,
                    upper: v,
                    resolved: false,
                })
            })?;
            record(&all, values);
        }
        Scan::Maximum { slack } => {
            // 1. Ritz values of every block after a few Lanczos steps, to rank them.
            let estimates = each(&all, &|s, p| {
                s.ritz(n, p, ESTIMATE_STEPS, 0.0).map(|(t, _)| BlockValue {
                    lower: t,
                    upper: f64::INFINITY,
                    resolved: false,
                })
            })?;
            let mut order = all.clone();
            order.sort_by(|&a, &b| {
                (estimates[b].lower)
                    .total_cmp(&estimates[a].lower)
                    .then(a.cmp(&b))
            });
            let (candidates, rest) = order.split_at(CANDIDATES.min(blocks_total));
            // 2. The best few refined: their largest θ is λ*.
            let values = each(candidates, &|s, p| refine(s, p, slack))?;
            let best = values.iter().map(|v| v.lower).fold(0.0, f64::max);
            record(candidates, values);
            // 3. Every other block certified below μ = λ*(1 + ρ)², refined where that fails.
            // (A positive floor keeps the test meaningful for an all-zero kernel.)
            let mu = (best * (1.0 + slack).powi(2)).max(f64::MIN_POSITIVE);
            let values = each(rest, &|s, p| match s.certify(n, p, mu, s2) {
                Some(upper) => Ok(BlockValue {
                    lower: 0.0,
                    upper,
                    resolved: false,
                }),
                None => refine(s, p, slack),
            })?;
            record(rest, values);
        }
    }
    // The maximiser: the block with the largest known lower end.
    let argmax = (0..blocks_total).fold(0, |best, b| if lower[b] > lower[best] { b } else { best });
    let upper_squared = upper.iter().copied().fold(0.0, f64::max);
    let per_frequency = upper
        .chunks(groups)
        .map(|c| c.iter().copied().fold(0.0, f64::max))
        .collect();
    Ok(CircularNorm {
        upper: (upper_squared + margin).sqrt(),
        per_frequency,
        margin,
        frequency: argmax / groups,
        group: argmax % groups,
        visited: resolved.iter().filter(|&&r| r).count(),
        total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv::PaddingMode;
    use rand::{Rng, SeedableRng};

    fn random(len: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    /// Layers covering tall and wide blocks, groups, dilation, rectangular kernels and a
    /// kernel that wraps around the grid.
    fn layers() -> Vec<(Conv2d, Vec<f32>)> {
        let specs = [
            Conv2d::new(12, 8, [3, 3], [16, 16]),
            Conv2d::new(6, 20, [3, 2], [12, 14]),
            Conv2d::new(32, 32, [3, 3], [10, 12]).groups(2),
            Conv2d::new(16, 16, [3, 3], [16, 16]).dilation([2, 3]),
            Conv2d::new(16, 24, [5, 5], [4, 6]),
        ];
        specs
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let c = c.mode(PaddingMode::Circular);
                let w = random(c.weight_len(), i as u64);
                (c, w)
            })
            .collect()
    }

    fn every_block_exactly(conv: &Conv2d, w: &[f32], memory_limit: usize) -> Vec<f64> {
        let symbol = KernelSymbol::new(conv, w, conv.input);
        circular_norm(conv, w, &symbol, Scan::Every { slack: 1e-12 }, memory_limit)
            .unwrap()
            .per_frequency
    }

    #[test]
    fn tap_products_give_the_same_blocks_as_the_symbol() {
        for (conv, w) in layers() {
            let symbol = KernelSymbol::new(&conv, &w, conv.input);
            let taps = GramSource::new(&conv, &w, &symbol, usize::MAX);
            let (groups, og, cg) = symbol.block_shape();
            let expected: Vec<f64> = (0..symbol.frequencies())
                .map(|f| {
                    let mut blocks = vec![C64::default(); groups * og * cg];
                    symbol.blocks(f, &mut blocks);
                    blocks
                        .chunks(og * cg)
                        .map(|b| block_sigma_squared(b, og, cg).unwrap())
                        .fold(0.0, f64::max)
                })
                .collect();
            let got = every_block_exactly(&conv, &w, usize::MAX);
            for (f, (a, b)) in got.iter().zip(&expected).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-11 * b.max(1.0),
                    "{conv:?} f {f}: {a} vs {b}"
                );
            }
            // Both routes are exercised: the 5×5 kernel on a 4×6 grid is cheaper from the
            // symbol, every other layer from tap products.
            assert_eq!(taps.offsets.is_empty(), conv.kernel == [5, 5], "{conv:?}");
        }
    }

    #[test]
    fn the_certified_maximum_brackets_the_exact_one() {
        for (conv, w) in layers() {
            let symbol = KernelSymbol::new(&conv, &w, conv.input);
            let exact = every_block_exactly(&conv, &w, usize::MAX)
                .into_iter()
                .fold(0.0, f64::max);
            for slack in [1e-8, 1e-3] {
                let scan = Scan::Maximum { slack };
                let max = circular_norm(&conv, &w, &symbol, scan, usize::MAX).unwrap();
                let s = exact.sqrt();
                assert!(max.upper >= s, "{conv:?}: {} < {s}", max.upper);
                assert!(max.upper <= s * (1.0 + 2.0 * slack + 1e-12), "{conv:?}");
                // The maximiser found is the exact maximum's block (to the slack).
                let at = max.per_frequency[max.frequency];
                assert!(at >= exact * (1.0 - 1e-10), "{conv:?}: {at} vs {exact}");
            }
            // Gram iteration: an upper bound, looser than the exact maximum.
            let gram = circular_norm(&conv, &w, &symbol, Scan::Gram { squarings: 6 }, usize::MAX);
            let gram = gram.unwrap().upper;
            assert!(
                gram >= exact.sqrt() && gram <= exact.sqrt() * 1.1,
                "{conv:?}: {gram}"
            );
        }
    }

    #[test]
    fn cholesky_certifies_exactly_the_shifts_above_the_largest_eigenvalue() {
        let (conv, w) = layers().swap_remove(0);
        let symbol = KernelSymbol::new(&conv, &w, conv.input);
        let source = GramSource::new(&conv, &w, &symbol, usize::MAX);
        let n = source.n;
        let mut s = ScratchVectors {
            blocks: vec![C64::default(); 12 * 8],
            complex: vec![C64::default(); n * n],
            split: std::array::from_fn(|_| vec![0.0; n]),
            stack: MemBuffer::new(cholesky_in_place_scratch::<C64>(
                n,
                Par::Seq,
                Default::default(),
            )),
        };
        let mut planes = vec![Planes::new(n)];
        for f in [0, 5, 77] {
            source.assemble(&[f], &mut planes, &mut s);
            let lambda = s.exact(n, &planes[0]).unwrap();
            let above = s.certify(n, &planes[0], lambda * (1.0 + 1e-9), 1e3);
            assert!(above.is_some_and(|u| u >= lambda * (1.0 + 1e-9) && u < lambda * (1.0 + 1e-8)));
            assert!(s
                .certify(n, &planes[0], lambda * (1.0 - 1e-9), 1e3)
                .is_none());
            // The Lanczos estimate is a Rayleigh quotient (below), refined it converges.
            let (theta, _) = s.ritz(n, &planes[0], 3, 0.0).unwrap();
            assert!(theta <= lambda * (1.0 + 1e-12));
            let (theta, residual) = s.ritz(n, &planes[0], 200, 1e-12).unwrap();
            assert!((theta - lambda).abs() <= residual.max(1e-12 * lambda) * 1.01);
        }
    }

    #[test]
    fn an_all_zero_kernel_has_norm_zero() {
        let conv = Conv2d::new(20, 20, [3, 3], [8, 8]).mode(PaddingMode::Circular);
        let w = vec![0.0f32; conv.weight_len()];
        let symbol = KernelSymbol::new(&conv, &w, conv.input);
        let max = circular_norm(&conv, &w, &symbol, Scan::Maximum { slack: 1e-8 }, 1 << 30);
        assert!(max.unwrap().upper < 1e-100);
    }
}
