//! ONNX import: a `.onnx` file (and its external-data file) into a [`Network`].
//!
//! The protobuf is decoded with prost from the vendored `proto/onnx.proto3` (code generated
//! once by `tools/gen-onnx-proto`, so no `protoc` is needed). Initializers may be stored in
//! typed fields, `raw_data` or external files beside the model (PyTorch 2.x's default
//! exporter writes `<model>.onnx.data`); locations that would leave the model's folder are
//! refused. Every tensor size is checked against the memory limit before anything is
//! allocated. Shapes are inferred through every supported operator; small integer
//! subgraphs that compute shapes (`Shape → Gather → Unsqueeze → Concat → Reshape`, written by
//! the older TorchScript exporter) are folded into constants.
//!
//! `Pad` followed by `Conv` becomes one conv layer: `mode="wrap"` makes it circular (how
//! PyTorch exports `padding_mode="circular"`), constant zero padding merges into the conv's
//! pads. `Mul(x, Sigmoid(x))` becomes SiLU. Anything unsupported is an error naming the
//! operator and the node; nothing is skipped silently.

use super::builder::NetworkBuilder;
use super::graph::{Network, ValueId, MAX_RANK, MAX_TENSOR_ELEMENTS};
use super::onnx_proto::{
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto::dimension,
    type_proto, AttributeProto, ModelProto, NodeProto, TensorProto,
};
use super::ops::conv_for;
use super::ops::{
    Activation, Add, Affine, AvgPool, Broadcast, Concat, Conv, Dense, Gather, GlobalMaxPool,
    MaxPool, Op, PRelu, Pool2d, ReduceMean, Reshape, Softmax, Sub,
};
use crate::bound::round_to_f32;
use crate::conv::PaddingMode;
use crate::error::{Error, Result};
use prost::Message;
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Options for reading a model.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The input shape to use (`[N, C, H, W]` or `[N, F]`), required when the model's input
    /// has dynamic dimensions; it overrides the declared shape otherwise.
    pub input_shape: Option<Vec<i64>>,
    /// Memory (bytes) the importer may allocate in all: the model's bytes and their decoded
    /// form, every tensor, weight copy and folded constant is charged before it is allocated,
    /// and the model is refused past the limit (default 2 GiB).
    pub memory_limit: usize,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            input_shape: None,
            // The same default as every other memory limit (2 GiB).
            memory_limit: crate::Options::default().memory_limit,
        }
    }
}

/// Largest model file read into memory (2 GiB, protobuf's own limit).
const MAX_MODEL_BYTES: u64 = 2 << 30;

/// Reads an ONNX model from a file. External data is looked up beside it, and only there
/// (see the crate's `untrusted` rules: real paths inside the model's real folder, no
/// symbolic links, regular files with one link). The model must be a regular file no larger
/// than protobuf's 2 GiB limit; it and its decoded form count against the memory limit.
pub fn load_onnx(path: &Path, opts: &ImportOptions) -> Result<Network> {
    let name = path.display().to_string();
    let cannot =
        |e: std::io::Error| Error::model(&name, format!("cannot read the model file: {e}"));
    let (file, len) = crate::untrusted::open_user_file(path, MAX_MODEL_BYTES).map_err(cannot)?;
    // The bytes and their decoded protobuf are both held while decoding: refused before
    // reading when they would not fit. The bytes are dropped once decoded.
    let mut budget = Budget::new(&name, opts.memory_limit);
    budget.charge(len as u128 * 2, "the model file and its decoded form")?;
    let bytes = crate::untrusted::read_opened(file, len, MAX_MODEL_BYTES).map_err(cannot)?;
    let model = decode_model(&bytes, &name)?;
    drop(bytes);
    budget.refund(len as u128);
    let base = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    import_model(&model, &name, Some(&base), opts, budget)
}

/// Reads an ONNX model from bytes. `base_dir` is where external data files are looked up
/// (`None`: external data is an error); only regular files whose real path lies inside it
/// are read. The decoded form of the bytes counts against the memory limit.
pub fn load_onnx_bytes(
    bytes: &[u8],
    name: &str,
    base_dir: Option<&Path>,
    opts: &ImportOptions,
) -> Result<Network> {
    let mut budget = Budget::new(name, opts.memory_limit);
    // The decoded protobuf copies every raw tensor out of the bytes.
    budget.charge(bytes.len() as u128, "the decoded model")?;
    let model = decode_model(bytes, name)?;
    import_model(&model, name, base_dir, opts, budget)
}

fn decode_model(bytes: &[u8], name: &str) -> Result<ModelProto> {
    if bytes.is_empty() {
        return Err(Error::model(name, "the file is empty"));
    }
    ModelProto::decode(bytes).map_err(|e| {
        Error::model(
            name,
            format!("not a valid ONNX protobuf (truncated or not a model): {e}"),
        )
    })
}

fn import_model(
    model: &ModelProto,
    name: &str,
    base_dir: Option<&Path>,
    opts: &ImportOptions,
    budget: Budget,
) -> Result<Network> {
    let base_dir = match base_dir {
        Some(b) => Some(b.canonicalize().map_err(|e| {
            Error::model(
                name,
                format!("cannot resolve the model's folder '{}': {e}", b.display()),
            )
        })?),
        None => None,
    };
    let mut importer = Importer {
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
    };
    importer.import(model, opts)
}

/// Memory the importer may still allocate: every allocation proportional to a size read from
/// the file is charged here before it is made, and refused past the limit.
struct Budget {
    source: String,
    limit: usize,
    left: u128,
}

impl Budget {
    fn new(source: &str, limit: usize) -> Self {
        Budget {
            source: source.to_string(),
            limit,
            left: limit as u128,
        }
    }

    fn charge(&mut self, bytes: u128, what: &str) -> Result<()> {
        if bytes > self.left {
            return Err(Error::TooLarge {
                what: format!("{}: {what}", self.source),
                needed: bytes,
                limit: self.limit as u128,
            });
        }
        self.left -= bytes;
        Ok(())
    }

    /// Returns memory charged for something now freed.
    fn refund(&mut self, bytes: u128) {
        self.left = (self.left + bytes).min(self.limit as u128);
    }
}

/// A constant tensor (initializer, Constant node, or a folded shape computation).
#[derive(Debug, Clone)]
struct Const {
    dims: Vec<usize>,
    data: ConstData,
}

/// Values as stored in the file: floats of up to 32 bits as `f32` (exact), doubles as `f64`
/// (so that the interval can contain the norm of the weights as stored), integers as `i64`.
#[derive(Debug, Clone)]
enum ConstData {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
}

/// Layer weights as `f32` and `‖W_file − W‖_F` rounded up (0 when the conversion is exact).
struct Weights {
    values: Vec<f32>,
    error: f64,
}

impl Const {
    fn len(&self) -> usize {
        match &self.data {
            ConstData::F32(v) => v.len(),
            ConstData::F64(v) => v.len(),
            ConstData::I64(v) => v.len(),
        }
    }

    /// The values as `f32` weights, with a bound on the Frobenius norm of what the
    /// conversion changed (see [`crate::bound::round_to_f32`]).
    fn weights(&self) -> Weights {
        let (values, error) = match &self.data {
            ConstData::F32(v) => (v.clone(), 0.0),
            ConstData::F64(v) => round_to_f32(v),
            ConstData::I64(v) => {
                // Integers beyond 2⁵³ are not exact in f64: take the differences in i128.
                let w: Vec<f32> = v.iter().map(|&x| x as f32).collect();
                let sq: f64 = v
                    .iter()
                    .zip(&w)
                    .map(|(&x, &y)| ((x as i128 - y as i128) as f64).powi(2))
                    .sum();
                let e = sq.sqrt() * (1.0 + (v.len() as f64 + 4.0) * f64::EPSILON);
                (w, if sq > 0.0 { e.next_up() } else { 0.0 })
            }
        };
        Weights { values, error }
    }

    fn f32s(&self) -> Vec<f32> {
        self.weights().values
    }

    fn f64s(&self) -> Vec<f64> {
        match &self.data {
            ConstData::F32(v) => v.iter().map(|&x| x as f64).collect(),
            ConstData::F64(v) => v.clone(),
            ConstData::I64(v) => v.iter().map(|&x| x as f64).collect(),
        }
    }

    fn i64s(&self) -> Vec<i64> {
        match &self.data {
            ConstData::F32(v) => v.iter().map(|&x| x as i64).collect(),
            ConstData::F64(v) => v.iter().map(|&x| x as i64).collect(),
            ConstData::I64(v) => v.clone(),
        }
    }

    fn is_int(&self) -> bool {
        matches!(self.data, ConstData::I64(_))
    }
}

/// A standalone Pad on (N, C, H, W) that may merge into the conv reading it.
#[derive(Debug, Clone, Copy)]
struct PadInfo {
    input: ValueId,
    mode: PaddingMode,
    zero_fill: bool,
    spatial: [usize; 4],
}

struct Importer {
    src: String,
    base_dir: Option<PathBuf>,
    opset: i64,
    consts: HashMap<String, Const>,
    values: HashMap<String, ValueId>,
    net: Option<NetworkBuilder>,
    /// How many nodes (and graph outputs) read each tensor name.
    readers: HashMap<String, usize>,
    /// The ONNX node (op type, first input) that produced each value.
    producer: HashMap<ValueId, (String, ValueId)>,
    pads: HashMap<ValueId, PadInfo>,
    files: HashMap<PathBuf, File>,
    budget: Budget,
}

fn node_label(node: &NodeProto, index: usize) -> String {
    if node.name.is_empty() {
        format!("#{index} ({})", node.op_type)
    } else {
        format!("'{}' ({})", node.name, node.op_type)
    }
}

impl Importer {
    fn err(&self, detail: impl Into<String>) -> Error {
        Error::model(&self.src, detail)
    }

    fn net(&mut self) -> &mut NetworkBuilder {
        self.net.as_mut().expect("network created before nodes")
    }

    fn import(&mut self, model: &ModelProto, opts: &ImportOptions) -> Result<Network> {
        let graph = model
            .graph
            .as_ref()
            .ok_or_else(|| self.err("the model has no graph"))?;
        self.opset = model
            .opset_import
            .iter()
            .filter(|o| o.domain.is_empty() || o.domain == "ai.onnx")
            .map(|o| o.version)
            .max()
            .ok_or_else(|| self.err("the model declares no ai.onnx opset (opset_import)"))?;
        if !(7..=23).contains(&self.opset) {
            return Err(self.err(format!(
                "opset {} is not supported (opsets 7–23 are)",
                self.opset
            )));
        }
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
        for node in &graph.node {
            for i in &node.input {
                *self.readers.entry(i.clone()).or_default() += 1;
            }
        }
        for o in &graph.output {
            *self.readers.entry(o.name.clone()).or_default() += 1;
        }

        // The data input: the graph input that is not an initializer.
        let data_inputs: Vec<_> = graph
            .input
            .iter()
            .filter(|i| !self.consts.contains_key(&i.name))
            .collect();
        let input = match data_inputs.as_slice() {
            [one] => *one,
            [] => {
                return Err(self.err("the graph has no data input (every input is an initializer)"))
            }
            many => {
                let names: Vec<_> = many.iter().map(|i| i.name.as_str()).collect();
                return Err(self.err(format!(
                    "the graph has {} data inputs {names:?}; only single-input networks are supported",
                    many.len()
                )));
            }
        };
        let shape = self.input_shape(input, opts)?;
        let mut net = NetworkBuilder::new(&self.src, &shape)?;
        net.name_value(0, &input.name)?;
        self.net = Some(net);
        self.values.insert(input.name.clone(), 0);

        for (index, node) in graph.node.iter().enumerate() {
            self.import_node(node, index).map_err(|e| match e {
                Error::Model { .. } | Error::TooLarge { .. } => e,
                other => self.err(format!("node {}: {other}", node_label(node, index))),
            })?;
        }

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
        let mut net = self.net.take().expect("network");
        net.set_outputs(&outputs)?;
        Ok(net.finish())
    }

    /// ONNX graphs are in single static assignment form: every value name is defined once
    /// (a graph input, an initializer — which may also be listed as an input — or a node
    /// output). onnxruntime refuses a model that breaks it, and so do we: a second definition
    /// would silently replace the first.
    fn check_single_assignment(&self, graph: &super::onnx_proto::GraphProto) -> Result<()> {
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
    fn input_shape(
        &self,
        input: &super::onnx_proto::ValueInfoProto,
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

    // ---- tensors -------------------------------------------------------------------------

    fn decode_tensor(&mut self, t: &TensorProto) -> Result<Const> {
        let what = format!("tensor '{}'", t.name);
        if t.dims.len() > MAX_RANK {
            return Err(self.err(format!(
                "{what} has rank {}, over the limit of {MAX_RANK}",
                t.dims.len()
            )));
        }
        let mut dims = Vec::with_capacity(t.dims.len());
        let mut count: u128 = 1;
        for &d in &t.dims {
            if d < 0 {
                return Err(self.err(format!("{what} has a negative dimension {d}")));
            }
            dims.push(d as usize);
            count = count.saturating_mul(d as u128);
        }
        let dt = DataType::try_from(t.data_type).unwrap_or(DataType::Undefined);
        let (size, kept): (u128, u128) = match dt {
            DataType::Float | DataType::Float16 | DataType::Bfloat16 => (
                match dt {
                    DataType::Float => 4,
                    _ => 2,
                },
                4,
            ),
            DataType::Double => (8, 8),
            DataType::Int64 => (8, 8),
            DataType::Int32 => (4, 8),
            DataType::Int16 => (2, 8),
            DataType::Int8 | DataType::Uint8 | DataType::Bool => (1, 8),
            _ => {
                return Err(self.err(format!(
                    "{what} has data type {} ({:?}), which is not supported (float, double, float16, bfloat16 and integer types are)",
                    t.data_type, dt
                )))
            }
        };
        // The decoded values, and the raw bytes of an external tensor while they are read.
        let external = t.data_location == 1;
        let needed = count.saturating_mul(kept).saturating_add(if external {
            count.saturating_mul(size)
        } else {
            0
        });
        self.budget
            .charge(needed, &format!("{what} (shape {:?})", t.dims))?;
        let count = count as usize;
        let raw_len = count * size as usize;
        let temporary = if external { raw_len as u128 } else { 0 };
        let external_bytes;
        let raw: Option<&[u8]> = if external {
            external_bytes = self.read_external(t, raw_len)?;
            Some(&external_bytes)
        } else if !t.raw_data.is_empty() {
            Some(&t.raw_data)
        } else {
            None
        };
        let data = match raw {
            Some(bytes) => {
                if bytes.len() != raw_len {
                    return Err(self.err(format!(
                        "{what}: {} data bytes for shape {:?} of {:?} (expected {raw_len})",
                        bytes.len(),
                        t.dims,
                        dt,
                    )));
                }
                from_raw(bytes, dt)
            }
            None => {
                let typed_len = match dt {
                    DataType::Float => t.float_data.len(),
                    DataType::Double => t.double_data.len(),
                    DataType::Int64 => t.int64_data.len(),
                    _ => t.int32_data.len(),
                };
                if typed_len != count {
                    return Err(self.err(format!(
                        "{what}: {typed_len} values for shape {:?} ({count} expected); missing or truncated data",
                        t.dims
                    )));
                }
                match dt {
                    DataType::Float => ConstData::F32(t.float_data.clone()),
                    DataType::Double => ConstData::F64(t.double_data.clone()),
                    DataType::Int64 => ConstData::I64(t.int64_data.clone()),
                    DataType::Float16 => ConstData::F32(
                        t.int32_data
                            .iter()
                            .map(|&v| half::f16::from_bits(v as u16).to_f32())
                            .collect(),
                    ),
                    DataType::Bfloat16 => ConstData::F32(
                        t.int32_data
                            .iter()
                            .map(|&v| half::bf16::from_bits(v as u16).to_f32())
                            .collect(),
                    ),
                    _ => ConstData::I64(t.int32_data.iter().map(|&v| v as i64).collect()),
                }
            }
        };
        // The raw bytes of an external tensor are dropped here.
        self.budget.refund(temporary);
        let bad = match &data {
            ConstData::F32(v) => v
                .iter()
                .position(|x| !x.is_finite())
                .map(|i| (i, v[i] as f64)),
            ConstData::F64(v) => v.iter().position(|x| !x.is_finite()).map(|i| (i, v[i])),
            ConstData::I64(_) => None,
        };
        if let Some((i, v)) = bad {
            return Err(self.err(format!("{what} has a non-finite value {v} at index {i}")));
        }
        Ok(Const { dims, data })
    }

    /// Reads an external-data tensor's bytes from a regular file inside the model's folder
    /// (the rules of `crate::untrusted`).
    fn read_external(&mut self, t: &TensorProto, expected: usize) -> Result<Vec<u8>> {
        let what = format!("tensor '{}'", t.name);
        let mut location = None;
        let (mut offset, mut length) = (0u64, None);
        for kv in &t.external_data {
            match kv.key.as_str() {
                "location" => location = Some(kv.value.clone()),
                "offset" => {
                    offset = kv.value.parse().map_err(|_| {
                        self.err(format!("{what}: bad external data offset '{}'", kv.value))
                    })?
                }
                "length" => {
                    length = Some(kv.value.parse::<u64>().map_err(|_| {
                        self.err(format!("{what}: bad external data length '{}'", kv.value))
                    })?)
                }
                _ => {}
            }
        }
        let location = location
            .ok_or_else(|| self.err(format!("{what}: external data without a location")))?;
        let base = self.base_dir.clone().ok_or_else(|| {
            self.err(format!(
                "{what} is stored in external file '{location}', but the model was given as bytes"
            ))
        })?;
        if let Some(l) = length {
            if l != expected as u64 {
                return Err(self.err(format!(
                    "{what}: external data length {l} does not match its shape ({expected} bytes)"
                )));
            }
        }
        let (file, real) = crate::untrusted::open_inside(&base, &location, &self.src, &what)?;
        let file = self.files.entry(real.clone()).or_insert(file);
        let file_len = file.metadata().map(|m| m.len()).unwrap_or(0);
        if offset.saturating_add(expected as u64) > file_len {
            return Err(Error::model(
                &self.src,
                format!(
                    "{what}: external data [{offset}, +{expected}) lies beyond the end of '{location}' ({file_len} bytes)"
                ),
            ));
        }
        let mut buf = vec![0u8; expected];
        file.seek(SeekFrom::Start(offset))
            .and_then(|_| file.read_exact(&mut buf))
            .map_err(|e| {
                Error::model(&self.src, format!("{what}: cannot read external data: {e}"))
            })?;
        Ok(buf)
    }

    // ---- nodes ---------------------------------------------------------------------------

    fn var(&self, name: &str, node: &str) -> Result<ValueId> {
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

    fn constant(&self, name: &str, node: &str, role: &str) -> Result<&Const> {
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

    fn optional_const(&self, node: &NodeProto, i: usize) -> Option<&Const> {
        node.input
            .get(i)
            .filter(|n| !n.is_empty())
            .and_then(|n| self.consts.get(n))
    }

    fn shape_of(&self, v: ValueId) -> Vec<usize> {
        self.net.as_ref().expect("network").network().shapes[v].clone()
    }

    fn push(
        &mut self,
        node: &NodeProto,
        label: &str,
        kind: &str,
        op: impl Into<Op>,
        inputs: &[ValueId],
    ) -> Result<()> {
        let name = if node.name.is_empty() {
            node.output
                .first()
                .cloned()
                .unwrap_or_else(|| label.to_string())
        } else {
            node.name.clone()
        };
        let v = self.net().node(&name, kind, op, inputs)?;
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
        let out = node
            .output
            .first()
            .ok_or_else(|| self.err(format!("node {label} has no output")))?;
        self.net().name_value(v, out)?;
        self.values.insert(out.clone(), v);
        self.producer.insert(
            v,
            (node.op_type.clone(), inputs.first().copied().unwrap_or(0)),
        );
        for extra in node.output.iter().skip(1) {
            if !extra.is_empty() && self.readers.get(extra).copied().unwrap_or(0) > 0 {
                return Err(self.err(format!(
                    "node {label}: its secondary output '{extra}' is used, which is not supported"
                )));
            }
        }
        Ok(())
    }

    /// Keeps a constant under the node's output name (its memory was charged where it was
    /// made: `decode_tensor`, `constant_node`, `fold_constant`).
    fn add_const(&mut self, node: &NodeProto, c: Const) {
        if let Some(out) = node.output.first() {
            self.consts.insert(out.clone(), c);
        }
    }

    fn import_node(&mut self, node: &NodeProto, index: usize) -> Result<()> {
        let label = node_label(node, index);
        if !(node.domain.is_empty() || node.domain == "ai.onnx") {
            return Err(self.err(format!(
                "node {label}: operator domain '{}' is not supported (only the default ONNX domain)",
                node.domain
            )));
        }
        let op = node.op_type.as_str();
        let inputs: Vec<&str> = node.input.iter().map(String::as_str).collect();
        let any_var = inputs.iter().any(|i| self.values.contains_key(*i));
        if op == "Constant" {
            let c = self.constant_node(node, &label)?;
            self.add_const(node, c);
            return Ok(());
        }
        if op == "Shape" {
            let v = self.var(inputs.first().copied().unwrap_or(""), &label)?;
            let shape: Vec<i64> = self.shape_of(v).iter().map(|&d| d as i64).collect();
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
            return Ok(());
        }
        if !any_var {
            let c = self.fold_constant(node, &label)?;
            self.add_const(node, c);
            return Ok(());
        }
        // Binary elementwise ops take the activation on either side (`Add(bias, MatMul(…))`).
        match op {
            "Add" | "Sub" => return self.add_sub(node, &label, op == "Sub"),
            "Mul" | "Div" => return self.mul_div(node, &label, op == "Div"),
            _ => {}
        }
        let x = self.var(inputs[0], &label)?;
        let xs = self.shape_of(x);
        match op {
            "Conv" => self.conv(node, &label, x, &xs),
            "Gemm" => self.gemm(node, &label, x, &xs),
            "MatMul" => {
                let b = self.constant(inputs.get(1).copied().unwrap_or(""), &label, "weight B")?;
                if b.dims.len() != 2 {
                    return Err(self.err(format!(
                        "node {label}: MatMul weight has shape {:?}; a 2-D constant is required",
                        b.dims
                    )));
                }
                let (k, n) = (b.dims[0], b.dims[1]);
                let copies = b.len() as u128 * 8;
                let name = inputs[1].to_string();
                self.budget.charge(copies, &format!("node {label}: copy of weight '{name}'"))?;
                let b = self.constant(&name, &label, "weight B")?;
                let w = b.weights();
                let op = Dense { weight: transpose(&w.values, k, n), rows: n, cols: k, bias: None };
                self.push(node, &label, "MatMul", op, &[x])?;
                self.record_weight_error(node, w.error)
            }
            "Relu" => self.push(node, &label, op, Activation::Relu, &[x]),
            "LeakyRelu" => {
                let a = self.finite_attr(node, &label, "alpha", 0.01)?;
                self.push(node, &label, op, Activation::LeakyRelu(a), &[x])
            }
            "Elu" => {
                let a = self.finite_attr(node, &label, "alpha", 1.0)?;
                self.push(node, &label, op, Activation::Elu(a), &[x])
            }
            "Selu" => {
                let alpha = self.finite_attr(node, &label, "alpha", 1.673_263_192_176_818_8)?;
                let gamma = self.finite_attr(node, &label, "gamma", 1.050_701_022_148_132_3)?;
                self.push(node, &label, op, Activation::Selu { alpha, gamma }, &[x])
            }
            "Sigmoid" => self.push(node, &label, op, Activation::Sigmoid, &[x]),
            "HardSigmoid" => {
                let alpha = self.finite_attr(node, &label, "alpha", 0.2)?;
                let beta = self.finite_attr(node, &label, "beta", 0.5)?;
                self.push(node, &label, op, Activation::HardSigmoid { alpha, beta }, &[x])
            }
            "Tanh" => self.push(node, &label, op, Activation::Tanh, &[x]),
            "Softplus" => self.push(node, &label, op, Activation::Softplus, &[x]),
            "Gelu" => {
                let tanh = attr_string(node, "approximate").as_deref() == Some("tanh");
                self.push(node, &label, op, Activation::Gelu { tanh }, &[x])
            }
            "Clip" => {
                let (mut min, mut max) = (f64::NEG_INFINITY, f64::INFINITY);
                if self.opset < 11 {
                    min = attr_float(node, "min", f64::NEG_INFINITY);
                    max = attr_float(node, "max", f64::INFINITY);
                } else {
                    for (i, slot) in [(1usize, &mut min), (2, &mut max)] {
                        if let Some(name) = node.input.get(i).filter(|n| !n.is_empty()) {
                            let c = self.constant(name, &label, "Clip limit")?;
                            if c.len() != 1 {
                                return Err(self.err(format!("node {label}: Clip limit '{name}' is not a scalar")));
                            }
                            *slot = c.f64s()[0];
                        }
                    }
                }
                self.push(node, &label, op, Activation::Clip { min, max }, &[x])
            }
            "PRelu" => {
                let s = self.constant(inputs.get(1).copied().unwrap_or(""), &label, "slope")?;
                let (dims, vals) = (s.dims.clone(), s.f64s());
                let b = self.broadcast(&dims, &vals, &xs, &label)?;
                self.push(node, &label, op, PRelu { slope: b }, &[x])
            }
            "Softmax" => {
                let r = xs.len() as i64;
                let default = if self.opset < 13 { 1 } else { -1 };
                let axis = norm_axis(attr_int(node, "axis", default), r)
                    .ok_or_else(|| self.err(format!("node {label}: axis out of range for rank {r}")))?;
                let (len, inner) = if self.opset < 13 {
                    (xs[axis..].iter().product(), 1)
                } else {
                    (xs[axis], xs[axis + 1..].iter().product())
                };
                self.push(node, &label, op, Softmax { len, inner }, &[x])
            }
            "BatchNormalization" => self.batch_norm(node, &label, x, &xs),
            "MaxPool" | "AveragePool" => self.pool(node, &label, x, &xs),
            "GlobalAveragePool" => {
                if xs.len() < 3 {
                    return Err(self.err(format!("node {label}: needs a (N, C, spatial…) input, got {xs:?}")));
                }
                let axes = (2..xs.len()).collect();
                self.push(node, &label, op, ReduceMean { axes, keepdims: true }, &[x])
            }
            "GlobalMaxPool" => self.push(node, &label, op, GlobalMaxPool, &[x]),
            "ReduceMean" => {
                let r = xs.len() as i64;
                let axes: Vec<i64> = if self.opset >= 18 {
                    match self.optional_const(node, 1) {
                        Some(c) => c.i64s(),
                        None if node.input.get(1).is_some_and(|n| !n.is_empty()) => {
                            return Err(self.err(format!("node {label}: axes input must be a constant")))
                        }
                        None => Vec::new(),
                    }
                } else {
                    attr_ints(node, "axes").unwrap_or_default()
                };
                let keepdims = attr_int(node, "keepdims", 1) != 0;
                let mut axes: Vec<usize> = axes
                    .iter()
                    .map(|&a| norm_axis(a, r).ok_or_else(|| self.err(format!("node {label}: axis {a} out of range for rank {r}"))))
                    .collect::<Result<_>>()?;
                if axes.is_empty() {
                    if attr_int(node, "noop_with_empty_axes", 0) != 0 {
                        return self.push(node, &label, "Identity", Reshape(xs.clone()), &[x]);
                    }
                    axes = (0..xs.len()).collect();
                }
                axes.sort_unstable();
                axes.dedup();
                self.push(node, &label, op, ReduceMean { axes, keepdims }, &[x])
            }
            "Flatten" => {
                let r = xs.len() as i64;
                let a = attr_int(node, "axis", 1);
                let a = if a < 0 { a + r } else { a };
                if !(0..=r).contains(&a) {
                    return Err(self.err(format!("node {label}: axis {a} out of range for rank {r}")));
                }
                let a = a as usize;
                let shape = vec![xs[..a].iter().product(), xs[a..].iter().product()];
                self.push(node, &label, op, Reshape(shape), &[x])
            }
            "Reshape" => {
                let s = self.constant(inputs.get(1).copied().unwrap_or(""), &label, "shape")?.i64s();
                let allowzero = attr_int(node, "allowzero", 0) != 0;
                let shape = resolve_reshape(&xs, &s, allowzero)
                    .map_err(|m| self.err(format!("node {label}: {m}")))?;
                self.push(node, &label, op, Reshape(shape), &[x])
            }
            "Squeeze" | "Unsqueeze" => {
                let axes = if self.opset >= 13 {
                    self.optional_const(node, 1).map(|c| c.i64s())
                } else {
                    attr_ints(node, "axes")
                };
                let shape = squeeze_shape(&xs, axes.as_deref(), op == "Unsqueeze")
                    .map_err(|m| self.err(format!("node {label}: {m}")))?;
                self.push(node, &label, op, Reshape(shape), &[x])
            }
            "Identity" | "Dropout" => self.push(node, &label, op, Reshape(xs.clone()), &[x]),
            "Concat" => {
                let r = xs.len() as i64;
                let axis = norm_axis(attr_int(node, "axis", 1), r)
                    .ok_or_else(|| self.err(format!("node {label}: Concat axis out of range for rank {r}")))?;
                let vs: Vec<ValueId> = inputs
                    .iter()
                    .map(|n| self.var(n, &label))
                    .collect::<Result<_>>()?;
                self.push(node, &label, op, Concat(axis), &vs)
            }
            "Pad" => self.pad(node, &label, x, &xs),
            other => Err(self.err(format!(
                "node {label}: operator '{other}' is not supported. Supported: Conv, Gemm, MatMul, Add, Sub, Mul, Div, \
                 Relu, LeakyRelu, PRelu, Elu, Selu, Sigmoid, HardSigmoid, Tanh, Softplus, Gelu, Clip, Softmax, \
                 BatchNormalization, MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool, ReduceMean, Flatten, \
                 Reshape, Squeeze, Unsqueeze, Identity, Dropout, Concat, Pad, Constant, Shape"
            ))),
        }
    }

    fn constant_node(&mut self, node: &NodeProto, label: &str) -> Result<Const> {
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
    fn fold_constant(&mut self, node: &NodeProto, label: &str) -> Result<Const> {
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
        let get = |i: usize| -> Result<Const> {
            let n = node.input.get(i).map(String::as_str).unwrap_or("");
            self.constant(n, label, "input").cloned()
        };
        match node.op_type.as_str() {
            "Identity" | "Cast" => {
                let c = get(0)?;
                let to = attr_int(node, "to", 1);
                Ok(match (node.op_type.as_str(), to) {
                    ("Cast", 1) | ("Cast", 10) | ("Cast", 11) => Const { dims: c.dims.clone(), data: ConstData::F32(c.f32s()) },
                    ("Cast", _) => Const { dims: c.dims.clone(), data: ConstData::I64(c.i64s()) },
                    _ => c,
                })
            }
            "Unsqueeze" | "Squeeze" | "Reshape" | "Flatten" => {
                let c = get(0)?;
                let dims = match node.op_type.as_str() {
                    "Reshape" => resolve_reshape(&c.dims, &get(1)?.i64s(), false),
                    "Flatten" => Ok(vec![1, c.len()]),
                    op => {
                        let axes = if self.opset >= 13 { self.optional_const(node, 1).map(|c| c.i64s()) } else { attr_ints(node, "axes") };
                        squeeze_shape(&c.dims, axes.as_deref(), op == "Unsqueeze")
                    }
                }
                .map_err(|m| self.err(format!("node {label}: {m}")))?;
                Ok(Const { dims, data: c.data })
            }
            "Concat" => {
                let parts: Vec<Const> = (0..node.input.len()).map(get).collect::<Result<_>>()?;
                if parts.iter().all(|p| p.dims.len() <= 1) {
                    let ints = parts.iter().all(Const::is_int);
                    let n: usize = parts.iter().map(Const::len).sum();
                    let data = if ints {
                        ConstData::I64(parts.iter().flat_map(|p| p.i64s()).collect())
                    } else {
                        ConstData::F32(parts.iter().flat_map(|p| p.f32s()).collect())
                    };
                    Ok(Const { dims: vec![n], data })
                } else {
                    Err(self.err(format!("node {label}: only 1-D constant Concat is folded")))
                }
            }
            "Gather" => {
                let (data, idx) = (get(0)?, get(1)?);
                if data.dims.len() != 1 || attr_int(node, "axis", 0) != 0 {
                    return Err(self.err(format!("node {label}: only 1-D constant Gather is folded")));
                }
                let n = data.len() as i64;
                let vals = data.i64s();
                let out: Vec<i64> = idx
                    .i64s()
                    .iter()
                    .map(|&i| {
                        let j = if i < 0 { i + n } else { i };
                        vals.get(j as usize).copied().ok_or_else(|| self.err(format!("node {label}: index {i} out of range")))
                    })
                    .collect::<Result<_>>()?;
                Ok(Const { dims: idx.dims.clone(), data: ConstData::I64(out) })
            }
            op @ ("Mul" | "Add" | "Sub" | "Div") => {
                let (a, b) = (get(0)?, get(1)?);
                if a.len() != b.len() && a.len() != 1 && b.len() != 1 {
                    return Err(self.err(format!("node {label}: constant {op} of shapes {:?} and {:?} is not folded", a.dims, b.dims)));
                }
                let dims = if a.len() >= b.len() { a.dims.clone() } else { b.dims.clone() };
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
                Ok(if a.is_int() && b.is_int() {
                    Const { dims, data: ConstData::I64(vals.iter().map(|&v| v as i64).collect()) }
                } else {
                    Const { dims, data: ConstData::F32(vals.iter().map(|&v| v as f32).collect()) }
                })
            }
            other => Err(self.err(format!(
                "node {label}: operator '{other}' on constant inputs is not supported (it does not depend on the network input)"
            ))),
        }
    }

    fn conv(&mut self, node: &NodeProto, label: &str, x: ValueId, xs: &[usize]) -> Result<()> {
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
        let stride = pair(node, "strides", label).map_err(|m| self.err(m))?;
        let dilation = pair(node, "dilations", label).map_err(|m| self.err(m))?;
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
        let mut pads = self.spatial_pads(node, label, [xs[2], xs[3]], kernel, stride, dilation)?;
        let mut input = x;
        let mut mode = PaddingMode::Zeros;
        let single_reader = self.readers.get(&node.input[0]).copied() == Some(1);
        if let (Some(p), true) = (self.pads.get(&x).copied(), single_reader) {
            match p.mode {
                PaddingMode::Zeros if p.zero_fill => {
                    for (pad, extra) in pads.iter_mut().zip(p.spatial) {
                        *pad += extra;
                    }
                    input = p.input;
                }
                PaddingMode::Circular if pads == [0; 4] => {
                    pads = p.spatial;
                    mode = PaddingMode::Circular;
                    input = p.input;
                }
                _ => {}
            }
        }
        let in_shape = self.shape_of(input);
        let conv = conv_for(
            &in_shape, w_dims[0], kernel, stride, dilation, groups, pads, mode,
        )
        .map_err(|e| self.err(format!("node {label}: {e}")))?;
        let bias = match node.input.get(2).filter(|n| !n.is_empty()) {
            Some(b) => Some(self.constant(b, label, "bias")?.f32s()),
            None => None,
        };
        let weight_count = w_dims.iter().product::<usize>() as u128;
        self.budget.charge(
            weight_count * 4,
            &format!("node {label}: copy of weight '{w_name}'"),
        )?;
        let weights = self.constant(w_name, label, "weight")?.weights();
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

    /// Conv/pool pads `[top, left, bottom, right]` from `pads` or `auto_pad`.
    fn spatial_pads(
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

    fn gemm(&mut self, node: &NodeProto, label: &str, x: ValueId, xs: &[usize]) -> Result<()> {
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
        let b_name = node.input.get(1).map(String::as_str).unwrap_or("");
        let b = self.constant(b_name, label, "weight B")?;
        if b.dims.len() != 2 {
            return Err(self.err(format!(
                "node {label}: weight B has shape {:?}; 2-D expected",
                b.dims
            )));
        }
        let (dims, len) = ([b.dims[0], b.dims[1]], b.len());
        // The f32 copy and, without transB, its transpose.
        let trans_b = attr_int(node, "transB", 0) != 0;
        let copies = if trans_b { 1 } else { 2 };
        self.budget.charge(
            len as u128 * 4 * copies,
            &format!("node {label}: copy of weight '{b_name}'"),
        )?;
        let b = self.constant(b_name, label, "weight B")?;
        let mut w = b.weights();
        if alpha != 1.0 {
            // alpha·w is exact in f64 (two f32 factors): round it once and add what that changed.
            let exact: Vec<f64> = w.values.iter().map(|&v| v as f64 * alpha).collect();
            let (values, error) = round_to_f32(&exact);
            w = Weights {
                values,
                error: if w.error > 0.0 {
                    (w.error * alpha.abs()).next_up() + error
                } else {
                    error
                },
            };
        }
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

    /// A constant broadcast against a tensor of shape `shape`, its memory charged first (a
    /// constant whose axes are not contiguous expands to the whole tensor).
    fn broadcast(
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
    fn record_weight_error(&mut self, node: &NodeProto, error: f64) -> Result<()> {
        if error > 0.0 {
            let v = self.values[&node.output[0]];
            self.net().set_weight_error(v, error)?;
        }
        Ok(())
    }

    /// A float attribute that must be finite (activation parameters, Gemm's alpha/beta): NaN
    /// or ±inf is an error naming the node and the attribute.
    fn finite_attr(&self, node: &NodeProto, label: &str, name: &str, default: f64) -> Result<f64> {
        let v = attr_float(node, name, default);
        if !v.is_finite() {
            return Err(self.err(format!(
                "node {label}: attribute {name} = {v} is not a finite number"
            )));
        }
        Ok(v)
    }

    fn add_sub(&mut self, node: &NodeProto, label: &str, sub: bool) -> Result<()> {
        let kind = if sub { "Sub" } else { "Add" };
        let (a, b) = (
            node.input[0].as_str(),
            node.input.get(1).map(String::as_str).unwrap_or(""),
        );
        match (self.values.get(a).copied(), self.values.get(b).copied()) {
            (Some(va), Some(vb)) => {
                let op: Op = if sub { Sub.into() } else { Add.into() };
                self.push(node, label, kind, op, &[va, vb])
            }
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

    fn mul_div(&mut self, node: &NodeProto, label: &str, div: bool) -> Result<()> {
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

    fn batch_norm(
        &mut self,
        node: &NodeProto,
        label: &str,
        x: ValueId,
        xs: &[usize],
    ) -> Result<()> {
        if xs.len() < 2 {
            return Err(self.err(format!(
                "node {label}: BatchNormalization needs a (N, C, …) input, got {xs:?}"
            )));
        }
        let c = xs[1];
        let mut p = Vec::new();
        for (i, role) in ["scale", "bias", "mean", "var"].iter().enumerate() {
            let t = self.constant(
                node.input.get(i + 1).map(String::as_str).unwrap_or(""),
                label,
                role,
            )?;
            if t.len() != c {
                return Err(self.err(format!(
                    "node {label}: {role} has {} entries but the input {xs:?} has {c} channels",
                    t.len()
                )));
            }
            p.push(t.f64s());
        }
        let eps = attr_float(node, "epsilon", 1e-5);
        let mut a = Vec::with_capacity(c);
        let mut b = Vec::with_capacity(c);
        for (k, &v) in p[3].iter().enumerate() {
            let var = v + eps;
            if var <= 0.0 {
                return Err(self.err(format!(
                    "node {label}: variance + epsilon = {var} ≤ 0 in channel {k}"
                )));
            }
            let s = p[0][k] / var.sqrt();
            a.push(s);
            b.push(p[1][k] - p[2][k] * s);
        }
        let inner = xs[2..].iter().product::<usize>().max(1);
        let op = Affine {
            scale: Broadcast { values: a, inner },
            shift: Broadcast { values: b, inner },
        };
        self.push(node, label, "BatchNormalization", op, &[x])
    }

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
        let stride = pair(node, "strides", label).map_err(|m| self.err(m))?;
        let dilation = pair(node, "dilations", label).map_err(|m| self.err(m))?;
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

    fn pad(&mut self, node: &NodeProto, label: &str, x: ValueId, xs: &[usize]) -> Result<()> {
        let mode = attr_string(node, "mode").unwrap_or_else(|| "constant".into());
        let r = xs.len();
        let (mut pads, value) = if self.opset < 11 {
            (
                attr_ints(node, "pads").unwrap_or_default(),
                attr_float(node, "value", 0.0),
            )
        } else {
            let p = self
                .constant(
                    node.input.get(1).map(String::as_str).unwrap_or(""),
                    label,
                    "pads",
                )?
                .i64s();
            let v = self
                .optional_const(node, 2)
                .map(|c| c.f64s().first().copied().unwrap_or(0.0))
                .unwrap_or(0.0);
            (p, v)
        };
        if let Some(axes) = self.optional_const(node, 3).map(|c| c.i64s()) {
            let mut full = vec![0i64; 2 * r];
            for (i, &a) in axes.iter().enumerate() {
                let a = norm_axis(a, r as i64)
                    .ok_or_else(|| self.err(format!("node {label}: pad axis {a} out of range")))?;
                full[a] = pads.get(i).copied().unwrap_or(0);
                full[a + r] = pads.get(i + axes.len()).copied().unwrap_or(0);
            }
            pads = full;
        }
        if pads.len() != 2 * r {
            return Err(self.err(format!(
                "node {label}: pads has {} values for a rank-{r} input (expected {})",
                pads.len(),
                2 * r
            )));
        }
        let out: Vec<i64> = (0..r)
            .map(|k| {
                (xs[k] as i64)
                    .checked_add(pads[k])
                    .and_then(|d| d.checked_add(pads[k + r]))
                    .ok_or_else(|| {
                        self.err(format!(
                            "node {label}: pads {pads:?} overflow the shape {xs:?}"
                        ))
                    })
            })
            .collect::<Result<_>>()?;
        if out.iter().any(|&d| d <= 0) {
            return Err(self.err(format!(
                "node {label}: pads {pads:?} leave an empty tensor from {xs:?}"
            )));
        }
        let out: Vec<usize> = out.iter().map(|&d| d as usize).collect();
        let total = out
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .filter(|&t| t <= MAX_TENSOR_ELEMENTS)
            .ok_or_else(|| self.err(format!("node {label}: padded shape {out:?} is too large")))?;
        // The gather index (4 bytes per output element) is allocated now: charge it.
        self.budget.charge(
            total as u128 * 4,
            &format!("node {label}: index of the padded shape {out:?}"),
        )?;
        if mode == "reflect" && (0..r).any(|k| pads[k].max(pads[k + r]) >= xs[k] as i64) {
            return Err(self.err(format!(
                "node {label}: reflect pads {pads:?} must be smaller than the input {xs:?}"
            )));
        }
        let m = match mode.as_str() {
            "constant" => 0,
            "reflect" => 1,
            "edge" => 2,
            "wrap" => 3,
            other => {
                return Err(self.err(format!("node {label}: pad mode '{other}' is not supported")))
            }
        };
        let mut index = Vec::with_capacity(total);
        let mut idx = vec![0usize; r];
        for _ in 0..total {
            let mut src = 0usize;
            let mut inside = true;
            for k in 0..r {
                let n = xs[k] as i64;
                let mut p = idx[k] as i64 - pads[k];
                if p < 0 || p >= n {
                    match m {
                        0 => inside = false,
                        1 => {
                            p = if p < 0 { -p } else { 2 * (n - 1) - p };
                        }
                        2 => p = p.clamp(0, n - 1),
                        _ => p = p.rem_euclid(n),
                    }
                }
                src = src * xs[k] + p.clamp(0, n - 1) as usize;
            }
            index.push(if inside { src as u32 } else { u32::MAX });
            for k in (0..r).rev() {
                idx[k] += 1;
                if idx[k] < out[k] {
                    break;
                }
                idx[k] = 0;
            }
        }
        self.push(
            node,
            label,
            "Pad",
            Gather {
                index,
                fill: value,
                shape: out,
            },
            &[x],
        )?;
        let spatial_only = r == 4
            && pads[..2].iter().chain(&pads[4..6]).all(|&p| p == 0)
            && pads.iter().all(|&p| p >= 0);
        if spatial_only && (m == 0 || m == 3) {
            let v = self.values[&node.output[0]];
            self.pads.insert(
                v,
                PadInfo {
                    input: x,
                    mode: if m == 3 {
                        PaddingMode::Circular
                    } else {
                        PaddingMode::Zeros
                    },
                    zero_fill: value == 0.0,
                    spatial: [
                        pads[2] as usize,
                        pads[3] as usize,
                        pads[6] as usize,
                        pads[7] as usize,
                    ],
                },
            );
        }
        Ok(())
    }
}

fn from_raw(bytes: &[u8], dt: DataType) -> ConstData {
    match dt {
        DataType::Float => ConstData::F32(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        ),
        DataType::Double => ConstData::F64(
            bytes
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
                .collect(),
        ),
        DataType::Float16 => ConstData::F32(
            bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
        ),
        DataType::Bfloat16 => ConstData::F32(
            bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
        ),
        DataType::Int64 => ConstData::I64(
            bytes
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
                .collect(),
        ),
        DataType::Int32 => ConstData::I64(
            bytes
                .chunks_exact(4)
                .map(|b| i32::from_le_bytes(b.try_into().unwrap()) as i64)
                .collect(),
        ),
        DataType::Int16 => ConstData::I64(
            bytes
                .chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]]) as i64)
                .collect(),
        ),
        DataType::Int8 => ConstData::I64(bytes.iter().map(|&b| b as i8 as i64).collect()),
        _ => ConstData::I64(bytes.iter().map(|&b| b as i64).collect()),
    }
}

fn transpose(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0; v.len()];
    for i in 0..rows {
        for j in 0..cols {
            t[j * rows + i] = v[i * cols + j];
        }
    }
    t
}

fn find_attr<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

fn attr_int(node: &NodeProto, name: &str, default: i64) -> i64 {
    find_attr(node, name).map(|a| a.i).unwrap_or(default)
}

fn attr_float(node: &NodeProto, name: &str, default: f64) -> f64 {
    find_attr(node, name).map(|a| a.f as f64).unwrap_or(default)
}

fn attr_ints(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
    find_attr(node, name).map(|a| a.ints.clone())
}

fn attr_string(node: &NodeProto, name: &str) -> Option<String> {
    find_attr(node, name)
        .filter(|a| a.r#type == AttributeType::String as i32 || !a.s.is_empty())
        .map(|a| String::from_utf8_lossy(&a.s).into_owned())
}

/// A two-element spatial attribute (`strides`, `dilations`), 1 by default, each ≥ 1.
fn pair(node: &NodeProto, name: &str, label: &str) -> std::result::Result<[usize; 2], String> {
    match attr_ints(node, name) {
        None => Ok([1, 1]),
        Some(v) if v.len() == 2 && v.iter().all(|x| (1..=1 << 20).contains(x)) => {
            Ok([v[0] as usize, v[1] as usize])
        }
        Some(v) => Err(format!("node {label}: {name} {v:?} must be two values ≥ 1")),
    }
}

fn norm_axis(a: i64, rank: i64) -> Option<usize> {
    let a = if a < 0 { a + rank } else { a };
    (0..rank).contains(&a).then_some(a as usize)
}

fn resolve_reshape(
    xs: &[usize],
    target: &[i64],
    allowzero: bool,
) -> std::result::Result<Vec<usize>, String> {
    if target.len() > MAX_RANK {
        return Err(format!(
            "reshape target has rank {}, over the limit of {MAX_RANK}",
            target.len()
        ));
    }
    let n: usize = xs.iter().product();
    let mut out = Vec::with_capacity(target.len());
    let mut infer = None;
    for (k, &t) in target.iter().enumerate() {
        match t {
            -1 if infer.is_none() => {
                infer = Some(k);
                out.push(1);
            }
            0 if !allowzero => out.push(
                *xs.get(k)
                    .ok_or_else(|| format!("reshape 0 at axis {k} has no input axis"))?,
            ),
            t if t > 0 => out.push(t as usize),
            t => {
                return Err(format!(
                    "reshape target {target:?} has an invalid entry {t}"
                ))
            }
        }
    }
    let known: usize = out.iter().product();
    if let Some(k) = infer {
        if known == 0 || !n.is_multiple_of(known) {
            return Err(format!("cannot reshape {xs:?} to {target:?}"));
        }
        out[k] = n / known;
    }
    if out.iter().product::<usize>() != n {
        return Err(format!(
            "cannot reshape {xs:?} ({n} elements) to {target:?}"
        ));
    }
    Ok(out)
}

fn squeeze_shape(
    xs: &[usize],
    axes: Option<&[i64]>,
    unsqueeze: bool,
) -> std::result::Result<Vec<usize>, String> {
    if unsqueeze {
        let axes = axes.ok_or("Unsqueeze needs axes")?;
        if xs.len() + axes.len() > MAX_RANK {
            return Err(format!(
                "Unsqueeze to rank {} is over the limit of {MAX_RANK}",
                xs.len() + axes.len()
            ));
        }
        let r = (xs.len() + axes.len()) as i64;
        let mut ax: Vec<usize> = axes
            .iter()
            .map(|&a| norm_axis(a, r).ok_or(format!("axis {a} out of range")))
            .collect::<std::result::Result<_, _>>()?;
        ax.sort_unstable();
        let mut out = Vec::with_capacity(r as usize);
        let mut it = xs.iter();
        for k in 0..r as usize {
            if ax.contains(&k) {
                out.push(1);
            } else {
                out.push(*it.next().ok_or("bad Unsqueeze axes")?);
            }
        }
        Ok(out)
    } else {
        let r = xs.len() as i64;
        let ax: Vec<usize> = match axes {
            Some(a) => a
                .iter()
                .map(|&a| norm_axis(a, r).ok_or(format!("axis {a} out of range")))
                .collect::<std::result::Result<_, _>>()?,
            None => (0..xs.len()).filter(|&k| xs[k] == 1).collect(),
        };
        let mut ax = ax;
        ax.sort_unstable();
        ax.dedup();
        if let Some(&k) = ax.iter().find(|&&k| xs[k] != 1) {
            return Err(format!("cannot squeeze axis {k} of size {}", xs[k]));
        }
        Ok(xs
            .iter()
            .enumerate()
            .filter(|(k, _)| !ax.contains(k))
            .map(|(_, &d)| d)
            .collect())
    }
}
