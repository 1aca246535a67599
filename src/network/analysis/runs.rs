//! Runs of affine nodes with no nonlinearity between them (conv → conv, conv → average pool,
//! global pooling → dense, …), bounded as one operator by Lanczos, warm-started and capped
//! by the product of their bounds.

use super::super::eval::Evaluator;
use super::super::graph::{Network, Reader};
use super::super::ops::Role;
use super::rules::run_product;
use crate::bound::{Bound, Certificate, Method, Options, Stop};
use crate::error::Result;
use crate::spectral::{spectral_norm_with, Hints};
use crate::LinearOperator;

/// Maximal chains of single-input affine nodes (each feeding only the next) that contain at
/// least two nodes with a non-trivial norm.
pub(super) fn linear_runs(
    net: &Network,
    live: &[bool],
    readers: &[Vec<Reader>],
) -> Vec<Vec<usize>> {
    let chainable =
        |k: usize| live[k] && matches!(net.nodes[k].op.role(), Role::Layer | Role::Linear { .. });
    let mut in_run = vec![false; net.nodes.len()];
    let mut runs = Vec::new();
    for start in 0..net.nodes.len() {
        if in_run[start] || !chainable(start) {
            continue;
        }
        let mut run = vec![start];
        let mut k = start;
        loop {
            let out = net.nodes[k].output;
            match readers[out].as_slice() {
                [Reader::Node(j)] if chainable(*j) && !in_run[*j] => {
                    run.push(*j);
                    k = *j;
                }
                _ => break,
            }
        }
        let heavy = run
            .iter()
            .filter(|&&k| {
                matches!(
                    net.nodes[k].op.role(),
                    Role::Layer | Role::Linear { heavy: true }
                )
            })
            .count();
        for &k in &run {
            in_run[k] = true;
        }
        if heavy >= 2 {
            runs.push(run);
        }
    }
    runs
}

/// The linear part of a run of affine nodes, as one operator.
struct RunOperator<'a> {
    eval: Evaluator<'a>,
    run: Vec<usize>,
    lens: Vec<usize>,
    error: f64,
}

impl LinearOperator for RunOperator<'_> {
    fn input_len(&self) -> usize {
        self.lens[0]
    }
    fn output_len(&self) -> usize {
        *self.lens.last().unwrap()
    }
    fn forward(&self, x: &[f64], y: &mut [f64]) {
        let mut cur = x.to_vec();
        for (i, &k) in self.run.iter().enumerate() {
            let mut next = vec![0.0; self.lens[i + 1]];
            self.eval.linear_part(k).apply(&[&cur], &mut next);
            cur = next;
        }
        y.copy_from_slice(&cur);
    }
    fn adjoint(&self, y: &[f64], x: &mut [f64]) {
        let mut cur = y.to_vec();
        for (i, &k) in self.run.iter().enumerate().rev() {
            let mut outs = vec![vec![0.0; self.lens[i]]];
            self.eval.linear_part(k).adjoint(&cur, &mut outs);
            cur = outs.pop().unwrap();
        }
        x.copy_from_slice(&cur);
    }
    fn forward_error(&self) -> f64 {
        self.error
    }
}

/// The merged run's operator is evaluated with the nodes' `f32` weights; where those are
/// within `e_i` of the source's (in operator norm), the exact run is within
/// `Σ_i e_i·Π_{j≠i} u_j` of it (telescoping, `u_j` = each node's proven bound), and the
/// interval is widened by that.
pub(super) fn merged_bound(
    net: &Network,
    run: &[usize],
    factor: &[f64],
    opts: &Options,
) -> Result<Bound> {
    let product = run_product(run, factor);
    let source_error: f64 = run
        .iter()
        .map(|&i| {
            let node = &net.nodes[i];
            let others: f64 = run
                .iter()
                .filter(|&&j| j != i)
                .map(|&j| factor[j])
                .product();
            super::fold::frobenius_to_operator(node) * node.weight_error * others
        })
        .sum::<f64>()
        * (1.0 + 1e-12);
    let eval = Evaluator::for_nodes(net, run, true, opts.memory_limit)?;
    let mut lens = vec![net.len_of(net.nodes[run[0]].inputs[0])];
    lens.extend(run.iter().map(|&k| net.len_of(net.nodes[k].output)));
    // f64 direct operators: rounding ~ (depth · inner size) · u relative to the product.
    let inner: usize = lens.iter().copied().max().unwrap_or(1);
    let error = product * (run.len() as f64) * (inner as f64) * f64::EPSILON;
    let op = RunOperator {
        eval,
        run: run.to_vec(),
        lens,
        error,
    };
    let mut b = capped_norm(&op, product, opts)?;
    b.widen(source_error);
    if b.upper >= product {
        b.upper = product;
        b.certificate = Certificate::Deterministic;
        if b.stop == Stop::Converged {
            b.stop = Stop::UpperLimited;
        }
    }
    Ok(b)
}

/// A certified interval for `‖op‖` given a deterministic cap on it: Lanczos (or a dense SVD
/// when small) with the cap as its known upper end.
pub(super) fn capped_norm(op: &dyn LinearOperator, cap: f64, opts: &Options) -> Result<Bound> {
    let inner_opts = Options {
        method: Method::Auto,
        ..opts.clone()
    };
    let hints = Hints {
        upper: Some((cap, Certificate::Deterministic)),
        ..Hints::default()
    };
    spectral_norm_with(op, &inner_opts, &hints)
}
