//! # lipschitz
//!
//! Certified Lipschitz constants of neural-network layers: the spectral norm `‖W‖₂ = σ₁(W)`
//! of each linear map, computed without forming the matrix of a convolution, as an interval
//! `[lower, upper]` that provably contains it.
//!
//! ## What a result means
//! Every answer is a [`Bound`]: `lower ≤ ‖W‖₂ ≤ upper`.
//! * `lower` is *attained*: a vector `v` with `‖Wv‖/‖v‖ ≥ lower` exists (we found it and
//!   evaluated it in `f64`, rounding margin subtracted).
//! * `upper` is *proven*, and [`Certificate`] says how: `Exact` (a dense decomposition plus a
//!   rounding margin), `Deterministic` (a theorem), or `Probabilistic { delta }` (a Krylov
//!   method from a Gaussian random start; the bound fails with probability at most `delta`).
//!
//! Estimators stop as soon as `upper ≤ lower·(1 + rtol)` ([`Options::rtol`], default `1e-4`),
//! or at the caps in [`Options`], reporting the interval reached. Results are deterministic
//! for a given seed and do not depend on the number of threads.
//!
//! ## Conventions
//! Activations are single samples `x[c][h][w]`; dense weights are row-major with rows =
//! outputs (`y = W x`), as in PyTorch's `Linear` and ONNX `Gemm`.
//!
//! ## Example
//! ```
//! use lipschitz::{dense_norm, Certificate, Options};
//! // A 3×2 layer: σ₁ = √(3 + √5)·… — we only need the interval.
//! let w = [1.0f32, 2.0, 0.0, 1.0, 1.0, 0.0];
//! let b = dense_norm(&w, 3, 2, &Options::default())?;
//! assert!(b.lower <= b.upper && b.meets(1e-4));
//! assert_eq!(b.certificate, Certificate::Exact); // small: dense SVD
//! # Ok::<(), lipschitz::Error>(())
//! ```
//!
//! ## Where things are
//! * Layers: [`dense_norm`] and, for matrix-free operators implementing [`LinearOperator`],
//!   [`spectral_norm`]; convolutions in [`conv`] ([`conv::conv2d_norm`]).
//! * Networks: [`network`] (the graph of operations, [`network::NetworkBuilder`],
//!   [`network::analyze`]), read from ONNX by [`onnx::load_onnx`].
//! * The C ABI: `capi` (feature `capi`, on by default); the command line is the `lipschitz`
//!   binary (feature `cli`).
//!
//! docs/architecture.md in the repository describes the data flow and how to extend it;
//! docs/methods.md the mathematics.

mod bound;
#[cfg(feature = "capi")]
pub mod capi;
pub mod certify;
pub mod conv;
mod dense;
mod error;
mod kernels;
pub mod network;
pub mod npy;
pub mod onnx;
mod operator;
mod spectral;
mod untrusted;
mod util;

pub use bound::{
    check_threads, round_to_f32, time_limit_from_secs, Bound, Certificate, Method, Options, Stop,
};
pub use dense::{dense_matrix_norm, dense_norm, describe_dense_route, DenseMatrix};
pub use error::{Error, Result};
pub use operator::{explicit_matrix, LinearOperator};
pub use spectral::{
    kuczynski_wozniakowski_upper, spectral_norm, spectral_norm_with, spectral_norm_with_vector,
    Hints,
};

/// The README's examples, compiled as doctests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
