//! `Add`, `Sub`, `Mul`, `Div` (between two activations, or an activation and a constant on
//! either side) and inference `BatchNormalization`.

use super::attrs::attr_float;
use super::importer::Importer;
use super::proto::NodeProto;
use super::tensor::Const;
use crate::error::Result;
use crate::network::ops::{Activation, Affine, Broadcast, Sum};
use crate::network::ValueId;

/// `Add`.
pub(super) fn add(imp: &mut Importer, node: &NodeProto, label: &str) -> Result<()> {
    imp.add_sub(node, label, false)
}

/// `Sub`.
pub(super) fn sub(imp: &mut Importer, node: &NodeProto, label: &str) -> Result<()> {
    imp.add_sub(node, label, true)
}

/// `Mul`.
pub(super) fn mul(imp: &mut Importer, node: &NodeProto, label: &str) -> Result<()> {
    imp.mul_div(node, label, false)
}

/// `Div`.
pub(super) fn div(imp: &mut Importer, node: &NodeProto, label: &str) -> Result<()> {
    imp.mul_div(node, label, true)
}

/// Inference `BatchNormalization(x, scale, bias, mean, var)`, lowered by
/// [`Affine::batch_norm`].
pub(super) fn batch_norm(imp: &mut Importer, node: &NodeProto, label: &str) -> Result<()> {
    let (x, xs) = imp.main_input(node, label)?;
    let mut p = Vec::new();
    for (i, role) in ["scale", "bias", "mean", "var"].iter().enumerate() {
        let name = node.input.get(i + 1).map(String::as_str).unwrap_or("");
        p.push(imp.constant(name, label, role)?.f64s());
    }
    let eps = attr_float(node, "epsilon", 1e-5);
    let op = Affine::batch_norm(&xs, &p[0], &p[1], &p[2], &p[3], eps)
        .map_err(|e| imp.err(format!("node {label}: {e}")))?;
    imp.push(node, label, "BatchNormalization", op, &[x])
}

impl Importer {
    pub(super) fn add_sub(&mut self, node: &NodeProto, label: &str, sub: bool) -> Result<()> {
        let kind = if sub { "Sub" } else { "Add" };
        let (a, b) = (
            node.input[0].as_str(),
            node.input.get(1).map(String::as_str).unwrap_or(""),
        );
        match (self.values.get(a).copied(), self.values.get(b).copied()) {
            (Some(va), Some(vb)) => self.push(node, label, kind, Sum { subtract: sub }, &[va, vb]),
            (Some(v), None) | (None, Some(v)) => {
                let var_first = self.values.get(a) == Some(&v);
                let c = self
                    .constant(if var_first { b } else { a }, label, "operand")?
                    .clone();
                let shape = self.shape_of(v);
                let mut shift = self.broadcast(&c.dims, &c.f64s(), &shape, label)?;
                let mut scale = 1.0;
                if sub && var_first {
                    shift.values.iter_mut().for_each(|s| *s = -*s);
                } else if sub {
                    scale = -1.0;
                }
                self.push(
                    node,
                    label,
                    kind,
                    Affine {
                        scale: Broadcast::scalar(scale),
                        shift,
                    },
                    &[v],
                )
            }
            (None, None) => unreachable!("all-constant nodes are folded"),
        }
    }

    pub(super) fn mul_div(&mut self, node: &NodeProto, label: &str, div: bool) -> Result<()> {
        let kind = if div { "Div" } else { "Mul" };
        let (a, b) = (
            node.input[0].as_str(),
            node.input.get(1).map(String::as_str).unwrap_or(""),
        );
        match (self.values.get(a).copied(), self.values.get(b).copied()) {
            (Some(va), Some(vb)) if !div => {
                // x · Sigmoid(x) is SiLU.
                for (x, s) in [(va, vb), (vb, va)] {
                    if let Some((op, src)) = self.producer.get(&s) {
                        if op == "Sigmoid" && *src == x {
                            return self.push(node, label, "Silu", Activation::Silu, &[x]);
                        }
                    }
                }
                Err(self.err(format!(
                    "node {label}: Mul of two activations (other than x·Sigmoid(x)) has no global Lipschitz constant; not supported"
                )))
            }
            (Some(v), None) if div || self.values.contains_key(a) => {
                let c = self.constant(b, label, "operand")?.clone();
                self.scale_by(node, label, kind, v, &c, div)
            }
            (None, Some(v)) if !div => {
                let c = self.constant(a, label, "operand")?.clone();
                self.scale_by(node, label, kind, v, &c, false)
            }
            _ => Err(self.err(format!(
                "node {label}: {kind} with an activation as divisor is not Lipschitz; not supported"
            ))),
        }
    }

    fn scale_by(
        &mut self,
        node: &NodeProto,
        label: &str,
        kind: &str,
        v: ValueId,
        c: &Const,
        invert: bool,
    ) -> Result<()> {
        let shape = self.shape_of(v);
        let mut vals = c.f64s();
        if invert {
            if let Some(z) = vals.iter().position(|&d| d == 0.0) {
                return Err(self.err(format!(
                    "node {label}: division by zero (divisor element {z})"
                )));
            }
            vals.iter_mut().for_each(|d| *d = 1.0 / *d);
        }
        let scale = self.broadcast(&c.dims, &vals, &shape, label)?;
        self.push(
            node,
            label,
            kind,
            Affine {
                scale,
                shift: Broadcast::scalar(0.0),
            },
            &[v],
        )
    }
}
