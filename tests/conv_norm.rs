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

#[test]
fn every_option_is_contained_and_meets_rtol() {
    for (i, (name, conv)) in common::conv_cases().into_iter().enumerate() {
        let w = weights(&conv, 40 + i as u64);
        let sigma = naive_sigma(&conv, &w);
        let opts = Options::with_rtol(1e-6);
        for method in [
            ConvMethod::Auto,
            ConvMethod::Lanczos,
            ConvMethod::BoundsOnly,
            ConvMethod::Exact,
            ConvMethod::Gram,
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
    for (i, (name, conv)) in common::conv_cases().into_iter().enumerate() {
        if !conv.is_exactly_circular() {
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
    // A circular layer whose output differs from the image is not the circular conv itself.
    let conv = Conv2d::new(1, 1, [3, 3], [6, 6]).mode(PaddingMode::Circular);
    assert!(conv2d_norm(
        &[0.1; 9],
        &conv,
        ConvMethod::ExactCircular,
        &Options::default()
    )
    .is_err());
    // Stride that does not divide the image has no polyphase form: exact is an error.
    let conv = Conv2d::new(1, 1, [3, 3], [7, 6])
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
fn polyphase_makes_strided_circular_layers_exact() {
    let mut exact = 0;
    for (i, (name, conv)) in common::conv_cases().into_iter().enumerate() {
        let Some((equivalent, w2)) =
            lipschitz::conv::polyphase(&conv, &weights(&conv, 80 + i as u64))
        else {
            continue;
        };
        let w = weights(&conv, 80 + i as u64);
        let sigma = naive_sigma(&conv, &w);
        // Same singular values: the equivalent layer's explicit σ₁ matches.
        assert!(
            (naive_sigma(&equivalent, &w2) - sigma).abs() <= 1e-9 * sigma,
            "{name}"
        );
        let r = conv2d_norm(&w, &conv, ConvMethod::Auto, &Options::default()).unwrap();
        assert_eq!(r.bound.certificate, Certificate::Exact, "{name}");
        assert!(
            (r.bound.upper - sigma).abs() <= 1e-6 * sigma
                && (r.bound.lower - sigma).abs() <= 1e-6 * sigma,
            "{name}"
        );
        if conv.stride != [1, 1] {
            exact += 1;
        }
    }
    assert!(
        exact >= 4,
        "only {exact} strided circular cases were made exact"
    );
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
        // The oracle is itself an f64 SVD of the explicit matrix (whose Frobenius norm grows
        // with the image): it is accurate to ~1e-15 relative, so allow 1e-13.
        assert!(
            b.circular_upper >= sigma * (1.0 - 1e-13)
                && b.window_upper >= sigma * (1.0 - 1e-13)
                && b.bound.upper >= sigma * (1.0 - 1e-13)
                && b.bound.lower <= sigma * (1.0 + 1e-12),
            "trial {trial} {conv:?}: σ = {sigma}, bounds [{}, {}], window {}",
            b.bound.lower,
            b.circular_upper,
            b.window_upper
        );
        checked += 1;
    }
    assert!(checked > 800, "only {checked} valid random layers");
}

#[test]
fn classical_bounds_are_valid_and_looser_than_ours() {
    let mut r = common::rng(91);
    let mut tighter = 0;
    for trial in 0..300u64 {
        let g = r.random_range(1..3);
        let conv = Conv2d::new(
            g * r.random_range(1..4),
            g * r.random_range(1..4),
            [r.random_range(1..4), r.random_range(1..4)],
            [r.random_range(2..7), r.random_range(2..7)],
        )
        .groups(g)
        .pads([
            r.random_range(0..3),
            r.random_range(0..3),
            r.random_range(0..3),
            r.random_range(0..3),
        ])
        .stride([r.random_range(1..3), r.random_range(1..3)])
        .dilation([r.random_range(1..3), r.random_range(1..3)])
        .mode(if trial % 2 == 0 {
            PaddingMode::Zeros
        } else {
            PaddingMode::Circular
        });
        if conv.validate().is_err() {
            continue;
        }
        let w = weights(&conv, 3000 + trial);
        let sigma = naive_sigma(&conv, &w);
        let c = lipschitz::conv::classic_bounds(&conv, &w).unwrap();
        let slack = 1.0 + 1e-9;
        assert!(
            c.tap_sum * slack >= sigma,
            "tap sum {} < σ {sigma} on {conv:?}",
            c.tap_sum
        );
        assert!(
            c.frobenius * slack >= c.tap_sum,
            "frobenius below tap sum on {conv:?}"
        );
        assert!(
            c.fantastic_four * slack >= sigma,
            "fantastic four {} < σ {sigma} on {conv:?}",
            c.fantastic_four
        );
        let ours = conv2d_norm(&w, &conv, ConvMethod::Auto, &Options::with_rtol(1e-6)).unwrap();
        if ours.bound.upper < c.tap_sum.min(c.fantastic_four) {
            tighter += 1;
        }
    }
    assert!(
        tighter > 100,
        "our bound was tighter in only {tighter} cases"
    );
}

#[test]
fn resolution_independent_bound_holds_at_every_size() {
    use lipschitz::conv::resolution_independent_bound;
    let mut r = common::rng(123);
    for trial in 0..12u64 {
        let k = [r.random_range(1..4), r.random_range(1..4)];
        let base = Conv2d::new(r.random_range(1..4), r.random_range(1..4), k, [4, 4])
            .pads([k[0] / 2, k[1] / 2, k[0] / 2, k[1] / 2])
            .dilation([r.random_range(1..3), 1]);
        let w = weights(&base, 5000 + trial);
        let ri = resolution_independent_bound(&base, &w, 16, 2000, 1e-3).unwrap();
        assert!(ri.upper >= ri.best && ri.evaluations >= 16 * 9);
        // The second-order slack reaches rtol within the budget.
        assert!(ri.upper <= ri.best * (1.0 + 1e-3), "trial {trial}: {ri:?}");
        for (n, mode) in [
            (4, PaddingMode::Zeros),
            (7, PaddingMode::Zeros),
            (9, PaddingMode::Circular),
            (12, PaddingMode::Zeros),
        ] {
            let mut conv = base.clone();
            conv.input = [n, n + 1];
            conv.padding_mode = mode;
            if conv.validate().is_err()
                || !(mode == PaddingMode::Zeros || conv.is_exactly_circular())
            {
                continue;
            }
            let sigma = naive_sigma(&conv, &w);
            assert!(
                ri.upper >= sigma,
                "trial {trial} n {n} {mode:?}: {} < σ {sigma}",
                ri.upper
            );
        }
        // And above the circular norm on a large grid, where no explicit matrix is feasible.
        let mut big = base.clone();
        big.input = [64, 48];
        big.padding_mode = PaddingMode::Circular;
        if big.is_exactly_circular() {
            let b = conv2d_norm(&w, &big, ConvMethod::ExactCircular, &Options::default()).unwrap();
            assert!(
                ri.upper >= b.bound.lower,
                "trial {trial}: {} < {}",
                ri.upper,
                b.bound.lower
            );
            assert!(
                ri.upper <= b.bound.upper * 1.01 + 1e-12 || ri.evaluations >= 2000,
                "loose: {} vs {}",
                ri.upper,
                b.bound.upper
            );
        }
    }
}

#[test]
fn window_bound_is_tighter_than_the_circular_embedding_on_small_images() {
    for (c, n, seed) in [(8, 12, 1u64), (6, 9, 2), (4, 16, 3)] {
        let conv = Conv2d::new(c, c, [3, 3], [n, n]).padding(1);
        let w = weights(&conv, seed);
        let sigma = naive_sigma(&conv, &w);
        let b = conv2d_norm(&w, &conv, ConvMethod::BoundsOnly, &Options::default()).unwrap();
        assert!(
            b.window_upper >= sigma,
            "{c}@{n}: window {} < σ {sigma}",
            b.window_upper
        );
        assert!(
            b.window_upper - sigma < 0.6 * (b.circular_upper - sigma),
            "{c}@{n}: window excess {} vs circular excess {}",
            b.window_upper - sigma,
            b.circular_upper - sigma
        );
    }
}

#[test]
fn large_window_bound_contains_the_exact_norm() {
    // 40×40 = 1600 pixels: above the always-computed size, so the window bound is computed
    // only after a short Lanczos run misses rtol.
    let conv = Conv2d::new(1, 1, [3, 3], [40, 40]).padding(1);
    let w = weights(&conv, 9);
    let sigma = naive_sigma(&conv, &w);
    let r = conv2d_norm(&w, &conv, ConvMethod::Lanczos, &Options::with_rtol(1e-7)).unwrap();
    assert!(r.window_upper.is_finite(), "window bound not computed");
    assert!(
        r.window_upper >= sigma * (1.0 - 1e-13),
        "window {} < σ {sigma}",
        r.window_upper
    );
    assert!(r.window_upper < r.circular_upper);
    assert!(r.bound.lower <= sigma * (1.0 + 1e-12) && sigma <= r.bound.upper * (1.0 + 1e-13));
}

/// Layers with ≥ 16 channels per group take the certified-maximum path (estimates, a few
/// refined blocks, Cholesky certificates for the rest) and the tap-product Gram matrices.
#[test]
fn many_channel_circular_layers_equal_the_explicit_matrix() {
    let cases = [
        Conv2d::new(20, 16, [3, 3], [5, 6]).padding(1),
        Conv2d::new(40, 40, [3, 3], [4, 5]).padding(1).groups(2),
        Conv2d::new(16, 24, [3, 2], [6, 4])
            .pads([1, 0, 1, 1])
            .dilation([1, 2]),
        Conv2d::new(18, 18, [3, 3], [6, 6])
            .padding(1)
            .stride([2, 2]),
    ];
    for (i, conv) in cases.into_iter().enumerate() {
        let conv = conv.mode(PaddingMode::Circular);
        let w = weights(&conv, 90 + i as u64);
        let sigma = naive_sigma(&conv, &w);
        for rtol in [1e-6, 1e-3] {
            let r = conv2d_norm(&w, &conv, ConvMethod::Auto, &Options::with_rtol(rtol)).unwrap();
            let b = r.bound;
            assert_eq!(b.certificate, Certificate::Exact, "{conv:?}");
            assert!(
                b.lower <= sigma * (1.0 + 1e-12) && sigma <= b.upper,
                "{conv:?}"
            );
            assert!(
                b.meets(rtol.min(1e-6)),
                "{conv:?}: width {:e}",
                b.relative_width()
            );
        }
        let gram = conv2d_norm(&w, &conv, ConvMethod::Gram, &Options::default()).unwrap();
        assert_eq!(gram.bound.certificate, Certificate::Deterministic);
        assert!(
            gram.bound.lower <= sigma && sigma <= gram.bound.upper,
            "{conv:?}"
        );
    }
}

/// Small zero-padded images, where no proven bound could meet `rtol` (the window bound is
/// percents above the norm there): `Auto` certifies by Lanczos alone, without the frequency
/// scan, and the interval still contains the exact norm. A larger image at a looser `rtol`
/// keeps the proven bounds.
#[test]
fn small_zero_padded_images_go_straight_to_lanczos() {
    let opts = Options {
        exact_flop_limit: 0.0, // no dense SVD: these layers are small enough for one
        ..Options::with_rtol(1e-4)
    };
    for (c, n, stride, seed) in [(12, 5, 1, 5u64), (8, 6, 2, 6), (24, 3, 1, 7)] {
        let conv = Conv2d::new(c, c, [3, 3], [n, n])
            .padding(1)
            .stride([stride, stride]);
        let w = weights(&conv, seed);
        let sigma = naive_sigma(&conv, &w);
        let r = conv2d_norm(&w, &conv, ConvMethod::Auto, &opts).unwrap();
        let b = r.bound;
        assert_eq!(r.method, ConvMethod::Lanczos, "{c}@{n}/{stride}");
        assert_eq!(r.frequencies_visited, 0, "{c}@{n}/{stride}: scanned");
        assert!(r.window_upper.is_infinite() && r.circular_upper.is_infinite());
        assert!(
            matches!(b.certificate, Certificate::Probabilistic { .. }),
            "{c}@{n}/{stride}: {:?}",
            b.certificate
        );
        assert!(
            b.lower <= sigma * (1.0 + 1e-12) && sigma <= b.upper * (1.0 + 1e-12),
            "{c}@{n}/{stride}: σ = {sigma} not in [{}, {}]",
            b.lower,
            b.upper
        );
        assert!(b.meets(1e-4), "width {:e}", b.relative_width());
    }
    let conv = Conv2d::new(4, 4, [3, 3], [28, 28]).padding(1);
    let w = weights(&conv, 8);
    let loose = Options {
        exact_flop_limit: 0.0,
        ..Options::with_rtol(1e-2)
    };
    let r = conv2d_norm(&w, &conv, ConvMethod::Auto, &loose).unwrap();
    assert!(r.frequencies_visited > 0 && r.window_upper.is_finite());
}
