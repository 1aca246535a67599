//! The `lipschitz` command line: argument parsing, table/JSON rendering. All numerics live in
//! the library.

mod certify;
mod plot;
mod render;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lipschitz::network::{
    analyze_with_progress, Analysis, AnalysisOptions, LayerMethod, LayerResult, LowerOptions,
    MethodResult, Network, NetworkMethod, NetworkResult,
};
use lipschitz::onnx::{load_onnx, load_onnx_bytes, ImportOptions};
use lipschitz::{dense_norm, Options};
use render::{check_stdout_open, print_report};
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

#[derive(clap::Args, Clone)]
struct NetworkArgs {
    /// Input shape for models with dynamic dimensions, e.g. 1,3,224,224 (batch ignored).
    #[arg(long, value_delimiter = ',')]
    input_shape: Option<Vec<i64>>,
    /// Skip the empirical lower bound (only the certified upper bound and layer intervals).
    #[arg(long)]
    no_lower: bool,
    /// Print under each layer the route its bound took and why (which bound gave each end,
    /// which operator the iterations used); the JSON always has it as `route`.
    #[arg(long)]
    explain: bool,
    /// Random inputs the lower-bound search starts from.
    #[arg(long, default_value_t = LowerOptions::default().samples)]
    samples: usize,
    /// Memory limit in MiB for kernel spectra, Krylov bases and activations.
    #[arg(long, default_value_t = (Options::default().memory_limit >> 20) as u64)]
    memory_limit_mb: u64,
    /// Time limit per layer in seconds (the interval reached is reported).
    #[arg(long)]
    time_limit: Option<f64>,
    /// Network bound: auto (every method that applies; the smallest is reported), product,
    /// liplt, eclipse or lipsdp (the product is always computed too).
    #[arg(long, default_value = "auto")]
    method: String,
    /// Largest LMI dimension (inputs + activation units) LipSDP-Neuron is computed for: up to
    /// 900 by the interior-point method (its optimum, ≤ ~5 s on two cores), above by the
    /// first-order eigenvalue method (verified, within ~1 % of the optimum).
    #[arg(long, default_value_t = AnalysisOptions::default().lipsdp_max_size)]
    lipsdp_max_size: usize,
    /// Largest LMI dimension ECLipsE-Fast is computed for (a few dense factorisations:
    /// 4096 takes a few seconds and about 1 GiB).
    #[arg(long, default_value_t = AnalysisOptions::default().eclipse_max_size)]
    eclipse_max_size: usize,
    /// Budget of LipLT in units of work (activation values along each norm's path, ~1e6 per
    /// second on two cores): over it the network is cut into shorter segments (looser), and
    /// past the shortest LipLT is skipped. ResNet-18 at 224×224 gets one segment per ReLU
    /// by default, 6 (twice as tight) with 1e8.
    #[arg(long, default_value_t = AnalysisOptions::default().liplt_max_work as f64)]
    liplt_max_work: f64,
}

#[derive(Subcommand)]
enum Command {
    /// Analyse the demo network built into the binary (a small CNN with BatchNorm, a residual
    /// block and a dense head; src/bin/lipschitz/demo.onnx).
    Demo {
        #[command(flatten)]
        net: NetworkArgs,
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
    /// Analyse an ONNX model: every linear layer's interval, the network's certified upper
    /// bound and an empirical lower bound.
    Analyze {
        /// Path to the .onnx file (external data is read from beside it).
        model: std::path::PathBuf,
        #[command(flatten)]
        net: NetworkArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Certified robustness: for each input sample, the ℓ2 radius within which no input
    /// changes the predicted class (global and per class pair), and the certified accuracy
    /// at each --eps.
    Certify {
        /// Path to the .onnx classifier (logits, or a Softmax over them).
        model: std::path::PathBuf,
        #[command(flatten)]
        certify: certify::CertifyArgs,
        #[command(flatten)]
        net: NetworkArgs,
        #[command(flatten)]
        common: Common,
    },
}

/// The demo network (written by scripts/make_onnx_fixtures.py).
const DEMO_ONNX: &[u8] = include_bytes!("demo.onnx");

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(message) = check_stdout_open() {
        eprintln!("error: {message}");
        return ExitCode::FAILURE;
    }
    let default_common = Common {
        rtol: 1e-4,
        json: false,
        threads: None,
        seed: Options::default().seed,
    };
    let default_net = NetworkArgs {
        input_shape: None,
        no_lower: false,
        explain: false,
        samples: LowerOptions::default().samples,
        memory_limit_mb: (Options::default().memory_limit >> 20) as u64,
        time_limit: None,
        method: "auto".into(),
        lipsdp_max_size: AnalysisOptions::default().lipsdp_max_size,
        eclipse_max_size: AnalysisOptions::default().eclipse_max_size,
        liplt_max_work: AnalysisOptions::default().liplt_max_work as f64,
    };
    let result = match cli.command {
        None => run_network(None, &default_net, &default_common),
        Some(Command::Demo { net, common }) => run_network(None, &net, &common),
        Some(Command::Dense {
            matrix,
            method,
            common,
        }) => run_dense(&matrix, &method, &common),
        Some(Command::Analyze { model, net, common }) => run_network(Some(&model), &net, &common),
        Some(Command::Certify {
            model,
            certify,
            net,
            common,
        }) => certify::run(&model, &certify, &net, &common),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {}", message.replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

fn options(common: &Common) -> Result<Options, String> {
    if let Some(threads) = common.threads {
        lipschitz::check_threads(threads).map_err(|e| format!("--threads: {e}"))?;
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

/// The network and the analysis options the arguments describe (`model: None` is the
/// demo).
fn load_network(
    model: Option<&std::path::Path>,
    args: &NetworkArgs,
    common: &Common,
) -> Result<(Network, AnalysisOptions), String> {
    let mut layer = options(common)?;
    let memory_limit = usize::try_from(args.memory_limit_mb)
        .ok()
        .and_then(|mb| mb.checked_mul(1 << 20))
        .filter(|&b| b > 0)
        .ok_or_else(|| format!("--memory-limit-mb {} is not valid", args.memory_limit_mb))?;
    layer.memory_limit = memory_limit;
    if let Some(t) = args.time_limit {
        layer.time_limit =
            lipschitz::time_limit_from_secs(t).map_err(|e| format!("--time-limit: {e}"))?;
    }
    let import = ImportOptions {
        input_shape: args.input_shape.clone(),
        memory_limit,
    };
    let net = match model {
        Some(path) => load_onnx(path, &import),
        None => load_onnx_bytes(
            DEMO_ONNX,
            "built-in demo network (demo.onnx)",
            None,
            &import,
        ),
    }
    .map_err(|e| e.to_string())?;
    let lower = (!args.no_lower).then(|| LowerOptions {
        samples: args.samples.max(1),
        seed: common.seed,
        memory_limit,
        ..LowerOptions::default()
    });
    let methods = NetworkMethod::selection(&args.method).map_err(|e| format!("--method: {e}"))?;
    let opts = AnalysisOptions {
        layer,
        lower,
        merge_linear_runs: true,
        methods,
        lipsdp_max_size: args.lipsdp_max_size,
        eclipse_max_size: args.eclipse_max_size,
        liplt_max_work: args.liplt_max_work.clamp(0.0, 1e30) as u128,
        ..AnalysisOptions::default()
    };
    Ok((net, opts))
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
fn progress_bar() -> Result<ProgressBar, String> {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {pos}/{len} {msg}")
            .map_err(|e| e.to_string())?
            .progress_chars("=> "),
    );
    Ok(bar)
}

fn run_network(
    model: Option<&std::path::Path>,
    args: &NetworkArgs,
    common: &Common,
) -> Result<(), String> {
    let (net, opts) = load_network(model, args, common)?;
    let bar = progress_bar()?;
    let report = analyze_with_progress(&net, &opts, &mut |p| {
        bar.set_length(p.total as u64);
        bar.set_position(p.done as u64);
        bar.set_message(p.what.to_string());
    })
    .map_err(|e| e.to_string())?;
    bar.finish_and_clear();
    print_report(&report, common.json, args.explain)
}

fn run_dense(path: &std::path::Path, method: &str, common: &Common) -> Result<(), String> {
    let mut opts = options(common)?;
    opts.method = method
        .parse()
        .map_err(|e: lipschitz::Error| e.to_string())?;
    let started = Instant::now();
    let m = lipschitz::npy::read_npy_matrix(path).map_err(|e| e.to_string())?;
    let mut b = dense_norm(&m.data, m.rows, m.cols, &opts)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    // float64 files: the interval must contain the norm of the doubles, not of their f32 copy.
    b.widen(m.conversion_error);
    let name = path
        .file_stem()
        .map_or("matrix".into(), |s| s.to_string_lossy().into_owned());
    let layer = LayerResult {
        name,
        module: None,
        op: "MatMul".into(),
        input_shape: vec![m.cols],
        output_shape: vec![m.rows],
        lower: b.lower,
        upper: b.upper,
        certificate: b.certificate,
        method: LayerMethod::Dense(b.method),
        iterations: b.iterations,
        matvecs: b.matvecs,
        seconds: b.seconds,
        folded: Vec::new(),
        circular: false,
        route: lipschitz::describe_dense_route(&b, m.rows, m.cols),
        bound: b,
    };
    let report = Analysis {
        model: format!("dense matrix {}", path.display()),
        input_shape: vec![m.cols],
        network: NetworkResult {
            lower: Some(b.lower),
            upper: b.upper,
            certificate: b.certificate,
            method: NetworkMethod::Product,
            methods: vec![MethodResult {
                name: NetworkMethod::Product,
                upper: b.upper,
                certificate: b.certificate,
                seconds: b.seconds,
            }],
            naive_product: b.upper,
            lower_search: None,
            merged_runs: Vec::new(),
            gap: Some(b.upper / b.lower),
            underflow: false,
            notes: Vec::new(),
        },
        layers: vec![layer],
        seconds: started.elapsed().as_secs_f64(),
    };
    print_report(&report, common.json, true)
}
