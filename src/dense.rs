//! Dense layers (Gemm / MatMul / Linear) as a [`LinearOperator`].
//!
//! Weights stay `f32`, row-major with rows = outputs, exactly as a framework stores them, and
//! may be borrowed (no copy of a 100 MB matrix). Vectors are `f64` and every dot product
//! accumulates in `f64`, so results are accurate to `γ_n‖A‖_F`.
//!
//! Parallel work is split into row chunks whose number depends only on the matrix shape, and
//! partial sums are reduced in a fixed order: results are bit-identical for any thread count.

use crate::bound::{Bound, Method, Options};
use crate::error::{check_finite, check_positive, Error, Result};
use crate::kernels::{axpy4_f32_f64, axpy_f32_f64, dot4_f32_f64, dot_f32_f64, gamma};
use crate::operator::LinearOperator;
use crate::util::{BufferPool, DisjointWrites};
use rayon::prelude::*;
use std::borrow::Cow;

/// Most chunks a pass is split into (fixed, so results do not depend on the thread count).
const MAX_CHUNKS: usize = 16;
/// Matrix entries per chunk below which splitting further costs more than it gains.
const MIN_CHUNK_WORK: usize = 1 << 15;

/// Certified interval for the spectral norm of a dense row-major `rows × cols` matrix.
///
/// ```
/// use lipschitz::{dense_norm, Options};
/// // [[1, 2], [2, 4]] has rank one and σ₁ = 5.
/// let b = dense_norm(&[1.0, 2.0, 2.0, 4.0], 2, 2, &Options::with_rtol(1e-8))?;
/// assert!(b.lower <= 5.0 && 5.0 <= b.upper && b.upper - b.lower < 1e-7);
/// # Ok::<(), lipschitz::Error>(())
/// ```
pub fn dense_norm(weights: &[f32], rows: usize, cols: usize, opts: &Options) -> Result<Bound> {
    let matrix = DenseMatrix::from_slice(weights, rows, cols)?;
    dense_matrix_norm(&matrix, opts)
}

/// [`dense_norm`] for an already constructed [`DenseMatrix`].
pub fn dense_matrix_norm(matrix: &DenseMatrix<'_>, opts: &Options) -> Result<Bound> {
    opts.validate()?;
    match crate::spectral::choose_method(matrix, opts) {
        Method::Exact => crate::spectral::exact::exact_from_rows(
            matrix,
            matrix.weights(),
            matrix.frobenius_norm(),
            opts,
        )
        .map(|(b, _)| b),
        _ => crate::spectral::spectral_norm(matrix, opts),
    }
}

/// A dense `rows × cols` matrix `W` with `f32` entries, acting as `x ↦ W x`.
///
/// ```
/// use lipschitz::{DenseMatrix, LinearOperator};
/// let w = DenseMatrix::new(vec![3.0, 0.0, 0.0, 4.0], 2, 2)?;
/// let mut y = [0.0; 2];
/// w.apply(&[1.0, 1.0], &mut y)?;
/// assert_eq!(y, [3.0, 4.0]);
/// # Ok::<(), lipschitz::Error>(())
/// ```
pub struct DenseMatrix<'a> {
    rows: usize,
    cols: usize,
    weights: Cow<'a, [f32]>,
    frobenius: f64,
    rows_per_chunk: usize,
    /// Reusable buffers for partial sums, so that applications do not allocate.
    pool: BufferPool,
}

impl std::fmt::Debug for DenseMatrix<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DenseMatrix")
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .field("frobenius", &self.frobenius)
            .finish()
    }
}

impl<'a> DenseMatrix<'a> {
    /// Takes ownership of row-major weights (`rows` outputs × `cols` inputs).
    pub fn new(weights: Vec<f32>, rows: usize, cols: usize) -> Result<DenseMatrix<'static>> {
        DenseMatrix::build(Cow::Owned(weights), rows, cols)
    }

    /// Borrows row-major weights without copying them.
    pub fn from_slice(weights: &'a [f32], rows: usize, cols: usize) -> Result<Self> {
        DenseMatrix::build(Cow::Borrowed(weights), rows, cols)
    }

    fn build(weights: Cow<'a, [f32]>, rows: usize, cols: usize) -> Result<Self> {
        check_positive("dense rows", rows)?;
        check_positive("dense cols", cols)?;
        let expected = rows.checked_mul(cols).ok_or_else(|| {
            Error::invalid(
                "dense shape",
                format!("{rows}×{cols}"),
                "rows·cols overflows usize",
            )
        })?;
        if weights.len() != expected {
            return Err(Error::length(
                &format!("dense weight for a {rows}×{cols} matrix"),
                expected,
                weights.len(),
            ));
        }
        check_finite("dense weight", &weights)?;
        let frobenius = weights
            .par_chunks(1 << 16)
            .map(|c| c.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>())
            .collect::<Vec<_>>()
            .iter()
            .sum::<f64>()
            .sqrt();
        let chunks = (expected / MIN_CHUNK_WORK).clamp(1, MAX_CHUNKS).min(rows);
        Ok(DenseMatrix {
            rows,
            cols,
            weights,
            frobenius,
            rows_per_chunk: rows.div_ceil(chunks),
            pool: BufferPool::default(),
        })
    }

    /// Number of rows (outputs).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns (inputs).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Row-major weights.
    pub fn weights(&self) -> &[f32] {
        &self.weights
    }

    /// Frobenius norm `‖W‖_F`, computed in `f64` (an upper bound on `‖W‖₂`).
    pub fn frobenius_norm(&self) -> f64 {
        self.frobenius
    }

    fn row(&self, i: usize) -> &[f32] {
        &self.weights[i * self.cols..(i + 1) * self.cols]
    }

    fn chunk_count(&self) -> usize {
        self.rows.div_ceil(self.rows_per_chunk)
    }

    /// [`Self::reduce_rows`] over groups of four rows (grouping fixed by the chunking, so the
    /// result is still independent of the thread count).
    fn reduce_row_groups<F>(&self, width: usize, out: &mut [f64], per_group: F)
    where
        F: Fn(RowGroup<'_>, &mut [f64]) + Sync,
    {
        let rpc = self.rows_per_chunk;
        self.reduce_chunks(width, out, |c, partial| {
            let start = c * rpc;
            let end = (start + rpc).min(self.rows);
            let mut i = start;
            while i + 4 <= end {
                let rows = [
                    self.row(i),
                    self.row(i + 1),
                    self.row(i + 2),
                    self.row(i + 3),
                ];
                per_group(RowGroup::Four(rows), partial);
                i += 4;
            }
            for r in i..end {
                per_group(RowGroup::One(self.row(r)), partial);
            }
        });
    }

    /// Runs `per_row(i, partial)` for every row, accumulating into one partial vector of
    /// `width` per row chunk, then sums the partials in chunk order into `out`.
    fn reduce_rows<F>(&self, width: usize, out: &mut [f64], per_row: F)
    where
        F: Fn(usize, &mut [f64]) + Sync,
    {
        let rpc = self.rows_per_chunk;
        self.reduce_chunks(width, out, |c, partial| {
            for i in c * rpc..((c + 1) * rpc).min(self.rows) {
                per_row(i, partial);
            }
        });
    }

    /// Runs `per_chunk(c, partial)` for every row chunk `c` (in parallel), each into its own
    /// zeroed partial vector of `width`, then sums the partials in chunk order into `out`.
    fn reduce_chunks<F>(&self, width: usize, out: &mut [f64], per_chunk: F)
    where
        F: Fn(usize, &mut [f64]) + Sync,
    {
        let chunks = self.chunk_count();
        if chunks == 1 {
            out.fill(0.0);
            per_chunk(0, out);
            return;
        }
        let mut partials = self.pool.take(chunks * width);
        partials
            .par_chunks_mut(width)
            .enumerate()
            .for_each(|(c, partial)| per_chunk(c, partial));
        let partials_ref = &partials;
        out.par_chunks_mut(1024).enumerate().for_each(|(s, dst)| {
            let offset = s * 1024;
            dst.fill(0.0);
            for c in 0..chunks {
                let src = &partials_ref[c * width + offset..c * width + offset + dst.len()];
                for (d, v) in dst.iter_mut().zip(src) {
                    *d += v;
                }
            }
        });
        self.pool.give(partials);
    }
}

/// Rows handed to a kernel: four at a time where possible (they share vector loads), then
/// one at a time for the remainder of a chunk.
enum RowGroup<'w> {
    Four([&'w [f32]; 4]),
    One(&'w [f32]),
}

impl LinearOperator for DenseMatrix<'_> {
    fn input_len(&self) -> usize {
        self.cols
    }

    fn output_len(&self) -> usize {
        self.rows
    }

    fn forward(&self, x: &[f64], y: &mut [f64]) {
        y.par_chunks_mut(self.rows_per_chunk)
            .enumerate()
            .for_each(|(c, ys)| {
                let start = c * self.rows_per_chunk;
                for (k, yi) in ys.iter_mut().enumerate() {
                    *yi = dot_f32_f64(self.row(start + k), x);
                }
            });
    }

    fn adjoint(&self, y: &[f64], x: &mut [f64]) {
        self.reduce_rows(self.cols, x, |i, partial| {
            axpy_f32_f64(y[i], self.row(i), partial)
        });
    }

    fn forward_error(&self) -> f64 {
        gamma(self.rows.max(self.cols) + MAX_CHUNKS + 2) * self.frobenius
    }

    fn forward_block(&self, x: &[f64], y: &mut [f64], b: usize) {
        let (n, m) = (self.cols, self.rows);
        let out = DisjointWrites::new(y);
        (0..self.chunk_count()).into_par_iter().for_each(|c| {
            let start = c * self.rows_per_chunk;
            let end = (start + self.rows_per_chunk).min(m);
            for i in start..end {
                let row = self.row(i);
                for k in 0..b {
                    let v = dot_f32_f64(row, &x[k * n..(k + 1) * n]);
                    // SAFETY: index k·m + i is written only by the chunk owning row i, and
                    // lies inside `y`, whose length is b·m.
                    unsafe { out.write(k * m + i, v) };
                }
            }
        });
    }

    fn adjoint_block(&self, y: &[f64], x: &mut [f64], b: usize) {
        let (n, m) = (self.cols, self.rows);
        self.reduce_rows(b * n, x, |i, partial| {
            let row = self.row(i);
            for k in 0..b {
                axpy_f32_f64(y[k * m + i], row, &mut partial[k * n..(k + 1) * n]);
            }
        });
    }

    /// One pass over the weights: `AᵀA x = Σᵢ aᵢ (aᵢ·x)`, each row read once while in cache.
    fn gram(&self, x: &[f64], z: &mut [f64], _tmp: &mut [f64]) {
        self.reduce_row_groups(self.cols, z, |rows, partial| match rows {
            RowGroup::Four(rows) => axpy4_f32_f64(dot4_f32_f64(rows, x), rows, partial),
            RowGroup::One(row) => axpy_f32_f64(dot_f32_f64(row, x), row, partial),
        });
    }

    fn gram_block(&self, x: &[f64], z: &mut [f64], _tmp: &mut [f64], b: usize) {
        let n = self.cols;
        self.reduce_rows(b * n, z, |i, partial| {
            let row = self.row(i);
            for k in 0..b {
                let t = dot_f32_f64(row, &x[k * n..(k + 1) * n]);
                axpy_f32_f64(t, row, &mut partial[k * n..(k + 1) * n]);
            }
        });
    }
}

/// In words, how a dense layer's interval `b` of a `rows × cols` matrix was computed (the
/// route `lipschitz analyze --explain` prints).
pub fn describe_dense_route(b: &Bound, rows: usize, cols: usize) -> String {
    match b.method {
        Method::Exact => format!("exact SVD of the {rows}×{cols} matrix (a small layer)"),
        m => format!(
            "{m:?} on the {rows}×{cols} matrix, {} steps from a random start; upper end: {}",
            b.iterations,
            b.certificate.label()
        ),
    }
}
