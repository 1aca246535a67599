//! Local radii: a bound on the Lipschitz constant of `f_ŷ − f_j` over the ball `B(x, R)`,
//! from the activation slopes that bound propagation proves on that ball, iterated with `R`.
//!
//! * Forward (interval bound propagation in centre–radius form): every value `v` of the
//!   network on the ball lies in `[m − ρ, m + ρ]`. A linear map `A` (bias `b`) gives
//!   `A·m + b ± |A|·ρ`; the first layer, reading the ball itself, gets the exact
//!   `R·‖row_u(A)‖₂`. A monotone activation maps the interval's ends.
//! * The slope of each activation unit over its interval lies in `[s_lo, s_hi]` (a ReLU that
//!   is off on the whole ball has slope 0: it drops out).
//! * Backward (Fast-Lip, Weng et al. 2018): the gradient of `f_ŷ − f_j` at any point of the
//!   ball is `A_1ᵀ D_1 A_2ᵀ D_2 ⋯ (e_ŷ − e_j)` with each `D` diagonal within its slope
//!   intervals; propagating intervals backwards encloses every such gradient in a box
//!   `[g_lo, g_hi]`, so `‖∇‖₂ ≤ ‖max(|g_lo|, |g_hi|)‖₂ =: L_j(R)`.
//! * No input within `min(R, min_j gap_j / L_j(R))` changes the prediction; `R` is searched
//!   by bisection from the pairwise radius, which is valid already.
//!
//! Every interval is widened for floating-point rounding by a relative `1e-10` of the
//! magnitudes involved — ample for the `f64` sums of any fan-in this crate accepts.

use crate::error::{Error, Result};
use crate::network::ops::{
    Activation, Affine, Broadcast, Context, Conv, Dense, Gather, Kernel, Sum,
};
use crate::network::Network;

/// Relative widening of every interval for rounding.
const SLACK: f64 = 1e-10;

/// Bisection steps of the radius search.
const SEARCH_STEPS: usize = 6;

/// How one node propagates intervals.
enum Step<'n> {
    /// A linear (affine) node: its own kernel for centres, one with `|A|` for radii, and for a
    /// layer reading the input its row norms `‖row_u(A)‖₂` (computed once, from `A∘A`).
    Linear {
        exact: Box<dyn Kernel + 'n>,
        abs: Option<Box<dyn Kernel + 'n>>,
        row_norms: Option<Vec<f64>>,
    },
    /// `a ± b`.
    Sum { subtract: bool },
    /// A monotone elementwise activation.
    Activation(Activation),
    /// Not a live node.
    Dead,
}

/// A network prepared for local bounds.
pub(crate) struct LocalBounds<'n> {
    net: &'n Network,
    steps: Vec<Step<'n>>,
}

/// A value's enclosure: centre and radius per element.
#[derive(Clone)]
struct Interval {
    m: Vec<f64>,
    r: Vec<f64>,
}

impl<'n> LocalBounds<'n> {
    /// Prepares every node (operators within `memory_limit` each), or says which one has
    /// no interval rule.
    pub fn new(net: &'n Network, ops: &'n AbsOps, memory_limit: usize) -> Result<Self> {
        let live = net.live_nodes();
        let mut steps = Vec::with_capacity(net.nodes().len());
        for (k, node) in net.nodes().iter().enumerate() {
            if !live[k] {
                steps.push(Step::Dead);
                continue;
            }
            let inputs = net.input_shapes(node);
            let cx = Context {
                inputs: &inputs,
                output: &net.shapes()[node.output],
                accurate: true,
                memory_limit,
            };
            let refuse = |why: &str| {
                Error::model(
                    net.source(),
                    format!("local radii: node '{}' ({}) {why}", node.name, node.kind),
                )
            };
            if let Some(a) = node.op.downcast_ref::<Activation>() {
                if slope_range(a, 0.0, 0.0).is_none() {
                    return Err(refuse(
                        "has no interval rule here (ReLU, LeakyReLU, Tanh, Sigmoid and ELU do)",
                    ));
                }
                steps.push(Step::Activation(*a));
                continue;
            }
            if let Some(s) = node.op.downcast_ref::<Sum>() {
                steps.push(Step::Sum {
                    subtract: s.subtract,
                });
                continue;
            }
            let exact = node.op.prepare(&cx)?;
            if exact.linear().is_none() {
                return Err(refuse("is not linear and has no interval rule"));
            }
            let (abs, squares) = match &ops.abs[k] {
                Some((abs, sq)) => (Some(abs.prepare(&cx)?), sq.as_ref()),
                None if node.op.is_reshape() || ops.nonnegative[k] => (None, None),
                None => return Err(refuse("has no interval rule")),
            };
            let row_norms = match squares {
                Some(sq) if node.inputs[0] == 0 => {
                    let ones = vec![1.0; net.len_of(0)];
                    let mut norms = vec![0.0; net.len_of(node.output)];
                    let kernel = sq.prepare(&cx)?;
                    kernel.linear().expect("linear").apply(&[&ones], &mut norms);
                    // The squares were rounded to f32: widen by their relative error.
                    for r in &mut norms {
                        *r = (r.max(0.0) * (1.0 + 1e-6)).sqrt();
                    }
                    Some(norms)
                }
                _ => None,
            };
            steps.push(Step::Linear {
                exact,
                abs,
                row_norms,
            });
        }
        Ok(LocalBounds { net, steps })
    }

    /// The largest certified radius found for the prediction `y` at `x`, starting from the
    /// radius `start` (already certified); `gaps[j] = f_y − f_j − allowance`.
    pub fn radius(&self, x: &[f64], y: usize, gaps: &[f64], start: f64) -> f64 {
        if gaps.iter().enumerate().any(|(j, &g)| j != y && g <= 0.0) {
            return 0.0;
        }
        let mut best = start;
        let mut hi = f64::INFINITY;
        let mut lo = start;
        // Without a pairwise radius to start from, try the smallest gap as a scale.
        let scale = if start > 0.0 {
            start
        } else {
            gaps.iter()
                .enumerate()
                .filter(|&(j, _)| j != y)
                .map(|(_, &g)| g)
                .fold(f64::INFINITY, f64::min)
                .min(1.0)
        };
        for _ in 0..SEARCH_STEPS {
            let r_ball = if hi.is_finite() {
                0.5 * (lo + hi)
            } else {
                2.0 * lo.max(scale * 0.5)
            };
            let certified = self.certified_within(x, y, gaps, r_ball);
            best = best.max(certified);
            if certified >= r_ball {
                lo = r_ball;
            } else {
                hi = r_ball;
            }
        }
        best
    }

    /// `min(R, min_j gap_j / L_j(R))`, rounded down.
    fn certified_within(&self, x: &[f64], y: usize, gaps: &[f64], r_ball: f64) -> f64 {
        let (values, slopes) = self.forward(x, r_ball);
        let mut radius = r_ball;
        for (j, &gap) in gaps.iter().enumerate() {
            if j == y {
                continue;
            }
            let l = self.pair_constant(&values, &slopes, y, j);
            if l > 0.0 {
                radius = radius.min((gap / l).next_down());
            }
        }
        radius.max(0.0)
    }

    /// Interval bounds of every value over `B(x, R)`, and every activation's slope range.
    fn forward(&self, x: &[f64], r_ball: f64) -> (Vec<Interval>, Vec<Option<Interval>>) {
        let net = self.net;
        let mut values: Vec<Interval> = vec![
            Interval {
                m: Vec::new(),
                r: Vec::new(),
            };
            net.shapes().len()
        ];
        let mut slopes = vec![None; net.nodes().len()];
        values[0] = Interval {
            m: x.to_vec(),
            r: vec![r_ball; x.len()],
        };
        for (k, node) in net.nodes().iter().enumerate() {
            let n = net.len_of(node.output);
            let out = match &self.steps[k] {
                Step::Dead => continue,
                Step::Sum { subtract } => {
                    let (a, b) = (&values[node.inputs[0]], &values[node.inputs[1]]);
                    let sign = if *subtract { -1.0 } else { 1.0 };
                    let m: Vec<f64> = a.m.iter().zip(&b.m).map(|(p, q)| p + sign * q).collect();
                    let r = (0..n)
                        .map(|i| (a.r[i] + b.r[i]) * (1.0 + SLACK) + SLACK * m[i].abs())
                        .collect();
                    Interval { m, r }
                }
                Step::Activation(a) => {
                    let v = &values[node.inputs[0]];
                    let mut m = vec![0.0; n];
                    let mut r = vec![0.0; n];
                    let mut s = Interval {
                        m: vec![0.0; n],
                        r: vec![0.0; n],
                    };
                    for i in 0..n {
                        let (lo, hi) = (v.m[i] - v.r[i], v.m[i] + v.r[i]);
                        let (flo, fhi) = (a.apply(lo), a.apply(hi));
                        let pad = SLACK * (flo.abs() + fhi.abs()) + f64::MIN_POSITIVE;
                        m[i] = 0.5 * (flo + fhi);
                        r[i] = 0.5 * (fhi - flo) + pad;
                        let (slo, shi) = slope_range(a, lo, hi).expect("checked in new");
                        s.m[i] = 0.5 * (slo + shi);
                        s.r[i] = 0.5 * (shi - slo) + SLACK * shi.abs();
                    }
                    slopes[k] = Some(s);
                    Interval { m, r }
                }
                Step::Linear {
                    exact,
                    abs,
                    row_norms,
                } => {
                    let v = &values[node.inputs[0]];
                    let ins: Vec<&[f64]> = node
                        .inputs
                        .iter()
                        .map(|&i| values[i].m.as_slice())
                        .collect();
                    let mut m = vec![0.0; n];
                    exact.forward(&ins, &mut m);
                    let mut r = vec![0.0; n];
                    if let Some(norms) = row_norms {
                        // The ball itself: R·‖row_u(A)‖₂.
                        for (ri, norm) in r.iter_mut().zip(norms) {
                            *ri = r_ball * norm;
                        }
                        let widened: Vec<f64> = v.m.iter().map(|x| SLACK * x.abs()).collect();
                        let mut extra = vec![0.0; n];
                        abs_apply(exact.as_ref(), abs.as_deref(), &[&widened], &mut extra);
                        for (ri, e) in r.iter_mut().zip(&extra) {
                            *ri += e;
                        }
                    } else {
                        let widened: Vec<Vec<f64>> = node
                            .inputs
                            .iter()
                            .map(|&i| {
                                let v = &values[i];
                                v.r.iter()
                                    .zip(&v.m)
                                    .map(|(r, m)| r + SLACK * m.abs())
                                    .collect()
                            })
                            .collect();
                        let ins: Vec<&[f64]> = widened.iter().map(Vec::as_slice).collect();
                        abs_apply(exact.as_ref(), abs.as_deref(), &ins, &mut r);
                        for ri in &mut r {
                            *ri *= 1.0 + SLACK;
                        }
                    }
                    for (ri, mi) in r.iter_mut().zip(&m) {
                        *ri += SLACK * mi.abs();
                    }
                    Interval { m, r }
                }
            };
            values[node.output] = out;
        }
        (values, slopes)
    }

    /// `‖max(|g_lo|, |g_hi|)‖₂` for the gradient box of `f_y − f_j` over the ball.
    fn pair_constant(
        &self,
        values: &[Interval],
        slopes: &[Option<Interval>],
        y: usize,
        j: usize,
    ) -> f64 {
        let net = self.net;
        let mut cot: Vec<Option<Interval>> = vec![None; values.len()];
        let out = net.outputs()[0];
        let mut seed = Interval {
            m: vec![0.0; net.len_of(out)],
            r: vec![0.0; net.len_of(out)],
        };
        seed.m[y] = 1.0;
        seed.m[j] = -1.0;
        cot[out] = Some(seed);
        for (k, node) in net.nodes().iter().enumerate().rev() {
            let Some(g) = cot[node.output].take() else {
                continue;
            };
            match &self.steps[k] {
                Step::Dead => {}
                Step::Sum { subtract } => {
                    add_into(&mut cot[node.inputs[0]], &g, 1.0);
                    add_into(
                        &mut cot[node.inputs[1]],
                        &g,
                        if *subtract { -1.0 } else { 1.0 },
                    );
                }
                Step::Activation(_) => {
                    let s = slopes[k].as_ref().expect("set in the forward pass");
                    let n = g.m.len();
                    let mut back = Interval {
                        m: vec![0.0; n],
                        r: vec![0.0; n],
                    };
                    for i in 0..n {
                        // [g_lo, g_hi] × [s_lo, s_hi].
                        let (a, b) = (g.m[i] - g.r[i], g.m[i] + g.r[i]);
                        let (c, d) = (s.m[i] - s.r[i], s.m[i] + s.r[i]);
                        let p = [a * c, a * d, b * c, b * d];
                        let lo = p.iter().cloned().fold(f64::INFINITY, f64::min);
                        let hi = p.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                        back.m[i] = 0.5 * (lo + hi);
                        back.r[i] = 0.5 * (hi - lo) + SLACK * (lo.abs() + hi.abs());
                    }
                    add_into(&mut cot[node.inputs[0]], &back, 1.0);
                }
                Step::Linear { exact, abs, .. } => {
                    let lin = exact.linear().expect("linear");
                    let mut ms: Vec<Vec<f64>> = node
                        .inputs
                        .iter()
                        .map(|&v| vec![0.0; net.len_of(v)])
                        .collect();
                    lin.adjoint(&g.m, &mut ms);
                    let widened: Vec<f64> =
                        g.r.iter()
                            .zip(&g.m)
                            .map(|(r, m)| r + SLACK * m.abs())
                            .collect();
                    let mut rs: Vec<Vec<f64>> = node
                        .inputs
                        .iter()
                        .map(|&v| vec![0.0; net.len_of(v)])
                        .collect();
                    match abs {
                        Some(a) => a.linear().expect("linear").adjoint(&widened, &mut rs),
                        None => lin.adjoint(&widened, &mut rs),
                    }
                    for ((&v, m), r) in node.inputs.iter().zip(ms).zip(rs) {
                        let r = r
                            .iter()
                            .zip(&m)
                            .map(|(r, m)| r * (1.0 + SLACK) + SLACK * m.abs())
                            .collect();
                        add_into(&mut cot[v], &Interval { m, r }, 1.0);
                    }
                }
            }
        }
        let Some(g) = cot[0].take() else {
            return 0.0;
        };
        let sq: f64 =
            g.m.iter()
                .zip(&g.r)
                .map(|(m, r)| {
                    let a = m.abs() + r;
                    a * a
                })
                .sum();
        (sq * (1.0 + SLACK)).sqrt() * (1.0 + SLACK)
    }
}

/// `|A|·x` with the `|A|` kernel, or `A·x` when `A` is nonnegative (no `|A|` kernel).
fn abs_apply(exact: &dyn Kernel, abs: Option<&dyn Kernel>, ins: &[&[f64]], y: &mut [f64]) {
    match abs {
        Some(a) => a.linear().expect("linear").apply(ins, y),
        None => exact.linear().expect("linear").apply(ins, y),
    }
}

/// `slot += sign·g` (centres signed, radii added).
fn add_into(slot: &mut Option<Interval>, g: &Interval, sign: f64) {
    match slot {
        None => {
            *slot = Some(Interval {
                m: g.m.iter().map(|v| sign * v).collect(),
                r: g.r.clone(),
            })
        }
        Some(s) => {
            for i in 0..s.m.len() {
                s.m[i] += sign * g.m[i];
                s.r[i] += g.r[i] + SLACK * s.m[i].abs();
            }
        }
    }
}

/// The range of the activation's slope over `[lo, hi]`, for the activations with a rule.
fn slope_range(a: &Activation, lo: f64, hi: f64) -> Option<(f64, f64)> {
    let d = |x: f64| a.derivative(x);
    Some(match *a {
        Activation::Relu => {
            if hi <= 0.0 {
                (0.0, 0.0)
            } else if lo > 0.0 {
                (1.0, 1.0)
            } else {
                (0.0, 1.0)
            }
        }
        Activation::LeakyRelu(s) => {
            if hi <= 0.0 {
                (s, s)
            } else if lo > 0.0 {
                (1.0, 1.0)
            } else {
                (s.min(1.0), s.max(1.0))
            }
        }
        // Derivatives largest at 0 and decreasing in |x|.
        Activation::Tanh | Activation::Sigmoid => {
            let nearest = if lo > 0.0 {
                lo
            } else if hi < 0.0 {
                hi
            } else {
                0.0
            };
            let widen = 1e-12;
            (d(lo).min(d(hi)) * (1.0 - widen), d(nearest) * (1.0 + widen))
        }
        // α·eˣ below 0 (nondecreasing for 0 ≤ α ≤ 1), 1 above.
        Activation::Elu(alpha) if (0.0..=1.0).contains(&alpha) => {
            let widen = 1e-12;
            let top = if hi > 0.0 { 1.0 } else { d(hi) * (1.0 + widen) };
            let bottom = if lo > 0.0 { 1.0 } else { d(lo) * (1.0 - widen) };
            (bottom, top)
        }
        _ => return None,
    })
}

/// The `|A|` (and for layers reading the input, `A∘A`) operations of a network's linear
/// nodes whose matrices have negative entries; owned here so the kernels can borrow them.
pub(crate) struct AbsOps {
    abs: Vec<Option<(crate::network::Op, Option<crate::network::Op>)>>,
    nonnegative: Vec<bool>,
}

impl AbsOps {
    /// Builds them for every node of `net`.
    pub fn new(net: &Network) -> Self {
        let mut abs = Vec::with_capacity(net.nodes().len());
        let mut nonnegative = Vec::with_capacity(net.nodes().len());
        for node in net.nodes() {
            let reads_input = node.inputs.contains(&0);
            let mut nonneg = false;
            let entry = if let Some(c) = node.op.downcast_ref::<Conv>() {
                let conv = |f: fn(f32) -> f32| Conv {
                    conv: c.conv.clone(),
                    weight: c.weight.iter().map(|&w| f(w)).collect(),
                    bias: None,
                };
                Some((
                    conv(f32::abs).into(),
                    reads_input.then(|| conv(|w| w * w).into()),
                ))
            } else if let Some(d) = node.op.downcast_ref::<Dense>() {
                let dense = |f: fn(f32) -> f32| Dense {
                    weight: d.weight.iter().map(|&w| f(w)).collect(),
                    rows: d.rows,
                    cols: d.cols,
                    bias: None,
                };
                Some((
                    dense(f32::abs).into(),
                    reads_input.then(|| dense(|w| w * w).into()),
                ))
            } else if let Some(a) = node.op.downcast_ref::<Affine>() {
                let scale = Broadcast {
                    values: a.scale.values.iter().map(|v| v.abs()).collect(),
                    inner: a.scale.inner,
                };
                let zero = Broadcast {
                    values: vec![0.0; a.shift.values.len()],
                    inner: a.shift.inner,
                };
                Some((Affine { scale, shift: zero }.into(), None))
            } else {
                // Pooling by averages, selections and concatenations have nonnegative
                // matrices: |A| = A.
                nonneg = node.op.downcast_ref::<Gather>().is_some()
                    || matches!(node.op.op_type(), "AveragePool" | "ReduceMean" | "Concat");
                None
            };
            abs.push(entry);
            nonnegative.push(nonneg);
        }
        AbsOps { abs, nonnegative }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv::Conv2d;
    use crate::network::{Evaluator, NetworkBuilder};
    use rand::{Rng, SeedableRng};

    /// conv → relu → conv (stride 2) → tanh → flatten → dense, random weights.
    fn network(seed: u64) -> Network {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut w =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-0.5..0.5)).collect() };
        let mut b = NetworkBuilder::new("local", &[1, 2, 5, 5]).unwrap();
        let c1 = Conv2d::new(3, 2, [3, 3], [5, 5]).padding(1);
        b.conv(c1, w(54), Some(w(3))).unwrap();
        b.activation(Activation::Relu).unwrap();
        let c2 = Conv2d::new(4, 3, [3, 3], [5, 5]).stride([2, 2]);
        b.conv(c2, w(108), None).unwrap();
        b.activation(Activation::Tanh).unwrap();
        b.flatten().unwrap();
        b.dense(w(3 * 16), 3, 16, Some(w(3))).unwrap();
        b.finish()
    }

    #[test]
    fn the_local_constant_bounds_every_gradient_in_the_ball_and_is_tight_on_small_balls() {
        let net = network(3);
        let ops = AbsOps::new(&net);
        let local = LocalBounds::new(&net, &ops, 1 << 28).unwrap();
        let eval = Evaluator::new(&net, true, 1 << 28).unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let x: Vec<f64> = (0..50).map(|_| rng.random_range(-1.0..1.0)).collect();
        let grad = |p: &[f64], y: usize, j: usize| {
            let t = eval.forward(p);
            let mut dy = vec![0.0; 3];
            dy[y] = 1.0;
            dy[j] = -1.0;
            let g = eval.vjp(&t, &dy);
            g.iter().map(|v| v * v).sum::<f64>().sqrt()
        };
        for r_ball in [1e-6, 0.05, 0.3] {
            let (values, slopes) = local.forward(&x, r_ball);
            for (y, j) in [(0, 1), (2, 0), (1, 2)] {
                let l = local.pair_constant(&values, &slopes, y, j);
                for _ in 0..200 {
                    let d: Vec<f64> = (0..50).map(|_| rng.random_range(-1.0..1.0)).collect();
                    let n = d.iter().map(|v| v * v).sum::<f64>().sqrt();
                    let p: Vec<f64> = x.iter().zip(&d).map(|(a, b)| a + b * r_ball / n).collect();
                    let g = grad(&p, y, j);
                    assert!(
                        g <= l,
                        "R = {r_ball}: gradient {g} above the local bound {l}"
                    );
                }
                if r_ball == 1e-6 {
                    // No unit changes state in a tiny ball: the box is almost a point.
                    let g = grad(&x, y, j);
                    assert!(l <= g * (1.0 + 1e-3), "tiny ball: {l} vs gradient {g}");
                }
            }
            // Every value of the network on the ball lies in its interval.
            for _ in 0..50 {
                let d: Vec<f64> = (0..50).map(|_| rng.random_range(-1.0..1.0)).collect();
                let n = d.iter().map(|v| v * v).sum::<f64>().sqrt();
                let p: Vec<f64> = x.iter().zip(&d).map(|(a, b)| a + b * r_ball / n).collect();
                let t = eval.forward(&p);
                for (v, iv) in t.values.iter().zip(&values) {
                    for ((v, m), r) in v.iter().zip(&iv.m).zip(&iv.r) {
                        assert!((v - m).abs() <= *r, "value outside its interval");
                    }
                }
            }
        }
    }

    #[test]
    fn the_radius_search_never_returns_an_uncertified_radius() {
        let net = network(5);
        let ops = AbsOps::new(&net);
        let local = LocalBounds::new(&net, &ops, 1 << 28).unwrap();
        let eval = Evaluator::new(&net, true, 1 << 28).unwrap();
        let x = vec![0.3; 50];
        let f = eval.output(&eval.forward(&x));
        let y = (0..3).max_by(|&a, &b| f[a].total_cmp(&f[b])).unwrap();
        let gaps: Vec<f64> = f.iter().map(|v| f[y] - v).collect();
        let r = local.radius(&x, y, &gaps, 0.0);
        assert!(r > 0.0);
        // Certified on the ball of radius r itself.
        assert!(local.certified_within(&x, y, &gaps, r) >= r * (1.0 - 1e-12));
    }

    #[test]
    fn max_pooling_has_no_interval_rule_yet() {
        let mut b = NetworkBuilder::new("pool", &[1, 1, 4, 4]).unwrap();
        b.max_pool(crate::network::Pool2d {
            kernel: [2, 2],
            stride: [2, 2],
            pads: [0; 4],
            dilation: [1, 1],
            ceil_mode: false,
        })
        .unwrap();
        let net = b.finish();
        let ops = AbsOps::new(&net);
        let e = LocalBounds::new(&net, &ops, 1 << 28)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("MaxPool"), "{e}");
    }
}
