//! The empirical lower bound of a network's Lipschitz constant.
//!
//! Any two inputs give one: `‖f(b) − f(a)‖ / ‖b − a‖ ≤ L` by the definition of `L`. We look
//! for a large quotient from several seeded starts, each in three steps:
//! 1. a start `x`: a standard normal input scaled by one of [`START_SCALES`] in turn (the
//!    worst case of a ReLU network often sits at a different scale from the unit one: near
//!    the biases' kinks, or far out where every unit is in one regime);
//! 2. at `x`, power iteration on `J(x)ᵀJ(x)` through forward- and reverse-mode passes (no
//!    Jacobian is formed) gives the direction `v` of largest local gain; a short pair
//!    `(x, x + h·v)` measures it, and ascent on `x` (along `(J(x+δ) − J(x))ᵀ r`) helps
//!    networks whose gain varies smoothly;
//! 3. a wide pair `(x − w·v/2, x + w·v/2)` is then ascended as two free points on
//!    `log ‖f(b) − f(a)‖ − log ‖b − a‖`, whose gradient is exact for every network: for ReLU
//!    networks `‖J(x)‖` is piecewise constant and has no gradient, but the quotient of a wide
//!    pair averages the Jacobians along the segment and moves its endpoints towards the
//!    regions of larger gain. The segment's midpoint then gets a local measurement (step 2).
//!
//! The reported value is the largest quotient actually evaluated, in `f64` with the direct
//! convolution, minus a rounding margin — a pair of inputs attains it, so it is a true lower
//! bound, not an estimate (docs/architecture.md, invariants). Starts stop when the time
//! budget is spent, so the effort scales down with the model's cost and stays bounded.

use super::eval::{Evaluator, Trace};
use super::graph::Network;
use crate::error::Result;
use crate::kernels::norm2;
use crate::spectral::{gaussian, rng_for};
use serde::Serialize;
use std::time::{Duration, Instant};

/// How hard to look for a large quotient.
#[derive(Debug, Clone)]
pub struct LowerOptions {
    /// Starts (random inputs) to search from.
    pub samples: usize,
    /// Power-iteration steps at each point (fewer once the gain has converged).
    pub power_iterations: usize,
    /// Ascent steps of each pair (the short one and the wide one).
    pub ascent_steps: usize,
    /// Relative size of the short perturbation `‖δ‖/‖x‖`.
    pub step: f64,
    /// Time budget: the search stops (with the best quotient so far) once it is spent; the
    /// first start always gets at least its quotient evaluated.
    pub time_limit: Duration,
    /// Seed of the input and start-vector streams.
    pub seed: u64,
    /// Memory cap for activations and operators.
    pub memory_limit: usize,
}

impl Default for LowerOptions {
    fn default() -> Self {
        LowerOptions {
            samples: 20,
            power_iterations: 20,
            ascent_steps: 10,
            step: 1e-3,
            time_limit: Duration::from_secs(5),
            seed: crate::bound::Options::default().seed,
            memory_limit: 4 << 30,
        }
    }
}

/// Scales of the starts, used in turn: `x = scale · N(0, I)`.
pub const START_SCALES: [f64; 4] = [1.0, 0.3, 3.0, 0.1];

/// Independent starts before the search hops: later starts are the best point so far plus
/// a random step of relative size [`HOPS`] (basin hopping: the quotient's local maxima are
/// many and close together, so a step from the best one finds a better one far more often
/// than a fresh start does — on the test fixtures, 20 hopping starts beat 20 independent
/// ones by up to 30 %).
const EXPLORE: usize = 2 * START_SCALES.len();

/// Relative sizes of the hops, used in turn.
const HOPS: [f64; 2] = [0.3, 0.1];

/// Widths of the wide pairs, in turn, relative to `max(‖x‖, 1)`: each one's ascent moves
/// the point, the next narrower one refines around it.
const WIDTHS: [f64; 3] = [0.3, 0.1, 0.03];

/// The best quotient found and the effort spent.
#[derive(Debug, Clone, Serialize)]
pub struct LowerBound {
    /// A certified lower bound of the network's ℓ2 Lipschitz constant.
    pub value: f64,
    /// The largest local gain `‖J(x)v‖` measured (an estimate, not certified).
    pub jacobian_estimate: f64,
    /// Starts searched from.
    pub samples: usize,
    /// Starts asked for ([`LowerOptions::samples`]): fewer were searched when the budget ran out.
    pub samples_requested: usize,
    /// The time budget ([`LowerOptions::time_limit`]) in seconds; the first start always
    /// finishes, so `seconds` may exceed it.
    pub budget_seconds: f64,
    /// Forward passes made.
    pub forward_passes: usize,
    /// Reverse (and forward-mode) passes made.
    pub derivative_passes: usize,
    /// Wall time.
    pub seconds: f64,
}

/// Relative rounding margin subtracted from evaluated quotients: the `f64` forward pass's
/// error is ~1e-15 relative per layer; 1e-10 of the outputs' size covers any depth we accept.
const ROUNDING: f64 = 1e-10;

fn sub(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x - y).collect()
}

fn scaled(v: &[f64], s: f64) -> Vec<f64> {
    v.iter().map(|x| x * s).collect()
}

/// `a + s·b`.
fn axpy(a: &[f64], s: f64, b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x + s * y).collect()
}

/// Searches for a large difference quotient of the network (module docs).
pub fn empirical_lower_bound(net: &Network, opts: &LowerOptions) -> Result<LowerBound> {
    let mut search = Search {
        eval: Evaluator::new(net, true, opts.memory_limit)?,
        opts,
        started: Instant::now(),
        best_point: None,
        result: LowerBound {
            value: 0.0,
            jacobian_estimate: 0.0,
            samples: 0,
            samples_requested: opts.samples.max(1),
            budget_seconds: opts.time_limit.as_secs_f64(),
            forward_passes: 0,
            derivative_passes: 0,
            seconds: 0.0,
        },
    };
    for s in 0..opts.samples.max(1) {
        if s > 0 && search.out_of_time() {
            break;
        }
        search.start(s);
    }
    let mut result = search.result;
    result.seconds = search.started.elapsed().as_secs_f64();
    Ok(result)
}

/// A pair of inputs `(a, b)`, its certified quotient, the output difference `f(b) − f(a)`
/// and the two forward passes.
struct Pair {
    a: Vec<f64>,
    b: Vec<f64>,
    quotient: f64,
    diff: Vec<f64>,
    traces: (Trace, Trace),
}

/// The state of one search.
struct Search<'n, 'o> {
    eval: Evaluator<'n>,
    opts: &'o LowerOptions,
    started: Instant,
    result: LowerBound,
    /// The point where the best start ended, and the quotient that start reached.
    best_point: Option<(Vec<f64>, f64)>,
}

impl Search<'_, '_> {
    fn out_of_time(&self) -> bool {
        self.started.elapsed() > self.opts.time_limit
    }

    /// The certified quotient of the pair `(a, b)`.
    fn pair(&mut self, a: Vec<f64>, b: Vec<f64>) -> Pair {
        let (t0, t1) = (self.eval.forward(&a), self.eval.forward(&b));
        self.result.forward_passes += 2;
        let (f0, f1) = (self.eval.output(&t0), self.eval.output(&t1));
        let diff = sub(&f1, &f0);
        let dn = norm2(&sub(&b, &a));
        let num = norm2(&diff) - ROUNDING * (norm2(&f0) + norm2(&f1));
        let quotient = if dn > 0.0 && num.is_finite() {
            (num / dn).max(0.0)
        } else {
            0.0
        };
        self.result.value = self.result.value.max(quotient);
        Pair {
            a,
            b,
            quotient,
            diff,
            traces: (t0, t1),
        }
    }

    /// One start: a scaled Gaussian input (or a hop from the best point so far), searched
    /// by [`Search::climb`]; the best point is updated when the start beats it.
    fn start(&mut self, s: usize) {
        self.result.samples += 1;
        let n = self.eval.input_len();
        let mut rng = rng_for(self.opts.seed, 1000 + s as u64);
        let x = match &self.best_point {
            Some((best, _)) if s >= EXPLORE => {
                let g = gaussian(n, &mut rng);
                let k =
                    HOPS[s % HOPS.len()] * norm2(best).max(1.0) / norm2(&g).max(f64::MIN_POSITIVE);
                axpy(best, k, &g)
            }
            _ => scaled(&gaussian(n, &mut rng), START_SCALES[s % START_SCALES.len()]),
        };
        let so_far = self.result.value;
        self.result.value = 0.0;
        let point = self.climb(x, gaussian(n, &mut rng));
        let reached = self.result.value;
        self.result.value = so_far.max(reached);
        if self.best_point.as_ref().is_none_or(|(_, q)| reached > *q) {
            self.best_point = Some((point, reached));
        }
    }

    /// From `x`: the local measurement (power iteration from `start`), then for each of
    /// [`WIDTHS`] a wide pair along the current direction, ascended, and a local measurement
    /// at its midpoint. Returns the last point measured.
    fn climb(&mut self, mut x: Vec<f64>, start: Vec<f64>) -> Vec<f64> {
        let Some(mut v) = self.local(&x, start) else {
            return x;
        };
        for width in WIDTHS {
            if self.out_of_time() {
                break;
            }
            let w = 0.5 * width * norm2(&x).max(1.0);
            let wide = self.pair(axpy(&x, -w, &v), axpy(&x, w, &v));
            let best = self.ascend_pair(wide);
            x = best
                .a
                .iter()
                .zip(&best.b)
                .map(|(p, q)| 0.5 * (p + q))
                .collect();
            match self.local(&x, sub(&best.b, &best.a)) {
                Some(u) => v = u,
                None => break,
            }
        }
        x
    }

    /// The local gain at `x`: the top direction by power iteration from `start`, a short
    /// pair along it, and ascent on `x`. Returns the unit direction (`None` if the Jacobian
    /// vanishes or overflows).
    fn local(&mut self, x: &[f64], start: Vec<f64>) -> Option<Vec<f64>> {
        let v = self.top_direction(x, start);
        let nv = norm2(&v);
        if nv == 0.0 || !nv.is_finite() {
            return None;
        }
        let v = scaled(&v, 1.0 / nv);
        let h = self.opts.step * norm2(x).max(1.0);
        let pair = self.pair(x.to_vec(), axpy(x, h, &v));
        self.ascend_local(pair, h);
        Some(v)
    }

    /// Power iteration on `J(x)ᵀJ(x)` from `v`: an estimate of the top right singular vector,
    /// stopped once the gain changes by less than 1e-6 relative.
    fn top_direction(&mut self, x: &[f64], mut v: Vec<f64>) -> Vec<f64> {
        let trace = self.eval.forward(x);
        self.result.forward_passes += 1;
        let mut gain = 0.0;
        for it in 0..self.opts.power_iterations {
            if it >= 2 && self.out_of_time() {
                break;
            }
            let nv = norm2(&v);
            if nv == 0.0 || !nv.is_finite() {
                break;
            }
            v.iter_mut().for_each(|e| *e /= nv);
            let u = self.eval.jvp(&trace, &v);
            let previous = gain;
            gain = norm2(&u);
            v = self.eval.vjp(&trace, &u);
            self.result.derivative_passes += 2;
            if (gain - previous).abs() <= 1e-6 * gain {
                break;
            }
        }
        self.result.jacobian_estimate = self.result.jacobian_estimate.max(gain);
        v
    }

    /// Gradient ascent on `(x, δ)` with `‖δ‖ = h`: a secant power step for `δ` and a step on
    /// `x` along the difference of the two gradients, kept while the quotient grows.
    fn ascend_local(&mut self, mut pair: Pair, h: f64) {
        let mut eta = 0.1;
        for _ in 0..self.opts.ascent_steps {
            if self.out_of_time() {
                break;
            }
            let g1 = self.eval.vjp(&pair.traces.1, &pair.diff);
            let g0 = self.eval.vjp(&pair.traces.0, &pair.diff);
            self.result.derivative_passes += 2;
            let ng1 = norm2(&g1);
            if ng1 == 0.0 || !ng1.is_finite() {
                break;
            }
            let gx = sub(&g1, &g0);
            let ngx = norm2(&gx);
            let step_x = if ngx > 0.0 {
                eta * norm2(&pair.a) / ngx
            } else {
                0.0
            };
            let new_x = axpy(&pair.a, step_x, &gx);
            let moved = self.pair(new_x.clone(), axpy(&new_x, h / ng1, &g1));
            if moved.quotient > pair.quotient {
                pair = moved;
                continue;
            }
            // Keep x, take only the secant power step for δ.
            eta *= 0.5;
            let stepped = self.pair(pair.a.clone(), axpy(&pair.a, h / ng1, &g1));
            if stepped.quotient > pair.quotient {
                pair = stepped;
            } else {
                break;
            }
        }
    }

    /// Gradient ascent on `log ‖f(b) − f(a)‖ − log ‖b − a‖` over both points, with a step
    /// `τ·‖b − a‖` along the normalised gradient that grows after a gain and halves after a
    /// loss. Returns the best pair.
    fn ascend_pair(&mut self, mut pair: Pair) -> Pair {
        let mut tau = 0.25;
        for _ in 0..self.opts.ascent_steps {
            if self.out_of_time() || tau < 1e-4 {
                break;
            }
            let r2: f64 = pair.diff.iter().map(|e| e * e).sum();
            let d = sub(&pair.b, &pair.a);
            let d2: f64 = d.iter().map(|e| e * e).sum();
            if r2 == 0.0 || d2 == 0.0 || !r2.is_finite() {
                break;
            }
            let jb = self.eval.vjp(&pair.traces.1, &pair.diff);
            let ja = self.eval.vjp(&pair.traces.0, &pair.diff);
            self.result.derivative_passes += 2;
            let gb: Vec<f64> = jb.iter().zip(&d).map(|(j, e)| j / r2 - e / d2).collect();
            let ga: Vec<f64> = ja.iter().zip(&d).map(|(j, e)| e / d2 - j / r2).collect();
            let g = (ga.iter().chain(&gb).map(|e| e * e).sum::<f64>()).sqrt();
            if g == 0.0 || !g.is_finite() {
                break;
            }
            let len = tau * d2.sqrt() / g;
            let next = self.pair(axpy(&pair.a, len, &ga), axpy(&pair.b, len, &gb));
            if next.quotient > pair.quotient {
                pair = next;
                tau *= 1.5;
            } else {
                tau *= 0.5;
            }
        }
        pair
    }
}
