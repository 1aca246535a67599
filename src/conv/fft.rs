//! The FFT convolution operator: real 2-D FFTs in `f32`, the kernel spectrum computed once per
//! layer and cached, channel mixing per frequency.
//!
//! The layer is `sample ∘ (circular correlation on an N_h × N_w grid) ∘ embed`:
//! * zero padding: the input sits at offset `(pad_top, pad_left)` of a grid at least as large
//!   as the padded input (an FFT-friendly size), so no read wraps around;
//! * circular padding: the grid is the image itself; taps that reach beyond it wrap and are
//!   added (aliasing), and the output samples rows `(i·s − pad_top) mod H`.
//!
//! Per frequency `f`, `Ŷ(f) = M(f)·X̂(f)` with `M(f) = conj(Ŵ(f))`, one `C_out/g × C_in/g`
//! complex block per group; the adjoint uses `M(f)ᴴ` and scatters the output back onto the
//! grid (adding where circular outputs coincide). Stride subsamples on the way out and
//! zero-inserts on the way back.
//!
//! A block of `b` vectors streams the spectrum once: each frequency block multiplies a
//! `C_in/g × b` matrix.

use super::spectrum::KernelSymbol;
use super::{Conv2d, PaddingMode};
use crate::error::{Error, Result};
use crate::operator::LinearOperator;
use crate::util::DisjointWrites;
use num_complex::Complex;
use rayon::prelude::*;
use realfft::{ComplexToReal, RealFftPlanner, RealToComplex};
use rustfft::{Fft, FftPlanner};
use std::sync::{Arc, Mutex};

type C32 = Complex<f32>;

/// Frequencies handled per mixing task (the gathers read this many consecutive values).
const FREQ_CHUNK: usize = 64;

/// The smallest `n' ≥ n` whose prime factors are 2, 3, 5 and 7.
pub(crate) fn fft_friendly(n: usize) -> usize {
    let mut m = n.max(1);
    loop {
        let mut r = m;
        for p in [2, 3, 5, 7] {
            while r.is_multiple_of(p) {
                r /= p;
            }
        }
        if r == 1 {
            return m;
        }
        m += 1;
    }
}

/// A real 2-D FFT on an `nh × nw` grid: rows by real FFTs, then columns by complex FFTs on
/// the transposed half-spectrum. Spectra are stored `[wf][nh]` (column-major frequencies).
struct Fft2 {
    nh: usize,
    nw: usize,
    wf: usize,
    r2c: Arc<dyn RealToComplex<f32>>,
    c2r: Arc<dyn ComplexToReal<f32>>,
    col_fwd: Arc<dyn Fft<f32>>,
    col_inv: Arc<dyn Fft<f32>>,
    scratch_len: usize,
}

/// Per-task buffers of one 2-D transform.
struct Work {
    grid: Vec<f32>,
    rows: Vec<C32>,
    spectrum: Vec<C32>,
    scratch: Vec<C32>,
}

impl Fft2 {
    fn new(nh: usize, nw: usize) -> Fft2 {
        let mut real = RealFftPlanner::<f32>::new();
        let mut cplx = FftPlanner::<f32>::new();
        let r2c = real.plan_fft_forward(nw);
        let c2r = real.plan_fft_inverse(nw);
        let col_fwd = cplx.plan_fft_forward(nh);
        let col_inv = cplx.plan_fft_inverse(nh);
        let scratch_len = [
            r2c.get_scratch_len(),
            c2r.get_scratch_len(),
            col_fwd.get_inplace_scratch_len(),
            col_inv.get_inplace_scratch_len(),
        ]
        .into_iter()
        .max()
        .unwrap_or(0);
        Fft2 {
            nh,
            nw,
            wf: nw / 2 + 1,
            r2c,
            c2r,
            col_fwd,
            col_inv,
            scratch_len,
        }
    }

    fn work(&self) -> Work {
        Work {
            grid: vec![0.0; self.nh * self.nw],
            rows: vec![C32::default(); self.nh * self.wf],
            spectrum: vec![C32::default(); self.nh * self.wf],
            scratch: vec![C32::default(); self.scratch_len.max(1)],
        }
    }

    /// `work.grid` (destroyed) → `work.spectrum` in `[wf][nh]` order.
    fn forward(&self, work: &mut Work) {
        let (nw, wf) = (self.nw, self.wf);
        for (row, out) in work
            .grid
            .chunks_exact_mut(nw)
            .zip(work.rows.chunks_exact_mut(wf))
        {
            // Lengths are right by construction, so the only error (length) cannot occur.
            let _ = self.r2c.process_with_scratch(row, out, &mut work.scratch);
        }
        transpose::transpose(&work.rows, &mut work.spectrum, wf, self.nh);
        self.col_fwd
            .process_with_scratch(&mut work.spectrum, &mut work.scratch);
    }

    /// `work.spectrum` (destroyed) in `[wf][nh]` order → `work.grid`, unnormalised.
    fn inverse(&self, work: &mut Work) {
        let (nw, wf) = (self.nw, self.wf);
        self.col_inv
            .process_with_scratch(&mut work.spectrum, &mut work.scratch);
        transpose::transpose(&work.spectrum, &mut work.rows, self.nh, wf);
        for (spec, row) in work
            .rows
            .chunks_exact_mut(wf)
            .zip(work.grid.chunks_exact_mut(nw))
        {
            // A real row's DC (and even-length Nyquist) bins are real: drop rounding noise.
            spec[0].im = 0.0;
            if nw.is_multiple_of(2) {
                spec[wf - 1].im = 0.0;
            }
            let _ = self.c2r.process_with_scratch(spec, row, &mut work.scratch);
        }
    }
}

/// FFT convolution in `f32` with a cached kernel spectrum.
pub struct FftConv2d {
    conv: Conv2d,
    out: [usize; 2],
    fft: Fft2,
    freqs: usize,
    in_offset: [usize; 2],
    out_rows: Vec<usize>,
    out_cols: Vec<usize>,
    /// `M(f)` per group: `[g][f][o][c]`, real and imaginary parts apart.
    spec_re: Vec<f32>,
    spec_im: Vec<f32>,
    error: f64,
    works: Mutex<Vec<Work>>,
    /// Reusable spectrum buffers (activations' spectra are large: no fresh pages per call).
    buffers: Mutex<Vec<Vec<C32>>>,
}

impl FftConv2d {
    /// Grid size for a layer: the padded input rounded up to an FFT-friendly size (zero
    /// padding), or the image itself (circular).
    pub fn grid_size(conv: &Conv2d) -> [usize; 2] {
        match conv.padding_mode {
            PaddingMode::Circular => conv.input,
            PaddingMode::Zeros => {
                let p = conv.padded_size();
                [fft_friendly(p[0]), fft_friendly(p[1])]
            }
        }
    }

    /// Bytes the operator needs for its spectrum plus the work buffers of `b`-vector blocks.
    pub fn estimate_memory(conv: &Conv2d, b: usize) -> u128 {
        let [nh, nw] = Self::grid_size(conv);
        let freqs = (nh as u128) * (nw as u128 / 2 + 1);
        let spectrum = freqs * conv.out_channels as u128 * conv.group_in() as u128 * 8;
        let per_vector = freqs * (conv.in_channels + conv.out_channels) as u128 * 8;
        let threads = rayon::current_num_threads() as u128;
        spectrum + per_vector * b as u128 + threads * (nh as u128 * nw as u128) * 24
    }

    /// Builds the operator, computing the kernel spectrum. Refuses when the estimate for a
    /// single vector exceeds `memory_limit` bytes (use [`super::DirectConv2d`] then).
    pub fn new(conv: &Conv2d, weights: &[f32], memory_limit: usize) -> Result<Self> {
        conv.validate_weights(weights)?;
        let needed = Self::estimate_memory(conv, 1);
        if needed > memory_limit as u128 {
            return Err(Error::TooLarge {
                what: format!(
                    "FFT conv operator (kernel spectrum on a {:?} grid for {}→{} channels)",
                    Self::grid_size(conv),
                    conv.in_channels,
                    conv.out_channels
                ),
                needed,
                limit: memory_limit as u128,
            });
        }
        let out = conv.output_size()?;
        let [nh, nw] = Self::grid_size(conv);
        let fft = Fft2::new(nh, nw);
        let freqs = nh * fft.wf;
        let (in_offset, out_rows, out_cols) = match conv.padding_mode {
            PaddingMode::Zeros => (
                [conv.pads[0], conv.pads[1]],
                (0..out[0]).map(|i| i * conv.stride[0]).collect(),
                (0..out[1]).map(|j| j * conv.stride[1]).collect(),
            ),
            PaddingMode::Circular => {
                let wrap = |i: usize, s: usize, pad: usize, n: usize| {
                    ((i * s) as i64 - pad as i64).rem_euclid(n as i64) as usize
                };
                (
                    [0, 0],
                    (0..out[0])
                        .map(|i| wrap(i, conv.stride[0], conv.pads[0], nh))
                        .collect(),
                    (0..out[1])
                        .map(|j| wrap(j, conv.stride[1], conv.pads[1], nw))
                        .collect(),
                )
            }
        };
        let (spec_re, spec_im, max_frobenius) = kernel_spectrum(conv, weights, nh, nw);
        // Rounding: FFTs (≈ log₂ of the grid per pass, two passes) and a K-term mixing sum in
        // f32, plus the spectrum's own rounding; ‖|M(f)|‖ ≤ ‖M(f)‖_F.
        let u32_ = f32::EPSILON as f64 / 2.0;
        let log_grid = ((nh * nw) as f64).log2().ceil();
        let k_mix = conv.group_in().max(conv.group_out()) as f64;
        let error = 4.0 * u32_ * (4.0 * log_grid + k_mix + 4.0) * max_frobenius;
        Ok(FftConv2d {
            conv: conv.clone(),
            out,
            fft,
            freqs,
            in_offset,
            out_rows,
            out_cols,
            spec_re,
            spec_im,
            error,
            works: Mutex::new(Vec::new()),
            buffers: Mutex::new(Vec::new()),
        })
    }

    /// The layer description.
    pub fn conv(&self) -> &Conv2d {
        &self.conv
    }

    /// The FFT grid `[N_h, N_w]`.
    pub fn grid(&self) -> [usize; 2] {
        [self.fft.nh, self.fft.nw]
    }

    /// Bytes held by the cached spectrum.
    pub fn spectrum_bytes(&self) -> usize {
        (self.spec_re.len() + self.spec_im.len()) * 4
    }

    fn take_work(&self) -> Work {
        self.works
            .lock()
            .ok()
            .and_then(|mut w| w.pop())
            .unwrap_or_else(|| self.fft.work())
    }

    fn take_buffer(&self, len: usize) -> Vec<C32> {
        let mut buf = self
            .buffers
            .lock()
            .ok()
            .and_then(|mut b| b.pop())
            .unwrap_or_default();
        buf.resize(len, C32::default());
        buf
    }

    fn give_buffer(&self, buf: Vec<C32>) {
        if let Ok(mut b) = self.buffers.lock() {
            b.push(buf);
        }
    }

    fn give_work(&self, work: Work) {
        if let Ok(mut w) = self.works.lock() {
            w.push(work);
        }
    }

    /// Transforms `b·channels` real planes (produced into the grid by `fill`) into spectra.
    fn spectra<F>(&self, planes: usize, fill: F) -> Vec<C32>
    where
        F: Fn(usize, &mut [f32]) + Sync,
    {
        let freqs = self.freqs;
        let mut out = self.take_buffer(planes * freqs);
        out.par_chunks_mut(freqs)
            .enumerate()
            .for_each(|(plane, dst)| {
                let mut work = self.take_work();
                work.grid.fill(0.0);
                fill(plane, &mut work.grid);
                self.fft.forward(&mut work);
                dst.copy_from_slice(&work.spectrum);
                self.give_work(work);
            });
        out
    }

    /// Inverse-transforms each plane's spectrum and hands the real grid to `read`.
    fn planes<F>(&self, spectra: &mut [C32], read: F)
    where
        F: Fn(usize, &[f32]) + Sync,
    {
        spectra
            .par_chunks_mut(self.freqs)
            .enumerate()
            .for_each(|(plane, src)| {
                let mut work = self.take_work();
                work.spectrum.copy_from_slice(src);
                self.fft.inverse(&mut work);
                read(plane, &work.grid);
                self.give_work(work);
            });
    }

    /// Per frequency and group: `dst[o] = Σ_c M[o][c]·src[c]` (or `Mᴴ` when `adjoint`), for
    /// `b` vectors. `src` holds `b·c_src` spectra, `dst` receives `b·c_dst`.
    fn mix(&self, src: &[C32], b: usize, adjoint: bool) -> Vec<C32> {
        let c = &self.conv;
        let (g, cg, og) = (c.groups, c.group_in(), c.group_out());
        let (c_src, c_dst, n_src, n_dst) = if adjoint {
            (c.out_channels, c.in_channels, og, cg)
        } else {
            (c.in_channels, c.out_channels, cg, og)
        };
        let freqs = self.freqs;
        let mut dst = self.take_buffer(b * c_dst * freqs);
        let out = DisjointWrites::new(&mut dst);
        let chunks = freqs.div_ceil(FREQ_CHUNK);
        (0..chunks).into_par_iter().for_each(|chunk| {
            let f0 = chunk * FREQ_CHUNK;
            let f1 = (f0 + FREQ_CHUNK).min(freqs);
            // Split re/im, vector index fastest: xs[(s·b + k)], ys[(d·b + k)].
            let mut xr = vec![0.0f32; n_src * b];
            let mut xi = vec![0.0f32; n_src * b];
            let mut yr = vec![0.0f32; n_dst * b];
            let mut yi = vec![0.0f32; n_dst * b];
            for gi in 0..g {
                for f in f0..f1 {
                    for s in 0..n_src {
                        for k in 0..b {
                            let v = src[(k * c_src + gi * n_src + s) * freqs + f];
                            xr[s * b + k] = v.re;
                            xi[s * b + k] = v.im;
                        }
                    }
                    let base = (gi * freqs + f) * og * cg;
                    let mr = &self.spec_re[base..base + og * cg];
                    let mi = &self.spec_im[base..base + og * cg];
                    let blocks = MixBlocks {
                        mr,
                        mi,
                        xr: &xr,
                        xi: &xi,
                        yr: &mut yr,
                        yi: &mut yi,
                    };
                    mix_one(blocks, og, cg, b, adjoint);
                    for d in 0..n_dst {
                        for k in 0..b {
                            let index = (k * c_dst + gi * n_dst + d) * freqs + f;
                            // SAFETY: frequency f belongs to this task alone.
                            unsafe { out.write(index, C32::new(yr[d * b + k], yi[d * b + k])) };
                        }
                    }
                }
            }
        });
        dst
    }
}

/// One frequency's operands for [`mix_one`]: the block `M` (split re/im, `og × cg`
/// row-major) and split source/destination vectors, vector index fastest.
struct MixBlocks<'a> {
    mr: &'a [f32],
    mi: &'a [f32],
    xr: &'a [f32],
    xi: &'a [f32],
    yr: &'a mut [f32],
    yi: &'a mut [f32],
}

/// Accumulators of the single-vector dot products over channels (fixed order, so every
/// instruction set gives the same bits).
const MIX_LANES: usize = 16;

/// `y = M·x` (or `Mᴴ·x`) for one frequency block, dispatched to AVX-512/AVX2 builds.
fn mix_one(blocks: MixBlocks<'_>, og: usize, cg: usize, b: usize, adjoint: bool) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx2,fma")]
        unsafe fn v4(blocks: MixBlocks<'_>, og: usize, cg: usize, b: usize, adjoint: bool) {
            mix_body(blocks, og, cg, b, adjoint)
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn v3(blocks: MixBlocks<'_>, og: usize, cg: usize, b: usize, adjoint: bool) {
            mix_body(blocks, og, cg, b, adjoint)
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports the features `v4` was compiled for.
            return unsafe { v4(blocks, og, cg, b, adjoint) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports the features `v3` was compiled for.
            return unsafe { v3(blocks, og, cg, b, adjoint) };
        }
    }
    mix_body(blocks, og, cg, b, adjoint)
}

#[inline(always)]
fn mix_body(blocks: MixBlocks<'_>, og: usize, cg: usize, b: usize, adjoint: bool) {
    let MixBlocks {
        mr,
        mi,
        xr,
        xi,
        yr,
        yi,
    } = blocks;
    yr.fill(0.0);
    yi.fill(0.0);
    match (adjoint, b) {
        (false, 1) => {
            // y[o] = Σ_c M[o][c]·x[c]: dot products over contiguous rows of M.
            for o in 0..og {
                let (row_r, row_i) = (&mr[o * cg..(o + 1) * cg], &mi[o * cg..(o + 1) * cg]);
                let mut sr = [0.0f32; MIX_LANES];
                let mut si = [0.0f32; MIX_LANES];
                let full = cg / MIX_LANES * MIX_LANES;
                for c0 in (0..full).step_by(MIX_LANES) {
                    for l in 0..MIX_LANES {
                        let c = c0 + l;
                        sr[l] = row_r[c].mul_add(xr[c], (-row_i[c]).mul_add(xi[c], sr[l]));
                        si[l] = row_r[c].mul_add(xi[c], row_i[c].mul_add(xr[c], si[l]));
                    }
                }
                let (mut tr, mut ti) = (0.0f32, 0.0f32);
                for c in full..cg {
                    tr += row_r[c] * xr[c] - row_i[c] * xi[c];
                    ti += row_r[c] * xi[c] + row_i[c] * xr[c];
                }
                yr[o] = sr.iter().sum::<f32>() + tr;
                yi[o] = si.iter().sum::<f32>() + ti;
            }
        }
        (true, 1) => {
            // y[c] += conj(M[o][c])·x[o]: axpys over contiguous rows of M.
            for o in 0..og {
                let (xro, xio) = (xr[o], xi[o]);
                let (row_r, row_i) = (&mr[o * cg..(o + 1) * cg], &mi[o * cg..(o + 1) * cg]);
                for c in 0..cg {
                    yr[c] = row_r[c].mul_add(xro, row_i[c].mul_add(xio, yr[c]));
                    yi[c] = row_r[c].mul_add(xio, (-row_i[c]).mul_add(xro, yi[c]));
                }
            }
        }
        (false, _) => {
            let mut k0 = 0;
            while k0 + TILE_LANES <= b {
                mix_tile::<false>(mr, mi, xr, xi, yr, yi, og, cg, b, k0);
                k0 += TILE_LANES;
            }
            mix_tail::<false>(mr, mi, xr, xi, yr, yi, og, cg, b, k0);
        }
        (true, _) => {
            let mut k0 = 0;
            while k0 + TILE_LANES <= b {
                mix_tile::<true>(mr, mi, xr, xi, yr, yi, og, cg, b, k0);
                k0 += TILE_LANES;
            }
            mix_tail::<true>(mr, mi, xr, xi, yr, yi, og, cg, b, k0);
        }
    }
}

/// Vectors per register tile of the block mixing kernel.
const TILE_LANES: usize = 8;
/// Destination channels per register tile.
const TILE_ROWS: usize = 4;

/// `M`'s entry coupling destination `d` and source `s`: `(re, im)` of `M[d][s]` for the
/// forward map, of `conj(M[s][d])` for the adjoint.
#[inline(always)]
fn coupling<const ADJOINT: bool>(
    mr: &[f32],
    mi: &[f32],
    cg: usize,
    d: usize,
    s: usize,
) -> (f32, f32) {
    if ADJOINT {
        (mr[s * cg + d], -mi[s * cg + d])
    } else {
        (mr[d * cg + s], mi[d * cg + s])
    }
}

/// Lanes `[k0, k0 + 8)` of `y = M·x` (or `Mᴴ·x`) with a 4 × 8 register tile of accumulators.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn mix_tile<const ADJOINT: bool>(
    mr: &[f32],
    mi: &[f32],
    xr: &[f32],
    xi: &[f32],
    yr: &mut [f32],
    yi: &mut [f32],
    og: usize,
    cg: usize,
    b: usize,
    k0: usize,
) {
    let (n_dst, n_src) = if ADJOINT { (cg, og) } else { (og, cg) };
    let mut d0 = 0;
    while d0 < n_dst {
        let rows = (n_dst - d0).min(TILE_ROWS);
        let mut acc_r = [[0.0f32; TILE_LANES]; TILE_ROWS];
        let mut acc_i = [[0.0f32; TILE_LANES]; TILE_ROWS];
        for s in 0..n_src {
            let x_r: &[f32; TILE_LANES] = xr[s * b + k0..s * b + k0 + TILE_LANES]
                .try_into()
                .expect("tile");
            let x_i: &[f32; TILE_LANES] = xi[s * b + k0..s * b + k0 + TILE_LANES]
                .try_into()
                .expect("tile");
            for r in 0..TILE_ROWS {
                if r < rows {
                    let (ar, ai) = coupling::<ADJOINT>(mr, mi, cg, d0 + r, s);
                    for l in 0..TILE_LANES {
                        acc_r[r][l] = ar.mul_add(x_r[l], (-ai).mul_add(x_i[l], acc_r[r][l]));
                        acc_i[r][l] = ar.mul_add(x_i[l], ai.mul_add(x_r[l], acc_i[r][l]));
                    }
                }
            }
        }
        for r in 0..rows {
            let d = d0 + r;
            yr[d * b + k0..d * b + k0 + TILE_LANES].copy_from_slice(&acc_r[r]);
            yi[d * b + k0..d * b + k0 + TILE_LANES].copy_from_slice(&acc_i[r]);
        }
        d0 += rows;
    }
}

/// The lanes `[k0, b)` left over by [`mix_tile`], one at a time.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn mix_tail<const ADJOINT: bool>(
    mr: &[f32],
    mi: &[f32],
    xr: &[f32],
    xi: &[f32],
    yr: &mut [f32],
    yi: &mut [f32],
    og: usize,
    cg: usize,
    b: usize,
    k0: usize,
) {
    let (n_dst, n_src) = if ADJOINT { (cg, og) } else { (og, cg) };
    for k in k0..b {
        for d in 0..n_dst {
            let (mut sr, mut si) = (0.0f32, 0.0f32);
            for s in 0..n_src {
                let (ar, ai) = coupling::<ADJOINT>(mr, mi, cg, d, s);
                sr = ar.mul_add(xr[s * b + k], (-ai).mul_add(xi[s * b + k], sr));
                si = ar.mul_add(xi[s * b + k], ai.mul_add(xr[s * b + k], si));
            }
            yr[d * b + k] = sr;
            yi[d * b + k] = si;
        }
    }
}

/// `M(f) = conj(Ŵ(f))` for every group, frequency and channel pair, from the layer's
/// [`KernelSymbol`] (computed in `f64`, stored in `f32` as `[g][f][o][c]`, re/im apart). Also
/// returns `max_f ‖M(f)‖_F` (over groups: the blocks act on disjoint channels).
fn kernel_spectrum(
    conv: &Conv2d,
    weights: &[f32],
    nh: usize,
    nw: usize,
) -> (Vec<f32>, Vec<f32>, f64) {
    let symbol = KernelSymbol::new(conv, weights, [nh, nw]);
    let freqs = symbol.frequencies();
    let (g, og, cg) = symbol.block_shape();
    let block = og * cg;
    let mut re = vec![0f32; g * freqs * block];
    let mut im = vec![0f32; g * freqs * block];
    let re_out = DisjointWrites::new(&mut re);
    let im_out = DisjointWrites::new(&mut im);
    let frob: Vec<f64> = (0..freqs)
        .into_par_iter()
        .map_init(
            || vec![Complex::<f64>::default(); g * block],
            |blocks, f| {
                symbol.blocks(f, blocks);
                let mut frob_f = 0.0f64;
                for gi in 0..g {
                    let mut frob_g = 0.0;
                    for (j, v) in blocks[gi * block..(gi + 1) * block].iter().enumerate() {
                        frob_g += v.norm_sqr();
                        let index = (gi * freqs + f) * block + j;
                        // SAFETY: frequency f's entries are written by this task alone.
                        unsafe {
                            re_out.write(index, v.re as f32);
                            im_out.write(index, v.im as f32);
                        }
                    }
                    frob_f = frob_f.max(frob_g);
                }
                frob_f
            },
        )
        .collect();
    let max_frobenius = frob.iter().fold(0.0f64, |m, v| m.max(*v)).sqrt();
    (re, im, max_frobenius)
}

impl LinearOperator for FftConv2d {
    fn input_len(&self) -> usize {
        self.conv.input_len()
    }

    fn output_len(&self) -> usize {
        self.conv.out_channels * self.out[0] * self.out[1]
    }

    fn forward(&self, x: &[f64], y: &mut [f64]) {
        self.forward_block(x, y, 1)
    }

    fn adjoint(&self, y: &[f64], x: &mut [f64]) {
        self.adjoint_block(y, x, 1)
    }

    fn forward_error(&self) -> f64 {
        self.error
    }

    fn forward_block(&self, x: &[f64], y: &mut [f64], b: usize) {
        let c = &self.conv;
        let (h, w) = (c.input[0], c.input[1]);
        let (ho, wo) = (self.out[0], self.out[1]);
        let nw = self.fft.nw;
        let [oh, ow] = self.in_offset;
        let x_spec = self.spectra(b * c.in_channels, |plane, grid| {
            let src = &x[plane * h * w..(plane + 1) * h * w];
            for a in 0..h {
                let row = &mut grid[(a + oh) * nw + ow..(a + oh) * nw + ow + w];
                for (g, v) in row.iter_mut().zip(&src[a * w..(a + 1) * w]) {
                    *g = *v as f32;
                }
            }
        });
        let mut y_spec = self.mix(&x_spec, b, false);
        self.give_buffer(x_spec);
        let scale = 1.0 / (self.fft.nh * nw) as f64;
        let out = DisjointWrites::new(y);
        self.planes(&mut y_spec, |plane, grid| {
            for (i, &r) in self.out_rows.iter().enumerate() {
                for (j, &cidx) in self.out_cols.iter().enumerate() {
                    // SAFETY: plane (vector, channel) alone writes its output plane.
                    unsafe {
                        out.write(
                            plane * ho * wo + i * wo + j,
                            grid[r * nw + cidx] as f64 * scale,
                        )
                    };
                }
            }
        });
    }

    fn adjoint_block(&self, y: &[f64], x: &mut [f64], b: usize) {
        let c = &self.conv;
        let (h, w) = (c.input[0], c.input[1]);
        let (ho, wo) = (self.out[0], self.out[1]);
        let nw = self.fft.nw;
        let [oh, ow] = self.in_offset;
        let y_spec = self.spectra(b * c.out_channels, |plane, grid| {
            let src = &y[plane * ho * wo..(plane + 1) * ho * wo];
            for (i, &r) in self.out_rows.iter().enumerate() {
                for (j, &cidx) in self.out_cols.iter().enumerate() {
                    grid[r * nw + cidx] += src[i * wo + j] as f32;
                }
            }
        });
        let mut x_spec = self.mix(&y_spec, b, true);
        self.give_buffer(y_spec);
        let scale = 1.0 / (self.fft.nh * nw) as f64;
        let out = DisjointWrites::new(x);
        self.planes(&mut x_spec, |plane, grid| {
            for a in 0..h {
                let row = &grid[(a + oh) * nw + ow..(a + oh) * nw + ow + w];
                for (bcol, v) in row.iter().enumerate() {
                    // SAFETY: plane (vector, channel) alone writes its input plane.
                    unsafe { out.write(plane * h * w + a * w + bcol, *v as f64 * scale) };
                }
            }
        });
        self.give_buffer(x_spec);
    }
}
