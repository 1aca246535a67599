//! ONNX import: a `.onnx` file (and its external-data file) lowered into a [`Network`].
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
//!
//! The importer is a dispatch table (`importer::OPERATORS`): one entry per ONNX operator,
//! each a small function in the file of its family (`linear`, `activation`, `elementwise`,
//! `pool`, `reshape`) that reads the node's attributes and constants and adds the matching
//! operation of [`crate::network::ops`] through [`crate::network::NetworkBuilder`].

mod activation;
mod attrs;
mod const_eval;
mod elementwise;
mod fold;
mod importer;
mod interpolate;
mod linear;
mod norm;
mod order;
mod pool;
#[allow(missing_docs, clippy::all, clippy::pedantic, rustdoc::all)]
pub mod proto;
mod reshape;
mod select;
mod tensor;

use crate::error::{Error, Result};
use crate::network::Network;
use importer::Importer;
use prost::Message;
use proto::ModelProto;
use std::path::{Path, PathBuf};
use tensor::Budget;

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
    Importer::new(name, base_dir, budget).import(model, opts)
}
