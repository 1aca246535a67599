//! The importer: walks the graph in order, folds constant subgraphs, and lowers each node
//! through the dispatch table [`OPERATORS`].

use super::activation;
use super::attrs::node_label;
use super::elementwise;
use super::linear;
use super::norm;
use super::order;
use super::pool;
use super::proto::{
    tensor_shape_proto::dimension, type_proto, GraphProto, ModelProto, NodeProto, ValueInfoProto,
};
use super::reshape;
use super::select;
use super::tensor::{Budget, Const};
use super::ImportOptions;
use crate::conv::PaddingMode;
use crate::error::{Error, Result};
use crate::network::ops::{Activation, Broadcast, Op};
use crate::network::MAX_RANK;
use crate::network::{Network, NetworkBuilder, ValueId};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::PathBuf;

/// Lowers one ONNX node (already known to read at least one activation) into the network.
pub(super) type Lowering = fn(&mut Importer, &NodeProto, &str) -> Result<()>;

/// Every supported ONNX operator and its lowering. Adding an operator is one entry here
/// (and, for a new kind of operation, one type in `network/ops/`).
pub(super) const OPERATORS: &[(&str, Lowering)] = &[
    ("Conv", linear::conv),
    ("ConvTranspose", linear::conv_transpose),
    ("Gemm", linear::gemm),
    ("MatMul", linear::matmul),
    ("Add", elementwise::add),
    ("Sub", elementwise::sub),
    ("Mul", elementwise::mul),
    ("Div", elementwise::div),
    ("BatchNormalization", elementwise::batch_norm),
    ("Relu", |i, n, l| i.unary(n, l, Activation::Relu)),
    ("LeakyRelu", activation::leaky_relu),
    ("Elu", activation::elu),
    ("Selu", activation::selu),
    ("Sigmoid", |i, n, l| i.unary(n, l, Activation::Sigmoid)),
    ("HardSigmoid", activation::hard_sigmoid),
    ("Tanh", |i, n, l| i.unary(n, l, Activation::Tanh)),
    ("Softplus", |i, n, l| i.unary(n, l, Activation::Softplus)),
    ("Gelu", activation::gelu),
    ("HardSwish", |i, n, l| i.unary(n, l, Activation::HardSwish)),
    ("Clip", activation::clip),
    ("PRelu", activation::prelu),
    ("Softmax", activation::softmax),
    ("MaxPool", pool::pool),
    ("AveragePool", pool::pool),
    ("GlobalAveragePool", pool::global_average_pool),
    ("GlobalMaxPool", pool::global_max_pool),
    ("ReduceMean", pool::reduce_mean),
    ("Flatten", reshape::flatten),
    ("Reshape", reshape::reshape),
    ("Squeeze", reshape::squeeze),
    ("Unsqueeze", reshape::squeeze),
    ("Identity", reshape::identity),
    ("Dropout", reshape::identity),
    ("Concat", reshape::concat),
    ("Pad", reshape::pad),
    ("Transpose", select::selection),
    ("Slice", select::selection),
    ("Split", select::selection),
    ("Gather", select::selection),
    ("Expand", select::selection),
    ("Tile", select::selection),
    ("GatherND", select::selection),
    ("Where", select::where_),
    ("DepthToSpace", select::selection),
    ("SpaceToDepth", select::selection),
    ("Resize", select::resize),
    ("Upsample", select::resize),
    ("Max", order::extremum),
    ("Min", order::extremum),
    ("TopK", order::top_k),
    ("ReduceMax", order::reduce_extremum),
    ("ReduceMin", order::reduce_extremum),
    ("Abs", order::abs),
    ("Neg", order::neg),
    ("Mish", |i, n, l| i.unary(n, l, Activation::Mish)),
    ("Softsign", |i, n, l| i.unary(n, l, Activation::Softsign)),
    ("Erf", |i, n, l| i.unary(n, l, Activation::Erf)),
    ("Log", activation::log),
    ("LayerNormalization", norm::layer_norm),
    ("InstanceNormalization", norm::instance_norm),
    ("GroupNormalization", norm::group_norm),
];

/// Operators that make a network not globally Lipschitz, with the reason.
pub(super) const NOT_LIPSCHITZ: &[(&str, &str)] = &[
    ("Exp", "eˣ has a derivative that grows without bound"),
    (
        "Log",
        "ln x has a derivative that grows without bound near 0",
    ),
    (
        "Reciprocal",
        "1/x has a derivative that grows without bound near 0",
    ),
    (
        "Sqrt",
        "√x has a derivative that grows without bound near 0",
    ),
    (
        "Pow",
        "xᵖ has a derivative that grows without bound (as |x| grows for p > 1, near 0 for p < 1)",
    ),
    (
        "Einsum",
        "an Einsum of activations is a product of tensors that depend on the input",
    ),
];

/// The module of the source model a node belongs to, for reports: a layer's weight name
/// without `.weight` (`layer1.0.conv1.weight`, kept by both PyTorch exporters), else the
/// innermost module of PyTorch's name scopes (`['', 'layer1', 'layer1.0', 'layer1.0.relu',
/// 'relu_1']` gives `layer1.0.relu`: the last entry is the operation).
fn module_of(node: &NodeProto) -> Option<String> {
    let layer = matches!(
        node.op_type.as_str(),
        "Conv" | "ConvTranspose" | "Gemm" | "MatMul"
    );
    if let Some(w) = node.input.get(1).filter(|_| layer) {
        if let Some(m) = w
            .strip_suffix(".weight")
            .filter(|m| !m.is_empty() && !m.contains("::"))
        {
            return Some(m.to_string());
        }
    }
    let scopes = node
        .metadata_props
        .iter()
        .find(|p| p.key == "pkg.torch.onnx.name_scopes")?;
    let parts: Vec<&str> = scopes
        .value
        .trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .map(|p| p.trim().trim_matches('\'').trim_matches('"'))
        .collect();
    let module = parts.get(parts.len().checked_sub(2)?)?;
    (!module.is_empty() && module.len() <= 200).then(|| module.to_string())
}

/// A standalone Pad on (N, C, H, W) that may merge into the conv reading it.
#[derive(Debug, Clone, Copy)]
pub(super) struct PadInfo {
    pub(super) input: ValueId,
    pub(super) mode: PaddingMode,
    pub(super) zero_fill: bool,
    pub(super) spatial: [usize; 4],
}

/// The state of one import: the constants and activations seen so far, by name.
pub(super) struct Importer {
    /// The model's name, for messages.
    pub(super) src: String,
    /// The model's canonical folder (external data is read only from inside it).
    pub(super) base_dir: Option<PathBuf>,
    /// The ai.onnx opset the model declares.
    pub(super) opset: i64,
    /// Constant tensors by name.
    pub(super) consts: HashMap<String, Const>,
    /// Activations (values of the network) by name.
    pub(super) values: HashMap<String, ValueId>,
    pub(super) net: Option<NetworkBuilder>,
    /// How many nodes (and graph outputs) read each tensor name.
    pub(super) readers: HashMap<String, usize>,
    /// The ONNX node (op type, first input) that produced each value.
    pub(super) producer: HashMap<ValueId, (String, ValueId)>,
    /// Standalone pads that a conv reading them may absorb.
    pub(super) pads: HashMap<ValueId, PadInfo>,
    /// External-data files opened so far.
    pub(super) files: HashMap<PathBuf, File>,
    pub(super) budget: Budget,
    /// Every node's op type, inputs and outputs, and the nodes reading each tensor name:
    /// what the fusions that look ahead (MaxMin) need.
    pub(super) graph: GraphIndex,
    /// The nodes that stop the analysis (unsupported, or not globally Lipschitz), with why.
    pub(super) blockers: Vec<String>,
    /// The tensor names computed from a blocked node (their readers are skipped).
    pub(super) blocked: HashSet<String>,
    /// Outputs of nodes lowered together with the node reading them (the halves of a
    /// MaxMin): activations that exist only inside that lowering.
    pub(super) deferred: HashSet<String>,
}

/// The graph's structure, for lowerings that look at a node's neighbours.
#[derive(Debug, Default)]
pub(super) struct GraphIndex {
    /// `(op type, inputs, outputs)` of every node.
    pub(super) nodes: Vec<(String, Vec<String>, Vec<String>)>,
    /// The node producing each tensor name.
    pub(super) producer: HashMap<String, usize>,
    /// The nodes reading each tensor name (graph outputs count as a reader `usize::MAX`).
    pub(super) consumers: HashMap<String, Vec<usize>>,
}

impl Importer {
    pub(super) fn new(name: &str, base_dir: Option<PathBuf>, budget: Budget) -> Self {
        Importer {
            src: name.to_string(),
            base_dir,
            opset: 0,
            consts: HashMap::new(),
            values: HashMap::new(),
            net: None,
            readers: HashMap::new(),
            producer: HashMap::new(),
            pads: HashMap::new(),
            files: HashMap::new(),
            budget,
            graph: GraphIndex::default(),
            blockers: Vec::new(),
            blocked: HashSet::new(),
            deferred: HashSet::new(),
        }
    }

    pub(super) fn import(&mut self, model: &ModelProto, opts: &ImportOptions) -> Result<Network> {
        let graph = model
            .graph
            .as_ref()
            .ok_or_else(|| self.err("the model has no graph"))?;
        self.opset = self.read_opset(model)?;
        if graph.node.is_empty() {
            return Err(self.err(format!("graph '{}' has no nodes", graph.name)));
        }
        for t in &graph.initializer {
            let c = self.decode_tensor(t)?;
            self.consts.insert(t.name.clone(), c);
        }
        if !graph.sparse_initializer.is_empty() {
            return Err(self.err("sparse initializers are not supported"));
        }
        self.check_single_assignment(graph)?;
        for (k, node) in graph.node.iter().enumerate() {
            for i in &node.input {
                *self.readers.entry(i.clone()).or_default() += 1;
                self.graph.consumers.entry(i.clone()).or_default().push(k);
            }
            for o in &node.output {
                self.graph.producer.insert(o.clone(), k);
            }
            self.graph.nodes.push((
                node.op_type.clone(),
                node.input.clone(),
                node.output.clone(),
            ));
        }
        for o in &graph.output {
            *self.readers.entry(o.name.clone()).or_default() += 1;
            self.graph
                .consumers
                .entry(o.name.clone())
                .or_default()
                .push(usize::MAX);
        }

        let input = self.data_input(graph)?;
        let shape = self.input_shape(input, opts)?;
        let mut net = NetworkBuilder::new(&self.src, &shape)?;
        net.name_value(0, &input.name)?;
        self.net = Some(net);
        self.values.insert(input.name.clone(), 0);

        for (index, node) in graph.node.iter().enumerate() {
            if node.input.iter().any(|i| self.blocked.contains(i)) {
                // Downstream of a blocker: not analysed, not reported again.
                self.blocked.extend(node.output.iter().cloned());
                continue;
            }
            self.import_node(node, index).map_err(|e| match e {
                Error::Model { .. } | Error::TooLarge { .. } => e,
                other => self.err(format!("node {}: {other}", node_label(node, index))),
            })?;
        }
        if !self.blockers.is_empty() {
            let list: Vec<String> = self
                .blockers
                .iter()
                .enumerate()
                .map(|(i, b)| format!("({}) {b}", i + 1))
                .collect();
            let unsupported = self.blockers.iter().any(|b| b.contains("is not supported"));
            let names: Vec<&str> = OPERATORS.iter().map(|(n, _)| *n).collect();
            return Err(self.err(format!(
                "{} node(s) stop the analysis: {}{}",
                self.blockers.len(),
                list.join("; "),
                if unsupported {
                    format!(
                        " (supported operators: {}, Constant, Shape)",
                        names.join(", ")
                    )
                } else {
                    String::new()
                }
            )));
        }

        let outputs = self.graph_outputs(graph)?;
        let mut net = self.net.take().expect("network");
        net.set_outputs(&outputs)?;
        Ok(net.finish())
    }

    /// The ai.onnx opset the model declares (7 to 23).
    fn read_opset(&self, model: &ModelProto) -> Result<i64> {
        let opset = model
            .opset_import
            .iter()
            .filter(|o| o.domain.is_empty() || o.domain == "ai.onnx")
            .map(|o| o.version)
            .max()
            .ok_or_else(|| self.err("the model declares no ai.onnx opset (opset_import)"))?;
        if !(7..=23).contains(&opset) {
            return Err(self.err(format!("opset {opset} is not supported (opsets 7–23 are)")));
        }
        Ok(opset)
    }

    /// The data input: the one graph input that is not an initializer.
    fn data_input<'g>(&self, graph: &'g GraphProto) -> Result<&'g ValueInfoProto> {
        let data_inputs: Vec<_> = graph
            .input
            .iter()
            .filter(|i| !self.consts.contains_key(&i.name))
            .collect();
        match data_inputs.as_slice() {
            [one] => Ok(*one),
            [] => Err(self.err("the graph has no data input (every input is an initializer)")),
            many => {
                let names: Vec<_> = many.iter().map(|i| i.name.as_str()).collect();
                Err(self.err(format!(
                    "the graph has {} data inputs {names:?}; only single-input networks are supported",
                    many.len()
                )))
            }
        }
    }

    /// The values of the graph outputs (each must be produced by a node).
    fn graph_outputs(&self, graph: &GraphProto) -> Result<Vec<ValueId>> {
        let mut outputs = Vec::new();
        for o in &graph.output {
            match self.values.get(&o.name) {
                Some(&v) => outputs.push(v),
                None if self.consts.contains_key(&o.name) => {
                    return Err(self.err(format!(
                        "graph output '{}' is a constant, independent of the input",
                        o.name
                    )))
                }
                None => {
                    return Err(
                        self.err(format!("graph output '{}' is produced by no node", o.name))
                    )
                }
            }
        }
        if outputs.is_empty() {
            return Err(self.err("the graph declares no outputs"));
        }
        Ok(outputs)
    }

    pub(super) fn err(&self, detail: impl Into<String>) -> Error {
        Error::model(&self.src, detail)
    }

    pub(super) fn net(&mut self) -> &mut NetworkBuilder {
        self.net.as_mut().expect("network created before nodes")
    }

    /// ONNX graphs are in single static assignment form: every value name is defined once
    /// (a graph input, an initializer — which may also be listed as an input — or a node
    /// output). onnxruntime refuses a model that breaks it, and so do we: a second definition
    /// would silently replace the first.
    pub(super) fn check_single_assignment(&self, graph: &GraphProto) -> Result<()> {
        use std::collections::HashSet;
        let mut defined: HashSet<&str> = HashSet::new();
        for t in &graph.initializer {
            if !defined.insert(&t.name) {
                return Err(self.err(format!("initializer '{}' is defined twice", t.name)));
            }
        }
        let mut inputs: HashSet<&str> = HashSet::new();
        for i in &graph.input {
            if !inputs.insert(&i.name) {
                return Err(self.err(format!("graph input '{}' is listed twice", i.name)));
            }
            defined.insert(&i.name);
        }
        for (index, node) in graph.node.iter().enumerate() {
            for o in node.output.iter().filter(|o| !o.is_empty()) {
                if !defined.insert(o) {
                    return Err(self.err(format!(
                        "node {}: output '{o}' is already defined (ONNX values are assigned once)",
                        node_label(node, index)
                    )));
                }
            }
        }
        Ok(())
    }

    /// The input shape from the model, overridden or completed by the user's.
    pub(super) fn input_shape(
        &self,
        input: &ValueInfoProto,
        opts: &ImportOptions,
    ) -> Result<Vec<usize>> {
        let declared: Option<Vec<Option<i64>>> = input
            .r#type
            .as_ref()
            .and_then(|t| t.value.as_ref())
            .and_then(|v| match v {
                type_proto::Value::TensorType(t) => t.shape.as_ref(),
                _ => None,
            })
            .map(|s| {
                if s.dim.len() > MAX_RANK {
                    return Err(self.err(format!(
                        "input '{}' has rank {}, over the limit of {MAX_RANK}",
                        input.name,
                        s.dim.len()
                    )));
                }
                Ok(s.dim
                    .iter()
                    .map(|d| match d.value {
                        Some(dimension::Value::DimValue(v)) if v > 0 => Some(v),
                        _ => None,
                    })
                    .collect())
            })
            .transpose()?;
        if let Some(user) = &opts.input_shape {
            if user.len() > MAX_RANK {
                return Err(self.err(format!(
                    "--input-shape has rank {}, over the limit of {MAX_RANK}",
                    user.len()
                )));
            }
            if user.iter().any(|&d| d <= 0) {
                return Err(self.err(format!("--input-shape {user:?} has a dimension ≤ 0")));
            }
            if let Some(d) = &declared {
                if d.len() != user.len() {
                    return Err(self.err(format!(
                        "input '{}' has rank {} but --input-shape {user:?} has rank {}",
                        input.name,
                        d.len(),
                        user.len()
                    )));
                }
                // Declared sizes are overridden: conv nets accept any image size, and shape
                // inference below checks that the graph still fits together.
            }
            return Ok(user.iter().map(|&d| d as usize).collect());
        }
        let d = declared.ok_or_else(|| {
            self.err(format!(
                "input '{}' has no declared shape; pass --input-shape",
                input.name
            ))
        })?;
        d.iter()
            .enumerate()
            .map(|(axis, v)| match v {
                Some(v) => Ok(*v as usize),
                None if axis == 0 => Ok(1),
                None => Err(self.err(format!(
                    "input '{}' has a dynamic dimension on axis {axis}; pass --input-shape (e.g. --input-shape 1,3,224,224)",
                    input.name
                ))),
            })
            .collect()
    }

    pub(super) fn var(&self, name: &str, node: &str) -> Result<ValueId> {
        self.values.get(name).copied().ok_or_else(|| {
            if self.consts.contains_key(name) {
                self.err(format!(
                    "node {node}: input '{name}' is a constant where an activation is expected"
                ))
            } else {
                self.err(format!(
                    "node {node}: input '{name}' is produced by no earlier node and is not an initializer"
                ))
            }
        })
    }

    pub(super) fn constant(&self, name: &str, node: &str, role: &str) -> Result<&Const> {
        self.consts.get(name).ok_or_else(|| {
            if self.values.contains_key(name) {
                self.err(format!(
                    "node {node}: {role} '{name}' depends on the input; it must be a constant initializer"
                ))
            } else {
                self.err(format!(
                    "node {node}: {role} '{name}' is missing (no initializer or constant of that name)"
                ))
            }
        })
    }

    pub(super) fn optional_const(&self, node: &NodeProto, i: usize) -> Option<&Const> {
        node.input
            .get(i)
            .filter(|n| !n.is_empty())
            .and_then(|n| self.consts.get(n))
    }

    pub(super) fn shape_of(&self, v: ValueId) -> Vec<usize> {
        self.net.as_ref().expect("network").network().shapes[v].clone()
    }

    pub(super) fn push(
        &mut self,
        node: &NodeProto,
        label: &str,
        kind: &str,
        op: impl Into<Op>,
        inputs: &[ValueId],
    ) -> Result<()> {
        for extra in node.output.iter().skip(1) {
            if !extra.is_empty() && self.readers.get(extra).copied().unwrap_or(0) > 0 {
                return Err(self.err(format!(
                    "node {label}: its secondary output '{extra}' is used, which is not supported"
                )));
            }
        }
        self.push_output(node, 0, label, kind, op, inputs)
    }

    /// Adds `op` as the producer of the node's output `k` (each output of a `Split` is a
    /// node of its own), named after the node (and the output, past the first).
    pub(super) fn push_output(
        &mut self,
        node: &NodeProto,
        k: usize,
        label: &str,
        kind: &str,
        op: impl Into<Op>,
        inputs: &[ValueId],
    ) -> Result<()> {
        let out = node
            .output
            .get(k)
            .ok_or_else(|| self.err(format!("node {label} has no output {k}")))?
            .clone();
        let base = if node.name.is_empty() {
            node.output
                .first()
                .cloned()
                .unwrap_or_else(|| label.to_string())
        } else {
            node.name.clone()
        };
        let name = if k == 0 {
            base
        } else {
            format!("{base}:{out}")
        };
        let v = self.add_node(&name, label, kind, op, inputs)?;
        if let Some(module) = module_of(node) {
            self.net().set_module(v, &module);
        }
        self.net().name_value(v, &out)?;
        self.values.insert(out, v);
        self.producer.insert(
            v,
            (node.op_type.clone(), inputs.first().copied().unwrap_or(0)),
        );
        Ok(())
    }

    /// Adds a node that no ONNX output names (a step of a lowering that takes several),
    /// after checking that its output fits the memory limit.
    pub(super) fn add_node(
        &mut self,
        name: &str,
        label: &str,
        kind: &str,
        op: impl Into<Op>,
        inputs: &[ValueId],
    ) -> Result<ValueId> {
        let v = self.net().node(name, kind, op, inputs)?;
        // Every value becomes an f64 activation when the network is evaluated.
        let bytes = self.net().network().len_of(v) as u128 * 8;
        if bytes > self.budget.limit as u128 {
            let shape = self.net().network().shapes[v].clone();
            return Err(Error::TooLarge {
                what: format!("{}: output {shape:?} of node {label}", self.src),
                needed: bytes,
                limit: self.budget.limit as u128,
            });
        }
        Ok(v)
    }

    /// Records `node` as a blocker (reported with every other one at the end of the import)
    /// and marks its outputs, so that the nodes reading them are skipped.
    pub(super) fn block(&mut self, node: &NodeProto, label: &str, why: String) -> Result<()> {
        self.blockers.push(format!("{label}: {why}"));
        self.blocked.extend(node.output.iter().cloned());
        Ok(())
    }

    /// A blocker that no method can lift: the node makes the network not globally Lipschitz.
    /// Where its output shape follows from its inputs', a stand-in takes its place so that
    /// the import goes on and finds every other blocker.
    pub(super) fn not_lipschitz(&mut self, node: &NodeProto, label: &str, why: &str) -> Result<()> {
        self.blockers.push(format!(
            "{label}: not globally Lipschitz: {why}, so no finite constant exists"
        ));
        let vars: Vec<ValueId> = node
            .input
            .iter()
            .filter_map(|i| self.values.get(i).copied())
            .collect();
        let shapes: Vec<Vec<usize>> = vars.iter().map(|&v| self.shape_of(v)).collect();
        let shape = match (node.op_type.as_str(), shapes.as_slice()) {
            ("MatMul", [a, b]) if a.len() >= 2 && b.len() >= 2 && a.len() == b.len() => {
                let mut s = a.clone();
                *s.last_mut().expect("rank ≥ 2") = b[b.len() - 1];
                Some(s)
            }
            ("Mul" | "Div", [a, b]) => super::const_eval::broadcast_dims(a, b).ok(),
            (_, [a]) if node.input.len() <= 2 => Some(a.clone()),
            _ => None,
        };
        match shape {
            Some(shape) => {
                let stand_in = crate::network::ops::Unanalysable {
                    kind: node.op_type.clone(),
                    shape,
                };
                self.push(node, label, &node.op_type.clone(), stand_in, &vars)
            }
            None => {
                self.blocked.extend(node.output.iter().cloned());
                Ok(())
            }
        }
    }

    /// Keeps a constant under the node's output name (its memory was charged where it was
    /// made: `decode_tensor`, `constant_node`, `fold_constant`).
    pub(super) fn add_const(&mut self, node: &NodeProto, c: Const) {
        if let Some(out) = node.output.first() {
            self.consts.insert(out.clone(), c);
        }
    }

    /// A constant broadcast against a tensor of shape `shape`, its memory charged first (a
    /// constant whose axes are not contiguous expands to the whole tensor).
    pub(super) fn broadcast(
        &mut self,
        dims: &[usize],
        values: &[f64],
        shape: &[usize],
        label: &str,
    ) -> Result<Broadcast> {
        self.budget.charge(
            Broadcast::stored_len(dims, shape) as u128 * 8,
            &format!("node {label}: constant operand broadcast to {shape:?}"),
        )?;
        Broadcast::from_constant(dims, values, shape)
            .map_err(|e| self.err(format!("node {label}: {e}")))
    }

    /// Records the weight rounding of the layer `node` just produced.
    pub(super) fn record_weight_error(&mut self, node: &NodeProto, error: f64) -> Result<()> {
        if error > 0.0 {
            let v = self.values[&node.output[0]];
            self.net().set_weight_error(v, error)?;
        }
        Ok(())
    }

    /// The activation a single-input operator reads (input 0) and its shape.
    pub(super) fn main_input(
        &self,
        node: &NodeProto,
        label: &str,
    ) -> Result<(ValueId, Vec<usize>)> {
        let x = self.var(node.input.first().map(String::as_str).unwrap_or(""), label)?;
        Ok((x, self.shape_of(x)))
    }

    /// Adds `op` on the node's input 0, named after the node.
    pub(super) fn unary(&mut self, node: &NodeProto, label: &str, op: impl Into<Op>) -> Result<()> {
        let (x, _) = self.main_input(node, label)?;
        self.push(node, label, &node.op_type.clone(), op, &[x])
    }

    fn import_node(&mut self, node: &NodeProto, index: usize) -> Result<()> {
        let label = node_label(node, index);
        if !(node.domain.is_empty() || node.domain == "ai.onnx") {
            return Err(self.err(format!(
                "node {label}: operator domain '{}' is not supported (only the default ONNX domain)",
                node.domain
            )));
        }
        if node.output.first().is_none_or(String::is_empty) {
            return Err(self.err(format!("node {label} has no output")));
        }
        let any_var = node
            .input
            .iter()
            .any(|i| self.values.contains_key(i) || self.deferred.contains(i));
        match node.op_type.as_str() {
            "Constant" => {
                let c = self.constant_node(node, &label)?;
                self.add_const(node, c);
                Ok(())
            }
            "Shape" => self.shape_node(node, &label),
            _ if !any_var => match self.fold_constant(node, &label) {
                // A constant that cannot be evaluated stops only what depends on it, so that
                // every other blocker is found too.
                Err(Error::Model { detail, .. }) => {
                    let why = detail.split_once(": ").map_or(detail.as_str(), |(_, w)| w);
                    self.block(node, &label, format!("cannot be evaluated ({why})"))
                }
                other => other,
            },
            op => match OPERATORS.iter().find(|(name, _)| *name == op) {
                Some((_, lower)) => lower(self, node, &label),
                None => match NOT_LIPSCHITZ.iter().find(|(name, _)| *name == op) {
                    Some((_, why)) => self.not_lipschitz(node, &label, why),
                    None => self.block(node, &label, format!("operator '{op}' is not supported")),
                },
            },
        }
    }
}
