//! Network benchmarks: loading a 47 MB ResNet-18-shaped ONNX file, bounding the whole
//! network (every layer to rtol 1e-3, composed bound, lower-bound search) at 1×3×224×224,
//! and the network bound methods (product, LipLT, ECLipsE-Fast, LipSDP-Neuron) on the
//! bundled demo, the digits MLPs and a random 784-1024×3-10 ReLU MLP.

#[path = "common/resnet18.rs"]
mod resnet18;

use criterion::{criterion_group, criterion_main, Criterion};
use lipschitz::network::{
    analyze, Activation, AnalysisOptions, LowerOptions, Network, NetworkBuilder, NetworkMethod,
};
use lipschitz::onnx::{load_onnx, ImportOptions};
use lipschitz::Options;
use rand::{Rng, SeedableRng};
use std::time::Duration;

fn network(c: &mut Criterion) {
    let dir = std::env::temp_dir().join("lipschitz-bench-network");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("resnet18.onnx");
    std::fs::write(&path, resnet18::resnet18_onnx(224, 18)).unwrap();
    let mut g = c.benchmark_group("network");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    g.bench_function("onnx_load/resnet18_47MB", |b| {
        b.iter(|| load_onnx(&path, &ImportOptions::default()).unwrap())
    });
    let net = load_onnx(&path, &ImportOptions::default()).unwrap();
    g.measurement_time(Duration::from_secs(60));
    for lower in [false, true] {
        let opts = AnalysisOptions {
            layer: Options::with_rtol(1e-3),
            lower: lower.then(LowerOptions::default),
            merge_linear_runs: true,
            ..AnalysisOptions::default()
        };
        let name = if lower {
            "with_lower_bound"
        } else {
            "upper_only"
        };
        g.bench_function(format!("resnet18_224_rtol1e-3/{name}"), |b| {
            b.iter(|| analyze(&net, &opts).unwrap())
        });
    }
    g.finish();
}

/// The network bounds, method by method: on the bundled demo CNN (product, LipLT; its
/// LMI is too large for LipSDP-Neuron), and on the MLPs trained on digits (each method
/// with the product it always includes).
fn methods(c: &mut Criterion) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut g = c.benchmark_group("network_methods");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    let cases = [
        (
            "demo",
            "src/bin/lipschitz/demo.onnx",
            &[NetworkMethod::LipLT][..],
        ),
        (
            "digits_mlp",
            "tests/fixtures/onnx/digits_mlp.onnx",
            &[
                NetworkMethod::LipLT,
                NetworkMethod::Eclipse,
                NetworkMethod::LipSdp,
            ][..],
        ),
        (
            "digits_mlp3",
            "tests/fixtures/onnx/digits_mlp3.onnx",
            &[
                NetworkMethod::LipLT,
                NetworkMethod::Eclipse,
                NetworkMethod::LipSdp,
            ][..],
        ),
    ];
    let mut nets: Vec<(&str, Network, &[NetworkMethod])> = cases
        .into_iter()
        .map(|(label, file, extra)| {
            let net = load_onnx(&root.join(file), &ImportOptions::default()).unwrap();
            (label, net, extra)
        })
        .collect();
    // The 64-256×3-10 MLP shape (N = 832, within the interior point's limit), one
    // for the first-order method, and one too large for LipSDP-Neuron by default
    // (N = 3856): ECLipsE-Fast's territory.
    nets.push((
        "mlp_64_256x3",
        wide_mlp("mlp_64_256x3", &[64, 256, 256, 256, 10]),
        &[
            NetworkMethod::LipLT,
            NetworkMethod::Eclipse,
            NetworkMethod::LipSdp,
        ][..],
    ));
    // N = 2044: LipSDP-Neuron by the first-order method (over the interior point's 900).
    nets.push((
        "mlp_64_660x3",
        wide_mlp("mlp_64_660x3", &[64, 660, 660, 660, 10]),
        &[NetworkMethod::Eclipse, NetworkMethod::LipSdp][..],
    ));
    nets.push((
        "mlp_784_1024x3",
        wide_mlp("mlp_784_1024x3", &[784, 1024, 1024, 1024, 10]),
        &[NetworkMethod::LipLT, NetworkMethod::Eclipse][..],
    ));
    for (label, net, extra) in nets {
        let runs = std::iter::once((NetworkMethod::Product, vec![NetworkMethod::Product]))
            .chain(extra.iter().map(|&m| (m, vec![NetworkMethod::Product, m])));
        for (method, methods) in runs {
            let opts = AnalysisOptions {
                lower: None,
                methods,
                ..AnalysisOptions::default()
            };
            let name = format!("{label}/{}", method.label());
            g.bench_function(name, |b| b.iter(|| analyze(&net, &opts).unwrap()));
        }
    }
    g.finish();
}

/// A ReLU MLP with seeded weights uniform in `±√(3/fan_in)` (unit variance per output).
fn wide_mlp(name: &str, sizes: &[usize]) -> Network {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut b = NetworkBuilder::new(name, &[1, sizes[0]]).unwrap();
    for (i, w) in sizes.windows(2).enumerate() {
        let scale = (3.0 / w[0] as f64).sqrt() as f32;
        let weight = (0..w[0] * w[1])
            .map(|_| rng.random_range(-scale..scale))
            .collect();
        b.dense(weight, w[1], w[0], None).unwrap();
        if i + 2 < sizes.len() {
            b.activation(Activation::Relu).unwrap();
        }
    }
    b.finish()
}

criterion_group!(benches, network, methods);
criterion_main!(benches);
