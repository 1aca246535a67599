//! The network as a graph of typed operations on statically shaped tensors.
//!
//! Values are numbered: value 0 is the network input, every node produces one new value.
//! Shapes are full ONNX shapes with the batch dimension fixed to 1 (DESIGN §1: the constant
//! of a batch is that of one sample). Nodes are stored in a topological order, so a single
//! forward sweep evaluates the graph and a single backward sweep propagates cotangents.
//!
//! A network is built node by node with [`Network::push`], which infers and checks the output
//! shape; the ONNX importer and the C builder both go through it, so every network obeys the
//! same rules.

use crate::conv::{Conv2d, PaddingMode};
use crate::error::{check_finite, Error, Result};

/// Index of a value (tensor) in a [`Network`]. Value 0 is the network input.
pub type ValueId = usize;

/// Largest number of activation elements a network may hold in one tensor (2³¹): larger
/// tensors are refused before anything is allocated.
pub const MAX_TENSOR_ELEMENTS: usize = 1 << 31;

/// Largest tensor rank accepted anywhere (numpy's own limit is 64): a shape of rank ten
/// million would otherwise be copied into every node that reads it.
pub const MAX_RANK: usize = 64;

/// An elementwise nonlinearity with a global Lipschitz constant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    /// `max(0, x)`.
    Relu,
    /// `x` for `x ≥ 0`, `αx` otherwise.
    LeakyRelu(f64),
    /// `x` for `x > 0`, `α(eˣ − 1)` otherwise.
    Elu(f64),
    /// `γ·x` for `x > 0`, `γα(eˣ − 1)` otherwise.
    Selu {
        /// α.
        alpha: f64,
        /// γ.
        gamma: f64,
    },
    /// `1/(1 + e⁻ˣ)`.
    Sigmoid,
    /// `max(0, min(1, αx + β))`.
    HardSigmoid {
        /// Slope α.
        alpha: f64,
        /// Offset β.
        beta: f64,
    },
    /// `tanh x`.
    Tanh,
    /// `ln(1 + eˣ)`.
    Softplus,
    /// `x·Φ(x)` (or its tanh approximation).
    Gelu {
        /// ONNX `approximate="tanh"`.
        tanh: bool,
    },
    /// `x·σ(x)` (also written `Mul(x, Sigmoid(x))`).
    Silu,
    /// `min(max(x, lo), hi)` (ReLU6 is `Clip(0, 6)`).
    Clip {
        /// Lower limit.
        min: f64,
        /// Upper limit.
        max: f64,
    },
}

/// The supremum of GELU's derivative `Φ(x) + xφ(x)` (at `x = √2`: 1.12880…), rounded up;
/// the tanh approximation peaks at 1.1289… as well.
const GELU_LIPSCHITZ: f64 = 1.1290;
/// The supremum of SiLU's derivative `σ(x)(1 + x(1 − σ(x)))` (1.09984… at x ≈ 2.3994), rounded up.
const SILU_LIPSCHITZ: f64 = 1.0999;

impl Activation {
    /// The global Lipschitz constant `sup |f'|` (a proven upper bound, rounded up where the
    /// supremum is irrational).
    pub fn lipschitz(&self) -> f64 {
        match *self {
            Activation::Relu | Activation::Tanh | Activation::Softplus => 1.0,
            Activation::LeakyRelu(a) => a.abs().max(1.0),
            Activation::Elu(a) => a.abs().max(1.0),
            Activation::Selu { alpha, gamma } => gamma.abs() * alpha.abs().max(1.0),
            Activation::Sigmoid => 0.25,
            Activation::HardSigmoid { alpha, .. } => alpha.abs(),
            Activation::Gelu { .. } => GELU_LIPSCHITZ,
            Activation::Silu => SILU_LIPSCHITZ,
            Activation::Clip { min, max } => {
                if max > min {
                    1.0
                } else {
                    0.0
                }
            }
        }
    }

    /// Checks the parameters: every slope, scale and offset finite (NaN or ±inf would make
    /// the constant or the outputs meaningless); Clip limits may be ±inf but not NaN.
    pub fn validate(&self) -> Result<()> {
        let (name, params): (&str, Vec<(&str, f64)>) = match *self {
            Activation::LeakyRelu(a) => ("LeakyRelu", vec![("alpha", a)]),
            Activation::Elu(a) => ("Elu", vec![("alpha", a)]),
            Activation::Selu { alpha, gamma } => ("Selu", vec![("alpha", alpha), ("gamma", gamma)]),
            Activation::HardSigmoid { alpha, beta } => {
                ("HardSigmoid", vec![("alpha", alpha), ("beta", beta)])
            }
            Activation::Clip { min, max } => {
                if min.is_nan() || max.is_nan() {
                    return Err(Error::invalid(
                        "Clip limits",
                        format!("{min}, {max}"),
                        "NaN",
                    ));
                }
                return Ok(());
            }
            _ => return Ok(()),
        };
        for (p, v) in params {
            if !v.is_finite() {
                return Err(Error::invalid(
                    &format!("{name} {p}"),
                    v,
                    "must be a finite number",
                ));
            }
        }
        Ok(())
    }

    /// `f(x)`.
    pub fn apply(&self, x: f64) -> f64 {
        match *self {
            Activation::Relu => x.max(0.0),
            Activation::LeakyRelu(a) => {
                if x >= 0.0 {
                    x
                } else {
                    a * x
                }
            }
            Activation::Elu(a) => {
                if x > 0.0 {
                    x
                } else {
                    a * x.exp_m1()
                }
            }
            Activation::Selu { alpha, gamma } => {
                if x > 0.0 {
                    gamma * x
                } else {
                    gamma * alpha * x.exp_m1()
                }
            }
            Activation::Sigmoid => sigmoid(x),
            Activation::HardSigmoid { alpha, beta } => (alpha * x + beta).clamp(0.0, 1.0),
            Activation::Tanh => x.tanh(),
            Activation::Softplus => {
                if x > 30.0 {
                    x + (-x).exp()
                } else {
                    x.exp().ln_1p()
                }
            }
            Activation::Gelu { tanh: false } => 0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2)),
            Activation::Gelu { tanh: true } => 0.5 * x * (1.0 + gelu_tanh_inner(x).tanh()),
            Activation::Silu => x * sigmoid(x),
            Activation::Clip { min, max } => x.max(min).min(max),
        }
    }

    /// `f'(x)` (one-sided where `f` has a kink; the choice does not affect any bound).
    pub fn derivative(&self, x: f64) -> f64 {
        match *self {
            Activation::Relu => f64::from(x > 0.0),
            Activation::LeakyRelu(a) => {
                if x >= 0.0 {
                    1.0
                } else {
                    a
                }
            }
            Activation::Elu(a) => {
                if x > 0.0 {
                    1.0
                } else {
                    a * x.exp()
                }
            }
            Activation::Selu { alpha, gamma } => {
                if x > 0.0 {
                    gamma
                } else {
                    gamma * alpha * x.exp()
                }
            }
            Activation::Sigmoid => {
                let s = sigmoid(x);
                s * (1.0 - s)
            }
            Activation::HardSigmoid { alpha, beta } => {
                let t = alpha * x + beta;
                if t > 0.0 && t < 1.0 {
                    alpha
                } else {
                    0.0
                }
            }
            Activation::Tanh => 1.0 - x.tanh().powi(2),
            Activation::Softplus => sigmoid(x),
            Activation::Gelu { tanh: false } => {
                let cdf = 0.5 * (1.0 + erf(x / std::f64::consts::SQRT_2));
                let pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
                cdf + x * pdf
            }
            Activation::Gelu { tanh: true } => {
                let c = (2.0 / std::f64::consts::PI).sqrt();
                let t = gelu_tanh_inner(x).tanh();
                0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * c * (1.0 + 3.0 * 0.044715 * x * x)
            }
            Activation::Silu => {
                let s = sigmoid(x);
                s * (1.0 + x * (1.0 - s))
            }
            Activation::Clip { min, max } => f64::from(x > min && x < max),
        }
    }

    /// The ONNX operator name.
    pub fn onnx_name(&self) -> &'static str {
        match self {
            Activation::Relu => "Relu",
            Activation::LeakyRelu(_) => "LeakyRelu",
            Activation::Elu(_) => "Elu",
            Activation::Selu { .. } => "Selu",
            Activation::Sigmoid => "Sigmoid",
            Activation::HardSigmoid { .. } => "HardSigmoid",
            Activation::Tanh => "Tanh",
            Activation::Softplus => "Softplus",
            Activation::Gelu { .. } => "Gelu",
            Activation::Silu => "Silu",
            Activation::Clip { .. } => "Clip",
        }
    }
}

fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

fn gelu_tanh_inner(x: f64) -> f64 {
    (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)
}

/// The error function (Abramowitz–Stegun 7.1.26 is too coarse for a derivative check; this is
/// the complementary-error-function series of Numerical Recipes `erfcc`, relative error
/// < 1.2e-7, enough for evaluating activations — bounds never depend on it).
fn erf(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = 1.0 - t * poly.exp();
    if x >= 0.0 {
        r
    } else {
        -r
    }
}

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
        self.values.iter().fold(0.0f64, |m, v| m.max(v.abs()))
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

/// A 2-D pooling window: kernel, stride, pads `[top, left, bottom, right]`, dilation and
/// ONNX/PyTorch `ceil_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool2d {
    /// Window `[kH, kW]`.
    pub kernel: [usize; 2],
    /// Stride.
    pub stride: [usize; 2],
    /// Pads `[top, left, bottom, right]`.
    pub pads: [usize; 4],
    /// Dilation.
    pub dilation: [usize; 2],
    /// Round the output size up (a last partial window is kept if it starts inside the
    /// input or the leading pad).
    pub ceil_mode: bool,
}

/// The taps of one pooling window along one axis that land inside the input: positions
/// `first, first + step, …` (`count` of them), and the number of taps inside the padded input
/// (PyTorch's divisor with `count_include_pad`). Computed in O(1), whatever the kernel size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Taps {
    pub first: usize,
    pub step: usize,
    pub count: usize,
    pub padded: usize,
}

impl Taps {
    /// The input positions, in order.
    pub fn positions(self) -> impl Iterator<Item = usize> {
        (0..self.count).map(move |t| self.first + t * self.step)
    }
}

/// Most elementary operations one pooling node may cost per evaluation (`C·H_out·W_out` times
/// the taps of a window inside the input): a few seconds. A larger pool is refused, so that a
/// small model file cannot make an evaluation run for hours.
pub const MAX_POOL_WORK: u128 = 1 << 32;

impl Pool2d {
    /// Output length along `axis` (0 = H, 1 = W) for an input of length `n`. Every size is
    /// checked: a kernel, stride, dilation or pad of any size gives a length or an error.
    pub fn output_len(&self, axis: usize, n: usize) -> Result<usize> {
        let (k, s, d) = (self.kernel[axis], self.stride[axis], self.dilation[axis]);
        let (p0, p1) = (self.pads[axis], self.pads[axis + 2]);
        if k == 0 || s == 0 || d == 0 {
            return Err(Error::invalid(
                "pooling kernel/stride/dilation",
                format!("{:?}/{:?}/{:?}", self.kernel, self.stride, self.dilation),
                "must be ≥ 1",
            ));
        }
        // u128 holds every product and sum of two usizes.
        let (k, s, d, n, p0, p1) = (
            k as u128, s as u128, d as u128, n as u128, p0 as u128, p1 as u128,
        );
        let extent = d * (k - 1) + 1;
        let padded = n + p0 + p1;
        if padded < extent {
            return Err(Error::invalid(
                "pooling window",
                extent,
                &format!("exceeds the padded input {padded}"),
            ));
        }
        let span = padded - extent;
        let mut out = if self.ceil_mode {
            span.div_ceil(s) + 1
        } else {
            span / s + 1
        };
        if self.ceil_mode && (out - 1) * s >= n + p0 {
            out -= 1;
        }
        usize::try_from(out)
            .map_err(|_| Error::invalid("pooling output length", out, "does not fit in memory"))
    }

    /// The taps of output position `i` along `axis` for an input of length `n` (see
    /// [`Taps`]); `i` must be below [`Pool2d::output_len`].
    pub(crate) fn window(&self, axis: usize, n: usize, i: usize) -> Taps {
        let (k, s, d) = (
            self.kernel[axis] as i128,
            self.stride[axis] as i128,
            self.dilation[axis] as i128,
        );
        let (p0, p1, n) = (
            self.pads[axis] as i128,
            self.pads[axis + 2] as i128,
            n as i128,
        );
        let start = i as i128 * s - p0;
        // Taps t ∈ [0, k) at start + t·d; inside the input when 0 ≤ pos < n.
        let lo = if start >= 0 { 0 } else { (-start + d - 1) / d };
        let hi = if n - 1 - start >= 0 {
            ((n - 1 - start) / d).min(k - 1)
        } else {
            -1
        };
        let count = (hi - lo + 1).max(0);
        // Inside the padded input when pos < n + p1 (pos ≥ −p0 always holds).
        let padded = if n + p1 - 1 - start >= 0 {
            ((n + p1 - 1 - start) / d + 1).min(k)
        } else {
            0
        };
        Taps {
            first: if count > 0 {
                (start + lo * d) as usize
            } else {
                0
            },
            step: d as usize,
            count: count as usize,
            padded: padded as usize,
        }
    }

    /// Per axis, the largest number of windows that contain one input position.
    pub(crate) fn max_cover(&self, axis: usize, n: usize) -> Result<usize> {
        let out = self.output_len(axis, n)?;
        let mut count = vec![0usize; n];
        for i in 0..out {
            for p in self.window(axis, n, i).positions() {
                count[p] += 1;
            }
        }
        Ok(count.into_iter().max().unwrap_or(0))
    }

    /// Elementary operations of one evaluation on a `(N, C, H, W)` input: `C·H_out·W_out`
    /// windows times the taps of the largest one inside the input.
    pub(crate) fn work(&self, shape: &[usize]) -> Result<u128> {
        let mut work = shape[1] as u128;
        for axis in 0..2 {
            let n = shape[2 + axis];
            let out = self.output_len(axis, n)?;
            let taps = self.kernel[axis].min(n) as u128;
            work = work.saturating_mul(out as u128).saturating_mul(taps);
        }
        Ok(work)
    }
}

/// What a node computes.
#[derive(Debug, Clone)]
pub enum Op {
    /// A 2-D convolution on `(1, C, H, W)`; `bias` has `C_out` entries.
    Conv {
        /// Shape and options.
        conv: Conv2d,
        /// OIHW weights.
        weight: Vec<f32>,
        /// Optional bias.
        bias: Option<Vec<f32>>,
    },
    /// `y = W x + b` on the last axis: `W` is `rows × cols` row-major (rows = outputs).
    Dense {
        /// Weights.
        weight: Vec<f32>,
        /// Outputs.
        rows: usize,
        /// Inputs (the last axis of the input tensor).
        cols: usize,
        /// Optional bias (`rows` entries).
        bias: Option<Vec<f32>>,
    },
    /// An elementwise nonlinearity.
    Activation(Activation),
    /// `x` where positive, `slope·x` elsewhere; the slope broadcast along the tensor.
    PRelu(Broadcast),
    /// `scale ⊙ x + shift` (inference BatchNorm, Mul/Div/Add/Sub by a constant).
    Affine {
        /// Multiplier.
        scale: Broadcast,
        /// Offset.
        shift: Broadcast,
    },
    /// Max pooling on `(1, C, H, W)`.
    MaxPool(Pool2d),
    /// Average pooling on `(1, C, H, W)`.
    AvgPool {
        /// Window.
        pool: Pool2d,
        /// Divide by the full window (pads included) instead of the taps inside the input.
        count_include_pad: bool,
    },
    /// Mean over `axes` (GlobalAveragePool is the mean over H and W).
    ReduceMean {
        /// Axes reduced (of the input).
        axes: Vec<usize>,
        /// Keep reduced axes as length 1.
        keepdims: bool,
    },
    /// Maximum over H and W per channel.
    GlobalMaxPool,
    /// A new shape for the same elements (Flatten, Reshape, Squeeze, Unsqueeze, Identity,
    /// Dropout at inference).
    Reshape(Vec<usize>),
    /// Output element `j` is input element `index[j]`, or `fill` where `index[j] == u32::MAX`
    /// (standalone Pad in every mode).
    Gather {
        /// Source of each output element.
        index: Vec<u32>,
        /// Constant for padded elements.
        fill: f64,
        /// Output shape.
        shape: Vec<usize>,
    },
    /// Sum of two tensors of one shape (residual connections).
    Add,
    /// Difference of two tensors of one shape.
    Sub,
    /// Concatenation along `axis`.
    Concat(usize),
    /// Softmax over slices: `len` entries spaced `inner` apart.
    Softmax {
        /// Entries per softmax.
        len: usize,
        /// Distance between consecutive entries of one softmax.
        inner: usize,
    },
}

impl Op {
    /// True for operations that are linear in their (single) input up to a constant offset.
    pub fn is_affine(&self) -> bool {
        matches!(
            self,
            Op::Conv { .. }
                | Op::Dense { .. }
                | Op::Affine { .. }
                | Op::AvgPool { .. }
                | Op::ReduceMean { .. }
                | Op::Reshape(_)
                | Op::Gather { .. }
        )
    }

    /// True for the layers whose norm needs a spectral computation (reported per layer).
    pub fn is_linear_layer(&self) -> bool {
        matches!(self, Op::Conv { .. } | Op::Dense { .. })
    }
}

/// One operation of the graph.
#[derive(Debug, Clone)]
pub struct Node {
    /// The name (the ONNX node name, or one made up from the output and op).
    pub name: String,
    /// The operator as the user knows it ("Conv", "Gemm", "MatMul", "BatchNormalization", …).
    pub kind: String,
    /// What it computes.
    pub op: Op,
    /// Input values.
    pub inputs: Vec<ValueId>,
    /// The value it produces.
    pub output: ValueId,
    /// For Conv and Dense nodes: an upper bound on `‖W_source − W‖_F`, how far the `f32`
    /// weights kept here are from the weights the source stored (f64 initializers, a Gemm's
    /// `alpha`); 0 when they are exact. Layer bounds are widened by it.
    pub weight_error: f64,
}

/// A network: an input, nodes in topological order, and one or more outputs.
#[derive(Debug, Clone)]
pub struct Network {
    /// Where it came from (file name, or "network").
    pub source: String,
    /// Shape of every value; `shapes[0]` is the input's.
    pub shapes: Vec<Vec<usize>>,
    /// Names of the values (ONNX tensor names).
    pub value_names: Vec<String>,
    /// The nodes, in topological order.
    pub nodes: Vec<Node>,
    /// Output values (several outputs are bounded as one concatenated output).
    pub outputs: Vec<ValueId>,
}

impl Network {
    /// An empty network with the given input shape (batch dimension included, it is set
    /// to 1). No node yet: the input is the output.
    pub fn new(source: &str, input_shape: &[usize]) -> Result<Self> {
        let mut shape = input_shape.to_vec();
        if shape.is_empty() {
            return Err(Error::model(source, "the input shape is empty"));
        }
        if shape.len() >= 2 {
            shape[0] = 1;
        }
        check_elements(source, "input", &shape)?;
        Ok(Network {
            source: source.to_string(),
            shapes: vec![shape],
            value_names: vec!["input".to_string()],
            nodes: Vec::new(),
            outputs: vec![0],
        })
    }

    /// Records that the weights of the node producing `value` are within `error`
    /// (Frobenius norm) of the source's; see [`Node::weight_error`].
    pub fn set_weight_error(&mut self, value: ValueId, error: f64) -> Result<()> {
        if !(error >= 0.0 && error.is_finite()) {
            return Err(Error::invalid(
                "weight error",
                error,
                "must be finite and ≥ 0",
            ));
        }
        match self.nodes.iter_mut().find(|n| n.output == value) {
            Some(n) => {
                n.weight_error = error;
                Ok(())
            }
            None => Err(Error::invalid("value", value, "is produced by no node")),
        }
    }

    /// The input shape (batch 1).
    pub fn input_shape(&self) -> &[usize] {
        &self.shapes[0]
    }

    /// Number of elements of a value.
    pub fn len_of(&self, v: ValueId) -> usize {
        self.shapes[v].iter().product()
    }

    /// Appends a node computing `op` from `inputs`, checks it and infers its output shape.
    /// The new value becomes the (single) network output. Returns the new value.
    pub fn push(&mut self, name: &str, kind: &str, op: Op, inputs: &[ValueId]) -> Result<ValueId> {
        for &v in inputs {
            if v >= self.shapes.len() {
                return Err(Error::model(
                    &self.source,
                    format!("node '{name}' ({kind}): input value {v} does not exist"),
                ));
            }
        }
        let in_shapes: Vec<&[usize]> = inputs.iter().map(|&v| self.shapes[v].as_slice()).collect();
        let shape = infer_shape(&op, &in_shapes).map_err(|e| match e {
            Error::NonFinite { what, index, value } => Error::NonFinite {
                what: format!("{}: node '{name}' ({kind}): {what}", self.source),
                index,
                value,
            },
            other => Error::model(&self.source, format!("node '{name}' ({kind}): {other}")),
        })?;
        check_elements(&self.source, &format!("output of node '{name}'"), &shape)?;
        let output = self.shapes.len();
        self.shapes.push(shape);
        self.value_names.push(format!("{name}:out"));
        self.nodes.push(Node {
            name: name.to_string(),
            kind: kind.to_string(),
            op,
            inputs: inputs.to_vec(),
            output,
            weight_error: 0.0,
        });
        self.outputs = vec![output];
        Ok(output)
    }

    /// Bytes needed to hold every activation once in `f64` (what one forward pass keeps).
    pub fn activation_bytes(&self) -> u128 {
        self.shapes
            .iter()
            .map(|s| s.iter().map(|&d| d as u128).product::<u128>() * 8)
            .sum()
    }

    /// For each value, the nodes that read it (graph outputs count as one reader).
    pub fn consumers(&self) -> Vec<Vec<usize>> {
        let mut c = vec![Vec::new(); self.shapes.len()];
        for (k, node) in self.nodes.iter().enumerate() {
            for &v in &node.inputs {
                if !c[v].contains(&k) {
                    c[v].push(k);
                }
            }
        }
        for &o in &self.outputs {
            c[o].push(usize::MAX);
        }
        c
    }

    /// Which nodes contribute to an output (the others are dead and skipped).
    pub fn live_nodes(&self) -> Vec<bool> {
        let mut live_value = vec![false; self.shapes.len()];
        for &o in &self.outputs {
            live_value[o] = true;
        }
        let mut live = vec![false; self.nodes.len()];
        for (k, node) in self.nodes.iter().enumerate().rev() {
            if live_value[node.output] {
                live[k] = true;
                for &v in &node.inputs {
                    live_value[v] = true;
                }
            }
        }
        live
    }
}

fn check_elements(source: &str, what: &str, shape: &[usize]) -> Result<()> {
    if shape.len() > MAX_RANK {
        return Err(Error::model(
            source,
            format!(
                "{what} has rank {}, over the limit of {MAX_RANK}",
                shape.len()
            ),
        ));
    }
    let mut n: usize = 1;
    for &d in shape {
        if d == 0 {
            return Err(Error::model(
                source,
                format!("{what} has an empty shape {shape:?}"),
            ));
        }
        n = n.saturating_mul(d);
    }
    if n > MAX_TENSOR_ELEMENTS {
        return Err(Error::model(
            source,
            format!(
                "{what} of shape {shape:?} has more than {MAX_TENSOR_ELEMENTS} elements; refused"
            ),
        ));
    }
    Ok(())
}

fn expect_inputs(in_shapes: &[&[usize]], n: usize) -> Result<()> {
    if in_shapes.len() != n {
        return Err(Error::invalid(
            "number of inputs",
            in_shapes.len(),
            &format!("expected {n}"),
        ));
    }
    Ok(())
}

fn expect_rank4<'a>(shape: &'a [usize], what: &str) -> Result<&'a [usize]> {
    if shape.len() != 4 {
        return Err(Error::invalid(
            "input shape",
            format!("{shape:?}"),
            &format!("{what} needs a (N, C, H, W) tensor"),
        ));
    }
    Ok(shape)
}

/// The output shape of `op` on inputs of the given shapes, or an error saying why they do
/// not fit.
pub fn infer_shape(op: &Op, in_shapes: &[&[usize]]) -> Result<Vec<usize>> {
    match op {
        Op::Conv { conv, weight, bias } => {
            expect_inputs(in_shapes, 1)?;
            let s = expect_rank4(in_shapes[0], "Conv")?;
            if s[1] != conv.in_channels || [s[2], s[3]] != conv.input {
                return Err(Error::invalid(
                    "conv input",
                    format!("{s:?}"),
                    &format!(
                        "the weights expect {} input channels on a {}×{} image",
                        conv.in_channels, conv.input[0], conv.input[1]
                    ),
                ));
            }
            conv.validate_weights(weight)?;
            if let Some(b) = bias {
                if b.len() != conv.out_channels {
                    return Err(Error::length("conv bias", conv.out_channels, b.len()));
                }
                check_finite("conv bias", b)?;
            }
            let [h, w] = conv.output_size()?;
            Ok(vec![s[0], conv.out_channels, h, w])
        }
        Op::Dense {
            weight,
            rows,
            cols,
            bias,
        } => {
            expect_inputs(in_shapes, 1)?;
            let s = in_shapes[0];
            if s.last() != Some(cols) {
                return Err(Error::invalid(
                    "dense input",
                    format!("{s:?}"),
                    &format!("the weight matrix expects {cols} inputs on the last axis"),
                ));
            }
            if weight.len() != rows * cols {
                return Err(Error::length("dense weight", rows * cols, weight.len()));
            }
            check_finite("dense weight", weight)?;
            if let Some(b) = bias {
                if b.len() != *rows {
                    return Err(Error::length("dense bias", *rows, b.len()));
                }
                check_finite("dense bias", b)?;
            }
            let mut out = s.to_vec();
            *out.last_mut().unwrap() = *rows;
            Ok(out)
        }
        Op::Activation(a) => {
            expect_inputs(in_shapes, 1)?;
            a.validate()?;
            Ok(in_shapes[0].to_vec())
        }
        Op::PRelu(b) | Op::Affine { scale: b, .. } => {
            expect_inputs(in_shapes, 1)?;
            check_finite("elementwise constant", &b.values)?;
            if let Op::Affine { shift, .. } = op {
                check_finite("elementwise offset", &shift.values)?;
            }
            Ok(in_shapes[0].to_vec())
        }
        Op::MaxPool(p) | Op::AvgPool { pool: p, .. } => {
            expect_inputs(in_shapes, 1)?;
            let s = expect_rank4(in_shapes[0], "pooling")?;
            let work = p.work(s)?;
            if work > MAX_POOL_WORK {
                return Err(Error::invalid(
                    "pooling window",
                    format!("{:?} on {s:?}", p.kernel),
                    &format!(
                        "costs {work} operations per evaluation, over the limit of {MAX_POOL_WORK}"
                    ),
                ));
            }
            Ok(vec![
                s[0],
                s[1],
                p.output_len(0, s[2])?,
                p.output_len(1, s[3])?,
            ])
        }
        Op::ReduceMean { axes, keepdims } => {
            expect_inputs(in_shapes, 1)?;
            let s = in_shapes[0];
            if axes.is_empty() || axes.iter().any(|&a| a >= s.len()) {
                return Err(Error::invalid(
                    "ReduceMean axes",
                    format!("{axes:?}"),
                    &format!("must be non-empty axes of a rank-{} tensor", s.len()),
                ));
            }
            Ok(s.iter()
                .enumerate()
                .filter_map(|(k, &d)| match (axes.contains(&k), keepdims) {
                    (false, _) => Some(d),
                    (true, true) => Some(1),
                    (true, false) => None,
                })
                .collect())
        }
        Op::GlobalMaxPool => {
            expect_inputs(in_shapes, 1)?;
            let s = expect_rank4(in_shapes[0], "GlobalMaxPool")?;
            Ok(vec![s[0], s[1], 1, 1])
        }
        Op::Reshape(shape) => {
            expect_inputs(in_shapes, 1)?;
            let n: usize = in_shapes[0].iter().product();
            if shape.iter().product::<usize>() != n {
                return Err(Error::invalid(
                    "reshape target",
                    format!("{shape:?}"),
                    &format!("has not the {n} elements of {:?}", in_shapes[0]),
                ));
            }
            Ok(shape.clone())
        }
        Op::Gather { index, shape, .. } => {
            expect_inputs(in_shapes, 1)?;
            let n: usize = in_shapes[0].iter().product();
            if index.len() != shape.iter().product::<usize>() {
                return Err(Error::length(
                    "gather index",
                    shape.iter().product(),
                    index.len(),
                ));
            }
            if index.iter().any(|&i| i != u32::MAX && i as usize >= n) {
                return Err(Error::invalid("gather index", "out of range", "bad pad"));
            }
            Ok(shape.clone())
        }
        Op::Add | Op::Sub => {
            expect_inputs(in_shapes, 2)?;
            if in_shapes[0] != in_shapes[1] {
                return Err(Error::invalid(
                    "operand shapes",
                    format!("{:?} and {:?}", in_shapes[0], in_shapes[1]),
                    "must be equal (broadcasting between two activations is not supported)",
                ));
            }
            Ok(in_shapes[0].to_vec())
        }
        Op::Concat(axis) => {
            if in_shapes.is_empty() {
                return Err(Error::invalid("Concat inputs", 0, "needs at least one"));
            }
            let first = in_shapes[0];
            if *axis >= first.len() {
                return Err(Error::invalid("Concat axis", axis, "out of range"));
            }
            let mut out = first.to_vec();
            out[*axis] = 0;
            for s in in_shapes {
                let same_rest =
                    s.len() == first.len() && (0..s.len()).all(|k| k == *axis || s[k] == first[k]);
                if !same_rest {
                    return Err(Error::invalid(
                        "Concat input shapes",
                        format!("{in_shapes:?}"),
                        &format!("must agree except on axis {axis}"),
                    ));
                }
                out[*axis] += s[*axis];
            }
            Ok(out)
        }
        Op::Softmax { len, inner } => {
            expect_inputs(in_shapes, 1)?;
            let n: usize = in_shapes[0].iter().product();
            if *len == 0 || *inner == 0 || !n.is_multiple_of(len * inner) {
                return Err(Error::invalid(
                    "Softmax axis",
                    len,
                    "does not divide the tensor",
                ));
            }
            Ok(in_shapes[0].to_vec())
        }
    }
}

/// A conv description for an input of shape `(N, C, H, W)` and ONNX attributes.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv_for(
    in_shape: &[usize],
    out_channels: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    groups: usize,
    pads: [usize; 4],
    mode: PaddingMode,
) -> Result<Conv2d> {
    let s = expect_rank4(in_shape, "Conv")?;
    let conv = Conv2d::new(out_channels, s[1], kernel, [s[2], s[3]])
        .stride(stride)
        .dilation(dilation)
        .groups(groups)
        .pads(pads)
        .mode(mode);
    conv.validate()?;
    Ok(conv)
}
