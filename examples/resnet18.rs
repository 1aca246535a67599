//! Times loading and analysing a ResNet-18-shaped ONNX model (random weights, torchvision
//! layout). Run with `/usr/bin/time -v` for the peak memory:
//!
//! ```text
//! cargo run --release --example resnet18 -- [SIZE=224] [RTOL=1e-3] [lower|nolower]
//! ```

#[path = "../benches/common/resnet18.rs"]
mod resnet18;

use lipschitz::network::{analyze_with_progress, AnalysisOptions, LowerOptions};
use lipschitz::onnx::{load_onnx, ImportOptions};
use lipschitz::Options;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let size: i64 = args.get(1).map_or(Ok(224), |s| s.parse())?;
    let rtol: f64 = args.get(2).map_or(Ok(1e-3), |s| s.parse())?;
    let lower = args.get(3).is_none_or(|s| s != "nolower");
    let bytes = resnet18::resnet18_onnx(size, 18);
    let dir = std::env::temp_dir().join("lipschitz-resnet18");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("resnet18.onnx");
    std::fs::write(&path, &bytes)?;
    let t = Instant::now();
    let net = load_onnx(&path, &ImportOptions::default())?;
    println!(
        "load {:.1} MB: {:.3} s ({} nodes)",
        bytes.len() as f64 / 1e6,
        t.elapsed().as_secs_f64(),
        net.nodes().len()
    );
    if std::env::var("TIME_FORWARD").is_ok() {
        time_forward(&net);
        return Ok(());
    }
    let opts = AnalysisOptions {
        layer: Options::with_rtol(rtol),
        lower: lower.then(LowerOptions::default),
        merge_linear_runs: true,
        ..AnalysisOptions::default()
    };
    let t = Instant::now();
    let report = analyze_with_progress(&net, &opts, &mut |p| {
        eprint!("\r{}/{} {:<40}", p.done, p.total, p.what);
    })?;
    eprintln!();
    for l in &report.layers {
        println!(
            "{:<24} {:>14?} [{:.6}, {:.6}] {:<28} {:>6} mv {:.3} s",
            l.name, l.input_shape, l.lower, l.upper, l.certificate, l.matvecs, l.seconds
        );
    }
    let n = &report.network;
    println!(
        "network upper {:.6e} [{}], naive {:.6e}, lower {:?}; analysis {:.2} s",
        n.upper,
        n.certificate,
        n.naive_product,
        n.lower,
        t.elapsed().as_secs_f64()
    );
    for m in &n.methods {
        println!(
            "  {:<14} {:.6e} [{}] {:.2} s",
            m.name.label(),
            m.upper,
            m.certificate,
            m.seconds
        );
    }
    for note in &n.notes {
        println!("  note: {note}");
    }
    if let Some(s) = &n.lower_search {
        println!(
            "lower search {:.2} s, {} forward passes",
            s.seconds, s.forward_passes
        );
    }
    Ok(())
}

#[allow(dead_code)]
fn time_forward(net: &lipschitz::network::Network) {
    use lipschitz::network::Evaluator;
    for accurate in [true, false] {
        let eval = Evaluator::new(net, accurate, 8 << 30).unwrap();
        let x = vec![0.5; eval.input_len()];
        let t = Instant::now();
        let tr = eval.forward(&x);
        let f = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let y = eval.output(&tr);
        let _ = eval.vjp(&tr, &y);
        let b = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let _ = eval.jvp(&tr, &x);
        println!(
            "accurate={accurate}: forward {f:.3} s, vjp {b:.3} s, jvp {:.3} s",
            t.elapsed().as_secs_f64()
        );
    }
}
