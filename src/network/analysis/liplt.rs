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
use rayon::prelude::*;

/// Most nonlinear nodes of one segment: a segment needs `(K + 1)(K + 2)/2` operator norms,
/// each a Lanczos run through the segment (ResNet-18's 18 as one segment at 64×64 took a
/// minute).
pub(super) const MAX_NONLINEAR: usize = 12;

/// Default budget of the whole bound, in the units of [`Paths::work`]: ~1e6 units take
/// ~1 s on two cores, so the default keeps LipLT within ~30 s (ResNet-18 at 64×64 as two
/// segments; at 224×224 as 18, one per ReLU).
pub(super) const DEFAULT_MAX_WORK: u128 = 30_000_000;

/// Tensors of at most this many `f64` values (512 KB) stay in a core's cache during a
/// Lanczos step; larger ones cost [`OUT_OF_CACHE`] times as much per value (ResNet-18's
/// norms: 0.8–1.0e6 units per second with 64×28×28 tensors, 0.15–0.26e6 with 64×56×56).
const CACHED_VALUES: usize = 1 << 16;

/// The cost of a value of a tensor over [`CACHED_VALUES`], in units of a cached one.
const OUT_OF_CACHE: u128 = 4;

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
    /// The bound, and a note on how it was obtained when the reader should know.
    Bound(Bound, Option<String>),
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
            (Outcome::Bound(x, m), Outcome::Bound(y, n)) => {
                if y.upper < x.upper {
                    Outcome::Bound(y, n)
                } else {
                    Outcome::Bound(x, m)
                }
            }
            (x @ Outcome::Bound(..), _) | (_, x @ Outcome::Bound(..)) => x,
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
    let paths = Paths {
        net,
        live,
        slope,
        factor,
    };
    let (segments, note) = match segments(&paths, &nonlinear, max_work) {
        Ok(s) => s,
        Err(outcome) => return Ok(outcome),
    };
    let cx = Linearised::with_paths(paths, opts.memory_limit)?;
    // Every norm of every segment is independent of the others: computed concurrently, each
    // with its share of the memory limit.
    let pairs: Vec<_> = segments
        .iter()
        .flat_map(|segment| cx.paths.pairs(segment, &nonlinear))
        .collect();
    let share = Options {
        memory_limit: opts.memory_limit / rayon::current_num_threads().clamp(1, pairs.len().max(1)),
        ..opts.clone()
    };
    let norms = pairs
        .par_iter()
        .map(|&(source, target)| cx.norm(source, target, &share))
        .collect::<Result<Vec<_>>>()?;
    let certificates: Vec<Certificate> = norms.iter().filter_map(|&(_, c)| c).collect();
    let mut norms = norms.iter().map(|&(n, _)| n);
    let mut upper = 1.0;
    for segment in &segments {
        upper = mul_up(upper, recursion(segment, &nonlinear, &mut norms));
    }
    let bound = Bound {
        lower: 0.0,
        upper,
        certificate: Certificate::compose(&certificates),
        method: Method::Auto,
        iterations: 0,
        matvecs: 0,
        stop: Stop::Direct,
        seconds: 0.0,
    };
    Ok(Outcome::Bound(bound, note))
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

/// Cuts the network into segments: as few as the budget allows, since the longer a
/// segment, the more cancellations its recursion keeps. Segments take at most
/// [`MAX_NONLINEAR`] nonlinear nodes and [`MAX_ELEMENTS`] activation values; when their
/// work is over `max_work`, shorter segments are tried (at most 8, 6, 4, 3, 2, 1 nonlinear
/// nodes): a segment of `K` nodes needs `(K + 1)(K + 2)/2` norms, so halving `K` roughly
/// halves the work, and every segment's recursion is still at most the product of its
/// layers. A network that is one segment gets the whole graph's recursion.
fn segments(
    paths: &Paths<'_>,
    nonlinear: &[(usize, f64, f64)],
    max_work: u128,
) -> std::result::Result<(Vec<Segment>, Option<String>), Outcome> {
    let net = paths.net;
    let cuts = cut_points(net, paths.live);
    let Some(&last) = cuts.last() else {
        return Err(Outcome::NotApplicable);
    };
    if net.nodes[last].output != net.outputs[0] {
        return Err(Outcome::NotApplicable);
    }
    let mut why = String::new();
    for max_nonlinear in [MAX_NONLINEAR, 8, 6, 4, 3, 2, 1] {
        match cut_into(paths, nonlinear, &cuts, max_nonlinear) {
            // Shorter segments do not fit either; the last over-budget cut is the reason.
            Err(reason) => {
                if why.is_empty() {
                    why = reason;
                }
                break;
            }
            Ok((segments, work)) if work <= max_work => {
                let note = (max_nonlinear < MAX_NONLINEAR).then(|| {
                    format!(
                        "{} segments of at most {max_nonlinear} nonlinear nodes, shortened to \
                         fit the work budget of {max_work:.1e} (longer segments give a tighter \
                         bound: --liplt-max-work)",
                        segments.len()
                    )
                });
                return Ok((segments, note));
            }
            Ok((segments, work)) => {
                why = format!(
                    "its {} segments (the shortest its cut points allow) need about {work:.1e} \
                     units of work (activation values along each norm's path), over the budget \
                     of {max_work:.1e} (AnalysisOptions::liplt_max_work, CLI --liplt-max-work; \
                     ~1e6 units take ~1 s on two cores)",
                    segments.len()
                );
            }
        }
    }
    Err(Outcome::OverBudget(why))
}

/// Cuts at the furthest cut point each segment can reach with at most `max_nonlinear`
/// nonlinear nodes and [`MAX_ELEMENTS`] values; the segments and their estimated work, or
/// why some part between two cut points does not fit.
fn cut_into(
    paths: &Paths<'_>,
    nonlinear: &[(usize, f64, f64)],
    cuts: &[usize],
    max_nonlinear: usize,
) -> std::result::Result<(Vec<Segment>, u128), String> {
    let (net, live) = (paths.net, paths.live);
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
        count_to(to) - n0 <= max_nonlinear && values_to[to + 1] - v0 + source <= MAX_ELEMENTS
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
            return Err(format!(
                "the part after {from} up to the next cut point has over {max_nonlinear} \
                 nonlinear nodes or {MAX_ELEMENTS} activation values"
            ));
        };
        let segment = Segment {
            source,
            end: net.nodes[end].output,
            nonlinear: source.map_or(0, count_to)..count_to(end),
        };
        work += paths.work(&segment, nonlinear);
        out.push(segment);
        source = Some(end);
    }
    Ok((out, work))
}

/// The linearised network's graph: which nodes each map goes through and their caps.
pub(super) struct Paths<'n> {
    net: &'n Network,
    live: &'n [bool],
    slope: Slopes,
    factor: &'n [f64],
}

/// The linearised network and what bounding its pieces needs.
pub(super) struct Linearised<'n> {
    paths: Paths<'n>,
    eval: Evaluator<'n>,
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
        let paths = Paths {
            net,
            live,
            slope,
            factor,
        };
        Self::with_paths(paths, memory_limit)
    }

    /// [`Linearised::new`] from the graph's paths.
    fn with_paths(paths: Paths<'n>, memory_limit: usize) -> Result<Self> {
        Ok(Linearised {
            eval: Evaluator::new(paths.net, true, memory_limit)?,
            paths,
        })
    }
}

impl Paths<'_> {
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

    /// Whether the path is a chain through at most one operator with a nontrivial norm (a
    /// layer, or a linear node whose constant is not 1), the rest being slopes times the
    /// identity, reshapes, permutations and sums with one term on the path: its cap is then
    /// that operator's certified bound times the slopes, as tight as Lanczos could make it
    /// (ResNet's stem: 10 s saved per such norm at 224×224). Its certificate is the layer's,
    /// already counted.
    fn cap_is_tight(&self, from: ValueId, nodes: &[usize]) -> bool {
        let net = self.net;
        let mut on_path = vec![false; net.shapes.len()];
        on_path[from] = true;
        let mut nontrivial = 0;
        for &k in nodes {
            let node = &net.nodes[k];
            let terms = node.inputs.iter().filter(|&&v| on_path[v]).count();
            on_path[node.output] = terms > 0;
            if self.slope[k].is_some() || terms == 0 {
                continue;
            }
            match node.op.role() {
                Role::Nonlinear => return false,
                Role::Sum | Role::Stack if terms > 1 => return false,
                // Constants of 1, rounded up to the next float or two.
                _ if self.factor[k] <= 1.0 + 1e-12 => {}
                _ => nontrivial += 1,
            }
        }
        nontrivial <= 1
    }

    /// The norms the recursion over `segment` needs, in the order [`recursion`] reads them:
    /// for each of its nonlinear nodes' inputs and then its end, the map from the segment's
    /// source and from each earlier nonlinear node of the segment.
    fn pairs(
        &self,
        segment: &Segment,
        nonlinear: &[(usize, f64, f64)],
    ) -> Vec<(Option<usize>, ValueId)> {
        let inner = &nonlinear[segment.nonlinear.clone()];
        let targets = inner
            .iter()
            .map(|&(k, _, _)| self.net.nodes[k].inputs[0])
            .chain(std::iter::once(segment.end));
        targets
            .enumerate()
            .flat_map(|(i, target)| {
                std::iter::once(segment.source)
                    .chain(inner[..i].iter().map(|&(k, _, _)| Some(k)))
                    .map(move |source| (source, target))
            })
            .collect()
    }

    /// The estimated work of bounding a segment: for every norm its recursion needs a
    /// Lanczos run for, the activation values along its path (a Lanczos step reads and
    /// writes each of them twice, and the step counts vary little between maps), counted
    /// [`OUT_OF_CACHE`] times over in tensors too large for a core's cache.
    fn work(&self, segment: &Segment, nonlinear: &[(usize, f64, f64)]) -> u128 {
        let weight = |len: usize| len as u128 * if len > CACHED_VALUES { OUT_OF_CACHE } else { 1 };
        self.pairs(segment, nonlinear)
            .into_iter()
            .map(|(source, target)| {
                let nodes = self.path(source, target);
                let from = self.source_value(source);
                if self.cap(source, &nodes, target) == 0.0 || self.cap_is_tight(from, &nodes) {
                    return 0;
                }
                let values: u128 = nodes
                    .iter()
                    .map(|&k| weight(self.net.len_of(self.net.nodes[k].output)))
                    .sum();
                values + weight(self.net.len_of(from))
            })
            .sum()
    }
}

impl<'n> Linearised<'n> {
    /// The linearised map from `source` (the input, or node `k`'s output) to `target` as a
    /// matrix-free operator with its AutoLip cap, or `None` when it is zero (unreachable).
    pub(super) fn operator(
        &self,
        source: Option<usize>,
        target: ValueId,
    ) -> Option<(PathOperator<'_, 'n>, f64)> {
        let paths = &self.paths;
        let nodes = paths.path(source, target);
        let cap = paths.cap(source, &nodes, target);
        if cap == 0.0 {
            return None;
        }
        let inner = paths
            .net
            .shapes
            .iter()
            .map(|s| s.iter().product::<usize>())
            .max();
        let op = PathOperator {
            cx: self,
            nodes,
            from: paths.source_value(source),
            target,
            // f64 direct operators: rounding ~ (depth · inner size) · u relative to the cap.
            error: cap
                * (paths.net.nodes.len() as f64)
                * (inner.unwrap_or(1) as f64)
                * f64::EPSILON,
        };
        Some((op, cap))
    }

    /// A certified upper bound on `‖O_{target←source}‖` and its certificate (`None` when the
    /// map is zero, or the cap is the bound: [`Paths::cap_is_tight`]).
    fn norm(
        &self,
        source: Option<usize>,
        target: ValueId,
        opts: &Options,
    ) -> Result<(f64, Option<Certificate>)> {
        let Some((op, cap)) = self.operator(source, target) else {
            return Ok((0.0, None));
        };
        if self.paths.cap_is_tight(op.from, &op.nodes) {
            return Ok((cap, None));
        }
        let b = capped_norm(&op, cap, opts)?;
        Ok((b.upper.min(cap), Some(b.certificate)))
    }
}

/// The recursion over one segment (module docs): `L` of each of its nonlinear nodes'
/// inputs, then of its end, relative to its source, from the norms of
/// [`Paths::pairs`] in their order.
fn recursion(
    segment: &Segment,
    nonlinear: &[(usize, f64, f64)],
    norms: &mut impl Iterator<Item = f64>,
) -> f64 {
    let inner = &nonlinear[segment.nonlinear.clone()];
    let mut lips: Vec<f64> = Vec::with_capacity(inner.len() + 1);
    for i in 0..=inner.len() {
        let mut l = norms.next().expect("one norm per pair");
        for (j, &(_, _, r)) in inner[..i].iter().enumerate() {
            let n = norms.next().expect("one norm per pair");
            l = add_up(l, mul_up(mul_up(r, n), lips[j]));
        }
        lips.push(l);
    }
    *lips.last().expect("the segment's end")
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
        self.cx.paths.net.len_of(self.from)
    }
    fn output_len(&self) -> usize {
        self.cx.paths.net.len_of(self.target)
    }
    fn forward(&self, x: &[f64], y: &mut [f64]) {
        let net = self.cx.paths.net;
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
            match self.cx.paths.slope[k] {
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
        let net = self.cx.paths.net;
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
            match self.cx.paths.slope[k] {
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
