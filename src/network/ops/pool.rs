//! Pooling: max and average pooling over 2-D windows, global max pooling, and the mean
//! over axes (ReduceMean, GlobalAveragePool).

use super::{
    expect_rank4, linear_kernel, select_adjoint_into, select_into, single, At, Context, Kernel,
    LinearPart, Operation, Role, Saved,
};
use crate::error::{Error, Result};

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

/// Checks a pooling window on a `(N, C, H, W)` input and gives the output shape.
fn pooled_shape(pool: &Pool2d, inputs: &[&[usize]]) -> Result<Vec<usize>> {
    let s = expect_rank4(inputs, "pooling")?;
    let work = pool.work(s)?;
    if work > MAX_POOL_WORK {
        return Err(Error::invalid(
            "pooling window",
            format!("{:?} on {s:?}", pool.kernel),
            &format!("costs {work} operations per evaluation, over the limit of {MAX_POOL_WORK}"),
        ));
    }
    Ok(vec![
        s[0],
        s[1],
        pool.output_len(0, s[2])?,
        pool.output_len(1, s[3])?,
    ])
}

/// Max pooling on `(1, C, H, W)`. Constant `√(c_H·c_W)`, where `c` is the largest number of
/// windows that contain one input position along an axis (1 without overlap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxPool(pub Pool2d);

impl super::Sealed for MaxPool {}

impl Operation for MaxPool {
    fn op_type(&self) -> &'static str {
        "MaxPool"
    }
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        pooled_shape(&self.0, inputs)
    }
    fn role(&self) -> Role {
        Role::Nonlinear
    }
    fn lipschitz(&self, inputs: &[&[usize]]) -> Result<f64> {
        let s = expect_rank4(inputs, "MaxPool")?;
        let c = self.0.max_cover(0, s[2])? * self.0.max_cover(1, s[3])?;
        Ok((c as f64).sqrt())
    }
    fn prepare<'a>(&'a self, cx: &Context<'_>) -> Result<Box<dyn Kernel + 'a>> {
        Ok(Box::new(MaxPoolKernel {
            pool: self.0,
            shape: cx.inputs[0].to_vec(),
        }))
    }
}

struct MaxPoolKernel {
    pool: Pool2d,
    shape: Vec<usize>,
}

impl Kernel for MaxPoolKernel {
    fn forward(&self, ins: &[&[f64]], y: &mut [f64]) -> Saved {
        max_pool(&self.pool, &self.shape, ins[0], y)
    }
    fn jvp(&self, at: At<'_>, t: &[&[f64]], dy: &mut [f64]) {
        select_into(at.saved, t[0], dy);
    }
    fn vjp(&self, at: At<'_>, g: &[f64], outs: &mut [Vec<f64>]) {
        select_adjoint_into(at.saved, g, &mut outs[0]);
    }
}

/// Average pooling on `(1, C, H, W)`, bounded by Schur's test (exact without overlap or
/// padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AvgPool {
    /// Window.
    pub pool: Pool2d,
    /// Divide by the full window (pads included) instead of the taps inside the input.
    pub count_include_pad: bool,
}

impl super::Sealed for AvgPool {}

impl Operation for AvgPool {
    fn op_type(&self) -> &'static str {
        "AveragePool"
    }
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        pooled_shape(&self.pool, inputs)
    }
    fn role(&self) -> Role {
        Role::Linear { heavy: true }
    }
    fn lipschitz(&self, inputs: &[&[usize]]) -> Result<f64> {
        let s = expect_rank4(inputs, "AveragePool")?;
        avg_pool_bound(&self.pool, self.count_include_pad, s)
    }
    fn prepare<'a>(&'a self, cx: &Context<'_>) -> Result<Box<dyn Kernel + 'a>> {
        Ok(linear_kernel(AvgPoolPart {
            op: *self,
            shape: cx.inputs[0].to_vec(),
        }))
    }
}

struct AvgPoolPart {
    op: AvgPool,
    shape: Vec<usize>,
}

impl LinearPart for AvgPoolPart {
    fn apply(&self, ins: &[&[f64]], y: &mut [f64]) {
        let AvgPool {
            pool,
            count_include_pad,
        } = self.op;
        avg_pool(&pool, count_include_pad, &self.shape, ins[0], y, false);
    }
    fn adjoint(&self, g: &[f64], outs: &mut [Vec<f64>]) {
        let AvgPool {
            pool,
            count_include_pad,
        } = self.op;
        avg_pool(&pool, count_include_pad, &self.shape, g, &mut outs[0], true);
    }
}

/// The maximum over H and W of each channel of `(1, C, H, W)`: constant 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GlobalMaxPool;

impl super::Sealed for GlobalMaxPool {}

impl Operation for GlobalMaxPool {
    fn op_type(&self) -> &'static str {
        "GlobalMaxPool"
    }
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        let s = expect_rank4(inputs, "GlobalMaxPool")?;
        Ok(vec![s[0], s[1], 1, 1])
    }
    fn role(&self) -> Role {
        Role::Nonlinear
    }
    fn lipschitz(&self, _inputs: &[&[usize]]) -> Result<f64> {
        Ok(1.0)
    }
    fn prepare<'a>(&'a self, cx: &Context<'_>) -> Result<Box<dyn Kernel + 'a>> {
        let s = cx.inputs[0];
        Ok(Box::new(GlobalMaxKernel {
            channels: s[1],
            plane: s[2] * s[3],
        }))
    }
}

struct GlobalMaxKernel {
    channels: usize,
    plane: usize,
}

impl Kernel for GlobalMaxKernel {
    fn forward(&self, ins: &[&[f64]], y: &mut [f64]) -> Saved {
        let plane = self.plane;
        (0..self.channels)
            .map(|c| {
                let p = &ins[0][c * plane..(c + 1) * plane];
                let (best, _) =
                    p.iter()
                        .enumerate()
                        .fold((0, f64::NEG_INFINITY), |(bi, bv), (i, &v)| {
                            if v > bv {
                                (i, v)
                            } else {
                                (bi, bv)
                            }
                        });
                y[c] = p[best];
                (c * plane + best) as u32
            })
            .collect()
    }
    fn jvp(&self, at: At<'_>, t: &[&[f64]], dy: &mut [f64]) {
        select_into(at.saved, t[0], dy);
    }
    fn vjp(&self, at: At<'_>, g: &[f64], outs: &mut [Vec<f64>]) {
        select_adjoint_into(at.saved, g, &mut outs[0]);
    }
}

/// The mean over `axes` (GlobalAveragePool is the mean over H and W): constant
/// `1/√(elements averaged)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReduceMean {
    /// Axes reduced (of the input).
    pub axes: Vec<usize>,
    /// Keep reduced axes as length 1.
    pub keepdims: bool,
}

impl super::Sealed for ReduceMean {}

impl Operation for ReduceMean {
    fn op_type(&self) -> &'static str {
        "ReduceMean"
    }
    fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>> {
        let s = single(inputs)?;
        let axes = &self.axes;
        if axes.is_empty() || axes.iter().any(|&a| a >= s.len()) {
            return Err(Error::invalid(
                "ReduceMean axes",
                format!("{axes:?}"),
                &format!("must be non-empty axes of a rank-{} tensor", s.len()),
            ));
        }
        Ok(s.iter()
            .enumerate()
            .filter_map(|(k, &d)| match (axes.contains(&k), self.keepdims) {
                (false, _) => Some(d),
                (true, true) => Some(1),
                (true, false) => None,
            })
            .collect())
    }
    fn role(&self) -> Role {
        Role::Linear { heavy: true }
    }
    fn lipschitz(&self, inputs: &[&[usize]]) -> Result<f64> {
        let s = single(inputs)?;
        let count: usize = self.axes.iter().map(|&a| s[a]).product();
        Ok((1.0 / count as f64).sqrt() * (1.0 + 4.0 * f64::EPSILON))
    }
    fn prepare<'a>(&'a self, cx: &Context<'_>) -> Result<Box<dyn Kernel + 'a>> {
        let (map, count) = reduce_map(cx.inputs[0], &self.axes);
        Ok(linear_kernel(ReducePart { map, count }))
    }
}

/// ReduceMean as a map: the output index of every input element, and the divisor.
struct ReducePart {
    map: Vec<u32>,
    count: usize,
}

impl LinearPart for ReducePart {
    fn apply(&self, ins: &[&[f64]], y: &mut [f64]) {
        y.fill(0.0);
        let inv = 1.0 / self.count as f64;
        for (&m, &xi) in self.map.iter().zip(ins[0]) {
            y[m as usize] += xi * inv;
        }
    }
    fn adjoint(&self, g: &[f64], outs: &mut [Vec<f64>]) {
        let inv = 1.0 / self.count as f64;
        for (xi, &m) in outs[0].iter_mut().zip(&self.map) {
            *xi = g[m as usize] * inv;
        }
    }
}

/// For ReduceMean: the output index of every input element, and how many inputs each
/// output averages.
fn reduce_map(shape: &[usize], axes: &[usize]) -> (Vec<u32>, usize) {
    let n: usize = shape.iter().product();
    let count: usize = axes.iter().map(|&a| shape[a]).product();
    let mut map = Vec::with_capacity(n);
    let mut idx = vec![0usize; shape.len()];
    for _ in 0..n {
        let mut out = 0;
        for (k, &d) in shape.iter().enumerate() {
            if !axes.contains(&k) {
                out = out * d + idx[k];
            }
        }
        map.push(out as u32);
        for k in (0..shape.len()).rev() {
            idx[k] += 1;
            if idx[k] < shape[k] {
                break;
            }
            idx[k] = 0;
        }
    }
    (map, count)
}

/// Max pooling; returns the winning input index of each output.
fn max_pool(pool: &Pool2d, shape: &[usize], x: &[f64], y: &mut [f64]) -> Vec<u32> {
    let (c, h, w) = (shape[1], shape[2], shape[3]);
    let (oh, ow) = (
        pool.output_len(0, h).unwrap_or(0),
        pool.output_len(1, w).unwrap_or(0),
    );
    // The column windows are tabulated (one entry per output column: less memory than the
    // output itself), the row windows computed as they come.
    let cols: Vec<Taps> = (0..ow).map(|j| pool.window(1, w, j)).collect();
    let mut winners = vec![u32::MAX; c * oh * ow];
    for ch in 0..c {
        let plane = &x[ch * h * w..(ch + 1) * h * w];
        for i in 0..oh {
            let r = pool.window(0, h, i);
            for (j, cl) in cols.iter().enumerate() {
                let (mut best, mut arg) = (f64::NEG_INFINITY, u32::MAX);
                for p in r.positions() {
                    for q in cl.positions() {
                        let v = plane[p * w + q];
                        if v > best || arg == u32::MAX {
                            best = v;
                            arg = (ch * h * w + p * w + q) as u32;
                        }
                    }
                }
                let o = ch * oh * ow + i * ow + j;
                // A window entirely in the padding reads -inf in ONNX; we output 0 and
                // treat it as constant (no input reaches it).
                y[o] = if arg == u32::MAX { 0.0 } else { best };
                winners[o] = arg;
            }
        }
    }
    winners
}

/// Average pooling (`adjoint = false`: `x` input, `y` output) or its adjoint
/// (`adjoint = true`: `x` output cotangent, `y` input cotangent).
fn avg_pool(
    pool: &Pool2d,
    include_pad: bool,
    shape: &[usize],
    x: &[f64],
    y: &mut [f64],
    adjoint: bool,
) {
    let (c, h, w) = (shape[1], shape[2], shape[3]);
    let (oh, ow) = (
        pool.output_len(0, h).unwrap_or(0),
        pool.output_len(1, w).unwrap_or(0),
    );
    let cols: Vec<Taps> = (0..ow).map(|j| pool.window(1, w, j)).collect();
    y.fill(0.0);
    for ch in 0..c {
        for i in 0..oh {
            let r = pool.window(0, h, i);
            for (j, cl) in cols.iter().enumerate() {
                let divisor = if include_pad {
                    r.padded * cl.padded
                } else {
                    r.count * cl.count
                };
                if divisor == 0 || r.count == 0 || cl.count == 0 {
                    continue;
                }
                let inv = 1.0 / divisor as f64;
                let o = ch * oh * ow + i * ow + j;
                for p in r.positions() {
                    for q in cl.positions() {
                        let at = ch * h * w + p * w + q;
                        if adjoint {
                            y[at] += x[o] * inv;
                        } else {
                            y[o] += x[at] * inv;
                        }
                    }
                }
            }
        }
    }
}

/// Schur's test `‖A‖₂ ≤ √(‖A‖₁‖A‖_∞)` for average pooling; both norms are separable over
/// the two axes. Exact for non-overlapping windows without padding.
fn avg_pool_bound(pool: &Pool2d, include_pad: bool, shape: &[usize]) -> Result<f64> {
    let mut row = 1.0;
    let mut col = 1.0;
    // Each column sum adds at most min(kernel, out) terms: its rounding is below that many ε.
    let mut terms = 8.0;
    for axis in 0..2 {
        let n = shape[2 + axis];
        let out = pool.output_len(axis, n)?;
        terms += pool.kernel[axis].min(out) as f64;
        let mut col_sum = vec![0.0f64; n];
        let mut row_max = 0.0f64;
        for i in 0..out {
            let taps = pool.window(axis, n, i);
            let divisor = if include_pad { taps.padded } else { taps.count };
            if divisor == 0 || taps.count == 0 {
                continue;
            }
            row_max = row_max.max(taps.count as f64 / divisor as f64);
            for p in taps.positions() {
                col_sum[p] += 1.0 / divisor as f64;
            }
        }
        row *= row_max;
        col *= col_sum.into_iter().fold(0.0, f64::max);
    }
    Ok((row * col).sqrt() * (1.0 + 4.0 * terms * f64::EPSILON))
}
