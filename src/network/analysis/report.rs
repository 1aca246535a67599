//! What an analysis reports: per-layer intervals, merged runs and the network bounds.

use super::super::lower::LowerBound;
use super::super::ops::LayerMethod;
use crate::bound::{serialize_label, Bound, Certificate};
use serde::Serialize;

/// One linear layer (Conv, Gemm, MatMul) and its certified interval.
#[derive(Debug, Clone, Serialize)]
pub struct LayerResult {
    /// Node name.
    pub name: String,
    /// The source model's module (`layer1.0.conv1`), where the exporter recorded it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    /// Operator ("Conv", "Gemm", "MatMul").
    pub op: String,
    /// Input shape (batch 1).
    pub input_shape: Vec<usize>,
    /// Output shape (batch 1).
    pub output_shape: Vec<usize>,
    /// Certified lower end.
    pub lower: f64,
    /// Proven upper end.
    pub upper: f64,
    /// How `upper` is proven (serialised as "exact", "deterministic",
    /// "probabilistic(delta=…)").
    #[serde(serialize_with = "serialize_label")]
    pub certificate: Certificate,
    /// How the interval was computed.
    pub method: LayerMethod,
    /// Iterations of the iterative method (0 for closed forms).
    pub iterations: u32,
    /// Operator applications.
    pub matvecs: u64,
    /// Wall time.
    pub seconds: f64,
    /// Nodes folded into this layer (BatchNorm, constant scales), by name.
    pub folded: Vec<String>,
    /// Whether the layer uses circular padding (a wrap-Pad merged in).
    pub circular: bool,
    /// In words, the route taken and why: which bound gave each end, which operator the
    /// iterations used (`lipschitz analyze --explain` prints it).
    pub route: String,
    /// The full interval.
    #[serde(skip)]
    pub bound: Bound,
}

/// A way to bound a whole network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkMethod {
    /// AutoLip: layer bounds composed along the graph (BatchNorm folded, linear runs merged).
    Product,
    /// The LipLT recursion over products of consecutive affine maps, for chains of affine
    /// maps and slope-restricted activations (docs/methods.md).
    #[serde(rename = "liplt")]
    LipLT,
    /// ECLipsE-Fast: closed-form multipliers of the LipSDP-Neuron program, one per
    /// activation node, on the unrolled network (any graph of affine maps and
    /// slope-restricted activations), verified like LipSDP-Neuron (docs/methods.md).
    #[serde(rename = "eclipse")]
    Eclipse,
    /// LipSDP-Neuron on the unrolled network, solved by an interior-point method and verified by a
    /// Cholesky factorisation with every rounding error absorbed (docs/methods.md).
    #[serde(rename = "lipsdp")]
    LipSdp,
}

impl NetworkMethod {
    /// Every method, in the order they are computed.
    pub const ALL: [NetworkMethod; 4] = [
        NetworkMethod::Product,
        NetworkMethod::LipLT,
        NetworkMethod::Eclipse,
        NetworkMethod::LipSdp,
    ];

    /// The methods a user's choice names: "auto" (all), or "product", "liplt", "eclipse",
    /// "lipsdp" (each with the product, which is always computed).
    pub fn selection(choice: &str) -> crate::Result<Vec<NetworkMethod>> {
        let one = match choice {
            "auto" => return Ok(NetworkMethod::ALL.to_vec()),
            "product" => return Ok(vec![NetworkMethod::Product]),
            "liplt" => NetworkMethod::LipLT,
            "eclipse" => NetworkMethod::Eclipse,
            "lipsdp" => NetworkMethod::LipSdp,
            other => {
                return Err(crate::Error::invalid(
                    "method",
                    other,
                    "expected auto, product, liplt, eclipse or lipsdp",
                ))
            }
        };
        Ok(vec![NetworkMethod::Product, one])
    }

    /// Its name for people: "product", "LipLT", "ECLipsE-Fast", "LipSDP-Neuron".
    pub fn label(self) -> &'static str {
        match self {
            NetworkMethod::Product => "product",
            NetworkMethod::LipLT => "LipLT",
            NetworkMethod::Eclipse => "ECLipsE-Fast",
            NetworkMethod::LipSdp => "LipSDP-Neuron",
        }
    }
}

/// One network bound.
#[derive(Debug, Clone, Serialize)]
pub struct MethodResult {
    /// The method.
    pub name: NetworkMethod,
    /// Its proven upper bound.
    pub upper: f64,
    /// Its certificate.
    #[serde(serialize_with = "serialize_label")]
    pub certificate: Certificate,
    /// Time it took (for the product: the layer bounds and the composition).
    pub seconds: f64,
}

/// A run of affine nodes bounded as one operator.
#[derive(Debug, Clone, Serialize)]
pub struct MergedRun {
    /// Node names in order.
    pub nodes: Vec<String>,
    /// Product of the separate bounds.
    pub product: f64,
    /// Certified interval of the merged operator.
    pub lower: f64,
    /// Its upper end (used when below the product).
    pub upper: f64,
    /// Its certificate.
    #[serde(serialize_with = "serialize_label")]
    pub certificate: Certificate,
}

/// The whole-network result.
#[derive(Debug, Clone, Serialize)]
pub struct NetworkResult {
    /// Certified lower bound of the network's constant (a pair of inputs attains it), or
    /// `None` when not computed.
    pub lower: Option<f64>,
    /// Proven upper bound.
    pub upper: f64,
    /// Certificate of `upper`.
    #[serde(serialize_with = "serialize_label")]
    pub certificate: Certificate,
    /// The method that gave `upper` (the smallest of `methods`).
    pub method: NetworkMethod,
    /// Every network bound computed, with its certificate and time.
    pub methods: Vec<MethodResult>,
    /// AutoLip with every node bounded separately: the same composition without merging
    /// linear runs (BatchNorm stays folded).
    pub naive_product: f64,
    /// Details of the lower-bound search.
    pub lower_search: Option<LowerBound>,
    /// Linear runs bounded as one operator.
    pub merged_runs: Vec<MergedRun>,
    /// `upper / lower`: how far the certificate can be from the truth.
    pub gap: Option<f64>,
    /// The composed bound fell below f64's normal range: `upper` is still a valid bound
    /// (every product is rounded up, so it never underflows to 0) but has lost relative
    /// precision.
    pub underflow: bool,
    /// What the numbers do not say by themselves (a skipped lower bound and why, an
    /// underflow), for people reading the report.
    pub notes: Vec<String>,
}

/// Everything an analysis produces.
#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    /// Where the network came from.
    pub model: String,
    /// Input shape (batch 1).
    pub input_shape: Vec<usize>,
    /// Linear layers in graph order.
    pub layers: Vec<LayerResult>,
    /// The network bounds.
    pub network: NetworkResult,
    /// Wall time.
    pub seconds: f64,
}
