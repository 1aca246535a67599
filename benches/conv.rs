//! Conv operators: one apply + one adjoint, direct (im2col + GEMM, f64) vs FFT (f32, cached
//! spectrum), single vectors and blocks of 8 (time per vector), over a grid of shapes and
//! ResNet-18's layers. `cargo bench --bench conv` runs the full grid; `cargo test --benches`
//! runs a small subset once as a smoke test.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use lipschitz::conv::{Conv2d, DirectConv2d, FftConv2d};
use lipschitz::LinearOperator;
use rand::{Rng, SeedableRng};
use std::time::Duration;

const BLOCK: usize = 8;

fn shapes(full: bool) -> Vec<(String, Conv2d)> {
    let mut out = Vec::new();
    let (channels, kernels, sizes): (&[usize], &[usize], &[usize]) = if full {
        (&[16, 64], &[1, 3, 5, 7], &[16, 32, 56, 112, 224])
    } else {
        (&[16], &[3, 5], &[16])
    };
    for &c in channels {
        for &k in kernels {
            for &n in sizes {
                out.push((
                    format!("c{c}_k{k}_n{n}"),
                    Conv2d::new(c, c, [k, k], [n, n]).padding(k / 2),
                ));
            }
        }
    }
    if full {
        out.extend([
            (
                "resnet_stem_3to64_k7s2_224".into(),
                Conv2d::new(64, 3, [7, 7], [224, 224])
                    .stride([2, 2])
                    .padding(3),
            ),
            (
                "resnet_64_k3_56".into(),
                Conv2d::new(64, 64, [3, 3], [56, 56]).padding(1),
            ),
            (
                "resnet_64to128_k3s2_56".into(),
                Conv2d::new(128, 64, [3, 3], [56, 56])
                    .stride([2, 2])
                    .padding(1),
            ),
            (
                "resnet_downsample_64to128_k1s2_56".into(),
                Conv2d::new(128, 64, [1, 1], [56, 56]).stride([2, 2]),
            ),
            (
                "resnet_128_k3_28".into(),
                Conv2d::new(128, 128, [3, 3], [28, 28]).padding(1),
            ),
            (
                "resnet_256_k3_14".into(),
                Conv2d::new(256, 256, [3, 3], [14, 14]).padding(1),
            ),
            (
                "resnet_512_k3_7".into(),
                Conv2d::new(512, 512, [3, 3], [7, 7]).padding(1),
            ),
        ]);
    }
    out
}

fn bench_conv(c: &mut Criterion) {
    let full = std::env::args().any(|a| a == "--bench");
    let mut group = c.benchmark_group("conv_apply_adjoint");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(300));
    group.measurement_time(Duration::from_secs(2));
    for (name, conv) in shapes(full) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let w: Vec<f32> = (0..conv.weight_len())
            .map(|_| rng.random::<f32>() - 0.5)
            .collect();
        let (n, m) = (conv.input_len(), conv.output_len());
        let x: Vec<f64> = (0..n * BLOCK).map(|_| rng.random::<f64>() - 0.5).collect();
        let mut y = vec![0.0; m * BLOCK];
        let mut xt = vec![0.0; n * BLOCK];
        let direct = DirectConv2d::new(&conv, &w).expect("valid layer");
        let fft = FftConv2d::new(&conv, &w, 8 << 30).expect("fits");
        group.throughput(Throughput::Elements(1));
        group.bench_function(BenchmarkId::new("direct", &name), |b| {
            b.iter(|| {
                direct.forward(&x[..n], &mut y[..m]);
                direct.adjoint(&y[..m], &mut xt[..n]);
            })
        });
        group.bench_function(BenchmarkId::new("fft", &name), |b| {
            b.iter(|| {
                fft.forward(&x[..n], &mut y[..m]);
                fft.adjoint(&y[..m], &mut xt[..n]);
            })
        });
        // Block of 8: throughput counts vectors, so criterion reports time per vector.
        group.throughput(Throughput::Elements(BLOCK as u64));
        group.bench_function(BenchmarkId::new("fft_block8", &name), |b| {
            b.iter(|| {
                fft.forward_block(&x, &mut y, BLOCK);
                fft.adjoint_block(&y, &mut xt, BLOCK);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_conv);
criterion_main!(benches);
