//! `lipschitz certify`: certified radii and accuracy for a set of samples, as a table or one
//! JSON object, with an optional per-sample CSV and an SVG plot.

use crate::render::write_stdout;
use crate::{load_network, progress_bar, Common, NetworkArgs};
use lipschitz::certify::{
    Certification, Certifier, CertifyOptions, ConstantOptions, SampleResult, Samples,
};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The arguments of `lipschitz certify`.
#[derive(clap::Args, Clone)]
pub(crate) struct CertifyArgs {
    /// Input samples: .npy of shape (N, …) in the model's input layout (or flattened),
    /// float32 or float64; or .npz with arrays `x` and `y`.
    #[arg(long)]
    inputs: PathBuf,
    /// Labels: .npy of N class indices (optional when --inputs is an .npz holding `y`).
    #[arg(long)]
    labels: Option<PathBuf>,
    /// The ℓ2 radii to report certified accuracy at (default 36/255, 72/255, 108/255).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0.1412,0.2824,0.4235",
        allow_negative_numbers = true
    )]
    eps: Vec<f64>,
    /// Write one CSV row per sample (label, prediction, margin, radii) to this file.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Write the certified-accuracy-vs-ε curve as an SVG image to this file.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Use only exact or deterministic bounds (no probabilistic layer bound).
    #[arg(long)]
    deterministic: bool,
    /// Also compute local radii: the constant over the ball around each sample, from the
    /// activation slopes interval bound propagation proves there, searched with the radius.
    #[arg(long)]
    local: bool,
    /// Bound at most this many class pairs with a network analysis each (beyond, pairs use
    /// the cheaper √2·L and ‖w_i − w_j‖·L_body bounds).
    #[arg(long, default_value_t = ConstantOptions::default().max_pair_analyses)]
    max_pair_analyses: usize,
}

pub(crate) fn run(
    model: &Path,
    args: &CertifyArgs,
    net_args: &NetworkArgs,
    common: &Common,
) -> Result<(), String> {
    let (net, analysis) = load_network(Some(model), net_args, common)?;
    let opts = CertifyOptions {
        constants: ConstantOptions {
            analysis,
            pairwise: true,
            max_pair_analyses: args.max_pair_analyses,
            deterministic: args.deterministic,
        },
        local: args.local,
    };
    let bar = progress_bar()?;
    let certifier = Certifier::new(&net, &opts, &mut |done, total, what| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        bar.set_message(format!("constants: {what}"));
    })
    .map_err(|e| e.to_string())?;
    let classes = certifier.constants().classes;
    let samples = Samples::read(
        &args.inputs,
        args.labels.as_deref(),
        certifier.sample_shape(),
        classes,
    )
    .map_err(|e| e.to_string())?;
    bar.set_length(samples.n as u64);
    bar.set_position(0);
    bar.set_message("samples");
    let report = certifier
        .certify_with_progress(&samples, &args.eps, &|done| bar.set_position(done as u64))
        .map_err(|e| e.to_string())?;
    bar.finish_and_clear();
    if let Some(path) = &args.csv {
        std::fs::write(path, csv(&report))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        let svg = crate::plot::accuracy_curve(&report)?;
        std::fs::write(path, svg).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if common.json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        return write_stdout(&(text + "\n"));
    }
    write_stdout(&table(&report))
}

/// One row per sample.
fn csv(report: &Certification) -> String {
    let mut out =
        String::from("index,label,predicted,margin,radius_global,radius_pairwise,radius_local\n");
    let opt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:e}"));
    for (i, s) in report.samples.iter().enumerate() {
        let _ = writeln!(
            out,
            "{i},{},{},{:e},{:e},{},{}",
            s.label,
            s.predicted,
            s.margin,
            s.radius_global,
            opt(s.radius_pairwise),
            opt(s.radius_local)
        );
    }
    out
}

/// A sample's radius of one kind, if computed.
type RadiusOf = fn(&SampleResult) -> Option<f64>;

/// The quartiles of the radii of correctly classified samples.
fn quartiles(report: &Certification, radius: RadiusOf) -> Option<[f64; 3]> {
    let mut r: Vec<f64> = report
        .samples
        .iter()
        .filter(|s| s.predicted == s.label)
        .filter_map(radius)
        .collect();
    if r.is_empty() {
        return None;
    }
    r.sort_by(f64::total_cmp);
    let at = |q: f64| r[((r.len() - 1) as f64 * q).round() as usize];
    Some([at(0.25), at(0.5), at(0.75)])
}

/// The human-readable report.
fn table(report: &Certification) -> String {
    let mut out = String::new();
    let l = &report.lipschitz;
    let _ = writeln!(out, "{}", report.model);
    let _ = writeln!(out, "{} samples, {} classes", report.n, report.classes);
    let _ = writeln!(
        out,
        "Lipschitz constant L ≤ {:.6} ({}, {})",
        l.upper,
        l.method.label(),
        l.certificate
    );
    let _ = writeln!(
        out,
        "pairwise bounds: {} class pairs analysed, {}",
        report.pair_analyses, report.pairwise_certificate
    );
    let _ = writeln!(
        out,
        "clean accuracy {:.2} %\n",
        100.0 * report.clean_accuracy
    );
    let acc = &report.certified_accuracy;
    let _ = writeln!(
        out,
        "{:>10} {:>12} {:>12} {:>12}",
        "ε", "global", "pairwise", "local"
    );
    let cell = |p: Option<&Vec<f64>>, k: usize| {
        p.map_or("-".to_string(), |p| format!("{:.2} %", 100.0 * p[k]))
    };
    for (k, e) in report.eps.iter().enumerate() {
        let _ = writeln!(
            out,
            "{e:>10.4} {:>12} {:>12} {:>12}",
            cell(Some(&acc.global), k),
            cell(acc.pairwise.as_ref(), k),
            cell(acc.local.as_ref(), k)
        );
    }
    let _ = writeln!(out, "\nradius of correctly classified samples (quartiles):");
    let kinds: [(&str, RadiusOf); 3] = [
        ("global", |s| Some(s.radius_global)),
        ("pairwise", |s| s.radius_pairwise),
        ("local", |s| s.radius_local),
    ];
    for (name, radius) in kinds {
        if let Some([a, b, c]) = quartiles(report, radius) {
            let _ = writeln!(out, "  {name:<9} {a:.4} / {b:.4} / {c:.4}");
        }
    }
    if report.probabilistic {
        let _ = writeln!(
            out,
            "\nnote: the constants are probabilistic ({}): every radius holds with that \
             probability; --deterministic uses deterministic bounds only",
            report.pairwise_certificate
        );
    }
    for note in &report.notes {
        let _ = writeln!(out, "note: {note}");
    }
    let _ = writeln!(
        out,
        "\nconstants {:.2} s, samples {:.3} s",
        report.constants_seconds, report.seconds
    );
    out
}
