//! Elementwise activations with parameters, PRelu and Softmax (the parameterless ones are
//! one-line entries of the dispatch table).

use super::attrs::{attr_float, attr_int, attr_string, norm_axis};
use super::importer::Importer;
use super::proto::NodeProto;
use crate::error::Result;
use crate::network::ops::{Activation, Affine, PRelu, Softmax};

/// `LeakyRelu(alpha = 0.01)`.
pub(super) fn leaky_relu(imp: &mut Importer, node: &NodeProto, label: &str) -> Result<()> {
    let a = imp.finite_attr(node, label, "alpha", 0.01)?;
    imp.unary(node, label, Activation::LeakyRelu(a))
}

/// `Elu(alpha = 1)`.
pub(super) fn elu(imp: &mut Importer, node: &NodeProto, label: &str) -> Result<()> {
    let a = imp.finite_attr(node, label, "alpha", 1.0)?;
    imp.unary(node, label, Activation::Elu(a))
}

/// `Selu` with ONNX's default constants.
pub(super) fn selu(imp: &mut Importer, node: &NodeProto, label: &str) -> Result<()> {
    let alpha = imp.finite_attr(node, label, "alpha", 1.673_263_192_176_818_8)?;
    let gamma = imp.finite_attr(node, label, "gamma", 1.050_701_022_148_132_3)?;
    imp.unary(node, label, Activation::Selu { alpha, gamma })
}

/// `HardSigmoid(alpha = 0.2, beta = 0.5)`.
pub(super) fn hard_sigmoid(imp: &mut Importer, node: &NodeProto, label: &str) -> Result<()> {
    let alpha = imp.finite_attr(node, label, "alpha", 0.2)?;
    let beta = imp.finite_attr(node, label, "beta", 0.5)?;
    imp.unary(node, label, Activation::HardSigmoid { alpha, beta })
}

/// `Gelu`, exact or `approximate="tanh"`.
pub(super) fn gelu(imp: &mut Importer, node: &NodeProto, label: &str) -> Result<()> {
    let tanh = attr_string(node, "approximate").as_deref() == Some("tanh");
    imp.unary(node, label, Activation::Gelu { tanh })
}

/// `Clip`: limits as attributes before opset 11, as constant inputs after.
pub(super) fn clip(imp: &mut Importer, node: &NodeProto, label: &str) -> Result<()> {
    let (mut min, mut max) = (f64::NEG_INFINITY, f64::INFINITY);
    if imp.opset < 11 {
        min = attr_float(node, "min", f64::NEG_INFINITY);
        max = attr_float(node, "max", f64::INFINITY);
    } else {
        for (i, slot) in [(1usize, &mut min), (2, &mut max)] {
            if let Some(name) = node.input.get(i).filter(|n| !n.is_empty()) {
                let c = imp.constant(name, label, "Clip limit")?;
                if c.len() != 1 {
                    return Err(
                        imp.err(format!("node {label}: Clip limit '{name}' is not a scalar"))
                    );
                }
                *slot = c.f64s()[0];
            }
        }
    }
    imp.unary(node, label, Activation::Clip { min, max })
}

/// `PRelu(x, slope)` with a constant slope broadcast against `x`.
pub(super) fn prelu(imp: &mut Importer, node: &NodeProto, label: &str) -> Result<()> {
    let (x, xs) = imp.main_input(node, label)?;
    let name = node.input.get(1).map(String::as_str).unwrap_or("");
    let s = imp.constant(name, label, "slope")?;
    let (dims, vals) = (s.dims.clone(), s.f64s());
    let slope = imp.broadcast(&dims, &vals, &xs, label)?;
    imp.push(node, label, "PRelu", PRelu { slope }, &[x])
}

/// `Softmax`: over the flattened trailing axes before opset 13, over one axis after.
pub(super) fn softmax(imp: &mut Importer, node: &NodeProto, label: &str) -> Result<()> {
    let (x, xs) = imp.main_input(node, label)?;
    let r = xs.len() as i64;
    let default = if imp.opset < 13 { 1 } else { -1 };
    let axis = norm_axis(attr_int(node, "axis", default), r)
        .ok_or_else(|| imp.err(format!("node {label}: axis out of range for rank {r}")))?;
    let (len, inner) = if imp.opset < 13 {
        (xs[axis..].iter().product(), 1)
    } else {
        (xs[axis], xs[axis + 1..].iter().product())
    };
    imp.push(node, label, "Softmax", Softmax { len, inner }, &[x])
}

/// `Log`: of a sigmoid it is LogSigmoid, `−softplus(−x)` (slope `1 − σ(x) ∈ (0, 1)`, constant
/// 1; how PyTorch's TorchScript exporter writes `logsigmoid`); of anything else it has no
/// global constant.
pub(super) fn log(imp: &mut Importer, node: &NodeProto, label: &str) -> Result<()> {
    let (v, _) = imp.main_input(node, label)?;
    let sigmoid_of = imp
        .net()
        .network()
        .nodes
        .iter()
        .rev()
        .find(|n| n.output == v)
        .filter(|n| matches!(n.op.downcast_ref::<Activation>(), Some(Activation::Sigmoid)))
        .map(|n| n.inputs[0]);
    let Some(x) = sigmoid_of else {
        return imp.not_lipschitz(
            node,
            label,
            "ln x has a derivative that grows without bound near 0",
        );
    };
    let base = node.output[0].clone();
    let negated = imp.add_node(
        &format!("{base}/neg"),
        label,
        "LogSigmoid",
        Affine::scale_by(-1.0),
        &[x],
    )?;
    let softplus = imp.add_node(
        &format!("{base}/softplus"),
        label,
        "LogSigmoid",
        Activation::Softplus,
        &[negated],
    )?;
    imp.push(
        node,
        label,
        "LogSigmoid",
        Affine::scale_by(-1.0),
        &[softplus],
    )
}
