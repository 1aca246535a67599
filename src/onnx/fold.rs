//! Constants: `Constant` nodes, `Shape`, and nodes whose inputs are all constants (the
//! shape arithmetic older exporters write: `Shape → Gather → Unsqueeze → Concat → Reshape`),
//! evaluated at import.

use super::attrs::{attr_int, attr_ints};
use super::const_eval::{
    binary, broadcast_dims, conv2d, logical, matmul, rearrange, reduce, unary, Arr, U as U_BIAS,
};
use super::importer::Importer;
use super::proto::NodeProto;
use super::reshape::{resolve_reshape, squeeze_shape};
use super::select;
use super::tensor::{Const, ConstData};
use crate::error::{Error, Result};

/// The single value of a scalar (or one-element) constant.
fn scalar(a: &Arr, label: &str) -> Result<f64> {
    a.v.first().copied().ok_or_else(|| {
        Error::invalid(
            "constant",
            format!("{:?}", a.dims),
            &format!("node {label}: a scalar is expected"),
        )
    })
}

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
                error: 0.0,
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
                error: 0.0,
            }),
            "value_floats" => {
                self.budget.charge(
                    a.floats.len() as u128 * 4,
                    &format!("node {label}: value_floats"),
                )?;
                Ok(Const {
                    dims: vec![a.floats.len()],
                    data: ConstData::F32(a.floats.clone()),
                    error: 0.0,
                })
            }
            "value_int" => Ok(Const {
                dims: vec![],
                data: ConstData::I64(vec![a.i]),
                error: 0.0,
            }),
            "value_ints" => {
                self.budget.charge(
                    a.ints.len() as u128 * 8,
                    &format!("node {label}: value_ints"),
                )?;
                Ok(Const {
                    dims: vec![a.ints.len()],
                    data: ConstData::I64(a.ints.clone()),
                    error: 0.0,
                })
            }
            other => Err(self.err(format!(
                "node {label}: Constant attribute '{other}' is not supported"
            ))),
        }
    }

    /// Evaluates a node whose inputs are all constants (see [`super::const_eval`]).
    pub(super) fn fold_constant(&mut self, node: &NodeProto, label: &str) -> Result<()> {
        // Every folded op makes copies of its inputs; charge them before anything is copied
        // (outputs larger than the inputs — MatMul, Expand, Tile — are charged as well).
        let inputs: u128 = node
            .input
            .iter()
            .filter_map(|n| self.consts.get(n))
            .map(|c| c.len() as u128)
            .sum();
        self.budget
            .charge(inputs * 16, &format!("node {label}: folding constants"))?;
        // Omitted optional inputs (empty names) are `None`.
        let parts: Vec<Option<Arr>> = node
            .input
            .iter()
            .map(|n| match n.as_str() {
                "" => Ok(None),
                n => self.constant(n, label, "input").map(|c| Some(Arr::of(c))),
            })
            .collect::<Result<_>>()?;
        let outputs = self.fold_node(node, label, &parts).map_err(|e| match e {
            Error::Model { .. } | Error::TooLarge { .. } => e,
            other => self.err(format!("node {label}: {other}")),
        })?;
        for (name, arr) in node.output.iter().zip(outputs) {
            let c = arr
                .into_const()
                .map_err(|e| self.err(format!("node {label}: {e}")))?;
            self.consts.insert(name.clone(), c);
        }
        Ok(())
    }

    fn fold_node(
        &mut self,
        node: &NodeProto,
        label: &str,
        parts: &[Option<Arr>],
    ) -> Result<Vec<Arr>> {
        let src = self.src.clone();
        let get = |i: usize| -> Result<&Arr> {
            parts.get(i).and_then(Option::as_ref).ok_or_else(|| {
                Error::model(
                    &src,
                    format!("node {label}: input {i} is missing (no initializer or constant of that name)"),
                )
            })
        };
        let op = node.op_type.as_str();
        let one = |a: Arr| Ok(vec![a]);
        match op {
            "Identity" | "Dropout" => one(get(0)?.clone()),
            "Cast" => {
                let a = get(0)?;
                let to_float = matches!(attr_int(node, "to", 1), 1 | 10 | 11 | 16);
                let mut r = a.clone();
                if to_float {
                    r.int = false;
                } else if !a.int {
                    r.v.iter_mut().for_each(|x| *x = x.trunc());
                    r.int = true;
                    if a.err > 0.0 {
                        return Err(self.err(format!(
                            "node {label}: a Cast to integers of a rounded constant cannot be folded reliably"
                        )));
                    }
                }
                one(r)
            }
            "Unsqueeze" | "Squeeze" | "Reshape" | "Flatten" => {
                let a = get(0)?;
                let dims = match op {
                    "Reshape" => resolve_reshape(&a.dims, &get(1)?.v.iter().map(|&x| x as i64).collect::<Vec<_>>(), attr_int(node, "allowzero", 0) != 0),
                    "Flatten" => {
                        let r = a.dims.len() as i64;
                        let ax = attr_int(node, "axis", 1);
                        let ax = if ax < 0 { ax + r } else { ax }.clamp(0, r) as usize;
                        Ok(vec![a.dims[..ax].iter().product(), a.dims[ax..].iter().product()])
                    }
                    _ => {
                        let axes = if self.opset >= 13 {
                            parts.get(1).and_then(Option::as_ref).map(|c| c.v.iter().map(|&x| x as i64).collect::<Vec<_>>())
                        } else {
                            attr_ints(node, "axes")
                        };
                        squeeze_shape(&a.dims, axes.as_deref(), op == "Unsqueeze")
                    }
                };
                let mut r = a.clone();
                r.dims = dims?;
                one(r)
            }
            "Shape" => {
                let a = get(0)?;
                let r = a.dims.len() as i64;
                let norm = |x: i64| (if x < 0 { x + r } else { x }).clamp(0, r) as usize;
                let (start, end) = (norm(attr_int(node, "start", 0)), norm(attr_int(node, "end", r)));
                let v: Vec<f64> = a.dims[start..end.max(start)].iter().map(|&d| d as f64).collect();
                one(Arr { dims: vec![v.len()], v, int: true, err: 0.0 })
            }
            "ConstantOfShape" => {
                let dims: Vec<usize> = get(0)?.v.iter().map(|&x| x.max(0.0) as usize).collect();
                let n = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).unwrap_or(usize::MAX);
                self.budget.charge(n as u128 * 8, &format!("node {label}: ConstantOfShape {dims:?}"))?;
                let (value, int) = match super::attrs::find_attr(node, "value").and_then(|a| a.t.as_ref()) {
                    Some(t) => {
                        let c = self.decode_tensor(t)?;
                        (c.f64s().first().copied().unwrap_or(0.0), c.is_int())
                    }
                    None => (0.0, false),
                };
                one(Arr { dims, v: vec![value; n], int, err: 0.0 })
            }
            "Range" => {
                let (start, limit, delta) = (
                    scalar(get(0)?, label)?,
                    scalar(get(1)?, label)?,
                    scalar(get(2)?, label)?,
                );
                let n = if delta == 0.0 { f64::INFINITY } else { ((limit - start) / delta).ceil().max(0.0) };
                if n.is_nan() || n > 1e8 {
                    return Err(self.err(format!("node {label}: Range of {n} elements")));
                }
                self.budget.charge(n as u128 * 8, &format!("node {label}: Range"))?;
                let v: Vec<f64> = (0..n as usize).map(|i| start + i as f64 * delta).collect();
                one(Arr { dims: vec![v.len()], v, int: get(0)?.int, err: 0.0 })
            }
            "Concat" => {
                let xs: Vec<&Arr> = parts.iter().flatten().collect();
                let Some(first) = xs.first() else {
                    return Err(self.err(format!("node {label}: Concat without inputs")));
                };
                let r = first.dims.len() as i64;
                let axis = super::attrs::norm_axis(attr_int(node, "axis", 0), r.max(1))
                    .ok_or_else(|| self.err(format!("node {label}: Concat axis out of range")))?;
                let mut dims = first.dims.clone();
                if dims.is_empty() {
                    dims.push(1);
                }
                dims[axis] = 0;
                for x in &xs {
                    let d = if x.dims.is_empty() { vec![1] } else { x.dims.clone() };
                    if d.len() != dims.len() || (0..d.len()).any(|k| k != axis && d[k] != dims[k]) {
                        return Err(self.err(format!("node {label}: constant Concat shapes do not agree")));
                    }
                    dims[axis] += d[axis];
                }
                let outer: usize = dims[..axis].iter().product();
                let mut v = Vec::with_capacity(dims.iter().product());
                for o in 0..outer {
                    for x in &xs {
                        let b = x.v.len() / outer.max(1);
                        v.extend_from_slice(&x.v[o * b..(o + 1) * b]);
                    }
                }
                let int = xs.iter().all(|x| x.int);
                let err = xs.iter().fold(0.0f64, |m, x| m.max(x.err));
                one(Arr { dims, v, int, err })
            }
            "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Equal" | "Less" | "Greater" => one(binary(op, get(0)?, get(1)?)?),
            "Max" | "Min" | "Sum" => {
                let xs: Vec<&Arr> = parts.iter().flatten().collect();
                let f = if op == "Sum" { "Add" } else { op };
                let Some(first) = xs.first() else {
                    return Err(self.err(format!("node {label}: {op} without inputs")));
                };
                let mut acc = (*first).clone();
                for x in &xs[1..] {
                    acc = binary(f, &acc, x)?;
                }
                one(acc)
            }
            "Where" => {
                let (c, a, b) = (get(0)?, get(1)?, get(2)?);
                let dims = broadcast_dims(&broadcast_dims(&c.dims, &a.dims)?, &b.dims)?;
                // Where(c, a, b) = c·a + (1 − c)·b elementwise, exactly.
                let ones = Arr { dims: vec![], v: vec![1.0], int: true, err: 0.0 };
                let not_c = binary("Sub", &ones, c)?;
                let pa = binary("Mul", c, a)?;
                let pb = binary("Mul", &not_c, b)?;
                let mut r = binary("Add", &pa, &pb)?;
                r.dims = dims;
                r.err = a.err.max(b.err);
                r.int = a.int && b.int;
                one(r)
            }
"Not" => {
                let a = get(0)?;
                let v = a.v.iter().map(|&x| f64::from(x == 0.0)).collect();
                one(Arr { dims: a.dims.clone(), v, int: true, err: 0.0 })
            }
            "And" | "Or" | "Xor" => one(logical(op, get(0)?, get(1)?)?),
            "Abs" | "Neg" | "Relu" | "Sqrt" | "Reciprocal" | "Exp" | "Sigmoid" | "Tanh" => one(unary(op, get(0)?)?),
            "Clip" => {
                let mut r = get(0)?.clone();
                let lo = parts.get(1).and_then(Option::as_ref).and_then(|c| c.v.first().copied());
                let hi = parts.get(2).and_then(Option::as_ref).and_then(|c| c.v.first().copied());
                let (lo, hi) = if self.opset < 11 {
                    (Some(super::attrs::attr_float(node, "min", f64::NEG_INFINITY)), Some(super::attrs::attr_float(node, "max", f64::INFINITY)))
                } else {
                    (lo, hi)
                };
                r.v.iter_mut().for_each(|x| *x = x.max(lo.unwrap_or(f64::NEG_INFINITY)).min(hi.unwrap_or(f64::INFINITY)));
                one(r)
            }
            "Conv" => {
                let (x, w) = (get(0)?, get(1)?);
                let ints = |name: &str, default: Vec<i64>| -> Vec<usize> {
                    attr_ints(node, name).unwrap_or(default).iter().map(|&v| v.max(0) as usize).collect()
                };
                let (p, st, dl) = (ints("pads", vec![0; 4]), ints("strides", vec![1, 1]), ints("dilations", vec![1, 1]));
                let auto = super::attrs::attr_string(node, "auto_pad").unwrap_or_default();
                if p.len() != 4 || st.len() != 2 || dl.len() != 2 || !(auto.is_empty() || auto == "NOTSET") || st.contains(&0) || dl.contains(&0) {
                    return Err(self.err(format!("node {label}: only 2-D constant Convs with explicit pads are folded")));
                }
                let out = x.len() as u128 * w.dims.first().copied().unwrap_or(1) as u128;
                self.budget.charge(out * 8, &format!("node {label}: folding Conv"))?;
                let mut y = conv2d(x, w, [p[0], p[1], p[2], p[3]], [st[0], st[1]], [dl[0], dl[1]], attr_int(node, "group", 1).max(1) as usize)?;
                if let Some(b) = parts.get(2).and_then(Option::as_ref) {
                    let plane = y.dims[2] * y.dims[3];
                    let o = y.dims[1];
                    if b.v.len() != o {
                        return Err(self.err(format!("node {label}: Conv bias has {} values for {o} channels", b.v.len())));
                    }
                    for (i, v) in y.v.iter_mut().enumerate() {
                        *v += b.v[(i / plane) % o];
                    }
                    y.err += b.err + U_BIAS * y.v.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                }
                one(y)
            }
            "ScatterND" => {
                let (data, idx, upd) = (get(0)?, get(1)?, get(2)?);
                let reduction = super::attrs::attr_string(node, "reduction").unwrap_or_default();
                let k = idx.dims.last().copied().unwrap_or(0);
                if !(reduction.is_empty() || reduction == "none") || k == 0 || k > data.dims.len() {
                    return Err(self.err(format!("node {label}: only ScatterND without reduction is folded")));
                }
                let slice: usize = data.dims[k..].iter().product();
                let mut out = data.clone();
                for (j, t) in idx.v.chunks(k).enumerate() {
                    let mut flat = 0usize;
                    for (a, &v) in t.iter().enumerate() {
                        let n = data.dims[a] as i64;
                        let v = if v < 0.0 { v as i64 + n } else { v as i64 };
                        if !(0..n).contains(&v) {
                            return Err(self.err(format!("node {label}: ScatterND index {v} out of range")));
                        }
                        flat = flat * data.dims[a] + v as usize;
                    }
                    let src = upd.v.get(j * slice..(j + 1) * slice).ok_or_else(|| {
                        self.err(format!("node {label}: ScatterND updates too short"))
                    })?;
                    out.v[flat * slice..(flat + 1) * slice].copy_from_slice(src);
                }
                out.err = data.err.max(upd.err);
                out.int = data.int && upd.int;
                one(out)
            }
            "MatMul" => {
                let (a, b) = (get(0)?, get(1)?);
                // m·n outputs of (…, m, k)·(…, k, n), at most |a|·|b|/k².
                let k = a.dims.last().copied().unwrap_or(1).max(1) as u128;
                let out = a.len() as u128 * b.len() as u128 / (k * k);
                self.budget.charge(out * 8, &format!("node {label}: folding MatMul"))?;
                one(matmul(a, b)?)
            }
            "ReduceSum" | "ReduceMean" | "ReduceMax" | "ReduceMin" => {
                let a = get(0)?;
                let from_input = op == "ReduceSum" && self.opset >= 13 || self.opset >= 18;
                let axes = if from_input {
                    parts.get(1).and_then(Option::as_ref).map(|c| c.v.iter().map(|&x| x as i64).collect())
                } else {
                    attr_ints(node, "axes")
                }
                .unwrap_or_default();
                let r = a.dims.len() as i64;
                let axes: Vec<usize> = axes
                    .iter()
                    .map(|&x| super::attrs::norm_axis(x, r))
                    .collect::<Option<_>>()
                    .ok_or_else(|| self.err(format!("node {label}: reduce axes out of range")))?;
                if axes.is_empty() && attr_int(node, "noop_with_empty_axes", 0) != 0 {
                    return one(a.clone());
                }
                one(reduce(op, a, &axes, attr_int(node, "keepdims", 1) != 0)?)
            }
            _ if select::SELECTIONS.contains(&op) => {
                let a = get(0)?.clone();
                let plan = select::plan(self, node, label, &a.dims)?;
                Ok(plan.into_iter().map(|(out, index)| rearrange(&a, out, &index)).collect())
            }
            other => Err(self.err(format!(
                "node {label}: operator '{other}' is not supported on constant inputs (it does not depend on the network input)"
            ))),
        }
    }
}
