//! Certified conv norms: 64→64 3×3 at several sizes, zero and circular padding, each method
//! side by side, and ResNet-18's layer shapes at rtol 1e-3. One run per case is printed first
//! (width reached, matvecs, certificate, stop reason, seconds); criterion then times the
//! cases that take under 5 s (the others are reported from that single run).
//! `cargo bench --bench conv_norm` for everything; `cargo test --benches` runs the small cases.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use lipschitz::conv::{conv2d_norm, Conv2d, ConvMethod, PaddingMode};
use lipschitz::Options;
use rand::{Rng, SeedableRng};
use std::time::Duration;

fn weights(conv: &Conv2d) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let fan_in = (conv.group_in() * conv.kernel[0] * conv.kernel[1]) as f32;
    let bound = 1.0 / fan_in.sqrt();
    (0..conv.weight_len())
        .map(|_| rng.random_range(-bound..bound))
        .collect()
}

fn cases(full: bool) -> Vec<(String, Conv2d, ConvMethod, f64)> {
    let mut out = Vec::new();
    let sizes: &[usize] = if full { &[32, 56, 112, 224] } else { &[32] };
    for &n in sizes {
        for (mode, tag) in [
            (PaddingMode::Zeros, "zeros"),
            (PaddingMode::Circular, "circular"),
        ] {
            let conv = Conv2d::new(64, 64, [3, 3], [n, n]).padding(1).mode(mode);
            let tolerances: &[(f64, &str)] = if full {
                &[(1e-4, "1e-4"), (1e-6, "1e-6")]
            } else {
                &[(1e-4, "1e-4")]
            };
            for &(rtol, label) in tolerances {
                out.push((
                    format!("c64_k3_n{n}_{tag}_auto_rtol{label}"),
                    conv.clone(),
                    ConvMethod::Auto,
                    rtol,
                ));
            }
        }
    }
    if full {
        let z56 = Conv2d::new(64, 64, [3, 3], [56, 56]).padding(1);
        for (method, tag) in [
            (ConvMethod::Lanczos, "lanczos"),
            (ConvMethod::Power, "power"),
            (ConvMethod::Gram, "gram"),
            (ConvMethod::BoundsOnly, "bounds_only"),
        ] {
            out.push((
                format!("c64_k3_n56_zeros_{tag}_rtol1e-4"),
                z56.clone(),
                method,
                1e-4,
            ));
        }
        let c56 = z56.clone().mode(PaddingMode::Circular);
        out.push((
            "c64_k3_n56_circular_exact".into(),
            c56.clone(),
            ConvMethod::ExactCircular,
            1e-4,
        ));
        out.push((
            "c64_k3_n56_circular_lanczos_rtol1e-4".into(),
            c56.clone(),
            ConvMethod::Lanczos,
            1e-4,
        ));
        out.push((
            "c64_k3_n56_circular_power_rtol1e-4".into(),
            c56.clone(),
            ConvMethod::Power,
            1e-4,
        ));
        out.push((
            "c64_k3_n56_circular_gram".into(),
            c56,
            ConvMethod::Gram,
            1e-4,
        ));
        // The targets: many channels on small images, zero padding, width 1e-4; and
        // the circular norm of 512 channels on 28×28 exactly.
        for (name, conv) in [
            (
                "c512_k3_n7_zeros",
                Conv2d::new(512, 512, [3, 3], [7, 7]).padding(1),
            ),
            (
                "c256_k3_n14_zeros",
                Conv2d::new(256, 256, [3, 3], [14, 14]).padding(1),
            ),
        ] {
            out.push((
                format!("{name}_auto_rtol1e-4"),
                conv,
                ConvMethod::Auto,
                1e-4,
            ));
        }
        let c512 = Conv2d::new(512, 512, [3, 3], [28, 28])
            .padding(1)
            .mode(PaddingMode::Circular);
        out.push((
            "c512_k3_n28_circular_exact".into(),
            c512.clone(),
            ConvMethod::ExactCircular,
            1e-6,
        ));
        out.push((
            "c512_k3_n28_circular_gram".into(),
            c512,
            ConvMethod::Gram,
            1e-6,
        ));
        for (name, conv) in [
            (
                "resnet_stem_3to64_k7s2_224",
                Conv2d::new(64, 3, [7, 7], [224, 224])
                    .stride([2, 2])
                    .padding(3),
            ),
            (
                "resnet_64_k3_56",
                Conv2d::new(64, 64, [3, 3], [56, 56]).padding(1),
            ),
            (
                "resnet_64to128_k3s2_56",
                Conv2d::new(128, 64, [3, 3], [56, 56])
                    .stride([2, 2])
                    .padding(1),
            ),
            (
                "resnet_downsample_64to128_k1s2_56",
                Conv2d::new(128, 64, [1, 1], [56, 56]).stride([2, 2]),
            ),
            (
                "resnet_128_k3_28",
                Conv2d::new(128, 128, [3, 3], [28, 28]).padding(1),
            ),
            (
                "resnet_256_k3_14",
                Conv2d::new(256, 256, [3, 3], [14, 14]).padding(1),
            ),
            (
                "resnet_512_k3_7",
                Conv2d::new(512, 512, [3, 3], [7, 7]).padding(1),
            ),
        ] {
            out.push((format!("{name}_rtol1e-3"), conv, ConvMethod::Auto, 1e-3));
        }
    }
    out
}

fn bench_conv_norm(c: &mut Criterion) {
    let full = std::env::args().any(|a| a == "--bench");
    let mut group = c.benchmark_group("conv_norm");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(100));
    group.measurement_time(Duration::from_secs(5));
    for (name, conv, method, rtol) in cases(full) {
        let w = weights(&conv);
        // Power iteration cannot certify 1e-4 on a 200k-dimensional layer: cap it at 300 steps
        // and report the width it reached.
        let opts = Options {
            max_iterations: if method == ConvMethod::Power {
                300
            } else {
                5000
            },
            ..Options::with_rtol(rtol)
        };
        let r = conv2d_norm(&w, &conv, method, &opts).expect("valid layer");
        eprintln!(
            "conv_norm {name}: [{:.8}, {:.8}] width {:.2e} {} stop {:?} iterations {} matvecs {} {:.3}s",
            r.bound.lower,
            r.bound.upper,
            r.bound.relative_width(),
            r.bound.certificate.label(),
            r.bound.stop,
            r.bound.iterations,
            r.bound.matvecs,
            r.bound.seconds
        );
        if r.bound.seconds > 5.0 {
            // Ten samples would take minutes; the single run above is the measurement.
            eprintln!("conv_norm {name}: single run only (over 5 s)");
            continue;
        }
        group.bench_function(BenchmarkId::from_parameter(&name), |b| {
            b.iter(|| conv2d_norm(&w, &conv, method, &opts).expect("valid layer"))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_conv_norm);
criterion_main!(benches);
