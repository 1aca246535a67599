//! 2-D convolution layers as linear operators, with every option PyTorch and ONNX have.
//!
//! Conventions (PyTorch/ONNX, docs/methods.md): activations `x[c][h][w]`; weights OIHW
//! `(C_out, C_in/groups, kH, kW)`; the layer is cross-correlation
//! `y[o,i,j] = Σ_c Σ_{p,q} w[o,c,p,q] · x̃[g(o)·C_in/groups + c, i·s_h + p·d_h − pad_top,
//! j·s_w + q·d_w − pad_left]`, where `x̃` extends `x` by zeros or periodically (circular).
//! `H_out = ⌊(H + pad_top + pad_bottom − d_h(kH−1) − 1)/s_h⌋ + 1`, likewise `W_out`.
//!
//! Two operators apply the layer and its adjoint: [`DirectConv2d`] (im2col + GEMM, exact in
//! `f64`, the reference) and [`FftConv2d`] (real 2-D FFTs with a cached kernel spectrum,
//! `f32`, fast for large kernels and blocks of vectors). [`ConvOperator::auto`] picks one.

mod circular;
mod classic;
mod direct;
mod fft;
mod norm;
mod plan;
mod polyphase;
mod resolution;
mod spectrum;
mod wave;
mod window;

pub use classic::{classic_bounds, ClassicBounds};
pub use direct::DirectConv2d;
pub use fft::FftConv2d;
pub use norm::{conv2d_norm, ConvBound, ConvMethod, LimitedBy};
pub use polyphase::polyphase;
pub use resolution::{resolution_independent_bound, ResolutionBound};

use crate::error::{check_finite, Error, Result};
use serde::Serialize;

/// How the input is extended beyond its borders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PaddingMode {
    /// Zeros outside the image (PyTorch's default, ONNX `Conv` pads).
    #[default]
    Zeros,
    /// Periodic extension (PyTorch `padding_mode="circular"`, ONNX `Pad(mode="wrap")`).
    Circular,
}

/// The shape and options of a 2-D convolution; weights are passed separately.
///
/// ```
/// use lipschitz::conv::{Conv2d, PaddingMode};
/// let conv = Conv2d::new(64, 3, [7, 7], [224, 224]).stride([2, 2]).padding(3);
/// conv.validate()?;
/// assert_eq!(conv.output_size()?, [112, 112]);
/// # Ok::<(), lipschitz::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Conv2d {
    /// Output channels `C_out`.
    pub out_channels: usize,
    /// Input channels `C_in`.
    pub in_channels: usize,
    /// Kernel size `[kH, kW]`.
    pub kernel: [usize; 2],
    /// Input image size `[H, W]`.
    pub input: [usize; 2],
    /// Stride `[s_h, s_w]`.
    pub stride: [usize; 2],
    /// Dilation `[d_h, d_w]`.
    pub dilation: [usize; 2],
    /// Groups (`C_in` and `C_out` both divisible by it; depthwise: `groups = C_in`).
    pub groups: usize,
    /// Padding `[top, left, bottom, right]` (ONNX `pads` order).
    pub pads: [usize; 4],
    /// Zero or circular padding.
    pub padding_mode: PaddingMode,
}

impl Conv2d {
    /// A stride-1, undilated, ungrouped, unpadded ("valid") convolution.
    pub fn new(
        out_channels: usize,
        in_channels: usize,
        kernel: [usize; 2],
        input: [usize; 2],
    ) -> Self {
        Conv2d {
            out_channels,
            in_channels,
            kernel,
            input,
            stride: [1, 1],
            dilation: [1, 1],
            groups: 1,
            pads: [0; 4],
            padding_mode: PaddingMode::Zeros,
        }
    }

    /// Sets the stride.
    pub fn stride(mut self, stride: [usize; 2]) -> Self {
        self.stride = stride;
        self
    }

    /// Sets the dilation.
    pub fn dilation(mut self, dilation: [usize; 2]) -> Self {
        self.dilation = dilation;
        self
    }

    /// Sets the number of groups.
    pub fn groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }

    /// Sets the same padding on all four sides.
    pub fn padding(mut self, pad: usize) -> Self {
        self.pads = [pad; 4];
        self
    }

    /// Sets asymmetric padding `[top, left, bottom, right]`.
    pub fn pads(mut self, pads: [usize; 4]) -> Self {
        self.pads = pads;
        self
    }

    /// Sets the padding mode.
    pub fn mode(mut self, mode: PaddingMode) -> Self {
        self.padding_mode = mode;
        self
    }

    /// Input channels per group.
    pub fn group_in(&self) -> usize {
        self.in_channels / self.groups.max(1)
    }

    /// Output channels per group.
    pub fn group_out(&self) -> usize {
        self.out_channels / self.groups.max(1)
    }

    /// Padded input size `[H + top + bottom, W + left + right]`.
    pub fn padded_size(&self) -> [usize; 2] {
        [
            self.input[0] + self.pads[0] + self.pads[2],
            self.input[1] + self.pads[1] + self.pads[3],
        ]
    }

    /// Kernel extent `d·(k − 1) + 1` per axis.
    pub fn kernel_extent(&self) -> [usize; 2] {
        [
            self.dilation[0] * (self.kernel[0] - 1) + 1,
            self.dilation[1] * (self.kernel[1] - 1) + 1,
        ]
    }

    /// Output size `[H_out, W_out]` (the ONNX/PyTorch formula), or an error naming why it is empty.
    pub fn output_size(&self) -> Result<[usize; 2]> {
        self.validate_shape()?;
        let padded = self.padded_size();
        let extent = self.kernel_extent();
        let mut out = [0; 2];
        for axis in 0..2 {
            if padded[axis] < extent[axis] {
                return Err(Error::invalid(
                    if axis == 0 {
                        "conv kernel height extent"
                    } else {
                        "conv kernel width extent"
                    },
                    extent[axis],
                    &format!(
                        "exceeds the padded input {} ({} + pads): the output is empty",
                        padded[axis], self.input[axis]
                    ),
                ));
            }
            out[axis] = (padded[axis] - extent[axis]) / self.stride[axis] + 1;
        }
        // Pads of 2³² on both axes give 2⁶⁴ outputs: refuse before anything multiplies them.
        let total = self.out_channels as u128 * out[0] as u128 * out[1] as u128;
        if total > 1 << 40 {
            return Err(Error::invalid(
                "conv output size C_out·H_out·W_out",
                total,
                "is absurdly large (over 2^40)",
            ));
        }
        Ok(out)
    }

    /// Length of an input vector `C_in·H·W`.
    pub fn input_len(&self) -> usize {
        self.in_channels * self.input[0] * self.input[1]
    }

    /// Length of an output vector `C_out·H_out·W_out` (0 for an invalid layer).
    pub fn output_len(&self) -> usize {
        self.output_size()
            .map(|[h, w]| self.out_channels * h * w)
            .unwrap_or(0)
    }

    /// Number of weights `C_out·(C_in/groups)·kH·kW`.
    pub fn weight_len(&self) -> usize {
        self.out_channels * self.group_in() * self.kernel[0] * self.kernel[1]
    }

    fn validate_shape(&self) -> Result<()> {
        let fields = [
            ("conv out_channels", self.out_channels),
            ("conv in_channels", self.in_channels),
            ("conv kernel height", self.kernel[0]),
            ("conv kernel width", self.kernel[1]),
            ("conv input height", self.input[0]),
            ("conv input width", self.input[1]),
            ("conv stride height", self.stride[0]),
            ("conv stride width", self.stride[1]),
            ("conv dilation height", self.dilation[0]),
            ("conv dilation width", self.dilation[1]),
            ("conv groups", self.groups),
        ];
        for (name, value) in fields {
            crate::error::check_positive(name, value)?;
        }
        // Everything we index with must fit comfortably in usize (and in memory estimates).
        const LIMIT: u128 = 1 << 40;
        let big = |what: &str, v: u128| -> Result<()> {
            if v > LIMIT {
                Err(Error::invalid(what, v, "is absurdly large (over 2^40)"))
            } else {
                Ok(())
            }
        };
        let u = |v: usize| v as u128;
        big(
            "conv input size C_in·H·W",
            u(self.in_channels) * u(self.input[0]) * u(self.input[1]),
        )?;
        big(
            "conv padded height",
            u(self.input[0]) + u(self.pads[0]) + u(self.pads[2]),
        )?;
        big(
            "conv padded width",
            u(self.input[1]) + u(self.pads[1]) + u(self.pads[3]),
        )?;
        big(
            "conv kernel extent",
            u(self.dilation[0]) * u(self.kernel[0]) + u(self.dilation[1]) * u(self.kernel[1]),
        )?;
        big(
            "conv weight count",
            u(self.out_channels) * u(self.in_channels) * u(self.kernel[0]) * u(self.kernel[1]),
        )?;
        if !self.in_channels.is_multiple_of(self.groups) {
            return Err(Error::invalid(
                "conv groups",
                self.groups,
                &format!("does not divide in_channels = {}", self.in_channels),
            ));
        }
        if !self.out_channels.is_multiple_of(self.groups) {
            return Err(Error::invalid(
                "conv groups",
                self.groups,
                &format!("does not divide out_channels = {}", self.out_channels),
            ));
        }
        Ok(())
    }

    /// Checks every field and that the output is not empty.
    pub fn validate(&self) -> Result<()> {
        self.output_size().map(|_| ())
    }

    /// [`Conv2d::validate`] plus the weight length and finiteness.
    pub fn validate_weights(&self, weights: &[f32]) -> Result<()> {
        self.validate()?;
        if weights.len() != self.weight_len() {
            return Err(Error::length(
                &format!(
                    "conv weight of shape ({}, {}, {}, {})",
                    self.out_channels,
                    self.group_in(),
                    self.kernel[0],
                    self.kernel[1]
                ),
                self.weight_len(),
                weights.len(),
            ));
        }
        check_finite("conv weight", weights)
    }

    /// With circular padding, how many outputs per axis read the same input residue through a
    /// fixed tap (`max_r #{i : i·s − pad ≡ r mod n}`); 1 for zero padding. The layer is then a
    /// row selection *with repetition* of the circular conv on the image grid, so its norm is
    /// at most `√(m_h·m_w)` times the circular norm.
    pub fn circular_multiplicity(&self) -> Result<[usize; 2]> {
        let out = self.output_size()?;
        if self.padding_mode == PaddingMode::Zeros {
            return Ok([1, 1]);
        }
        let mut m = [1; 2];
        for axis in 0..2 {
            let n = self.input[axis];
            let mut counts = vec![0usize; n];
            for i in 0..out[axis] {
                let r =
                    ((i * self.stride[axis]) as i64 - self.pads[axis] as i64).rem_euclid(n as i64);
                counts[r as usize] += 1;
            }
            m[axis] = counts.into_iter().max().unwrap_or(1);
        }
        Ok(m)
    }

    /// Whether the layer *is* the circular convolution on its image grid (circular padding,
    /// stride 1, output size = input size), so the per-frequency norm is exact.
    pub fn is_exactly_circular(&self) -> bool {
        self.padding_mode == PaddingMode::Circular
            && self.stride == [1, 1]
            && self.output_size().is_ok_and(|o| o == self.input)
    }

    /// For each output row `i` and kernel row `p`, the input row it reads (`None`: zero
    /// padding); likewise columns with `axis = 1`.
    pub(crate) fn source_index(&self, axis: usize, out_index: usize, tap: usize) -> Option<usize> {
        let pos = (out_index * self.stride[axis] + tap * self.dilation[axis]) as i64
            - self.pads[axis] as i64;
        let n = self.input[axis] as i64;
        match self.padding_mode {
            PaddingMode::Zeros => (0..n).contains(&pos).then_some(pos as usize),
            PaddingMode::Circular => Some(pos.rem_euclid(n) as usize),
        }
    }
}

/// A conv layer's operator, whichever implementation is faster for its shape.
pub enum ConvOperator<'a> {
    /// im2col + GEMM in `f64`.
    Direct(DirectConv2d<'a>),
    /// Real FFTs with a cached kernel spectrum, `f32`.
    Fft(FftConv2d),
}

impl<'a> ConvOperator<'a> {
    /// Picks the faster operator for this shape from the benchmarked crossover (docs/benchmarks.md,
    /// 64 channels, 2 cores): for single vectors the FFT operator wins from 5×5 kernels on
    /// (2.2× at 5×5, 3.4× at 7×7, n = 56); applied to blocks of vectors it wins from 3×3 (1.9×
    /// at n = 56 and 112). 1×1 kernels are always direct. Falls back to direct when the
    /// kernel spectrum would exceed `memory_limit` bytes.
    pub fn auto(
        conv: &Conv2d,
        weights: &'a [f32],
        block_size: usize,
        memory_limit: usize,
    ) -> Result<Self> {
        Self::auto_with_reason(conv, weights, block_size, memory_limit).map(|(op, _)| op)
    }

    /// [`ConvOperator::auto`], also saying in words which operator was chosen and why —
    /// including when the FFT operator would have been faster but its kernel spectrum does
    /// not fit under `memory_limit`.
    pub fn auto_with_reason(
        conv: &Conv2d,
        weights: &'a [f32],
        block_size: usize,
        memory_limit: usize,
    ) -> Result<(Self, String)> {
        conv.validate_weights(weights)?;
        if !Self::prefers_fft(conv, block_size) {
            let why = format!(
                "direct: a {}×{} kernel on blocks of {block_size} is faster without FFTs",
                conv.kernel[0], conv.kernel[1]
            );
            return Ok((ConvOperator::Direct(DirectConv2d::new(conv, weights)?), why));
        }
        let needed = FftConv2d::estimate_memory(conv, block_size);
        if needed > memory_limit as u128 {
            let why = format!(
                "direct (fallback): the FFT operator would need {needed} bytes for its kernel \
                 spectrum and buffers, over the memory limit of {memory_limit} bytes"
            );
            return Ok((ConvOperator::Direct(DirectConv2d::new(conv, weights)?), why));
        }
        let fft = FftConv2d::new(conv, weights, memory_limit)?;
        let why = format!(
            "fft: {} MB kernel spectrum on a {:?} grid",
            fft.spectrum_bytes() >> 20,
            fft.grid()
        );
        Ok((ConvOperator::Fft(fft), why))
    }

    /// The crossover rule of [`ConvOperator::auto`].
    pub fn prefers_fft(conv: &Conv2d, block_size: usize) -> bool {
        let taps = conv.kernel[0] * conv.kernel[1];
        taps >= 25 || (taps >= 9 && block_size >= 4)
    }

    /// The operator as a trait object.
    pub fn as_operator(&self) -> &dyn crate::LinearOperator {
        match self {
            ConvOperator::Direct(d) => d,
            ConvOperator::Fft(f) => f,
        }
    }
}
