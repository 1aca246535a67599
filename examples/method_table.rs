//! Prints the table of network bounds by method in docs/benchmarks.md: for each test
//! network, every method's bound ÷ the attained lower bound, LipSDP-Neuron's time, and the
//! lower bound ÷ the best of 20 long independent ascents where that reference exists.
//!
//! ```text
//! cargo run --release --example method_table
//! ```

use lipschitz::network::{analyze, AnalysisOptions, NetworkMethod};
use lipschitz::onnx::{load_onnx, ImportOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let reference: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        "tests/fixtures/lower_reference.json",
    )?)?;
    println!("| network | product | LipLT | ECLipsE-Fast (time) | LipSDP-Neuron (time) | lower | lower ÷ 20 ascents | analysis |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let nets = [
        "mlp",
        "cnn_bn",
        "circular",
        "residual",
        "fire",
        "linear_run",
        "digits_mlp",
        "digits_mlp3",
    ];
    let paths = nets
        .iter()
        .map(|n| (n.to_string(), format!("tests/fixtures/onnx/{n}.onnx")))
        .chain(std::iter::once((
            "demo".to_string(),
            "src/bin/lipschitz/demo.onnx".to_string(),
        )));
    for (name, path) in paths {
        let net = load_onnx(path.as_ref(), &ImportOptions::default())?;
        let a = analyze(&net, &AnalysisOptions::default())?;
        let n = &a.network;
        let lower = n.lower.unwrap_or(0.0);
        let cell = |m: NetworkMethod| {
            n.methods
                .iter()
                .find(|r| r.name == m)
                .map_or("—".to_string(), |r| {
                    let ratio = format!("{:.3}", r.upper / lower);
                    if matches!(m, NetworkMethod::LipSdp | NetworkMethod::Eclipse) {
                        format!("{ratio} ({:.2} s)", r.seconds)
                    } else {
                        ratio
                    }
                })
        };
        let vs = reference
            .get(format!("{name}.onnx"))
            .and_then(|r| r.as_f64())
            .map_or("—".to_string(), |r| format!("{:.3}", lower / r));
        println!(
            "| {name} | {} | {} | {} | {} | {lower:.4} | {vs} | {:.2} s |",
            cell(NetworkMethod::Product),
            cell(NetworkMethod::LipLT),
            cell(NetworkMethod::Eclipse),
            cell(NetworkMethod::LipSdp),
            a.seconds
        );
    }
    Ok(())
}
