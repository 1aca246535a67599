//! Certified robustness from C: `lip_network_certify` gives each sample's prediction,
//! margin and certified ℓ2 radii (global, pairwise and optionally local).

use super::handle::{guard, network, slice, Out, OutSlice};
use super::options::{read_options, with_threads};
use super::status::{CResult, Failure};
use crate::certify::{Certifier, CertifyOptions, ConstantOptions, Samples};

/// One sample's result.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct LipSampleRadii {
    /// The predicted class (the first largest logit).
    pub predicted: i64,
    /// `f_predicted − max_{j ≠ predicted} f_j`.
    pub margin: f64,
    /// `margin / (√2·L)` (less a rounding allowance): no input closer than this changes the
    /// prediction.
    pub radius_global: f64,
    /// The radius from the per-pair bounds `L_ij` (≥ `radius_global`).
    pub radius_pairwise: f64,
    /// The radius from local bounds on the ball around the sample (≥ `radius_pairwise`);
    /// NaN when `local` was 0 or the network has a node without an interval rule.
    pub radius_local: f64,
}

/// What holds for every radius of a `lip_network_certify` call.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct LipCertifySummary {
    /// The network's certified Lipschitz constant `L` (of the logits).
    pub lipschitz: f64,
    /// Certificate of `L` (`LIP_CERT_*`).
    pub certificate: i32,
    /// Certificate of all pairwise bounds together: when probabilistic, every radius holds
    /// with that probability.
    pub pairwise_certificate: i32,
    /// Number of classes.
    pub classes: u32,
    /// Class pairs bounded by a network analysis of their own.
    pub pair_analyses: u32,
    /// Fraction of samples whose prediction equals the label.
    pub clean_accuracy: f64,
}

/// Certifies `n` samples of `dim` values each (`inputs`, row-major, one sample after the
/// other, in the network's input layout) with their `labels` (class indices).
///
/// The constants (the network's `L` and one bound per class pair, which take one network
/// analysis each) are computed on every call with `options` (NULL: defaults); certify many
/// samples per call. `local` ≠ 0 also computes local radii. Writes `n` results to
/// `radii_out` and the summary to `summary_out` (NULL to skip). A sample is certified at
/// radius ε when its prediction equals its label and its radius is ≥ ε.
///
/// # Safety
/// `net` is a live handle; `inputs` points to `n·dim` floats, `labels` to `n` values,
/// `radii_out` to `n` writable results; `options` and `summary_out` are NULL or valid.
#[no_mangle]
pub unsafe extern "C" fn lip_network_certify(
    net: *const super::network::LipNetwork,
    inputs: *const f32,
    n: usize,
    dim: usize,
    labels: *const i64,
    local: i32,
    options: *const super::options::LipOptions,
    radii_out: *mut LipSampleRadii,
    summary_out: *mut LipCertifySummary,
) -> i32 {
    guard("lip_network_certify", || {
        // SAFETY: NULL or a valid `LipOptions` by the caller's contract.
        let o = unsafe { read_options(options) };
        let analysis = o.to_analysis()?;
        let limit = analysis.layer.memory_limit;
        // SAFETY: the caller's contract for each pointer.
        let (handle, x, y, radii) = unsafe {
            (
                network(net)?,
                slice(inputs, n.saturating_mul(dim), "inputs", limit / 2)?,
                slice(labels, n, "labels", limit)?,
                OutSlice::new(radii_out, n, "radii_out")?,
            )
        };
        // SAFETY: NULL or writable by the caller's contract.
        let summary = unsafe { Out::new(summary_out, "summary_out") }.ok();
        let labels = y
            .iter()
            .enumerate()
            .map(|(i, &l)| {
                usize::try_from(l)
                    .map_err(|_| Failure::invalid(format!("labels[{i}] = {l} is negative")))
            })
            .collect::<CResult<Vec<usize>>>()?;
        let net = handle.network();
        let opts = CertifyOptions {
            constants: ConstantOptions {
                analysis,
                ..ConstantOptions::default()
            },
            local: local != 0,
        };
        let report = with_threads(o.threads, || {
            let certifier = Certifier::new(net, &opts, &mut |_, _, _| {})?;
            let samples = Samples::new(
                x.iter().map(|&v| v as f64).collect(),
                dim,
                labels,
                certifier.constants().classes,
            )?;
            if dim != certifier.input_len() {
                return Err(Failure::invalid(format!(
                    "dim = {dim}: the network takes {} values per sample",
                    certifier.input_len()
                )));
            }
            Ok(certifier.certify(&samples, &[])?)
        })?;
        let results: Vec<LipSampleRadii> = report
            .samples
            .iter()
            .map(|s| LipSampleRadii {
                predicted: s.predicted as i64,
                margin: s.margin,
                radius_global: s.radius_global,
                radius_pairwise: s.radius_pairwise.unwrap_or(s.radius_global),
                radius_local: s.radius_local.unwrap_or(f64::NAN),
            })
            .collect();
        radii.put(&results);
        if let Some(out) = summary {
            out.put(LipCertifySummary {
                lipschitz: report.lipschitz.upper,
                certificate: report.lipschitz.certificate.code(),
                pairwise_certificate: report.pairwise_certificate.code(),
                classes: report.classes as u32,
                pair_analyses: report.pair_analyses as u32,
                clean_accuracy: report.clean_accuracy,
            });
        }
        Ok(())
    })
}
