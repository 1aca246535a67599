//! The Lipschitz constants the radii rest on: `L` of the whole logit map, and for every pair
//! of classes a bound `L_ij` on the constant of `f_i − f_j`.
//!
//! `f_i − f_j = (e_i − e_j)ᵀ f` is itself a network: the logit network followed by one more
//! dense row. The network methods merge that row with a linear head (`(w_i − w_j)ᵀ h`), so
//! each sees the pair's own last layer — GloRo's pairwise bound (Leino et al. 2021), with
//! the body bounded by the tightest method that applies instead of the product of layer
//! norms. Two cheaper bounds always hold and the
//! smallest of the three is kept: `√2·L` (Tsuzuku et al. 2018) and `‖w_i − w_j‖·L_body`.

use crate::bound::Certificate;
use crate::error::{Error, Result};
use crate::network::{analyze, Analysis, AnalysisOptions, Dense, Network, NetworkBuilder};
use crate::network::{NetworkMethod, Softmax, ValueId};
use crate::util::{mul_up, sqrt_up};
use rayon::prelude::*;
use serde::Serialize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// One certified bound on a Lipschitz constant, and where it comes from.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Constant {
    /// The proven upper bound.
    pub upper: f64,
    /// How it is proven.
    #[serde(serialize_with = "crate::bound::serialize_label")]
    pub certificate: Certificate,
    /// The network method that gave it.
    pub method: NetworkMethod,
}

/// The constants of a classifier.
#[derive(Debug, Clone)]
pub struct Constants {
    /// Number of classes (logits).
    pub classes: usize,
    /// A bound on the constant of the logit map `x ↦ f(x)`.
    pub global: Constant,
    /// `classes × classes`, symmetric, zero diagonal: `pairwise[i·C + j]` bounds the constant
    /// of `f_i − f_j` (never above `√2·L`). `None` when pairwise bounds were not asked for.
    pub pairwise: Option<Vec<f64>>,
    /// The certificate of all pairwise bounds together (union bound over probabilistic
    /// ones).
    pub pairwise_certificate: Certificate,
    /// How many pairs the network methods bounded one by one (the others use the cheaper
    /// bounds).
    pub pair_analyses: usize,
    /// A trailing Softmax was left out: the radii certify the argmax of the logits before
    /// it, which is the same prediction.
    pub softmax_removed: bool,
    /// What a reader should know (methods skipped, bounds chosen).
    pub notes: Vec<String>,
    /// Time spent, in seconds.
    pub seconds: f64,
}

/// The logit network and its last dense layer, if it has one.
pub(crate) struct Logits {
    /// The network whose single output is the logits.
    pub net: Network,
    /// Number of logits.
    pub classes: usize,
    /// A trailing Softmax was removed.
    pub softmax_removed: bool,
    head: Option<Head>,
}

/// The dense layer that produces the logits.
struct Head {
    /// Its input value.
    input: ValueId,
    /// Its weights (`classes × cols`, row-major) and the rounding they carry.
    weight: Vec<f32>,
    cols: usize,
    weight_error: f64,
}

impl Logits {
    /// The logits of a classifier: its single output, or the input of a Softmax over all of
    /// it.
    pub fn of(net: &Network) -> Result<Logits> {
        let source = net.source();
        let [output] = net.outputs() else {
            return Err(Error::model(
                source,
                format!(
                    "certify needs one output (the logits); the model has {}",
                    net.outputs().len()
                ),
            ));
        };
        let producers = net.producers();
        let node_of = |v: ValueId| producers[v].map(|k| &net.nodes()[k]);
        let mut logits = *output;
        let mut softmax_removed = false;
        if let Some(node) = node_of(logits) {
            if let Some(s) = node.op.downcast_ref::<Softmax>() {
                if s.len == net.len_of(logits) {
                    logits = node.inputs[0];
                    softmax_removed = true;
                }
            }
        }
        let classes = net.len_of(logits);
        if classes < 2 {
            return Err(Error::model(
                source,
                format!("certify needs at least 2 logits; the output has {classes}"),
            ));
        }
        let head = node_of(logits).and_then(|node| {
            let d = node.op.downcast_ref::<Dense>()?;
            (d.rows == classes && net.len_of(node.inputs[0]) == d.cols).then(|| Head {
                input: node.inputs[0],
                weight: d.weight.clone(),
                cols: d.cols,
                weight_error: node.weight_error,
            })
        });
        let mut b = NetworkBuilder::from_network(net.clone());
        b.set_outputs(&[logits])?;
        Ok(Logits {
            net: b.finish(),
            classes,
            softmax_removed,
            head,
        })
    }

    /// The network `x ↦ f_i(x) − f_j(x)`: a `±1` row after the logits. The row is exact in
    /// `f32` (a dense head's row difference would be rounded, and the network methods only
    /// apply to weights stored exactly); they merge it with the head themselves.
    fn pair(&self, i: usize, j: usize) -> Result<Network> {
        let c = self.classes;
        let mut row = vec![0f32; c];
        row[i] = 1.0;
        row[j] = -1.0;
        let logits = self.net.outputs()[0];
        let mut b = NetworkBuilder::from_network(self.net.clone());
        b.select(logits)?;
        if b.shape(logits)? != [1, c] {
            b.flatten()?;
        }
        let out = b.dense(row, 1, c, None)?;
        b.set_outputs(&[out])?;
        Ok(b.finish())
    }

    /// The network that computes the head's input, when there is a dense head.
    fn body(&self) -> Result<Option<(Network, &Head)>> {
        let Some(h) = &self.head else {
            return Ok(None);
        };
        let mut b = NetworkBuilder::from_network(self.net.clone());
        b.set_outputs(&[h.input])?;
        Ok(Some((b.finish(), h)))
    }
}

/// What [`compute`] needs besides the network.
#[derive(Debug, Clone)]
pub struct ConstantOptions {
    /// Options of every network analysis (its lower-bound search is never run).
    pub analysis: AnalysisOptions,
    /// Compute the pairwise bounds.
    pub pairwise: bool,
    /// Most class pairs bounded by a network analysis each; with more classes, the pairs use
    /// `min(√2·L, ‖w_i − w_j‖·L_body)` only. 66 covers 12 classes.
    pub max_pair_analyses: usize,
    /// Use only bounds with an exact or deterministic certificate.
    pub deterministic: bool,
}

impl Default for ConstantOptions {
    fn default() -> Self {
        ConstantOptions {
            analysis: AnalysisOptions::default(),
            pairwise: true,
            max_pair_analyses: 66,
            deterministic: false,
        }
    }
}

/// The smallest bound of an analysis that the options accept.
fn best(analysis: &Analysis, deterministic: bool, source: &str) -> Result<Constant> {
    analysis
        .network
        .methods
        .iter()
        .filter(|m| !deterministic || !matches!(m.certificate, Certificate::Probabilistic { .. }))
        .min_by(|a, b| a.upper.total_cmp(&b.upper))
        .map(|m| Constant {
            upper: m.upper,
            certificate: m.certificate,
            method: m.name,
        })
        .ok_or_else(|| {
            Error::model(
                source,
                "no deterministic network bound: some layers are only bounded \
                 probabilistically (leave out --deterministic, or make them small enough \
                 for an exact SVD)",
            )
        })
}

/// Computes the constants, calling `progress(done, total, what)` after each analysis.
pub(crate) fn compute(
    logits: &Logits,
    opts: &ConstantOptions,
    progress: &mut (dyn FnMut(usize, usize, &str) + Send),
) -> Result<Constants> {
    let started = std::time::Instant::now();
    let analysis = AnalysisOptions {
        lower: None,
        ..opts.analysis.clone()
    };
    let c = logits.classes;
    let pairs: Vec<(usize, usize)> = (0..c)
        .flat_map(|i| (i + 1..c).map(move |j| (i, j)))
        .collect();
    let analysed = opts.pairwise && pairs.len() <= opts.max_pair_analyses;
    let total =
        1 + usize::from(opts.pairwise && logits.head.is_some()) + analysed as usize * pairs.len();
    let mut done = 0;
    progress(done, total, "logits");
    let source = logits.net.source().to_string();
    let whole = analyze(&logits.net, &analysis)?;
    let global = best(&whole, opts.deterministic, &source)?;
    done += 1;
    let mut notes = whole.network.notes.clone();
    if !opts.pairwise {
        return Ok(Constants {
            classes: c,
            global,
            pairwise: None,
            pairwise_certificate: global.certificate,
            pair_analyses: 0,
            softmax_removed: logits.softmax_removed,
            notes,
            seconds: started.elapsed().as_secs_f64(),
        });
    }
    // √2·L bounds every pair.
    let sqrt2_l = mul_up(sqrt_up(2.0), global.upper);
    let mut matrix = vec![sqrt2_l; c * c];
    for i in 0..c {
        matrix[i * c + i] = 0.0;
    }
    let mut certificates = vec![global.certificate];
    if let Some((body, head)) = logits.body()? {
        progress(done, total, "body");
        let body_bound = best(&analyze(&body, &analysis)?, opts.deterministic, &source)?;
        done += 1;
        certificates.push(body_bound.certificate);
        for &(i, j) in &pairs {
            let bound = mul_up(row_distance_up(head, i, j), body_bound.upper);
            update(&mut matrix, c, i, j, bound);
        }
    }
    if analysed {
        // The pairs are independent and each analysis is mostly sequential: bound them in
        // parallel, each with its share of the memory limit. The order of the results
        // does not depend on the schedule.
        let threads = rayon::current_num_threads().max(1);
        let per_pair = AnalysisOptions {
            layer: crate::Options {
                memory_limit: analysis.layer.memory_limit / threads,
                ..analysis.layer.clone()
            },
            ..analysis.clone()
        };
        let finished = AtomicUsize::new(done);
        let progress = Mutex::new(progress);
        let bounds: Vec<Result<Constant>> = pairs
            .par_iter()
            .map(|&(i, j)| {
                let pair = analyze(&logits.pair(i, j)?, &per_pair)?;
                let bound = best(&pair, opts.deterministic, &source);
                let now = finished.fetch_add(1, Ordering::Relaxed) + 1;
                if let Ok(mut p) = progress.lock() {
                    p(now, total, &format!("classes {i}–{j}"));
                }
                bound
            })
            .collect();
        for (&(i, j), bound) in pairs.iter().zip(bounds) {
            let bound = bound?;
            certificates.push(bound.certificate);
            update(&mut matrix, c, i, j, bound.upper);
        }
        let progress = progress.into_inner().unwrap_or_else(|e| e.into_inner());
        progress(total, total, "done");
    } else {
        notes.push(format!(
            "{} class pairs exceed the {} bounded one by one: pairs use min(√2·L, ‖w_i − w_j‖·L_body)",
            pairs.len(),
            opts.max_pair_analyses
        ));
        progress(total, total, "done");
    }
    Ok(Constants {
        classes: c,
        global,
        pairwise: Some(matrix),
        pairwise_certificate: Certificate::compose(&certificates),
        pair_analyses: if analysed { pairs.len() } else { 0 },
        softmax_removed: logits.softmax_removed,
        notes,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Keeps the smaller bound for the pair, both ways round.
fn update(matrix: &mut [f64], c: usize, i: usize, j: usize, bound: f64) {
    let cell = &mut matrix[i * c + j];
    *cell = cell.min(bound);
    matrix[j * c + i] = *cell;
}

/// `‖w_i − w_j‖₂` of the head's rows plus the head's rounding (`2‖E‖_F`), rounded up.
fn row_distance_up(head: &Head, i: usize, j: usize) -> f64 {
    let row = |r: usize| &head.weight[r * head.cols..(r + 1) * head.cols];
    let sq: f64 = row(i)
        .iter()
        .zip(row(j))
        .map(|(&a, &b)| {
            let d = a as f64 - b as f64;
            d * d
        })
        .sum();
    // Summing n squares loses at most n ulps of the sum; widen by that.
    let n = head.cols as f64;
    let sq = sq * (1.0 + (n + 2.0) * f64::EPSILON);
    sqrt_up(sq) + 2.0 * head.weight_error
}
