//! Whole networks from ONNX: import, forward evaluation, per-layer intervals, the composed
//! bound and the lower bound, against reference values computed independently by
//! scripts/make_onnx_fixtures.py (NumPy convolution, explicit matrices, NumPy SVD).

mod common;

use lipschitz::conv::{conv2d_norm, ConvMethod};
use lipschitz::network::ops::{Affine, Conv};
use lipschitz::network::{
    analyze, empirical_lower_bound, Analysis, AnalysisOptions, Evaluator, LowerOptions, Network,
    NetworkMethod,
};
use lipschitz::onnx::{load_onnx, load_onnx_bytes, ImportOptions};
use lipschitz::{Error, Options};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/onnx")
        .join(name)
}

fn reference() -> Value {
    let text = std::fs::read_to_string(fixture("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn load(name: &str) -> Network {
    load_onnx(&fixture(name), &ImportOptions::default()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn analyse(net: &Network, rtol: f64) -> Analysis {
    let opts = AnalysisOptions {
        layer: Options::with_rtol(rtol),
        ..AnalysisOptions::default()
    };
    analyze(net, &opts).unwrap()
}

/// The network bound of the product (AutoLip) method.
fn product_upper(a: &Analysis) -> f64 {
    a.network
        .methods
        .iter()
        .find(|m| m.name == NetworkMethod::Product)
        .expect("the product is always computed")
        .upper
}

fn load_err(name: &str) -> String {
    match load_onnx(&fixture(name), &ImportOptions::default()) {
        Ok(_) => panic!("{name} loaded but should have been refused"),
        Err(e) => e.to_string(),
    }
}

const MODELS: [&str; 5] = [
    "mlp.onnx",
    "cnn_bn.onnx",
    "residual.onnx",
    "circular.onnx",
    "fire.onnx",
];

#[test]
fn forward_pass_matches_numpy() {
    let refs = reference();
    for name in MODELS {
        let net = load(name);
        let eval = Evaluator::new(&net, true, 1 << 30).unwrap();
        let x = floats(&refs[name]["x"]);
        let want = floats(&refs[name]["y"]);
        let got = eval.output(&eval.forward(&x));
        assert_eq!(got.len(), want.len(), "{name}");
        let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-9 * scale.max(1.0),
                "{name} output {i}: ours {g}, numpy {w}"
            );
        }
    }
}

#[test]
fn jacobian_products_are_adjoint_and_match_finite_differences() {
    for name in MODELS {
        let net = load(name);
        let eval = Evaluator::new(&net, true, 1 << 30).unwrap();
        let n = eval.input_len();
        let m = eval.output_len();
        let x: Vec<f64> = (0..n)
            .map(|i| ((i * 7919) % 13) as f64 / 6.0 - 1.0)
            .collect();
        let v: Vec<f64> = (0..n).map(|i| ((i * 31) % 11) as f64 / 5.0 - 1.0).collect();
        let u: Vec<f64> = (0..m).map(|i| ((i * 17) % 7) as f64 / 3.0 - 1.0).collect();
        let trace = eval.forward(&x);
        let jv = eval.jvp(&trace, &v);
        let jtu = eval.vjp(&trace, &u);
        let lhs: f64 = jv.iter().zip(&u).map(|(a, b)| a * b).sum();
        let rhs: f64 = v.iter().zip(&jtu).map(|(a, b)| a * b).sum();
        assert!(
            (lhs - rhs).abs() <= 1e-10 * lhs.abs().max(1.0),
            "{name}: <Jv,u> = {lhs}, <v,Jᵀu> = {rhs}"
        );
        // Central differences (activation patterns do not change for a tiny step).
        let h = 1e-6;
        let f = |t: f64| {
            let xt: Vec<f64> = x.iter().zip(&v).map(|(a, b)| a + t * b).collect();
            eval.output(&eval.forward(&xt))
        };
        let (fp, fm) = (f(h), f(-h));
        for i in 0..m {
            let fd = (fp[i] - fm[i]) / (2.0 * h);
            assert!(
                (fd - jv[i]).abs() <= 1e-4 * (1.0 + jv[i].abs()),
                "{name} output {i}: finite difference {fd}, jvp {}",
                jv[i]
            );
        }
    }
}

#[test]
fn layer_intervals_contain_the_reference_norms() {
    let refs = reference();
    for name in MODELS {
        let net = load(name);
        let report = analyse(&net, 1e-6);
        let want = floats(&refs[name]["layers"]);
        assert_eq!(report.layers.len(), want.len(), "{name}: layer count");
        for (l, &s) in report.layers.iter().zip(&want) {
            assert!(
                l.lower <= s * (1.0 + 1e-9) && s <= l.upper * (1.0 + 1e-9),
                "{name} {}: [{}, {}] misses the reference {s}",
                l.name,
                l.lower,
                l.upper
            );
            assert!(
                l.upper - l.lower <= 2e-6 * s,
                "{name} {}: width {} at rtol 1e-6",
                l.name,
                l.upper - l.lower
            );
        }
    }
}

#[test]
fn network_bounds_compose_like_the_reference() {
    let refs = reference();
    for name in MODELS {
        let net = load(name);
        let report = analyse(&net, 1e-6);
        let want = refs[name]["network_upper"].as_f64().unwrap();
        let n = &report.network;
        // The composition (AutoLip) is the product method; LipLT may report less beside it.
        let product = product_upper(&report);
        assert!(
            product >= want * (1.0 - 1e-9) && product <= want * (1.0 + 1e-4),
            "{name}: network upper {} vs reference composition {want}",
            product
        );
        assert!(n.upper <= product, "{name}");
        let lower = n.lower.unwrap();
        assert!(
            lower > 0.0 && lower <= n.upper,
            "{name}: lower {lower} upper {}",
            n.upper
        );
        assert!(
            n.naive_product >= n.upper * (1.0 - 1e-9),
            "{name}: naive {} < ours {}",
            n.naive_product,
            n.upper
        );
    }
}

#[test]
fn batch_norm_is_folded_into_the_conv_it_follows() {
    let report = analyse(&load("cnn_bn.onnx"), 1e-4);
    assert_eq!(report.layers[0].folded, vec!["bn1".to_string()]);
    assert_eq!(report.layers[1].folded, vec!["bn2".to_string()]);
    assert!(report.layers[2].folded.is_empty());
    // Folding is tighter than bounding the conv and the BatchNorm separately.
    let net = load("cnn_bn.onnx");
    let (conv, weight) = match net.nodes()[0].op.downcast_ref::<Conv>() {
        Some(c) => (c.conv.clone(), c.weight.clone()),
        None => panic!("first node is {:?}", net.nodes()[0].op),
    };
    let alone = conv2d_norm(&weight, &conv, ConvMethod::Auto, &Options::with_rtol(1e-6)).unwrap();
    let bn = match net.nodes()[1].op.downcast_ref::<Affine>() {
        Some(a) => a.scale.max_abs(),
        None => panic!("second node is {:?}", net.nodes()[1].op),
    };
    assert!(
        report.layers[0].upper < 0.99 * alone.bound.lower * bn,
        "folded {} vs separate {}·{bn}",
        report.layers[0].upper,
        alone.bound.lower
    );
}

#[test]
fn pads_merge_into_convs_and_wrap_pads_make_them_circular() {
    let report = analyse(&load("circular.onnx"), 1e-6);
    assert!(
        report.layers[0].circular,
        "Pad(wrap) + Conv is one circular layer"
    );
    assert_eq!(report.layers[0].input_shape, vec![1, 3, 6, 5]);
    assert_eq!(report.layers[0].certificate.label(), "exact");
    assert!(!report.layers[1].circular);
    assert_eq!(report.layers[1].output_shape, vec![1, 4, 7, 6]);
}

#[test]
fn linear_runs_are_bounded_as_one_operator() {
    let refs = &reference()["linear_run.onnx"];
    let exact = refs["network_exact"].as_f64().unwrap();
    let product = refs["network_product"].as_f64().unwrap();
    let report = analyse(&load("linear_run.onnx"), 1e-6);
    let n = &report.network;
    assert!(
        exact <= n.upper * (1.0 + 1e-9),
        "upper {} below exact {exact}",
        n.upper
    );
    assert!(
        n.upper <= exact * (1.0 + 1e-5),
        "merged bound {} not tight (exact {exact}, product {product})",
        n.upper
    );
    assert!(
        n.upper < 0.99 * product,
        "no gain over the product {product}"
    );
    assert_eq!(n.merged_runs.len(), 1);
    assert_eq!(n.merged_runs[0].nodes, ["project", "bn", "expand", "avg"]);
    // The network is linear: the lower bound reaches the exact norm.
    let lower = n.lower.unwrap();
    assert!(
        lower <= exact * (1.0 + 1e-9) && lower >= exact * (1.0 - 1e-3),
        "lower {lower} vs exact {exact}"
    );
}

#[test]
fn lower_bound_is_deterministic_for_a_seed() {
    let net = load("cnn_bn.onnx");
    let opts = LowerOptions::default();
    let a = empirical_lower_bound(&net, &opts).unwrap();
    let b = empirical_lower_bound(&net, &opts).unwrap();
    assert_eq!(a.value, b.value);
    let c = empirical_lower_bound(&net, &LowerOptions { seed: 7, ..opts }).unwrap();
    assert!(c.value > 0.0);
}

#[test]
fn dynamic_shapes_need_an_input_shape() {
    let e = load_err("dynamic.onnx");
    assert!(e.contains("--input-shape") && e.contains("axis 2"), "{e}");
    let refs = &reference()["dynamic.onnx"];
    let shape: Vec<i64> = floats(&refs["input_shape"])
        .iter()
        .map(|&v| v as i64)
        .collect();
    let opts = ImportOptions {
        input_shape: Some(shape),
        ..ImportOptions::default()
    };
    let net = load_onnx(&fixture("dynamic.onnx"), &opts).unwrap();
    let report = analyse(&net, 1e-6);
    let s = floats(&refs["layers"])[0];
    assert!(report.layers[0].lower <= s * (1.0 + 1e-9) && s <= report.layers[0].upper);
}

#[test]
fn bad_models_are_refused_with_a_clear_message() {
    let cases = [
        (
            "unsupported_op.onnx",
            vec!["'Cos'", "cosine", "not supported"],
        ),
        ("missing_initializer.onnx", vec!["conv.weight", "missing"]),
        ("bad_channels.onnx", vec!["conv", "5", "3"]),
        ("nan_weight.onnx", vec!["fc.weight", "non-finite"]),
        ("escape_external.onnx", vec!["leaves the model's folder"]),
        ("huge_tensor.onnx", vec!["fc.weight", "limit"]),
        ("no_graph.onnx", vec!["no graph"]),
        (
            "does_not_exist.onnx",
            vec!["does_not_exist.onnx", "cannot read"],
        ),
    ];
    for (name, needles) in cases {
        let e = load_err(name);
        for n in needles {
            assert!(e.contains(n), "{name}: message '{e}' lacks '{n}'");
        }
    }
}

#[test]
fn external_data_is_required_and_found_beside_the_model() {
    let bytes = std::fs::read(fixture("residual.onnx")).unwrap();
    let e = load_onnx_bytes(&bytes, "residual.onnx", None, &ImportOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("external"), "{e}");
    // Copy the model without its data file: a clear error naming the file.
    let dir = std::env::temp_dir().join(format!("lipschitz-ext-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("residual.onnx"), &bytes).unwrap();
    let e = load_onnx(&dir.join("residual.onnx"), &ImportOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("residual.onnx.data"), "{e}");
    // A truncated data file.
    let data = std::fs::read(fixture("residual.onnx.data")).unwrap();
    std::fs::write(dir.join("residual.onnx.data"), &data[..data.len() / 2]).unwrap();
    let e = load_onnx(&dir.join("residual.onnx"), &ImportOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("beyond the end"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn truncated_and_random_bytes_give_errors_not_panics() {
    let bytes = std::fs::read(fixture("cnn_bn.onnx")).unwrap();
    let opts = ImportOptions::default();
    assert!(load_onnx_bytes(&[], "empty", None, &opts)
        .unwrap_err()
        .to_string()
        .contains("empty"));
    for cut in (1..bytes.len()).step_by(97) {
        let r = load_onnx_bytes(&bytes[..cut], "cut", None, &opts);
        assert!(r.is_err(), "a model cut at {cut} bytes loaded");
    }
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for len in [1usize, 7, 100, 5000] {
        let noise: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let r = load_onnx_bytes(&noise, "noise", None, &opts);
        assert!(matches!(
            r,
            Err(Error::Model { .. }) | Err(Error::TooLarge { .. })
        ));
    }
}

#[test]
fn memory_limit_refuses_large_weights_before_reading_them() {
    let opts = ImportOptions {
        memory_limit: 1000,
        ..ImportOptions::default()
    };
    let e = load_onnx(&fixture("cnn_bn.onnx"), &opts).unwrap_err();
    assert!(matches!(e, Error::TooLarge { .. }), "{e}");
}

/// HardSwish (added as the proof of "one ops file and one importer entry"): imported from
/// ONNX, evaluated like its formula, and bounded with its constant 3/2 between the layers.
#[test]
fn hard_swish_is_imported_evaluated_and_bounded() {
    use common::onnx::*;
    let w1: Vec<f32> = (0..16).map(|i| ((i * 5 % 7) as f32 - 3.0) / 2.0).collect();
    let w2: Vec<f32> = (0..12).map(|i| ((i * 3 % 5) as f32 - 2.0) / 3.0).collect();
    let bytes = model(
        &[1, 4],
        vec![
            gemm("x", "h", "w1"),
            node("HardSwish", &["h"], "a", vec![]),
            gemm("a", "y", "w2"),
        ],
        vec![
            f32_tensor("w1", &[4, 4], &w1),
            f32_tensor("w2", &[3, 4], &w2),
        ],
    );
    let net = load_onnx_bytes(&bytes, "hardswish", None, &ImportOptions::default()).unwrap();
    assert_eq!(net.nodes()[1].kind, "HardSwish");
    // Forward: y = W2·hardswish(W1·x), in f64.
    let eval = Evaluator::new(&net, true, 1 << 30).unwrap();
    let x = [2.5, -1.0, 0.5, -3.5];
    let y = eval.output(&eval.forward(&x));
    let hs = |v: f64| v * (v + 3.0).clamp(0.0, 6.0) / 6.0;
    let h: Vec<f64> = (0..4)
        .map(|r| hs((0..4).map(|c| w1[r * 4 + c] as f64 * x[c]).sum()))
        .collect();
    for (r, &yr) in y.iter().enumerate() {
        let want: f64 = (0..4).map(|c| w2[r * 4 + c] as f64 * h[c]).sum();
        assert!(
            (yr - want).abs() <= 1e-12 * (1.0 + want.abs()),
            "{yr} vs {want}"
        );
    }
    // The composition: ‖W2‖·(3/2)·‖W1‖, rounded up; the lower bound is attained below it.
    let a = analyse(&net, 1e-9);
    let product = a.layers[0].upper * 1.5 * a.layers[1].upper;
    let upper = product_upper(&a);
    assert!(
        upper >= product && upper <= product * (1.0 + 1e-12),
        "{upper} vs {product}"
    );
    assert!(a.network.lower.unwrap() <= upper);
}

/// `Log(Sigmoid(x))` (TorchScript's `logsigmoid`) is LogSigmoid, `−softplus(−x)`, with
/// constant 1; a Log of anything else is refused as not globally Lipschitz.
#[test]
fn log_of_a_sigmoid_is_log_sigmoid_and_other_logs_are_refused() {
    use common::onnx::*;
    let w1: Vec<f32> = (0..12).map(|i| ((i * 5 % 7) as f32 - 3.0) / 2.0).collect();
    let w2: Vec<f32> = (0..6).map(|i| ((i * 3 % 5) as f32 - 2.0) / 3.0).collect();
    let build = |inner: &str| {
        model(
            &[1, 4],
            vec![
                gemm("x", "h", "w1"),
                node(inner, &["h"], "s", vec![]),
                node("Log", &["s"], "l", vec![]),
                gemm("l", "y", "w2"),
            ],
            vec![
                f32_tensor("w1", &[3, 4], &w1),
                f32_tensor("w2", &[2, 3], &w2),
            ],
        )
    };
    let net = load_onnx_bytes(
        &build("Sigmoid"),
        "logsigmoid",
        None,
        &ImportOptions::default(),
    )
    .unwrap();
    let eval = Evaluator::new(&net, true, 1 << 30).unwrap();
    let x = [2.5, -1.0, 0.5, -3.5];
    let y = eval.output(&eval.forward(&x));
    let h: Vec<f64> = (0..3)
        .map(|r| (0..4).map(|c| w1[r * 4 + c] as f64 * x[c]).sum())
        .collect();
    let l: Vec<f64> = h.iter().map(|&v| (1.0 / (1.0 + (-v).exp())).ln()).collect();
    for (r, &yr) in y.iter().enumerate() {
        let want: f64 = (0..3).map(|c| w2[r * 3 + c] as f64 * l[c]).sum();
        assert!(
            (yr - want).abs() <= 1e-12 * (1.0 + want.abs()),
            "{yr} vs {want}"
        );
    }
    let a = analyse(&net, 1e-9);
    let product = a.layers[0].upper * a.layers[1].upper;
    assert!(product_upper(&a) <= product * (1.0 + 1e-12));
    let err = load_onnx_bytes(&build("Relu"), "log", None, &ImportOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not globally Lipschitz") && err.contains("(Log)"),
        "{err}"
    );
}
