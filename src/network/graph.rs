//! The network as a graph of typed operations on statically shaped tensors.
//!
//! Values are numbered: value 0 is the network input, every node produces one new value.
//! Shapes are full ONNX shapes with the batch dimension fixed to 1 (the constant of a batch
//! is that of one sample). Nodes are stored in a topological order, so a single
//! forward sweep evaluates the graph and a single backward sweep propagates cotangents.
//!
//! A network is built node by node with [`super::NetworkBuilder`]: each operation infers and
//! checks its output shape as it is added, so every network obeys the same rules.

use super::ops::Op;
use crate::error::{Error, Result};

/// Index of a value (tensor) in a [`Network`]. Value 0 is the network input.
pub type ValueId = usize;

/// Largest number of activation elements a network may hold in one tensor (2³¹): larger
/// tensors are refused before anything is allocated.
pub const MAX_TENSOR_ELEMENTS: usize = 1 << 31;

/// Largest tensor rank accepted anywhere (numpy's own limit is 64): a shape of rank ten
/// million would otherwise be copied into every node that reads it.
pub const MAX_RANK: usize = 64;

/// Who reads a value: a node (by index) or the graph's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    /// Node `k`.
    Node(usize),
    /// The network's output.
    Output,
}

/// One operation of the graph.
#[derive(Debug, Clone)]
pub struct Node {
    /// The name (the ONNX node name, or one made up from the output and op).
    pub name: String,
    /// The operator as the user knows it ("Conv", "Gemm", "MatMul", "BatchNormalization", …).
    pub kind: String,
    /// What it computes.
    pub op: Op,
    /// Input values.
    pub inputs: Vec<ValueId>,
    /// The value it produces.
    pub output: ValueId,
    /// For Conv and Dense nodes: an upper bound on `‖W_source − W‖_F`, how far the `f32`
    /// weights kept here are from the weights the source stored (f64 initializers, a Gemm's
    /// `alpha`, weights folded from other constants); 0 when they are exact. Layer bounds
    /// are widened by it. For an elementwise scale: a bound on `max|s_source − s|` (a scale
    /// folded from other constants), added to its constant; such a scale is not folded into
    /// a layer.
    pub weight_error: f64,
    /// The module of the source model the node belongs to, where the exporter recorded it
    /// (`layer1.0.conv1`: a layer's weight name, or PyTorch's name scopes); for reports.
    pub module: Option<String>,
}

/// A network: an input, nodes in topological order, and one or more outputs.
#[derive(Debug, Clone)]
pub struct Network {
    /// Where it came from (file name, or "network").
    pub(crate) source: String,
    /// Shape of every value; `shapes[0]` is the input's.
    pub(crate) shapes: Vec<Vec<usize>>,
    /// Names of the values (ONNX tensor names).
    pub(crate) value_names: Vec<String>,
    /// The nodes, in topological order.
    pub(crate) nodes: Vec<Node>,
    /// Output values (several outputs are bounded as one concatenated output).
    pub(crate) outputs: Vec<ValueId>,
}

impl Network {
    /// An empty network with the given input shape (batch dimension included, it is set
    /// to 1). No node yet: the input is the output.
    pub(crate) fn new(source: &str, input_shape: &[usize]) -> Result<Self> {
        let mut shape = input_shape.to_vec();
        if shape.is_empty() {
            return Err(Error::model(source, "the input shape is empty"));
        }
        if shape.len() >= 2 {
            shape[0] = 1;
        }
        check_elements(source, "input", &shape)?;
        Ok(Network {
            source: source.to_string(),
            shapes: vec![shape],
            value_names: vec!["input".to_string()],
            nodes: Vec::new(),
            outputs: vec![0],
        })
    }

    /// Records the source module of the node producing `value` (see [`Node::module`]).
    pub(crate) fn set_module(&mut self, value: ValueId, module: &str) {
        if let Some(n) = self.nodes.iter_mut().find(|n| n.output == value) {
            n.module = Some(module.to_string());
        }
    }

    /// Records that the weights of the node producing `value` are within `error`
    /// (Frobenius norm) of the source's; see [`Node::weight_error`].
    pub(crate) fn set_weight_error(&mut self, value: ValueId, error: f64) -> Result<()> {
        if !(error >= 0.0 && error.is_finite()) {
            return Err(Error::invalid(
                "weight error",
                error,
                "must be finite and ≥ 0",
            ));
        }
        match self.nodes.iter_mut().find(|n| n.output == value) {
            Some(n) => {
                n.weight_error = error;
                Ok(())
            }
            None => Err(Error::invalid("value", value, "is produced by no node")),
        }
    }

    /// Where it came from (file name, or the name given to the builder).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The nodes, in topological order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The shape of every value; value 0 is the input.
    pub fn shapes(&self) -> &[Vec<usize>] {
        &self.shapes
    }

    /// The names of the values (ONNX tensor names).
    pub fn value_names(&self) -> &[String] {
        &self.value_names
    }

    /// The output values (several outputs are bounded as one concatenated output).
    pub fn outputs(&self) -> &[ValueId] {
        &self.outputs
    }

    /// The shapes of a node's inputs.
    pub fn input_shapes(&self, node: &Node) -> Vec<&[usize]> {
        node.inputs
            .iter()
            .map(|&v| self.shapes[v].as_slice())
            .collect()
    }

    /// The input shape (batch 1).
    pub fn input_shape(&self) -> &[usize] {
        &self.shapes[0]
    }

    /// Number of elements of a value.
    pub fn len_of(&self, v: ValueId) -> usize {
        self.shapes[v].iter().product()
    }

    /// Appends a node computing `op` from `inputs`, checks it and infers its output shape.
    /// The new value becomes the (single) network output. Returns the new value.
    pub(crate) fn push(
        &mut self,
        name: &str,
        kind: &str,
        op: impl Into<Op>,
        inputs: &[ValueId],
    ) -> Result<ValueId> {
        for &v in inputs {
            if v >= self.shapes.len() {
                return Err(Error::model(
                    &self.source,
                    format!("node '{name}' ({kind}): input value {v} does not exist"),
                ));
            }
        }
        let in_shapes: Vec<&[usize]> = inputs.iter().map(|&v| self.shapes[v].as_slice()).collect();
        let op = op.into();
        let shape = op.output_shape(&in_shapes).map_err(|e| match e {
            Error::NonFinite { what, index, value } => Error::NonFinite {
                what: format!("{}: node '{name}' ({kind}): {what}", self.source),
                index,
                value,
            },
            other => Error::model(&self.source, format!("node '{name}' ({kind}): {other}")),
        })?;
        check_elements(&self.source, &format!("output of node '{name}'"), &shape)?;
        let output = self.shapes.len();
        self.shapes.push(shape);
        self.value_names.push(format!("{name}:out"));
        self.nodes.push(Node {
            name: name.to_string(),
            kind: kind.to_string(),
            op,
            inputs: inputs.to_vec(),
            output,
            weight_error: 0.0,
            module: None,
        });
        self.outputs = vec![output];
        Ok(output)
    }

    /// Bytes needed to hold every activation once in `f64` (what one forward pass keeps).
    pub fn activation_bytes(&self) -> u128 {
        self.shapes
            .iter()
            .map(|s| s.iter().map(|&d| d as u128).product::<u128>() * 8)
            .sum()
    }

    /// For each value, who reads it: nodes (each once) and the graph's outputs.
    pub fn readers(&self) -> Vec<Vec<Reader>> {
        let mut c = vec![Vec::new(); self.shapes.len()];
        for (k, node) in self.nodes.iter().enumerate() {
            for &v in &node.inputs {
                if !c[v].contains(&Reader::Node(k)) {
                    c[v].push(Reader::Node(k));
                }
            }
        }
        for &o in &self.outputs {
            c[o].push(Reader::Output);
        }
        c
    }

    /// For each value, the node that produces it (`None` for the input).
    pub fn producers(&self) -> Vec<Option<usize>> {
        let mut p = vec![None; self.shapes.len()];
        for (k, n) in self.nodes.iter().enumerate() {
            p[n.output] = Some(k);
        }
        p
    }

    /// Which nodes contribute to an output (the others are dead and skipped).
    pub fn live_nodes(&self) -> Vec<bool> {
        let mut live_value = vec![false; self.shapes.len()];
        for &o in &self.outputs {
            live_value[o] = true;
        }
        let mut live = vec![false; self.nodes.len()];
        for (k, node) in self.nodes.iter().enumerate().rev() {
            if live_value[node.output] {
                live[k] = true;
                for &v in &node.inputs {
                    live_value[v] = true;
                }
            }
        }
        live
    }
}

fn check_elements(source: &str, what: &str, shape: &[usize]) -> Result<()> {
    if shape.len() > MAX_RANK {
        return Err(Error::model(
            source,
            format!(
                "{what} has rank {}, over the limit of {MAX_RANK}",
                shape.len()
            ),
        ));
    }
    let mut n: usize = 1;
    for &d in shape {
        if d == 0 {
            return Err(Error::model(
                source,
                format!("{what} has an empty shape {shape:?}"),
            ));
        }
        n = n.saturating_mul(d);
    }
    if n > MAX_TENSOR_ELEMENTS {
        return Err(Error::model(
            source,
            format!(
                "{what} of shape {shape:?} has more than {MAX_TENSOR_ELEMENTS} elements; refused"
            ),
        ));
    }
    Ok(())
}
