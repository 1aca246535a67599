//! The LipLT bound (Fazlyab et al., NeurIPS 2023; the averaged-operator argument of
//! Combettes & Pesquet 2020) for chains of affine maps and slope-restricted activations.
//!
//! An activation whose slopes lie in `[α, β]` is `σ(z) = m·z + r·ψ(z)` with `m = (α+β)/2`,
//! `r = (β−α)/2` and `ψ` 1-Lipschitz. For a segment `z₀ = A₀x`, `zᵢ = Aᵢσᵢ(zᵢ₋₁)`, unrolling
//! gives `zᵢ = (Π_{l≤i} m_l)·A_{i:0}x + Σ_{j≤i} r_j·(Π_{j<l≤i} m_l)·A_{i:j}ψ_j(z_{j−1})`, with
//! `A_{i:j} = Aᵢ⋯A_j` the product of the affine maps *skipping* the activations. Hence
//!
//! `Lᵢ ≤ |Π_{l≤i} m_l|·‖A_{i:0}‖ + Σ_{j≤i} r_j·|Π_{j<l≤i} m_l|·‖A_{i:j}‖·L_{j−1}`,  `L₀ = ‖A₀‖`,
//!
//! which keeps the cancellations that the product `Π‖Aᵢ‖·Π max|σᵢ'|` throws away (for ReLU,
//! `m = r = ½`). Every `‖A_{i:j}‖` is a certified upper bound of the composed operator
//! (merged-run machinery: Lanczos on the product, capped by the product of its factors), and
//! the recursion is evaluated with every operation rounded up.
//!
//! The graph must be a chain: one path from the input to the single output. Nonlinear
//! operations that are not elementwise (max pooling, softmax) end a segment; segments compose
//! by their product with the operation's constant between them.

use super::super::graph::Network;
use super::super::ops::{Activation, Role};
use super::rules::{add_up, mul_up};
use super::runs::merged_bound;
use crate::bound::{Bound, Certificate, Options};
use crate::error::Result;

/// One element of a chain, in order.
enum Step {
    /// An affine node.
    Affine(usize),
    /// An elementwise activation with slopes in `[α, β]`: `(m, r)`.
    Activation { m: f64, r: f64 },
    /// A nonlinear node bounded only by its constant.
    Opaque(f64),
}

/// The slope interval `[α, β]` of an activation, where it has a proven one.
fn slopes(a: &Activation) -> Option<(f64, f64)> {
    Some(match *a {
        Activation::Relu => (0.0, 1.0),
        Activation::LeakyRelu(s) => (s.min(1.0), s.max(1.0)),
        // α(eˣ − 1) for x < 0 has slopes in (0, α]; identity above.
        Activation::Elu(s) if s >= 0.0 => (0.0, s.max(1.0)),
        Activation::Sigmoid => (0.0, 0.25),
        Activation::Tanh | Activation::Softplus => (0.0, 1.0),
        Activation::HardSigmoid { alpha, .. } => (alpha.min(0.0), alpha.max(0.0)),
        // (2x + 3)/6 on (−3, 3), 0 below, 1 above.
        Activation::HardSwish => (-0.5, 1.5),
        Activation::Clip { min, max } if max > min => (0.0, 1.0),
        _ => return None,
    })
}

/// The live nodes as a chain of steps, or `None` when the graph is not a single path or
/// has weights that differ from the source's (the product operators run on the stored f32
/// weights).
fn chain(net: &Network, live: &[bool], factor: &[f64]) -> Option<Vec<Step>> {
    let mut current = 0;
    let mut steps = Vec::new();
    for (k, node) in net.nodes.iter().enumerate() {
        if !live[k] {
            continue;
        }
        if node.inputs != [current] || node.weight_error > 0.0 {
            return None;
        }
        current = node.output;
        let step = match node.op.role() {
            Role::Layer | Role::Linear { .. } => Step::Affine(k),
            Role::Nonlinear => match node.op.downcast_ref::<Activation>().and_then(slopes) {
                Some((alpha, beta)) => Step::Activation {
                    m: (alpha + beta) / 2.0,
                    r: ((beta - alpha) / 2.0).next_up(),
                },
                None => Step::Opaque(factor[k]),
            },
            Role::Sum | Role::Stack => return None,
        };
        steps.push(step);
    }
    (net.outputs == [current]).then_some(steps)
}

/// The LipLT bound of the network, when it is a chain with at least one activation that
/// the recursion can exploit; `factor` holds every node's proven constant (layers' spectral
/// bounds, folded scales at 1).
pub(super) fn liplt_bound(
    net: &Network,
    live: &[bool],
    factor: &[f64],
    opts: &Options,
) -> Result<Option<Bound>> {
    let Some(steps) = chain(net, live, factor) else {
        return Ok(None);
    };
    if !steps.iter().any(|s| matches!(s, Step::Activation { .. })) {
        return Ok(None);
    }
    let mut upper = 1.0;
    let mut certificates = Vec::new();
    for segment in steps.split(|s| matches!(s, Step::Opaque(_))) {
        upper = mul_up(
            upper,
            segment_bound(net, segment, factor, opts, &mut certificates)?,
        );
    }
    for s in &steps {
        if let Step::Opaque(c) = s {
            upper = mul_up(upper, *c);
        }
    }
    Ok(Some(Bound {
        lower: 0.0,
        upper,
        certificate: super::rules::combine(&certificates),
        method: crate::bound::Method::Auto,
        iterations: 0,
        matvecs: 0,
        stop: crate::bound::Stop::Direct,
        seconds: 0.0,
    }))
}

/// The recursion on one segment `A₀ σ₁ A₁ … σ_K A_K` (affine blocks may be empty).
fn segment_bound(
    net: &Network,
    segment: &[Step],
    factor: &[f64],
    opts: &Options,
    certificates: &mut Vec<Certificate>,
) -> Result<f64> {
    // Affine blocks A₀..A_K (node lists) and the activations' (m, r) between them.
    let mut blocks: Vec<Vec<usize>> = vec![Vec::new()];
    let mut acts: Vec<(f64, f64)> = Vec::new();
    for s in segment {
        match s {
            Step::Affine(k) => blocks.last_mut().expect("one block").push(*k),
            Step::Activation { m, r } => {
                acts.push((m.abs(), *r));
                blocks.push(Vec::new());
            }
            Step::Opaque(_) => unreachable!("segments are split at opaque steps"),
        }
    }
    // ‖A_{i:j}‖ for j ≤ i, certified.
    let k = acts.len();
    let mut norm = vec![vec![0.0; k + 1]; k + 1];
    for i in 0..=k {
        for j in 0..=i {
            let nodes: Vec<usize> = blocks[j..=i].iter().flatten().copied().collect();
            norm[i][j] = if nodes.is_empty() {
                1.0
            } else {
                let b = merged_bound(net, &nodes, factor, opts)?;
                certificates.push(b.certificate);
                b.upper
            };
        }
    }
    // L_i over the prefixes, every operation rounded up.
    let mut lips = vec![norm[0][0]];
    for (i, row) in norm.iter().enumerate().skip(1) {
        // acts[l - 1] is σ_l, between A_{l−1} and A_l.
        let m_from = |j: usize| (j + 1..=i).fold(1.0, |p, l| mul_up(p, acts[l - 1].0));
        let mut li = mul_up(m_from(0), row[0]);
        for j in 1..=i {
            let term = mul_up(mul_up(acts[j - 1].1, m_from(j)), row[j]);
            li = add_up(li, mul_up(term, lips[j - 1]));
        }
        lips.push(li);
    }
    Ok(lips[k])
}
