//! Reading node attributes, with ONNX's defaults.

use super::importer::Importer;
use super::proto::{attribute_proto::AttributeType, AttributeProto, NodeProto};
use crate::error::{Error, Result};

/// How a node is named in messages: `'name' (Op)`, or `#index (Op)` when it has no name.
pub(super) fn node_label(node: &NodeProto, index: usize) -> String {
    if node.name.is_empty() {
        format!("#{index} ({})", node.op_type)
    } else {
        format!("'{}' ({})", node.name, node.op_type)
    }
}

pub(super) fn find_attr<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}
pub(super) fn attr_int(node: &NodeProto, name: &str, default: i64) -> i64 {
    find_attr(node, name).map(|a| a.i).unwrap_or(default)
}
pub(super) fn attr_float(node: &NodeProto, name: &str, default: f64) -> f64 {
    find_attr(node, name).map(|a| a.f as f64).unwrap_or(default)
}
pub(super) fn attr_ints(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
    find_attr(node, name).map(|a| a.ints.clone())
}
pub(super) fn attr_string(node: &NodeProto, name: &str) -> Option<String> {
    find_attr(node, name)
        .filter(|a| a.r#type == AttributeType::String as i32 || !a.s.is_empty())
        .map(|a| String::from_utf8_lossy(&a.s).into_owned())
}
/// A two-element spatial attribute (`strides`, `dilations`), 1 by default, each ≥ 1.
pub(super) fn pair(node: &NodeProto, name: &str) -> Result<[usize; 2]> {
    match attr_ints(node, name) {
        None => Ok([1, 1]),
        Some(v) if v.len() == 2 && v.iter().all(|x| (1..=1 << 20).contains(x)) => {
            Ok([v[0] as usize, v[1] as usize])
        }
        Some(v) => Err(Error::invalid(
            name,
            format!("{v:?}"),
            "must be two values ≥ 1",
        )),
    }
}
pub(super) fn norm_axis(a: i64, rank: i64) -> Option<usize> {
    let a = if a < 0 { a + rank } else { a };
    (0..rank).contains(&a).then_some(a as usize)
}

impl Importer {
    /// A float attribute that must be finite (activation parameters, Gemm's alpha/beta): NaN
    /// or ±inf is an error naming the node and the attribute.
    pub(super) fn finite_attr(
        &self,
        node: &NodeProto,
        label: &str,
        name: &str,
        default: f64,
    ) -> Result<f64> {
        let v = attr_float(node, name, default);
        if !v.is_finite() {
            return Err(self.err(format!(
                "node {label}: attribute {name} = {v} is not a finite number"
            )));
        }
        Ok(v)
    }
}
