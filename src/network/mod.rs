//! Whole networks: ONNX import, a graph of typed operations, certified network bounds
//! (AutoLip with folding and merged linear runs) and an empirical lower bound.
//!
//! ```no_run
//! use lipschitz::network::{analyze, load_onnx, AnalysisOptions, ImportOptions};
//! let net = load_onnx("model.onnx".as_ref(), &ImportOptions::default())?;
//! let report = analyze(&net, &AnalysisOptions::default(), &mut |_| {})?;
//! println!("L ∈ [{:?}, {}]", report.network.lower, report.network.upper);
//! # Ok::<(), lipschitz::Error>(())
//! ```

mod compose;
pub mod eval;
pub mod graph;
mod lower;
mod onnx;
#[allow(missing_docs, clippy::all, clippy::pedantic, rustdoc::all)]
pub mod onnx_proto;

pub use compose::{
    analyze, Analysis, AnalysisOptions, LayerResult, MergedRun, NetworkResult, Progress,
};
pub use graph::{Activation, Broadcast, Network, Node, Op, Pool2d, ValueId};
pub use lower::{empirical_lower_bound, LowerBound, LowerOptions};
pub use onnx::{load_onnx, load_onnx_bytes, ImportOptions};
