//! The empirical lower bound of a network's Lipschitz constant.
//!
//! Any two inputs give one: `‖f(x + δ) − f(x)‖ / ‖δ‖ ≤ L` by the definition of `L`. We look
//! for a large quotient in three steps, all seeded:
//! 1. sample inputs `x` (standard normal, the scale of normalised images);
//! 2. at each, power iteration on `J(x)ᵀJ(x)` through forward- and reverse-mode passes (no
//!    Jacobian is formed) gives the direction `v` of largest local gain;
//! 3. gradient ascent on the pair `(x, δ)`: `δ` follows the secant's power step
//!    `J(x+δ)ᵀ r` (with `r = f(x+δ) − f(x)`), `x` moves along the gradient of the quotient,
//!    `(J(x+δ) − J(x))ᵀ r`, a step kept only when it raises the quotient.
//!
//! The reported value is the largest quotient actually evaluated, in `f64` with the direct
//! convolution, minus a rounding margin — a pair of inputs attains it, so it is a true lower
//! bound, not an estimate (docs/architecture.md, invariants).

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
    /// Random inputs to start from.
    pub samples: usize,
    /// Power-iteration steps at each input.
    pub power_iterations: usize,
    /// Ascent steps on `(x, δ)` after the power iteration.
    pub ascent_steps: usize,
    /// Relative size of the perturbation `‖δ‖/‖x‖`.
    pub step: f64,
    /// Time budget: the search stops (with the best quotient so far) once it is spent; the
    /// first sample always gets at least its quotient evaluated.
    pub time_limit: Duration,
    /// Seed of the input and start-vector streams.
    pub seed: u64,
    /// Memory cap for activations and operators.
    pub memory_limit: usize,
}

impl Default for LowerOptions {
    fn default() -> Self {
        LowerOptions {
            samples: 3,
            power_iterations: 12,
            ascent_steps: 8,
            step: 1e-3,
            time_limit: Duration::from_secs(5),
            seed: crate::bound::Options::default().seed,
            memory_limit: 4 << 30,
        }
    }
}

/// The best quotient found and the effort spent.
#[derive(Debug, Clone, Serialize)]
pub struct LowerBound {
    /// A certified lower bound of the network's ℓ2 Lipschitz constant.
    pub value: f64,
    /// The local gain `‖J(x)v‖` at the best sample (an estimate, not certified).
    pub jacobian_estimate: f64,
    /// Inputs sampled.
    pub samples: usize,
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

/// Searches for a large difference quotient of the network (module docs).
pub fn empirical_lower_bound(net: &Network, opts: &LowerOptions) -> Result<LowerBound> {
    let mut search = Search {
        eval: Evaluator::new(net, true, opts.memory_limit)?,
        opts,
        started: Instant::now(),
        result: LowerBound {
            value: 0.0,
            jacobian_estimate: 0.0,
            samples: 0,
            forward_passes: 0,
            derivative_passes: 0,
            seconds: 0.0,
        },
    };
    for s in 0..opts.samples.max(1) {
        if s > 0 && search.out_of_time() {
            break;
        }
        search.sample(s);
    }
    let mut result = search.result;
    result.seconds = search.started.elapsed().as_secs_f64();
    Ok(result)
}

/// A pair of inputs `(x, x + δ)` (`x` kept), its certified quotient, the output difference
/// and the two forward passes.
struct Pair {
    x: Vec<f64>,
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
}

impl Search<'_, '_> {
    fn out_of_time(&self) -> bool {
        self.started.elapsed() > self.opts.time_limit
    }

    /// The certified quotient of the pair `(x, x + δ)`.
    fn pair(&mut self, x: Vec<f64>, delta: Vec<f64>) -> Pair {
        let xd: Vec<f64> = x.iter().zip(&delta).map(|(a, b)| a + b).collect();
        let (t0, t1) = (self.eval.forward(&x), self.eval.forward(&xd));
        self.result.forward_passes += 2;
        let (f0, f1) = (self.eval.output(&t0), self.eval.output(&t1));
        let diff = sub(&f1, &f0);
        let dn = norm2(&delta);
        let num = norm2(&diff) - ROUNDING * (norm2(&f0) + norm2(&f1));
        let quotient = if dn > 0.0 && num.is_finite() {
            (num / dn).max(0.0)
        } else {
            0.0
        };
        self.result.value = self.result.value.max(quotient);
        Pair {
            x,
            quotient,
            diff,
            traces: (t0, t1),
        }
    }

    /// One sample: a Gaussian input, power iteration on `J(x)ᵀJ(x)` for the direction, then
    /// ascent on the pair.
    fn sample(&mut self, s: usize) {
        self.result.samples += 1;
        let n = self.eval.input_len();
        let mut rng = rng_for(self.opts.seed, 1000 + s as u64);
        let x = gaussian(n, &mut rng);
        let v = self.top_direction(&x, gaussian(n, &mut rng));
        let nv = norm2(&v);
        if nv == 0.0 || !nv.is_finite() {
            return;
        }
        let h = self.opts.step * norm2(&x).max(1.0);
        let delta = scaled(&v, h / nv);
        let pair = self.pair(x, delta);
        self.ascend(pair, h);
    }

    /// Power iteration on `J(x)ᵀJ(x)` from `v`: an estimate of the top right singular vector.
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
            gain = norm2(&u);
            v = self.eval.vjp(&trace, &u);
            self.result.derivative_passes += 2;
        }
        self.result.jacobian_estimate = self.result.jacobian_estimate.max(gain);
        v
    }

    /// Gradient ascent on `(x, δ)` with `‖δ‖ = h`: a secant power step for `δ` and a step on
    /// `x` along the difference of the two gradients, kept while the quotient grows.
    fn ascend(&mut self, mut pair: Pair, h: f64) {
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
            let new_delta = scaled(&g1, h / ng1);
            let gx = sub(&g1, &g0);
            let ngx = norm2(&gx);
            let step_x = if ngx > 0.0 {
                eta * norm2(&pair.x) / ngx
            } else {
                0.0
            };
            let new_x: Vec<f64> = pair
                .x
                .iter()
                .zip(&gx)
                .map(|(a, g)| a + step_x * g)
                .collect();
            let moved = self.pair(new_x, new_delta.clone());
            if moved.quotient > pair.quotient {
                pair = moved;
                continue;
            }
            // Keep x, take only the secant power step for δ.
            eta *= 0.5;
            let stepped = self.pair(pair.x.clone(), new_delta);
            if stepped.quotient > pair.quotient {
                pair = stepped;
            } else {
                break;
            }
        }
    }
}
