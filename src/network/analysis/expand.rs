//! Order statistics rewritten as ReLUs for the methods that exploit slope-restricted
//! activations: `max(a, b) = b + relu(a − b)` and `min(a, b) = a − relu(a − b)` exactly, so
//! * a max pooling window of `K` values is a tree of `K − 1` ReLUs over `K` selections of its
//!   input (depthwise convolutions with one-hot kernels, one per window offset);
//! * a sort along an axis of length `k ≤ 16` (MaxMin and GroupSort) is an odd–even
//!   transposition network: `k` stages of compare–exchanges, one ReLU each;
//! * `Max`/`Min` of two tensors is one ReLU of their difference.
//!
//! The rewritten network computes the same function, and its nonlinearities are all ReLUs,
//! which LipSDP-Neuron's, ECLipsE-Fast's and LipLT's per-unit slopes describe; each level of
//! a tree is its own node, so every ReLU reads only values computed before its node.

use super::super::graph::{Network, ValueId};
use super::super::ops::{
    Activation, Concat, Conv, Extremum, Gather, MaxPool, Pool2d, Reshape, Sort, Sum,
};
use crate::conv::{Conv2d, PaddingMode};
use crate::error::Result;

/// What [`expand_to_relus`] rewrites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expand {
    /// Pair sorts and two-input maxima only (cheap: one ReLU each).
    Sorts,
    /// Those and max pooling (a tree per window).
    SortsAndPools,
}

/// How node `k` is rewritten, if it is.
fn rewrite_of(net: &Network, k: usize, what: Expand) -> Option<bool> {
    let node = &net.nodes[k];
    if node.op.downcast_ref::<MaxPool>().is_some() {
        return (what == Expand::SortsAndPools).then(|| rewritable(net, k));
    }
    if let Some(s) = node.op.downcast_ref::<Sort>() {
        return Some(net.shapes[node.inputs[0]][s.axis] <= MAX_SORT_GROUP);
    }
    if node.op.downcast_ref::<Extremum>().is_some() {
        return Some(node.inputs.len() == 2);
    }
    None
}

/// The network with every live max pooling (with [`Expand::SortsAndPools`]), sort and
/// two-input maximum written as ReLUs, and each node's factor (the copied nodes keep theirs;
/// selections are injective gathers, constant 1); `None` when there is nothing to rewrite or
/// one of them cannot be rewritten (a sort of groups over 16, a max pooling with padding of
/// signed values — see [`rewritable`]).
pub(super) fn expand_to_relus(
    net: &Network,
    live: &[bool],
    factor: &[f64],
    what: Expand,
) -> Result<Option<(Network, Vec<f64>)>> {
    let found: Vec<(usize, bool)> = (0..net.nodes.len())
        .filter(|&k| live[k])
        .filter_map(|k| rewrite_of(net, k, what).map(|ok| (k, ok)))
        .collect();
    if found.is_empty() || found.iter().any(|&(_, ok)| !ok) {
        return Ok(None);
    }
    let mut out = Network::new(&net.source, &net.shapes[0])?;
    let mut factors = Vec::new();
    // Value ids of the original network in the rewritten one.
    let mut value: Vec<ValueId> = vec![0; net.shapes.len()];
    for (k, node) in net.nodes.iter().enumerate() {
        let inputs: Vec<ValueId> = node.inputs.iter().map(|&v| value[v]).collect();
        let rewrite = live[k] && rewrite_of(net, k, what).is_some();
        let shape = net.shapes[node.inputs[0]].clone();
        let produced = if !rewrite {
            let v = out.push(&node.name, &node.kind, node.op.clone(), &inputs)?;
            out.nodes.last_mut().expect("just pushed").weight_error = node.weight_error;
            factors.push(factor[k]);
            v
        } else if let Some(MaxPool(pool)) = node.op.downcast_ref::<MaxPool>() {
            max_as_relus(&mut out, &mut factors, &node.name, pool, &shape, inputs[0])?
        } else if let Some(sort) = node.op.downcast_ref::<Sort>() {
            sort_as_relus(&mut out, &mut factors, &node.name, sort, &shape, inputs[0])?
        } else {
            let max = node.op.downcast_ref::<Extremum>().expect("a maximum").max;
            let mut push =
                |name: &str, kind: &str, op: crate::network::ops::Op, ins: &[ValueId]| {
                    factors.push(1.0);
                    out.push(&format!("{}/{name}", node.name), kind, op, ins)
                };
            let (a, b) = (inputs[0], inputs[1]);
            let d = push("diff", "Sub", Sum::SUB.into(), &[a, b])?;
            let r = push("relu", "Relu", Activation::Relu.into(), &[d])?;
            if max {
                push("max", "Add", Sum::ADD.into(), &[b, r])?
            } else {
                push("min", "Sub", Sum::SUB.into(), &[a, r])?
            }
        };
        value[node.output] = produced;
    }
    out.outputs = net.outputs.iter().map(|&v| value[v]).collect();
    Ok(Some((out, factors)))
}

/// Longest sorted group written as ReLUs: odd–even transposition sort needs `k` stages of
/// up to `k/2` compare–exchanges, so `k²/2` ReLUs.
const MAX_SORT_GROUP: usize = 16;

/// Appends a sort along an axis of length `k` reading `x` as an odd–even transposition
/// network (Knuth, TAOCP 5.3.4): `k` stages, stage `s` compares the pairs `(i, i + 1)` with
/// `i ≡ s (mod 2)`. A compare–exchange of `a` and `b` is `b + relu(a − b)` and
/// `a − relu(a − b)`; each stage concatenates the maxima, the minima and the previous values
/// and gathers them back into place.
fn sort_as_relus(
    out: &mut Network,
    factors: &mut Vec<f64>,
    name: &str,
    sort: &Sort,
    shape: &[usize],
    x: ValueId,
) -> Result<ValueId> {
    let (axis, k) = (sort.axis, shape[sort.axis]);
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let mut push = |tag: String, kind: &str, op: crate::network::ops::Op, ins: &[ValueId]| {
        factors.push(1.0);
        out.push(&format!("{name}/{tag}"), kind, op, ins)
    };
    // Elements `(o, pos, j)` of an `(outer, len, inner)` view at the given positions.
    let select = |positions: &[usize], len: usize, from: &[usize]| Gather {
        kind: "Sort",
        index: (0..outer)
            .flat_map(|o| {
                positions.iter().flat_map(move |&p| {
                    (0..inner).map(move |j| ((o * len + from[p]) * inner + j) as u32)
                })
            })
            .collect(),
        fill: 0.0,
        shape: vec![outer, positions.len(), inner],
    };
    let identity: Vec<usize> = (0..k).collect();
    let mut t = push(
        "view".into(),
        "Reshape",
        Reshape(vec![outer, k, inner]).into(),
        &[x],
    )?;
    for stage in 0..k {
        let firsts: Vec<usize> = (stage % 2..k.saturating_sub(1)).step_by(2).collect();
        if firsts.is_empty() {
            continue;
        }
        let seconds: Vec<usize> = firsts.iter().map(|i| i + 1).collect();
        let n = firsts.len();
        let a = push(
            format!("s{stage}/a"),
            "Sort",
            select(&firsts, k, &identity).into(),
            &[t],
        )?;
        let b = push(
            format!("s{stage}/b"),
            "Sort",
            select(&seconds, k, &identity).into(),
            &[t],
        )?;
        let d = push(format!("s{stage}/diff"), "Sub", Sum::SUB.into(), &[a, b])?;
        let r = push(
            format!("s{stage}/relu"),
            "Relu",
            Activation::Relu.into(),
            &[d],
        )?;
        let hi = push(format!("s{stage}/max"), "Add", Sum::ADD.into(), &[b, r])?;
        let lo = push(format!("s{stage}/min"), "Sub", Sum::SUB.into(), &[a, r])?;
        // [maxima (n), minima (n), previous (k)] along the middle axis, then each position
        // takes its value: the larger (or smaller) of its pair, or its previous value.
        let (first, second) = if sort.descending { (0, n) } else { (n, 0) };
        let joined = push(
            format!("s{stage}/join"),
            "Concat",
            Concat(1).into(),
            &[hi, lo, t],
        )?;
        let mut source: Vec<usize> = (0..k).map(|p| 2 * n + p).collect();
        for (q, (&i, &j)) in firsts.iter().zip(&seconds).enumerate() {
            source[i] = first + q;
            source[j] = second + q;
        }
        let place = select(&(0..k).collect::<Vec<_>>(), 2 * n + k, &source);
        t = push(format!("s{stage}/place"), "Sort", place.into(), &[joined])?;
    }
    push(
        "sorted".into(),
        "Reshape",
        Reshape(shape.to_vec()).into(),
        &[t],
    )
}

/// Whether max pooling node `k` can be written with zero-padded selections: every window
/// has all `kH·kW` taps inside the zero-padded input (no partial last window), and where
/// there is padding its input is nonnegative (a ReLU's, sigmoid's, … output), so that the
/// zeros a border window selects never exceed its largest tap: `max` ignores them as it
/// ignores ONNX's `−∞` padding.
fn rewritable(net: &Network, k: usize) -> bool {
    let node = &net.nodes[k];
    let pool = &node.op.downcast_ref::<MaxPool>().expect("a max pooling").0;
    let (input, output) = (&net.shapes[node.inputs[0]], &net.shapes[node.output]);
    if input.len() != 4 || output.len() != 4 {
        return false;
    }
    let full = (0..2).all(|a| {
        let padded = input[2 + a] + pool.pads[a] + pool.pads[a + 2];
        let span = pool.dilation[a] * (pool.kernel[a] - 1) + 1;
        padded >= span && (output[2 + a] - 1) * pool.stride[a] + span <= padded
    });
    full && (pool.pads == [0; 4] || nonnegative(net, node.inputs[0]))
}

/// Whether value `v` is the output of an activation whose values are all ≥ 0.
fn nonnegative(net: &Network, v: ValueId) -> bool {
    net.nodes
        .iter()
        .find(|n| n.output == v)
        .and_then(|n| n.op.downcast_ref::<Activation>())
        .is_some_and(|a| match *a {
            Activation::Relu | Activation::Sigmoid | Activation::Softplus => true,
            Activation::HardSigmoid { .. } => true,
            Activation::Clip { min, .. } => min >= 0.0,
            _ => false,
        })
}

/// Appends the selections and the ReLU tree of one max pooling reading `x`; returns the
/// value of the maxima.
fn max_as_relus(
    out: &mut Network,
    factors: &mut Vec<f64>,
    name: &str,
    pool: &Pool2d,
    shape: &[usize],
    x: ValueId,
) -> Result<ValueId> {
    let channels = shape[1];
    let [kh, kw] = pool.kernel;
    let conv = Conv2d {
        out_channels: channels,
        in_channels: channels,
        kernel: pool.kernel,
        input: [shape[2], shape[3]],
        stride: pool.stride,
        dilation: pool.dilation,
        groups: channels,
        pads: pool.pads,
        padding_mode: PaddingMode::Zeros,
    };
    let mut level = Vec::with_capacity(kh * kw);
    for (i, j) in (0..kh).flat_map(|i| (0..kw).map(move |j| (i, j))) {
        let mut weight = vec![0.0f32; channels * kh * kw];
        for c in 0..channels {
            weight[c * kh * kw + i * kw + j] = 1.0;
        }
        let op = Conv {
            conv: conv.clone(),
            weight,
            bias: None,
        };
        level.push(out.push(&format!("{name}/select{i}_{j}"), "Conv", op, &[x])?);
        factors.push(1.0);
    }
    let mut depth = 0;
    while level.len() > 1 {
        let mut next = Vec::with_capacity(level.len().div_ceil(2));
        let pairs = level.len() / 2;
        // The level's ReLUs before its sums, so that they form one run of activations.
        let relus: Vec<(ValueId, ValueId)> = (0..pairs)
            .map(|p| -> Result<(ValueId, ValueId)> {
                let (a, b) = (level[2 * p], level[2 * p + 1]);
                let tag = format!("{name}/max{depth}_{p}");
                let d = out.push(&format!("{tag}/diff"), "Sub", Sum::SUB, &[a, b])?;
                factors.push(1.0);
                let r = out.push(&format!("{tag}/relu"), "Relu", Activation::Relu, &[d])?;
                factors.push(1.0);
                Ok((r, b))
            })
            .collect::<Result<_>>()?;
        for (p, (r, b)) in relus.into_iter().enumerate() {
            let m = out.push(&format!("{name}/max{depth}_{p}"), "Add", Sum::ADD, &[b, r])?;
            factors.push(1.0);
            next.push(m);
        }
        if level.len() % 2 == 1 {
            next.push(*level.last().expect("odd length"));
        }
        level = next;
        depth += 1;
    }
    Ok(level[0])
}

#[cfg(test)]
mod tests {
    use super::super::super::eval::Evaluator;
    use super::super::super::NetworkBuilder;
    use super::*;

    fn pool(kernel: usize, stride: usize, pads: usize) -> Pool2d {
        Pool2d {
            kernel: [kernel, kernel],
            stride: [stride, stride],
            pads: [pads; 4],
            dilation: [1, 1],
            ceil_mode: false,
        }
    }

    /// conv → ReLU (if `relu`) → the pooling → flatten → dense.
    fn network(p: Pool2d, relu: bool) -> Network {
        let mut b = NetworkBuilder::new("pooled", &[1, 2, 7, 7]).unwrap();
        let w = |n: usize, s: usize| -> Vec<f32> {
            (0..n)
                .map(|i| (((i * 37 + s) % 19) as f32 - 9.0) / 9.0)
                .collect()
        };
        b.conv(Conv2d::new(3, 2, [2, 2], [7, 7]), w(24, 1), None)
            .unwrap();
        if relu {
            b.activation(Activation::Relu).unwrap();
        }
        b.max_pool(p).unwrap();
        b.flatten().unwrap();
        let n = b.network().len_of(b.current());
        b.dense(w(2 * n, 5), 2, n, None).unwrap();
        b.finish()
    }

    /// The rewritten network computes the same function: its outputs equal the original's
    /// on random inputs, for windows of 4 (non-overlapping) and 9 (overlapping, a tree with
    /// an odd level) values, and a padded pooling after a ReLU.
    #[test]
    fn max_pooling_as_relus_is_the_same_function() {
        for (p, relu) in [
            (pool(2, 2, 0), true),
            (pool(3, 1, 0), false),
            (pool(3, 2, 1), true),
        ] {
            let net = network(p, relu);
            let live = net.live_nodes();
            let factor = vec![1.0; net.nodes.len()];
            let (expanded, factors) = expand_to_relus(&net, &live, &factor, Expand::SortsAndPools)
                .unwrap()
                .unwrap();
            assert_eq!(factors.len(), expanded.nodes.len());
            assert!(expanded
                .nodes
                .iter()
                .all(|n| n.op.downcast_ref::<MaxPool>().is_none()));
            let relus = expanded.nodes.iter().filter(|n| n.kind == "Relu").count();
            assert_eq!(relus, usize::from(relu) + p.kernel[0] * p.kernel[1] - 1);
            let (a, b) = (
                Evaluator::new(&net, true, 1 << 26).unwrap(),
                Evaluator::new(&expanded, true, 1 << 26).unwrap(),
            );
            for s in 0..20 {
                let x: Vec<f64> = (0..a.input_len())
                    .map(|i| ((i * 7919 + s * 104729) % 1000) as f64 / 250.0 - 2.0)
                    .collect();
                let (ya, yb) = (a.output(&a.forward(&x)), b.output(&b.forward(&x)));
                for (u, v) in ya.iter().zip(&yb) {
                    assert!((u - v).abs() <= 1e-12 * (1.0 + u.abs()), "{u} vs {v}");
                }
            }
        }
    }

    /// Sorts (MaxMin and GroupSort-3/4, ascending and descending) and two-input maxima and
    /// minima written as ReLUs compute the same function.
    #[test]
    fn pair_sorts_and_maxima_as_relus_are_the_same_function() {
        for (len, descending) in [(2, true), (2, false), (3, true), (4, false)] {
            let mut b = NetworkBuilder::new("sorted", &[1, 4, len, 3]).unwrap();
            let x = b.current();
            b.then(
                "Sort",
                Sort {
                    axis: 2,
                    descending,
                },
            )
            .unwrap();
            let s = b.current();
            b.node("max", "Max", Extremum { max: true }, &[x, s])
                .unwrap();
            let m = b.current();
            b.node("min", "Min", Extremum { max: false }, &[m, x])
                .unwrap();
            let net = b.finish();
            let live = net.live_nodes();
            let factor = vec![1.0; net.nodes.len()];
            let expanded = expand_to_relus(&net, &live, &factor, Expand::Sorts).unwrap();
            let (expanded, factors) = expanded.unwrap();
            assert_eq!(factors.len(), expanded.nodes.len());
            let relus = expanded.nodes.iter().filter(|n| n.kind == "Relu").count();
            // One per stage with pairs (k stages, the last may be empty for k = 2), and the
            // maximum and the minimum.
            let stages = (0..len).filter(|s| s % 2 + 1 < len).count();
            assert_eq!(relus, stages + 2);
            let (a, b) = (
                Evaluator::new(&net, true, 1 << 26).unwrap(),
                Evaluator::new(&expanded, true, 1 << 26).unwrap(),
            );
            for s in 0..20 {
                let x: Vec<f64> = (0..a.input_len())
                    .map(|i| ((i * 7919 + s * 104729) % 1000) as f64 / 250.0 - 2.0)
                    .collect();
                let (ya, yb) = (a.output(&a.forward(&x)), b.output(&b.forward(&x)));
                for (u, v) in ya.iter().zip(&yb) {
                    // b + (a − b) rounds where max(a, b) does not.
                    assert!((u - v).abs() <= 1e-14 * (1.0 + u.abs()), "{u} vs {v}");
                }
            }
        }
    }

    /// Padding whose zeros could exceed the taps (the input can be negative) is not
    /// rewritten.
    #[test]
    fn padded_pooling_of_signed_values_is_left_alone() {
        let net = network(pool(3, 2, 1), false);
        let live = net.live_nodes();
        let factor = vec![1.0; net.nodes.len()];
        assert!(expand_to_relus(&net, &live, &factor, Expand::SortsAndPools)
            .unwrap()
            .is_none());
    }
}
