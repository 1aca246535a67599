//! Certification throughput after the one-off constants: the digits CNN and the 1-Lipschitz
//! CNN (tests/fixtures/certify), 360 held-out samples, global + pairwise radii, and with the
//! local radius search.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lipschitz::certify::{Certifier, CertifyOptions, ConstantOptions, Samples};
use lipschitz::network::{AnalysisOptions, NetworkMethod};
use lipschitz::onnx::{load_onnx, ImportOptions};
use std::time::Duration;

fn certify(c: &mut Criterion) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/certify");
    let mut g = c.benchmark_group("certify");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    for model in ["cnn", "lip_cnn"] {
        let net = load_onnx(
            &dir.join(format!("{model}.onnx")),
            &ImportOptions::default(),
        )
        .unwrap();
        for local in [false, true] {
            // The constants are not what is measured: the cheap methods keep setup short.
            let opts = CertifyOptions {
                constants: ConstantOptions {
                    analysis: AnalysisOptions {
                        methods: vec![NetworkMethod::Product, NetworkMethod::Eclipse],
                        ..AnalysisOptions::default()
                    },
                    ..ConstantOptions::default()
                },
                local,
            };
            let certifier = Certifier::new(&net, &opts, &mut |_, _, _| {}).unwrap();
            let samples = Samples::read(
                &dir.join("x_test.npy"),
                Some(&dir.join("y_test.npy")),
                certifier.sample_shape(),
                10,
            )
            .unwrap();
            g.throughput(Throughput::Elements(samples.n as u64));
            let name = if local {
                "global_pairwise_local"
            } else {
                "global_pairwise"
            };
            g.bench_function(format!("{model}/{name}"), |b| {
                b.iter(|| certifier.certify(&samples, &[0.1, 0.2, 0.3]).unwrap())
            });
        }
    }
    g.finish();
}

criterion_group!(benches, certify);
criterion_main!(benches);
