//! Order statistics: the elementwise maximum or minimum of several tensors (`Max`, `Min`) and
//! sorting along an axis (`GroupSort`, `MaxMin`, `TopK`, `ReduceMax`), the nonlinearities of
//! the 1-Lipschitz networks (Anil et al. 2019).
//!
//! Both are continuous and piecewise linear, and on every piece they copy input elements to
//! output elements, so their Jacobians are selections:
//! * `max(a, b, …)`: each output element copies one input's element, so
//!   `‖Δy‖² ≤ Σ_i max_k |Δx_k,i|² ≤ Σ_k ‖Δx_k‖²`: it composes like `Concat`, `√(Σ L_k²)`;
//! * sorting each fiber: the Jacobian is a permutation on every piece, so the constant is
//!   exactly 1 (a fiber sorted is 1-Lipschitz in ℓ2, and the pieces join continuously).

use super::{select_adjoint_into, select_into, At, Context, Kernel, Operation, Role, Saved};
use crate::error::{Error, Result};

/// The elementwise maximum (or minimum) of tensors of one shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extremum {
    /// `Max` when true, `Min` otherwise.
    pub max: bool,
}

impl super::Sealed for Extremum {}

impl Operation for Extremum {
    fn op_type(&self) -> &'static str {
        if self.max {
            "Max"
        } else {
            "Min"
        }
    }
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        let Some(first) = inputs.first() else {
            return Err(Error::invalid("Max/Min inputs", 0, "needs at least one"));
        };
        if inputs.iter().any(|s| s != first) {
            return Err(Error::invalid(
                "Max/Min operand shapes",
                format!("{inputs:?}"),
                "must be equal (broadcasting between activations is not supported)",
            ));
        }
        Ok(first.to_vec())
    }
    fn role(&self) -> Role {
        Role::Stack
    }
    fn lipschitz(&self, _inputs: &[&[usize]]) -> Result<f64> {
        Ok(1.0)
    }
    fn prepare<'a>(&'a self, _cx: &Context<'_>) -> Result<Box<dyn Kernel + 'a>> {
        Ok(Box::new(*self))
    }
    fn is_affine(&self) -> bool {
        false
    }
}

impl Kernel for Extremum {
    /// Saves the index of the input each output element copies (the first on ties).
    fn forward(&self, ins: &[&[f64]], y: &mut [f64]) -> Saved {
        let mut winner = vec![0u32; y.len()];
        y.copy_from_slice(ins[0]);
        for (k, x) in ins.iter().enumerate().skip(1) {
            for ((yi, w), &v) in y.iter_mut().zip(&mut winner).zip(x.iter()) {
                if (self.max && v > *yi) || (!self.max && v < *yi) {
                    *yi = v;
                    *w = k as u32;
                }
            }
        }
        winner
    }
    fn jvp(&self, at: At<'_>, t: &[&[f64]], dy: &mut [f64]) {
        for (i, (d, &w)) in dy.iter_mut().zip(at.saved).enumerate() {
            *d = t[w as usize][i];
        }
    }
    fn vjp(&self, at: At<'_>, g: &[f64], outs: &mut [Vec<f64>]) {
        for (i, (&gi, &w)) in g.iter().zip(at.saved).enumerate() {
            outs[w as usize][i] = gi;
        }
    }
}

/// Every fiber along `axis` sorted, largest first when `descending`: GroupSort with groups
/// along an axis (MaxMin is a group of 2). Constant exactly 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sort {
    /// The axis sorted.
    pub axis: usize,
    /// Largest first.
    pub descending: bool,
}

impl super::Sealed for Sort {}

impl Operation for Sort {
    fn op_type(&self) -> &'static str {
        "Sort"
    }
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        let s = super::single(inputs)?;
        if self.axis >= s.len() {
            return Err(Error::invalid(
                "sort axis",
                self.axis,
                &format!("out of range for {s:?}"),
            ));
        }
        Ok(s.to_vec())
    }
    fn role(&self) -> Role {
        Role::Nonlinear
    }
    fn lipschitz(&self, _inputs: &[&[usize]]) -> Result<f64> {
        Ok(1.0)
    }
    fn prepare<'a>(&'a self, cx: &Context<'_>) -> Result<Box<dyn Kernel + 'a>> {
        let s = cx.inputs[0];
        Ok(Box::new(SortKernel {
            outer: s[..self.axis].iter().product(),
            len: s[self.axis],
            inner: s[self.axis + 1..].iter().product(),
            descending: self.descending,
        }))
    }
}

/// A tensor seen as `(outer, len, inner)`, sorted along the middle axis.
struct SortKernel {
    outer: usize,
    len: usize,
    inner: usize,
    descending: bool,
}

impl Kernel for SortKernel {
    /// Saves the source of every output element.
    fn forward(&self, ins: &[&[f64]], y: &mut [f64]) -> Saved {
        let x = ins[0];
        let mut source = vec![0u32; y.len()];
        let mut order: Vec<usize> = Vec::with_capacity(self.len);
        for o in 0..self.outer {
            for i in 0..self.inner {
                let at = |r: usize| (o * self.len + r) * self.inner + i;
                order.clear();
                order.extend((0..self.len).map(at));
                // A stable sort: ties keep their order, as ONNX TopK does.
                if self.descending {
                    order.sort_by(|&p, &q| x[q].total_cmp(&x[p]));
                } else {
                    order.sort_by(|&p, &q| x[p].total_cmp(&x[q]));
                }
                for (r, &src) in order.iter().enumerate() {
                    y[at(r)] = x[src];
                    source[at(r)] = src as u32;
                }
            }
        }
        source
    }
    fn jvp(&self, at: At<'_>, t: &[&[f64]], dy: &mut [f64]) {
        select_into(at.saved, t[0], dy);
    }
    fn vjp(&self, at: At<'_>, g: &[f64], outs: &mut [Vec<f64>]) {
        select_adjoint_into(at.saved, g, &mut outs[0]);
    }
}
