//! The LipLT bound (Fazlyab et al., NeurIPS 2023; the averaged-operator argument of
//! Combettes & Pesquet 2020), along the whole graph.
//!
//! Every nonlinear node `j` is split as `σ_j(z) = m_j·z + r_j·ψ_j(z)` with `ψ_j`
//! 1-Lipschitz: an activation whose slopes lie in `[α, β]` has `m = (α+β)/2`,
//! `r = (β−α)/2`; any other nonlinear operation (max pooling, softmax) has `m = 0` and `r`
//! its constant. Replacing every `σ_j` by `m_j·I` leaves a *linearised* network, linear in
//! the input and in the terms `r_j·ψ_j(z_j)` injected at each nonlinear node's output. So
//! any value `v` of the network is `O_{v←x}x + Σ_j r_j·O_{v←j}ψ_j(z_j)`, with `O_{v←s}` the
//! linearised network from `s` to `v`, and
//!
//! `L_v ≤ ‖O_{v←x}‖ + Σ_j r_j·‖O_{v←j}‖·L_{z_j}`
//!
//! over the nonlinear nodes `j` before `v` (`z_j` is node `j`'s input). Applied in
//! topological order to every nonlinear node's input and then to the output, this keeps the
//! cancellations that the product throws away (for ReLU, `m = r = ½`), through residual
//! connections and concatenations alike. For a chain it is the recursion of the paper.
//!
//! Each `‖O_{v←s}‖` is certified like a merged run: Lanczos (or a dense SVD when small) on
//! the matrix-free linearised operator, evaluated with the `f64` direct operators, capped by
//! its AutoLip composition; the recursion is evaluated with every operation rounded up.

use super::super::eval::Evaluator;
use super::super::graph::{Network, ValueId};
use super::super::ops::{Activation, Role};
use super::rules::{add_up, mul_up, norm_up};
use super::runs::capped_norm;
use crate::bound::{Bound, Certificate, Method, Options, Stop};
use crate::error::Result;
use crate::LinearOperator;

/// Most nonlinear nodes of one segment: a segment needs `(K + 1)(K + 2)/2` operator norms,
/// each a Lanczos run through the segment (ResNet-18's 18 as one segment at 64×64 took a
/// minute).
pub(super) const MAX_NONLINEAR: usize = 12;

/// Default budget of the whole bound, in operator norms × activation values of their
/// segment: ~1e6 units take ~1 s on two cores (the demo: 2.1e6, 1.9 s), so the default
/// keeps LipLT within ~30 s (ResNet-18 at 64×64 fits; at 224×224 it needs raising).
pub(super) const DEFAULT_MAX_WORK: u128 = 30_000_000;

/// Most activation values (all tensors together) of one segment.
pub(super) const MAX_ELEMENTS: u128 = 1 << 23;

/// The slope interval `[α, β]` of an activation, where it has a proven one.
pub(super) fn slopes(a: &Activation) -> Option<(f64, f64)> {
    Some(match *a {
        Activation::Relu => (0.0, 1.0),
        Activation::LeakyRelu(s) => (s.min(1.0), s.max(1.0)),
        // α(eˣ − 1) for x < 0 has slopes in (0, α]; identity above.
        Activation::Elu(s) if s >= 0.0 => (0.0, s.max(1.0)),
        // γx above 0, γα(eˣ − 1) below: slopes in (0, γα] and {γ}.
        Activation::Selu { alpha, gamma } if alpha >= 0.0 && gamma >= 0.0 => {
            (0.0, (gamma * alpha.max(1.0)).next_up())
        }
        // f(x) − f(−x) = x for GELU (either form) and SiLU, so f'(x) + f'(−x) = 1: the
        // slopes lie in [1 − c, c] with c = sup f' (the proven constant, rounded up).
        Activation::Gelu { .. } | Activation::Silu => {
            let c = a.constant();
            ((1.0 - c).next_down(), c)
        }
        Activation::Sigmoid => (0.0, 0.25),
        Activation::Tanh | Activation::Softplus | Activation::Softsign => (0.0, 1.0),
        Activation::Abs => (-1.0, 1.0),
        Activation::Erf => (0.0, a.constant()),
        Activation::Mish => crate::network::ops::MISH_SLOPES,
        Activation::HardSigmoid { alpha, .. } => (alpha.min(0.0), alpha.max(0.0)),
        // (2x + 3)/6 on (−3, 3), 0 below, 1 above.
        Activation::HardSwish => (-0.5, 1.5),
        Activation::Clip { min, max } if max > min => (0.0, 1.0),
        _ => return None,
    })
}

/// How the linearised network treats each node: `Some(m)` for a nonlinear node (its output
/// is `m` times its input; 0 when the node is not elementwise), `None` for a linear one.
pub(super) type Slopes = Vec<Option<f64>>;

/// What the LipLT computation gave.
#[derive(Clone)]
pub(super) enum Outcome {
    /// The bound.
    Bound(Bound),
    /// It does not apply (several outputs, a
    /// nonlinear node with several inputs, or no nonlinearity it can exploit).
    NotApplicable,
    /// The network exceeds its budget; why.
    OverBudget(String),
}

impl Outcome {
    /// The tighter of two bounds of the same network (a bound over anything else).
    pub(super) fn tighter(a: Outcome, b: Outcome) -> Outcome {
        match (a, b) {
            (Outcome::Bound(x), Outcome::Bound(y)) => {
                Outcome::Bound(if y.upper < x.upper { y } else { x })
            }
            (Outcome::Bound(x), _) | (_, Outcome::Bound(x)) => Outcome::Bound(x),
            (a, _) => a,
        }
    }
}

/// A slope interval `[α, β]`.
type Interval = (f64, f64);

/// Every live nonlinear node with its slope interval `[α, β]` where it has a proven one, in
/// topological order; or `NotApplicable` when the network has several outputs or a
/// nonlinear node with several inputs (the conditions both LipLT and LipSDP-Neuron need).
/// Weights that differ from the source's are accounted for by the analysis
/// (`weight_perturbation`).
pub(super) fn nonlinear_slopes(
    net: &Network,
    live: &[bool],
) -> std::result::Result<Vec<(usize, Option<Interval>)>, Outcome> {
    if net.outputs.len() != 1 {
        return Err(Outcome::NotApplicable);
    }
    let mut found = Vec::new();
    for (k, node) in net.nodes.iter().enumerate() {
        if !live[k] {
            continue;
        }
        if node.op.role() != Role::Nonlinear {
            if node.op.is_affine() {
                continue;
            }
            // A nonlinear node composing like a sum or a stack (Max, Min of activations).
            return Err(Outcome::NotApplicable);
        }
        if node.inputs.len() != 1 {
            return Err(Outcome::NotApplicable);
        }
        found.push((k, node.op.downcast_ref::<Activation>().and_then(slopes)));
    }
    Ok(found)
}

/// The split `(m, r)` of every live nonlinear node, in topological order.
fn nonlinear_nodes(net: &Network, live: &[bool], factor: &[f64]) -> Splits {
    let found = nonlinear_slopes(net, live)?
        .into_iter()
        .map(|(k, split)| match split {
            Some((alpha, beta)) => {
                // r covers the rounding of m as well: slopes of σ − m·z stay within ±r.
                let m = (alpha + beta) / 2.0;
                let slack = 2.0 * f64::EPSILON * alpha.abs().max(beta.abs());
                (k, m, ((beta - alpha) / 2.0 + slack).next_up())
            }
            None => (k, 0.0, factor[k]),
        })
        .collect();
    Ok(found)
}

/// The nonlinear nodes, or why the bound is not computed.
type Splits = std::result::Result<Vec<(usize, f64, f64)>, Outcome>;

/// The LipLT bound of the network; `factor` holds every node's proven constant (layers'
/// spectral bounds, folded scales at 1, merged runs on their last node).
pub(super) fn liplt_bound(
    net: &Network,
    live: &[bool],
    factor: &[f64],
    opts: &Options,
    max_work: u128,
) -> Result<Outcome> {
    let nonlinear = match nonlinear_nodes(net, live, factor) {
        Ok(n) => n,
        Err(outcome) => return Ok(outcome),
    };
    if !nonlinear.iter().any(|&(_, m, _)| m != 0.0) {
        return Ok(Outcome::NotApplicable);
    }
    let mut slope: Slopes = vec![None; net.nodes.len()];
    for &(k, m, _) in &nonlinear {
        slope[k] = Some(m);
    }
    let segments = match segments(net, live, &nonlinear, max_work) {
        Ok(s) => s,
        Err(outcome) => return Ok(outcome),
    };
    let cx = Linearised::new(net, live, slope, factor, opts.memory_limit)?;
    let mut certificates = Vec::new();
    let mut upper = 1.0;
    for segment in &segments {
        let l = cx.recursion(segment, &nonlinear, opts, &mut certificates)?;
        upper = mul_up(upper, l);
    }
    Ok(Outcome::Bound(Bound {
        lower: 0.0,
        upper,
        certificate: Certificate::compose(&certificates),
        method: Method::Auto,
        iterations: 0,
        matvecs: 0,
        stop: Stop::Direct,
        seconds: 0.0,
    }))
}

/// A piece of the network between two cut points: every path from the input to the output
/// goes through its source and its end, so the network's constant is at most the product of
/// its pieces' constants, and each piece gets its own recursion.
struct Segment {
    /// Where it starts: the input (`None`) or node `k`'s output.
    source: Option<usize>,
    /// The value it ends at.
    end: ValueId,
    /// Its nonlinear nodes: a range of the network's list.
    nonlinear: std::ops::Range<usize>,
}

/// The nodes whose output every path from the input to the output goes through, in order:
/// after node `k` runs, the only value still to be read is node `k`'s output.
fn cut_points(net: &Network, live: &[bool]) -> Vec<usize> {
    let mut last_read = vec![None; net.shapes.len()];
    for (k, node) in net.nodes.iter().enumerate().filter(|&(k, _)| live[k]) {
        for &v in &node.inputs {
            last_read[v] = Some(k);
        }
    }
    for &o in &net.outputs {
        last_read[o] = Some(usize::MAX);
    }
    let mut open = vec![false; net.shapes.len()];
    let mut count = usize::from(last_read[0].is_some());
    open[0] = count == 1;
    let mut cuts = Vec::new();
    for (k, node) in net.nodes.iter().enumerate().filter(|&(k, _)| live[k]) {
        for &v in &node.inputs {
            if open[v] && last_read[v] == Some(k) {
                open[v] = false;
                count -= 1;
            }
        }
        if last_read[node.output].is_some() && !open[node.output] {
            open[node.output] = true;
            count += 1;
        }
        if count == 1 && open[node.output] {
            cuts.push(k);
        }
    }
    cuts
}

/// Cuts the network into as few segments as the budget allows (at most [`MAX_NONLINEAR`]
/// nonlinear nodes and [`MAX_ELEMENTS`] activation values each): the longer a segment, the
/// more cancellations its recursion keeps. A network that is one segment gets the whole
/// graph's recursion.
fn segments(
    net: &Network,
    live: &[bool],
    nonlinear: &[(usize, f64, f64)],
    max_work: u128,
) -> std::result::Result<Vec<Segment>, Outcome> {
    let cuts = cut_points(net, live);
    let Some(&last) = cuts.last() else {
        return Err(Outcome::NotApplicable);
    };
    if net.nodes[last].output != net.outputs[0] {
        return Err(Outcome::NotApplicable);
    }
    // Nonlinear nodes and activation values up to and including node k.
    let count_to = |k: usize| nonlinear.iter().take_while(|&&(j, _, _)| j <= k).count();
    let mut values_to = vec![0u128; net.nodes.len() + 1];
    for (k, node) in net.nodes.iter().enumerate() {
        let own = if live[k] {
            net.len_of(node.output) as u128
        } else {
            0
        };
        values_to[k + 1] = values_to[k] + own;
    }
    let fits = |from: Option<usize>, to: usize| {
        let (n0, v0) = from.map_or((0, 0), |f| (count_to(f), values_to[f + 1]));
        let source = from.map_or(net.len_of(0), |f| net.len_of(net.nodes[f].output)) as u128;
        count_to(to) - n0 <= MAX_NONLINEAR && values_to[to + 1] - v0 + source <= MAX_ELEMENTS
    };
    let mut out = Vec::new();
    let mut source = None;
    let mut i = 0;
    let mut work = 0u128;
    while i < cuts.len() {
        // The furthest cut this segment can reach.
        let mut end = None;
        while i < cuts.len() && fits(source, cuts[i]) {
            end = Some(cuts[i]);
            i += 1;
        }
        let Some(end) = end else {
            let from = source.map_or("the input".to_string(), |k| net.nodes[k].name.clone());
            return Err(Outcome::OverBudget(format!(
                "the part after {from} up to the next cut point has over {MAX_NONLINEAR} \
                 nonlinear nodes or {MAX_ELEMENTS} activation values"
            )));
        };
        let first = source.map_or(0, count_to);
        let k = (count_to(end) - first) as u128;
        let (v0, source_len) = source.map_or((0, net.len_of(0)), |f| {
            (values_to[f + 1], net.len_of(net.nodes[f].output))
        });
        work += (k + 1) * (k + 2) / 2 * (values_to[end + 1] - v0 + source_len as u128);
        out.push(Segment {
            source,
            end: net.nodes[end].output,
            nonlinear: first..count_to(end),
        });
        source = Some(end);
    }
    if work > max_work {
        return Err(Outcome::OverBudget(format!(
            "its {} segments need about {work:.1e} operator-norm × activation-value units, \
             over the budget of {max_work:.1e} (AnalysisOptions::liplt_max_work, CLI \
             --liplt-max-work; ~1e6 units take ~1 s on two cores)",
            out.len()
        )));
    }
    Ok(out)
}

/// The linearised network and what bounding its pieces needs.
pub(super) struct Linearised<'n> {
    net: &'n Network,
    eval: Evaluator<'n>,
    live: &'n [bool],
    slope: Slopes,
    factor: &'n [f64],
}

impl<'n> Linearised<'n> {
    /// The network with every nonlinear node `k` replaced by `slope[k]` times the identity
    /// (`slope[k]` is `None` for the linear nodes).
    pub(super) fn new(
        net: &'n Network,
        live: &'n [bool],
        slope: Slopes,
        factor: &'n [f64],
        memory_limit: usize,
    ) -> Result<Self> {
        Ok(Linearised {
            net,
            eval: Evaluator::new(net, true, memory_limit)?,
            live,
            slope,
            factor,
        })
    }

    /// The value a source injects into: the input, or node `k`'s output.
    fn source_value(&self, source: Option<usize>) -> ValueId {
        source.map_or(0, |k| self.net.nodes[k].output)
    }

    /// The live nodes after `source` that `target` depends on, in order.
    fn path(&self, source: Option<usize>, target: ValueId) -> Vec<usize> {
        let net = self.net;
        let first = source.map_or(0, |k| k + 1);
        let mut needed = vec![false; net.shapes.len()];
        needed[target] = true;
        let mut nodes = Vec::new();
        for k in (first..net.nodes.len()).rev() {
            let node = &net.nodes[k];
            if self.live[k] && needed[node.output] {
                nodes.push(k);
                for &v in &node.inputs {
                    needed[v] = true;
                }
            }
        }
        nodes.reverse();
        nodes
    }

    /// AutoLip of the linearised map from `source` to `target` (0 when unreachable): a
    /// deterministic cap on its norm, every operation rounded up.
    fn cap(&self, source: Option<usize>, nodes: &[usize], target: ValueId) -> f64 {
        let net = self.net;
        let mut l = vec![0.0f64; net.shapes.len()];
        l[self.source_value(source)] = 1.0;
        for &k in nodes {
            let node = &net.nodes[k];
            let ins = node.inputs.iter().map(|&v| l[v]);
            let own = self.slope[k].map_or(self.factor[k], f64::abs);
            l[node.output] = match node.op.role() {
                Role::Sum => mul_up(ins.fold(0.0, add_up), own),
                Role::Stack => mul_up(norm_up(ins), own),
                _ => mul_up(own, l[node.inputs[0]]),
            };
        }
        l[target]
    }

    /// The linearised map from `source` (the input, or node `k`'s output) to `target` as a
    /// matrix-free operator with its AutoLip cap, or `None` when it is zero (unreachable).
    pub(super) fn operator(
        &self,
        source: Option<usize>,
        target: ValueId,
    ) -> Option<(PathOperator<'_, 'n>, f64)> {
        let nodes = self.path(source, target);
        let cap = self.cap(source, &nodes, target);
        if cap == 0.0 {
            return None;
        }
        let inner = self
            .net
            .shapes
            .iter()
            .map(|s| s.iter().product::<usize>())
            .max();
        let op = PathOperator {
            cx: self,
            nodes,
            from: self.source_value(source),
            target,
            // f64 direct operators: rounding ~ (depth · inner size) · u relative to the cap.
            error: cap * (self.net.nodes.len() as f64) * (inner.unwrap_or(1) as f64) * f64::EPSILON,
        };
        Some((op, cap))
    }

    /// The recursion over one segment (module docs): `L` of each of its nonlinear nodes'
    /// inputs, then of its end, relative to its source.
    fn recursion(
        &self,
        segment: &Segment,
        nonlinear: &[(usize, f64, f64)],
        opts: &Options,
        certificates: &mut Vec<Certificate>,
    ) -> Result<f64> {
        let inner = &nonlinear[segment.nonlinear.clone()];
        let mut targets: Vec<ValueId> = inner
            .iter()
            .map(|&(k, _, _)| self.net.nodes[k].inputs[0])
            .collect();
        targets.push(segment.end);
        let mut lips: Vec<f64> = Vec::with_capacity(targets.len());
        for (i, &target) in targets.iter().enumerate() {
            let mut l = self.norm(segment.source, target, opts, certificates)?;
            for (j, &(k, _, r)) in inner[..i].iter().enumerate() {
                let n = self.norm(Some(k), target, opts, certificates)?;
                l = add_up(l, mul_up(mul_up(r, n), lips[j]));
            }
            lips.push(l);
        }
        Ok(*lips.last().expect("the segment's end"))
    }

    /// A certified upper bound on `‖O_{target←source}‖`.
    fn norm(
        &self,
        source: Option<usize>,
        target: ValueId,
        opts: &Options,
        certificates: &mut Vec<Certificate>,
    ) -> Result<f64> {
        let Some((op, cap)) = self.operator(source, target) else {
            return Ok(0.0);
        };
        let b = capped_norm(&op, cap, opts)?;
        certificates.push(b.certificate);
        Ok(b.upper.min(cap))
    }
}

/// The linearised network from one value to another, as a matrix-free operator.
pub(super) struct PathOperator<'a, 'n> {
    cx: &'a Linearised<'n>,
    nodes: Vec<usize>,
    from: ValueId,
    target: ValueId,
    error: f64,
}

impl LinearOperator for PathOperator<'_, '_> {
    fn input_len(&self) -> usize {
        self.cx.net.len_of(self.from)
    }
    fn output_len(&self) -> usize {
        self.cx.net.len_of(self.target)
    }
    fn forward(&self, x: &[f64], y: &mut [f64]) {
        let net = self.cx.net;
        let mut values: Vec<Vec<f64>> = vec![Vec::new(); net.shapes.len()];
        values[self.from] = x.to_vec();
        for &k in &self.nodes {
            let node = &net.nodes[k];
            let zeros: Vec<Vec<f64>> = node
                .inputs
                .iter()
                .map(|&v| vec![0.0; net.len_of(v)])
                .collect();
            let ins: Vec<&[f64]> = node
                .inputs
                .iter()
                .zip(&zeros)
                .map(|(&v, z)| {
                    if values[v].is_empty() {
                        z
                    } else {
                        &values[v][..]
                    }
                })
                .collect();
            let mut out = vec![0.0; net.len_of(node.output)];
            match self.cx.slope[k] {
                Some(m) if m != 0.0 => {
                    out.iter_mut().zip(ins[0]).for_each(|(o, &v)| *o = m * v);
                }
                Some(_) => {}
                None => self.cx.eval.linear_part(k).apply(&ins, &mut out),
            }
            values[node.output] = out;
        }
        if values[self.target].is_empty() {
            y.fill(0.0);
        } else {
            y.copy_from_slice(&values[self.target]);
        }
    }
    fn adjoint(&self, g: &[f64], x: &mut [f64]) {
        let net = self.cx.net;
        let mut cot: Vec<Vec<f64>> = vec![Vec::new(); net.shapes.len()];
        cot[self.target] = g.to_vec();
        for &k in self.nodes.iter().rev() {
            let node = &net.nodes[k];
            if cot[node.output].is_empty() {
                continue;
            }
            let gk = std::mem::take(&mut cot[node.output]);
            let mut outs: Vec<Vec<f64>> = node
                .inputs
                .iter()
                .map(|&v| vec![0.0; net.len_of(v)])
                .collect();
            match self.cx.slope[k] {
                Some(m) if m != 0.0 => {
                    outs[0].iter_mut().zip(&gk).for_each(|(o, &v)| *o = m * v);
                }
                Some(_) => {}
                None => self.cx.eval.linear_part(k).adjoint(&gk, &mut outs),
            }
            for (&v, d) in node.inputs.iter().zip(outs) {
                if cot[v].is_empty() {
                    cot[v] = d;
                } else {
                    cot[v].iter_mut().zip(&d).for_each(|(a, b)| *a += b);
                }
            }
        }
        if cot[self.from].is_empty() {
            x.fill(0.0);
        } else {
            x.copy_from_slice(&cot[self.from]);
        }
    }
    fn forward_error(&self) -> f64 {
        self.error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every difference quotient `(f(b) − f(a))/(b − a)` on a fine grid lies in the slope
    /// interval, and the interval is tight: quotients come within 1e-3 of both ends.
    #[test]
    fn slope_intervals_contain_every_difference_quotient_and_are_tight() {
        let activations = [
            Activation::Relu,
            Activation::LeakyRelu(0.1),
            Activation::Elu(0.5),
            Activation::Selu {
                alpha: 1.6733,
                gamma: 1.0507,
            },
            Activation::Sigmoid,
            Activation::Tanh,
            Activation::Softplus,
            Activation::HardSigmoid {
                alpha: 0.2,
                beta: 0.5,
            },
            Activation::HardSwish,
            Activation::Clip { min: 0.0, max: 6.0 },
            Activation::Gelu { tanh: false },
            Activation::Gelu { tanh: true },
            Activation::Silu,
            Activation::Abs,
            Activation::Mish,
            Activation::Softsign,
            Activation::Erf,
        ];
        let h = 1e-4;
        for a in activations {
            let (alpha, beta) = slopes(&a).unwrap();
            let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
            for i in -120_000..120_000 {
                let x = i as f64 * h;
                let q = (a.apply(x + h) - a.apply(x)) / h;
                assert!(
                    q >= alpha - 1e-9 && q <= beta + 1e-9,
                    "{a:?}: quotient {q} at {x} outside [{alpha}, {beta}]"
                );
                lo = lo.min(q);
                hi = hi.max(q);
            }
            // Softsign's slope 1/(1 + |x|)² reaches 0 only at infinity (0.006 at ±12).
            let low_reached = matches!(a, Activation::Softsign) || lo <= alpha + 1e-3;
            assert!(
                low_reached && hi >= beta - 1e-3,
                "{a:?}: [{lo}, {hi}] vs [{alpha}, {beta}]"
            );
        }
    }
}
