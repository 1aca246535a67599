//! `LayerNormalization`, `InstanceNormalization` and `GroupNormalization`, lowered to
//! [`Normalize`] over consecutive groups of elements (see its proof of the constant
//! `max|γ|/√ε`).

use super::attrs::{attr_float, attr_int, norm_axis};
use super::importer::Importer;
use super::proto::NodeProto;
use crate::error::Result;
use crate::network::ops::{Broadcast, Normalize};

impl Importer {
    /// The constant input `i` (`role`), or `default` everywhere when it is absent.
    fn param(
        &self,
        node: &NodeProto,
        i: usize,
        label: &str,
        role: &str,
    ) -> Result<Option<Vec<f64>>> {
        match node.input.get(i).filter(|n| !n.is_empty()) {
            None => Ok(None),
            Some(name) => Ok(Some(self.constant(name, label, role)?.f64s())),
        }
    }

    /// A per-group or per-channel parameter of `(N, C, …)` as a broadcast: `len` values,
    /// each repeated over `inner` elements.
    fn per_block(
        &self,
        label: &str,
        what: &str,
        v: Vec<f64>,
        blocks: &[(usize, usize)],
    ) -> Result<Broadcast> {
        for &(len, inner) in blocks {
            if v.len() == len {
                return Ok(Broadcast { values: v, inner });
            }
        }
        Err(self.err(format!(
            "node {label}: {what} has {} values, which fits none of {:?}",
            v.len(),
            blocks.iter().map(|b| b.0).collect::<Vec<_>>()
        )))
    }

    fn push_normalize(&mut self, node: &NodeProto, label: &str, op: Normalize) -> Result<()> {
        let kind = op.kind;
        if op.eps.is_nan() || op.eps <= 0.0 {
            return Err(self.err(format!(
                "node {label}: epsilon = {} must be > 0 (the constant is max|γ|/√ε)",
                op.eps
            )));
        }
        self.unary(node, label, op)
            .map_err(|e| self.err(format!("node {label} ({kind}): {e}")))
    }
}

/// `LayerNormalization(x, scale, bias)` over the axes from `axis` on.
pub(super) fn layer_norm(imp: &mut Importer, node: &NodeProto, label: &str) -> Result<()> {
    let (_, xs) = imp.main_input(node, label)?;
    let r = xs.len() as i64;
    let axis = norm_axis(attr_int(node, "axis", -1), r)
        .ok_or_else(|| imp.err(format!("node {label}: axis out of range for rank {r}")))?;
    let eps = attr_float(node, "epsilon", 1e-5);
    let group: usize = xs[axis..].iter().product();
    let mut bc = |i: usize, role: &str, default: f64| -> Result<Broadcast> {
        let dims = node
            .input
            .get(i)
            .and_then(|n| imp.consts.get(n))
            .map(|c| c.dims.clone());
        match (imp.param(node, i, label, role)?, dims) {
            (Some(v), Some(d)) => imp.broadcast(&d, &v, &xs, label),
            _ => Ok(Broadcast::scalar(default)),
        }
    };
    let scale = bc(1, "scale", 1.0)?;
    let shift = bc(2, "bias", 0.0)?;
    let op = Normalize {
        kind: "LayerNormalization",
        group,
        eps,
        scale,
        shift,
    };
    imp.push_normalize(node, label, op)
}

/// `InstanceNormalization(x, scale, bias)` on `(N, C, …)`: each channel on its own.
pub(super) fn instance_norm(imp: &mut Importer, node: &NodeProto, label: &str) -> Result<()> {
    let (_, xs) = imp.main_input(node, label)?;
    if xs.len() < 3 {
        return Err(imp.err(format!("node {label}: needs a (N, C, …) input, got {xs:?}")));
    }
    let spatial: usize = xs[2..].iter().product();
    let c = xs[1];
    let eps = attr_float(node, "epsilon", 1e-5);
    let scale = imp.param(node, 1, label, "scale")?.unwrap_or(vec![1.0; c]);
    let shift = imp.param(node, 2, label, "bias")?.unwrap_or(vec![0.0; c]);
    let op = Normalize {
        kind: "InstanceNormalization",
        group: spatial,
        eps,
        scale: imp.per_block(label, "scale", scale, &[(c, spatial)])?,
        shift: imp.per_block(label, "bias", shift, &[(c, spatial)])?,
    };
    imp.push_normalize(node, label, op)
}

/// `GroupNormalization(x, scale, bias)` on `(N, C, …)` with `num_groups` groups of channels
/// (parameters per group before opset 21, per channel after).
pub(super) fn group_norm(imp: &mut Importer, node: &NodeProto, label: &str) -> Result<()> {
    let (_, xs) = imp.main_input(node, label)?;
    let g = attr_int(node, "num_groups", 0);
    if xs.len() < 3 || g < 1 || !xs[1].is_multiple_of(g as usize) {
        return Err(imp.err(format!(
            "node {label}: num_groups = {g} does not divide the channels of {xs:?}"
        )));
    }
    let g = g as usize;
    let spatial: usize = xs[2..].iter().product();
    let c = xs[1];
    let eps = attr_float(node, "epsilon", 1e-5);
    let blocks = [(c, spatial), (g, c / g * spatial)];
    let scale = imp.param(node, 1, label, "scale")?.unwrap_or(vec![1.0; c]);
    let shift = imp.param(node, 2, label, "bias")?.unwrap_or(vec![0.0; c]);
    let op = Normalize {
        kind: "GroupNormalization",
        group: c / g * spatial,
        eps,
        scale: imp.per_block(label, "scale", scale, &blocks)?,
        shift: imp.per_block(label, "bias", shift, &blocks)?,
    };
    imp.push_normalize(node, label, op)
}
