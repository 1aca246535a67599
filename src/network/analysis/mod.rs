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

mod eclipse;
mod expand;
mod first_order;
mod fold;
mod interior;
mod liplt;
mod lipsdp;
mod report;
mod rules;
mod runs;
mod sdp;
mod unroll;

pub use report::{Analysis, LayerResult, MergedRun, MethodResult, NetworkMethod, NetworkResult};

use super::graph::{Network, Reader};
use super::lower::{empirical_lower_bound, LowerBound, LowerOptions};
use super::ops::Role;
use crate::bound::{Certificate, Options};
use crate::error::{Error, Result};
use fold::{fold, widen_for_rounding, FoldContext, Folded};
use rayon::prelude::*;
use rules::{compose, run_product, underflow_of};
use runs::{linear_runs, merged_bound};
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
    /// The network bounds to compute beside the product (which is always computed); the
    /// smallest is the network's upper bound.
    pub methods: Vec<NetworkMethod>,
    /// Largest LMI dimension (input coordinates + activation units) LipSDP-Neuron is
    /// computed for (default 2048).
    pub lipsdp_max_size: usize,
    /// Largest LMI dimension LipSDP-Neuron is solved for by the interior-point method, to
    /// its optimum; its cost grows as the cube (the default 900 takes up to ~5 s on two
    /// cores, 1600 about 20 s). Larger LMIs, up to `lipsdp_max_size`, go to the first-order
    /// eigenvalue method: verified the same way, within about 1 % of the optimum.
    pub lipsdp_interior_max_size: usize,
    /// Largest LMI dimension ECLipsE-Fast is computed for: a few dense factorisations, so
    /// the default 4096 takes a few seconds and about 1 GiB.
    pub eclipse_max_size: usize,
    /// Budget of LipLT, in units of work (activation values along each norm's path, ~1e6
    /// per second on two cores): over it the network is cut into shorter segments, and past
    /// the shortest LipLT is skipped, with a note either way.
    pub liplt_max_work: u128,
}

impl Default for AnalysisOptions {
    fn default() -> Self {
        AnalysisOptions {
            layer: Options::default(),
            lower: Some(LowerOptions::default()),
            merge_linear_runs: true,
            methods: NetworkMethod::ALL.to_vec(),
            lipsdp_max_size: lipsdp::DEFAULT_MAX_SIZE,
            lipsdp_interior_max_size: lipsdp::INTERIOR_MAX_SIZE,
            eclipse_max_size: lipsdp::DEFAULT_ECLIPSE_MAX_SIZE,
            liplt_max_work: liplt::DEFAULT_MAX_WORK,
        }
    }
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

/// The graph facts every step of an analysis uses.
struct Graph<'n> {
    net: &'n Network,
    live: Vec<bool>,
    readers: Vec<Vec<Reader>>,
    /// The layers (conv, dense) that contribute to an output, in graph order.
    layers: Vec<usize>,
}

/// The per-node factors of the composition and the certificates they rest on.
struct Factors {
    /// A proven bound on each node's constant (1 for nodes folded into a layer).
    value: Vec<f64>,
    /// The certificates of the spectral bounds among them.
    certificates: Vec<Certificate>,
}

/// Analyses a network: per-layer intervals, the composed upper bound, and (unless disabled)
/// the empirical lower bound.
pub fn analyze(net: &Network, opts: &AnalysisOptions) -> Result<Analysis> {
    analyze_with_progress(net, opts, &mut |_| {})
}

/// [`analyze`], calling `progress` after each step (for a progress bar).
pub fn analyze_with_progress(
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
    let layers = (0..net.nodes.len())
        .filter(|&k| live[k] && net.nodes[k].op.role() == Role::Layer)
        .collect();
    let g = Graph {
        net,
        readers: net.readers(),
        live,
        layers,
    };
    let total = g.layers.len() + 1 + usize::from(opts.lower.is_some());
    let folds = fold_layers(&g);
    let (layers, mut factors) = bound_layers(&g, &folds, &opts.layer, total, progress)?;
    progress(Progress {
        done: g.layers.len(),
        total,
        what: "composing",
    });
    node_factors(&g, &folds, &mut factors.value)?;
    let naive_product = compose(net, &g.live, &factors.value);
    let perturbation = weight_perturbation(&g, &folds, &factors.value);
    let merged_runs = if opts.merge_linear_runs {
        merge_runs(&g, &mut factors, &opts.layer)?
    } else {
        Vec::new()
    };
    let product = finite_upper(net, compose(net, &g.live, &factors.value))?;
    let mut methods = vec![MethodResult {
        name: NetworkMethod::Product,
        upper: product,
        certificate: Certificate::compose(&factors.certificates),
        seconds: started.elapsed().as_secs_f64(),
    }];
    let mut notes: Vec<String> = net
        .nodes
        .iter()
        .enumerate()
        .filter(|&(k, _)| g.live[k])
        .filter_map(|(_, n)| Some(format!("node '{}' ({}): {}", n.name, n.kind, n.op.note()?)))
        .collect();
    if opts.methods.contains(&NetworkMethod::LipLT) {
        let t = Instant::now();
        let direct = liplt::liplt_bound(
            net,
            &g.live,
            &factors.value,
            &opts.layer,
            opts.liplt_max_work,
        )?;
        // Pair sorts and maxima as ReLUs (`expand.rs`) let LipLT split them like any ReLU;
        // kept where that is tighter than cutting at them.
        let expanded =
            expand::expand_to_relus(net, &g.live, &factors.value, expand::Expand::Sorts)?;
        let outcome = match &expanded {
            Some((n, f)) => {
                let split =
                    liplt::liplt_bound(n, &n.live_nodes(), f, &opts.layer, opts.liplt_max_work)?;
                liplt::Outcome::tighter(direct, split)
            }
            None => direct,
        };
        let seconds = t.elapsed().as_secs_f64();
        record(
            NetworkMethod::LipLT,
            (outcome, seconds),
            perturbation,
            &factors,
            &mut methods,
            &mut notes,
        );
    }
    let asked = |m: NetworkMethod, max: usize| opts.methods.contains(&m).then_some(max);
    let sdp = lipsdp::sdp_bounds(
        net,
        &g.live,
        &factors.value,
        &opts.layer,
        asked(NetworkMethod::Eclipse, opts.eclipse_max_size),
        asked(NetworkMethod::LipSdp, opts.lipsdp_max_size),
        opts.lipsdp_interior_max_size,
    )?;
    notes.extend(sdp.notes);
    for (name, timed) in [
        (NetworkMethod::Eclipse, sdp.eclipse),
        (NetworkMethod::LipSdp, sdp.lipsdp),
    ] {
        if let Some(timed) = timed {
            record(
                name,
                timed,
                perturbation,
                &factors,
                &mut methods,
                &mut notes,
            );
        }
    }
    let best = methods
        .iter()
        .min_by(|a, b| a.upper.total_cmp(&b.upper))
        .expect("the product is always there")
        .clone();
    let (upper, certificate) = (best.upper, best.certificate);
    let (lower_search, more_notes) = lower_bound(&g, opts, upper, &factors, total, progress)?;
    notes.extend(more_notes);
    progress(Progress {
        done: total,
        total,
        what: "done",
    });
    // Never clipped to `upper`: an attained lower bound above a proven upper bound would be a
    // bug, and the tests must be able to see it.
    let lower = lower_search.as_ref().map(|l| l.value);
    let gap = lower.filter(|&l| l > 0.0).map(|l| upper / l);
    Ok(Analysis {
        model: net.source.clone(),
        input_shape: net.shapes[0].clone(),
        layers,
        network: NetworkResult {
            lower,
            upper,
            certificate,
            method: best.name,
            methods,
            naive_product,
            lower_search,
            merged_runs,
            gap,
            underflow: underflow_of(upper, &factors.value),
            notes,
        },
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Adds a method's bound to `methods`, or a note saying why it was not computed. The
/// linearised operators are capped by the layers' bounds: their certificates count too.
fn record(
    name: NetworkMethod,
    (outcome, seconds): lipsdp::Timed,
    perturbation: f64,
    factors: &Factors,
    methods: &mut Vec<MethodResult>,
    notes: &mut Vec<String>,
) {
    match outcome {
        liplt::Outcome::OverBudget(why) => {
            notes.push(format!("{} not computed: {why}", name.label()))
        }
        liplt::Outcome::NotApplicable => {}
        liplt::Outcome::Bound(b, note) => {
            notes.extend(note.map(|n| format!("{}: {n}", name.label())));
            let mut certs = factors.certificates.clone();
            certs.push(b.certificate);
            methods.push(MethodResult {
                name,
                upper: rules::add_up(b.upper, perturbation),
                certificate: Certificate::compose(&certs),
                seconds,
            });
        }
    }
}

/// The composed upper bound, or an error when it overflowed f64.
fn finite_upper(net: &Network, upper: f64) -> Result<f64> {
    if upper.is_finite() {
        return Ok(upper);
    }
    Err(Error::model(
        &net.source,
        format!(
            "the network's upper bound overflows f64: the composed layer bounds exceed {:e} \
             (no finite bound can be certified in double precision)",
            f64::MAX
        ),
    ))
}

/// Decides, in graph order, which elementwise scales each layer absorbs (a scale between
/// two layers goes to the first).
fn fold_layers(g: &Graph<'_>) -> Vec<Folded> {
    let net = g.net;
    let producers = net.producers();
    let mut absorbed_by = vec![None; net.nodes.len()];
    let mut folds = Vec::with_capacity(g.layers.len());
    for &k in &g.layers {
        let cx = FoldContext {
            net,
            readers: &g.readers,
            producers: &producers,
            live: &g.live,
            absorbed_by: &absorbed_by,
        };
        let folded = fold(&cx, k);
        for &a in &folded.absorbed {
            absorbed_by[a] = Some(k);
        }
        folds.push(folded);
    }
    folds
}

/// Bounds the layers concurrently, each with its share of the memory limit.
fn bound_layers(
    g: &Graph<'_>,
    folds: &[Folded],
    opts: &Options,
    total: usize,
    progress: &mut (dyn FnMut(Progress<'_>) + Send),
) -> Result<(Vec<LayerResult>, Factors)> {
    let net = g.net;
    let per_layer = Options {
        memory_limit: opts.memory_limit / rayon::current_num_threads().max(1),
        ..opts.clone()
    };
    let done = AtomicUsize::new(0);
    let progress_lock = Mutex::new(progress);
    let bounds: Vec<Result<super::ops::LayerBound>> = g
        .layers
        .par_iter()
        .zip(folds)
        .map(|(&k, folded)| {
            let node = &net.nodes[k];
            let layer = node.op.as_layer().expect("layers have Role::Layer");
            let weight = folded.weight.as_deref().unwrap_or_else(|| layer.weights());
            let mut b = layer.bound(weight, &per_layer)?;
            widen_for_rounding(&mut b.bound, node, folded);
            let finished = done.fetch_add(1, Ordering::Relaxed) + 1;
            if let Ok(mut p) = progress_lock.lock() {
                p(Progress {
                    done: finished,
                    total,
                    what: &node.name,
                });
            }
            Ok(b)
        })
        .collect();
    let mut factors = Factors {
        value: vec![f64::NAN; net.nodes.len()],
        certificates: Vec::new(),
    };
    let mut layers = Vec::with_capacity(g.layers.len());
    for ((&k, folded), result) in g.layers.iter().zip(folds).zip(bounds) {
        let node = &net.nodes[k];
        let b =
            result.map_err(|e| Error::model(&net.source, format!("layer '{}': {e}", node.name)))?;
        factors.value[k] = b.bound.upper;
        factors.certificates.push(b.bound.certificate);
        layers.push(layer_result(net, k, folded, b));
    }
    Ok((layers, factors))
}

fn layer_result(
    net: &Network,
    k: usize,
    folded: &Folded,
    b: super::ops::LayerBound,
) -> LayerResult {
    let node = &net.nodes[k];
    let bound = b.bound;
    LayerResult {
        name: node.name.clone(),
        module: node.module.clone(),
        op: node.kind.clone(),
        input_shape: net.shapes[node.inputs[0]].clone(),
        output_shape: net.shapes[node.output].clone(),
        lower: bound.lower,
        upper: bound.upper,
        certificate: bound.certificate,
        method: b.method,
        iterations: bound.iterations,
        matvecs: bound.matvecs,
        seconds: bound.seconds,
        folded: folded
            .absorbed
            .iter()
            .map(|&a| net.nodes[a].name.clone())
            .collect(),
        circular: b.circular,
        route: b.route,
        bound,
    }
}

/// `Δ` with `Lip(source network) ≤ Lip bound of the f32 network + Δ`, for the methods that
/// work on the `f32` weights the network holds (LipLT, ECLipsE, LipSDP) when a layer's
/// weights differ from the source's (`weight_error > 0`: f64 initializers, folded
/// constants); 0 when none does.
///
/// Those methods bound `‖J̃_D‖` for every choice `D` of activation slopes in their
/// intervals, and the source network's Jacobian is some `J_D` of the same form with the
/// exact weights. Along the graph, `Δ_v ≥ sup_D ‖J_D − J̃_D‖` of the map to value `v`: a layer
/// with exact weights `W` and `f32` weights `W̃ = W − E` gives
/// `W·M − W̃·M̃ = W̃(M − M̃) + E·M`, so `Δ_out = (F + e)·Δ_in + e·L_in` with `F` its factor
/// (which bounds `‖W‖`, folded scales included), `e` the operator bound of `E` (times the
/// folded scales) and `L_in` the AutoLip bound of the input; sums add, stacks take the
/// root of squares, and every other node multiplies by its factor.
fn weight_perturbation(g: &Graph<'_>, folds: &[Folded], factor: &[f64]) -> f64 {
    let net = g.net;
    let mut error = vec![0.0f64; net.nodes.len()];
    for (&k, folded) in g.layers.iter().zip(folds) {
        let node = &net.nodes[k];
        let e = node.weight_error * folded.max_scale;
        error[k] = rules::mul_up(fold::frobenius_to_operator(node), e);
    }
    // Elementwise scales with an error (never folded into a layer): `‖diag(δ)‖ ≤ max|δ|`.
    for (k, node) in net.nodes.iter().enumerate() {
        if g.live[k] && node.op.role() != Role::Layer {
            error[k] = node.weight_error;
        }
    }
    if error.iter().all(|&e| e == 0.0) {
        return 0.0;
    }
    let mut l = vec![0.0f64; net.shapes.len()];
    let mut d = vec![0.0f64; net.shapes.len()];
    l[0] = 1.0;
    for (k, node) in net.nodes.iter().enumerate() {
        if !g.live[k] {
            continue;
        }
        let (ls, ds) = (
            node.inputs.iter().map(|&v| l[v]),
            node.inputs.iter().map(|&v| d[v]),
        );
        let (lo, dout) = match node.op.role() {
            Role::Sum => (
                rules::mul_up(ls.fold(0.0, rules::add_up), factor[k]),
                rules::mul_up(ds.fold(0.0, rules::add_up), factor[k]),
            ),
            Role::Stack => (
                rules::mul_up(rules::norm_up(ls), factor[k]),
                rules::mul_up(rules::norm_up(ds), factor[k]),
            ),
            _ => {
                let (li, di) = (l[node.inputs[0]], d[node.inputs[0]]);
                let grown = rules::mul_up(rules::add_up(factor[k], error[k]), di);
                (
                    rules::mul_up(factor[k], li),
                    rules::add_up(grown, rules::mul_up(error[k], li)),
                )
            }
        };
        l[node.output] = lo;
        d[node.output] = dout;
    }
    match net.outputs.as_slice() {
        [o] => d[*o],
        outs => rules::norm_up(outs.iter().map(|&o| d[o])),
    }
}

/// The factor of every live node that is not a layer: its own constant, or 1 when it was
/// folded into a layer.
fn node_factors(g: &Graph<'_>, folds: &[Folded], factor: &mut [f64]) -> Result<()> {
    let net = g.net;
    let mut folded = vec![false; net.nodes.len()];
    for f in folds {
        for &a in &f.absorbed {
            folded[a] = true;
        }
    }
    for (k, node) in net.nodes.iter().enumerate() {
        if !g.live[k] || node.op.role() == Role::Layer {
            continue;
        }
        // A scale folded from other constants may be `weight_error` from its exact value.
        let own = rules::add_up(
            node.op.lipschitz(&net.input_shapes(node))?,
            node.weight_error,
        );
        factor[k] = if folded[k] { 1.0 } else { own };
    }
    Ok(())
}

/// Bounds each linear run as one operator; where that beats the product of its factors,
/// the run's factor moves to its last node.
fn merge_runs(g: &Graph<'_>, factors: &mut Factors, opts: &Options) -> Result<Vec<MergedRun>> {
    let net = g.net;
    let mut merged = Vec::new();
    for run in linear_runs(net, &g.live, &g.readers) {
        let product = run_product(run.as_slice(), &factors.value);
        let b = merged_bound(net, &run, &factors.value, opts)?;
        merged.push(MergedRun {
            nodes: run.iter().map(|&k| net.nodes[k].name.clone()).collect(),
            product,
            lower: b.lower,
            upper: b.upper,
            certificate: b.certificate,
        });
        if b.upper < product {
            for &k in &run {
                factors.value[k] = 1.0;
            }
            factors.value[*run.last().expect("runs are not empty")] = b.upper;
            factors.certificates.push(b.certificate);
        }
    }
    Ok(merged)
}

/// The empirical lower bound (unless disabled or unattainable), and the notes for readers.
fn lower_bound(
    g: &Graph<'_>,
    opts: &AnalysisOptions,
    upper: f64,
    factors: &Factors,
    total: usize,
    progress: &mut (dyn FnMut(Progress<'_>) + Send),
) -> Result<(Option<LowerBound>, Vec<String>)> {
    let net = g.net;
    // The search evaluates the network with the f32 weights the operators hold. Where those
    // differ from the stored weights (f64 initializers), the pairs it finds are not pairs of
    // the stored network, and no perturbation bound carries a lower bound through the
    // nonlinearities: rather than report an unattained value, the search is skipped.
    let mut notes = Vec::new();
    let rounded = (0..net.nodes.len()).any(|k| g.live[k] && net.nodes[k].weight_error > 0.0);
    if rounded && opts.lower.is_some() {
        notes.push(
            "no network lower bound: some weights are stored in float64 and evaluated in f32, \
             so an input pair found on the f32 network would not be attained by the stored one"
                .to_string(),
        );
    }
    if underflow_of(upper, &factors.value) {
        notes.push(format!(
            "the upper bound {upper:e} lies below f64's normal range: valid (rounded up) but imprecise"
        ));
    }
    let search = match &opts.lower {
        Some(lo) if !rounded => {
            progress(Progress {
                done: g.layers.len() + 1,
                total,
                what: "lower bound",
            });
            Some(empirical_lower_bound(net, lo)?)
        }
        _ => None,
    };
    Ok((search, notes))
}
