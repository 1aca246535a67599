//! Certified robustness from the Lipschitz constant: per-sample ℓ2 radii within which no
//! input changes the predicted class, and the certified accuracy they give.
//!
//! For logits `f`, prediction `ŷ = argmax f(x)` and a bound `L_ij` on the constant of
//! `f_i − f_j`, every `x'` with `‖x' − x‖₂ < (f_ŷ(x) − f_j(x)) / L_ŷj` for all `j ≠ ŷ` keeps
//! `f_ŷ(x') > f_j(x')`: the prediction cannot change. Two radii are reported:
//! * **global** — `margin / (√2·L)` with `L` the network's certified constant (Tsuzuku et
//!   al. 2018; `√2·L` bounds every `L_ij`);
//! * **pairwise** — `min_j (f_ŷ − f_j) / L_ŷj` with each pair bounded on its own
//!   ([`constants`]; GloRo, Leino et al. 2021), never smaller than the global radius.
//!
//! The margins come from an `f64` forward pass with the `f64` direct convolution; each one
//! is lowered by a rounding allowance of `1e-7·(1 + max|f|)` before it is divided, far above
//! what double-precision evaluation of the stored `f32` weights can err by in any network
//! this crate accepts.
//!
//! ```
//! use lipschitz::certify::{Certifier, CertifyOptions, Samples};
//! use lipschitz::network::{Activation, NetworkBuilder};
//! // A 2-class network on 2 inputs: f = W relu(x).
//! let mut b = NetworkBuilder::new("toy", &[1, 2])?;
//! b.activation(Activation::Relu)?;
//! b.dense(vec![1.0, 0.0, 0.0, 1.0], 2, 2, None)?;
//! let net = b.finish();
//! let certifier = Certifier::new(&net, &CertifyOptions::default(), &mut |_, _, _| {})?;
//! let samples = Samples::new(vec![3.0, 1.0], 2, vec![0], 2)?;
//! let report = certifier.certify(&samples, &[0.5, 2.0])?;
//! // Margin 2; the pair f_0 − f_1 = relu(x_0) − relu(x_1) has constant √2.
//! assert!((report.samples[0].radius_pairwise.unwrap() - 2.0 / 2f64.sqrt()).abs() < 1e-6);
//! assert_eq!(report.certified_accuracy.global, vec![1.0, 0.0]);
//! # Ok::<(), lipschitz::Error>(())
//! ```

mod constants;
mod local;
mod samples;

pub use constants::{Constant, ConstantOptions, Constants};
pub use samples::Samples;

use crate::bound::Certificate;
use crate::error::{Error, Result};
use crate::network::{Evaluator, Network};
use constants::Logits;
use rayon::prelude::*;
use serde::Serialize;

/// Relative rounding allowance subtracted from every margin (see the module docs).
pub const MARGIN_ROUNDING: f64 = 1e-7;

/// Options of a certification.
#[derive(Debug, Clone, Default)]
pub struct CertifyOptions {
    /// How the constants are computed.
    pub constants: ConstantOptions,
    /// Also compute local radii (bound propagation on the ball around each sample).
    pub local: bool,
}

/// One sample's prediction and radii.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SampleResult {
    /// The true class.
    pub label: usize,
    /// The predicted class (the first largest logit).
    pub predicted: usize,
    /// `f_ŷ − max_{j≠ŷ} f_j`.
    pub margin: f64,
    /// `(margin − allowance) / (√2·L)`, 0 when negative.
    pub radius_global: f64,
    /// `min_j (f_ŷ − f_j − allowance) / L_ŷj` (≥ the global radius), when pairwise bounds
    /// were computed.
    pub radius_pairwise: Option<f64>,
    /// The radius from local bounds on the ball around the sample (≥ the pairwise radius),
    /// when asked for and the network has interval rules for every node.
    pub radius_local: Option<f64>,
}

/// Certified accuracy at each ε, per radius kind.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CertifiedAccuracy {
    /// With the global radii.
    pub global: Vec<f64>,
    /// With the pairwise radii.
    pub pairwise: Option<Vec<f64>>,
    /// With the local radii.
    pub local: Option<Vec<f64>>,
}

/// What a certification found.
#[derive(Debug, Clone, Serialize)]
pub struct Certification {
    /// The model.
    pub model: String,
    /// Number of samples.
    pub n: usize,
    /// Number of classes.
    pub classes: usize,
    /// Fraction of samples predicted correctly.
    pub clean_accuracy: f64,
    /// The network's certified constant.
    pub lipschitz: Constant,
    /// The certificate of the pairwise bounds (all of them together).
    #[serde(serialize_with = "crate::bound::serialize_label")]
    pub pairwise_certificate: Certificate,
    /// Class pairs bounded by a network analysis of their own.
    pub pair_analyses: usize,
    /// The radii ε the accuracy is certified at.
    pub eps: Vec<f64>,
    /// Fraction of samples correctly classified with a radius ≥ ε, per ε.
    pub certified_accuracy: CertifiedAccuracy,
    /// Every sample.
    pub samples: Vec<SampleResult>,
    /// A probabilistic certificate makes every radius hold with that probability only.
    pub probabilistic: bool,
    /// What a reader should know.
    pub notes: Vec<String>,
    /// Seconds spent on the constants.
    pub constants_seconds: f64,
    /// Seconds spent on the samples.
    pub seconds: f64,
}

/// A classifier with its constants computed once, ready to certify any number of samples.
pub struct Certifier {
    logits: Logits,
    constants: Constants,
    local: bool,
    /// The analyses' memory limit, also for evaluating the samples.
    memory_limit: usize,
}

impl Certifier {
    /// Computes the constants of `net` (a classifier with one output: logits, or a Softmax
    /// over them), calling `progress(done, total, what)` between network analyses.
    pub fn new(
        net: &Network,
        opts: &CertifyOptions,
        progress: &mut (dyn FnMut(usize, usize, &str) + Send),
    ) -> Result<Self> {
        let logits = Logits::of(net)?;
        let constants = constants::compute(&logits, &opts.constants, progress)?;
        Ok(Certifier {
            logits,
            constants,
            local: opts.local,
            memory_limit: opts.constants.analysis.layer.memory_limit,
        })
    }

    /// The constants.
    pub fn constants(&self) -> &Constants {
        &self.constants
    }

    /// Values per sample the network takes.
    pub fn input_len(&self) -> usize {
        self.logits.net.len_of(0)
    }

    /// One sample's shape (the input shape without its batch axis).
    pub fn sample_shape(&self) -> &[usize] {
        let shape = self.logits.net.input_shape();
        if shape.len() >= 2 {
            &shape[1..]
        } else {
            shape
        }
    }

    /// Certifies every sample (in parallel) and the accuracy at each `eps`.
    pub fn certify(&self, samples: &Samples, eps: &[f64]) -> Result<Certification> {
        self.certify_with_progress(samples, eps, &|_| {})
    }

    /// [`Certifier::certify`], calling `progress(done)` as samples finish (from any thread).
    pub fn certify_with_progress(
        &self,
        samples: &Samples,
        eps: &[f64],
        progress: &(dyn Fn(usize) + Sync),
    ) -> Result<Certification> {
        let started = std::time::Instant::now();
        if samples.dim != self.input_len() {
            return Err(Error::length(
                "values per sample",
                self.input_len(),
                samples.dim,
            ));
        }
        if let Some(&e) = eps.iter().find(|e| !(e.is_finite() && **e >= 0.0)) {
            return Err(Error::invalid("eps", e, "must be finite and ≥ 0"));
        }
        let net = &self.logits.net;
        let eval = Evaluator::new(net, true, self.memory_limit)?;
        let mut notes = self.constants.notes.clone();
        let abs_ops = self.local.then(|| local::AbsOps::new(net));
        let local = match abs_ops
            .as_ref()
            .map(|ops| local::LocalBounds::new(net, ops, self.memory_limit))
        {
            Some(Ok(l)) => Some(l),
            Some(Err(e)) => {
                notes.push(format!("no local radii: {e}"));
                None
            }
            None => None,
        };
        let done = std::sync::atomic::AtomicUsize::new(0);
        let results: Vec<SampleResult> = (0..samples.n)
            .into_par_iter()
            .map(|i| {
                let logits = eval.output(&eval.forward(samples.input(i)));
                let r = self.radii(&logits, samples.labels[i], |gaps, y, start| {
                    local
                        .as_ref()
                        .map(|l| l.radius(samples.input(i), y, gaps, start))
                });
                let finished = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                if finished.is_multiple_of(256) || finished == samples.n {
                    progress(finished);
                }
                r
            })
            .collect();
        let n = samples.n.max(1) as f64;
        let correct = |r: &&SampleResult| r.predicted == r.label;
        let accuracy = |radius: &dyn Fn(&SampleResult) -> f64| -> Vec<f64> {
            eps.iter()
                .map(|&e| {
                    results
                        .iter()
                        .filter(correct)
                        .filter(|r| radius(r) >= e)
                        .count() as f64
                        / n
                })
                .collect()
        };
        let c = &self.constants;
        let certified_accuracy = CertifiedAccuracy {
            global: accuracy(&|r| r.radius_global),
            pairwise: c
                .pairwise
                .as_ref()
                .map(|_| accuracy(&|r| r.radius_pairwise.unwrap_or(0.0))),
            local: local
                .as_ref()
                .map(|_| accuracy(&|r| r.radius_local.unwrap_or(0.0))),
        };
        let probabilistic = [c.global.certificate, c.pairwise_certificate]
            .iter()
            .any(|c| matches!(c, Certificate::Probabilistic { .. }));
        if c.softmax_removed {
            notes.push(
                "the trailing Softmax is left out: the radii certify the argmax of the logits, \
                 which is the same prediction"
                    .into(),
            );
        }
        Ok(Certification {
            model: net.source().to_string(),
            n: samples.n,
            classes: c.classes,
            clean_accuracy: results.iter().filter(correct).count() as f64 / n,
            lipschitz: c.global,
            pairwise_certificate: c.pairwise_certificate,
            pair_analyses: c.pair_analyses,
            eps: eps.to_vec(),
            certified_accuracy,
            samples: results,
            probabilistic,
            notes,
            constants_seconds: c.seconds,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// The prediction and radii of one sample from its logits; `local(gaps, ŷ, start)` is
    /// the local radius search, given every `f_ŷ − f_j` less the allowance and the radius
    /// certified already.
    fn radii(
        &self,
        logits: &[f64],
        label: usize,
        local: impl Fn(&[f64], usize, f64) -> Option<f64>,
    ) -> SampleResult {
        let c = &self.constants;
        let predicted =
            (0..logits.len()).fold(0, |best, k| if logits[k] > logits[best] { k } else { best });
        let top = logits[predicted];
        let runner_up = (0..logits.len())
            .filter(|&j| j != predicted)
            .map(|j| logits[j])
            .fold(f64::NEG_INFINITY, f64::max);
        let allowance = MARGIN_ROUNDING * (1.0 + logits.iter().fold(0.0f64, |m, v| m.max(v.abs())));
        let margin = top - runner_up;
        let radius = |gap: f64, l: f64| radius_down(gap - allowance, l);
        let sqrt2_l = crate::util::mul_up(crate::util::sqrt_up(2.0), c.global.upper);
        let radius_pairwise = c.pairwise.as_ref().map(|m| {
            (0..c.classes)
                .filter(|&j| j != predicted)
                .map(|j| radius(top - logits[j], m[predicted * c.classes + j]))
                .fold(f64::INFINITY, f64::min)
        });
        let radius_global = radius(margin, sqrt2_l);
        let radius_pairwise = radius_pairwise.map(|r| r.min(f64::MAX));
        let gaps: Vec<f64> = logits.iter().map(|&f| top - f - allowance).collect();
        let start = radius_pairwise.unwrap_or(radius_global).max(radius_global);
        let radius_local = local(&gaps, predicted, start).map(|r| r.max(start));
        SampleResult {
            label,
            predicted,
            margin,
            radius_global,
            radius_pairwise,
            radius_local,
        }
    }
}

/// `gap / l` rounded down, 0 for a non-positive gap, `f64::MAX` for `l = 0`.
fn radius_down(gap: f64, l: f64) -> f64 {
    if gap <= 0.0 {
        0.0
    } else if l == 0.0 {
        f64::MAX
    } else {
        (gap / l).next_down().max(0.0)
    }
}
