//! Dense spectral norms against an independent oracle (faer's SVD of the same matrix), for
//! every method, on matrices chosen to be hard: low rank, rank one, zero, tall, wide, a
//! near-degenerate top pair and a cluster of equal top singular values.

mod common;
use common::*;
use lipschitz::*;

fn opts(method: Method, rtol: f64) -> Options {
    Options {
        method,
        rtol,
        ..Options::default()
    }
}

/// Every method must contain σ₁; the non-reference methods must also meet rtol.
fn check_all_methods(a: &[f32], rows: usize, cols: usize, rtol: f64, what: &str) {
    let sigma = oracle_sigma(a, rows, cols);
    for method in [
        Method::Auto,
        Method::Exact,
        Method::Lanczos,
        Method::BlockLanczos,
    ] {
        let b = dense_norm(a, rows, cols, &opts(method, rtol)).unwrap();
        assert_contains(&b, sigma, &format!("{what} {method:?}"));
        assert!(
            b.meets(rtol),
            "{what} {method:?}: width {:e} > {rtol:e}: {b:?}",
            b.relative_width()
        );
        assert_eq!(
            b.stop,
            if matches!(b.method, Method::Exact) {
                Stop::Direct
            } else {
                Stop::Converged
            }
        );
    }
    // Power iteration is the slow reference: it must stay correct at its caps.
    let mut p = opts(Method::Power, rtol);
    p.max_iterations = 300;
    let b = dense_norm(a, rows, cols, &p).unwrap();
    assert_contains(&b, sigma, &format!("{what} power"));
}

#[test]
fn random_square_tall_and_wide() {
    for (i, &(r, c)) in [
        (1, 1),
        (2, 3),
        (40, 40),
        (120, 80),
        (80, 120),
        (600, 30),
        (25, 900),
    ]
    .iter()
    .enumerate()
    {
        let a = gaussian_matrix(r, c, 10 + i as u64);
        check_all_methods(&a, r, c, 1e-6, &format!("gaussian {r}×{c}"));
    }
}

#[test]
fn low_rank_rank_one_and_zero() {
    let a = matrix_with_singular_values(150, 90, &[5.0, 4.0, 1.0, 0.5], 3);
    check_all_methods(&a, 150, 90, 1e-6, "rank 4");
    let a = matrix_with_singular_values(70, 130, &[3.25], 4);
    check_all_methods(&a, 70, 130, 1e-6, "rank 1");
    let zero = vec![0f32; 64 * 48];
    for method in [
        Method::Exact,
        Method::Lanczos,
        Method::BlockLanczos,
        Method::Power,
    ] {
        let b = dense_norm(&zero, 64, 48, &opts(method, 1e-6)).unwrap();
        assert_eq!(
            (b.lower, b.upper),
            (0.0, 0.0),
            "zero matrix {method:?}: {b:?}"
        );
    }
}

#[test]
fn near_degenerate_top_pair() {
    // σ₁/σ₂ = 1 + 1e-3 followed by a bulk: plain power iteration crawls, Lanczos certifies.
    let mut s = vec![1.001, 1.0];
    s.extend((0..60).map(|i| 0.9 - 0.01 * i as f64));
    let a = matrix_with_singular_values(400, 300, &s, 5);
    let sigma = oracle_sigma(&a, 400, 300);
    let lanczos = dense_norm(&a, 400, 300, &opts(Method::Lanczos, 1e-6)).unwrap();
    assert_contains(&lanczos, sigma, "near-degenerate lanczos");
    assert!(lanczos.meets(1e-6), "{lanczos:?}");
    let mut p = opts(Method::Power, 1e-6);
    p.max_iterations = 3 * lanczos.iterations;
    let power = dense_norm(&a, 400, 300, &p).unwrap();
    assert_contains(&power, sigma, "near-degenerate power");
    assert!(
        !power.meets(1e-6),
        "power iteration certified 1e-6 within 3× Lanczos' {} steps: {power:?}",
        lanczos.iterations
    );
    check_all_methods(&a, 400, 300, 1e-6, "near-degenerate");
}

#[test]
fn cluster_of_equal_top_values() {
    let mut s = vec![2.0; 6];
    s.extend((0..40).map(|i| 1.5 - 0.02 * i as f64));
    let a = matrix_with_singular_values(300, 260, &s, 6);
    check_all_methods(&a, 300, 260, 1e-6, "cluster");
}

#[test]
fn auto_uses_exact_for_small_and_lanczos_for_large() {
    let a = gaussian_matrix(50, 50, 7);
    let b = dense_norm(&a, 50, 50, &Options::default()).unwrap();
    assert_eq!(
        (b.method, b.certificate),
        (Method::Exact, Certificate::Exact)
    );
    let a = gaussian_matrix(700, 700, 8);
    let b = dense_norm(&a, 700, 700, &Options::default()).unwrap();
    assert_eq!(b.method, Method::Lanczos);
    assert_eq!(b.certificate, Certificate::Probabilistic { delta: 1e-6 });
    assert_contains(&b, oracle_sigma(&a, 700, 700), "auto large");
}

#[test]
fn lower_end_is_attained_by_a_vector() {
    // The lower end must never exceed the true norm, even at loose tolerances.
    let a = gaussian_matrix(200, 170, 9);
    let sigma = oracle_sigma(&a, 200, 170);
    for rtol in [1e-1, 1e-2, 1e-4] {
        for method in [Method::Lanczos, Method::BlockLanczos, Method::Power] {
            let b = dense_norm(&a, 200, 170, &opts(method, rtol)).unwrap();
            assert_contains(&b, sigma, &format!("rtol {rtol} {method:?}"));
            // Power iteration certifies width ε only after ~ln(√n/δ)/ε steps: loose tolerances.
            if method != Method::Power || rtol >= 1e-2 {
                assert!(b.meets(rtol), "rtol {rtol} {method:?}: {b:?}");
            }
        }
    }
}

#[test]
fn caps_return_the_interval_reached() {
    let a = gaussian_matrix(300, 300, 11);
    let sigma = oracle_sigma(&a, 300, 300);
    let mut o = opts(Method::Lanczos, 1e-12);
    o.max_iterations = 5;
    let b = dense_norm(&a, 300, 300, &o).unwrap();
    assert_eq!(b.stop, Stop::IterationCap);
    assert_eq!(b.iterations, 5);
    assert_contains(&b, sigma, "iteration cap");
    let mut o = opts(Method::Power, 1e-12);
    o.time_limit = Some(std::time::Duration::from_millis(20));
    let b = dense_norm(&a, 300, 300, &o).unwrap();
    assert_eq!(b.stop, Stop::TimeCap);
    assert_contains(&b, sigma, "time cap");
}

#[test]
fn warm_start_and_known_upper_bound() {
    let a = gaussian_matrix(250, 200, 12);
    let m = DenseMatrix::from_slice(&a, 250, 200).unwrap();
    let sigma = oracle_sigma(&a, 250, 200);
    let exact = dense_norm(&a, 250, 200, &opts(Method::Exact, 1e-6)).unwrap();
    // A proven upper bound from elsewhere is used, and its certificate reported.
    let hints = Hints {
        upper: Some((exact.upper, Certificate::Deterministic)),
        ..Hints::default()
    };
    let b = spectral_norm_with(&m, &opts(Method::Lanczos, 1e-6), &hints).unwrap();
    assert_eq!(b.certificate, Certificate::Deterministic);
    assert_contains(&b, sigma, "known upper");
    // A warm start near the top singular vector converges in fewer steps than a cold one.
    let cold = spectral_norm(&m, &opts(Method::Lanczos, 1e-10)).unwrap();
    let top = faer::Mat::<f64>::from_fn(250, 200, |i, j| a[i * 200 + j] as f64)
        .svd()
        .unwrap();
    let v: Vec<f64> = (0..200)
        .map(|i| top.V()[(i, 0)] + 1e-3 * ((i % 7) as f64 - 3.0))
        .collect();
    let warm_hints = Hints {
        start: Some(&v),
        random_weight: 0.01,
        upper: Some((exact.upper, Certificate::Exact)),
    };
    let warm = spectral_norm_with(&m, &opts(Method::Lanczos, 1e-10), &warm_hints).unwrap();
    assert_contains(&warm, sigma, "warm");
    assert!(
        warm.iterations < cold.iterations,
        "warm {warm:?} cold {cold:?}"
    );
}

#[test]
fn same_seed_same_bits_for_any_thread_count() {
    let a = gaussian_matrix(900, 700, 13);
    let run = |threads: usize, method: Method| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| dense_norm(&a, 900, 700, &opts(method, 1e-6)).unwrap())
    };
    for method in [
        Method::Exact,
        Method::Lanczos,
        Method::BlockLanczos,
        Method::Power,
    ] {
        let one = run(1, method);
        for threads in [2, 3, 8] {
            let other = run(threads, method);
            assert_eq!(
                (one.lower.to_bits(), one.upper.to_bits(), one.iterations),
                (
                    other.lower.to_bits(),
                    other.upper.to_bits(),
                    other.iterations
                ),
                "{method:?} with {threads} threads"
            );
        }
    }
    // A different seed gives a (slightly) different certificate, still containing σ₁.
    let mut o = opts(Method::Lanczos, 1e-6);
    o.seed = 99;
    let b = dense_norm(&a, 900, 700, &o).unwrap();
    assert_contains(&b, oracle_sigma(&a, 900, 700), "seed 99");
}

#[test]
fn operator_blocks_match_single_vectors_and_adjoint_identity() {
    let (r, c, b) = (37, 53, 5);
    let a = gaussian_matrix(r, c, 14);
    let m = DenseMatrix::from_slice(&a, r, c).unwrap();
    let mut g = rng(15);
    let x: Vec<f64> = (0..c * b)
        .map(|_| rand::Rng::random::<f64>(&mut g) - 0.5)
        .collect();
    let y: Vec<f64> = (0..r * b)
        .map(|_| rand::Rng::random::<f64>(&mut g) - 0.5)
        .collect();
    let mut ax = vec![0.0; r * b];
    let mut aty = vec![0.0; c * b];
    m.apply_block(&x, &mut ax, b).unwrap();
    m.apply_adjoint_block(&y, &mut aty, b).unwrap();
    for k in 0..b {
        let mut single = vec![0.0; r];
        m.apply(&x[k * c..(k + 1) * c], &mut single).unwrap();
        assert_eq!(single, ax[k * r..(k + 1) * r]);
        let mut single_t = vec![0.0; c];
        m.apply_adjoint(&y[k * r..(k + 1) * r], &mut single_t)
            .unwrap();
        for (s, t) in single_t.iter().zip(&aty[k * c..(k + 1) * c]) {
            assert!((s - t).abs() <= 1e-14 * (1.0 + s.abs()));
        }
        let lhs: f64 = ax[k * r..(k + 1) * r]
            .iter()
            .zip(&y[k * r..(k + 1) * r])
            .map(|(p, q)| p * q)
            .sum();
        let rhs: f64 = x[k * c..(k + 1) * c]
            .iter()
            .zip(&aty[k * c..(k + 1) * c])
            .map(|(p, q)| p * q)
            .sum();
        assert!(
            (lhs - rhs).abs() <= 1e-12 * lhs.abs().max(1.0),
            "⟨Ax,y⟩={lhs} ⟨x,Aᵀy⟩={rhs}"
        );
    }
    // Gram = adjoint ∘ forward, single and block.
    let mut z = vec![0.0; c * b];
    let mut tmp = vec![0.0; r * b];
    m.gram_block(&x, &mut z, &mut tmp, b);
    let mut expect = vec![0.0; c * b];
    m.apply_adjoint_block(&ax, &mut expect, b).unwrap();
    for (p, q) in z.iter().zip(&expect) {
        assert!((p - q).abs() <= 1e-12 * (1.0 + q.abs()));
    }
    // The explicit matrix is the weights.
    let e = explicit_matrix(&m, 1 << 30).unwrap();
    for i in 0..r {
        for j in 0..c {
            assert_eq!(e[j * r + i], a[i * c + j] as f64);
        }
    }
}

#[test]
fn every_error_path_names_the_problem() {
    let ok = [1.0f32, 2.0, 3.0, 4.0];
    let d = Options::default();
    let e = dense_norm(&ok, 0, 4, &d).unwrap_err();
    assert!(
        matches!(e, Error::ZeroDimension { .. }) && e.to_string().contains("rows"),
        "{e}"
    );
    let e = dense_norm(&ok, 4, 0, &d).unwrap_err();
    assert!(e.to_string().contains("cols"), "{e}");
    let e = dense_norm(&ok, 3, 2, &d).unwrap_err();
    assert!(
        matches!(
            e,
            Error::LengthMismatch {
                expected: 6,
                actual: 4,
                ..
            }
        ),
        "{e}"
    );
    let e = dense_norm(&ok, usize::MAX, 2, &d).unwrap_err();
    assert!(e.to_string().contains("overflows"), "{e}");
    let e = dense_norm(&[1.0, f32::NAN], 1, 2, &d).unwrap_err();
    assert!(
        matches!(e, Error::NonFinite { index: 1, .. }) && e.to_string().contains("NaN"),
        "{e}"
    );
    let e = dense_norm(&[f32::INFINITY, 1.0], 1, 2, &d).unwrap_err();
    assert!(
        matches!(e, Error::NonFinite { index: 0, .. }) && e.to_string().contains("inf"),
        "{e}"
    );
    for rtol in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let e = dense_norm(&ok, 2, 2, &Options::with_rtol(rtol)).unwrap_err();
        assert!(e.to_string().contains("rtol"), "{e}");
    }
    for (field, o) in [
        (
            "delta",
            Options {
                delta: 0.0,
                ..d.clone()
            },
        ),
        (
            "delta",
            Options {
                delta: 1.0,
                ..d.clone()
            },
        ),
        (
            "max_iterations",
            Options {
                max_iterations: 0,
                ..d.clone()
            },
        ),
        (
            "block_size",
            Options {
                block_size: 0,
                ..d.clone()
            },
        ),
        (
            "memory_limit",
            Options {
                memory_limit: 0,
                ..d.clone()
            },
        ),
    ] {
        let e = dense_norm(&ok, 2, 2, &o).unwrap_err();
        assert!(e.to_string().contains(field), "{field}: {e}");
    }
    // Too little memory for any Krylov basis, or for the exact SVD.
    let big = gaussian_matrix(64, 64, 1);
    let tiny = Options {
        memory_limit: 1024,
        method: Method::Lanczos,
        ..d.clone()
    };
    assert!(matches!(
        dense_norm(&big, 64, 64, &tiny).unwrap_err(),
        Error::TooLarge { .. }
    ));
    let tiny = Options {
        memory_limit: 1024,
        method: Method::Exact,
        ..d.clone()
    };
    assert!(matches!(
        dense_norm(&big, 64, 64, &tiny).unwrap_err(),
        Error::TooLarge { .. }
    ));
    // Buffer lengths through the checked operator API.
    let m = DenseMatrix::from_slice(&ok, 2, 2).unwrap();
    let mut y = [0.0; 3];
    let e = m.apply(&[1.0, 2.0], &mut y).unwrap_err();
    assert!(
        e.to_string().contains("output vector y") && e.to_string().contains("expected length 2"),
        "{e}"
    );
    let e = m.apply_adjoint(&[1.0], &mut [0.0; 2]).unwrap_err();
    assert!(e.to_string().contains("adjoint input"), "{e}");
    let e = m.apply_block(&[1.0; 4], &mut [0.0; 4], 0).unwrap_err();
    assert!(e.to_string().contains("block size"), "{e}");
    let e = m.apply_block(&[1.0; 4], &mut [0.0; 2], 2).unwrap_err();
    assert!(e.to_string().contains("output block"), "{e}");
    // Hints are validated too.
    let bad = Hints {
        start: Some(&[1.0]),
        ..Hints::default()
    };
    let e = spectral_norm_with(&m, &d, &bad).unwrap_err();
    assert!(e.to_string().contains("warm start"), "{e}");
    let bad = Hints {
        start: Some(&[1.0, f64::NAN]),
        ..Hints::default()
    };
    assert!(matches!(
        spectral_norm_with(&m, &d, &bad).unwrap_err(),
        Error::NonFinite { .. }
    ));
    let bad = Hints {
        random_weight: -1.0,
        ..Hints::default()
    };
    assert!(spectral_norm_with(&m, &d, &bad)
        .unwrap_err()
        .to_string()
        .contains("random_weight"));
    assert!("nonsense"
        .parse::<Method>()
        .unwrap_err()
        .to_string()
        .contains("method"));
}

#[test]
fn probabilistic_bound_beats_the_a_priori_one() {
    let a = gaussian_matrix(800, 800, 16);
    let b = dense_norm(&a, 800, 800, &opts(Method::Lanczos, 1e-6)).unwrap();
    let lambda = b.lower * b.lower;
    let apriori = kuczynski_wozniakowski_upper(lambda, b.iterations as usize, 800, 1e-6).sqrt();
    assert!(
        b.upper < apriori,
        "a-posteriori {} vs a-priori {apriori}",
        b.upper
    );
    assert!(apriori >= oracle_sigma(&a, 800, 800));
}
