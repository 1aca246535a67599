//! The operations a network is made of, one file per family: `linear` (Conv, Dense),
//! `activation` (elementwise nonlinearities, PRelu, Softmax), `elementwise` (constant scales
//! and shifts, Add, Sub), `pool` (max/average/global pooling, ReduceMean) and `reshape`
//! (Reshape, Gather, Concat).
//!
//! Each operation is one type implementing [`Operation`], which owns everything the crate
//! knows about it: the shape rule (and the checks of its parameters), the proven Lipschitz
//! constant, how it composes in a network bound ([`Role`]), and — through the [`Kernel`] it
//! prepares — its forward pass, Jacobian-vector product and vector-Jacobian product. The
//! graph, the evaluator, the analysis and the importers only talk to this trait, so adding
//! an operation means writing one type in one of these files (and an importer entry).

mod activation;
mod elementwise;
mod linear;
mod norm;
mod order;
mod pool;
mod reshape;
mod resize;

pub(crate) use activation::MISH_SLOPES;
pub use activation::{Activation, PRelu, Softmax};
pub use elementwise::{Affine, Broadcast, Sum};
pub(crate) use linear::conv_for;
pub use linear::{Conv, ConvTranspose, Dense, Layer, LayerBound, LayerMethod};
pub use norm::Normalize;
pub use order::{Extremum, Sort};
pub use pool::{AvgPool, GlobalMaxPool, MaxPool, Pool2d, ReduceMean, MAX_POOL_WORK};
pub use reshape::{Concat, Gather, Reshape};
pub use resize::{AxisMap, Interpolate};

use crate::error::{Error, Result};
use std::any::Any;
use std::fmt;
use std::sync::Arc;

/// How an operation enters the composition of a network bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A linear layer whose norm needs a spectral computation (Conv, Gemm, MatMul): bounded
    /// and reported per layer, see [`Operation::as_layer`].
    Layer,
    /// Affine in its single input, with a constant computed in closed form. `heavy`: its
    /// norm is non-trivial (average pooling, means), so merging it with a neighbouring layer
    /// can tighten the bound; reshapes, permutations and scales are not heavy.
    Linear {
        /// Whether it counts as a factor worth merging.
        heavy: bool,
    },
    /// A nonlinear operation with a global constant.
    Nonlinear,
    /// The sum of its inputs, each multiplied by a constant of norm ≤ 1 (Add, Sub): the
    /// constant of the output is at most the sum of the inputs'.
    Sum,
    /// Its inputs side by side (Concat): the constant is `√(Σ L_i²)`.
    Stack,
}

/// What an operation needs to prepare its kernel.
pub struct Context<'s> {
    /// Shapes of the inputs.
    pub inputs: &'s [&'s [usize]],
    /// Shape of the output.
    pub output: &'s [usize],
    /// Use `f64` direct operators (for the evaluations a certified lower bound rests on);
    /// otherwise the fastest for each shape.
    pub accurate: bool,
    /// Memory a prepared operator may use, in bytes.
    pub memory_limit: usize,
}

/// What the forward pass leaves for the derivatives, beside the input and output values:
/// the winning input index of each output of a max, `u32::MAX` where none.
pub type Saved = Vec<u32>;

/// The values of a node at the point where a derivative is taken.
#[derive(Clone, Copy)]
pub struct At<'a> {
    /// The first input's value.
    pub input: &'a [f64],
    /// The output's value.
    pub output: &'a [f64],
    /// What [`Kernel::forward`] returned.
    pub saved: &'a [u32],
}

/// An operation prepared for evaluation on fixed shapes (plans, spectra, index maps made).
pub trait Kernel: Send + Sync {
    /// `y = f(inputs)`; returns what the derivatives need beyond the values.
    fn forward(&self, ins: &[&[f64]], y: &mut [f64]) -> Saved;
    /// `dy = J·t` at `at` (`t` holds one tangent per input).
    fn jvp(&self, at: At<'_>, t: &[&[f64]], dy: &mut [f64]);
    /// `outs[i] = J_iᵀ·g` at `at`; `outs` come zeroed, one per input.
    fn vjp(&self, at: At<'_>, g: &[f64], outs: &mut [Vec<f64>]);
    /// The linear part, for affine operations (merged runs apply it without offsets).
    fn linear(&self) -> Option<&dyn LinearPart> {
        None
    }
}

/// The linear part `A` of an affine operation `y = A·x + b`.
pub trait LinearPart: Send + Sync {
    /// `y = A·(inputs)`.
    fn apply(&self, ins: &[&[f64]], y: &mut [f64]);
    /// `outs[i] = A_iᵀ·g` for every input `i` (`outs` come zeroed).
    fn adjoint(&self, g: &[f64], outs: &mut [Vec<f64>]);
    /// `y += b` (the bias, shift or fill), nothing by default.
    fn add_offset(&self, _y: &mut [f64]) {}
}

/// The kernel of an affine operation: its derivative is its linear part everywhere.
pub(crate) struct LinearKernel<L>(pub L);

impl<L: LinearPart> Kernel for LinearKernel<L> {
    fn forward(&self, ins: &[&[f64]], y: &mut [f64]) -> Saved {
        self.0.apply(ins, y);
        self.0.add_offset(y);
        Vec::new()
    }
    fn jvp(&self, _at: At<'_>, t: &[&[f64]], dy: &mut [f64]) {
        self.0.apply(t, dy);
    }
    fn vjp(&self, _at: At<'_>, g: &[f64], outs: &mut [Vec<f64>]) {
        self.0.adjoint(g, outs);
    }
    fn linear(&self) -> Option<&dyn LinearPart> {
        Some(&self.0)
    }
}

/// A boxed kernel for an affine operation.
pub(crate) fn linear_kernel<'a, L: LinearPart + 'a>(l: L) -> Box<dyn Kernel + 'a> {
    Box::new(LinearKernel(l))
}

mod sealed {
    /// Only this crate's operations implement [`super::Operation`]: a wrong shape rule or
    /// constant would make certificates wrong.
    pub trait Sealed {}
}
pub(crate) use sealed::Sealed;

/// One operation of a network: everything the crate knows about it.
pub trait Operation: Sealed + fmt::Debug + Send + Sync + Any {
    /// The operator as users know it ("Conv", "Relu", "AveragePool", …).
    fn op_type(&self) -> &'static str;
    /// The output shape on inputs of these shapes, after checking the operation's own
    /// parameters (finite weights, sizes that agree): the error says what does not fit.
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>>;
    /// How it composes in a network bound.
    fn role(&self) -> Role;
    /// A proven upper bound on its Lipschitz constant (ℓ2) on inputs of these shapes,
    /// rounded up. For [`Role::Sum`] and [`Role::Stack`] the constant of each input's map
    /// (1); for layers a cheap bound (the spectral one is computed by the analysis).
    fn lipschitz(&self, inputs: &[&[usize]]) -> Result<f64>;
    /// The kernel that evaluates it on these shapes.
    fn prepare<'a>(&'a self, cx: &Context<'_>) -> Result<Box<dyn Kernel + 'a>>;
    /// For [`Role::Layer`]: the weights and the spectral bound.
    fn as_layer(&self) -> Option<&dyn Layer> {
        None
    }
    /// For an elementwise scale `y = s ⊙ x + b`: `s`, which the analysis can fold into a
    /// neighbouring layer's weights.
    fn as_scale(&self) -> Option<&Broadcast> {
        None
    }
    /// True when output element `i` is input element `i` (reshapes): folding sees through it.
    fn is_reshape(&self) -> bool {
        false
    }
    /// Whether its kernel has a linear part (every role but [`Role::Nonlinear`], except the
    /// elementwise maximum, which composes like `Concat` without being linear).
    fn is_affine(&self) -> bool {
        self.role() != Role::Nonlinear
    }
    /// What a user should know about its constant, said once per node in the report.
    fn note(&self) -> Option<String> {
        None
    }
}

/// A shared, immutable operation (cloning a network does not copy its weights).
#[derive(Clone)]
pub struct Op(Arc<dyn Operation>);

impl Op {
    /// Wraps an operation.
    pub fn new(op: impl Operation) -> Self {
        Op(Arc::new(op))
    }

    /// The operation as its concrete type, if it is a `T`.
    pub fn downcast_ref<T: Operation>(&self) -> Option<&T> {
        let any: &dyn Any = &*self.0;
        any.downcast_ref::<T>()
    }
}

impl std::ops::Deref for Op {
    type Target = dyn Operation;
    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<T: Operation> From<T> for Op {
    fn from(op: T) -> Self {
        Op::new(op)
    }
}

/// Checks the number of inputs.
pub(crate) fn expect_inputs(in_shapes: &[&[usize]], n: usize) -> Result<()> {
    if in_shapes.len() != n {
        return Err(Error::invalid(
            "number of inputs",
            in_shapes.len(),
            &format!("expected {n}"),
        ));
    }
    Ok(())
}

/// Checks that the single input is a `(N, C, H, W)` tensor.
pub(crate) fn expect_rank4<'a>(in_shapes: &[&'a [usize]], what: &str) -> Result<&'a [usize]> {
    expect_inputs(in_shapes, 1)?;
    let shape = in_shapes[0];
    if shape.len() != 4 {
        return Err(Error::invalid(
            "input shape",
            format!("{shape:?}"),
            &format!("{what} needs a (N, C, H, W) tensor"),
        ));
    }
    Ok(shape)
}

/// The single input of a one-input operation.
pub(crate) fn single<'a>(in_shapes: &[&'a [usize]]) -> Result<&'a [usize]> {
    expect_inputs(in_shapes, 1)?;
    Ok(in_shapes[0])
}

/// A stand-in for a node that stops the analysis (not globally Lipschitz), so that an import
/// can go on past it and report every such node at once; a network holding one is never
/// returned, and its kernel refuses to be prepared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unanalysable {
    /// The operator it stands for.
    pub kind: String,
    /// Its output shape.
    pub shape: Vec<usize>,
}

impl Sealed for Unanalysable {}

impl Operation for Unanalysable {
    fn op_type(&self) -> &'static str {
        "Unanalysable"
    }
    fn output_shape(&self, _inputs: &[&[usize]]) -> Result<Vec<usize>> {
        Ok(self.shape.clone())
    }
    fn role(&self) -> Role {
        Role::Nonlinear
    }
    fn lipschitz(&self, _inputs: &[&[usize]]) -> Result<f64> {
        Ok(f64::INFINITY)
    }
    fn prepare<'a>(&'a self, _cx: &Context<'_>) -> Result<Box<dyn Kernel + 'a>> {
        Err(Error::invalid(
            "operation",
            &self.kind,
            "has no global Lipschitz constant",
        ))
    }
}

/// `dy[o] = t[source[o]]` (0 where `source[o]` is `u32::MAX`): the Jacobian of a selection
/// recorded by a forward pass (max pooling's winners, a sort's permutation).
pub(crate) fn select_into(source: &[u32], t: &[f64], dy: &mut [f64]) {
    for (d, &w) in dy.iter_mut().zip(source) {
        *d = if w == u32::MAX { 0.0 } else { t[w as usize] };
    }
}

/// The adjoint of [`select_into`], accumulated into `d`.
pub(crate) fn select_adjoint_into(source: &[u32], g: &[f64], d: &mut [f64]) {
    for (&t, &w) in g.iter().zip(source) {
        if w != u32::MAX {
            d[w as usize] += t;
        }
    }
}

/// `max |v|`.
pub(crate) fn max_abs(values: &[f64]) -> f64 {
    values.iter().fold(0.0f64, |m, v| m.max(v.abs()))
}
