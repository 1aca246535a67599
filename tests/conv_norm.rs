//! Certified conv norms against the dense SVD of the explicit matrix (built from a naive
//! implementation of the layer, independent of the library), for every option.

mod common;
use common::naive_sigma;
use lipschitz::conv::{conv2d_norm, Conv2d, ConvMethod, PaddingMode};
use lipschitz::{Certificate, Options};
use rand::Rng;

fn weights(conv: &Conv2d, seed: u64) -> Vec<f32> {
    let mut r = common::rng(seed);
    (0..conv.weight_len())
        .map(|_| r.random::<f32>() * 2.0 - 1.0)
        .collect()
}

fn cases() -> Vec<(&'static str, Conv2d)> {
    use PaddingMode::*;
    vec![
        ("zeros same", Conv2d::new(3, 2, [3, 3], [6, 6]).padding(1)),
        ("valid", Conv2d::new(2, 3, [3, 3], [7, 6])),
        (
            "asymmetric pads",
            Conv2d::new(2, 2, [3, 2], [5, 6]).pads([2, 0, 1, 3]),
        ),
        (
            "rectangular",
            Conv2d::new(3, 2, [2, 5], [4, 9]).pads([1, 2, 1, 2]),
        ),
        (
            "stride 2",
            Conv2d::new(2, 3, [3, 3], [8, 7]).padding(1).stride([2, 2]),
        ),
        (
            "stride 3",
            Conv2d::new(2, 2, [3, 3], [10, 9]).padding(1).stride([3, 3]),
        ),
        (
            "dilation 2",
            Conv2d::new(2, 2, [3, 3], [9, 8])
                .padding(2)
                .dilation([2, 2]),
        ),
        (
            "groups",
            Conv2d::new(4, 6, [3, 3], [5, 5]).padding(1).groups(2),
        ),
        (
            "depthwise",
            Conv2d::new(3, 3, [3, 3], [6, 5]).padding(1).groups(3),
        ),
        ("1×1", Conv2d::new(4, 3, [1, 1], [5, 4])),
        (
            "circular",
            Conv2d::new(2, 3, [3, 3], [6, 5]).padding(1).mode(Circular),
        ),
        (
            "circular stride 2",
            Conv2d::new(2, 2, [3, 3], [8, 6])
                .padding(1)
                .stride([2, 2])
                .mode(Circular),
        ),
        (
            "circular kernel > image",
            Conv2d::new(2, 2, [5, 4], [3, 2])
                .pads([2, 1, 2, 2])
                .mode(Circular),
        ),
        (
            "circular dilation",
            Conv2d::new(2, 2, [3, 3], [7, 6])
                .padding(2)
                .dilation([2, 2])
                .mode(Circular),
        ),
        (
            "circular depthwise",
            Conv2d::new(4, 4, [3, 3], [6, 6])
                .padding(1)
                .groups(4)
                .mode(Circular),
        ),
        (
            "circular groups",
            Conv2d::new(4, 2, [3, 3], [5, 7])
                .padding(1)
                .groups(2)
                .mode(Circular),
        ),
    ]
}

#[test]
fn every_option_is_contained_and_meets_rtol() {
    for (i, (name, conv)) in cases().into_iter().enumerate() {
        let w = weights(&conv, 40 + i as u64);
        let sigma = naive_sigma(&conv, &w);
        let opts = Options::with_rtol(1e-6);
        for method in [
            ConvMethod::Auto,
            ConvMethod::Lanczos,
            ConvMethod::BoundsOnly,
            ConvMethod::Exact,
        ] {
            let r = conv2d_norm(&w, &conv, method, &opts).unwrap();
            let b = r.bound;
            assert!(
                b.lower <= sigma * (1.0 + 1e-12) && sigma <= b.upper * (1.0 + 1e-12),
                "{name} {method:?}: σ = {sigma} not in [{}, {}]",
                b.lower,
                b.upper
            );
            assert!(
                r.circular_upper >= sigma * (1.0 - 1e-12),
                "{name}: circular bound below σ"
            );
            if method == ConvMethod::Auto || method == ConvMethod::Exact {
                assert!(
                    b.meets(1e-6),
                    "{name} {method:?}: width {:e}",
                    b.relative_width()
                );
            }
        }
    }
}

#[test]
fn circular_exact_equals_the_explicit_matrix() {
    for (i, (name, conv)) in cases().into_iter().enumerate() {
        if conv.padding_mode != PaddingMode::Circular || conv.stride != [1, 1] {
            continue;
        }
        let w = weights(&conv, 60 + i as u64);
        let sigma = naive_sigma(&conv, &w);
        let r = conv2d_norm(&w, &conv, ConvMethod::ExactCircular, &Options::default()).unwrap();
        assert_eq!(r.bound.certificate, Certificate::Exact, "{name}");
        assert!(
            (r.bound.upper - sigma).abs() <= 1e-6 * sigma,
            "{name}: {} vs {sigma}",
            r.bound.upper
        );
        assert!(
            (r.bound.lower - sigma).abs() <= 1e-6 * sigma,
            "{name}: {} vs {sigma}",
            r.bound.lower
        );
    }
    // Stride with circular padding is not block diagonal: asking for the exact method is an error.
    let conv = Conv2d::new(1, 1, [3, 3], [6, 6])
        .padding(1)
        .stride([2, 2])
        .mode(PaddingMode::Circular);
    let e = conv2d_norm(
        &[0.1; 9],
        &conv,
        ConvMethod::ExactCircular,
        &Options::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("stride 1"), "{e}");
}

#[test]
fn zero_padded_upper_bound_is_never_below_the_exact_norm() {
    let mut r = common::rng(77);
    let mut checked = 0;
    for trial in 0..1000u64 {
        let c_in = r.random_range(1..3);
        let c_out = r.random_range(1..3);
        let k = [r.random_range(1..4), r.random_range(1..4)];
        let n = [r.random_range(3..7), r.random_range(3..7)];
        let pads = [
            r.random_range(0..3),
            r.random_range(0..3),
            r.random_range(0..3),
            r.random_range(0..3),
        ];
        let stride = [r.random_range(1..3), r.random_range(1..3)];
        let conv = Conv2d::new(c_out, c_in, k, n).pads(pads).stride(stride);
        if conv.validate().is_err() {
            continue;
        }
        let mut w = weights(&conv, 1000 + trial);
        if trial % 3 == 0 {
            // Near-degenerate: a scaled identity-like centre tap plus a small perturbation.
            for v in w.iter_mut() {
                *v *= 1e-3;
            }
            let centre = (k[0] / 2) * k[1] + k[1] / 2;
            for o in 0..c_out.min(c_in) {
                w[(o * c_in + o) * k[0] * k[1] + centre] += 1.0;
            }
        }
        let sigma = naive_sigma(&conv, &w);
        let b = conv2d_norm(&w, &conv, ConvMethod::BoundsOnly, &Options::default()).unwrap();
        assert!(
            b.circular_upper >= sigma && b.bound.lower <= sigma * (1.0 + 1e-12),
            "trial {trial} {conv:?}: σ = {sigma}, bounds [{}, {}]",
            b.bound.lower,
            b.circular_upper
        );
        checked += 1;
    }
    assert!(checked > 800, "only {checked} valid random layers");
}
