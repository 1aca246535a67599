//! Issue 14's constructs: models of every kind exported by PyTorch with both exporters
//! (scripts/make_coverage_fixtures.py, outputs from onnxruntime) load, compute what
//! onnxruntime computes, have adjoint and finite-difference-exact Jacobians, and get finite
//! certified bounds above independently sampled difference quotients; models that are not
//! globally Lipschitz are refused with every offending node named. The new operations are
//! checked against explicit matrices and their proven constants.

use lipschitz::network::ops::{AxisMap, Extremum, Gather, Interpolate, Normalize, Reshape, Sort};
use lipschitz::network::{
    analyze, AnalysisOptions, Evaluator, Network, NetworkBuilder, NetworkMethod,
};
use lipschitz::onnx::{load_onnx, ImportOptions};
use lipschitz::{dense_norm, Options};
use rand::{Rng, SeedableRng};
use serde_json::Value;
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/coverage")
}

fn reference() -> serde_json::Map<String, Value> {
    let text = std::fs::read_to_string(dir().join("reference.json")).unwrap();
    serde_json::from_str::<Value>(&text)
        .unwrap()
        .as_object()
        .unwrap()
        .clone()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn load(name: &str) -> Network {
    load_onnx(
        &dir().join(format!("{name}.onnx")),
        &ImportOptions::default(),
    )
    .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn loadable() -> Vec<(String, Value)> {
    reference()
        .into_iter()
        .filter(|(_, v)| v["expect"] == "load")
        .collect()
}

/// `max ‖f(x) − f(y)‖/‖x − y‖` over random nearby and distant pairs: a lower bound on the
/// Lipschitz constant computed without the analysis.
fn sampled_lower(eval: &Evaluator<'_>, seed: u64) -> f64 {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n = eval.input_len();
    let mut best = 0.0f64;
    for t in 0..60 {
        let x: Vec<f64> = (0..n).map(|_| rng.random_range(-2.0..2.0)).collect();
        let scale = [1.0, 0.1, 1e-3][t % 3];
        let y: Vec<f64> = x
            .iter()
            .map(|v| v + scale * rng.random_range(-1.0..1.0))
            .collect();
        let (fx, fy) = (
            eval.output(&eval.forward(&x)),
            eval.output(&eval.forward(&y)),
        );
        let num: f64 = fx.iter().zip(&fy).map(|(a, b)| (a - b) * (a - b)).sum();
        let den: f64 = x.iter().zip(&y).map(|(a, b)| (a - b) * (a - b)).sum();
        best = best.max((num / den).sqrt());
    }
    best
}

#[test]
fn every_construct_loads_and_computes_what_onnxruntime_computes() {
    let all = loadable();
    assert_eq!(
        all.len(),
        15,
        "7 models × 2 exporters, adaptive pooling by dynamo only"
    );
    for (name, r) in all {
        let net = load(&name);
        let eval = Evaluator::new(&net, true, 1 << 30).unwrap();
        let (x, want) = (floats(&r["x"]), floats(&r["y"]));
        let got = eval.output(&eval.forward(&x));
        assert_eq!(got.len(), want.len(), "{name}");
        let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= 2e-5 * scale,
                "{name} output {i}: ours {g}, onnxruntime {w}"
            );
        }
    }
}

#[test]
fn jacobians_are_adjoint_and_match_finite_differences() {
    for (name, r) in loadable() {
        let net = load(&name);
        let eval = Evaluator::new(&net, true, 1 << 30).unwrap();
        let x = floats(&r["x"]);
        let (n, m) = (eval.input_len(), eval.output_len());
        let v: Vec<f64> = (0..n).map(|i| ((i * 31) % 11) as f64 / 5.0 - 1.0).collect();
        let u: Vec<f64> = (0..m).map(|i| ((i * 17) % 7) as f64 / 3.0 - 1.0).collect();
        let trace = eval.forward(&x);
        let (jv, jtu) = (eval.jvp(&trace, &v), eval.vjp(&trace, &u));
        let lhs: f64 = jv.iter().zip(&u).map(|(a, b)| a * b).sum();
        let rhs: f64 = v.iter().zip(&jtu).map(|(a, b)| a * b).sum();
        assert!(
            (lhs - rhs).abs() <= 1e-9 * lhs.abs().max(1.0),
            "{name}: <Jv,u> = {lhs}, <v,Jᵀu> = {rhs}"
        );
        // Sorts and maxima are piecewise linear: a tiny step keeps their pieces.
        let h = 1e-7;
        let f = |t: f64| {
            let xt: Vec<f64> = x.iter().zip(&v).map(|(a, b)| a + t * b).collect();
            eval.output(&eval.forward(&xt))
        };
        let (fp, fm) = (f(h), f(-h));
        let scale = jv.iter().fold(1.0f64, |a, b| a.max(b.abs()));
        for i in 0..m {
            let fd = (fp[i] - fm[i]) / (2.0 * h);
            assert!(
                (fd - jv[i]).abs() <= 1e-4 * scale,
                "{name} output {i}: finite difference {fd}, jvp {}",
                jv[i]
            );
        }
    }
}

#[test]
fn bounds_are_finite_and_above_sampled_difference_quotients() {
    let opts = AnalysisOptions {
        layer: Options::with_rtol(1e-6),
        ..AnalysisOptions::default()
    };
    for (name, _) in loadable() {
        let net = load(&name);
        let a = analyze(&net, &opts).unwrap_or_else(|e| panic!("{name}: {e}"));
        let upper = a.network.upper;
        assert!(upper.is_finite() && upper > 0.0, "{name}: {upper}");
        for m in &a.network.methods {
            if let Some(lower) = a.network.lower {
                assert!(
                    m.upper >= lower,
                    "{name}: {:?} {} < lower {lower}",
                    m.name,
                    m.upper
                );
            }
        }
        let eval = Evaluator::new(&net, true, 1 << 30).unwrap();
        let sampled = sampled_lower(&eval, 7);
        assert!(
            upper >= sampled,
            "{name}: upper {upper} below a sampled quotient {sampled}"
        );
    }
}

/// The 1-Lipschitz families: orthogonal layers with MaxMin, and GroupSort convs, get the
/// product of their layers' norms (the activations contribute exactly 1), and the orthogonal
/// MLP a bound of 1 up to its weights' rounding, with a lower bound close to it.
#[test]
fn one_lipschitz_networks_get_the_product_of_their_layers() {
    let opts = AnalysisOptions::default();
    for exporter in ["ts", "dynamo"] {
        let net = load(&format!("maxmin_mlp_{exporter}"));
        let a = analyze(&net, &opts).unwrap();
        assert!(
            a.network.upper <= 1.0 + 1e-5,
            "{exporter}: {}",
            a.network.upper
        );
        assert!(a.network.lower.unwrap() >= 0.98, "{:?}", a.network.lower);
        for model in ["groupsort_cnn", "maxmin_mlp"] {
            let net = load(&format!("{model}_{exporter}"));
            let a = analyze(&net, &opts).unwrap();
            let layers = a.layers.iter().fold(1.0, |p, l| p * l.upper);
            assert!(
                a.network.upper <= layers * (1.0 + 1e-12),
                "{model}_{exporter}: {} vs layers {layers}",
                a.network.upper
            );
            let sorts = net
                .nodes()
                .iter()
                .filter(|n| n.op.op_type() == "Sort")
                .count();
            assert_eq!(sorts, 2, "{model}_{exporter}: each activation is one sort");
        }
        // MaxMin written as ReLUs gives the SDP methods their per-unit constraints: on the
        // orthogonal MLP LipSDP-Neuron ends at or below the product, and on AOL + SLL (where
        // the SLL block's layers have norms far above 1) well below it.
        let net = load(&format!("maxmin_mlp_{exporter}"));
        let a = analyze(&net, &opts).unwrap();
        let method = |name: NetworkMethod| {
            a.network
                .methods
                .iter()
                .find(|m| m.name == name)
                .map(|m| m.upper)
        };
        let product = method(NetworkMethod::Product).unwrap();
        assert!(
            method(NetworkMethod::LipSdp).unwrap() <= product,
            "{exporter}"
        );
        let net = load(&format!("aol_sll_{exporter}"));
        let a = analyze(&net, &opts).unwrap();
        let product = a.network.methods[0].upper;
        assert!(
            a.network.upper < 0.5 * product,
            "{exporter}: {} vs {product}",
            a.network.upper
        );
        assert!(
            a.network.upper < 1.0,
            "AOL and SLL layers are 1-Lipschitz: {}",
            a.network.upper
        );
        // GroupSort-4 as an odd–even transposition network of ReLUs: LipSDP-Neuron well
        // below the product (0.558 vs 0.895).
        let net = load(&format!("groupsort_cnn_{exporter}"));
        let a = analyze(&net, &opts).unwrap();
        let product = a.network.methods[0].upper;
        assert!(
            a.network.upper < 0.7 * product,
            "{exporter}: {} vs {product}",
            a.network.upper
        );
        assert!(a.network.upper >= a.network.lower.unwrap());
    }
}

#[test]
fn models_that_are_not_globally_lipschitz_are_refused_naming_every_node() {
    for (name, r) in reference() {
        if r["expect"] != "refuse" {
            continue;
        }
        let err = load_onnx(
            &dir().join(format!("{name}.onnx")),
            &ImportOptions::default(),
        )
        .expect_err(&name)
        .to_string();
        assert!(err.contains("not globally Lipschitz"), "{name}: {err}");
        assert!(
            err.contains("self-attention") && err.contains("gating"),
            "{err}"
        );
        let names: Vec<&str> = r["must_name"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(
            names.len(),
            4,
            "{name}: SE gate, two attention products, exp"
        );
        for n in names {
            assert!(
                err.contains(&format!("'{n}'")),
                "{name}: {n} missing in {err}"
            );
        }
        assert!(err.contains("4 node(s)"), "{err}");
    }
}

/// The explicit matrix of a linear network (columns are images of unit vectors).
fn explicit(net: &Network) -> (Vec<f32>, usize, usize) {
    let eval = Evaluator::new(net, true, 1 << 30).unwrap();
    let (n, m) = (eval.input_len(), eval.output_len());
    let zero = eval.output(&eval.forward(&vec![0.0; n]));
    let mut a = vec![0f32; m * n];
    for j in 0..n {
        let mut e = vec![0.0; n];
        e[j] = 1.0;
        let y = eval.output(&eval.forward(&e));
        for i in 0..m {
            a[i * n + j] = (y[i] - zero[i]) as f32;
        }
    }
    (a, m, n)
}

/// Selections: the constant `√(most reads of one input)` is the exact norm of the matrix
/// (a repetition `Tile` of 3 has norm √3).
#[test]
fn selections_have_their_exact_norm() {
    let mut b = NetworkBuilder::new("tile", &[1, 2, 3]).unwrap();
    // Output (1, 2, 6): each input read twice, element 0 four times.
    let mut index: Vec<u32> = (0..12).map(|o| (o / 6 * 3 + o % 3) as u32).collect();
    index[4] = 0;
    index[5] = 0;
    let g = Gather {
        kind: "Tile",
        index,
        fill: 0.0,
        shape: vec![1, 2, 6],
    };
    b.then("Tile", g.clone()).unwrap();
    let net = b.finish();
    let (a, m, n) = explicit(&net);
    let sigma = dense_norm(&a, m, n, &Options::with_rtol(1e-9)).unwrap();
    let constant = lipschitz::network::ops::Operation::lipschitz(&g, &[&[1, 2, 3]]).unwrap();
    assert!((constant - 2.0).abs() < 1e-15, "{constant}");
    assert!(sigma.lower <= constant && constant <= sigma.upper * (1.0 + 1e-9));
}

/// Separable interpolation: Schur's bound contains the explicit operator's norm and is exact
/// for bilinear upsampling by 2 (half-pixel taps 1/4, 3/4).
#[test]
fn interpolation_is_bounded_by_schur_exactly_for_upsampling() {
    let bilinear = |n: usize| {
        let taps = (0..2 * n)
            .map(|o| {
                let c = ((o as f64 + 0.5) / 2.0 - 0.5).max(0.0);
                let i0 = c.floor() as usize;
                let t = c - i0 as f64;
                let i1 = (i0 + 1).min(n - 1);
                if i1 == i0 {
                    vec![(i0, 1.0)]
                } else {
                    vec![(i0, 1.0 - t), (i1, t)]
                }
            })
            .collect();
        AxisMap { input: n, taps }
    };
    let op = Interpolate {
        mode: "linear",
        maps: vec![None, None, Some(bilinear(3)), Some(bilinear(4))],
    };
    let constant = lipschitz::network::ops::Operation::lipschitz(&op, &[&[1, 1, 3, 4]]).unwrap();
    let mut b = NetworkBuilder::new("resize", &[1, 1, 3, 4]).unwrap();
    b.then("Resize", op).unwrap();
    let net = b.finish();
    let (a, m, n) = explicit(&net);
    assert_eq!((m, n), (48, 12));
    let sigma = dense_norm(&a, m, n, &Options::with_rtol(1e-9)).unwrap();
    assert!(constant >= sigma.lower, "{constant} < {}", sigma.lower);
    assert!(
        (constant - 2.0).abs() < 1e-6 && (sigma.upper - 2.0).abs() < 1e-5,
        "Schur {constant}, norm {sigma:?}"
    );
}

/// Sorting and maxima: Jacobians are selections (checked against finite differences), and
/// sampled quotients never exceed the constants (1 for a sort, `√(ΣL²)` for a max).
#[test]
fn sorts_and_maxima_are_one_lipschitz() {
    let mut b = NetworkBuilder::new("sort", &[1, 6, 4]).unwrap();
    let x = b.current();
    b.then(
        "Sort",
        Sort {
            axis: 1,
            descending: true,
        },
    )
    .unwrap();
    let sorted = b.current();
    b.node("max", "Max", Extremum { max: true }, &[x, sorted])
        .unwrap();
    b.then("Reshape", Reshape(vec![1, 24])).unwrap();
    let net = b.finish();
    let eval = Evaluator::new(&net, true, 1 << 20).unwrap();
    let x: Vec<f64> = (0..24)
        .map(|i| ((i * 7919) % 23) as f64 / 7.0 - 1.5)
        .collect();
    let y = eval.output(&eval.forward(&x));
    // Column 0 of (6, 4) sorted descending, maxed with itself unsorted.
    let mut col: Vec<f64> = (0..6).map(|r| x[r * 4]).collect();
    col.sort_by(|a, b| b.total_cmp(a));
    for r in 0..6 {
        assert_eq!(y[r * 4], x[r * 4].max(col[r]));
    }
    let a = analyze(&net, &AnalysisOptions::default()).unwrap();
    // √(1² + 1²) for the max of x and sort(x).
    assert!(
        (a.network.upper - 2f64.sqrt()).abs() < 1e-12,
        "{}",
        a.network.upper
    );
    assert!(sampled_lower(&eval, 3) <= a.network.upper);
}

/// Normalisation layers: the constant `max|γ|/√ε` is attained at a constant input, where the
/// sampled Jacobian norm (power iteration on JᵀJ) reaches it; elsewhere it is smaller.
#[test]
fn normalisation_constant_is_attained_where_the_input_is_constant() {
    use lipschitz::network::ops::Broadcast;
    let eps = 1e-3;
    let gamma = vec![0.5, -2.0, 1.0, 1.5, 0.25, 1.0, -1.0, 0.75];
    let op = Normalize {
        kind: "LayerNormalization",
        group: 8,
        eps,
        scale: Broadcast {
            values: gamma.clone(),
            inner: 1,
        },
        shift: Broadcast::scalar(0.1),
    };
    let constant = lipschitz::network::ops::Operation::lipschitz(&op, &[&[1, 2, 8]]).unwrap();
    let want = 2.0 / eps.sqrt();
    assert!(
        constant >= want && constant <= want * (1.0 + 1e-12),
        "{constant}"
    );
    let mut b = NetworkBuilder::new("ln", &[1, 2, 8]).unwrap();
    b.then("LayerNormalization", op).unwrap();
    let net = b.finish();
    let eval = Evaluator::new(&net, true, 1 << 20).unwrap();
    let jacobian_norm = |x: &[f64]| {
        let trace = eval.forward(x);
        let mut v: Vec<f64> = (0..16).map(|i| ((i * 13) % 7) as f64 - 3.0).collect();
        let mut s = 0.0;
        for _ in 0..200 {
            let w = eval.vjp(&trace, &eval.jvp(&trace, &v));
            s = w.iter().map(|a| a * a).sum::<f64>().sqrt();
            v = w.iter().map(|a| a / s).collect();
        }
        s.sqrt()
    };
    let at_mean = jacobian_norm(&[0.3; 16]);
    assert!(
        at_mean <= constant && at_mean >= 0.9 * want,
        "{at_mean} vs {want}"
    );
    let spread: Vec<f64> = (0..16).map(|i| i as f64 - 7.5).collect();
    assert!(jacobian_norm(&spread) < 0.05 * want);
}

/// Layers are reported by their PyTorch module (`conv1`, `fc`), from the weight names both
/// exporters keep, beside the ONNX node name.
#[test]
fn layers_are_named_by_their_module() {
    let opts = AnalysisOptions {
        lower: None,
        ..AnalysisOptions::default()
    };
    for exporter in ["ts", "dynamo"] {
        let a = analyze(&load(&format!("groupsort_cnn_{exporter}")), &opts).unwrap();
        let modules: Vec<Option<&str>> = a.layers.iter().map(|l| l.module.as_deref()).collect();
        assert_eq!(
            modules,
            [Some("conv1"), Some("conv2"), Some("fc")],
            "{exporter}"
        );
    }
}
