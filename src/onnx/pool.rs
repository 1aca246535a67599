//! `MaxPool`, `AveragePool`, the global pools and `ReduceMean`.

use super::attrs::{attr_int, attr_ints, norm_axis, pair};
use super::importer::Importer;
use super::proto::NodeProto;
use crate::error::Result;
use crate::network::ops::{AvgPool, GlobalMaxPool, MaxPool, Pool2d, ReduceMean, Reshape};
use crate::network::ValueId;

/// `MaxPool` and `AveragePool` on `(N, C, H, W)`.
pub(super) fn pool(imp: &mut Importer, node: &NodeProto, label: &str) -> Result<()> {
    let (x, xs) = imp.main_input(node, label)?;
    imp.pool(node, label, x, &xs)
}

/// `GlobalAveragePool`: the mean over every spatial axis.
pub(super) fn global_average_pool(imp: &mut Importer, node: &NodeProto, label: &str) -> Result<()> {
    let (x, xs) = imp.main_input(node, label)?;
    if xs.len() < 3 {
        return Err(imp.err(format!(
            "node {label}: needs a (N, C, spatial…) input, got {xs:?}"
        )));
    }
    let axes = (2..xs.len()).collect();
    let op = ReduceMean {
        axes,
        keepdims: true,
    };
    imp.push(node, label, "GlobalAveragePool", op, &[x])
}

/// `GlobalMaxPool`.
pub(super) fn global_max_pool(imp: &mut Importer, node: &NodeProto, label: &str) -> Result<()> {
    imp.unary(node, label, GlobalMaxPool)
}

/// `ReduceMean`: axes as an attribute before opset 18, as a constant input after.
pub(super) fn reduce_mean(imp: &mut Importer, node: &NodeProto, label: &str) -> Result<()> {
    let (x, xs) = imp.main_input(node, label)?;
    let r = xs.len() as i64;
    let axes: Vec<i64> = if imp.opset >= 18 {
        match imp.optional_const(node, 1) {
            Some(c) => c.i64s(),
            None if node.input.get(1).is_some_and(|n| !n.is_empty()) => {
                return Err(imp.err(format!("node {label}: axes input must be a constant")))
            }
            None => Vec::new(),
        }
    } else {
        attr_ints(node, "axes").unwrap_or_default()
    };
    let keepdims = attr_int(node, "keepdims", 1) != 0;
    let mut axes: Vec<usize> = axes
        .iter()
        .map(|&a| {
            norm_axis(a, r)
                .ok_or_else(|| imp.err(format!("node {label}: axis {a} out of range for rank {r}")))
        })
        .collect::<Result<_>>()?;
    if axes.is_empty() {
        if attr_int(node, "noop_with_empty_axes", 0) != 0 {
            return imp.push(node, label, "Identity", Reshape(xs.clone()), &[x]);
        }
        axes = (0..xs.len()).collect();
    }
    axes.sort_unstable();
    axes.dedup();
    imp.push(
        node,
        label,
        "ReduceMean",
        ReduceMean { axes, keepdims },
        &[x],
    )
}

impl Importer {
    fn pool(&mut self, node: &NodeProto, label: &str, x: ValueId, xs: &[usize]) -> Result<()> {
        if xs.len() != 4 {
            return Err(self.err(format!(
                "node {label}: only 2-D pooling on (N, C, H, W) is supported; input {xs:?}"
            )));
        }
        let k = attr_ints(node, "kernel_shape")
            .ok_or_else(|| self.err(format!("node {label}: kernel_shape is required")))?;
        if k.len() != 2 || k.iter().any(|&v| v < 1) {
            return Err(self.err(format!(
                "node {label}: kernel_shape {k:?} must be two values ≥ 1"
            )));
        }
        let kernel = [k[0] as usize, k[1] as usize];
        let stride = pair(node, "strides").map_err(|e| self.err(format!("node {label}: {e}")))?;
        let dilation =
            pair(node, "dilations").map_err(|e| self.err(format!("node {label}: {e}")))?;
        let pads = self.spatial_pads(node, label, [xs[2], xs[3]], kernel, stride, dilation)?;
        let pool = Pool2d {
            kernel,
            stride,
            pads,
            dilation,
            ceil_mode: attr_int(node, "ceil_mode", 0) != 0,
        };
        if node.op_type == "MaxPool" {
            self.push(node, label, "MaxPool", MaxPool(pool), &[x])
        } else {
            let count_include_pad = attr_int(node, "count_include_pad", 0) != 0;
            self.push(
                node,
                label,
                "AveragePool",
                AvgPool {
                    pool,
                    count_include_pad,
                },
                &[x],
            )
        }
    }
}
