//! Forming the per-frequency Gram matrices `G(f) = M(f)ᴴM(f)` (or `MMᴴ`): from the kernel
//! symbol, or — cheaper for small kernels — from real tap products summed per tap offset,
//! `G(f) = Σ_Δ E_Δ·e^{iφ_Δ(f)}`; and the rounding margin every computed `σ₁²` carries.

use super::super::spectrum::{KernelSymbol, C64};
use super::super::Conv2d;
use super::block::ScratchVectors;
use crate::error::{Error, Result};
use crate::kernels::{axpy_pair, hermitian_column, UNIT_ROUNDOFF};
use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::evd::{self, ComputeEigenvectors};
use faer::{Mat, MatMut, MatRef, Par};
use rayon::prelude::*;

/// The smaller Gram matrix of `m` into `dst`: `MᴴM` when `M` is tall (or square), `MMᴴ` when
/// wide; both have the nonzero eigenvalues `σᵢ²`. Sequential, for reproducible results.
pub(super) fn smaller_gram<T: faer::traits::ComplexField>(m: MatRef<'_, T>, dst: MatMut<'_, T>) {
    let one = T::one_impl();
    if m.ncols() <= m.nrows() {
        faer::linalg::matmul::matmul(dst, faer::Accum::Replace, m.adjoint(), m, one, Par::Seq);
    } else {
        faer::linalg::matmul::matmul(dst, faer::Accum::Replace, m, m.adjoint(), one, Par::Seq);
    }
}

/// Largest eigenvalue of a Hermitian matrix (column-major, full), by faer's eigensolver.
pub(super) fn hermitian_largest_eigenvalue(g: MatRef<'_, C64>) -> Result<f64> {
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
pub(super) fn tap_norm_sum(conv: &Conv2d, weights: &[f32]) -> f64 {
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
pub(super) struct Planes {
    pub(super) re: Vec<f64>,
    pub(super) im: Vec<f64>,
}

impl Planes {
    pub(super) fn new(n: usize) -> Self {
        Planes {
            re: vec![0.0; n * n],
            im: vec![0.0; n * n],
        }
    }

    /// `y = Gx` from the lower triangle; `x` and `y` split into real and imaginary parts.
    pub(super) fn matvec(&self, n: usize, xr: &[f64], xi: &[f64], yr: &mut [f64], yi: &mut [f64]) {
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
    pub(super) fn shifted_negative(&self, n: usize, shift: f64, out: &mut [C64]) {
        for j in 0..n {
            for i in j..n {
                out[j * n + i] = C64::new(-self.re[j * n + i], -self.im[j * n + i]);
            }
            out[j * n + j] = C64::new(shift - self.re[j * n + j], 0.0);
        }
    }

    /// Writes the full Hermitian `G` as complex column-major into `out`.
    pub(super) fn full(&self, n: usize, out: &mut [C64]) {
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
pub(super) struct GramSource<'a> {
    pub(super) symbol: &'a KernelSymbol,
    /// Size of the smaller Gram matrix.
    pub(super) n: usize,
    /// Tap route: the offsets `Δ = (Δp·d_h, Δq·d_w)` of one half (`Δp > 0`, or `Δp = 0 < Δq`)
    /// in grid units, and per group the real `n × n` terms (column-major) `[E_0,
    /// E_Δ + E_Δᵀ, E_Δ − E_Δᵀ, …]`, so that `Re G(f) = E_0 + Σ_Δ (E_Δ + E_Δᵀ) cos φ_Δ(f)`
    /// and `Im G(f) = Σ_Δ (E_Δ − E_Δᵀ) sin φ_Δ(f)` (`E_{−Δ} = E_Δᵀ`). Empty: the symbol route.
    pub(super) offsets: Vec<[i64; 2]>,
    pub(super) terms: Vec<f64>,
}

impl<'a> GramSource<'a> {
    /// Chooses the cheaper way to form `G(f)` and prepares it. Tap products are used when
    /// they cost fewer flops than a complex GEMM per frequency and their matrices fit in a
    /// quarter of `memory_limit`.
    pub(super) fn new(
        conv: &Conv2d,
        weights: &[f32],
        symbol: &'a KernelSymbol,
        memory_limit: usize,
    ) -> Self {
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
        let deltas = tap_offsets(kh, kw);
        let sums = offset_sums(conv, weights, symbol, &deltas);
        let terms = split_terms(&sums, &deltas, groups, n);
        let [dh, dw] = conv.dilation.map(|d| d as i64);
        source.offsets = deltas[1..].iter().map(|&[a, b]| [a * dh, b * dw]).collect();
        source.terms = terms;
        source
    }

    /// Assembles the blocks `items` (index `f·groups + g`) into `planes` (one each).
    pub(super) fn assemble(&self, items: &[usize], planes: &mut [Planes], s: &mut ScratchVectors) {
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

/// The tap offsets `Δ = (Δp, Δq)` whose products are summed: `Δ = 0` first, then one half
/// (`Δp > 0`, or `Δp = 0 < Δq`; the other half are transposes).
fn tap_offsets(kh: usize, kw: usize) -> Vec<[i64; 2]> {
    let (kh_i, kw_i) = (kh as i64, kw as i64);
    // Δ = 0 first, then the half.
    std::iter::once([0, 0])
        .chain(
            (0..kh_i)
                .flat_map(|a| (-(kw_i - 1)..kw_i).map(move |b| [a, b]))
                .filter(|&[a, b]| a > 0 || b > 0),
        )
        .collect()
}

/// `E_Δ = Σ_{t' − t = Δ} F_tᵀ F_{t'}` per (group, Δ), in a fixed order, with `F_t` (`k × n`)
/// the tap's channel matrix, transposed when wide (both give Grams with eigenvalues `σᵢ²`).
fn offset_sums(
    conv: &Conv2d,
    weights: &[f32],
    symbol: &KernelSymbol,
    deltas: &[[i64; 2]],
) -> Vec<f64> {
    let (groups, og, cg) = symbol.block_shape();
    let (n, k) = (og.min(cg), og.max(cg));
    let (kh, kw) = (conv.kernel[0], conv.kernel[1]);
    let taps = kh * kw;
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
    sums
}

/// Per group, the real terms `[E_0, E_Δ + E_Δᵀ, E_Δ − E_Δᵀ, …]` of `Re G(f)` and `Im G(f)`.
fn split_terms(sums: &[f64], deltas: &[[i64; 2]], groups: usize, n: usize) -> Vec<f64> {
    let per_group = 2 * deltas.len() - 1;
    let mut terms = vec![0.0f64; groups * per_group * n * n];
    terms
        .par_chunks_mut(per_group * n * n)
        .enumerate()
        .for_each(|(g, dst)| {
            let e = |d: usize| &sums[(g * deltas.len() + d) * n * n..][..n * n];
            dst[..n * n].copy_from_slice(e(0));
            for d in 1..deltas.len() {
                let src = e(d);
                let (sym, anti) = dst[(2 * d - 1) * n * n..(2 * d + 1) * n * n].split_at_mut(n * n);
                for j in 0..n {
                    for i in 0..n {
                        sym[j * n + i] = src[j * n + i] + src[i * n + j];
                        anti[j * n + i] = src[j * n + i] - src[i * n + j];
                    }
                }
            }
        });
    terms
}
