//! The order statistics of 1-Lipschitz networks: `Max`/`Min` (of activations, or of an
//! activation and a scalar), `TopK`, `ReduceMax`/`ReduceMin`, and the MaxMin / GroupSort
//! activations however they are exported:
//! * `Concat([Max(a, b), Min(a, b)])` (`torch.cat([torch.max(a, b), torch.min(a, b)])`,
//!   with `a, b` the two halves from `Split`/`chunk`) becomes `Concat(a, b)` viewed as
//!   `(…, 2, d, …)`, sorted along the pair axis and viewed back — the same values, now one
//!   [`Sort`] with constant exactly 1 reading a permutation of the input;
//! * `TopK` with `k` the whole axis (`torch.sort` on a grouped view) is a [`Sort`].

use super::attrs::{attr_int, attr_ints, norm_axis};
use super::importer::Importer;
use super::proto::NodeProto;
use super::select::{add_reshape, gather_index};
use crate::error::Result;
use crate::network::ops::{Activation, Affine, Extremum, Sort};
use crate::network::ValueId;

/// The Concat node that makes a `Max`/`Min` pair a MaxMin, with the pair's inputs `(a, b)`
/// and whether the maximum comes first: node `k` is a two-input `Max` or `Min`, read only by
/// a two-input `Concat` whose other input is the opposite extremum of the same two tensors,
/// read only by that Concat.
fn max_min_pair(imp: &Importer, k: usize) -> Option<(usize, [String; 2], bool)> {
    let g = &imp.graph;
    let (op, ins, outs) = &g.nodes[k];
    let opposite = match op.as_str() {
        "Max" => "Min",
        "Min" => "Max",
        _ => return None,
    };
    let only_reader = |name: &str| match g.consumers.get(name).map(Vec::as_slice) {
        Some([c]) if *c != usize::MAX => Some(*c),
        _ => None,
    };
    let vars: Vec<ValueId> = ins
        .iter()
        .filter_map(|i| imp.values.get(i).copied())
        .collect();
    if ins.len() != 2 || vars.len() != 2 || imp.shape_of(vars[0]) != imp.shape_of(vars[1]) {
        return None;
    }
    let c = only_reader(&outs[0])?;
    let (cop, cins, _) = &g.nodes[c];
    if cop != "Concat" || cins.len() != 2 {
        return None;
    }
    let other = if cins[0] == outs[0] {
        &cins[1]
    } else {
        &cins[0]
    };
    let j = *g.producer.get(other)?;
    let (oop, oins, _) = &g.nodes[j];
    let same = oins.len() == 2
        && ((oins[0] == ins[0] && oins[1] == ins[1]) || (oins[0] == ins[1] && oins[1] == ins[0]));
    if oop != opposite || !same || only_reader(other)? != c || ins[0] == ins[1] {
        return None;
    }
    let max_first = (op == "Max") == (cins[0] == outs[0]);
    Some((c, [ins[0].clone(), ins[1].clone()], max_first))
}

/// `Max` and `Min`: of activations (or the half of a MaxMin, lowered with its Concat), or
/// of one activation and scalar constants (a clip).
pub(super) fn extremum(imp: &mut Importer, node: &NodeProto, label: &str) -> Result<()> {
    let k = node
        .output
        .first()
        .and_then(|o| imp.graph.producer.get(o).copied());
    if k.is_some_and(|k| max_min_pair(imp, k).is_some()) {
        // Lowered with the Concat that reads it.
        imp.deferred.insert(node.output[0].clone());
        return Ok(());
    }
    let max = node.op_type == "Max";
    let vars: Vec<ValueId> = node
        .input
        .iter()
        .filter_map(|i| imp.values.get(i).copied())
        .collect();
    let consts: Vec<f64> = node
        .input
        .iter()
        .filter(|i| !imp.values.contains_key(*i))
        .map(|i| {
            let c = imp.constant(i, label, "operand")?;
            if c.dims.iter().product::<usize>() != 1 {
                return Err(imp.err(format!(
                    "node {label}: {} of an activation and a non-scalar constant '{i}' is not \
                     supported",
                    node.op_type
                )));
            }
            Ok(c.f64s()[0])
        })
        .collect::<Result<_>>()?;
    match (vars.as_slice(), consts.is_empty()) {
        ([x], false) => {
            let (min, max) = if max {
                (
                    consts.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                    f64::INFINITY,
                )
            } else {
                (
                    f64::NEG_INFINITY,
                    consts.iter().copied().fold(f64::INFINITY, f64::min),
                )
            };
            let x = *x;
            imp.push(
                node,
                label,
                &node.op_type.clone(),
                Activation::Clip { min, max },
                &[x],
            )
        }
        (_, true) => imp.push(node, label, &node.op_type.clone(), Extremum { max }, &vars),
        _ => Err(imp.err(format!(
            "node {label}: {} of several activations and constants is not supported",
            node.op_type
        ))),
    }
}

impl Importer {
    /// The Concat of a MaxMin: `Concat(a, b)` viewed as `(…, 2, d, …)`, sorted along the pair
    /// axis (largest first when the maximum comes first) and viewed back. `Ok(false)` when
    /// the node is an ordinary Concat.
    pub(super) fn max_min_concat(
        &mut self,
        node: &NodeProto,
        label: &str,
        axis: usize,
    ) -> Result<bool> {
        let Some(&c) = self.graph.producer.get(&node.output[0]) else {
            return Ok(false);
        };
        let first = self.graph.producer.get(&node.input[0]).copied();
        let Some((_, [a, b], max_first)) = first
            .and_then(|k| max_min_pair(self, k))
            .filter(|(cc, _, _)| *cc == c)
        else {
            return Ok(false);
        };
        let (va, vb) = (self.var(&a, label)?, self.var(&b, label)?);
        let xs = self.shape_of(va);
        let mut joined = xs.clone();
        joined[axis] *= 2;
        let base = format!("{}/maxmin", node.output[0]);
        let stacked =
            self.concat_values(&format!("{base}/pairs"), label, &[va, vb], axis, &joined)?;
        let mut pairs = xs.clone();
        pairs.insert(axis, 2);
        let view = add_reshape(self, &format!("{base}/view"), label, stacked, pairs)?;
        let sort = Sort {
            axis,
            descending: max_first,
        };
        let sorted = self.add_node(&format!("{base}/sort"), label, "MaxMin", sort, &[view])?;
        self.push(
            node,
            label,
            "MaxMin",
            crate::network::ops::Reshape(joined),
            &[sorted],
        )?;
        Ok(true)
    }
}

/// `Abs`.
pub(super) fn abs(imp: &mut Importer, node: &NodeProto, label: &str) -> Result<()> {
    imp.unary(node, label, Activation::Abs)
}

/// `Neg`: a scale by −1.
pub(super) fn neg(imp: &mut Importer, node: &NodeProto, label: &str) -> Result<()> {
    imp.unary(node, label, Affine::scale_by(-1.0))
}

/// What [`sort_and_keep`] keeps: the first `k` along `axis`, largest first when `largest`.
struct Keep {
    axis: usize,
    k: usize,
    largest: bool,
}

/// Sorts `x` along an axis and keeps the first `k` (the `k` largest or smallest), as nodes
/// named after the node's output.
fn sort_and_keep(
    imp: &mut Importer,
    node: &NodeProto,
    label: &str,
    x: ValueId,
    keep: Keep,
    kind: &'static str,
) -> Result<ValueId> {
    let Keep { axis, k, largest } = keep;
    let xs = imp.shape_of(x);
    let sort = Sort {
        axis,
        descending: largest,
    };
    let name = format!("{}/sort", node.output[0]);
    let sorted = imp.add_node(&name, label, kind, sort, &[x])?;
    if k == xs[axis] {
        return Ok(sorted);
    }
    let mut out = xs.clone();
    out[axis] = k;
    imp.selection_shape(label, &out)?;
    let index = gather_index(&out, &xs, |o, i| i.copy_from_slice(o));
    let name = format!("{}/first", node.output[0]);
    imp.add_select(&name, label, kind, sorted, &out, index)
}

/// `TopK(x, k)`: its values (the indices output must be unused).
pub(super) fn top_k(imp: &mut Importer, node: &NodeProto, label: &str) -> Result<()> {
    let (x, xs) = imp.main_input(node, label)?;
    let r = xs.len() as i64;
    let axis = norm_axis(attr_int(node, "axis", -1), r)
        .ok_or_else(|| imp.err(format!("node {label}: TopK axis out of range")))?;
    let k = if imp.opset < 10 {
        attr_int(node, "k", 0)
    } else {
        let name = node.input.get(1).map(String::as_str).unwrap_or("");
        imp.constant(name, label, "k")?
            .i64s()
            .first()
            .copied()
            .unwrap_or(0)
    };
    if !(1..=xs[axis] as i64).contains(&k) {
        return Err(imp.err(format!(
            "node {label}: k = {k} is not in 1..={} (axis {axis} of {xs:?})",
            xs[axis]
        )));
    }
    let largest = attr_int(node, "largest", 1) != 0;
    let kind = if k as usize == xs[axis] {
        "GroupSort"
    } else {
        "TopK"
    };
    let keep = Keep {
        axis,
        k: k as usize,
        largest,
    };
    let v = sort_and_keep(imp, node, label, x, keep, kind)?;
    imp.push(
        node,
        label,
        kind,
        crate::network::ops::Reshape(imp.shape_of(v)),
        &[v],
    )
}

/// `ReduceMax` and `ReduceMin`: the reduced axes moved last and merged, sorted, the first
/// element kept, viewed as the output. Constant 1.
pub(super) fn reduce_extremum(imp: &mut Importer, node: &NodeProto, label: &str) -> Result<()> {
    let (x, xs) = imp.main_input(node, label)?;
    let r = xs.len();
    let axes = if imp.opset >= 18 {
        imp.optional_const(node, 1).map(|c| c.i64s())
    } else {
        attr_ints(node, "axes")
    };
    let axes: Vec<usize> = match axes.filter(|a| !a.is_empty()) {
        Some(a) => a
            .iter()
            .map(|&v| norm_axis(v, r as i64))
            .collect::<Option<_>>()
            .ok_or_else(|| imp.err(format!("node {label}: reduce axes {a:?} out of range")))?,
        None if attr_int(node, "noop_with_empty_axes", 0) != 0 => {
            return imp.unary(node, label, crate::network::ops::Reshape(xs));
        }
        None => (0..r).collect(),
    };
    let keepdims = attr_int(node, "keepdims", 1) != 0;
    let kept: Vec<usize> = (0..r).filter(|k| !axes.contains(k)).collect();
    let reduced: Vec<usize> = (0..r).filter(|k| axes.contains(k)).collect();
    let perm: Vec<usize> = kept.iter().chain(&reduced).copied().collect();
    let moved: Vec<usize> = perm.iter().map(|&a| xs[a]).collect();
    imp.selection_shape(label, &moved)?;
    let index = gather_index(&moved, &xs, |o, i| {
        for (k, &a) in perm.iter().enumerate() {
            i[a] = o[k];
        }
    });
    let base = node.output[0].clone();
    let kind = if node.op_type == "ReduceMax" {
        "ReduceMax"
    } else {
        "ReduceMin"
    };
    let t = imp.add_select(&format!("{base}/moved"), label, kind, x, &moved, index)?;
    let mut flat: Vec<usize> = kept.iter().map(|&a| xs[a]).collect();
    flat.push(reduced.iter().map(|&a| xs[a]).product());
    let t = add_reshape(imp, &format!("{base}/merged"), label, t, flat.clone())?;
    let axis = flat.len() - 1;
    let keep = Keep {
        axis,
        k: 1,
        largest: kind == "ReduceMax",
    };
    let v = sort_and_keep(imp, node, label, t, keep, kind)?;
    let out: Vec<usize> = (0..r)
        .filter_map(|k| {
            if axes.contains(&k) {
                keepdims.then_some(1)
            } else {
                Some(xs[k])
            }
        })
        .collect();
    imp.push(node, label, kind, crate::network::ops::Reshape(out), &[v])
}
