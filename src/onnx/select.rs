//! Operators that select, permute or repeat elements: `Transpose`, `Slice`, `Split`,
//! `Gather` (constant indices), `Expand`, `Tile`, `DepthToSpace`, `SpaceToDepth`, and
//! nearest-neighbour `Resize`/`Upsample`. Each becomes a [`Gather`] — the constant is exactly
//! `√(most outputs reading one input)`: 1 for a permutation or a selection, `√k` for a
//! k-fold repetition — and a selection of a selection is composed into one, so that
//! `Split → … → Concat` of the same tensor is seen as the permutation it is.

use super::attrs::{attr_int, attr_ints, attr_string, norm_axis};
use super::importer::Importer;
use super::proto::NodeProto;
use crate::error::Result;
use crate::network::ops::{Concat, Gather, Reshape};
use crate::network::{ValueId, MAX_RANK, MAX_TENSOR_ELEMENTS};

/// The flat source of every element of a tensor of shape `out`: `source(o, i)` writes the
/// input multi-index `i` of output multi-index `o` (in a tensor of shape `xs`).
pub(super) fn gather_index(
    out: &[usize],
    xs: &[usize],
    mut source: impl FnMut(&[usize], &mut [usize]),
) -> Vec<u32> {
    let total: usize = out.iter().product();
    let mut index = Vec::with_capacity(total);
    let mut o = vec![0usize; out.len()];
    let mut i = vec![0usize; xs.len()];
    for _ in 0..total {
        source(&o, &mut i);
        let flat = i.iter().zip(xs).fold(0usize, |acc, (&v, &d)| acc * d + v);
        index.push(flat as u32);
        for k in (0..out.len()).rev() {
            o[k] += 1;
            if o[k] < out[k] {
                break;
            }
            o[k] = 0;
        }
    }
    index
}

impl Importer {
    /// `v` as a selection of an earlier value: its root and the index into the root
    /// (`None`: `v` is the root reshaped, element for element).
    fn selection_of(&mut self, v: ValueId) -> (ValueId, Option<Vec<u32>>) {
        let net = self.net().network();
        let (mut cur, mut index): (ValueId, Option<Vec<u32>>) = (v, None);
        while let Some(node) = net.nodes.iter().rev().find(|n| n.output == cur) {
            if node.op.is_reshape() {
            } else if let Some(g) = node.op.downcast_ref::<Gather>() {
                if g.index.contains(&u32::MAX) {
                    break;
                }
                index = Some(match index {
                    None => g.index.clone(),
                    Some(i) => i.iter().map(|&j| g.index[j as usize]).collect(),
                });
            } else {
                break;
            }
            cur = node.inputs[0];
        }
        (cur, index)
    }

    /// Checks a selection's output shape (rank, size) and charges its index.
    pub(super) fn selection_shape(&mut self, label: &str, out: &[usize]) -> Result<()> {
        if out.len() > MAX_RANK {
            return Err(self.err(format!(
                "node {label}: output rank {} is over the limit of {MAX_RANK}",
                out.len()
            )));
        }
        let total = out
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .filter(|&t| t <= MAX_TENSOR_ELEMENTS)
            .ok_or_else(|| self.err(format!("node {label}: output shape {out:?} is too large")))?;
        if total == 0 {
            return Err(self.err(format!("node {label}: output shape {out:?} is empty")));
        }
        self.budget.charge(
            total as u128 * 8,
            &format!("node {label}: index of the output {out:?}"),
        )
    }

    /// The [`Gather`] reading `x` with `index` (composed with the selections `x` is made of).
    fn composed(
        &mut self,
        kind: &'static str,
        x: ValueId,
        out: &[usize],
        index: Vec<u32>,
    ) -> (Gather, ValueId) {
        let (root, prev) = self.selection_of(x);
        let index = match prev {
            None => index,
            Some(p) => index.iter().map(|&j| p[j as usize]).collect(),
        };
        let op = Gather {
            kind,
            index,
            fill: 0.0,
            shape: out.to_vec(),
        };
        (op, root)
    }

    /// Adds a selection (output shape and source index) as the producer of the node's
    /// output `k`.
    pub(super) fn push_select(
        &mut self,
        node: &NodeProto,
        k: usize,
        label: &str,
        kind: &'static str,
        x: ValueId,
        (out, index): (Vec<usize>, Vec<u32>),
    ) -> Result<()> {
        let (op, root) = self.composed(kind, x, &out, index);
        self.push_output(node, k, label, kind, op, &[root])
    }

    /// Adds a selection that no ONNX output names (a step of a longer lowering).
    pub(super) fn add_select(
        &mut self,
        name: &str,
        label: &str,
        kind: &'static str,
        x: ValueId,
        out: &[usize],
        index: Vec<u32>,
    ) -> Result<ValueId> {
        let (op, root) = self.composed(kind, x, out, index);
        self.add_node(name, label, kind, op, &[root])
    }

    /// `Concat` of `vs` along `axis` as one selection when every input is a selection of the
    /// same tensor (`Split → … → Concat`), `None` otherwise.
    pub(super) fn concat_as_selection(
        &mut self,
        label: &str,
        vs: &[ValueId],
        axis: usize,
        out: &[usize],
    ) -> Result<Option<(Gather, ValueId)>> {
        let parts: Vec<(ValueId, Option<Vec<u32>>)> =
            vs.iter().map(|&v| self.selection_of(v)).collect();
        let root = parts[0].0;
        if parts.iter().any(|(r, _)| *r != root) {
            return Ok(None);
        }
        self.selection_shape(label, out)?;
        let outer: usize = out[..axis].iter().product();
        let mut index = Vec::with_capacity(out.iter().product());
        for o in 0..outer {
            for (&v, (_, idx)) in vs.iter().zip(&parts) {
                let b = self.net().network().len_of(v) / outer;
                match idx {
                    Some(i) => index.extend_from_slice(&i[o * b..(o + 1) * b]),
                    None => index.extend((o * b..(o + 1) * b).map(|j| j as u32)),
                }
            }
        }
        let op = Gather {
            kind: "Concat",
            index,
            fill: 0.0,
            shape: out.to_vec(),
        };
        Ok(Some((op, root)))
    }
}

impl Importer {
    /// `Concat(vs)` along `axis` (shape `out`) as a node no ONNX output names: one selection
    /// when the inputs are selections of one tensor.
    pub(super) fn concat_values(
        &mut self,
        name: &str,
        label: &str,
        vs: &[ValueId],
        axis: usize,
        out: &[usize],
    ) -> Result<ValueId> {
        match self.concat_as_selection(label, vs, axis, out)? {
            Some((op, root)) => self.add_node(name, label, "Concat", op, &[root]),
            None => self.add_node(name, label, "Concat", Concat(axis), vs),
        }
    }
}

/// The output shape and source index of every output of a selection operator on an input
/// of shape `xs` (shared by the lowering and the constant folding).
pub(super) type Plan = Vec<(Vec<usize>, Vec<u32>)>;

/// The plan of `node` (one of the operators of [`SELECTIONS`]) on an input of shape `xs`.
pub(super) fn plan(
    imp: &mut Importer,
    node: &NodeProto,
    label: &str,
    xs: &[usize],
) -> Result<Plan> {
    let xs = xs.to_vec();
    match node.op_type.as_str() {
        "Transpose" => transpose_plan(imp, node, label, xs),
        "Slice" => slice_plan(imp, node, label, xs),
        "Split" => split_plan(imp, node, label, xs),
        "Gather" => gather_plan(imp, node, label, xs),
        "Expand" => expand_plan(imp, node, label, xs),
        "Tile" => tile_plan(imp, node, label, xs),
        "GatherND" => gather_nd_plan(imp, node, label, xs),
        _ => depth_space_plan(imp, node, label, xs),
    }
}

/// The selection operators that [`plan`] describes.
pub(super) const SELECTIONS: &[&str] = &[
    "Transpose",
    "Slice",
    "Split",
    "Gather",
    "Expand",
    "Tile",
    "GatherND",
    "DepthToSpace",
    "SpaceToDepth",
];

/// Lowers a selection operator: one [`Gather`] per output.
pub(super) fn selection(imp: &mut Importer, node: &NodeProto, label: &str) -> Result<()> {
    let (x, xs) = imp.main_input(node, label)?;
    let kind = SELECTIONS
        .iter()
        .find(|&&k| k == node.op_type)
        .copied()
        .unwrap_or("Gather");
    for (k, selected) in plan(imp, node, label, &xs)?.into_iter().enumerate() {
        if !node.output[k].is_empty() {
            imp.push_select(node, k, label, kind, x, selected)?;
        }
    }
    Ok(())
}

/// `Transpose(perm)` (reversed axes by default).
fn transpose_plan(
    imp: &mut Importer,
    node: &NodeProto,
    label: &str,
    xs: Vec<usize>,
) -> Result<Plan> {
    let r = xs.len();
    let perm: Vec<usize> = match attr_ints(node, "perm") {
        None => (0..r).rev().collect(),
        Some(p) => p
            .iter()
            .map(|&a| norm_axis(a, r as i64))
            .collect::<Option<_>>()
            .filter(|p: &Vec<usize>| {
                let mut s = p.clone();
                s.sort_unstable();
                s == (0..r).collect::<Vec<_>>()
            })
            .ok_or_else(|| {
                imp.err(format!(
                    "node {label}: perm {p:?} is not a permutation of the {r} axes"
                ))
            })?,
    };
    let out: Vec<usize> = perm.iter().map(|&a| xs[a]).collect();
    imp.selection_shape(label, &out)?;
    let index = gather_index(&out, &xs, |o, i| {
        for (k, &a) in perm.iter().enumerate() {
            i[a] = o[k];
        }
    });
    Ok(vec![(out, index)])
}

/// The element range `[start, start + step·n)` one axis of a `Slice` keeps, ONNX clamping.
fn slice_axis(dim: usize, start: i64, end: i64, step: i64) -> (i64, usize) {
    let d = dim as i64;
    let norm = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
    let (start, end) = (norm(start), norm(end));
    let (start, end) = if step > 0 {
        (start.clamp(0, d), end.clamp(0, d))
    } else {
        (start.clamp(0, d - 1), end.clamp(-1, d - 1))
    };
    let n = if step > 0 {
        (end - start + step - 1).div_euclid(step)
    } else {
        (start - end + (-step) - 1).div_euclid(-step)
    };
    (start, n.max(0) as usize)
}

/// `Slice(x, starts, ends, axes, steps)` with constant bounds (attributes before opset 10).
fn slice_plan(imp: &mut Importer, node: &NodeProto, label: &str, xs: Vec<usize>) -> Result<Plan> {
    let r = xs.len();
    let (starts, ends, axes, steps) = if imp.opset < 10 {
        (
            attr_ints(node, "starts").unwrap_or_default(),
            attr_ints(node, "ends").unwrap_or_default(),
            attr_ints(node, "axes"),
            None,
        )
    } else {
        let get = |i: usize, what: &str| -> Result<Vec<i64>> {
            let name = node.input.get(i).map(String::as_str).unwrap_or("");
            Ok(imp.constant(name, label, what)?.i64s())
        };
        (
            get(1, "starts")?,
            get(2, "ends")?,
            imp.optional_const(node, 3).map(|c| c.i64s()),
            imp.optional_const(node, 4).map(|c| c.i64s()),
        )
    };
    let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err(imp.err(format!(
            "node {label}: starts, ends, axes and steps have different lengths"
        )));
    }
    let mut first = vec![0i64; r];
    let mut step = vec![1i64; r];
    let mut out = xs.clone();
    for (j, &a) in axes.iter().enumerate() {
        let a = norm_axis(a, r as i64)
            .ok_or_else(|| imp.err(format!("node {label}: slice axis {a} out of range")))?;
        if steps[j] == 0 {
            return Err(imp.err(format!("node {label}: a slice step is 0")));
        }
        let (s, n) = slice_axis(xs[a], starts[j], ends[j], steps[j]);
        (first[a], step[a], out[a]) = (s, steps[j], n);
    }
    imp.selection_shape(label, &out)?;
    let index = gather_index(&out, &xs, |o, i| {
        for k in 0..r {
            i[k] = (first[k] + o[k] as i64 * step[k]) as usize;
        }
    });
    Ok(vec![(out, index)])
}

/// `Split(x, split)` along `axis`: one selection per output (sizes from the `split` input
/// or attribute, else equal parts, the last one smaller when `num_outputs` does not divide).
fn split_plan(imp: &mut Importer, node: &NodeProto, label: &str, xs: Vec<usize>) -> Result<Plan> {
    let r = xs.len();
    let a = norm_axis(attr_int(node, "axis", 0), r as i64)
        .ok_or_else(|| imp.err(format!("node {label}: split axis out of range")))?;
    let parts = node.output.len();
    let sizes: Vec<i64> = match (imp.optional_const(node, 1), attr_ints(node, "split")) {
        (Some(c), _) => c.i64s(),
        (None, Some(s)) => s,
        (None, None) => {
            let each = xs[a].div_ceil(parts.max(1));
            (0..parts)
                .map(|k| each.min(xs[a].saturating_sub(k * each)) as i64)
                .collect()
        }
    };
    if sizes.len() != parts
        || sizes.iter().any(|&s| s <= 0)
        || sizes.iter().sum::<i64>() != xs[a] as i64
    {
        return Err(imp.err(format!(
            "node {label}: split sizes {sizes:?} do not divide axis {a} of {xs:?} into {parts} parts"
        )));
    }
    let mut offset = 0usize;
    let mut plan = Vec::with_capacity(parts);
    for &size in &sizes {
        let mut out = xs.clone();
        out[a] = size as usize;
        imp.selection_shape(label, &out)?;
        let index = gather_index(&out, &xs, |o, i| {
            i.copy_from_slice(o);
            i[a] += offset;
        });
        plan.push((out, index));
        offset += size as usize;
    }
    Ok(plan)
}

/// `Gather(x, indices)` with constant indices along `axis`.
fn gather_plan(imp: &mut Importer, node: &NodeProto, label: &str, xs: Vec<usize>) -> Result<Plan> {
    let r = xs.len();
    let a = norm_axis(attr_int(node, "axis", 0), r as i64)
        .ok_or_else(|| imp.err(format!("node {label}: gather axis out of range")))?;
    let name = node.input.get(1).map(String::as_str).unwrap_or("");
    let c = imp.constant(name, label, "indices")?;
    let (idims, raw) = (c.dims.clone(), c.i64s());
    let n = xs[a] as i64;
    let indices: Vec<usize> = raw
        .iter()
        .map(|&v| {
            let v = if v < 0 { v + n } else { v };
            (0..n).contains(&v).then_some(v as usize)
        })
        .collect::<Option<_>>()
        .ok_or_else(|| {
            imp.err(format!(
                "node {label}: an index is out of range for axis {a} of size {n}"
            ))
        })?;
    let out: Vec<usize> = xs[..a]
        .iter()
        .chain(&idims)
        .chain(&xs[a + 1..])
        .copied()
        .collect();
    imp.selection_shape(label, &out)?;
    let q = idims.len();
    let index = gather_index(&out, &xs, |o, i| {
        i[..a].copy_from_slice(&o[..a]);
        let flat = o[a..a + q]
            .iter()
            .zip(&idims)
            .fold(0usize, |acc, (&v, &d)| acc * d + v);
        i[a] = indices[flat];
        i[a + 1..].copy_from_slice(&o[a + q..]);
    });
    Ok(vec![(out, index)])
}

/// `GatherND(x, indices)` with constant indices (AdaptiveAvgPool exports): each index
/// tuple (the last axis of `indices`, after `batch_dims` shared leading axes) picks a slice.
fn gather_nd_plan(
    imp: &mut Importer,
    node: &NodeProto,
    label: &str,
    xs: Vec<usize>,
) -> Result<Plan> {
    let name = node.input.get(1).map(String::as_str).unwrap_or("");
    let c = imp.constant(name, label, "indices")?;
    let (idims, raw) = (c.dims.clone(), c.i64s());
    let b = attr_int(node, "batch_dims", 0).max(0) as usize;
    let q = idims.len();
    let k = idims.last().copied().unwrap_or(0);
    if q < 1 || b >= q || b + k > xs.len() || idims[..b] != xs[..b] {
        return Err(imp.err(format!(
            "node {label}: indices {idims:?} (batch_dims {b}) do not fit the input {xs:?}"
        )));
    }
    let out: Vec<usize> = xs[..b]
        .iter()
        .chain(&idims[b..q - 1])
        .chain(&xs[b + k..])
        .copied()
        .collect();
    // Each index tuple checked (negative ones counted from the end).
    let mut tuples = Vec::with_capacity(raw.len());
    for (j, &v) in raw.iter().enumerate() {
        let n = xs[b + j % k] as i64;
        let v = if v < 0 { v + n } else { v };
        if !(0..n).contains(&v) {
            return Err(imp.err(format!(
                "node {label}: index {v} out of range for axis {} of {xs:?}",
                b + j % k
            )));
        }
        tuples.push(v as usize);
    }
    imp.selection_shape(label, &out)?;
    let positions = q - 1 - b;
    let index = gather_index(&out, &xs, |o, i| {
        i[..b].copy_from_slice(&o[..b]);
        // The flat position of the tuple among indices[batch…, positions…].
        let mut t = 0usize;
        for (a, &oa) in o.iter().enumerate().take(b + positions) {
            t = t * idims[a] + oa;
        }
        i[b..b + k].copy_from_slice(&tuples[t * k..(t + 1) * k]);
        i[b + k..].copy_from_slice(&o[b + positions..]);
    });
    Ok(vec![(out, index)])
}

/// `Where(condition, a, b)` with a constant condition and one activation branch (PyTorch's
/// `masked_fill` in adaptive pooling exports): a selection of the activation where it is
/// chosen, the constant elsewhere (a zero fill plus a shift). Constant ≤ 1.
pub(super) fn where_(imp: &mut Importer, node: &NodeProto, label: &str) -> Result<()> {
    let get = |i: usize| node.input.get(i).map(String::as_str).unwrap_or("");
    let cond = imp.constant(get(0), label, "condition")?.clone();
    let (pick_a, x, other) = match (imp.values.get(get(1)), imp.values.get(get(2))) {
        (Some(&x), None) => (true, x, imp.constant(get(2), label, "branch")?.clone()),
        (None, Some(&x)) => (false, x, imp.constant(get(1), label, "branch")?.clone()),
        _ => {
            return Err(imp.err(format!(
                "node {label}: Where between two activations is not supported"
            )))
        }
    };
    let xs = imp.shape_of(x);
    let out = super::const_eval::broadcast_dims(
        &super::const_eval::broadcast_dims(&cond.dims, &xs)?,
        &other.dims,
    )
    .map_err(|e| imp.err(format!("node {label}: {e}")))?;
    if out != xs {
        return Err(imp.err(format!(
            "node {label}: Where broadcasts the activation {xs:?} to {out:?}, which is not supported"
        )));
    }
    imp.selection_shape(label, &out)?;
    let c = imp.broadcast(&cond.dims, &cond.f64s(), &out, label)?;
    let o = imp.broadcast(&other.dims, &other.f64s(), &out, label)?;
    let n: usize = out.iter().product();
    let chosen = |i: usize| (c.get(i) != 0.0) == pick_a;
    let index: Vec<u32> = (0..n)
        .map(|i| if chosen(i) { i as u32 } else { u32::MAX })
        .collect();
    let shift: Vec<f64> = (0..n)
        .map(|i| if chosen(i) { 0.0 } else { o.get(i) })
        .collect();
    let gather = Gather {
        kind: "Where",
        index,
        fill: 0.0,
        shape: out.clone(),
    };
    let g = imp.add_node(
        &format!("{}/select", node.output[0]),
        label,
        "Where",
        gather,
        &[x],
    )?;
    let op = crate::network::ops::Affine::shift_by(shift);
    imp.push(node, label, "Where", op, &[g])
}

/// `Expand(x, shape)`: numpy broadcasting to `shape`.
fn expand_plan(imp: &mut Importer, node: &NodeProto, label: &str, xs: Vec<usize>) -> Result<Plan> {
    let name = node.input.get(1).map(String::as_str).unwrap_or("");
    let target = imp.constant(name, label, "shape")?.i64s();
    let r = xs.len().max(target.len());
    let pad = |s: &[i64]| -> Vec<i64> {
        let mut v = vec![1i64; r - s.len()];
        v.extend_from_slice(s);
        v
    };
    let xi: Vec<i64> = xs.iter().map(|&d| d as i64).collect();
    let (xp, tp) = (pad(&xi), pad(&target));
    let mut out = Vec::with_capacity(r);
    for k in 0..r {
        out.push(match (xp[k], tp[k]) {
            (a, b) if a == b || b == 1 => a as usize,
            (1, b) if b > 0 => b as usize,
            _ => {
                return Err(imp.err(format!(
                    "node {label}: shape {target:?} does not broadcast with {xs:?}"
                )))
            }
        });
    }
    imp.selection_shape(label, &out)?;
    let xpu: Vec<usize> = xp.iter().map(|&d| d as usize).collect();
    let index = gather_index(&out, &xpu, |o, i| {
        for k in 0..r {
            i[k] = if xpu[k] == 1 { 0 } else { o[k] };
        }
    });
    Ok(vec![(out, index)])
}

/// `Tile(x, repeats)`.
fn tile_plan(imp: &mut Importer, node: &NodeProto, label: &str, xs: Vec<usize>) -> Result<Plan> {
    let name = node.input.get(1).map(String::as_str).unwrap_or("");
    let reps = imp.constant(name, label, "repeats")?.i64s();
    if reps.len() != xs.len() || reps.iter().any(|&v| v < 1) {
        return Err(imp.err(format!(
            "node {label}: repeats {reps:?} must be {} values ≥ 1",
            xs.len()
        )));
    }
    let out: Option<Vec<usize>> = xs
        .iter()
        .zip(&reps)
        .map(|(&d, &k)| d.checked_mul(usize::try_from(k).ok()?))
        .collect();
    let out = out.ok_or_else(|| imp.err(format!("node {label}: repeats {reps:?} overflow")))?;
    imp.selection_shape(label, &out)?;
    let index = gather_index(&out, &xs, |o, i| {
        for k in 0..o.len() {
            i[k] = o[k] % xs[k];
        }
    });
    Ok(vec![(out, index)])
}

/// `DepthToSpace` (modes DCR and CRD) and `SpaceToDepth` on `(N, C, H, W)`.
fn depth_space_plan(
    imp: &mut Importer,
    node: &NodeProto,
    label: &str,
    xs: Vec<usize>,
) -> Result<Plan> {
    let b = attr_int(node, "blocksize", 0);
    let to_space = node.op_type == "DepthToSpace";
    let ok = xs.len() == 4
        && (1..=1 << 12).contains(&b)
        && if to_space {
            xs[1].is_multiple_of((b * b) as usize)
        } else {
            xs[2].is_multiple_of(b as usize) && xs[3].is_multiple_of(b as usize)
        };
    if !ok {
        return Err(imp.err(format!(
            "node {label}: blocksize {b} does not fit the input {xs:?}"
        )));
    }
    let b = b as usize;
    let crd = attr_string(node, "mode").as_deref() == Some("CRD");
    let out = if to_space {
        vec![xs[0], xs[1] / (b * b), xs[2] * b, xs[3] * b]
    } else {
        vec![xs[0], xs[1] * b * b, xs[2] / b, xs[3] / b]
    };
    imp.selection_shape(label, &out)?;
    let index = if to_space {
        let c_out = out[1];
        gather_index(&out, &xs, |o, i| {
            let (bh, bw) = (o[2] % b, o[3] % b);
            i[0] = o[0];
            i[1] = if crd {
                o[1] * b * b + bh * b + bw
            } else {
                (bh * b + bw) * c_out + o[1]
            };
            i[2] = o[2] / b;
            i[3] = o[3] / b;
        })
    } else {
        let c_in = xs[1];
        gather_index(&out, &xs, |o, i| {
            let (blk, c) = (o[1] / c_in, o[1] % c_in);
            i[0] = o[0];
            i[1] = c;
            i[2] = o[2] * b + blk / b;
            i[3] = o[3] * b + blk % b;
        })
    };
    Ok(vec![(out, index)])
}

/// How `Resize` maps an output coordinate back to the input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum CoordinateMode {
    HalfPixel,
    PytorchHalfPixel,
    AlignCorners,
    Asymmetric,
    TfHalfPixelForNn,
}

impl CoordinateMode {
    pub(super) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "half_pixel" => Self::HalfPixel,
            "pytorch_half_pixel" => Self::PytorchHalfPixel,
            "align_corners" => Self::AlignCorners,
            "asymmetric" => Self::Asymmetric,
            "tf_half_pixel_for_nn" => Self::TfHalfPixelForNn,
            _ => return None,
        })
    }

    /// The input coordinate of output coordinate `o` on an axis resized from `n_in` to
    /// `n_out` with scale `scale`.
    pub(super) fn source(self, o: usize, n_in: usize, n_out: usize, scale: f64) -> f64 {
        let o = o as f64;
        match self {
            Self::HalfPixel => (o + 0.5) / scale - 0.5,
            Self::PytorchHalfPixel if n_out > 1 => (o + 0.5) / scale - 0.5,
            Self::PytorchHalfPixel => 0.0,
            Self::AlignCorners if n_out > 1 => o * (n_in as f64 - 1.0) / (n_out as f64 - 1.0),
            Self::AlignCorners => 0.0,
            Self::Asymmetric => o / scale,
            Self::TfHalfPixelForNn => (o + 0.5) / scale,
        }
    }
}

/// The nearest input element of input coordinate `c` (ONNX `nearest_mode`), clamped.
fn nearest(c: f64, n_in: usize, mode: &str) -> usize {
    let i = match mode {
        "floor" => c.floor(),
        "ceil" => c.ceil(),
        "round_prefer_ceil" => (c + 0.5).floor(),
        // round_prefer_floor, the default.
        _ => (c - 0.5).ceil(),
    };
    i.clamp(0.0, n_in as f64 - 1.0) as usize
}

/// Per-axis output sizes and scales of a `Resize`/`Upsample` (scales or sizes given).
pub(super) fn resize_geometry(
    imp: &Importer,
    node: &NodeProto,
    label: &str,
    xs: &[usize],
) -> Result<(Vec<usize>, Vec<f64>)> {
    let r = xs.len();
    let (scales, sizes): (Option<Vec<f64>>, Option<Vec<i64>>) = if node.op_type == "Upsample" {
        let s = if imp.opset < 9 {
            super::attrs::find_attr(node, "scales")
                .map(|a| a.floats.iter().map(|&v| v as f64).collect())
        } else {
            imp.optional_const(node, 1).map(|c| c.f64s())
        };
        (s, None)
    } else if imp.opset < 11 {
        (imp.optional_const(node, 1).map(|c| c.f64s()), None)
    } else {
        (
            imp.optional_const(node, 2)
                .map(|c| c.f64s())
                .filter(|s| !s.is_empty()),
            imp.optional_const(node, 3)
                .map(|c| c.i64s())
                .filter(|s| !s.is_empty()),
        )
    };
    if attr_ints(node, "axes").is_some() {
        return Err(imp.err(format!(
            "node {label}: Resize with an 'axes' attribute is not supported"
        )));
    }
    let bad = || imp.err(format!("node {label}: Resize needs {r} scales or sizes"));
    match (scales, sizes) {
        (_, Some(sz)) => {
            if sz.len() != r || sz.iter().any(|&v| !(1..=1 << 24).contains(&v)) {
                return Err(bad());
            }
            let out: Vec<usize> = sz.iter().map(|&v| v as usize).collect();
            let scales = out
                .iter()
                .zip(xs)
                .map(|(&o, &i)| o as f64 / i as f64)
                .collect();
            Ok((out, scales))
        }
        (Some(sc), None) => {
            if sc.len() != r || sc.iter().any(|&v| !(v.is_finite() && v > 0.0 && v <= 1e4)) {
                return Err(bad());
            }
            let out = xs
                .iter()
                .zip(&sc)
                .map(|(&d, &s)| ((d as f64 * s).floor() as usize).max(1))
                .collect();
            Ok((out, sc))
        }
        (None, None) => Err(bad()),
    }
}

/// `Resize` and `Upsample` in mode `nearest` (the linear and cubic modes are refused with a
/// clear message).
pub(super) fn resize(imp: &mut Importer, node: &NodeProto, label: &str) -> Result<()> {
    let (x, xs) = imp.main_input(node, label)?;
    let mode = attr_string(node, "mode").unwrap_or_else(|| "nearest".into());
    if mode != "nearest" {
        return super::interpolate::linear_resize(imp, node, label, x, &xs, &mode);
    }
    let (out, scales) = resize_geometry(imp, node, label, &xs)?;
    let default_ct = if node.op_type == "Upsample" || imp.opset < 11 {
        "asymmetric"
    } else {
        "half_pixel"
    };
    let ct =
        attr_string(node, "coordinate_transformation_mode").unwrap_or_else(|| default_ct.into());
    let ct = CoordinateMode::parse(&ct).ok_or_else(|| {
        imp.err(format!(
            "node {label}: coordinate_transformation_mode '{ct}' is not supported"
        ))
    })?;
    let nearest_mode = if node.op_type == "Upsample" || imp.opset < 11 {
        "floor".to_string()
    } else {
        attr_string(node, "nearest_mode").unwrap_or_else(|| "round_prefer_floor".into())
    };
    imp.selection_shape(label, &out)?;
    let maps: Vec<Vec<usize>> = (0..xs.len())
        .map(|k| {
            (0..out[k])
                .map(|o| nearest(ct.source(o, xs[k], out[k], scales[k]), xs[k], &nearest_mode))
                .collect()
        })
        .collect();
    let index = gather_index(&out, &xs, |o, i| {
        for k in 0..o.len() {
            i[k] = maps[k][o[k]];
        }
    });
    let kind = if node.op_type == "Upsample" {
        "Upsample"
    } else {
        "Resize"
    };
    imp.push_select(node, 0, label, kind, x, (out, index))
}

/// A reshape that no ONNX output names (a step of a longer lowering).
pub(super) fn add_reshape(
    imp: &mut Importer,
    name: &str,
    label: &str,
    x: ValueId,
    shape: Vec<usize>,
) -> Result<ValueId> {
    imp.add_node(name, label, "Reshape", Reshape(shape), &[x])
}
