//! Evaluating a network: the forward pass, and at a given input its Jacobian applied to a
//! vector (JVP, forward mode) and its transpose (VJP, reverse mode), without ever forming the
//! Jacobian. The empirical lower bound runs on these.
//!
//! Every node's operation is prepared once into a [`Kernel`] (conv operators with their FFT
//! plans and kernel spectra, dense matrices, index maps); a [`Trace`] keeps every value of
//! one forward pass plus what the derivatives need (max-pooling winners).

use super::graph::Network;
use super::ops::{At, Context, Kernel, LinearPart};
use crate::error::{Error, Result};

/// A network ready to be evaluated many times.
pub struct Evaluator<'n> {
    net: &'n Network,
    /// The prepared kernel of every live node (`None` for dead ones).
    kernels: Vec<Option<Box<dyn Kernel + 'n>>>,
}

/// The values of one forward pass.
pub struct Trace {
    /// Every value (dead nodes' values are empty).
    pub values: Vec<Vec<f64>>,
    /// What each node's forward pass saved for the derivatives.
    saved: Vec<Vec<u32>>,
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
        let mut kernels = Vec::with_capacity(net.nodes.len());
        for (k, node) in net.nodes.iter().enumerate() {
            if !live[k] {
                kernels.push(None);
                continue;
            }
            let inputs = net.input_shapes(node);
            let cx = Context {
                inputs: &inputs,
                output: &net.shapes[node.output],
                accurate,
                memory_limit,
            };
            kernels.push(Some(node.op.prepare(&cx)?));
        }
        Ok(Evaluator { net, kernels })
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

    /// The live nodes with their kernels, in order.
    fn live(&self) -> impl DoubleEndedIterator<Item = (usize, &dyn Kernel)> {
        self.kernels
            .iter()
            .enumerate()
            .filter_map(|(k, p)| p.as_deref().map(|p| (k, p)))
    }

    /// The forward pass at `x`.
    pub fn forward(&self, x: &[f64]) -> Trace {
        let net = self.net;
        let mut values: Vec<Vec<f64>> = vec![Vec::new(); net.shapes.len()];
        values[0] = x.to_vec();
        let mut saved = vec![Vec::new(); net.nodes.len()];
        for (k, kernel) in self.live() {
            let node = &net.nodes[k];
            let mut y = vec![0.0; net.len_of(node.output)];
            let ins: Vec<&[f64]> = node.inputs.iter().map(|&v| values[v].as_slice()).collect();
            saved[k] = kernel.forward(&ins, &mut y);
            values[node.output] = y;
        }
        Trace { values, saved }
    }

    /// The network output of a trace (outputs concatenated).
    pub fn output(&self, trace: &Trace) -> Vec<f64> {
        self.net
            .outputs
            .iter()
            .flat_map(|&o| trace.values[o].iter().copied())
            .collect()
    }

    /// Node `k`'s values in a trace.
    fn at<'t>(&self, trace: &'t Trace, k: usize) -> At<'t> {
        let node = &self.net.nodes[k];
        At {
            input: &trace.values[node.inputs[0]],
            output: &trace.values[node.output],
            saved: &trace.saved[k],
        }
    }

    /// `J(x)·dx` at the trace's input.
    pub fn jvp(&self, trace: &Trace, dx: &[f64]) -> Vec<f64> {
        let net = self.net;
        let mut tangents: Vec<Vec<f64>> = vec![Vec::new(); net.shapes.len()];
        tangents[0] = dx.to_vec();
        for (k, kernel) in self.live() {
            let node = &net.nodes[k];
            let mut dy = vec![0.0; net.len_of(node.output)];
            let ins: Vec<&[f64]> = node
                .inputs
                .iter()
                .map(|&v| tangents[v].as_slice())
                .collect();
            kernel.jvp(self.at(trace, k), &ins, &mut dy);
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
        for (k, kernel) in self.live().rev() {
            let node = &net.nodes[k];
            if cot[node.output].is_empty() {
                continue;
            }
            let g = std::mem::take(&mut cot[node.output]);
            let mut outs: Vec<Vec<f64>> = node
                .inputs
                .iter()
                .map(|&v| vec![0.0; net.len_of(v)])
                .collect();
            kernel.vjp(self.at(trace, k), &g, &mut outs);
            for (&v, d) in node.inputs.iter().zip(&outs) {
                accumulate(&mut cot[v], d);
            }
        }
        let mut dx = std::mem::take(&mut cot[0]);
        dx.resize(net.len_of(0), 0.0);
        dx
    }

    /// The linear part of affine node `k` (prepared by this evaluator).
    pub(crate) fn linear_part(&self, k: usize) -> &dyn LinearPart {
        self.kernels[k]
            .as_deref()
            .and_then(|p| p.linear())
            .expect("merged runs hold prepared affine nodes only")
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
