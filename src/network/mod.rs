//! Whole networks: a graph of typed operations, certified network bounds
//! (AutoLip with folding and merged linear runs) and an empirical lower bound.
//!
//! ```no_run
//! use lipschitz::network::{analyze, AnalysisOptions};
//! use lipschitz::onnx::{load_onnx, ImportOptions};
//! let net = load_onnx("model.onnx".as_ref(), &ImportOptions::default())?;
//! let report = analyze(&net, &AnalysisOptions::default())?;
//! println!("L ∈ [{:?}, {}]", report.network.lower, report.network.upper);
//! # Ok::<(), lipschitz::Error>(())
//! ```

mod analysis;
mod builder;
mod eval;
mod graph;
mod lower;
pub mod ops;

pub use analysis::{
    analyze, analyze_with_progress, Analysis, AnalysisOptions, LayerResult, MergedRun,
    MethodResult, NetworkMethod, NetworkResult, Progress,
};
pub use builder::NetworkBuilder;
pub use eval::{Evaluator, Trace};
pub use graph::{Network, Node, Reader, ValueId, MAX_RANK, MAX_TENSOR_ELEMENTS};
pub use lower::{empirical_lower_bound, LowerBound, LowerOptions};
pub use ops::{
    Activation, AvgPool, Broadcast, Concat, Conv, Dense, Gather, GlobalMaxPool, LayerMethod,
    MaxPool, Op, Pool2d, ReduceMean, Reshape, Softmax,
};
