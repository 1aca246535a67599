//! The composition rules of AutoLip (Virmaux & Scaman 2018), every operation rounded up so
//! that products and sums of upper bounds stay upper bounds in floating point.

use super::super::graph::Network;
use super::super::ops::Role;
use crate::bound::Certificate;

/// Weakest certificate among the factors; probabilistic failure probabilities add up.
pub(super) fn combine(certs: &[Certificate]) -> Certificate {
    let mut delta = 0.0;
    let mut all_exact = true;
    for c in certs {
        match c {
            Certificate::None => return Certificate::None,
            Certificate::Probabilistic { delta: d } => {
                delta += d;
                all_exact = false;
            }
            Certificate::Deterministic => all_exact = false,
            Certificate::Exact => {}
        }
    }
    if delta > 0.0 {
        Certificate::Probabilistic {
            delta: delta.min(1.0),
        }
    } else if all_exact && certs.len() <= 1 {
        Certificate::Exact
    } else {
        Certificate::Deterministic
    }
}

/// True when the composed bound is below f64's normal range though no factor is 0.
pub(super) fn underflow_of(upper: f64, factor: &[f64]) -> bool {
    upper < f64::MIN_POSITIVE && factor.iter().all(|&f| f != 0.0)
}

/// The product of a run's factors, rounded up: the cap a merged bound is compared with.
pub(super) fn run_product(run: &[usize], factor: &[f64]) -> f64 {
    run.iter().fold(1.0, |p, &k| mul_up(p, factor[k]))
}

/// `a·b` rounded up (0 only when a factor is 0): products of bounds stay upper bounds
/// through rounding, and never underflow to 0.
pub(super) fn mul_up(a: f64, b: f64) -> f64 {
    if a == 0.0 || b == 0.0 {
        0.0
    } else {
        (a * b).next_up()
    }
}

/// `a + b` rounded up (for non-negative terms).
pub(super) fn add_up(a: f64, b: f64) -> f64 {
    (a + b).next_up()
}

/// `√(Σ xᵢ²)` rounded up.
pub(super) fn norm_up(xs: impl IntoIterator<Item = f64>) -> f64 {
    let sq = xs.into_iter().fold(0.0, |s, x| add_up(s, mul_up(x, x)));
    if sq == 0.0 {
        0.0
    } else {
        sq.sqrt().next_up()
    }
}

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
