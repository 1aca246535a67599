//! What a result means: an interval `[lower, upper]` around the true norm, with a certificate
//! saying how the upper end was proven, and the options that decide when to stop.

use crate::error::{Error, Result};
use serde::Serialize;
use std::time::Duration;

/// How the upper end of a [`Bound`] is proven.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Certificate {
    /// A dense decomposition (SVD or exact per-frequency blocks): `upper` is the computed
    /// value plus a floating-point rounding margin.
    Exact,
    /// A theorem (circular embedding, Gram iteration, composition rules) plus a rounding margin.
    Deterministic,
    /// A Krylov method from a Gaussian random start: `P(σ₁ > upper) ≤ delta` over the draw of
    /// the start (Hochstenbach 2013; Kuczyński & Woźniakowski 1992).
    Probabilistic {
        /// Failure probability of the bound.
        delta: f64,
    },
    /// Nothing proves an upper end: `upper` is `+∞`.
    None,
}

impl Certificate {
    /// The certificate of a bound composed from bounds with these certificates: `None` if
    /// any is `None`; probabilistic with the failure probabilities added (union bound) if
    /// any is probabilistic; exact for a single exact factor; deterministic otherwise.
    pub fn compose(certs: &[Certificate]) -> Certificate {
        let mut delta = 0.0;
        let mut all_exact = true;
        for c in certs {
            match c {
                Certificate::None => return Certificate::None,
                Certificate::Probabilistic { delta: d } => {
                    delta += d;
                    all_exact = false;
                }
                Certificate::Deterministic => all_exact = false,
                Certificate::Exact => {}
            }
        }
        if delta > 0.0 {
            Certificate::Probabilistic {
                delta: delta.min(1.0),
            }
        } else if all_exact && certs.len() <= 1 {
            Certificate::Exact
        } else {
            Certificate::Deterministic
        }
    }

    /// Stable integer code used by the C ABI and JSON consumers.
    pub fn code(&self) -> i32 {
        match self {
            Certificate::Exact => 0,
            Certificate::Deterministic => 1,
            Certificate::Probabilistic { .. } => 2,
            Certificate::None => 3,
        }
    }

    /// Short human-readable label, e.g. `probabilistic(delta=1e-6)`.
    pub fn label(&self) -> String {
        match self {
            Certificate::Exact => "exact".into(),
            Certificate::Deterministic => "deterministic".into(),
            Certificate::Probabilistic { delta } => {
                // Sums of deltas pick up float noise (8.999999999999999e-6 or
                // 1.7000000000000003e-5 for sums of 1e-6): show 12 significant digits. The
                // rounded value may sit below the float sum by that noise (1e-12 relative,
                // meaningless for a failure probability), never by more.
                let tidy: f64 = format!("{delta:.11e}").parse().unwrap_or(*delta);
                let shown = if tidy >= *delta * (1.0 - 1e-12) {
                    tidy
                } else {
                    *delta
                };
                format!("probabilistic(delta={shown:e})")
            }
            Certificate::None => "none".into(),
        }
    }
}

impl std::fmt::Display for Certificate {
    /// The [`Certificate::label`].
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label())
    }
}

/// Serialises a certificate as its [`Certificate::label`] (the form reports use).
pub(crate) fn serialize_label<S: serde::Serializer>(
    c: &Certificate,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&c.label())
}

/// Why an estimator stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stop {
    /// `upper ≤ lower·(1 + rtol)` was reached.
    Converged,
    /// A direct method computed the answer outright.
    Direct,
    /// The iteration cap was hit before the tolerance; the interval reached is reported.
    IterationCap,
    /// The time cap was hit before the tolerance; the interval reached is reported.
    TimeCap,
    /// The lower end stopped improving (Ritz values converged) while the upper end, fixed by
    /// a bound from elsewhere, stays wider than the tolerance: the upper end limits the width.
    UpperLimited,
}

/// Which algorithm computes a spectral norm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Exact dense SVD for small operators, Lanczos otherwise.
    #[default]
    Auto,
    /// Dense SVD of the explicit matrix (formed column by column for matrix-free operators).
    Exact,
    /// Symmetric Lanczos on `AᵀA` with full reorthogonalisation and the a-posteriori
    /// probabilistic upper bound.
    Lanczos,
    /// Block Lanczos (randomised block Krylov) on `AᵀA`, using the operator's block apply.
    BlockLanczos,
    /// Plain power iteration on `AᵀA`: the reference method the benchmarks compare against.
    Power,
}

impl std::str::FromStr for Method {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "auto" => Ok(Method::Auto),
            "exact" => Ok(Method::Exact),
            "lanczos" => Ok(Method::Lanczos),
            "block-lanczos" | "block" => Ok(Method::BlockLanczos),
            "power" => Ok(Method::Power),
            _ => Err(Error::invalid(
                "method",
                s,
                "expected one of auto, exact, lanczos, block-lanczos, power",
            )),
        }
    }
}

/// A certified interval around a spectral norm (or a Lipschitz constant).
///
/// `lower` is attained: some vector `v` has `‖Av‖/‖v‖ ≥ lower` (evaluated in f64 with a
/// rounding margin subtracted). `upper` is proven as `certificate` says.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Bound {
    /// Attained lower end.
    pub lower: f64,
    /// Proven upper end.
    pub upper: f64,
    /// How `upper` is proven.
    pub certificate: Certificate,
    /// The algorithm that produced the result.
    pub method: Method,
    /// Estimator steps (Krylov or power steps; 0 for a direct method).
    pub iterations: u32,
    /// Applications of the operator or its adjoint, each counted once per vector.
    pub matvecs: u64,
    /// Why the estimator stopped.
    pub stop: Stop,
    /// Wall-clock seconds spent.
    pub seconds: f64,
}

impl Bound {
    /// Relative width `upper/lower − 1` (`+∞` when `lower` is 0).
    pub fn relative_width(&self) -> f64 {
        if self.lower > 0.0 {
            self.upper / self.lower - 1.0
        } else if self.upper == 0.0 {
            0.0
        } else {
            f64::INFINITY
        }
    }

    /// Whether the interval meets a relative tolerance.
    pub fn meets(&self, rtol: f64) -> bool {
        meets_tolerance(self.lower, self.upper, rtol)
    }

    /// Midpoint, a convenient point estimate.
    pub fn estimate(&self) -> f64 {
        if self.upper.is_finite() {
            0.5 * (self.lower + self.upper)
        } else {
            self.lower
        }
    }
}

/// The stopping rule of every estimator: `upper ≤ lower·(1 + rtol)` (a zero operator meets any rtol).
impl Bound {
    /// The interval of an operator within `e` (in ℓ2 operator norm) of the one bounded:
    /// `‖A‖ ≤ ‖Ã‖ + ‖A − Ã‖`, so `[lower − e, upper + e]`, rounded outwards. Used when the
    /// weights bounded are a rounded copy of the true ones (f64 weights stored as f32, scales
    /// folded into a layer). An exact certificate becomes deterministic.
    pub fn widen(&mut self, e: f64) {
        if e <= 0.0 {
            return;
        }
        let e = e.next_up();
        self.lower = (self.lower - e).next_down().max(0.0);
        self.upper = (self.upper + e).next_up();
        if self.certificate == Certificate::Exact {
            self.certificate = Certificate::Deterministic;
        }
    }
}

/// Rounds `f64` weights to the `f32` the operators use and returns, with them, an upper
/// bound on `‖W − fl(W)‖_F`: each difference `w − fl(w)` is exact in `f64` (Sterbenz's lemma,
/// or `w` itself when `fl(w)` underflows to 0), so only the sum's rounding is absorbed.
/// A layer bounded on the rounded weights is widened by this (times the operator's
/// Frobenius-to-ℓ2 factor) with [`Bound::widen`], so that the interval contains the norm of
/// the weights as stored. Values beyond `f32`'s range become infinite, which the weight checks
/// then refuse.
pub fn round_to_f32(values: &[f64]) -> (Vec<f32>, f64) {
    let rounded: Vec<f32> = values.iter().map(|&x| x as f32).collect();
    let sq: f64 = values
        .iter()
        .zip(&rounded)
        .map(|(&x, &y)| (x - y as f64) * (x - y as f64))
        .sum();
    let n = values.len() as f64;
    let error = if sq > 0.0 {
        (sq.sqrt() * (1.0 + (n + 2.0) * f64::EPSILON)).next_up()
    } else {
        0.0
    };
    (rounded, error)
}

pub(crate) fn meets_tolerance(lower: f64, upper: f64, rtol: f64) -> bool {
    upper <= lower * (1.0 + rtol) || upper == 0.0
}

/// Most worker threads a caller may ask for (CLI `--threads`, C `LipOptions::threads`):
/// thousands of threads on a small problem only cost time (5000 took 75 s on a 3×4 matrix).
pub const MAX_THREADS: usize = 256;

/// A time limit given in seconds: `Ok(Some(_))` for a positive finite number, `Ok(None)` for
/// one too large to represent (no limit in practice: 10³⁰⁰ s), an error for NaN, ±inf, 0 or
/// a negative number.
pub fn time_limit_from_secs(seconds: f64) -> Result<Option<Duration>> {
    if !(seconds > 0.0 && seconds.is_finite()) {
        return Err(Error::invalid(
            "time limit",
            seconds,
            "must be a positive, finite number of seconds",
        ));
    }
    Ok(Duration::try_from_secs_f64(seconds).ok())
}

/// Checks a requested number of worker threads (1 to `MAX_THREADS`, 256).
pub fn check_threads(threads: usize) -> Result<()> {
    if !(1..=MAX_THREADS).contains(&threads) {
        return Err(Error::invalid(
            "threads",
            threads,
            &format!("must lie between 1 and {MAX_THREADS}"),
        ));
    }
    Ok(())
}

/// Options shared by every estimator. `Options::default()` is what the CLI and C ABI use.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Relative tolerance: stop once `upper ≤ lower·(1 + rtol)`. Must be positive.
    pub rtol: f64,
    /// Failure probability of probabilistic upper bounds, in (0, 1).
    pub delta: f64,
    /// Algorithm.
    pub method: Method,
    /// Cap on estimator steps; the interval reached is returned when it is hit.
    pub max_iterations: u32,
    /// Cap on wall-clock time; the interval reached is returned when it is hit.
    pub time_limit: Option<Duration>,
    /// Seed of the random start; equal seeds give equal results.
    pub seed: u64,
    /// Block size of the block Lanczos method.
    pub block_size: usize,
    /// Memory the estimator may use for its Krylov basis and dense work, in bytes.
    pub memory_limit: usize,
    /// `Method::Auto` uses the exact SVD when `min(m,n)²·max(m,n)` is at most this.
    pub exact_flop_limit: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            rtol: 1e-4,
            delta: 1e-6,
            method: Method::Auto,
            max_iterations: 5000,
            time_limit: None,
            seed: 0x5EED_1A2B,
            block_size: 8,
            memory_limit: 2 << 30,
            exact_flop_limit: 512.0 * 512.0 * 512.0,
        }
    }
}

impl Options {
    /// Options with a given relative tolerance and defaults otherwise.
    pub fn with_rtol(rtol: f64) -> Self {
        Options {
            rtol,
            ..Options::default()
        }
    }

    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        if !(self.rtol > 0.0 && self.rtol.is_finite()) {
            return Err(Error::invalid(
                "rtol",
                self.rtol,
                "must be a finite number > 0",
            ));
        }
        if !(self.delta > 0.0 && self.delta < 1.0) {
            return Err(Error::invalid("delta", self.delta, "must lie in (0, 1)"));
        }
        if self.max_iterations == 0 {
            return Err(Error::invalid("max_iterations", 0, "must be at least 1"));
        }
        if self.block_size == 0 {
            return Err(Error::invalid("block_size", 0, "must be at least 1"));
        }
        if self.memory_limit == 0 {
            return Err(Error::invalid("memory_limit", 0, "must be positive"));
        }
        if self.exact_flop_limit.is_nan() {
            return Err(Error::invalid(
                "exact_flop_limit",
                "NaN",
                "must be a number",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Certificate;

    #[test]
    fn summed_deltas_are_labelled_without_float_noise() {
        let sum = |k: usize| (0..k).map(|_| 1e-6).sum::<f64>();
        assert_eq!(sum(17), 1.7000000000000003e-5);
        for (k, shown) in [(17, "1.7e-5"), (9, "9e-6"), (1, "1e-6")] {
            let label = Certificate::Probabilistic { delta: sum(k) }.label();
            assert_eq!(label, format!("probabilistic(delta={shown})"));
        }
        // Rounding that would show a value more than float noise below itself keeps it whole.
        let odd = Certificate::Probabilistic {
            delta: 1.234567890123456e-5,
        };
        assert_eq!(odd.label(), "probabilistic(delta=1.234567890123456e-5)");
    }
}
