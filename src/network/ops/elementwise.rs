//! Elementwise affine maps with constant coefficients (inference BatchNorm, `Mul`/`Div`/
//! `Add`/`Sub` by a constant) and the sum and difference of two tensors.

use super::{
    expect_inputs, linear_kernel, max_abs, single, Context, Kernel, LinearPart, Operation, Role,
};
use crate::error::{check_finite, Error, Result};

/// Values repeated along a tensor: element `i` of the flat tensor uses
/// `values[(i / inner) % values.len()]`. A scalar has one value; a per-channel vector of an
/// `(1, C, H, W)` tensor has `C` values and `inner = H·W`.
#[derive(Debug, Clone, PartialEq)]
pub struct Broadcast {
    /// The distinct values.
    pub values: Vec<f64>,
    /// Run length of each value.
    pub inner: usize,
}

impl Broadcast {
    /// One value everywhere.
    pub fn scalar(v: f64) -> Self {
        Broadcast {
            values: vec![v],
            inner: 1,
        }
    }

    /// The value for flat index `i`.
    #[inline]
    pub fn get(&self, i: usize) -> f64 {
        self.values[(i / self.inner) % self.values.len()]
    }

    /// `max |v|`.
    pub fn max_abs(&self) -> f64 {
        max_abs(&self.values)
    }

    /// How many values [`Broadcast::from_constant`] stores for these shapes: the constant's
    /// own length, or the whole tensor's when its non-unit axes are not contiguous (so that
    /// callers can charge the memory before it is allocated).
    pub fn stored_len(dims: &[usize], target: &[usize]) -> usize {
        let offset = target.len().saturating_sub(dims.len());
        let axes: Vec<usize> = (0..dims.len()).filter(|&k| dims[k] != 1).collect();
        match (axes.first(), axes.last()) {
            (Some(&first), Some(&last)) if last - first + 1 != axes.len() => {
                target[offset..].iter().product::<usize>()
            }
            _ => dims.iter().product::<usize>().max(1),
        }
    }

    /// Numpy broadcasting of a constant of shape `dims` against a tensor of shape `target`,
    /// in the compact form when the constant's non-unit axes are contiguous, else expanded.
    pub fn from_constant(dims: &[usize], data: &[f64], target: &[usize]) -> Result<Self> {
        if dims.len() > target.len() {
            return Err(Error::invalid(
                "constant operand rank",
                dims.len(),
                &format!("exceeds the rank of the tensor it applies to ({target:?})"),
            ));
        }
        let offset = target.len() - dims.len();
        for (k, &d) in dims.iter().enumerate() {
            if d != 1 && d != target[offset + k] {
                return Err(Error::invalid(
                    "constant operand shape",
                    format!("{dims:?}"),
                    &format!("does not broadcast against {target:?}"),
                ));
            }
        }
        let axes: Vec<usize> = (0..dims.len())
            .filter(|&k| dims[k] != 1)
            .map(|k| k + offset)
            .collect();
        if axes.is_empty() {
            return Ok(Broadcast::scalar(data[0]));
        }
        let (first, last) = (axes[0], *axes.last().unwrap());
        if last - first + 1 == axes.len() {
            let inner = target[last + 1..].iter().product::<usize>().max(1);
            return Ok(Broadcast {
                values: data.to_vec(),
                inner,
            });
        }
        // Non-contiguous broadcast axes: expand to the full tensor.
        let total: usize = target.iter().product();
        let mut values = vec![0.0; total];
        let mut idx = vec![0usize; target.len()];
        for (flat, v) in values.iter_mut().enumerate() {
            let mut rem = flat;
            for k in (0..target.len()).rev() {
                idx[k] = rem % target[k];
                rem /= target[k];
            }
            let mut src = 0;
            for (k, &d) in dims.iter().enumerate() {
                src = src * d + if d == 1 { 0 } else { idx[offset + k] };
            }
            *v = data[src];
        }
        Ok(Broadcast { values, inner: 1 })
    }
}

/// `scale ⊙ x + shift`, both broadcast along the tensor (inference BatchNorm, `Mul`/`Div`/
/// `Add`/`Sub` by a constant). Constant `max|scale|`; the analysis folds the scale into a
/// neighbouring conv or dense layer where it is constant over what one weight sees.
#[derive(Debug, Clone, PartialEq)]
pub struct Affine {
    /// Multiplier.
    pub scale: Broadcast,
    /// Offset.
    pub shift: Broadcast,
}

impl Affine {
    /// `s·x` everywhere (`Neg` is `s = −1`). Constant `|s|`.
    pub fn scale_by(s: f64) -> Self {
        Affine {
            scale: Broadcast::scalar(s),
            shift: Broadcast::scalar(0.0),
        }
    }

    /// `x + shift`, one shift per element (a constant placed into a tensor: the constant
    /// branch of a `Where`, the constant inputs of a `Concat`). Constant 1.
    pub fn shift_by(shift: Vec<f64>) -> Self {
        Affine {
            scale: Broadcast::scalar(1.0),
            shift: Broadcast {
                values: shift,
                inner: 1,
            },
        }
    }

    /// Inference BatchNorm over axis 1 of a tensor of shape `shape`:
    /// `y = γ(x − μ)/√(σ² + ε) + β`, i.e. scale `γ/√(σ² + ε)`, shift `β − μ·scale`, per
    /// channel. Each parameter has one entry per channel.
    pub fn batch_norm(
        shape: &[usize],
        gamma: &[f64],
        beta: &[f64],
        mean: &[f64],
        var: &[f64],
        eps: f64,
    ) -> Result<Affine> {
        if shape.len() < 2 {
            return Err(Error::invalid(
                "BatchNormalization input",
                format!("{shape:?}"),
                "needs a (N, C, …) tensor",
            ));
        }
        let c = shape[1];
        for (name, p) in [
            ("scale", gamma),
            ("bias", beta),
            ("mean", mean),
            ("var", var),
        ] {
            if p.len() != c {
                return Err(Error::invalid(
                    &format!("BatchNormalization {name}"),
                    format!("{} entries", p.len()),
                    &format!("the input {shape:?} has {c} channels"),
                ));
            }
        }
        if !(eps >= 0.0 && eps.is_finite()) {
            return Err(Error::invalid(
                "BatchNormalization epsilon",
                eps,
                "must be finite and ≥ 0",
            ));
        }
        let mut scale = Vec::with_capacity(c);
        let mut shift = Vec::with_capacity(c);
        for k in 0..c {
            let d = var[k] + eps;
            if d.is_nan() || d <= 0.0 {
                return Err(Error::invalid(
                    "BatchNormalization variance + epsilon",
                    d,
                    &format!("must be > 0 (channel {k})"),
                ));
            }
            let s = gamma[k] / d.sqrt();
            scale.push(s);
            shift.push(beta[k] - mean[k] * s);
        }
        let inner = shape[2..].iter().product::<usize>().max(1);
        Ok(Affine {
            scale: Broadcast {
                values: scale,
                inner,
            },
            shift: Broadcast {
                values: shift,
                inner,
            },
        })
    }
}

impl super::Sealed for Affine {}

impl Operation for Affine {
    fn op_type(&self) -> &'static str {
        "Affine"
    }
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        let s = single(inputs)?;
        check_finite("elementwise constant", &self.scale.values)?;
        check_finite("elementwise offset", &self.shift.values)?;
        Ok(s.to_vec())
    }
    fn role(&self) -> Role {
        Role::Linear { heavy: false }
    }
    fn lipschitz(&self, _inputs: &[&[usize]]) -> Result<f64> {
        Ok(self.scale.max_abs())
    }
    fn prepare<'a>(&'a self, _cx: &Context<'_>) -> Result<Box<dyn Kernel + 'a>> {
        Ok(linear_kernel(self))
    }
    fn as_scale(&self) -> Option<&Broadcast> {
        Some(&self.scale)
    }
}

impl LinearPart for &Affine {
    fn apply(&self, ins: &[&[f64]], y: &mut [f64]) {
        for (i, (yi, &xi)) in y.iter_mut().zip(ins[0]).enumerate() {
            *yi = self.scale.get(i) * xi;
        }
    }
    fn adjoint(&self, g: &[f64], outs: &mut [Vec<f64>]) {
        for (i, (xi, &gi)) in outs[0].iter_mut().zip(g).enumerate() {
            *xi = self.scale.get(i) * gi;
        }
    }
    fn add_offset(&self, y: &mut [f64]) {
        for (i, v) in y.iter_mut().enumerate() {
            *v += self.shift.get(i);
        }
    }
}

/// Checks that two activations have one shape (broadcasting between two activations is not
/// supported).
fn same_shapes(inputs: &[&[usize]]) -> Result<Vec<usize>> {
    expect_inputs(inputs, 2)?;
    if inputs[0] != inputs[1] {
        return Err(Error::invalid(
            "operand shapes",
            format!("{:?} and {:?}", inputs[0], inputs[1]),
            "must be equal (broadcasting between two activations is not supported)",
        ));
    }
    Ok(inputs[0].to_vec())
}

/// The sum (`Add`, residual connections) or difference (`Sub`) of two tensors of one shape:
/// the constant is at most `L_a + L_b`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sum {
    /// Subtract the second input instead of adding it.
    pub subtract: bool,
}

impl Sum {
    /// `a + b`.
    pub const ADD: Sum = Sum { subtract: false };
    /// `a − b`.
    pub const SUB: Sum = Sum { subtract: true };
}

impl super::Sealed for Sum {}

impl Operation for Sum {
    fn op_type(&self) -> &'static str {
        if self.subtract {
            "Sub"
        } else {
            "Add"
        }
    }
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        same_shapes(inputs)
    }
    fn role(&self) -> Role {
        Role::Sum
    }
    fn lipschitz(&self, _inputs: &[&[usize]]) -> Result<f64> {
        Ok(1.0)
    }
    fn prepare<'a>(&'a self, _cx: &Context<'_>) -> Result<Box<dyn Kernel + 'a>> {
        Ok(linear_kernel(*self))
    }
}

impl LinearPart for Sum {
    fn apply(&self, ins: &[&[f64]], y: &mut [f64]) {
        let pairs = y.iter_mut().zip(ins[0]).zip(ins[1]);
        if self.subtract {
            pairs.for_each(|((yi, &a), &b)| *yi = a - b);
        } else {
            pairs.for_each(|((yi, &a), &b)| *yi = a + b);
        }
    }
    fn adjoint(&self, g: &[f64], outs: &mut [Vec<f64>]) {
        outs[0].copy_from_slice(g);
        if self.subtract {
            for (xi, &gi) in outs[1].iter_mut().zip(g) {
                *xi = -gi;
            }
        } else {
            outs[1].copy_from_slice(g);
        }
    }
}
