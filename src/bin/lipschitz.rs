//! The `lipschitz` command line: argument parsing, table/JSON rendering. All numerics live in
//! the library.

use clap::{Parser, Subcommand};
use lipschitz::{dense_norm, Bound, Options};
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Parser)]
#[command(
    name = "lipschitz",
    version,
    about = "Certified Lipschitz constants of neural networks",
    long_about = "Computes certified intervals [lower, upper] around the spectral norm of each \
                  linear layer and a certified upper bound for the network. With no arguments, \
                  analyses a small demo network built into the binary."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Args, Clone)]
struct Common {
    /// Relative tolerance: stop once upper ≤ lower·(1 + rtol).
    #[arg(long, default_value_t = 1e-4, allow_negative_numbers = true)]
    rtol: f64,
    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Seed of the random starts (results are deterministic for a given seed).
    #[arg(long, default_value_t = Options::default().seed)]
    seed: u64,
}

#[derive(Subcommand)]
enum Command {
    /// Analyse the built-in demo network (a 784-512-256-10 ReLU MLP with fixed weights).
    Demo {
        #[command(flatten)]
        common: Common,
    },
    /// Spectral norm of one dense matrix stored with numpy.save (float32 or float64; rows =
    /// outputs).
    Dense {
        /// Path to the .npy file.
        matrix: std::path::PathBuf,
        /// Algorithm: auto, exact, lanczos, block-lanczos or power.
        #[arg(long, default_value = "auto")]
        method: String,
        #[command(flatten)]
        common: Common,
    },
    /// Analyse an ONNX model.
    Analyze {
        /// Path to the .onnx file.
        model: std::path::PathBuf,
        /// Input shape for dynamic models, e.g. 1,3,224,224.
        #[arg(long, value_delimiter = ',')]
        input_shape: Option<Vec<i64>>,
        #[command(flatten)]
        common: Common,
    },
}

/// One linear layer's line in the report (the JSON schema of DESIGN §4).
#[derive(Serialize)]
struct LayerReport {
    name: String,
    op: String,
    input_shape: Vec<usize>,
    output_shape: Vec<usize>,
    lower: f64,
    upper: f64,
    certificate: String,
    method: String,
    iterations: u32,
    matvecs: u64,
    seconds: f64,
}

#[derive(Serialize)]
struct NetworkReport {
    lower: Option<f64>,
    upper: f64,
    naive_product: f64,
}

#[derive(Serialize)]
struct Report {
    model: String,
    input_shape: Vec<usize>,
    layers: Vec<LayerReport>,
    network: NetworkReport,
    seconds: f64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => run_demo(&Common {
            rtol: 1e-4,
            json: false,
            threads: None,
            seed: Options::default().seed,
        }),
        Some(Command::Demo { common }) => run_demo(&common),
        Some(Command::Dense {
            matrix,
            method,
            common,
        }) => run_dense(&matrix, &method, &common),
        Some(Command::Analyze { model, .. }) => Err(format!(
            "cannot analyse {}: ONNX import is not implemented in this version",
            model.display()
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn options(common: &Common) -> Result<Options, String> {
    if let Some(threads) = common.threads {
        if threads == 0 {
            return Err("--threads must be at least 1".into());
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()
            .map_err(|e| format!("cannot start {threads} threads: {e}"))?;
    }
    let opts = Options {
        rtol: common.rtol,
        seed: common.seed,
        ..Options::default()
    };
    opts.validate().map_err(|e| e.to_string())?;
    Ok(opts)
}

/// Weights of the demo MLP: PyTorch's default `Linear` initialisation (uniform in
/// ±1/√fan_in) from a fixed seed, so every run analyses the same network.
fn demo_layers() -> Vec<(&'static str, usize, usize, Vec<f32>)> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2026);
    [("fc1", 784, 512), ("fc2", 512, 256), ("fc3", 256, 10)]
        .into_iter()
        .map(|(name, inputs, outputs)| {
            let bound = 1.0 / (inputs as f32).sqrt();
            let w = (0..inputs * outputs)
                .map(|_| rng.random_range(-bound..bound))
                .collect();
            (name, inputs, outputs, w)
        })
        .collect()
}

fn run_demo(common: &Common) -> Result<(), String> {
    let opts = options(common)?;
    let started = Instant::now();
    let mut layers = Vec::new();
    for (name, inputs, outputs, w) in demo_layers() {
        let b = dense_norm(&w, outputs, inputs, &opts).map_err(|e| format!("layer {name}: {e}"))?;
        layers.push(layer_report(name, "Gemm", vec![inputs], vec![outputs], &b));
    }
    // ReLU is 1-Lipschitz, so the composition's constant is at most the product.
    let upper: f64 = layers.iter().map(|l| l.upper).product();
    let report = Report {
        model: "built-in demo: MLP 784-512-256-10 with ReLU".into(),
        input_shape: vec![1, 784],
        layers,
        network: NetworkReport {
            lower: None,
            upper,
            naive_product: upper,
        },
        seconds: started.elapsed().as_secs_f64(),
    };
    print_report(&report, common.json)
}

fn run_dense(path: &std::path::Path, method: &str, common: &Common) -> Result<(), String> {
    let mut opts = options(common)?;
    opts.method = method
        .parse()
        .map_err(|e: lipschitz::Error| e.to_string())?;
    let started = Instant::now();
    let m = lipschitz::npy::read_npy_matrix(path).map_err(|e| e.to_string())?;
    let b = dense_norm(&m.data, m.rows, m.cols, &opts)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let name = path
        .file_stem()
        .map_or("matrix".into(), |s| s.to_string_lossy().into_owned());
    let layer = layer_report(&name, "MatMul", vec![m.cols], vec![m.rows], &b);
    let report = Report {
        model: format!("dense matrix {}", path.display()),
        input_shape: vec![m.cols],
        network: NetworkReport {
            lower: Some(layer.lower),
            upper: layer.upper,
            naive_product: layer.upper,
        },
        layers: vec![layer],
        seconds: started.elapsed().as_secs_f64(),
    };
    print_report(&report, common.json)
}

fn layer_report(
    name: &str,
    op: &str,
    input_shape: Vec<usize>,
    output_shape: Vec<usize>,
    b: &Bound,
) -> LayerReport {
    LayerReport {
        name: name.into(),
        op: op.into(),
        input_shape,
        output_shape,
        lower: b.lower,
        upper: b.upper,
        certificate: b.certificate.label(),
        method: format!("{:?}", b.method).to_lowercase(),
        iterations: b.iterations,
        matvecs: b.matvecs,
        seconds: b.seconds,
    }
}

fn print_report(report: &Report, json: bool) -> Result<(), String> {
    if json {
        let text = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
        println!("{text}");
        return Ok(());
    }
    println!("{}", report.model);
    println!("input shape {:?}\n", report.input_shape);
    println!(
        "{:<8} {:<6} {:>10} {:>10} {:>16} {:>16} {:<24} {:>8}",
        "layer", "op", "in", "out", "lower", "upper", "certificate", "time"
    );
    for l in &report.layers {
        println!(
            "{:<8} {:<6} {:>10} {:>10} {:>16.10} {:>16.10} {:<24} {:>7.3}s",
            l.name,
            l.op,
            format!("{:?}", l.input_shape),
            format!("{:?}", l.output_shape),
            l.lower,
            l.upper,
            l.certificate,
            l.seconds
        );
    }
    let lower = report
        .network
        .lower
        .map_or("not computed".to_string(), |v| format!("{v:.10}"));
    println!(
        "\nnetwork: upper {:.10} (product of layer bounds; ReLU is 1-Lipschitz), lower {}",
        report.network.upper, lower
    );
    println!("total time {:.3}s", report.seconds);
    Ok(())
}
