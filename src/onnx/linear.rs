//! Conv, Gemm and MatMul: the layers with weights. A standalone zero or wrap `Pad` read only
//! by a conv merges into it (wrap makes it circular).

use super::attrs::{attr_int, attr_ints, attr_string, pair};
use super::importer::Importer;
use super::proto::{AttributeProto, NodeProto};
use super::tensor::{transpose, Weights};
use crate::bound::round_to_f32;
use crate::conv::PaddingMode;
use crate::error::Result;
use crate::network::ops::{conv_for, Conv, ConvTranspose, Dense, Reshape};
use crate::network::ValueId;

/// `Conv` (2-D, or 1-D through a 2-D one of height 1).
pub(super) fn conv(imp: &mut Importer, node: &NodeProto, label: &str) -> Result<()> {
    let (x, xs) = imp.main_input(node, label)?;
    if xs.len() == 3 {
        return imp.as_2d(node, label, x, &xs, |imp, n, x, xs| {
            imp.conv(n, label, x, xs)
        });
    }
    imp.conv(node, label, x, &xs)
}

/// `ConvTranspose` (2-D, or 1-D through a 2-D one of height 1).
pub(super) fn conv_transpose(imp: &mut Importer, node: &NodeProto, label: &str) -> Result<()> {
    let (x, xs) = imp.main_input(node, label)?;
    if xs.len() == 3 {
        return imp.as_2d(node, label, x, &xs, |imp, n, x, xs| {
            imp.conv_transpose(n, label, x, xs)
        });
    }
    imp.conv_transpose(node, label, x, &xs)
}

/// A 1-D attribute as the 2-D one of a height-1 image: `[v] → [1, v]` (`[0, v]` for pads,
/// whose `[b, e]` become `[0, b, 0, e]`).
fn lift_attribute(a: &AttributeProto) -> AttributeProto {
    let mut lifted = a.clone();
    lifted.ints = match (a.name.as_str(), a.ints.as_slice()) {
        ("pads", [b, e]) => vec![0, *b, 0, *e],
        ("output_padding", [v]) => vec![0, *v],
        ("output_shape", [v]) => vec![1, *v],
        ("kernel_shape" | "strides" | "dilations", [v]) => vec![1, *v],
        _ => return lifted,
    };
    lifted
}

impl Importer {
    /// Runs a 2-D lowering `lower` on a 1-D node (`(N, C, L)` input, 3-D weight): the input
    /// viewed as `(N, C, 1, L)`, the weight as `(…, 1, K)`, the attributes lifted, and the
    /// output viewed back as `(N, C', L')`.
    fn as_2d(
        &mut self,
        node: &NodeProto,
        label: &str,
        x: ValueId,
        xs: &[usize],
        lower: impl FnOnce(&mut Importer, &NodeProto, ValueId, &[usize]) -> Result<()>,
    ) -> Result<()> {
        let w_name = node.input.get(1).map(String::as_str).unwrap_or("");
        let w = self.constant(w_name, label, "weight")?.clone();
        if w.dims.len() != 3 {
            return Err(self.err(format!(
                "node {label}: a 1-D {} needs a 3-D weight, got {:?}",
                node.op_type, w.dims
            )));
        }
        self.budget.charge(
            w.len() as u128 * 8,
            &format!("node {label}: 2-D view of weight '{w_name}'"),
        )?;
        let mut lifted = node.clone();
        let base = node.output[0].clone();
        lifted.input[0] = format!("{base}/2d_input");
        lifted.input[1] = format!("{base}/2d_weight");
        lifted.output = vec![format!("{base}/2d")];
        lifted.attribute = node.attribute.iter().map(lift_attribute).collect();
        let mut w2 = w;
        w2.dims.insert(2, 1);
        self.consts.insert(lifted.input[1].clone(), w2);
        let x4 = super::select::add_reshape(
            self,
            &lifted.input[0],
            label,
            x,
            vec![xs[0], xs[1], 1, xs[2]],
        )?;
        self.values.insert(lifted.input[0].clone(), x4);
        let shape4 = self.shape_of(x4);
        lower(self, &lifted, x4, &shape4)?;
        let y4 = self.values[&lifted.output[0]];
        let s = self.shape_of(y4);
        let kind = node.op_type.clone();
        self.push(node, label, &kind, Reshape(vec![s[0], s[1], s[3]]), &[y4])
    }

    /// `ConvTranspose(x, W, b)` on `(N, C, H, W)`: the adjoint of the conv from the output's
    /// shape to the input's.
    fn conv_transpose(
        &mut self,
        node: &NodeProto,
        label: &str,
        x: ValueId,
        xs: &[usize],
    ) -> Result<()> {
        let w_name = node.input.get(1).map(String::as_str).unwrap_or("");
        let w_dims = self.constant(w_name, label, "weight")?.dims.clone();
        if xs.len() != 4 || w_dims.len() != 4 {
            return Err(self.err(format!(
                "node {label}: ConvTranspose needs a (N, C, H, W) input and an IOHW weight; got {xs:?} and {w_dims:?}"
            )));
        }
        let groups = attr_int(node, "group", 1);
        if groups < 1 || w_dims[0] != xs[1] {
            return Err(self.err(format!(
                "node {label}: weight {w_dims:?} does not fit the input {xs:?} (group {groups})"
            )));
        }
        let groups = groups as usize;
        let kernel = [w_dims[2], w_dims[3]];
        let stride = pair(node, "strides").map_err(|e| self.err(format!("node {label}: {e}")))?;
        let dilation =
            pair(node, "dilations").map_err(|e| self.err(format!("node {label}: {e}")))?;
        let out_pad = attr_ints(node, "output_padding").unwrap_or_else(|| vec![0, 0]);
        if out_pad.len() != 2
            || (0..2).any(|a| out_pad[a] < 0 || out_pad[a] as usize >= stride[a].max(dilation[a]))
        {
            return Err(self.err(format!(
                "node {label}: output_padding {out_pad:?} must be below the stride or dilation"
            )));
        }
        // The full output size before pads are removed.
        let full: Vec<i64> = (0..2)
            .map(|a| {
                (stride[a] * (xs[2 + a] - 1) + dilation[a] * (kernel[a] - 1) + 1) as i64
                    + out_pad[a]
            })
            .collect();
        let auto = attr_string(node, "auto_pad").unwrap_or_else(|| "NOTSET".into());
        let pads: [i64; 4] = match (attr_ints(node, "output_shape"), auto.as_str()) {
            (Some(shape), mode) => {
                let shape = &shape[shape.len().saturating_sub(2)..];
                let total: Vec<i64> = (0..2)
                    .map(|a| full[a] - shape.get(a).copied().unwrap_or(0))
                    .collect();
                let split = |t: i64| {
                    if mode == "SAME_UPPER" {
                        (t / 2, t - t / 2)
                    } else {
                        (t - t / 2, t / 2)
                    }
                };
                let ((t0, b0), (t1, b1)) = (split(total[0]), split(total[1]));
                [t0, t1, b0, b1]
            }
            (None, "SAME_UPPER" | "SAME_LOWER") => {
                let total: Vec<i64> = (0..2)
                    .map(|a| full[a] - (xs[2 + a] * stride[a]) as i64)
                    .collect();
                let split = |t: i64| {
                    if auto == "SAME_UPPER" {
                        (t / 2, t - t / 2)
                    } else {
                        (t - t / 2, t / 2)
                    }
                };
                let ((t0, b0), (t1, b1)) = (split(total[0]), split(total[1]));
                [t0, t1, b0, b1]
            }
            (None, _) => {
                let p = attr_ints(node, "pads").unwrap_or_else(|| vec![0; 4]);
                if p.len() != 4 {
                    return Err(self.err(format!("node {label}: pads {p:?} must be 4 values")));
                }
                [p[0], p[1], p[2], p[3]]
            }
        };
        let out: Vec<i64> = (0..2).map(|a| full[a] - pads[a] - pads[a + 2]).collect();
        if pads.iter().any(|&p| p < 0) || out.iter().any(|&o| o < 1) {
            return Err(self.err(format!(
                "node {label}: pads {pads:?} do not fit the output size {full:?}"
            )));
        }
        let out_shape = [xs[0], w_dims[1] * groups, out[0] as usize, out[1] as usize];
        let pads = pads.map(|p| p as usize);
        let conv = conv_for(
            &out_shape,
            xs[1],
            kernel,
            stride,
            dilation,
            groups,
            pads,
            PaddingMode::Zeros,
        )
        .map_err(|e| self.err(format!("node {label}: {e}")))?;
        let (weights, bias) = self.conv_weights(node, label, w_name)?;
        let op = ConvTranspose {
            adjoint_of: Conv {
                conv,
                weight: weights.values,
                bias: None,
            },
            bias,
        };
        self.push(node, label, "ConvTranspose", op, &[x])?;
        self.record_weight_error(node, weights.error)
    }
}

/// `Gemm`: `y = alpha·A·op(B) + beta·C` with `A` the activation.
pub(super) fn gemm(imp: &mut Importer, node: &NodeProto, label: &str) -> Result<()> {
    let (x, xs) = imp.main_input(node, label)?;
    imp.gemm(node, label, x, &xs)
}

/// `MatMul(x, B)` with a constant 2-D `B`.
pub(super) fn matmul(imp: &mut Importer, node: &NodeProto, label: &str) -> Result<()> {
    let activations = node
        .input
        .iter()
        .filter(|i| imp.values.contains_key(*i))
        .count();
    if activations == 2 {
        return imp.not_lipschitz(
            node,
            label,
            "the product of two tensors that both depend on the input (dot-product attention \
             QKᵀ, or A·V) grows quadratically with the input (Kim et al. 2021, \"The Lipschitz \
             constant of self-attention\")",
        );
    }
    let (x, _) = imp.main_input(node, label)?;
    let ([k, n], w) = imp.weight_b(node, label, 2)?;
    let op = Dense {
        weight: transpose(&w.values, k, n),
        rows: n,
        cols: k,
        bias: None,
    };
    imp.push(node, label, "MatMul", op, &[x])?;
    imp.record_weight_error(node, w.error)
}

/// `alpha·W`: exact in f64 (two f32 factors), rounded once to f32, with what that changed
/// added to the weights' error.
fn scaled(w: Weights, alpha: f64) -> Weights {
    if alpha == 1.0 {
        return w;
    }
    let exact: Vec<f64> = w.values.iter().map(|&v| v as f64 * alpha).collect();
    let (values, error) = round_to_f32(&exact);
    Weights {
        values,
        error: if w.error > 0.0 {
            (w.error * alpha.abs()).next_up() + error
        } else {
            error
        },
    }
}

impl Importer {
    /// The constant 2-D weight `B` of a Gemm or MatMul (input 1) as `f32` weights, with
    /// `copies` f32 copies of it charged to the budget first.
    fn weight_b(
        &mut self,
        node: &NodeProto,
        label: &str,
        copies: u128,
    ) -> Result<([usize; 2], Weights)> {
        let name = node.input.get(1).map(String::as_str).unwrap_or("");
        let b = self.constant(name, label, "weight B")?;
        if b.dims.len() != 2 {
            return Err(self.err(format!(
                "node {label}: weight B has shape {:?}; a 2-D constant is required",
                b.dims
            )));
        }
        let (dims, len) = ([b.dims[0], b.dims[1]], b.len() as u128);
        self.budget.charge(
            len * 4 * copies,
            &format!("node {label}: copy of weight '{name}'"),
        )?;
        Ok((dims, self.constant(name, label, "weight B")?.weights()))
    }

    pub(super) fn conv(
        &mut self,
        node: &NodeProto,
        label: &str,
        x: ValueId,
        xs: &[usize],
    ) -> Result<()> {
        let w_name = node.input.get(1).map(String::as_str).unwrap_or("");
        let w_dims = self.constant(w_name, label, "weight")?.dims.clone();
        if xs.len() != 4 {
            return Err(self.err(format!(
                "node {label}: only 2-D convolutions on (N, C, H, W) inputs are supported; input shape is {xs:?}"
            )));
        }
        if w_dims.len() != 4 {
            return Err(self.err(format!(
                "node {label}: weight has shape {:?}; OIHW expected",
                w_dims
            )));
        }
        let kernel = [w_dims[2], w_dims[3]];
        if let Some(ks) = attr_ints(node, "kernel_shape") {
            if ks.len() != 2 || ks[0] as usize != kernel[0] || ks[1] as usize != kernel[1] {
                return Err(self.err(format!(
                    "node {label}: kernel_shape {ks:?} does not match the weight shape {:?}",
                    w_dims
                )));
            }
        }
        let stride = pair(node, "strides").map_err(|e| self.err(format!("node {label}: {e}")))?;
        let dilation =
            pair(node, "dilations").map_err(|e| self.err(format!("node {label}: {e}")))?;
        let groups = attr_int(node, "group", 1);
        if groups < 1 {
            return Err(self.err(format!("node {label}: group = {groups} must be ≥ 1")));
        }
        let groups = groups as usize;
        if w_dims[1] * groups != xs[1] {
            return Err(self.err(format!(
                "node {label}: weight {:?} with group {groups} expects {} input channels, but the input {xs:?} has {}",
                w_dims,
                w_dims[1] * groups,
                xs[1]
            )));
        }
        let pads = self.spatial_pads(node, label, [xs[2], xs[3]], kernel, stride, dilation)?;
        let (input, pads, mode) = self.merge_pad(node, x, pads);
        let in_shape = self.shape_of(input);
        let conv = conv_for(
            &in_shape, w_dims[0], kernel, stride, dilation, groups, pads, mode,
        )
        .map_err(|e| self.err(format!("node {label}: {e}")))?;
        let (weights, bias) = self.conv_weights(node, label, w_name)?;
        self.push(
            node,
            label,
            "Conv",
            Conv {
                conv,
                weight: weights.values,
                bias,
            },
            &[input],
        )?;
        self.record_weight_error(node, weights.error)
    }

    /// A conv's (or transposed conv's) weights as `f32`, with their copy charged first, and
    /// its optional bias (input 2).
    fn conv_weights(
        &mut self,
        node: &NodeProto,
        label: &str,
        w_name: &str,
    ) -> Result<(Weights, Option<Vec<f32>>)> {
        let bias = match node.input.get(2).filter(|n| !n.is_empty()) {
            Some(b) => Some(self.constant(b, label, "bias")?.f32s()),
            None => None,
        };
        let count = self.constant(w_name, label, "weight")?.len() as u128;
        self.budget.charge(
            count * 4,
            &format!("node {label}: copy of weight '{w_name}'"),
        )?;
        let weights = self.constant(w_name, label, "weight")?.weights();
        Ok((weights, bias))
    }

    /// The conv's input, pads and padding mode once a standalone `Pad` it alone reads is
    /// merged in: zero padding adds to its pads, wrap padding makes an unpadded conv circular.
    fn merge_pad(
        &self,
        node: &NodeProto,
        x: ValueId,
        pads: [usize; 4],
    ) -> (ValueId, [usize; 4], PaddingMode) {
        let single_reader = self.readers.get(&node.input[0]).copied() == Some(1);
        match self.pads.get(&x).copied() {
            Some(p) if single_reader && p.mode == PaddingMode::Zeros && p.zero_fill => {
                let mut merged = pads;
                for (pad, extra) in merged.iter_mut().zip(p.spatial) {
                    *pad += extra;
                }
                (p.input, merged, PaddingMode::Zeros)
            }
            Some(p) if single_reader && p.mode == PaddingMode::Circular && pads == [0; 4] => {
                (p.input, p.spatial, PaddingMode::Circular)
            }
            _ => (x, pads, PaddingMode::Zeros),
        }
    }

    /// Conv/pool pads `[top, left, bottom, right]` from `pads` or `auto_pad`.
    pub(super) fn spatial_pads(
        &self,
        node: &NodeProto,
        label: &str,
        size: [usize; 2],
        kernel: [usize; 2],
        stride: [usize; 2],
        dilation: [usize; 2],
    ) -> Result<[usize; 4]> {
        let auto = attr_string(node, "auto_pad").unwrap_or_else(|| "NOTSET".into());
        match auto.as_str() {
            "NOTSET" => {
                let p = attr_ints(node, "pads").unwrap_or_else(|| vec![0; 4]);
                if p.len() != 4 || p.iter().any(|&v| v < 0) {
                    return Err(self.err(format!("node {label}: pads {p:?} must be 4 non-negative values [top, left, bottom, right]")));
                }
                Ok([p[0] as usize, p[1] as usize, p[2] as usize, p[3] as usize])
            }
            "VALID" => Ok([0; 4]),
            "SAME_UPPER" | "SAME_LOWER" => {
                let mut pads = [0; 4];
                for a in 0..2 {
                    let out = size[a].div_ceil(stride[a]);
                    let extent = dilation[a] * (kernel[a] - 1) + 1;
                    let total = ((out - 1) * stride[a] + extent).saturating_sub(size[a]);
                    let small = total / 2;
                    let (begin, end) = if auto == "SAME_UPPER" {
                        (small, total - small)
                    } else {
                        (total - small, small)
                    };
                    pads[a] = begin;
                    pads[a + 2] = end;
                }
                Ok(pads)
            }
            other => Err(self.err(format!("node {label}: auto_pad '{other}' is not valid"))),
        }
    }

    pub(super) fn gemm(
        &mut self,
        node: &NodeProto,
        label: &str,
        x: ValueId,
        xs: &[usize],
    ) -> Result<()> {
        if attr_int(node, "transA", 0) != 0 {
            return Err(self.err(format!(
                "node {label}: Gemm with transA = 1 is not supported"
            )));
        }
        if xs.len() != 2 {
            return Err(self.err(format!("node {label}: Gemm needs a 2-D input, got {xs:?}")));
        }
        let alpha = self.finite_attr(node, label, "alpha", 1.0)?;
        let beta = self.finite_attr(node, label, "beta", 1.0)? as f32;
        // The f32 copy and, without transB, its transpose.
        let trans_b = attr_int(node, "transB", 0) != 0;
        let (dims, w) = self.weight_b(node, label, if trans_b { 1 } else { 2 })?;
        let w = scaled(w, alpha);
        let (rows, cols, w_values) = if trans_b {
            (dims[0], dims[1], w.values)
        } else {
            (dims[1], dims[0], transpose(&w.values, dims[0], dims[1]))
        };
        let weight_error = w.error;
        let bias = match self.optional_const(node, 2) {
            Some(c) if c.len() == rows || c.len() == 1 => {
                let v = c.f32s();
                Some(
                    (0..rows)
                        .map(|i| beta * v[if v.len() == 1 { 0 } else { i }])
                        .collect(),
                )
            }
            Some(c) => {
                return Err(self.err(format!(
                    "node {label}: bias C of shape {:?} does not fit {rows} outputs",
                    c.dims
                )))
            }
            None => None,
        };
        self.push(
            node,
            label,
            "Gemm",
            Dense {
                weight: w_values,
                rows,
                cols,
                bias,
            },
            &[x],
        )?;
        self.record_weight_error(node, weight_error)
    }
}
