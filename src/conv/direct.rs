//! The direct convolution operator: im2col + GEMM (faer) in `f64`, an honest baseline and the
//! accurate reference that certified lower bounds are evaluated with.
//!
//! Forward: for each group and band of output rows, gather the receptive fields into a
//! `(C_in/g·kH·kW) × positions` matrix and multiply by the group's weight matrix.
//! Adjoint: the same in gather form on the input side — for each band of input rows, gather
//! every output that reads a pixel through tap `(p, q)` (summing when circular padding wraps
//! several outputs onto one pixel) and multiply by the transposed weights. Both passes write
//! disjoint parts of their result, so they are parallel and deterministic.

use super::Conv2d;
use crate::error::Result;
use crate::kernels::gamma;
use crate::operator::LinearOperator;
use crate::util::{BufferPool, DisjointWrites};
use faer::linalg::matmul::matmul;
use faer::{Accum, MatRef, Par};
use rayon::prelude::*;
use std::borrow::Cow;

/// Elements of an im2col tile we aim for (8 MB of `f64`).
const TILE_ELEMENTS: usize = 1 << 20;

/// Sparse map from one index to the list of indices that reach it (CSR layout).
#[derive(Debug, Clone)]
struct Inverse {
    start: Vec<usize>,
    items: Vec<usize>,
}

impl Inverse {
    fn get(&self, key: usize) -> &[usize] {
        &self.items[self.start[key]..self.start[key + 1]]
    }
}

/// Per axis: `forward[i·k + p]` = input index read by output `i` through tap `p` (or NONE),
/// and for the adjoint, `inverse[p·n + a]` = outputs `i` that read input `a` through tap `p`.
#[derive(Debug, Clone)]
struct AxisMap {
    forward: Vec<usize>,
    inverse: Inverse,
    max_multiplicity: usize,
}

const NONE: usize = usize::MAX;

impl AxisMap {
    fn new(conv: &Conv2d, axis: usize, out_len: usize) -> AxisMap {
        let (k, n) = (conv.kernel[axis], conv.input[axis]);
        let mut forward = vec![NONE; out_len * k];
        let mut lists = vec![Vec::new(); k * n];
        for i in 0..out_len {
            for p in 0..k {
                if let Some(a) = conv.source_index(axis, i, p) {
                    forward[i * k + p] = a;
                    lists[p * n + a].push(i);
                }
            }
        }
        let max_multiplicity = lists.iter().map(Vec::len).max().unwrap_or(0);
        let mut start = Vec::with_capacity(lists.len() + 1);
        let mut items = Vec::new();
        start.push(0);
        for l in &lists {
            items.extend_from_slice(l);
            start.push(items.len());
        }
        AxisMap {
            forward,
            inverse: Inverse { start, items },
            max_multiplicity,
        }
    }
}

/// Direct (im2col + GEMM) convolution in `f64`.
pub struct DirectConv2d<'a> {
    conv: Conv2d,
    out: [usize; 2],
    weights: Cow<'a, [f32]>,
    /// Per group, `C_out/g × K` row-major (`K = C_in/g·kH·kW`), in `f64`.
    forward_weights: Vec<f64>,
    /// Per group, `C_in/g × K'` row-major (`K' = C_out/g·kH·kW`), the adjoint's weights.
    adjoint_weights: Vec<f64>,
    rows: AxisMap,
    cols: AxisMap,
    error: f64,
    pool: BufferPool,
}

impl<'a> DirectConv2d<'a> {
    /// Validates the layer and weights (OIHW) and prepares both passes.
    pub fn new(conv: &Conv2d, weights: &'a [f32]) -> Result<Self> {
        conv.validate_weights(weights)?;
        let out = conv.output_size()?;
        let (g, cg, og) = (conv.groups, conv.group_in(), conv.group_out());
        let taps = conv.kernel[0] * conv.kernel[1];
        let forward_weights: Vec<f64> = weights.iter().map(|&v| v as f64).collect();
        let k_adj = og * taps;
        let mut adjoint_weights = vec![0.0; g * cg * k_adj];
        for gi in 0..g {
            for o in 0..og {
                for c in 0..cg {
                    for t in 0..taps {
                        let w = forward_weights[((gi * og + o) * cg + c) * taps + t];
                        adjoint_weights[(gi * cg + c) * k_adj + o * taps + t] = w;
                    }
                }
            }
        }
        let rows = AxisMap::new(conv, 0, out[0]);
        let cols = AxisMap::new(conv, 1, out[1]);
        // ‖fl(Ax) − Ax‖ ≤ γ_K·‖|A|‖₂‖x‖ and ‖|A|‖₂ ≤ √(‖|A|‖₁‖|A|‖∞).
        let abs_row = (0..conv.out_channels)
            .map(|o| {
                weights[o * cg * taps..(o + 1) * cg * taps]
                    .iter()
                    .map(|v| v.abs() as f64)
                    .sum::<f64>()
            })
            .fold(0.0, f64::max);
        let abs_col = (0..conv.in_channels)
            .map(|ci| {
                let (gi, c) = (ci / cg, ci % cg);
                (0..og)
                    .map(|o| {
                        let base = ((gi * og + o) * cg + c) * taps;
                        weights[base..base + taps]
                            .iter()
                            .map(|v| v.abs() as f64)
                            .sum::<f64>()
                    })
                    .sum::<f64>()
            })
            .fold(0.0, f64::max)
            * (rows.max_multiplicity * cols.max_multiplicity) as f64;
        let error = gamma(cg.max(og) * taps + 4) * (abs_row * abs_col).sqrt();
        Ok(DirectConv2d {
            conv: conv.clone(),
            out,
            weights: Cow::Borrowed(weights),
            forward_weights,
            adjoint_weights,
            rows,
            cols,
            error,
            pool: BufferPool::default(),
        })
    }

    /// The layer description.
    pub fn conv(&self) -> &Conv2d {
        &self.conv
    }

    /// The OIHW weights.
    pub fn weights(&self) -> &[f32] {
        &self.weights
    }

    /// Bytes held by the operator (weights in `f64` twice, index maps).
    pub fn memory_bytes(&self) -> usize {
        (self.forward_weights.len() + self.adjoint_weights.len()) * 8
            + (self.rows.forward.len() + self.cols.forward.len()) * 8
            + (self.rows.inverse.items.len() + self.cols.inverse.items.len()) * 8
    }

    fn band_rows(&self, k: usize, width: usize, height: usize) -> usize {
        (TILE_ELEMENTS / (k * width).max(1)).clamp(1, height)
    }
}

/// The GEMMs run on one thread each when the bands and groups keep every thread busy, or
/// when the caller is itself one of the pool's tasks (the analysis bounds layers
/// concurrently: nesting would only contend). Otherwise a small image with many channels
/// (ResNet's 512 channels on 7×7 or 2×2: one band) would leave all threads but one idle —
/// a network evaluation in the lower-bound search, a single layer's Lanczos. Either way
/// each output is one dot product computed in the same order (faer splits a product by
/// output blocks), so results do not depend on it.
fn gemm_parallelism(tasks: usize, multiply_adds: usize) -> Par {
    // Below ~16M multiply-adds per GEMM the threads' start-up costs more than they save
    // (the certify tests' small CNNs ran twice as long with them).
    if tasks < rayon::current_num_threads()
        && rayon::current_thread_index().is_none()
        && multiply_adds >= 1 << 24
    {
        Par::rayon(0)
    } else {
        Par::Seq
    }
}

impl LinearOperator for DirectConv2d<'_> {
    fn input_len(&self) -> usize {
        self.conv.input_len()
    }

    fn output_len(&self) -> usize {
        self.conv.out_channels * self.out[0] * self.out[1]
    }

    fn forward(&self, x: &[f64], y: &mut [f64]) {
        let c = &self.conv;
        let (h, w) = (c.input[0], c.input[1]);
        let (ho, wo) = (self.out[0], self.out[1]);
        let (kh, kw) = (c.kernel[0], c.kernel[1]);
        let (cg, og) = (c.group_in(), c.group_out());
        let k = cg * kh * kw;
        let band = self.band_rows(k, wo, ho);
        let bands = ho.div_ceil(band);
        let par = gemm_parallelism(c.groups * bands, og * k * band.min(ho) * wo);
        let out = DisjointWrites::new(y);
        (0..c.groups * bands).into_par_iter().for_each(|task| {
            let (g, b) = (task / bands, task % bands);
            let (i0, i1) = (b * band, ((b + 1) * band).min(ho));
            let positions = (i1 - i0) * wo;
            let mut cols = self.pool.take(k * positions);
            // im2col, row-major K × positions.
            for ci in 0..cg {
                let plane = &x[(g * cg + ci) * h * w..(g * cg + ci + 1) * h * w];
                for p in 0..kh {
                    for q in 0..kw {
                        let r = (ci * kh + p) * kw + q;
                        let dst = &mut cols[r * positions..(r + 1) * positions];
                        for i in i0..i1 {
                            let src_row = self.rows.forward[i * kh + p];
                            let line = &mut dst[(i - i0) * wo..(i - i0 + 1) * wo];
                            if src_row == NONE {
                                line.fill(0.0);
                                continue;
                            }
                            let src = &plane[src_row * w..(src_row + 1) * w];
                            for (j, v) in line.iter_mut().enumerate() {
                                let sc = self.cols.forward[j * kw + q];
                                *v = if sc == NONE { 0.0 } else { src[sc] };
                            }
                        }
                    }
                }
            }
            let mut dst = self.pool.take(og * positions);
            matmul(
                faer::MatMut::from_row_major_slice_mut(&mut dst, og, positions),
                Accum::Replace,
                MatRef::from_row_major_slice(
                    &self.forward_weights[g * og * k..(g + 1) * og * k],
                    og,
                    k,
                ),
                MatRef::from_row_major_slice(&cols, k, positions),
                1.0,
                par,
            );
            for o in 0..og {
                let base = ((g * og + o) * ho + i0) * wo;
                for (t, v) in dst[o * positions..(o + 1) * positions].iter().enumerate() {
                    // SAFETY: task (g, b) alone writes channel block g, rows [i0, i1).
                    unsafe { out.write(base + t, *v) };
                }
            }
            self.pool.give(cols);
            self.pool.give(dst);
        });
    }

    fn adjoint(&self, y: &[f64], x: &mut [f64]) {
        let c = &self.conv;
        let (h, w) = (c.input[0], c.input[1]);
        let (ho, wo) = (self.out[0], self.out[1]);
        let (kh, kw) = (c.kernel[0], c.kernel[1]);
        let (cg, og) = (c.group_in(), c.group_out());
        let k = og * kh * kw;
        let band = self.band_rows(k, w, h);
        let bands = h.div_ceil(band);
        let par = gemm_parallelism(c.groups * bands, cg * k * band.min(h) * w);
        let out = DisjointWrites::new(x);
        (0..c.groups * bands).into_par_iter().for_each(|task| {
            let (g, b) = (task / bands, task % bands);
            let (a0, a1) = (b * band, ((b + 1) * band).min(h));
            let positions = (a1 - a0) * w;
            let mut gathered = self.pool.take(k * positions);
            for o in 0..og {
                let plane = &y[(g * og + o) * ho * wo..(g * og + o + 1) * ho * wo];
                for p in 0..kh {
                    for q in 0..kw {
                        let r = (o * kh + p) * kw + q;
                        let dst = &mut gathered[r * positions..(r + 1) * positions];
                        for a in a0..a1 {
                            let line = &mut dst[(a - a0) * w..(a - a0 + 1) * w];
                            let out_rows = self.rows.inverse.get(p * h + a);
                            for (bcol, v) in line.iter_mut().enumerate() {
                                let out_cols = self.cols.inverse.get(q * w + bcol);
                                let mut acc = 0.0;
                                for &i in out_rows {
                                    for &j in out_cols {
                                        acc += plane[i * wo + j];
                                    }
                                }
                                *v = acc;
                            }
                        }
                    }
                }
            }
            let mut dst = self.pool.take(cg * positions);
            matmul(
                faer::MatMut::from_row_major_slice_mut(&mut dst, cg, positions),
                Accum::Replace,
                MatRef::from_row_major_slice(
                    &self.adjoint_weights[g * cg * k..(g + 1) * cg * k],
                    cg,
                    k,
                ),
                MatRef::from_row_major_slice(&gathered, k, positions),
                1.0,
                par,
            );
            for ci in 0..cg {
                let base = ((g * cg + ci) * h + a0) * w;
                for (t, v) in dst[ci * positions..(ci + 1) * positions].iter().enumerate() {
                    // SAFETY: task (g, b) alone writes channel block g, rows [a0, a1).
                    unsafe { out.write(base + t, *v) };
                }
            }
            self.pool.give(gathered);
            self.pool.give(dst);
        });
    }

    fn forward_error(&self) -> f64 {
        self.error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A many-channel layer on a small image is one band: called from outside the pool its
    /// GEMMs run on every thread, from inside on one. The results must be bit-identical
    /// (results never depend on the thread count).
    #[test]
    fn parallel_gemms_give_the_same_bits() {
        let conv = Conv2d::new(256, 192, [3, 3], [7, 7]).padding(1);
        let w: Vec<f32> = (0..conv.weight_len())
            .map(|i| ((i * 7919) % 1013) as f32 / 1013.0 - 0.5)
            .collect();
        let op = DirectConv2d::new(&conv, &w).unwrap();
        let x: Vec<f64> = (0..op.input_len())
            .map(|i| ((i * 31) % 97) as f64 - 48.0)
            .collect();
        let y: Vec<f64> = (0..op.output_len())
            .map(|i| ((i * 17) % 89) as f64 - 44.0)
            .collect();
        let run = || {
            let (mut fy, mut ax) = (vec![0.0; op.output_len()], vec![0.0; op.input_len()]);
            op.forward(&x, &mut fy);
            op.adjoint(&y, &mut ax);
            (fy, ax)
        };
        let outside = run();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let inside = pool.install(run);
        assert!(outside
            .0
            .iter()
            .zip(&inside.0)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
        assert!(outside
            .1
            .iter()
            .zip(&inside.1)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
    }
}
