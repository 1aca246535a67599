//! [`NetworkBuilder`]: the one way to make a [`Network`]. The ONNX importer, the C ABI, the
//! benchmarks and the tests all build through it, so every network obeys the same rules:
//! each node's output shape is inferred and checked by its operation when it is added.
//!
//! ```
//! use lipschitz::conv::Conv2d;
//! use lipschitz::network::{analyze, Activation, AnalysisOptions, NetworkBuilder};
//! let mut b = NetworkBuilder::new("tiny", &[1, 1, 4, 4])?;
//! b.conv(Conv2d::new(2, 1, [3, 3], [4, 4]).padding(1), vec![0.1; 18], None)?;
//! b.activation(Activation::Relu)?;
//! b.flatten()?;
//! b.dense(vec![0.05; 3 * 32], 3, 32, None)?;
//! let net = b.finish();
//! let report = analyze(&net, &AnalysisOptions::default())?;
//! // A pair of inputs attains the lower end; the upper end is proven.
//! assert!(report.network.lower.unwrap() <= report.network.upper);
//! # Ok::<(), lipschitz::Error>(())
//! ```

use super::graph::{Network, ValueId};
use super::ops::{
    Activation, Affine, AvgPool, Conv, Dense, MaxPool, Op, Pool2d, ReduceMean, Reshape, Sum,
};
use crate::conv::Conv2d;
use crate::error::{Error, Result};

/// Builds a network node by node. Operations that take one input read the *current* value
/// (the last one added, or the one chosen with [`NetworkBuilder::select`]); the new value
/// becomes current and the network's single output.
#[derive(Debug, Clone)]
pub struct NetworkBuilder {
    net: Network,
    current: ValueId,
}

impl NetworkBuilder {
    /// A network with one input of the given shape (batch dimension included; it is set to
    /// 1) and no node yet. `source` names it in messages and reports.
    pub fn new(source: &str, input_shape: &[usize]) -> Result<Self> {
        Ok(NetworkBuilder {
            net: Network::new(source, input_shape)?,
            current: 0,
        })
    }

    /// Continues building after the outputs of an existing network (the first output is
    /// current).
    pub fn from_network(net: Network) -> Self {
        let current = net.outputs.first().copied().unwrap_or(0);
        NetworkBuilder { net, current }
    }

    /// The network built so far.
    pub fn network(&self) -> &Network {
        &self.net
    }

    /// The network.
    pub fn finish(self) -> Network {
        self.net
    }

    /// The value the next single-input operation reads.
    pub fn current(&self) -> ValueId {
        self.current
    }

    /// Makes `v` the current value (to branch from an earlier point).
    pub fn select(&mut self, v: ValueId) -> Result<()> {
        self.check_value(v)?;
        self.current = v;
        Ok(())
    }

    /// The shape of value `v` (batch 1).
    pub fn shape(&self, v: ValueId) -> Result<&[usize]> {
        self.check_value(v)?;
        Ok(&self.net.shapes[v])
    }

    fn check_value(&self, v: ValueId) -> Result<()> {
        if v >= self.net.shapes.len() {
            return Err(Error::invalid(
                "value",
                v,
                &format!(
                    "is not a tensor of this network (it has {})",
                    self.net.shapes.len()
                ),
            ));
        }
        Ok(())
    }

    /// Appends `op` reading `inputs`, with a node name and the operator name users know
    /// (`kind`: "Conv", "Gemm", "BatchNormalization", …). Checks the operation against the
    /// input shapes; returns the new value, which becomes current.
    pub fn node(
        &mut self,
        name: &str,
        kind: &str,
        op: impl Into<Op>,
        inputs: &[ValueId],
    ) -> Result<ValueId> {
        self.current = self.net.push(name, kind, op, inputs)?;
        Ok(self.current)
    }

    /// Appends `op` reading the current value; the node is named after `kind` and its index
    /// (`conv0`, `relu1`, …).
    pub fn then(&mut self, kind: &str, op: impl Into<Op>) -> Result<ValueId> {
        let name = format!("{}{}", kind.to_lowercase(), self.net.nodes.len());
        let current = self.current;
        self.node(&name, kind, op, &[current])
    }

    /// A 2-D convolution (`conv` must describe the current tensor), OIHW weights.
    pub fn conv(
        &mut self,
        conv: Conv2d,
        weight: Vec<f32>,
        bias: Option<Vec<f32>>,
    ) -> Result<ValueId> {
        self.then("Conv", Conv { conv, weight, bias })
    }

    /// A dense layer `y = W x + b` on the last axis (`W` row-major, rows = outputs).
    pub fn dense(
        &mut self,
        weight: Vec<f32>,
        rows: usize,
        cols: usize,
        bias: Option<Vec<f32>>,
    ) -> Result<ValueId> {
        let op = Dense {
            weight,
            rows,
            cols,
            bias,
        };
        self.then("Gemm", op)
    }

    /// An elementwise activation.
    pub fn activation(&mut self, a: Activation) -> Result<ValueId> {
        self.then(a.name(), a)
    }

    /// Inference BatchNorm over axis 1 (see [`Affine::batch_norm`]).
    pub fn batch_norm(
        &mut self,
        gamma: &[f64],
        beta: &[f64],
        mean: &[f64],
        var: &[f64],
        eps: f64,
    ) -> Result<ValueId> {
        let shape = self.shape(self.current)?.to_vec();
        let op = Affine::batch_norm(&shape, gamma, beta, mean, var, eps)?;
        self.then("BatchNormalization", op)
    }

    /// Max pooling on `(1, C, H, W)`.
    pub fn max_pool(&mut self, pool: Pool2d) -> Result<ValueId> {
        self.then("MaxPool", MaxPool(pool))
    }

    /// Average pooling on `(1, C, H, W)`.
    pub fn avg_pool(&mut self, pool: Pool2d, count_include_pad: bool) -> Result<ValueId> {
        let op = AvgPool {
            pool,
            count_include_pad,
        };
        self.then("AveragePool", op)
    }

    /// Global average pooling and flattening: `(1, C, H, W) → (1, C)`.
    pub fn global_avg_pool(&mut self) -> Result<ValueId> {
        let shape = self.shape(self.current)?;
        if shape.len() != 4 {
            return Err(Error::invalid(
                "global average pooling input",
                format!("{shape:?}"),
                "needs a (1, C, H, W) tensor",
            ));
        }
        let op = ReduceMean {
            axes: vec![2, 3],
            keepdims: false,
        };
        self.then("GlobalAveragePool", op)
    }

    /// Flattening: `(1, …) → (1, n)`.
    pub fn flatten(&mut self) -> Result<ValueId> {
        let len = self.net.len_of(self.current);
        self.then("Flatten", Reshape(vec![1, len]))
    }

    /// `current + v` (a residual connection; the shapes must be equal).
    pub fn add(&mut self, v: ValueId) -> Result<ValueId> {
        self.check_value(v)?;
        let name = format!("add{}", self.net.nodes.len());
        let current = self.current;
        self.node(&name, "Add", Sum::ADD, &[current, v])
    }

    /// Declares the network's outputs (several outputs are bounded as one concatenated
    /// output); by default the last value added.
    pub fn set_outputs(&mut self, outputs: &[ValueId]) -> Result<()> {
        if outputs.is_empty() {
            return Err(Error::model(&self.net.source, "the network has no output"));
        }
        for &v in outputs {
            self.check_value(v)?;
        }
        self.net.outputs = outputs.to_vec();
        Ok(())
    }

    /// Names value `v` (ONNX tensor names, shown in messages).
    pub fn name_value(&mut self, v: ValueId, name: &str) -> Result<()> {
        self.check_value(v)?;
        self.net.value_names[v] = name.to_string();
        Ok(())
    }

    /// Records the source module (`layer1.0.conv1`) of the node producing `value`, shown in
    /// reports; see [`super::Node::module`].
    pub fn set_module(&mut self, value: ValueId, module: &str) {
        self.net.set_module(value, module)
    }

    /// Records that the weights of the node producing `value` are within `error`
    /// (Frobenius norm) of the source's; see [`super::Node::weight_error`].
    pub fn set_weight_error(&mut self, value: ValueId, error: f64) -> Result<()> {
        self.net.set_weight_error(value, error)
    }
}
