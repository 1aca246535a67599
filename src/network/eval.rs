//! Evaluating a network: the forward pass, and at a given input its Jacobian applied to a
//! vector (JVP, forward mode) and its transpose (VJP, reverse mode), without ever forming the
//! Jacobian. The empirical lower bound runs on these.
//!
//! Layers are prepared once (conv operators with their FFT plans and kernel spectra, dense
//! matrices); a [`Trace`] keeps every value of one forward pass plus what the backward pass
//! needs (max-pooling winners).

use super::graph::{Network, Op, Pool2d, Taps};
use crate::conv::{ConvOperator, DirectConv2d};
use crate::dense::DenseMatrix;
use crate::error::{Error, Result};
use crate::operator::LinearOperator;

/// A node's prepared linear operator, where it has one.
enum Prepared<'n> {
    Conv(Box<ConvOperator<'n>>),
    Dense {
        matrix: DenseMatrix<'n>,
        repeat: usize,
    },
    /// ReduceMean: output index of every input element, and the divisor.
    Reduce {
        map: Vec<u32>,
        count: usize,
    },
    None,
}

/// A network ready to be evaluated many times.
pub struct Evaluator<'n> {
    net: &'n Network,
    prepared: Vec<Prepared<'n>>,
    live: Vec<bool>,
}

/// The values of one forward pass.
pub struct Trace {
    /// Every value (dead nodes' values are empty).
    pub values: Vec<Vec<f64>>,
    /// For each max-pooling node: the input index that won each output.
    winners: Vec<Vec<u32>>,
}

impl<'n> Evaluator<'n> {
    /// Prepares every layer. `accurate` uses the `f64` direct convolution everywhere (for the
    /// evaluations a certified lower bound rests on); otherwise the faster operator for each
    /// shape (FFT in `f32` for large kernels).
    pub fn new(net: &'n Network, accurate: bool, memory_limit: usize) -> Result<Self> {
        let needed = net.activation_bytes() * 3;
        if needed > memory_limit as u128 {
            return Err(Error::TooLarge {
                what: format!("activations of {} (three copies in f64)", net.source),
                needed,
                limit: memory_limit as u128,
            });
        }
        Self::prepare(net, net.live_nodes(), accurate, memory_limit)
    }

    /// Prepares only the given nodes (for applying a run of linear nodes).
    pub(crate) fn for_nodes(
        net: &'n Network,
        nodes: &[usize],
        accurate: bool,
        memory_limit: usize,
    ) -> Result<Self> {
        let mut live = vec![false; net.nodes.len()];
        for &k in nodes {
            live[k] = true;
        }
        Self::prepare(net, live, accurate, memory_limit)
    }

    fn prepare(
        net: &'n Network,
        live: Vec<bool>,
        accurate: bool,
        memory_limit: usize,
    ) -> Result<Self> {
        let mut prepared = Vec::with_capacity(net.nodes.len());
        for (k, node) in net.nodes.iter().enumerate() {
            let p = match &node.op {
                _ if !live[k] => Prepared::None,
                Op::Conv { conv, weight, .. } => {
                    if accurate {
                        Prepared::Conv(Box::new(ConvOperator::Direct(DirectConv2d::new(
                            conv, weight,
                        )?)))
                    } else {
                        Prepared::Conv(Box::new(ConvOperator::auto(conv, weight, 1, memory_limit)?))
                    }
                }
                Op::Dense {
                    weight, rows, cols, ..
                } => Prepared::Dense {
                    matrix: DenseMatrix::from_slice(weight, *rows, *cols)?,
                    repeat: net.len_of(node.inputs[0]) / cols,
                },
                Op::ReduceMean { axes, .. } => {
                    let (map, count) = reduce_map(&net.shapes[node.inputs[0]], axes);
                    Prepared::Reduce { map, count }
                }
                _ => Prepared::None,
            };
            prepared.push(p);
        }
        Ok(Evaluator {
            net,
            prepared,
            live,
        })
    }

    /// The network.
    pub fn network(&self) -> &Network {
        self.net
    }

    /// Length of the input vector.
    pub fn input_len(&self) -> usize {
        self.net.len_of(0)
    }

    /// Length of the output vector (all outputs concatenated).
    pub fn output_len(&self) -> usize {
        self.net.outputs.iter().map(|&o| self.net.len_of(o)).sum()
    }

    /// The forward pass at `x`.
    pub fn forward(&self, x: &[f64]) -> Trace {
        let net = self.net;
        let mut values: Vec<Vec<f64>> = vec![Vec::new(); net.shapes.len()];
        values[0] = x.to_vec();
        let mut winners = vec![Vec::new(); net.nodes.len()];
        for (k, node) in net.nodes.iter().enumerate() {
            if !self.live[k] {
                continue;
            }
            let mut y = vec![0.0; net.len_of(node.output)];
            {
                let ins: Vec<&[f64]> = node.inputs.iter().map(|&v| values[v].as_slice()).collect();
                match &node.op {
                    Op::Activation(a) => {
                        for (yi, &xi) in y.iter_mut().zip(ins[0]) {
                            *yi = a.apply(xi);
                        }
                    }
                    Op::PRelu(slope) => {
                        for (i, (yi, &xi)) in y.iter_mut().zip(ins[0]).enumerate() {
                            *yi = if xi >= 0.0 { xi } else { slope.get(i) * xi };
                        }
                    }
                    Op::MaxPool(pool) => {
                        winners[k] = max_pool(pool, &net.shapes[node.inputs[0]], ins[0], &mut y);
                    }
                    Op::GlobalMaxPool => {
                        let s = &net.shapes[node.inputs[0]];
                        let plane = s[2] * s[3];
                        winners[k] = (0..s[1])
                            .map(|c| {
                                let p = &ins[0][c * plane..(c + 1) * plane];
                                let (best, _) = p.iter().enumerate().fold(
                                    (0, f64::NEG_INFINITY),
                                    |(bi, bv), (i, &v)| if v > bv { (i, v) } else { (bi, bv) },
                                );
                                y[c] = p[best];
                                (c * plane + best) as u32
                            })
                            .collect();
                    }
                    Op::Softmax { len, inner } => {
                        softmax(ins[0], &mut y, *len, *inner);
                    }
                    _ => {
                        self.linear_forward(k, &ins, &mut y);
                        self.add_offset(k, &mut y);
                    }
                }
            }
            values[node.output] = y;
        }
        Trace { values, winners }
    }

    /// The network output of a trace (outputs concatenated).
    pub fn output(&self, trace: &Trace) -> Vec<f64> {
        self.net
            .outputs
            .iter()
            .flat_map(|&o| trace.values[o].iter().copied())
            .collect()
    }

    /// `J(x)·dx` at the trace's input.
    pub fn jvp(&self, trace: &Trace, dx: &[f64]) -> Vec<f64> {
        let net = self.net;
        let mut tangents: Vec<Vec<f64>> = vec![Vec::new(); net.shapes.len()];
        tangents[0] = dx.to_vec();
        for (k, node) in net.nodes.iter().enumerate() {
            if !self.live[k] {
                continue;
            }
            let mut dy = vec![0.0; net.len_of(node.output)];
            {
                let ins: Vec<&[f64]> = node
                    .inputs
                    .iter()
                    .map(|&v| tangents[v].as_slice())
                    .collect();
                let x = &trace.values[node.inputs[0]];
                match &node.op {
                    Op::Activation(a) => {
                        for ((d, &t), &xi) in dy.iter_mut().zip(ins[0]).zip(x) {
                            *d = a.derivative(xi) * t;
                        }
                    }
                    Op::PRelu(slope) => {
                        for (i, ((d, &t), &xi)) in dy.iter_mut().zip(ins[0]).zip(x).enumerate() {
                            *d = if xi >= 0.0 { t } else { slope.get(i) * t };
                        }
                    }
                    Op::MaxPool(_) | Op::GlobalMaxPool => {
                        for (d, &w) in dy.iter_mut().zip(&trace.winners[k]) {
                            *d = if w == u32::MAX {
                                0.0
                            } else {
                                ins[0][w as usize]
                            };
                        }
                    }
                    Op::Softmax { len, inner } => {
                        softmax_jacobian(&trace.values[node.output], ins[0], &mut dy, *len, *inner);
                    }
                    _ => self.linear_forward(k, &ins, &mut dy),
                }
            }
            tangents[node.output] = dy;
        }
        net.outputs
            .iter()
            .flat_map(|&o| tangents[o].iter().copied())
            .collect()
    }

    /// `J(x)ᵀ·dy` at the trace's input.
    pub fn vjp(&self, trace: &Trace, dy: &[f64]) -> Vec<f64> {
        let net = self.net;
        let mut cot: Vec<Vec<f64>> = net.shapes.iter().map(|_| Vec::new()).collect();
        let mut offset = 0;
        for &o in &net.outputs {
            let n = net.len_of(o);
            accumulate(&mut cot[o], &dy[offset..offset + n]);
            offset += n;
        }
        for (k, node) in net.nodes.iter().enumerate().rev() {
            if !self.live[k] || cot[node.output].is_empty() {
                continue;
            }
            let g = std::mem::take(&mut cot[node.output]);
            let x = &trace.values[node.inputs[0]];
            let n_in = net.len_of(node.inputs[0]);
            match &node.op {
                Op::Activation(a) => {
                    let d: Vec<f64> = g
                        .iter()
                        .zip(x)
                        .map(|(&t, &xi)| a.derivative(xi) * t)
                        .collect();
                    accumulate(&mut cot[node.inputs[0]], &d);
                }
                Op::PRelu(slope) => {
                    let d: Vec<f64> = g
                        .iter()
                        .zip(x)
                        .enumerate()
                        .map(|(i, (&t, &xi))| if xi >= 0.0 { t } else { slope.get(i) * t })
                        .collect();
                    accumulate(&mut cot[node.inputs[0]], &d);
                }
                Op::MaxPool(_) | Op::GlobalMaxPool => {
                    let mut d = vec![0.0; n_in];
                    for (&t, &w) in g.iter().zip(&trace.winners[k]) {
                        if w != u32::MAX {
                            d[w as usize] += t;
                        }
                    }
                    accumulate(&mut cot[node.inputs[0]], &d);
                }
                Op::Softmax { len, inner } => {
                    let mut d = vec![0.0; n_in];
                    softmax_jacobian(&trace.values[node.output], &g, &mut d, *len, *inner);
                    accumulate(&mut cot[node.inputs[0]], &d);
                }
                _ => {
                    let mut outs: Vec<Vec<f64>> = node
                        .inputs
                        .iter()
                        .map(|&v| vec![0.0; net.len_of(v)])
                        .collect();
                    self.linear_adjoint(k, &g, &mut outs);
                    for (&v, d) in node.inputs.iter().zip(&outs) {
                        accumulate(&mut cot[v], d);
                    }
                }
            }
        }
        let mut dx = std::mem::take(&mut cot[0]);
        dx.resize(net.len_of(0), 0.0);
        dx
    }

    /// The linear part of an affine (or multi-input linear) node: `y = A·(inputs)`.
    pub(crate) fn linear_forward(&self, k: usize, ins: &[&[f64]], y: &mut [f64]) {
        let net = self.net;
        let node = &net.nodes[k];
        match (&node.op, &self.prepared[k]) {
            (Op::Conv { .. }, Prepared::Conv(op)) => op.as_operator().forward(ins[0], y),
            (Op::Dense { rows, cols, .. }, Prepared::Dense { matrix, repeat }) => {
                for r in 0..*repeat {
                    matrix.forward(
                        &ins[0][r * cols..(r + 1) * cols],
                        &mut y[r * rows..(r + 1) * rows],
                    );
                }
            }
            (Op::Affine { scale, .. }, _) => {
                for (i, (yi, &xi)) in y.iter_mut().zip(ins[0]).enumerate() {
                    *yi = scale.get(i) * xi;
                }
            }
            (
                Op::AvgPool {
                    pool,
                    count_include_pad,
                },
                _,
            ) => avg_pool(
                pool,
                *count_include_pad,
                &net.shapes[node.inputs[0]],
                ins[0],
                y,
                false,
            ),
            (Op::ReduceMean { .. }, Prepared::Reduce { map, count }) => {
                y.fill(0.0);
                let inv = 1.0 / *count as f64;
                for (&m, &xi) in map.iter().zip(ins[0]) {
                    y[m as usize] += xi * inv;
                }
            }
            (Op::Reshape(_), _) => y.copy_from_slice(ins[0]),
            (Op::Gather { index, .. }, _) => {
                for (yi, &i) in y.iter_mut().zip(index) {
                    *yi = if i == u32::MAX {
                        0.0
                    } else {
                        ins[0][i as usize]
                    };
                }
            }
            (Op::Add, _) => {
                for ((yi, &a), &b) in y.iter_mut().zip(ins[0]).zip(ins[1]) {
                    *yi = a + b;
                }
            }
            (Op::Sub, _) => {
                for ((yi, &a), &b) in y.iter_mut().zip(ins[0]).zip(ins[1]) {
                    *yi = a - b;
                }
            }
            (Op::Concat(axis), _) => {
                let (outer, blocks) = concat_blocks(net, k, *axis);
                let mut at = 0;
                for o in 0..outer {
                    for (x, &b) in ins.iter().zip(&blocks) {
                        y[at..at + b].copy_from_slice(&x[o * b..(o + 1) * b]);
                        at += b;
                    }
                }
            }
            _ => unreachable!("linear_forward on a nonlinear node"),
        }
    }

    /// The adjoint of [`Self::linear_forward`]: `outs[i] = A_iᵀ·g` for each input `i`.
    pub(crate) fn linear_adjoint(&self, k: usize, g: &[f64], outs: &mut [Vec<f64>]) {
        let net = self.net;
        let node = &net.nodes[k];
        match (&node.op, &self.prepared[k]) {
            (Op::Conv { .. }, Prepared::Conv(op)) => op.as_operator().adjoint(g, &mut outs[0]),
            (Op::Dense { rows, cols, .. }, Prepared::Dense { matrix, repeat }) => {
                for r in 0..*repeat {
                    matrix.adjoint(
                        &g[r * rows..(r + 1) * rows],
                        &mut outs[0][r * cols..(r + 1) * cols],
                    );
                }
            }
            (Op::Affine { scale, .. }, _) => {
                for (i, (xi, &gi)) in outs[0].iter_mut().zip(g).enumerate() {
                    *xi = scale.get(i) * gi;
                }
            }
            (
                Op::AvgPool {
                    pool,
                    count_include_pad,
                },
                _,
            ) => avg_pool(
                pool,
                *count_include_pad,
                &net.shapes[node.inputs[0]],
                g,
                &mut outs[0],
                true,
            ),
            (Op::ReduceMean { .. }, Prepared::Reduce { map, count }) => {
                let inv = 1.0 / *count as f64;
                for (xi, &m) in outs[0].iter_mut().zip(map) {
                    *xi = g[m as usize] * inv;
                }
            }
            (Op::Reshape(_), _) => outs[0].copy_from_slice(g),
            (Op::Gather { index, .. }, _) => {
                outs[0].fill(0.0);
                for (&gi, &i) in g.iter().zip(index) {
                    if i != u32::MAX {
                        outs[0][i as usize] += gi;
                    }
                }
            }
            (Op::Add, _) => {
                outs[0].copy_from_slice(g);
                outs[1].copy_from_slice(g);
            }
            (Op::Sub, _) => {
                outs[0].copy_from_slice(g);
                for (xi, &gi) in outs[1].iter_mut().zip(g) {
                    *xi = -gi;
                }
            }
            (Op::Concat(axis), _) => {
                let (outer, blocks) = concat_blocks(net, k, *axis);
                let mut at = 0;
                for o in 0..outer {
                    for (x, &b) in outs.iter_mut().zip(&blocks) {
                        x[o * b..(o + 1) * b].copy_from_slice(&g[at..at + b]);
                        at += b;
                    }
                }
            }
            _ => unreachable!("linear_adjoint on a nonlinear node"),
        }
    }

    /// Adds the constant part of an affine node (bias, shift, pad fill).
    fn add_offset(&self, k: usize, y: &mut [f64]) {
        let net = self.net;
        let node = &net.nodes[k];
        match &node.op {
            Op::Conv {
                bias: Some(b),
                conv,
                ..
            } => {
                let plane = y.len() / conv.out_channels;
                for (c, chunk) in y.chunks_mut(plane).enumerate() {
                    chunk.iter_mut().for_each(|v| *v += b[c] as f64);
                }
            }
            Op::Dense { bias: Some(b), .. } => {
                for chunk in y.chunks_mut(b.len()) {
                    for (v, &bi) in chunk.iter_mut().zip(b) {
                        *v += bi as f64;
                    }
                }
            }
            Op::Affine { shift, .. } => {
                for (i, v) in y.iter_mut().enumerate() {
                    *v += shift.get(i);
                }
            }
            Op::Gather { index, fill, .. } if *fill != 0.0 => {
                for (v, &i) in y.iter_mut().zip(index) {
                    if i == u32::MAX {
                        *v = *fill;
                    }
                }
            }
            _ => {}
        }
    }
}

fn accumulate(dst: &mut Vec<f64>, src: &[f64]) {
    if dst.is_empty() {
        dst.extend_from_slice(src);
    } else {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d += s;
        }
    }
}

/// Concat layout: the number of outer slices and each input's block length per slice.
fn concat_blocks(net: &Network, k: usize, axis: usize) -> (usize, Vec<usize>) {
    let node = &net.nodes[k];
    let out = &net.shapes[node.output];
    let outer: usize = out[..axis].iter().product();
    let blocks = node
        .inputs
        .iter()
        .map(|&v| net.len_of(v) / outer.max(1))
        .collect();
    (outer, blocks)
}

/// For ReduceMean: the output index of every input element, and how many inputs each
/// output averages.
pub(crate) fn reduce_map(shape: &[usize], axes: &[usize]) -> (Vec<u32>, usize) {
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

fn softmax(x: &[f64], y: &mut [f64], len: usize, inner: usize) {
    for base in slices(x.len(), len, inner) {
        let max = (0..len)
            .map(|t| x[base + t * inner])
            .fold(f64::NEG_INFINITY, f64::max);
        let mut sum = 0.0;
        for t in 0..len {
            let e = (x[base + t * inner] - max).exp();
            y[base + t * inner] = e;
            sum += e;
        }
        for t in 0..len {
            y[base + t * inner] /= sum;
        }
    }
}

/// `d = (diag(p) − p pᵀ) t` per slice (the Jacobian is symmetric, so this is also the VJP).
fn softmax_jacobian(p: &[f64], t: &[f64], d: &mut [f64], len: usize, inner: usize) {
    for base in slices(p.len(), len, inner) {
        let dot: f64 = (0..len)
            .map(|k| p[base + k * inner] * t[base + k * inner])
            .sum();
        for k in 0..len {
            let i = base + k * inner;
            d[i] = p[i] * (t[i] - dot);
        }
    }
}

/// Start indices of the softmax slices of a tensor with `n` elements.
fn slices(n: usize, len: usize, inner: usize) -> impl Iterator<Item = usize> {
    let outer = n / (len * inner);
    (0..outer).flat_map(move |o| (0..inner).map(move |i| o * len * inner + i))
}
