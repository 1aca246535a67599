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

use super::eval::Evaluator;
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
    let started = Instant::now();
    let eval = Evaluator::new(net, true, opts.memory_limit)?;
    let n = eval.input_len();
    let mut result = LowerBound {
        value: 0.0,
        jacobian_estimate: 0.0,
        samples: 0,
        forward_passes: 0,
        derivative_passes: 0,
        seconds: 0.0,
    };
    // The certified quotient of a pair.
    let quotient = |x: &[f64],
                    delta: &[f64],
                    r: &mut LowerBound|
     -> (f64, Vec<f64>, super::eval::Trace, super::eval::Trace) {
        let xd: Vec<f64> = x.iter().zip(delta).map(|(a, b)| a + b).collect();
        let t0 = eval.forward(x);
        let t1 = eval.forward(&xd);
        r.forward_passes += 2;
        let (f0, f1) = (eval.output(&t0), eval.output(&t1));
        let diff = sub(&f1, &f0);
        let dn = norm2(delta);
        let num = norm2(&diff) - ROUNDING * (norm2(&f0) + norm2(&f1));
        let q = if dn > 0.0 && num.is_finite() {
            (num / dn).max(0.0)
        } else {
            0.0
        };
        (q, diff, t0, t1)
    };
    for s in 0..opts.samples.max(1) {
        if s > 0 && started.elapsed() > opts.time_limit {
            break;
        }
        result.samples += 1;
        let mut rng = rng_for(opts.seed, 1000 + s as u64);
        let mut x = gaussian(n, &mut rng);
        // Power iteration on J(x)ᵀJ(x).
        let trace = eval.forward(&x);
        result.forward_passes += 1;
        let mut v = gaussian(n, &mut rng);
        let mut gain = 0.0;
        for it in 0..opts.power_iterations {
            if it >= 2 && started.elapsed() > opts.time_limit {
                break;
            }
            let nv = norm2(&v);
            if nv == 0.0 || !nv.is_finite() {
                break;
            }
            v.iter_mut().for_each(|e| *e /= nv);
            let u = eval.jvp(&trace, &v);
            gain = norm2(&u);
            v = eval.vjp(&trace, &u);
            result.derivative_passes += 2;
        }
        result.jacobian_estimate = result.jacobian_estimate.max(gain);
        let nv = norm2(&v);
        if nv == 0.0 || !nv.is_finite() {
            continue;
        }
        let h = opts.step * norm2(&x).max(1.0);
        let mut delta = scaled(&v, h / nv);
        let (mut q, mut diff, mut t0, mut t1) = quotient(&x, &delta, &mut result);
        result.value = result.value.max(q);
        // Ascent on (x, δ).
        let mut eta = 0.1;
        for _ in 0..opts.ascent_steps {
            if started.elapsed() > opts.time_limit {
                break;
            }
            let g1 = eval.vjp(&t1, &diff);
            let g0 = eval.vjp(&t0, &diff);
            result.derivative_passes += 2;
            let ng1 = norm2(&g1);
            if ng1 == 0.0 || !ng1.is_finite() {
                break;
            }
            let new_delta = scaled(&g1, h / ng1);
            let gx = sub(&g1, &g0);
            let ngx = norm2(&gx);
            let step_x = if ngx > 0.0 {
                eta * norm2(&x) / ngx
            } else {
                0.0
            };
            let new_x: Vec<f64> = x.iter().zip(&gx).map(|(a, g)| a + step_x * g).collect();
            let (q2, d2, a0, a1) = quotient(&new_x, &new_delta, &mut result);
            if q2 > q {
                (q, diff, t0, t1, x, delta) = (q2, d2, a0, a1, new_x, new_delta);
                result.value = result.value.max(q);
            } else {
                // Keep x, take only the secant power step for δ.
                eta *= 0.5;
                let (q3, d3, b0, b1) = quotient(&x, &new_delta, &mut result);
                if q3 > q {
                    (q, diff, t0, t1, delta) = (q3, d3, b0, b1, new_delta);
                    result.value = result.value.max(q);
                } else {
                    break;
                }
            }
        }
    }
    result.seconds = started.elapsed().as_secs_f64();
    Ok(result)
}
