//! Operations that move elements without changing them: a new shape (Flatten, Reshape,
//! Squeeze, Unsqueeze, Identity, Dropout at inference), a gather with constant fill
//! (standalone Pad in every mode) and concatenation.

use super::{linear_kernel, single, Context, Kernel, LinearPart, Operation, Role};
use crate::error::{Error, Result};

/// A new shape for the same elements: constant 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reshape(pub Vec<usize>);

impl super::Sealed for Reshape {}

impl Operation for Reshape {
    fn op_type(&self) -> &'static str {
        "Reshape"
    }
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        let s = single(inputs)?;
        let n: usize = s.iter().product();
        if self.0.iter().product::<usize>() != n {
            return Err(Error::invalid(
                "reshape target",
                format!("{:?}", self.0),
                &format!("has not the {n} elements of {s:?}"),
            ));
        }
        Ok(self.0.clone())
    }
    fn role(&self) -> Role {
        Role::Linear { heavy: false }
    }
    fn lipschitz(&self, _inputs: &[&[usize]]) -> Result<f64> {
        Ok(1.0)
    }
    fn prepare<'a>(&'a self, _cx: &Context<'_>) -> Result<Box<dyn Kernel + 'a>> {
        Ok(linear_kernel(Copy))
    }
    fn is_reshape(&self) -> bool {
        true
    }
}

/// The identity on flat vectors.
struct Copy;

impl LinearPart for Copy {
    fn apply(&self, ins: &[&[f64]], y: &mut [f64]) {
        y.copy_from_slice(ins[0]);
    }
    fn adjoint(&self, g: &[f64], outs: &mut [Vec<f64>]) {
        outs[0].copy_from_slice(g);
    }
}

/// Output element `j` is input element `index[j]`, or `fill` where `index[j] == u32::MAX`:
/// every operator that moves elements without combining them (`Pad`, `Transpose`, `Slice`,
/// `Split`, `Gather`, `Expand`, `Tile`, nearest-neighbour `Resize`, …). Its matrix has one 1
/// per row at most, so `AᵀA` is diagonal with the number of outputs reading each input:
/// the constant is exactly `√(largest number of outputs reading one input)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Gather {
    /// The ONNX operator it stands for, for messages.
    pub kind: &'static str,
    /// Source of each output element.
    pub index: Vec<u32>,
    /// Constant for padded elements.
    pub fill: f64,
    /// Output shape.
    pub shape: Vec<usize>,
}

impl super::Sealed for Gather {}

impl Operation for Gather {
    fn op_type(&self) -> &'static str {
        self.kind
    }
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        let s = single(inputs)?;
        let n: usize = s.iter().product();
        let len = self.shape.iter().product::<usize>();
        if self.index.len() != len {
            return Err(Error::length("gather index", len, self.index.len()));
        }
        if self.index.iter().any(|&i| i != u32::MAX && i as usize >= n) {
            return Err(Error::invalid(
                "gather index",
                "out of range",
                &format!("{} reads outside its input {s:?}", self.kind),
            ));
        }
        Ok(self.shape.clone())
    }
    fn role(&self) -> Role {
        Role::Linear { heavy: false }
    }
    fn lipschitz(&self, inputs: &[&[usize]]) -> Result<f64> {
        let n: usize = single(inputs)?.iter().product();
        let mut count = vec![0u32; n];
        for &i in &self.index {
            if i != u32::MAX {
                count[i as usize] += 1;
            }
        }
        Ok((count.into_iter().max().unwrap_or(0) as f64).sqrt())
    }
    fn prepare<'a>(&'a self, _cx: &Context<'_>) -> Result<Box<dyn Kernel + 'a>> {
        Ok(linear_kernel(self))
    }
}

impl LinearPart for &Gather {
    fn apply(&self, ins: &[&[f64]], y: &mut [f64]) {
        for (yi, &i) in y.iter_mut().zip(&self.index) {
            *yi = if i == u32::MAX {
                0.0
            } else {
                ins[0][i as usize]
            };
        }
    }
    fn adjoint(&self, g: &[f64], outs: &mut [Vec<f64>]) {
        outs[0].fill(0.0);
        for (&gi, &i) in g.iter().zip(&self.index) {
            if i != u32::MAX {
                outs[0][i as usize] += gi;
            }
        }
    }
    fn add_offset(&self, y: &mut [f64]) {
        if self.fill != 0.0 {
            for (v, &i) in y.iter_mut().zip(&self.index) {
                if i == u32::MAX {
                    *v = self.fill;
                }
            }
        }
    }
}

/// Concatenation along an axis: `√(Σ L_i²)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Concat(pub usize);

impl super::Sealed for Concat {}

impl Operation for Concat {
    fn op_type(&self) -> &'static str {
        "Concat"
    }
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        let axis = self.0;
        let Some(first) = inputs.first() else {
            return Err(Error::invalid("Concat inputs", 0, "needs at least one"));
        };
        if axis >= first.len() {
            return Err(Error::invalid("Concat axis", axis, "out of range"));
        }
        let mut out = first.to_vec();
        out[axis] = 0;
        for s in inputs {
            let same_rest =
                s.len() == first.len() && (0..s.len()).all(|k| k == axis || s[k] == first[k]);
            if !same_rest {
                return Err(Error::invalid(
                    "Concat input shapes",
                    format!("{inputs:?}"),
                    &format!("must agree except on axis {axis}"),
                ));
            }
            out[axis] += s[axis];
        }
        Ok(out)
    }
    fn role(&self) -> Role {
        Role::Stack
    }
    fn lipschitz(&self, _inputs: &[&[usize]]) -> Result<f64> {
        Ok(1.0)
    }
    fn prepare<'a>(&'a self, cx: &Context<'_>) -> Result<Box<dyn Kernel + 'a>> {
        let outer: usize = cx.output[..self.0].iter().product();
        let blocks = cx
            .inputs
            .iter()
            .map(|s| s.iter().product::<usize>() / outer.max(1))
            .collect();
        Ok(linear_kernel(ConcatPart { outer, blocks }))
    }
}

/// Concat layout: the number of outer slices and each input's block length per slice.
struct ConcatPart {
    outer: usize,
    blocks: Vec<usize>,
}

impl LinearPart for ConcatPart {
    fn apply(&self, ins: &[&[f64]], y: &mut [f64]) {
        let mut at = 0;
        for o in 0..self.outer {
            for (x, &b) in ins.iter().zip(&self.blocks) {
                y[at..at + b].copy_from_slice(&x[o * b..(o + 1) * b]);
                at += b;
            }
        }
    }
    fn adjoint(&self, g: &[f64], outs: &mut [Vec<f64>]) {
        let mut at = 0;
        for o in 0..self.outer {
            for (x, &b) in outs.iter_mut().zip(&self.blocks) {
                x[o * b..(o + 1) * b].copy_from_slice(&g[at..at + b]);
                at += b;
            }
        }
    }
}
