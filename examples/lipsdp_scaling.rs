//! LipSDP-Neuron on seeded random ReLU MLPs (weights uniform in `±√(3/fan_in)`, seed 7, as in
//! `benches/network.rs`): `cargo run --release --example lipsdp_scaling -- 64,512,512,512,10
//! [interior|first-order|auto] [all]` prints the verified bound, its time and the solver's
//! note. The solver is the interior-point method up to `lipsdp_interior_max_size` (900 by
//! default) and the first-order eigenvalue method above; the second argument forces one.
//! With `all`, every network method runs (as `analyze` does by default), not only
//! LipSDP-Neuron and the product.
use lipschitz::network::{analyze, Activation, AnalysisOptions, NetworkBuilder, NetworkMethod};
use rand::{Rng, SeedableRng};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let sizes: Vec<usize> = args[0].split(',').map(|v| v.parse().unwrap()).collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut b = NetworkBuilder::new("mlp", &[1, sizes[0]]).unwrap();
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
    let net = b.finish();
    let n: usize = sizes[..sizes.len() - 1].iter().sum();
    let interior_max = match args.get(1).map(String::as_str) {
        Some("interior") => usize::MAX,
        Some("first-order") => 0,
        // "all" alone: every method, as `analyze` runs by default.
        _ => AnalysisOptions::default().lipsdp_interior_max_size,
    };
    let opts = AnalysisOptions {
        lower: None,
        methods: if args.iter().any(|a| a == "all") {
            AnalysisOptions::default().methods
        } else {
            vec![NetworkMethod::Product, NetworkMethod::LipSdp]
        },
        lipsdp_max_size: usize::MAX,
        lipsdp_interior_max_size: interior_max,
        ..AnalysisOptions::default()
    };
    let started = Instant::now();
    let report = analyze(&net, &opts).unwrap();
    for m in &report.network.methods {
        println!("N = {n}: {:?} {:.6} in {:.2} s", m.name, m.upper, m.seconds);
    }
    for note in &report.network.notes {
        println!("note: {note}");
    }
    println!("total {:.2} s", started.elapsed().as_secs_f64());
}
