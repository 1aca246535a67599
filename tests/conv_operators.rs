//! Convolution operators against an independent naive implementation of the ONNX/PyTorch formula:
//! outputs, adjoints and explicit matrices, over random shapes with every option.

mod common;
use common::naive;
use lipschitz::conv::{Conv2d, DirectConv2d, FftConv2d, PaddingMode};
use lipschitz::{explicit_matrix, LinearOperator};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use rand::Rng;

fn random_vec(n: usize, seed: u64) -> Vec<f64> {
    let mut r = common::rng(seed);
    (0..n).map(|_| r.random::<f64>() * 2.0 - 1.0).collect()
}

fn random_weights(conv: &Conv2d, seed: u64) -> Vec<f32> {
    let mut r = common::rng(seed);
    (0..conv.weight_len())
        .map(|_| r.random::<f32>() * 2.0 - 1.0)
        .collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn sub(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x - y).collect()
}

fn rel_diff(a: &[f64], b: &[f64]) -> f64 {
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt();
    let den: f64 = b.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-300);
    num / den
}

/// Both operators agree with the naive formula and satisfy the adjoint identity.
fn check_layer(conv: &Conv2d, seed: u64) {
    let w = random_weights(conv, seed);
    let x = random_vec(conv.input_len(), seed + 1);
    let expect = naive(conv, &w, &x);
    let yv = random_vec(expect.len(), seed + 2);
    let wnorm = w.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
    let direct = DirectConv2d::new(conv, &w).unwrap();
    let fft = FftConv2d::new(conv, &w, 1 << 30).unwrap();
    for (name, op, tol) in [
        ("direct", &direct as &dyn LinearOperator, 1e-12),
        ("fft", &fft, 1e-5),
    ] {
        assert_eq!(op.output_len(), expect.len(), "{name} {conv:?}");
        let mut y = vec![0.0; op.output_len()];
        op.apply(&x, &mut y).unwrap();
        // Relative to ‖y‖, or to the layer's scale ‖w‖_F‖x‖ when y is (nearly) zero.
        let scale = dot(&expect, &expect).sqrt().max(wnorm * dot(&x, &x).sqrt());
        let d = dot(&sub(&y, &expect), &sub(&y, &expect)).sqrt() / scale.max(1e-300);
        assert!(d <= tol, "{name} forward differs by {d:e} on {conv:?}");
        let mut xt = vec![0.0; op.input_len()];
        op.apply_adjoint(&yv, &mut xt).unwrap();
        let (lhs, rhs) = (dot(&y, &yv), dot(&x, &xt));
        let scale = (dot(&y, &y).max(wnorm * wnorm * dot(&x, &x)) * dot(&yv, &yv))
            .sqrt()
            .max(1e-300);
        assert!(
            (lhs - rhs).abs() <= tol * scale,
            "{name} adjoint identity: ⟨Ax,y⟩ = {lhs}, ⟨x,Aᵀy⟩ = {rhs} on {conv:?}"
        );
    }
}

/// Both operators' explicit matrices equal the naive one, and their adjoints' the transpose.
fn check_explicit(conv: &Conv2d, seed: u64) {
    let w = random_weights(conv, seed);
    let (n, m) = (conv.input_len(), conv.output_len());
    let mut reference = vec![0.0; m * n];
    for j in 0..n {
        let mut e = vec![0.0; n];
        e[j] = 1.0;
        reference[j * m..(j + 1) * m].copy_from_slice(&naive(conv, &w, &e));
    }
    let direct = DirectConv2d::new(conv, &w).unwrap();
    let fft = FftConv2d::new(conv, &w, 1 << 30).unwrap();
    for (name, op, tol) in [
        ("direct", &direct as &dyn LinearOperator, 1e-12),
        ("fft", &fft, 1e-5),
    ] {
        let a = explicit_matrix(op, 1 << 30).unwrap();
        assert!(
            rel_diff(&a, &reference) <= tol,
            "{name} explicit matrix on {conv:?}"
        );
        // Adjoint matrix, column by column, is the transpose.
        for i in 0..m {
            let mut e = vec![0.0; m];
            e[i] = 1.0;
            let mut col = vec![0.0; n];
            op.apply_adjoint(&e, &mut col).unwrap();
            let row: Vec<f64> = (0..n).map(|j| reference[j * m + i]).collect();
            assert!(
                rel_diff(&col, &row) <= tol.max(1e-300)
                    || row.iter().all(|v| *v == 0.0) && col.iter().all(|v| v.abs() < 1e-6),
                "{name} adjoint row {i} on {conv:?}"
            );
        }
    }
}

#[test]
fn named_cases_match_naive_and_explicit_matrices() {
    for (i, (name, conv)) in common::conv_cases().into_iter().enumerate() {
        conv.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
        check_layer(&conv, 100 + i as u64);
        check_explicit(&conv, 200 + i as u64);
    }
}

fn conv_strategy() -> impl Strategy<Value = Conv2d> {
    (
        (1usize..4, 1usize..4, 1usize..3),
        (1usize..5, 1usize..5),
        (1usize..10, 1usize..10),
        (1usize..4, 1usize..4, 1usize..3, 1usize..3),
        (0usize..4, 0usize..4, 0usize..4, 0usize..4),
        any::<bool>(),
    )
        .prop_map(
            |((cg, og, g), (kh, kw), (h, w), (sh, sw, dh, dw), (pt, pl, pb, pr), circular)| {
                Conv2d::new(og * g, cg * g, [kh, kw], [h, w])
                    .groups(g)
                    .stride([sh, sw])
                    .dilation([dh, dw])
                    .pads([pt, pl, pb, pr])
                    .mode(if circular {
                        PaddingMode::Circular
                    } else {
                        PaddingMode::Zeros
                    })
            },
        )
}

proptest! {
    #![proptest_config(Config { cases: 300, rng_seed: RngSeed::Fixed(2026), failure_persistence: None, ..Config::default() })]
    #[test]
    fn random_layers_match_naive_and_are_adjoint(conv in conv_strategy(), seed in 0u64..1000) {
        prop_assume!(conv.validate().is_ok());
        check_layer(&conv, seed);
    }
}

#[test]
fn identity_kernel_is_the_identity() {
    for mode in [PaddingMode::Zeros, PaddingMode::Circular] {
        let conv = Conv2d::new(3, 3, [3, 3], [7, 5]).padding(1).mode(mode);
        let mut w = vec![0f32; conv.weight_len()];
        for c in 0..3 {
            w[(c * 3 + c) * 9 + 4] = 1.0;
        }
        let x = random_vec(conv.input_len(), 5);
        for op in [
            Box::new(DirectConv2d::new(&conv, &w).unwrap()) as Box<dyn LinearOperator>,
            Box::new(FftConv2d::new(&conv, &w, 1 << 30).unwrap()),
        ] {
            let mut y = vec![0.0; x.len()];
            op.apply(&x, &mut y).unwrap();
            assert!(rel_diff(&y, &x) < 1e-6, "{mode:?}");
        }
    }
}

#[test]
fn one_by_one_conv_is_the_channel_matrix_and_shift_is_a_permutation() {
    let conv = Conv2d::new(4, 3, [1, 1], [5, 6]);
    let w = random_weights(&conv, 9);
    let x = random_vec(conv.input_len(), 10);
    let op = DirectConv2d::new(&conv, &w).unwrap();
    let mut y = vec![0.0; conv.output_len()];
    op.apply(&x, &mut y).unwrap();
    for pix in 0..30 {
        for o in 0..4 {
            let expect: f64 = (0..3).map(|c| w[o * 3 + c] as f64 * x[c * 30 + pix]).sum();
            assert!((y[o * 30 + pix] - expect).abs() < 1e-12);
        }
    }
    // A single off-centre tap with circular padding permutes the pixels.
    let conv = Conv2d::new(1, 1, [3, 3], [4, 5])
        .padding(1)
        .mode(PaddingMode::Circular);
    let mut w = vec![0f32; 9];
    w[2] = 1.0; // (p, q) = (0, 2): y[i,j] = x[i−1 mod H, j+1 mod W]
    for op in [
        Box::new(DirectConv2d::new(&conv, &w).unwrap()) as Box<dyn LinearOperator>,
        Box::new(FftConv2d::new(&conv, &w, 1 << 30).unwrap()),
    ] {
        let a = explicit_matrix(op.as_ref(), 1 << 20).unwrap();
        for i in 0..20 {
            let row: Vec<f64> = (0..20).map(|j| a[j * 20 + i]).collect();
            assert_eq!(row.iter().filter(|v| (**v - 1.0).abs() < 1e-6).count(), 1);
            assert!(row.iter().all(|v| v.abs() < 1e-6 || (v - 1.0).abs() < 1e-6));
            let (r, c) = (i / 5, i % 5);
            let src = ((r + 3) % 4) * 5 + (c + 1) % 5;
            assert!((row[src] - 1.0).abs() < 1e-6);
        }
    }
}

#[test]
fn blocks_match_single_vectors() {
    let conv = Conv2d::new(4, 6, [3, 3], [9, 7])
        .padding(1)
        .stride([2, 1])
        .groups(2);
    let w = random_weights(&conv, 11);
    let b = 11; // one full register tile of 8 and a tail of 3
    let (n, m) = (conv.input_len(), conv.output_len());
    let x = random_vec(n * b, 12);
    let yv = random_vec(m * b, 13);
    // The direct operator gives the same bits; the f32 FFT one sums blocks in another order.
    for (op, tol) in [
        (
            Box::new(DirectConv2d::new(&conv, &w).unwrap()) as Box<dyn LinearOperator>,
            1e-12,
        ),
        (Box::new(FftConv2d::new(&conv, &w, 1 << 30).unwrap()), 1e-6),
    ] {
        let mut yb = vec![0.0; m * b];
        op.apply_block(&x, &mut yb, b).unwrap();
        let mut xb = vec![0.0; n * b];
        op.apply_adjoint_block(&yv, &mut xb, b).unwrap();
        for k in 0..b {
            let mut y = vec![0.0; m];
            op.apply(&x[k * n..(k + 1) * n], &mut y).unwrap();
            assert!(rel_diff(&yb[k * m..(k + 1) * m], &y) < tol);
            let mut xt = vec![0.0; n];
            op.apply_adjoint(&yv[k * m..(k + 1) * m], &mut xt).unwrap();
            assert!(rel_diff(&xb[k * n..(k + 1) * n], &xt) < tol);
        }
    }
}

#[test]
fn validation_names_the_field_and_value() {
    let ok = Conv2d::new(4, 6, [3, 3], [8, 8]).padding(1);
    let cases: Vec<(Conv2d, &str)> = vec![
        (
            Conv2d {
                out_channels: 0,
                ..ok.clone()
            },
            "out_channels",
        ),
        (
            Conv2d {
                in_channels: 0,
                ..ok.clone()
            },
            "in_channels",
        ),
        (
            Conv2d {
                kernel: [0, 3],
                ..ok.clone()
            },
            "kernel height",
        ),
        (
            Conv2d {
                input: [8, 0],
                ..ok.clone()
            },
            "input width",
        ),
        (ok.clone().stride([1, 0]), "stride width"),
        (ok.clone().dilation([0, 1]), "dilation height"),
        (ok.clone().groups(0), "groups"),
        (ok.clone().groups(4), "does not divide in_channels = 6"),
        (ok.clone().groups(3), "does not divide out_channels = 4"),
        (Conv2d::new(1, 1, [5, 3], [3, 3]), "kernel height extent"),
        (
            Conv2d::new(1, 1, [3, 3], [8, 8]).dilation([1, 5]),
            "kernel width extent",
        ),
        (
            Conv2d::new(1, 1 << 30, [3, 3], [1 << 12, 1 << 12]),
            "absurdly large",
        ),
    ];
    for (conv, needle) in cases {
        let e = conv.validate().unwrap_err().to_string();
        assert!(e.contains(needle), "expected '{needle}' in '{e}'");
        assert!(DirectConv2d::new(&conv, &[]).is_err());
        assert!(FftConv2d::new(&conv, &[], 1 << 30).is_err());
    }
    let e = DirectConv2d::new(&ok, &[0.0; 5]).err().unwrap().to_string();
    assert!(
        e.contains("(4, 6, 3, 3)") && e.contains("expected length 216"),
        "{e}"
    );
    let mut w = vec![0.5f32; ok.weight_len()];
    w[17] = f32::NAN;
    let e = FftConv2d::new(&ok, &w, 1 << 30).err().unwrap().to_string();
    assert!(e.contains("index 17") && e.contains("NaN"), "{e}");
    let w = vec![0.5f32; ok.weight_len()];
    let e = FftConv2d::new(&ok, &w, 1000).err().unwrap().to_string();
    assert!(
        e.contains("FFT conv operator") && e.contains("limit of 1000"),
        "{e}"
    );
}

#[test]
fn auto_choice_follows_the_crossover_and_falls_back_with_a_reason() {
    use lipschitz::conv::ConvOperator;
    let k5 = Conv2d::new(4, 4, [5, 5], [12, 12]).padding(2);
    let w = random_weights(&k5, 3);
    let (op, why) = ConvOperator::auto_with_reason(&k5, &w, 1, 1 << 30).unwrap();
    assert!(
        matches!(op, ConvOperator::Fft(_)) && why.starts_with("fft"),
        "{why}"
    );
    let (op, why) = ConvOperator::auto_with_reason(&k5, &w, 1, 10_000).unwrap();
    assert!(matches!(op, ConvOperator::Direct(_)), "{why}");
    assert!(
        why.contains("fallback") && why.contains("memory limit of 10000"),
        "{why}"
    );
    let k3 = Conv2d::new(4, 4, [3, 3], [12, 12]).padding(1);
    let w3 = random_weights(&k3, 4);
    let (op, _) = ConvOperator::auto_with_reason(&k3, &w3, 1, 1 << 30).unwrap();
    assert!(matches!(op, ConvOperator::Direct(_)));
    let (op, _) = ConvOperator::auto_with_reason(&k3, &w3, 8, 1 << 30).unwrap();
    assert!(matches!(op, ConvOperator::Fft(_)));
}
