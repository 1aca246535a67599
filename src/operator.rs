//! The linear-operator abstraction every estimator runs on.
//!
//! An operator maps vectors of length [`LinearOperator::input_len`] to vectors of length
//! [`LinearOperator::output_len`] and can apply its adjoint. Estimators only ever touch a layer
//! through this trait, so a dense matrix, a direct convolution and an FFT convolution are
//! interchangeable. Vectors are `f64` so that lower bounds can be evaluated accurately;
//! implementations may compute internally in `f32` and say so through
//! [`LinearOperator::forward_error`].
//!
//! Blocks of `b` vectors are stored one vector after another (`x[k*len..(k+1)*len]` is
//! vector `k`); operators whose cost is dominated by streaming their weights (a large dense
//! matrix, a conv kernel spectrum) override the block methods so that one pass over the
//! weights serves all `b` vectors.

use crate::error::{Error, Result};

/// A real linear map `A: ℝⁿ → ℝᵐ` with its adjoint `Aᵀ`.
///
/// The required methods take buffers whose lengths the *caller* guarantees (the estimators in
/// this crate do); the provided `apply*` methods check lengths and return an [`Error`] instead.
/// Implementations must not allocate per call in their hot paths and must be `Sync` so that
/// estimators can use threads.
pub trait LinearOperator: Sync {
    /// Length of input vectors `x` (columns of the matrix).
    fn input_len(&self) -> usize;

    /// Length of output vectors `y = A x` (rows of the matrix).
    fn output_len(&self) -> usize;

    /// `y = A x`. Requires `x.len() == input_len()` and `y.len() == output_len()`.
    fn forward(&self, x: &[f64], y: &mut [f64]);

    /// `x = Aᵀ y`. Requires `y.len() == output_len()` and `x.len() == input_len()`.
    fn adjoint(&self, y: &[f64], x: &mut [f64]);

    /// An absolute bound `e` on this operator's rounding error per unit input norm:
    /// `‖fl(A x) − A x‖₂ ≤ e·‖x‖₂`, and the same for the adjoint. Certified lower bounds
    /// subtract it; upper bounds add it.
    fn forward_error(&self) -> f64;

    /// `Y = A X` for `b` vectors stored one after another.
    fn forward_block(&self, x: &[f64], y: &mut [f64], b: usize) {
        let (n, m) = (self.input_len(), self.output_len());
        for k in 0..b {
            self.forward(&x[k * n..(k + 1) * n], &mut y[k * m..(k + 1) * m]);
        }
    }

    /// `X = Aᵀ Y` for `b` vectors stored one after another.
    fn adjoint_block(&self, y: &[f64], x: &mut [f64], b: usize) {
        let (n, m) = (self.input_len(), self.output_len());
        for k in 0..b {
            self.adjoint(&y[k * m..(k + 1) * m], &mut x[k * n..(k + 1) * n]);
        }
    }

    /// `z = AᵀA x`, the Gram operator Lanczos runs on. `tmp` has length `output_len()`.
    /// Operators that can fuse the two passes (a dense matrix reads each row once) override it.
    fn gram(&self, x: &[f64], z: &mut [f64], tmp: &mut [f64]) {
        self.forward(x, tmp);
        self.adjoint(tmp, z);
    }

    /// `Z = AᵀA X` for `b` vectors; `tmp` has length `b·output_len()`.
    fn gram_block(&self, x: &[f64], z: &mut [f64], tmp: &mut [f64], b: usize) {
        self.forward_block(x, tmp, b);
        self.adjoint_block(tmp, z, b);
    }

    /// Checked `y = A x`.
    fn apply(&self, x: &[f64], y: &mut [f64]) -> Result<()> {
        check_len("input vector x", self.input_len(), x.len())?;
        check_len("output vector y", self.output_len(), y.len())?;
        self.forward(x, y);
        Ok(())
    }

    /// Checked `x = Aᵀ y`.
    fn apply_adjoint(&self, y: &[f64], x: &mut [f64]) -> Result<()> {
        check_len("adjoint input y", self.output_len(), y.len())?;
        check_len("adjoint output x", self.input_len(), x.len())?;
        self.adjoint(y, x);
        Ok(())
    }

    /// Checked block `Y = A X` for `b` vectors.
    fn apply_block(&self, x: &[f64], y: &mut [f64], b: usize) -> Result<()> {
        check_block_len("input block X", self.input_len(), b, x.len())?;
        check_block_len("output block Y", self.output_len(), b, y.len())?;
        self.forward_block(x, y, b);
        Ok(())
    }

    /// Checked block `X = Aᵀ Y` for `b` vectors.
    fn apply_adjoint_block(&self, y: &[f64], x: &mut [f64], b: usize) -> Result<()> {
        check_block_len("adjoint input block Y", self.output_len(), b, y.len())?;
        check_block_len("adjoint output block X", self.input_len(), b, x.len())?;
        self.adjoint_block(y, x, b);
        Ok(())
    }
}

impl<T: LinearOperator + ?Sized> LinearOperator for &T {
    fn input_len(&self) -> usize {
        (**self).input_len()
    }
    fn output_len(&self) -> usize {
        (**self).output_len()
    }
    fn forward(&self, x: &[f64], y: &mut [f64]) {
        (**self).forward(x, y)
    }
    fn adjoint(&self, y: &[f64], x: &mut [f64]) {
        (**self).adjoint(y, x)
    }
    fn forward_error(&self) -> f64 {
        (**self).forward_error()
    }
    fn forward_block(&self, x: &[f64], y: &mut [f64], b: usize) {
        (**self).forward_block(x, y, b)
    }
    fn adjoint_block(&self, y: &[f64], x: &mut [f64], b: usize) {
        (**self).adjoint_block(y, x, b)
    }
    fn gram(&self, x: &[f64], z: &mut [f64], tmp: &mut [f64]) {
        (**self).gram(x, z, tmp)
    }
    fn gram_block(&self, x: &[f64], z: &mut [f64], tmp: &mut [f64], b: usize) {
        (**self).gram_block(x, z, tmp, b)
    }
}

fn check_len(what: &str, expected: usize, actual: usize) -> Result<()> {
    if expected == actual {
        Ok(())
    } else {
        Err(Error::length(what, expected, actual))
    }
}

fn check_block_len(what: &str, len: usize, b: usize, actual: usize) -> Result<()> {
    if b == 0 {
        return Err(Error::invalid("block size b", 0, "must be at least 1"));
    }
    let expected = len
        .checked_mul(b)
        .ok_or_else(|| Error::invalid("block size b", b, "length times b overflows usize"))?;
    check_len(what, expected, actual)
}

/// Forms the explicit `m × n` matrix of an operator, column by column, in column-major order.
///
/// Meant for small operators (tests, exact SVD of small layers). Refuses when the matrix would
/// exceed `memory_limit` bytes.
pub fn explicit_matrix(op: &dyn LinearOperator, memory_limit: usize) -> Result<Vec<f64>> {
    let (m, n) = (op.output_len(), op.input_len());
    let bytes = (m as u128) * (n as u128) * 8;
    if bytes > memory_limit as u128 {
        return Err(Error::TooLarge {
            what: format!("explicit {m}×{n} matrix"),
            needed: bytes,
            limit: memory_limit as u128,
        });
    }
    let mut a = vec![0.0; m * n];
    let mut e = vec![0.0; n];
    for (j, column) in a.chunks_exact_mut(m.max(1)).enumerate().take(n) {
        e[j] = 1.0;
        op.forward(&e, column);
        e[j] = 0.0;
    }
    Ok(a)
}
