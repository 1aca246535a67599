//! Operators that move elements: `Flatten`, `Reshape`, `Squeeze`, `Unsqueeze`, `Identity`,
//! `Dropout` (inference), `Concat` and `Pad` (every mode).

use super::attrs::{attr_float, attr_int, attr_ints, attr_string, norm_axis};
use super::importer::{Importer, PadInfo};
use super::proto::NodeProto;
use crate::conv::PaddingMode;
use crate::error::{Error, Result};
use crate::network::ops::{Concat, Gather, Operation, Reshape};
use crate::network::ValueId;
use crate::network::{MAX_RANK, MAX_TENSOR_ELEMENTS};

/// `Flatten(axis = 1)`: `(d₀…d_{a−1}, d_a…)` → two axes.
pub(super) fn flatten(imp: &mut Importer, node: &NodeProto, label: &str) -> Result<()> {
    let (x, xs) = imp.main_input(node, label)?;
    let r = xs.len() as i64;
    let a = attr_int(node, "axis", 1);
    let a = if a < 0 { a + r } else { a };
    if !(0..=r).contains(&a) {
        return Err(imp.err(format!("node {label}: axis {a} out of range for rank {r}")));
    }
    let a = a as usize;
    let shape = vec![xs[..a].iter().product(), xs[a..].iter().product()];
    imp.push(node, label, "Flatten", Reshape(shape), &[x])
}

/// `Reshape(x, shape)` with a constant target (`0` copies an axis, `-1` is inferred).
pub(super) fn reshape(imp: &mut Importer, node: &NodeProto, label: &str) -> Result<()> {
    let (x, xs) = imp.main_input(node, label)?;
    let name = node.input.get(1).map(String::as_str).unwrap_or("");
    let s = imp.constant(name, label, "shape")?.i64s();
    let allowzero = attr_int(node, "allowzero", 0) != 0;
    let shape =
        resolve_reshape(&xs, &s, allowzero).map_err(|m| imp.err(format!("node {label}: {m}")))?;
    imp.push(node, label, "Reshape", Reshape(shape), &[x])
}

/// `Squeeze` and `Unsqueeze`: axes as an attribute before opset 13, as an input after.
pub(super) fn squeeze(imp: &mut Importer, node: &NodeProto, label: &str) -> Result<()> {
    let (x, xs) = imp.main_input(node, label)?;
    let axes = if imp.opset >= 13 {
        imp.optional_const(node, 1).map(|c| c.i64s())
    } else {
        attr_ints(node, "axes")
    };
    let unsqueeze = node.op_type == "Unsqueeze";
    let shape = squeeze_shape(&xs, axes.as_deref(), unsqueeze)
        .map_err(|m| imp.err(format!("node {label}: {m}")))?;
    imp.push(node, label, &node.op_type.clone(), Reshape(shape), &[x])
}

/// `Identity` and `Dropout` at inference: the same tensor.
pub(super) fn identity(imp: &mut Importer, node: &NodeProto, label: &str) -> Result<()> {
    let (_, xs) = imp.main_input(node, label)?;
    imp.unary(node, label, Reshape(xs))
}

/// `Concat` of activations along an axis: one selection when every input is a selection
/// of the same tensor, the second half of a MaxMin when its inputs are `Max(a, b)` and
/// `Min(a, b)`.
pub(super) fn concat(imp: &mut Importer, node: &NodeProto, label: &str) -> Result<()> {
    let axis_attr = attr_int(node, "axis", 1);
    let rank = |imp: &Importer, v: ValueId| imp.shape_of(v).len() as i64;
    let axis_of = |imp: &Importer, r: i64| {
        norm_axis(axis_attr, r).ok_or_else(|| {
            imp.err(format!(
                "node {label}: Concat axis out of range for rank {r}"
            ))
        })
    };
    if node.input.is_empty() {
        return Err(imp.err(format!("node {label}: Concat without inputs")));
    }
    if let Some(first) = imp
        .graph
        .producer
        .get(&node.input[0])
        .and_then(|&k| imp.graph.nodes[k].1.first().cloned())
    {
        // A MaxMin: the rank is its inputs' (the Max/Min outputs were never made).
        if let Some(&v) = imp.values.get(&first) {
            let axis = axis_of(imp, rank(imp, v))?;
            if imp.max_min_concat(node, label, axis)? {
                return Ok(());
            }
        }
    }
    if node.input.iter().any(|n| !imp.values.contains_key(n)) {
        return imp.concat_with_constants(node, label, axis_attr);
    }
    let (_, xs) = imp.main_input(node, label)?;
    let axis = axis_of(imp, xs.len() as i64)?;
    let vs: Vec<ValueId> = node
        .input
        .iter()
        .map(|n| imp.var(n, label))
        .collect::<Result<_>>()?;
    let shapes: Vec<Vec<usize>> = vs.iter().map(|&v| imp.shape_of(v)).collect();
    let refs: Vec<&[usize]> = shapes.iter().map(Vec::as_slice).collect();
    let out = Concat(axis)
        .output_shape(&refs)
        .map_err(|e| imp.err(format!("node {label}: {e}")))?;
    match imp.concat_as_selection(label, &vs, axis, &out)? {
        Some((op, root)) => imp.push(node, label, "Concat", op, &[root]),
        None => imp.push(node, label, "Concat", Concat(axis), &vs),
    }
}

impl Importer {
    /// `Concat` of activations and constants (ViT's class token): the constants' places
    /// filled with zeros that read nothing (a [`Gather`] with no source, constant 0), then
    /// the constants added as a shift. Constant `√(Σ L_i²)` over the activations.
    fn concat_with_constants(&mut self, node: &NodeProto, label: &str, axis: i64) -> Result<()> {
        let Some(x) = node.input.iter().find_map(|n| self.values.get(n).copied()) else {
            return Err(self.err(format!("node {label}: Concat of constants only")));
        };
        let mut parts = Vec::with_capacity(node.input.len());
        let mut constants = Vec::with_capacity(node.input.len());
        for (k, name) in node.input.iter().enumerate() {
            if let Some(&v) = self.values.get(name) {
                parts.push(v);
                constants.push(None);
                continue;
            }
            let c = self.constant(name, label, "input")?.clone();
            let shape = c.dims.clone();
            self.selection_shape(label, &shape)?;
            let zeros = Gather {
                kind: "Concat",
                index: vec![u32::MAX; c.len()],
                fill: 0.0,
                shape,
            };
            let z = self.add_node(
                &format!("{}/const{k}", node.output[0]),
                label,
                "Concat",
                zeros,
                &[x],
            )?;
            parts.push(z);
            constants.push(Some(c.f64s()));
        }
        let shapes: Vec<Vec<usize>> = parts.iter().map(|&v| self.shape_of(v)).collect();
        let r = shapes[0].len() as i64;
        let axis = norm_axis(axis, r).ok_or_else(|| {
            self.err(format!(
                "node {label}: Concat axis out of range for rank {r}"
            ))
        })?;
        let refs: Vec<&[usize]> = shapes.iter().map(Vec::as_slice).collect();
        let out = Concat(axis)
            .output_shape(&refs)
            .map_err(|e| self.err(format!("node {label}: {e}")))?;
        let joined = self.add_node(
            &format!("{}/joined", node.output[0]),
            label,
            "Concat",
            Concat(axis),
            &parts,
        )?;
        // The shift: the constants in their places, zero elsewhere (the Concat layout).
        let outer: usize = out[..axis].iter().product();
        let mut shift = Vec::with_capacity(out.iter().product());
        for o in 0..outer {
            for (s, c) in shapes.iter().zip(&constants) {
                let b = s.iter().product::<usize>() / outer.max(1);
                match c {
                    Some(vals) => shift.extend_from_slice(&vals[o * b..(o + 1) * b]),
                    None => shift.extend(std::iter::repeat_n(0.0, b)),
                }
            }
        }
        let op = crate::network::ops::Affine::shift_by(shift);
        self.push(node, label, "Concat", op, &[joined])
    }
}

/// `Pad` in every mode, as a gather with a constant fill.
pub(super) fn pad(imp: &mut Importer, node: &NodeProto, label: &str) -> Result<()> {
    let (x, xs) = imp.main_input(node, label)?;
    imp.pad(node, label, x, &xs)
}

/// How `Pad` fills positions outside the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PadMode {
    Constant,
    Reflect,
    Edge,
    Wrap,
}

/// The source of every element of the padded tensor (`u32::MAX`: the constant fill).
fn pad_index(xs: &[usize], pads: &[i64], out: &[usize], mode: PadMode) -> Vec<u32> {
    let r = xs.len();
    let total: usize = out.iter().product();
    let mut index = Vec::with_capacity(total);
    let mut idx = vec![0usize; r];
    for _ in 0..total {
        let mut src = 0usize;
        let mut inside = true;
        for k in 0..r {
            let n = xs[k] as i64;
            let mut p = idx[k] as i64 - pads[k];
            if p < 0 || p >= n {
                match mode {
                    PadMode::Constant => inside = false,
                    PadMode::Reflect => p = if p < 0 { -p } else { 2 * (n - 1) - p },
                    PadMode::Edge => p = p.clamp(0, n - 1),
                    PadMode::Wrap => p = p.rem_euclid(n),
                }
            }
            src = src * xs[k] + p.clamp(0, n - 1) as usize;
        }
        index.push(if inside { src as u32 } else { u32::MAX });
        for k in (0..r).rev() {
            idx[k] += 1;
            if idx[k] < out[k] {
                break;
            }
            idx[k] = 0;
        }
    }
    index
}

impl Importer {
    fn pad(&mut self, node: &NodeProto, label: &str, x: ValueId, xs: &[usize]) -> Result<()> {
        let mode = attr_string(node, "mode").unwrap_or_else(|| "constant".into());
        let (pads, value) = self.pad_amounts(node, label, xs.len())?;
        let out = self.padded_shape(label, xs, &pads)?;
        let r = xs.len();
        if mode == "reflect" && (0..r).any(|k| pads[k].max(pads[k + r]) >= xs[k] as i64) {
            return Err(self.err(format!(
                "node {label}: reflect pads {pads:?} must be smaller than the input {xs:?}"
            )));
        }
        let mode = match mode.as_str() {
            "constant" => PadMode::Constant,
            "reflect" => PadMode::Reflect,
            "edge" => PadMode::Edge,
            "wrap" => PadMode::Wrap,
            other => {
                return Err(self.err(format!("node {label}: pad mode '{other}' is not supported")))
            }
        };
        let index = pad_index(xs, &pads, &out, mode);
        let op = Gather {
            kind: "Pad",
            index,
            fill: value,
            shape: out,
        };
        self.push(node, label, "Pad", op, &[x])?;
        // A spatial zero or wrap pad may merge into the conv that reads it.
        let spatial_only = r == 4
            && pads[..2].iter().chain(&pads[4..6]).all(|&p| p == 0)
            && pads.iter().all(|&p| p >= 0);
        let mode = match mode {
            PadMode::Constant => PaddingMode::Zeros,
            PadMode::Wrap => PaddingMode::Circular,
            _ => return Ok(()),
        };
        if spatial_only {
            let v = self.values[&node.output[0]];
            let spatial = [pads[2], pads[3], pads[6], pads[7]].map(|p| p as usize);
            let info = PadInfo {
                input: x,
                mode,
                zero_fill: value == 0.0,
                spatial,
            };
            self.pads.insert(v, info);
        }
        Ok(())
    }

    /// The pads `[begin per axis…, end per axis…]` (from the attribute before opset 11, from
    /// the constant inputs after, spread over `axes` when given) and the fill value.
    fn pad_amounts(&self, node: &NodeProto, label: &str, r: usize) -> Result<(Vec<i64>, f64)> {
        let (mut pads, value) = if self.opset < 11 {
            (
                attr_ints(node, "pads").unwrap_or_default(),
                attr_float(node, "value", 0.0),
            )
        } else {
            let name = node.input.get(1).map(String::as_str).unwrap_or("");
            let p = self.constant(name, label, "pads")?.i64s();
            let v = self
                .optional_const(node, 2)
                .map(|c| c.f64s().first().copied().unwrap_or(0.0))
                .unwrap_or(0.0);
            (p, v)
        };
        if let Some(axes) = self.optional_const(node, 3).map(|c| c.i64s()) {
            let mut full = vec![0i64; 2 * r];
            for (i, &a) in axes.iter().enumerate() {
                let a = norm_axis(a, r as i64)
                    .ok_or_else(|| self.err(format!("node {label}: pad axis {a} out of range")))?;
                full[a] = pads.get(i).copied().unwrap_or(0);
                full[a + r] = pads.get(i + axes.len()).copied().unwrap_or(0);
            }
            pads = full;
        }
        if pads.len() != 2 * r {
            return Err(self.err(format!(
                "node {label}: pads has {} values for a rank-{r} input (expected {})",
                pads.len(),
                2 * r
            )));
        }
        Ok((pads, value))
    }

    /// The padded shape, checked (no overflow, nothing empty, within the tensor limit), with
    /// the gather index it needs (4 bytes per element) charged.
    fn padded_shape(&mut self, label: &str, xs: &[usize], pads: &[i64]) -> Result<Vec<usize>> {
        let r = xs.len();
        let out: Vec<i64> = (0..r)
            .map(|k| {
                (xs[k] as i64)
                    .checked_add(pads[k])
                    .and_then(|d| d.checked_add(pads[k + r]))
                    .ok_or_else(|| {
                        self.err(format!(
                            "node {label}: pads {pads:?} overflow the shape {xs:?}"
                        ))
                    })
            })
            .collect::<Result<_>>()?;
        if out.iter().any(|&d| d <= 0) {
            return Err(self.err(format!(
                "node {label}: pads {pads:?} leave an empty tensor from {xs:?}"
            )));
        }
        let out: Vec<usize> = out.iter().map(|&d| d as usize).collect();
        let total = out
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .filter(|&t| t <= MAX_TENSOR_ELEMENTS)
            .ok_or_else(|| self.err(format!("node {label}: padded shape {out:?} is too large")))?;
        self.budget.charge(
            total as u128 * 4,
            &format!("node {label}: index of the padded shape {out:?}"),
        )?;
        Ok(out)
    }
}

pub(super) fn resolve_reshape(xs: &[usize], target: &[i64], allowzero: bool) -> Result<Vec<usize>> {
    let bad = |reason: String| Error::invalid("reshape target", format!("{target:?}"), &reason);
    if target.len() > MAX_RANK {
        return Err(bad(format!(
            "has rank {}, over the limit of {MAX_RANK}",
            target.len()
        )));
    }
    let n: usize = xs.iter().product();
    let mut out = Vec::with_capacity(target.len());
    let mut infer = None;
    for (k, &t) in target.iter().enumerate() {
        match t {
            -1 if infer.is_none() => {
                infer = Some(k);
                out.push(1);
            }
            0 if !allowzero => out.push(
                *xs.get(k)
                    .ok_or_else(|| bad(format!("copies axis {k} (0), which the input lacks")))?,
            ),
            t if t > 0 => out.push(t as usize),
            t => return Err(bad(format!("has an invalid entry {t}"))),
        }
    }
    let known: usize = out.iter().product();
    if let Some(k) = infer {
        if known == 0 || !n.is_multiple_of(known) {
            return Err(bad(format!("does not fit the input {xs:?}")));
        }
        out[k] = n / known;
    }
    if out.iter().product::<usize>() != n {
        return Err(bad(format!("does not fit the input {xs:?} ({n} elements)")));
    }
    Ok(out)
}

pub(super) fn squeeze_shape(
    xs: &[usize],
    axes: Option<&[i64]>,
    unsqueeze: bool,
) -> Result<Vec<usize>> {
    let bad = |reason: String| Error::invalid("axes", format!("{axes:?}"), &reason);
    if unsqueeze {
        let axes = axes.ok_or_else(|| bad("are required by Unsqueeze".into()))?;
        if xs.len() + axes.len() > MAX_RANK {
            return Err(bad(format!(
                "make rank {}, over the limit of {MAX_RANK}",
                xs.len() + axes.len()
            )));
        }
        let r = (xs.len() + axes.len()) as i64;
        let mut ax: Vec<usize> = axes
            .iter()
            .map(|&a| norm_axis(a, r).ok_or_else(|| bad(format!("axis {a} is out of range"))))
            .collect::<Result<_>>()?;
        ax.sort_unstable();
        let mut out = Vec::with_capacity(r as usize);
        let mut it = xs.iter();
        for k in 0..r as usize {
            if ax.contains(&k) {
                out.push(1);
            } else {
                out.push(*it.next().ok_or_else(|| bad("repeat an axis".into()))?);
            }
        }
        Ok(out)
    } else {
        let r = xs.len() as i64;
        let ax: Vec<usize> = match axes {
            Some(a) => a
                .iter()
                .map(|&a| norm_axis(a, r).ok_or_else(|| bad(format!("axis {a} is out of range"))))
                .collect::<Result<_>>()?,
            None => (0..xs.len()).filter(|&k| xs[k] == 1).collect(),
        };
        let mut ax = ax;
        ax.sort_unstable();
        ax.dedup();
        if let Some(&k) = ax.iter().find(|&&k| xs[k] != 1) {
            return Err(bad(format!(
                "select axis {k} of size {} (only axes of size 1 can be squeezed)",
                xs[k]
            )));
        }
        Ok(xs
            .iter()
            .enumerate()
            .filter(|(k, _)| !ax.contains(k))
            .map(|(_, &d)| d)
            .collect())
    }
}
