//! What every iterative estimator keeps: the best certified lower end and the vector that
//! attains it, the best proven upper end, the counts, and the caps. One type, so that
//! certifying a candidate, checking the stopping rule and assembling the [`Bound`] are
//! written once for Lanczos, block Lanczos, power iteration and the exact SVD.

use super::{certified_ratio, Hints};
use crate::bound::{meets_tolerance, Bound, Certificate, Method, Options, Stop};
use crate::operator::LinearOperator;
use std::time::{Duration, Instant};

/// How a cycle of a restarted Krylov method ended.
pub(crate) enum End {
    /// The run is over.
    Stop(Stop),
    /// The basis is full or broke down: start again from this vector (or block).
    Restart(Vec<f64>),
}

/// The state of one estimator run.
pub(crate) struct Tracker {
    method: Method,
    rtol: f64,
    started: Instant,
    time_limit: Option<Duration>,
    max_iterations: u32,
    /// Best certified lower end so far.
    pub lower: f64,
    /// The vector attaining it (empty before the first certification).
    pub best: Vec<f64>,
    /// Best proven upper end so far.
    pub upper: f64,
    /// Its certificate.
    pub certificate: Certificate,
    /// Steps taken.
    pub iterations: u32,
    /// Operator applications (of `A` or `Aᵀ`).
    pub matvecs: u64,
}

impl Tracker {
    /// A run of `method` under `opts`, starting from the caller's proven upper bound if any.
    pub fn new(method: Method, opts: &Options, hints: &Hints<'_>) -> Self {
        let (upper, certificate) = hints.upper.unwrap_or((f64::INFINITY, Certificate::None));
        Tracker {
            method,
            rtol: opts.rtol,
            started: Instant::now(),
            time_limit: opts.time_limit,
            max_iterations: opts.max_iterations,
            lower: 0.0,
            best: Vec::new(),
            upper,
            certificate,
            iterations: 0,
            matvecs: 0,
        }
    }

    /// Keeps a proven upper bound if it is the best so far.
    pub fn offer_upper(&mut self, value: f64, certificate: Certificate) {
        if value < self.upper {
            self.upper = value;
            self.certificate = certificate;
        }
    }

    /// Which cap, if any, stops the run now.
    pub fn cap(&self) -> Option<Stop> {
        if self.iterations >= self.max_iterations {
            Some(Stop::IterationCap)
        } else if self.time_limit.is_some_and(|t| self.started.elapsed() >= t) {
            Some(Stop::TimeCap)
        } else {
            None
        }
    }

    /// Does `estimate` (an uncertified value) already meet `rtol` against the upper end?
    pub fn looks_done(&self, estimate: f64) -> bool {
        meets_tolerance(estimate, self.upper, self.rtol)
    }

    /// Pushes `candidate` through the operator (one application), keeps it if it attains a
    /// better lower end, and says whether the run is over: `Converged` when the interval
    /// meets `rtol`, else the cap that stopped it.
    pub fn certify(
        &mut self,
        op: &dyn LinearOperator,
        candidate: &[f64],
        tmp: &mut [f64],
        cap: Option<Stop>,
    ) -> Option<Stop> {
        let ratio = certified_ratio(op, candidate, tmp);
        if ratio > self.lower || self.best.is_empty() {
            self.lower = self.lower.max(ratio);
            self.best.clear();
            self.best.extend_from_slice(candidate);
        }
        self.matvecs += 1;
        if meets_tolerance(self.lower, self.upper, self.rtol) {
            Some(Stop::Converged)
        } else {
            cap
        }
    }

    /// The final [`Bound`] (`upper` never below the attained `lower`) and the vector.
    pub fn finish(self, stop: Stop) -> (Bound, Vec<f64>) {
        let bound = Bound {
            lower: self.lower,
            upper: self.upper.max(self.lower),
            certificate: self.certificate,
            method: self.method,
            iterations: self.iterations,
            matvecs: self.matvecs,
            stop,
            seconds: self.started.elapsed().as_secs_f64(),
        };
        (bound, self.best)
    }
}
