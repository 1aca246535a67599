//! Constants: `Constant` nodes, `Shape`, and nodes whose inputs are all constants (the
//! shape arithmetic older exporters write: `Shape → Gather → Unsqueeze → Concat → Reshape`),
//! evaluated at import.

use super::attrs::{attr_int, attr_ints};
use super::importer::Importer;
use super::proto::NodeProto;
use super::reshape::{resolve_reshape, squeeze_shape};
use super::tensor::{Const, ConstData};
use crate::error::{Error, Result};

impl Importer {
    /// `Shape(x)`: the (sliced) shape of an activation, as a constant.
    pub(super) fn shape_node(&mut self, node: &NodeProto, label: &str) -> Result<()> {
        let (_, shape) = self.main_input(node, label)?;
        let shape: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        let r = shape.len() as i64;
        let norm = |a: i64| (if a < 0 { a + r } else { a }).clamp(0, r) as usize;
        let start = norm(attr_int(node, "start", 0));
        let end = norm(attr_int(node, "end", r));
        let data = shape[start..end.max(start)].to_vec();
        self.add_const(
            node,
            Const {
                dims: vec![data.len()],
                data: ConstData::I64(data),
            },
        );
        Ok(())
    }

    pub(super) fn constant_node(&mut self, node: &NodeProto, label: &str) -> Result<Const> {
        let a = node
            .attribute
            .first()
            .ok_or_else(|| self.err(format!("node {label}: Constant without a value")))?;
        match a.name.as_str() {
            "value" => {
                let t =
                    a.t.as_ref()
                        .ok_or_else(|| self.err(format!("node {label}: empty tensor")))?;
                self.decode_tensor(t)
            }
            "value_float" => Ok(Const {
                dims: vec![],
                data: ConstData::F32(vec![a.f]),
            }),
            "value_floats" => {
                self.budget.charge(
                    a.floats.len() as u128 * 4,
                    &format!("node {label}: value_floats"),
                )?;
                Ok(Const {
                    dims: vec![a.floats.len()],
                    data: ConstData::F32(a.floats.clone()),
                })
            }
            "value_int" => Ok(Const {
                dims: vec![],
                data: ConstData::I64(vec![a.i]),
            }),
            "value_ints" => {
                self.budget.charge(
                    a.ints.len() as u128 * 8,
                    &format!("node {label}: value_ints"),
                )?;
                Ok(Const {
                    dims: vec![a.ints.len()],
                    data: ConstData::I64(a.ints.clone()),
                })
            }
            other => Err(self.err(format!(
                "node {label}: Constant attribute '{other}' is not supported"
            ))),
        }
    }

    /// Evaluates a node whose inputs are all constants (shape arithmetic).
    pub(super) fn fold_constant(&mut self, node: &NodeProto, label: &str) -> Result<Const> {
        // Every folded op makes copies of its inputs and an output no larger than all of them
        // together (Concat: their sum; a chain of Concats doubles a constant per node): charge
        // both before anything is copied.
        let inputs: u128 = node
            .input
            .iter()
            .filter_map(|n| self.consts.get(n))
            .map(|c| c.len() as u128)
            .sum();
        self.budget
            .charge(inputs * 16, &format!("node {label}: folding constants"))?;
        // Omitted optional inputs (empty names) are `None`.
        let parts: Vec<Option<Const>> = node
            .input
            .iter()
            .map(|n| match n.as_str() {
                "" => Ok(None),
                n => self.constant(n, label, "input").cloned().map(Some),
            })
            .collect::<Result<_>>()?;
        let get = |i: usize| {
            parts.get(i).and_then(Option::as_ref).ok_or_else(|| {
                self.err(format!(
                    "node {label}: input {i} is missing (no initializer or constant of that name)"
                ))
            })
        };
        let op = node.op_type.as_str();
        let folded = match op {
            "Identity" | "Cast" => Ok(cast(node, get(0)?)),
            "Unsqueeze" | "Squeeze" | "Reshape" | "Flatten" => {
                let c = get(0)?;
                let dims = match op {
                    "Reshape" => resolve_reshape(&c.dims, &get(1)?.i64s(), false),
                    "Flatten" => Ok(vec![1, c.len()]),
                    _ => {
                        let axes = if self.opset >= 13 {
                            parts.get(1).and_then(Option::as_ref).map(Const::i64s)
                        } else {
                            attr_ints(node, "axes")
                        };
                        squeeze_shape(&c.dims, axes.as_deref(), op == "Unsqueeze")
                    }
                };
                dims.map(|dims| Const {
                    dims,
                    data: c.data.clone(),
                })
            }
            "Concat" => concat(&parts.iter().flatten().cloned().collect::<Vec<_>>()),
            "Gather" => gather(node, get(0)?, get(1)?),
            "Mul" | "Add" | "Sub" | "Div" => arithmetic(op, get(0)?, get(1)?),
            other => Err(Error::invalid(
                "operator",
                other,
                "is not supported on constant inputs (it does not depend on the network input)",
            )),
        };
        folded.map_err(|e| self.err(format!("node {label}: {e}")))
    }
}

/// `Identity`, or `Cast` to float (FLOAT, FLOAT16, DOUBLE) or to an integer type.
fn cast(node: &NodeProto, c: &Const) -> Const {
    let dims = c.dims.clone();
    match (node.op_type.as_str(), attr_int(node, "to", 1)) {
        ("Cast", 1 | 10 | 11) => Const {
            dims,
            data: ConstData::F32(c.f32s()),
        },
        ("Cast", _) => Const {
            dims,
            data: ConstData::I64(c.i64s()),
        },
        _ => c.clone(),
    }
}

/// `Concat` of 1-D constants.
fn concat(parts: &[Const]) -> Result<Const> {
    if !parts.iter().all(|p| p.dims.len() <= 1) {
        return Err(Error::invalid(
            "constant Concat",
            format!("{:?}", parts.iter().map(|p| &p.dims).collect::<Vec<_>>()),
            "only 1-D constants are folded",
        ));
    }
    let n: usize = parts.iter().map(Const::len).sum();
    let data = if parts.iter().all(Const::is_int) {
        ConstData::I64(parts.iter().flat_map(|p| p.i64s()).collect())
    } else {
        ConstData::F32(parts.iter().flat_map(|p| p.f32s()).collect())
    };
    Ok(Const {
        dims: vec![n],
        data,
    })
}

/// `Gather` along axis 0 of a 1-D constant.
fn gather(node: &NodeProto, data: &Const, idx: &Const) -> Result<Const> {
    if data.dims.len() != 1 || attr_int(node, "axis", 0) != 0 {
        return Err(Error::invalid(
            "constant Gather data",
            format!("{:?}", data.dims),
            "only 1-D constants along axis 0 are folded",
        ));
    }
    let n = data.len() as i64;
    let vals = data.i64s();
    let out: Vec<i64> = idx
        .i64s()
        .iter()
        .map(|&i| {
            let j = if i < 0 { i + n } else { i };
            vals.get(j as usize)
                .copied()
                .ok_or_else(|| Error::invalid("Gather index", i, "out of range"))
        })
        .collect::<Result<_>>()?;
    Ok(Const {
        dims: idx.dims.clone(),
        data: ConstData::I64(out),
    })
}

/// Elementwise arithmetic of two constants of one length (or a scalar and anything).
fn arithmetic(op: &str, a: &Const, b: &Const) -> Result<Const> {
    if a.len() != b.len() && a.len() != 1 && b.len() != 1 {
        return Err(Error::invalid(
            &format!("constant {op} operands"),
            format!("{:?} and {:?}", a.dims, b.dims),
            "only equal lengths or a scalar are folded",
        ));
    }
    let dims = if a.len() >= b.len() {
        a.dims.clone()
    } else {
        b.dims.clone()
    };
    let n = a.len().max(b.len());
    let pick = |v: &[f64], i: usize| if v.len() == 1 { v[0] } else { v[i] };
    let (av, bv) = (a.f64s(), b.f64s());
    let f = |x: f64, y: f64| match op {
        "Mul" => x * y,
        "Add" => x + y,
        "Sub" => x - y,
        _ => x / y,
    };
    let vals: Vec<f64> = (0..n).map(|i| f(pick(&av, i), pick(&bv, i))).collect();
    let data = if a.is_int() && b.is_int() {
        ConstData::I64(vals.iter().map(|&v| v as i64).collect())
    } else {
        ConstData::F32(vals.iter().map(|&v| v as f32).collect())
    };
    Ok(Const { dims, data })
}
