//! Certified bounds for a whole network (AutoLip, Virmaux & Scaman 2018), tightened by
//! folding and merging linear layers.
//!
//! * Every value gets a bound `L_v` on the Lipschitz constant of the map from the network
//!   input to it: `L_in = 1`; a node `g(u)` gives `L_g·L_u`; `Add/Sub(u, v)` give
//!   `L_u + L_v` (so a residual block `x + f(x)` gives `(1 + L_f)·L_x`); `Concat` gives
//!   `√(Σ L_i²)`; several graph outputs are one concatenated output.
//! * Elementwise scales next to a conv or dense layer (inference BatchNorm, `Mul`/`Div` by a
//!   constant, through any reshapes) are folded into its weights — before or after it, when
//!   the scale is constant over each channel the layer sees — and the folded layer is bounded
//!   as one: `‖diag(a)·W‖ ≤ max|a|·‖W‖` is usually loose.
//! * Runs of affine nodes with no nonlinearity between them (conv → conv, conv → average
//!   pool, global pooling → dense, …) are bounded as one operator by Lanczos, warm-started
//!   and capped by the product of their bounds, and used when that is tighter.
//! * Certificates compose: the network bound is deterministic when every factor is; when
//!   `k` factors are probabilistic with failure probability `δ` each, it holds with
//!   probability `≥ 1 − kδ` (union bound), which is what the result reports.

use super::graph::{Network, Op};
use super::lower::{empirical_lower_bound, LowerBound, LowerOptions};
use crate::bound::{Bound, Certificate, Method, Options, Stop};
use crate::conv::{conv2d_norm, ConvMethod};
use crate::error::{Error, Result};
use crate::spectral::{dense_norm, spectral_norm_with, Hints};
use crate::LinearOperator;
use rayon::prelude::*;
use serde::Serialize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Options for a network analysis.
#[derive(Debug, Clone)]
pub struct AnalysisOptions {
    /// Per-layer options (rtol, caps, seed, memory limit).
    pub layer: Options,
    /// Also search for the empirical lower bound (`None`: skip it).
    pub lower: Option<LowerOptions>,
    /// Bound runs of linear layers as one operator where that is tighter.
    pub merge_linear_runs: bool,
}

impl Default for AnalysisOptions {
    fn default() -> Self {
        AnalysisOptions {
            layer: Options::default(),
            lower: Some(LowerOptions::default()),
            merge_linear_runs: true,
        }
    }
}

/// One linear layer (Conv, Gemm, MatMul) and its certified interval.
#[derive(Debug, Clone, Serialize)]
pub struct LayerResult {
    /// Node name.
    pub name: String,
    /// Operator ("Conv", "Gemm", "MatMul").
    pub op: String,
    /// Input shape (batch 1).
    pub input_shape: Vec<usize>,
    /// Output shape (batch 1).
    pub output_shape: Vec<usize>,
    /// Certified lower end.
    pub lower: f64,
    /// Proven upper end.
    pub upper: f64,
    /// "exact", "deterministic", "probabilistic(delta=…)".
    pub certificate: String,
    /// How the interval was computed.
    pub method: String,
    /// Iterations of the iterative method (0 for closed forms).
    pub iterations: u32,
    /// Operator applications.
    pub matvecs: u64,
    /// Wall time.
    pub seconds: f64,
    /// Nodes folded into this layer (BatchNorm, constant scales), by name.
    pub folded: Vec<String>,
    /// Whether the layer uses circular padding (a wrap-Pad merged in).
    pub circular: bool,
    /// The full interval.
    #[serde(skip)]
    pub bound: Bound,
}

/// A run of affine nodes bounded as one operator.
#[derive(Debug, Clone, Serialize)]
pub struct MergedRun {
    /// Node names in order.
    pub nodes: Vec<String>,
    /// Product of the separate bounds.
    pub product: f64,
    /// Certified interval of the merged operator.
    pub lower: f64,
    /// Its upper end (used when below the product).
    pub upper: f64,
    /// Its certificate.
    pub certificate: String,
}

/// The whole-network result.
#[derive(Debug, Clone, Serialize)]
pub struct NetworkResult {
    /// Certified lower bound of the network's constant (a pair of inputs attains it), or
    /// `None` when not computed.
    pub lower: Option<f64>,
    /// Proven upper bound.
    pub upper: f64,
    /// Certificate of `upper`.
    pub certificate: String,
    /// The same, as a value.
    #[serde(skip)]
    pub certificate_kind: Certificate,
    /// AutoLip with every node bounded separately: the same composition without merging
    /// linear runs (BatchNorm stays folded).
    pub naive_product: f64,
    /// Details of the lower-bound search.
    pub lower_search: Option<LowerBound>,
    /// Linear runs bounded as one operator.
    pub merged_runs: Vec<MergedRun>,
    /// `upper / lower`: how far the certificate can be from the truth.
    pub gap: Option<f64>,
    /// The composed bound fell below f64's normal range: `upper` is still a valid bound
    /// (every product is rounded up, so it never underflows to 0) but has lost relative
    /// precision.
    pub underflow: bool,
    /// What the numbers do not say by themselves (a skipped lower bound and why, an
    /// underflow), for people reading the report.
    pub notes: Vec<String>,
}

/// Everything an analysis produces.
#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    /// Where the network came from.
    pub model: String,
    /// Input shape (batch 1).
    pub input_shape: Vec<usize>,
    /// Linear layers in graph order.
    pub layers: Vec<LayerResult>,
    /// The network bounds.
    pub network: NetworkResult,
    /// Wall time.
    pub seconds: f64,
}

/// Progress reports during an analysis.
#[derive(Debug, Clone)]
pub struct Progress<'a> {
    /// Steps finished.
    pub done: usize,
    /// Steps in all.
    pub total: usize,
    /// What is being done.
    pub what: &'a str,
}

/// A layer with the elementwise scales folded into it.
struct Folded {
    /// Node indices absorbed before (input side) and after (output side).
    absorbed: Vec<usize>,
    /// Weights with the scales applied (`None`: nothing absorbed, the node's own weights).
    weight: Option<Vec<f32>>,
    /// An upper bound on `‖weight − W∘S‖_F`, what rounding the folded weights to f32 changed.
    rounding: f64,
    /// `max |d_out|·max |d_in|`, the largest factor any weight was multiplied by (1 when
    /// nothing was absorbed).
    max_scale: f64,
}

/// Analyses a network: per-layer intervals, the composed upper bound, and (unless disabled)
/// the empirical lower bound. `progress` is called after each step.
pub fn analyze(
    net: &Network,
    opts: &AnalysisOptions,
    progress: &mut (dyn FnMut(Progress<'_>) + Send),
) -> Result<Analysis> {
    let started = Instant::now();
    opts.layer.validate()?;
    // Layer operators and the lower-bound search work on the activations: refuse networks
    // whose activations alone exceed the memory limit before allocating anything.
    if net.activation_bytes() > opts.layer.memory_limit as u128 {
        return Err(Error::TooLarge {
            what: format!("activations of {} in f64", net.source),
            needed: net.activation_bytes(),
            limit: opts.layer.memory_limit as u128,
        });
    }
    let live = net.live_nodes();
    let consumers = net.consumers();
    let producer = producers(net);
    let layer_nodes: Vec<usize> = (0..net.nodes.len())
        .filter(|&k| live[k] && net.nodes[k].op.is_linear_layer())
        .collect();
    let total = layer_nodes.len() + 1 + usize::from(opts.lower.is_some());
    let mut absorbed_by = vec![usize::MAX; net.nodes.len()];
    let mut factor = vec![f64::NAN; net.nodes.len()];
    let mut certificates = Vec::new();

    // Folding is decided in graph order (a scale between two layers goes to the first);
    // the layers are then bounded concurrently, each with its share of the memory limit.
    let mut folds = Vec::with_capacity(layer_nodes.len());
    for &k in &layer_nodes {
        let folded = fold(net, k, &consumers, &producer, &live, &absorbed_by);
        for &a in &folded.absorbed {
            absorbed_by[a] = k;
        }
        folds.push(folded);
    }
    let per_layer = Options {
        memory_limit: opts.layer.memory_limit / rayon::current_num_threads().max(1),
        ..opts.layer.clone()
    };
    let done = AtomicUsize::new(0);
    let progress_lock = Mutex::new(progress);
    let bounds: Vec<Result<(Bound, String, bool)>> = layer_nodes
        .par_iter()
        .zip(&folds)
        .map(|(&k, folded)| {
            let node = &net.nodes[k];
            let weight = folded.weight.as_deref().unwrap_or_else(|| weights_of(node));
            let (mut bound, method, circular) = layer_bound(node, weight, &per_layer)?;
            widen_for_rounding(&mut bound, node, folded);
            let finished = done.fetch_add(1, Ordering::Relaxed) + 1;
            if let Ok(mut p) = progress_lock.lock() {
                p(Progress {
                    done: finished,
                    total,
                    what: &node.name,
                });
            }
            Ok((bound, method, circular))
        })
        .collect();
    let progress = progress_lock
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut layers = Vec::with_capacity(layer_nodes.len());
    for ((&k, folded), result) in layer_nodes.iter().zip(&folds).zip(bounds) {
        let node = &net.nodes[k];
        let (bound, method, circular) =
            result.map_err(|e| Error::model(&net.source, format!("layer '{}': {e}", node.name)))?;
        factor[k] = bound.upper;
        certificates.push(bound.certificate);
        layers.push(LayerResult {
            name: node.name.clone(),
            op: node.kind.clone(),
            input_shape: net.shapes[node.inputs[0]].clone(),
            output_shape: net.shapes[node.output].clone(),
            lower: bound.lower,
            upper: bound.upper,
            certificate: bound.certificate.label(),
            method,
            iterations: bound.iterations,
            matvecs: bound.matvecs,
            seconds: bound.seconds,
            folded: folded
                .absorbed
                .iter()
                .map(|&a| net.nodes[a].name.clone())
                .collect(),
            circular,
            bound,
        });
    }
    progress(Progress {
        done: layer_nodes.len(),
        total,
        what: "composing",
    });
    for (k, node) in net.nodes.iter().enumerate() {
        if !live[k] || node.op.is_linear_layer() {
            continue;
        }
        let own = node_lipschitz(net, k)?;
        factor[k] = if absorbed_by[k] != usize::MAX {
            1.0
        } else {
            own
        };
    }
    let mut merged_runs = Vec::new();
    let mut tightened = false;
    let naive_product = compose(net, &live, &factor);
    if opts.merge_linear_runs {
        for run in linear_runs(net, &live, &consumers) {
            let product = run_product(run.as_slice(), &factor);
            let b = merged_bound(net, &run, &factor, &opts.layer)?;
            merged_runs.push(MergedRun {
                nodes: run.iter().map(|&k| net.nodes[k].name.clone()).collect(),
                product,
                lower: b.lower,
                upper: b.upper,
                certificate: b.certificate.label(),
            });
            if b.upper < product {
                tightened = true;
                // The whole run's factor sits on its last node.
                for &k in &run {
                    factor[k] = 1.0;
                }
                factor[*run.last().unwrap()] = b.upper;
                certificates.push(b.certificate);
            }
        }
    }
    let upper = if tightened {
        compose(net, &live, &factor)
    } else {
        naive_product
    };
    if !upper.is_finite() {
        return Err(Error::model(
            &net.source,
            format!(
                "the network's upper bound overflows f64: the composed layer bounds exceed {:e} \
                 (no finite bound can be certified in double precision)",
                f64::MAX
            ),
        ));
    }
    let certificate = combine(&certificates);
    // The search evaluates the network with the f32 weights the operators hold. Where those
    // differ from the stored weights (f64 initializers), the pairs it finds are not pairs of
    // the stored network, and no perturbation bound carries a lower bound through the
    // nonlinearities: rather than report an unattained value, the search is skipped.
    let mut notes = Vec::new();
    let rounded = (0..net.nodes.len()).any(|k| live[k] && net.nodes[k].weight_error > 0.0);
    if rounded && opts.lower.is_some() {
        notes.push(
            "no network lower bound: some weights are stored in float64 and evaluated in f32, \
             so an input pair found on the f32 network would not be attained by the stored one"
                .to_string(),
        );
    }
    if underflow_of(upper, &factor) {
        notes.push(format!(
            "the upper bound {upper:e} lies below f64's normal range: valid (rounded up) but imprecise"
        ));
    }
    let lower_search = match &opts.lower {
        Some(lo) if !rounded => {
            progress(Progress {
                done: layer_nodes.len() + 1,
                total,
                what: "lower bound",
            });
            Some(empirical_lower_bound(net, lo)?)
        }
        _ => None,
    };
    progress(Progress {
        done: total,
        total,
        what: "done",
    });
    // Never clipped to `upper`: an attained lower bound above a proven upper bound would be a
    // bug, and the tests must be able to see it.
    let lower = lower_search.as_ref().map(|l| l.value);
    let underflow = underflow_of(upper, &factor);
    let gap = lower.filter(|&l| l > 0.0).map(|l| upper / l);
    Ok(Analysis {
        model: net.source.clone(),
        input_shape: net.shapes[0].clone(),
        layers,
        network: NetworkResult {
            lower,
            upper,
            certificate: certificate.label(),
            certificate_kind: certificate,
            naive_product,
            lower_search,
            merged_runs,
            gap,
            underflow,
            notes,
        },
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// A conv or dense node's own weights.
fn weights_of(node: &super::graph::Node) -> &[f32] {
    match &node.op {
        Op::Conv { weight, .. } | Op::Dense { weight, .. } => weight,
        _ => &[],
    }
}

/// The producing node of every value (`usize::MAX` for the input).
fn producers(net: &Network) -> Vec<usize> {
    let mut p = vec![usize::MAX; net.shapes.len()];
    for (k, n) in net.nodes.iter().enumerate() {
        p[n.output] = k;
    }
    p
}

/// Weakest certificate among the factors; probabilistic failure probabilities add up.
fn combine(certs: &[Certificate]) -> Certificate {
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

/// Absorbs the elementwise scales around layer `k` into its weights.
fn fold(
    net: &Network,
    k: usize,
    consumers: &[Vec<usize>],
    producer: &[usize],
    live: &[bool],
    absorbed_by: &[usize],
) -> Folded {
    let node = &net.nodes[k];
    let n_out = net.len_of(node.output);
    let n_in = net.len_of(node.inputs[0]);
    // Output side.
    let mut d_out = vec![1.0f64; n_out];
    let mut absorbed = Vec::new();
    let mut pending = Vec::new();
    let mut v = node.output;
    while let [j] = consumers[v].as_slice() {
        let j = *j;
        if j == usize::MAX || !live[j] {
            break;
        }
        match &net.nodes[j].op {
            Op::Reshape(_) => pending.push(j),
            Op::Affine { scale, .. } => match absorb(&d_out, scale, |d| fits_output(&node.op, d)) {
                Some(d) => {
                    d_out = d;
                    pending.push(j);
                    absorbed.append(&mut pending);
                }
                None => break,
            },
            _ => break,
        }
        v = net.nodes[j].output;
    }
    // Input side.
    let mut d_in = vec![1.0f64; n_in];
    let mut pending = Vec::new();
    let mut u = node.inputs[0];
    loop {
        let j = producer[u];
        if j == usize::MAX || consumers[u].as_slice() != [k].as_slice() && pending.is_empty() {
            break;
        }
        if consumers[u].len() != 1 || absorbed_by[j] != usize::MAX {
            break;
        }
        match &net.nodes[j].op {
            Op::Reshape(_) => pending.push(j),
            Op::Affine { scale, .. } => match absorb(&d_in, scale, |d| fits_input(&node.op, d)) {
                Some(d) => {
                    d_in = d;
                    pending.push(j);
                    absorbed.append(&mut pending);
                }
                None => break,
            },
            _ => break,
        }
        u = net.nodes[j].inputs[0];
    }
    let (weight, rounding) = if absorbed.is_empty() {
        (None, 0.0)
    } else {
        let (w, e) = scaled_weights(&node.op, &d_in, &d_out);
        (Some(w), e)
    };
    let max_abs = |d: &[f64]| d.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let max_scale = if absorbed.is_empty() {
        1.0
    } else {
        (max_abs(&d_in) * max_abs(&d_out)).next_up()
    };
    Folded {
        absorbed,
        weight,
        rounding,
        max_scale,
    }
}

/// The diagonal `d ⊙ scale`, if the layer can take it into its weights (`fits`).
fn absorb(
    d: &[f64],
    scale: &super::graph::Broadcast,
    fits: impl Fn(&[f64]) -> bool,
) -> Option<Vec<f64>> {
    let trial: Vec<f64> = d
        .iter()
        .enumerate()
        .map(|(i, v)| v * scale.get(i))
        .collect();
    fits(&trial).then_some(trial)
}

/// Is the output-side diagonal constant over what one weight row produces?
fn fits_output(op: &Op, d: &[f64]) -> bool {
    match op {
        Op::Conv { conv, .. } => {
            let plane = d.len() / conv.out_channels;
            d.chunks(plane).all(|c| c.iter().all(|&v| v == c[0]))
        }
        Op::Dense { rows, .. } => d.iter().enumerate().all(|(i, &v)| v == d[i % rows]),
        _ => false,
    }
}

fn fits_input(op: &Op, d: &[f64]) -> bool {
    match op {
        Op::Conv { conv, .. } => {
            let plane = conv.input[0] * conv.input[1];
            d.chunks(plane).all(|c| c.iter().all(|&v| v == c[0]))
        }
        Op::Dense { cols, .. } => d.iter().enumerate().all(|(i, &v)| v == d[i % cols]),
        _ => false,
    }
}

/// The layer's weights times the folded scales, rounded to `f32`, and an upper bound on
/// `‖fl(W∘S) − W∘S‖_F`. The products are formed in f64 (two roundings, relative `2u₆₄`
/// each) and the difference to the `f32` result is taken exactly, so the bound also holds
/// where `f32` underflows (a tiny BatchNorm scale can flush a whole layer to 0, where a
/// relative `u·|w|` bound would claim the zero layer is exact).
fn scaled_weights(op: &Op, d_in: &[f64], d_out: &[f64]) -> (Vec<f32>, f64) {
    // Each weight with the scale it is multiplied by.
    let products: Vec<f64> = match op {
        Op::Conv { conv, weight, .. } => {
            let taps = conv.kernel[0] * conv.kernel[1];
            let (cg, og) = (conv.group_in(), conv.group_out());
            let (plane_out, plane_in) = (
                d_out.len() / conv.out_channels,
                conv.input[0] * conv.input[1],
            );
            let mut p = Vec::with_capacity(weight.len());
            for o in 0..conv.out_channels {
                let g = o / og;
                for c in 0..cg {
                    let s = d_out[o * plane_out] * d_in[(g * cg + c) * plane_in];
                    let row = &weight[(o * cg + c) * taps..(o * cg + c + 1) * taps];
                    p.extend(row.iter().map(|&t| t as f64 * s));
                }
            }
            p
        }
        Op::Dense {
            weight, rows, cols, ..
        } => (0..rows * cols)
            .map(|i| weight[i] as f64 * (d_out[i / cols] * d_in[i % cols]))
            .collect(),
        _ => Vec::new(),
    };
    let (rounded, error) = crate::bound::round_to_f32(&products);
    let norm = products.iter().map(|p| p * p).sum::<f64>().sqrt();
    let product_error = 4.0 * f64::EPSILON * norm * (1.0 + 1e-6);
    (rounded, error + product_error)
}

/// The weights a layer is bounded with differ from the exact ones in two ways, and the
/// interval is widened ([`Bound::widen`]) so that it contains the norm of the exact layer:
/// * folded weights are rounded to `f32`, within `Folded::rounding` (Frobenius);
/// * the node's own `f32` weights are within `weight_error` (Frobenius) of the source's
///   (f64 initializers), which folding multiplies by at most `max_scale`.
fn widen_for_rounding(bound: &mut Bound, node: &super::graph::Node, folded: &Folded) {
    let error = folded.rounding + node.weight_error * folded.max_scale;
    if error > 0.0 {
        bound.widen(frobenius_to_operator(&node.op) * error * (1.0 + 1e-12));
    }
}

/// `c` with `‖layer(E)‖₂ ≤ c·‖E‖_F` for a weight perturbation `E`: `√(kH·kW·m)` for a conv
/// (`m` = circular aliasing multiplicity), 1 for a dense layer.
fn frobenius_to_operator(op: &Op) -> f64 {
    match op {
        Op::Conv { conv, .. } => {
            let [mh, mw] = conv.circular_multiplicity().unwrap_or([1, 1]);
            ((conv.kernel[0] * conv.kernel[1] * mh * mw) as f64).sqrt()
        }
        _ => 1.0,
    }
}

/// Bound of one conv/dense node with the given weights; also says how and whether circular.
fn layer_bound(
    node: &super::graph::Node,
    weight: &[f32],
    opts: &Options,
) -> Result<(Bound, String, bool)> {
    match &node.op {
        Op::Conv { conv, .. } => {
            let r = conv2d_norm(weight, conv, ConvMethod::Auto, opts)?;
            let method = format!("{:?}", r.method).to_lowercase();
            Ok((
                r.bound,
                method,
                conv.padding_mode == crate::conv::PaddingMode::Circular,
            ))
        }
        Op::Dense { rows, cols, .. } => {
            let b = dense_norm(weight, *rows, *cols, opts)?;
            let method = format!("{:?}", b.method).to_lowercase();
            Ok((b, method, false))
        }
        _ => unreachable!("layer_bound on a non-layer"),
    }
}

/// A proven Lipschitz constant of a non-layer node (for Add/Sub/Concat: 1, the rule is
/// applied in [`compose`]).
fn node_lipschitz(net: &Network, k: usize) -> Result<f64> {
    let node = &net.nodes[k];
    let in_shape = &net.shapes[node.inputs[0]];
    Ok(match &node.op {
        Op::Activation(a) => a.lipschitz(),
        Op::PRelu(slope) => slope.max_abs().max(1.0),
        Op::Affine { scale, .. } => scale.max_abs(),
        Op::MaxPool(p) => {
            let c = p.max_cover(0, in_shape[2])? * p.max_cover(1, in_shape[3])?;
            (c as f64).sqrt()
        }
        Op::AvgPool {
            pool,
            count_include_pad,
        } => avg_pool_bound(pool, *count_include_pad, in_shape)?,
        Op::ReduceMean { axes, .. } => {
            let count: usize = axes.iter().map(|&a| in_shape[a]).product();
            (1.0 / count as f64).sqrt() * (1.0 + 4.0 * f64::EPSILON)
        }
        Op::GlobalMaxPool | Op::Reshape(_) => 1.0,
        Op::Gather { index, .. } => {
            let mut count = vec![0u32; net.len_of(node.inputs[0])];
            for &i in index {
                if i != u32::MAX {
                    count[i as usize] += 1;
                }
            }
            (count.into_iter().max().unwrap_or(0) as f64).sqrt()
        }
        Op::Softmax { .. } => 0.5,
        Op::Add | Op::Sub | Op::Concat(_) => 1.0,
        Op::Conv { .. } | Op::Dense { .. } => f64::NAN,
    })
}

/// Schur's test `‖A‖₂ ≤ √(‖A‖₁‖A‖_∞)` for average pooling; both norms are separable over
/// the two axes. Exact for non-overlapping windows without padding.
fn avg_pool_bound(pool: &super::graph::Pool2d, include_pad: bool, shape: &[usize]) -> Result<f64> {
    let mut row = 1.0;
    let mut col = 1.0;
    // Each column sum adds at most min(kernel, out) terms: its rounding is below that many ε.
    let mut terms = 8.0;
    for axis in 0..2 {
        let n = shape[2 + axis];
        let out = pool.output_len(axis, n)?;
        terms += pool.kernel[axis].min(out) as f64;
        let mut col_sum = vec![0.0f64; n];
        let mut row_max = 0.0f64;
        for i in 0..out {
            let taps = pool.window(axis, n, i);
            let divisor = if include_pad { taps.padded } else { taps.count };
            if divisor == 0 || taps.count == 0 {
                continue;
            }
            row_max = row_max.max(taps.count as f64 / divisor as f64);
            for p in taps.positions() {
                col_sum[p] += 1.0 / divisor as f64;
            }
        }
        row *= row_max;
        col *= col_sum.into_iter().fold(0.0, f64::max);
    }
    Ok((row * col).sqrt() * (1.0 + 4.0 * terms * f64::EPSILON))
}

/// True when the composed bound is below f64's normal range though no factor is 0.
fn underflow_of(upper: f64, factor: &[f64]) -> bool {
    upper < f64::MIN_POSITIVE && factor.iter().all(|&f| f != 0.0)
}

/// The product of a run's factors, rounded up: the cap a merged bound is compared with.
fn run_product(run: &[usize], factor: &[f64]) -> f64 {
    run.iter().fold(1.0, |p, &k| mul_up(p, factor[k]))
}

/// `a·b` rounded up (0 only when a factor is 0): products of bounds stay upper bounds
/// through rounding, and never underflow to 0.
fn mul_up(a: f64, b: f64) -> f64 {
    if a == 0.0 || b == 0.0 {
        0.0
    } else {
        (a * b).next_up()
    }
}

/// `a + b` rounded up (for non-negative terms).
fn add_up(a: f64, b: f64) -> f64 {
    (a + b).next_up()
}

/// `√(Σ xᵢ²)` rounded up.
fn norm_up(xs: impl IntoIterator<Item = f64>) -> f64 {
    let sq = xs.into_iter().fold(0.0, |s, x| add_up(s, mul_up(x, x)));
    if sq == 0.0 {
        0.0
    } else {
        sq.sqrt().next_up()
    }
}

/// AutoLip over the graph with per-node factors; the rules of the module docs, every
/// operation rounded up.
fn compose(net: &Network, live: &[bool], factor: &[f64]) -> f64 {
    let mut l = vec![0.0f64; net.shapes.len()];
    l[0] = 1.0;
    for (k, node) in net.nodes.iter().enumerate() {
        if !live[k] {
            continue;
        }
        let ins = node.inputs.iter().map(|&v| l[v]);
        l[node.output] = match node.op {
            Op::Add | Op::Sub => mul_up(ins.fold(0.0, add_up), factor[k]),
            Op::Concat(_) => mul_up(norm_up(ins), factor[k]),
            _ => mul_up(factor[k], l[node.inputs[0]]),
        };
    }
    match net.outputs.as_slice() {
        [o] => l[*o],
        outs => norm_up(outs.iter().map(|&o| l[o])),
    }
}

/// Maximal chains of single-input affine nodes (each feeding only the next) that contain at
/// least two nodes with a non-trivial norm.
fn linear_runs(net: &Network, live: &[bool], consumers: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let chainable = |k: usize| live[k] && net.nodes[k].op.is_affine();
    let mut in_run = vec![false; net.nodes.len()];
    let mut runs = Vec::new();
    for start in 0..net.nodes.len() {
        if in_run[start] || !chainable(start) {
            continue;
        }
        let mut run = vec![start];
        let mut k = start;
        loop {
            let out = net.nodes[k].output;
            match consumers[out].as_slice() {
                [j] if *j != usize::MAX && chainable(*j) && !in_run[*j] => {
                    run.push(*j);
                    k = *j;
                }
                _ => break,
            }
        }
        let heavy = run
            .iter()
            .filter(|&&k| {
                matches!(
                    net.nodes[k].op,
                    Op::Conv { .. } | Op::Dense { .. } | Op::AvgPool { .. } | Op::ReduceMean { .. }
                )
            })
            .count();
        for &k in &run {
            in_run[k] = true;
        }
        if heavy >= 2 {
            runs.push(run);
        }
    }
    runs
}

/// The linear part of a run of affine nodes, as one operator.
struct RunOperator<'a> {
    eval: super::eval::Evaluator<'a>,
    run: Vec<usize>,
    lens: Vec<usize>,
    error: f64,
}

impl LinearOperator for RunOperator<'_> {
    fn input_len(&self) -> usize {
        self.lens[0]
    }
    fn output_len(&self) -> usize {
        *self.lens.last().unwrap()
    }
    fn forward(&self, x: &[f64], y: &mut [f64]) {
        let mut cur = x.to_vec();
        for (i, &k) in self.run.iter().enumerate() {
            let mut next = vec![0.0; self.lens[i + 1]];
            self.eval.linear_forward(k, &[&cur], &mut next);
            cur = next;
        }
        y.copy_from_slice(&cur);
    }
    fn adjoint(&self, y: &[f64], x: &mut [f64]) {
        let mut cur = y.to_vec();
        for (i, &k) in self.run.iter().enumerate().rev() {
            let mut outs = vec![vec![0.0; self.lens[i]]];
            self.eval.linear_adjoint(k, &cur, &mut outs);
            cur = outs.pop().unwrap();
        }
        x.copy_from_slice(&cur);
    }
    fn forward_error(&self) -> f64 {
        self.error
    }
}

/// The merged run's operator is evaluated with the nodes' `f32` weights; where those are
/// within `e_i` of the source's (in operator norm), the exact run is within
/// `Σ_i e_i·Π_{j≠i} u_j` of it (telescoping, `u_j` = each node's proven bound), and the
/// interval is widened by that.
fn merged_bound(net: &Network, run: &[usize], factor: &[f64], opts: &Options) -> Result<Bound> {
    let product = run_product(run, factor);
    let source_error: f64 = run
        .iter()
        .map(|&i| {
            let node = &net.nodes[i];
            let others: f64 = run
                .iter()
                .filter(|&&j| j != i)
                .map(|&j| factor[j])
                .product();
            frobenius_to_operator(&node.op) * node.weight_error * others
        })
        .sum::<f64>()
        * (1.0 + 1e-12);
    let eval = super::eval::Evaluator::for_nodes(net, run, true, opts.memory_limit)?;
    let mut lens = vec![net.len_of(net.nodes[run[0]].inputs[0])];
    lens.extend(run.iter().map(|&k| net.len_of(net.nodes[k].output)));
    // f64 direct operators: rounding ~ (depth · inner size) · u relative to the product.
    let inner: usize = lens.iter().copied().max().unwrap_or(1);
    let error = product * (run.len() as f64) * (inner as f64) * f64::EPSILON;
    let op = RunOperator {
        eval,
        run: run.to_vec(),
        lens,
        error,
    };
    let inner_opts = Options {
        method: Method::Auto,
        ..opts.clone()
    };
    let hints = Hints {
        upper: Some((product, Certificate::Deterministic)),
        ..Hints::default()
    };
    let mut b = spectral_norm_with(&op, &inner_opts, &hints)?;
    b.widen(source_error);
    if b.upper >= product {
        b.upper = product;
        b.certificate = Certificate::Deterministic;
        if b.stop == Stop::Converged {
            b.stop = Stop::UpperLimited;
        }
    }
    Ok(b)
}
