//! Dense σ₁ to rtol 1e-6 on square Gaussian matrices: exact SVD vs Lanczos vs block Lanczos
//! vs power iteration. Matvec counts and widths reached are printed once per case (stderr),
//! times come from criterion.
//!
//! `cargo bench --bench dense` for numbers; `cargo test --benches` runs each case once.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use lipschitz::{dense_norm, Method, Options};
use rand::{Rng, SeedableRng};
use std::time::Duration;

fn gaussian(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n * n)
        .map(|_| rng.sample::<f64, _>(rand_distr::StandardNormal) as f32)
        .collect()
}

fn options(method: Method) -> Options {
    Options {
        method,
        rtol: 1e-6,
        // Power iteration would need ~10⁷ steps to certify 1e-6; cap it and report the width.
        max_iterations: if method == Method::Power { 1000 } else { 5000 },
        ..Options::default()
    }
}

fn bench_dense(c: &mut Criterion) {
    let mut group = c.benchmark_group("dense_sigma1_rtol1e-6");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(5));
    for n in [100usize, 1000, 5000] {
        let a = gaussian(n, 42);
        let mut methods = vec![Method::Lanczos, Method::BlockLanczos, Method::Power];
        if n <= 1000 {
            methods.insert(0, Method::Exact);
        }
        for method in methods {
            let opts = options(method);
            let b = dense_norm(&a, n, n, &opts).expect("benchmark matrix is valid");
            eprintln!(
                "dense n={n} {method:?}: matvecs={} iterations={} width={:.2e} stop={:?} cert={}",
                b.matvecs,
                b.iterations,
                b.relative_width(),
                b.stop,
                b.certificate.label()
            );
            group.bench_with_input(BenchmarkId::new(format!("{method:?}"), n), &n, |bch, _| {
                bch.iter(|| dense_norm(&a, n, n, &opts).expect("valid"))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_dense);
criterion_main!(benches);
