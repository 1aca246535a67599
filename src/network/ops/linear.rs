//! The linear layers whose norm needs a spectral computation: 2-D convolutions and dense
//! maps (Gemm, MatMul, Linear). Besides the [`Operation`] rules they implement [`Layer`]:
//! the spectral bound and what folding elementwise scales into their weights needs.

use super::{expect_rank4, linear_kernel, single, Context, Kernel, LinearPart, Operation, Role};
use crate::bound::{Bound, Method, Options};
use crate::conv::{conv2d_norm, Conv2d, ConvMethod, ConvOperator, DirectConv2d, PaddingMode};
use crate::dense::dense_norm;
use crate::dense::DenseMatrix;
use crate::error::{check_finite, Error, Result};
use crate::LinearOperator;
use serde::Serialize;

/// The method that bounded a layer: the spectral engine's for dense layers, the conv
/// method for convolutions. Serialised as its name (`"lanczos"`, `"exact_circular"`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum LayerMethod {
    /// A dense layer.
    Dense(Method),
    /// A convolution.
    Conv(ConvMethod),
}

/// A layer's certified interval and how it was computed.
#[derive(Debug, Clone)]
pub struct LayerBound {
    /// The interval.
    pub bound: Bound,
    /// The method that produced it.
    pub method: LayerMethod,
    /// Whether the layer is a circular convolution.
    pub circular: bool,
    /// In words, the route taken and why (see [`crate::conv::ConvBound::route`]).
    pub route: String,
}

/// A linear layer bounded by a spectral computation.
pub trait Layer {
    /// The weights as stored.
    fn weights(&self) -> &[f32];
    /// The certified interval of the layer with weights `weight` (its own, or its own with
    /// elementwise scales folded in).
    fn bound(&self, weight: &[f32], opts: &Options) -> Result<LayerBound>;
    /// Can an output-side diagonal `d` (one entry per output element) be folded into the
    /// weights, i.e. is it constant over what one weight row produces?
    fn fits_output(&self, d: &[f64]) -> bool;
    /// Can an input-side diagonal (one entry per input element) be folded in?
    fn fits_input(&self, d: &[f64]) -> bool;
    /// Each weight times the scale folding `d_in` and `d_out` multiplies it by, in `f64`.
    fn scaled_products(&self, d_in: &[f64], d_out: &[f64]) -> Vec<f64>;
    /// `c` with `‖layer(E)‖₂ ≤ c·‖E‖_F` for a weight perturbation `E`.
    fn frobenius_to_operator(&self) -> f64;
}

/// `‖W‖_F` rounded up, for the cheap bound `c·‖W‖_F` of a layer.
fn frobenius_up(w: &[f32]) -> f64 {
    let sum: f64 = w.iter().map(|&v| (v as f64) * (v as f64)).sum();
    sum.sqrt() * (1.0 + (w.len() as f64 + 4.0) * f64::EPSILON)
}

/// Is `d` constant over consecutive chunks of `len` entries?
fn constant_per_chunk(d: &[f64], len: usize) -> bool {
    d.chunks(len.max(1)).all(|c| c.iter().all(|&v| v == c[0]))
}

/// A 2-D convolution on `(1, C, H, W)` (cross-correlation, OIHW weights, zero or circular
/// padding); `bias` has `C_out` entries.
#[derive(Debug, Clone, PartialEq)]
pub struct Conv {
    /// Shape and options.
    pub conv: Conv2d,
    /// OIHW weights.
    pub weight: Vec<f32>,
    /// Optional bias.
    pub bias: Option<Vec<f32>>,
}

impl super::Sealed for Conv {}

impl Operation for Conv {
    fn op_type(&self) -> &'static str {
        "Conv"
    }
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        let s = expect_rank4(inputs, "Conv")?;
        let conv = &self.conv;
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
        conv.validate_weights(&self.weight)?;
        if let Some(b) = &self.bias {
            if b.len() != conv.out_channels {
                return Err(Error::length("conv bias", conv.out_channels, b.len()));
            }
            check_finite("conv bias", b)?;
        }
        let [h, w] = conv.output_size()?;
        Ok(vec![s[0], conv.out_channels, h, w])
    }
    fn role(&self) -> Role {
        Role::Layer
    }
    fn lipschitz(&self, _inputs: &[&[usize]]) -> Result<f64> {
        Ok(self.frobenius_to_operator() * frobenius_up(&self.weight))
    }
    fn prepare<'a>(&'a self, cx: &Context<'_>) -> Result<Box<dyn Kernel + 'a>> {
        let op = conv_operator(&self.conv, &self.weight, cx)?;
        Ok(linear_kernel(ConvPart { op, layer: self }))
    }
    fn as_layer(&self) -> Option<&dyn Layer> {
        Some(self)
    }
}

/// The operator a conv kernel applies: `f64` direct loops for the evaluations a certified
/// lower bound rests on, otherwise the fastest for the shape.
fn conv_operator<'a>(
    conv: &'a Conv2d,
    weight: &'a [f32],
    cx: &Context<'_>,
) -> Result<ConvOperator<'a>> {
    Ok(if cx.accurate {
        ConvOperator::Direct(DirectConv2d::new(conv, weight)?)
    } else {
        ConvOperator::auto(conv, weight, 1, cx.memory_limit)?
    })
}

/// `y += b[c]` over each channel's plane of a `(C, H, W)` output (bias validated to `C`
/// entries by the shape rule).
fn add_channel_bias(y: &mut [f64], bias: Option<&[f32]>) {
    if let Some(b) = bias {
        let plane = y.len() / b.len();
        for (c, chunk) in y.chunks_mut(plane).enumerate() {
            chunk.iter_mut().for_each(|v| *v += b[c] as f64);
        }
    }
}

struct ConvPart<'a> {
    op: ConvOperator<'a>,
    layer: &'a Conv,
}

impl LinearPart for ConvPart<'_> {
    fn apply(&self, ins: &[&[f64]], y: &mut [f64]) {
        self.op.as_operator().forward(ins[0], y);
    }
    fn adjoint(&self, g: &[f64], outs: &mut [Vec<f64>]) {
        self.op.as_operator().adjoint(g, &mut outs[0]);
    }
    fn add_offset(&self, y: &mut [f64]) {
        add_channel_bias(y, self.layer.bias.as_deref());
    }
}

impl Layer for Conv {
    fn weights(&self) -> &[f32] {
        &self.weight
    }
    fn bound(&self, weight: &[f32], opts: &Options) -> Result<LayerBound> {
        let r = conv2d_norm(weight, &self.conv, ConvMethod::Auto, opts)?;
        Ok(LayerBound {
            bound: r.bound,
            method: LayerMethod::Conv(r.method),
            circular: self.conv.padding_mode == PaddingMode::Circular,
            route: r.route,
        })
    }
    fn fits_output(&self, d: &[f64]) -> bool {
        constant_per_chunk(d, d.len() / self.conv.out_channels)
    }
    fn fits_input(&self, d: &[f64]) -> bool {
        constant_per_chunk(d, self.conv.input[0] * self.conv.input[1])
    }
    fn scaled_products(&self, d_in: &[f64], d_out: &[f64]) -> Vec<f64> {
        let conv = &self.conv;
        let taps = conv.kernel[0] * conv.kernel[1];
        let (cg, og) = (conv.group_in(), conv.group_out());
        let (plane_out, plane_in) = (
            d_out.len() / conv.out_channels,
            conv.input[0] * conv.input[1],
        );
        let mut p = Vec::with_capacity(self.weight.len());
        for o in 0..conv.out_channels {
            let g = o / og;
            for c in 0..cg {
                let s = d_out[o * plane_out] * d_in[(g * cg + c) * plane_in];
                let row = &self.weight[(o * cg + c) * taps..(o * cg + c + 1) * taps];
                p.extend(row.iter().map(|&t| t as f64 * s));
            }
        }
        p
    }
    /// `√(kH·kW·m)`, `m` the circular aliasing multiplicity (each weight appears in at most
    /// that many entries of a row of the layer's matrix).
    fn frobenius_to_operator(&self) -> f64 {
        let [mh, mw] = self.conv.circular_multiplicity().unwrap_or([1, 1]);
        ((self.conv.kernel[0] * self.conv.kernel[1] * mh * mw) as f64).sqrt()
    }
}

/// A transposed 2-D convolution (ONNX `ConvTranspose`, PyTorch `ConvTranspose2d`):
/// `y = Cᵀx + b` with `C` the convolution from the output's shape to the input's (same
/// weights, IOHW read as C's OIHW). `Cᵀ` has the singular values of `C`, so its bound is
/// `C`'s, through the same certified machinery (exact for circular padding, an interval for
/// zero padding).
#[derive(Debug, Clone, PartialEq)]
pub struct ConvTranspose {
    /// The convolution `C` it is the adjoint of (no bias).
    pub adjoint_of: Conv,
    /// Optional bias (one per output channel, i.e. per input channel of `C`).
    pub bias: Option<Vec<f32>>,
}

impl super::Sealed for ConvTranspose {}

impl Operation for ConvTranspose {
    fn op_type(&self) -> &'static str {
        "ConvTranspose"
    }
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        let s = expect_rank4(inputs, "ConvTranspose")?;
        let c = &self.adjoint_of.conv;
        let out = vec![s[0], c.in_channels, c.input[0], c.input[1]];
        // C must map the output's shape to the input's.
        if self.adjoint_of.output_shape(&[&out])? != s {
            return Err(Error::invalid(
                "ConvTranspose input",
                format!("{s:?}"),
                &format!(
                    "the transposed convolution expects {:?}",
                    self.adjoint_of.output_shape(&[&out])?
                ),
            ));
        }
        if let Some(b) = &self.bias {
            if b.len() != c.in_channels {
                return Err(Error::length("ConvTranspose bias", c.in_channels, b.len()));
            }
            check_finite("ConvTranspose bias", b)?;
        }
        Ok(out)
    }
    fn role(&self) -> Role {
        Role::Layer
    }
    fn lipschitz(&self, inputs: &[&[usize]]) -> Result<f64> {
        self.adjoint_of.lipschitz(inputs)
    }
    fn prepare<'a>(&'a self, cx: &Context<'_>) -> Result<Box<dyn Kernel + 'a>> {
        let op = conv_operator(&self.adjoint_of.conv, &self.adjoint_of.weight, cx)?;
        Ok(linear_kernel(TransposedPart { op, layer: self }))
    }
    fn as_layer(&self) -> Option<&dyn Layer> {
        Some(self)
    }
}

struct TransposedPart<'a> {
    op: ConvOperator<'a>,
    layer: &'a ConvTranspose,
}

impl LinearPart for TransposedPart<'_> {
    fn apply(&self, ins: &[&[f64]], y: &mut [f64]) {
        self.op.as_operator().adjoint(ins[0], y);
    }
    fn adjoint(&self, g: &[f64], outs: &mut [Vec<f64>]) {
        self.op.as_operator().forward(g, &mut outs[0]);
    }
    fn add_offset(&self, y: &mut [f64]) {
        add_channel_bias(y, self.layer.bias.as_deref());
    }
}

/// `Cᵀ`'s input side is `C`'s output side and the other way round.
impl Layer for ConvTranspose {
    fn weights(&self) -> &[f32] {
        &self.adjoint_of.weight
    }
    fn bound(&self, weight: &[f32], opts: &Options) -> Result<LayerBound> {
        self.adjoint_of.bound(weight, opts)
    }
    fn fits_output(&self, d: &[f64]) -> bool {
        self.adjoint_of.fits_input(d)
    }
    fn fits_input(&self, d: &[f64]) -> bool {
        self.adjoint_of.fits_output(d)
    }
    fn scaled_products(&self, d_in: &[f64], d_out: &[f64]) -> Vec<f64> {
        self.adjoint_of.scaled_products(d_out, d_in)
    }
    fn frobenius_to_operator(&self) -> f64 {
        self.adjoint_of.frobenius_to_operator()
    }
}

/// `y = W x + b` on the last axis: `W` is `rows × cols` row-major (rows = outputs).
#[derive(Debug, Clone, PartialEq)]
pub struct Dense {
    /// Weights.
    pub weight: Vec<f32>,
    /// Outputs.
    pub rows: usize,
    /// Inputs (the last axis of the input tensor).
    pub cols: usize,
    /// Optional bias (`rows` entries).
    pub bias: Option<Vec<f32>>,
}

impl super::Sealed for Dense {}

impl Operation for Dense {
    fn op_type(&self) -> &'static str {
        "Gemm"
    }
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        let s = single(inputs)?;
        let (rows, cols) = (self.rows, self.cols);
        if s.last() != Some(&cols) {
            return Err(Error::invalid(
                "dense input",
                format!("{s:?}"),
                &format!("the weight matrix expects {cols} inputs on the last axis"),
            ));
        }
        if self.weight.len() != rows * cols {
            return Err(Error::length(
                "dense weight",
                rows * cols,
                self.weight.len(),
            ));
        }
        check_finite("dense weight", &self.weight)?;
        if let Some(b) = &self.bias {
            if b.len() != rows {
                return Err(Error::length("dense bias", rows, b.len()));
            }
            check_finite("dense bias", b)?;
        }
        let mut out = s.to_vec();
        *out.last_mut().expect("single() checked the input") = rows;
        Ok(out)
    }
    fn role(&self) -> Role {
        Role::Layer
    }
    fn lipschitz(&self, _inputs: &[&[usize]]) -> Result<f64> {
        Ok(frobenius_up(&self.weight))
    }
    fn prepare<'a>(&'a self, cx: &Context<'_>) -> Result<Box<dyn Kernel + 'a>> {
        let n: usize = cx.inputs[0].iter().product();
        Ok(linear_kernel(DensePart {
            matrix: DenseMatrix::from_slice(&self.weight, self.rows, self.cols)?,
            repeat: n / self.cols,
            layer: self,
        }))
    }
    fn as_layer(&self) -> Option<&dyn Layer> {
        Some(self)
    }
}

/// The matrix applied to each of `repeat` slices along the last axis.
struct DensePart<'a> {
    matrix: DenseMatrix<'a>,
    repeat: usize,
    layer: &'a Dense,
}

impl LinearPart for DensePart<'_> {
    fn apply(&self, ins: &[&[f64]], y: &mut [f64]) {
        let (rows, cols) = (self.layer.rows, self.layer.cols);
        for r in 0..self.repeat {
            self.matrix.forward(
                &ins[0][r * cols..(r + 1) * cols],
                &mut y[r * rows..(r + 1) * rows],
            );
        }
    }
    fn adjoint(&self, g: &[f64], outs: &mut [Vec<f64>]) {
        let (rows, cols) = (self.layer.rows, self.layer.cols);
        for r in 0..self.repeat {
            self.matrix.adjoint(
                &g[r * rows..(r + 1) * rows],
                &mut outs[0][r * cols..(r + 1) * cols],
            );
        }
    }
    fn add_offset(&self, y: &mut [f64]) {
        if let Some(b) = &self.layer.bias {
            for chunk in y.chunks_mut(b.len()) {
                for (v, &bi) in chunk.iter_mut().zip(b) {
                    *v += bi as f64;
                }
            }
        }
    }
}

impl Layer for Dense {
    fn weights(&self) -> &[f32] {
        &self.weight
    }
    fn bound(&self, weight: &[f32], opts: &Options) -> Result<LayerBound> {
        let b = dense_norm(weight, self.rows, self.cols, opts)?;
        Ok(LayerBound {
            method: LayerMethod::Dense(b.method),
            route: crate::dense::describe_dense_route(&b, self.rows, self.cols),
            bound: b,
            circular: false,
        })
    }
    fn fits_output(&self, d: &[f64]) -> bool {
        d.iter().enumerate().all(|(i, &v)| v == d[i % self.rows])
    }
    fn fits_input(&self, d: &[f64]) -> bool {
        d.iter().enumerate().all(|(i, &v)| v == d[i % self.cols])
    }
    fn scaled_products(&self, d_in: &[f64], d_out: &[f64]) -> Vec<f64> {
        let cols = self.cols;
        (0..self.rows * cols)
            .map(|i| self.weight[i] as f64 * (d_out[i / cols] * d_in[i % cols]))
            .collect()
    }
    fn frobenius_to_operator(&self) -> f64 {
        1.0
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
    let s = expect_rank4(&[in_shape], "Conv")?;
    let conv = Conv2d::new(out_channels, s[1], kernel, [s[2], s[3]])
        .stride(stride)
        .dilation(dilation)
        .groups(groups)
        .pads(pads)
        .mode(mode);
    conv.validate()?;
    Ok(conv)
}
