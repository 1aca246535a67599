//! The composition rules of AutoLip (Virmaux & Scaman 2018), every operation rounded up so
//! that products and sums of upper bounds stay upper bounds in floating point.

use super::super::graph::Network;
use super::super::ops::Role;

/// True when the composed bound is below f64's normal range though no factor is 0.
pub(super) fn underflow_of(upper: f64, factor: &[f64]) -> bool {
    upper < f64::MIN_POSITIVE && factor.iter().all(|&f| f != 0.0)
}

/// The product of a run's factors, rounded up: the cap a merged bound is compared with.
pub(super) fn run_product(run: &[usize], factor: &[f64]) -> f64 {
    run.iter().fold(1.0, |p, &k| mul_up(p, factor[k]))
}

pub(super) use crate::util::{add_up, mul_up, norm_up};

/// AutoLip over the graph with per-node factors; the rules of the module docs, every
/// operation rounded up.
pub(super) fn compose(net: &Network, live: &[bool], factor: &[f64]) -> f64 {
    let mut l = vec![0.0f64; net.shapes.len()];
    l[0] = 1.0;
    for (k, node) in net.nodes.iter().enumerate() {
        if !live[k] {
            continue;
        }
        let ins = node.inputs.iter().map(|&v| l[v]);
        l[node.output] = match node.op.role() {
            Role::Sum => mul_up(ins.fold(0.0, add_up), factor[k]),
            Role::Stack => mul_up(norm_up(ins), factor[k]),
            _ => mul_up(factor[k], l[node.inputs[0]]),
        };
    }
    match net.outputs.as_slice() {
        [o] => l[*o],
        outs => norm_up(outs.iter().map(|&o| l[o])),
    }
}
