//! The `lipschitz` command line as users and the acceptance checks run it:
//! the demo with no arguments, `analyze` with `--json`, exit codes and one-line errors.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lipschitz"))
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/onnx")
        .join(name)
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run lipschitz")
}

fn json_of(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON object")
}

#[test]
fn no_arguments_analyses_the_demo_network() {
    let out = run(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "demo",
        "stem",
        "Conv",
        "Gemm",
        "upper bound",
        "lower bound",
        "folded in",
    ] {
        assert!(
            text.contains(needle),
            "demo output lacks '{needle}':\n{text}"
        );
    }
}

#[test]
fn analyze_json_follows_the_contract() {
    let path = fixture("residual.onnx");
    let out = run(&[
        "analyze",
        path.to_str().unwrap(),
        "--json",
        "--rtol",
        "1e-5",
    ]);
    let v = json_of(&out);
    assert_eq!(v["input_shape"], serde_json::json!([1, 2, 6, 6]));
    // The process's peak resident memory (issue 18): at least the binary and its tables.
    let peak = v["peak_memory_bytes"].as_u64().unwrap();
    assert!(peak > 1 << 20 && peak < 1 << 32, "{peak}");
    let layers = v["layers"].as_array().unwrap();
    let names: Vec<&str> = layers.iter().map(|l| l["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["stem", "conv1", "conv2", "fc"]);
    let ops: Vec<&str> = layers.iter().map(|l| l["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["Conv", "Conv", "Conv", "MatMul"]);
    for l in layers {
        let (lo, up) = (l["lower"].as_f64().unwrap(), l["upper"].as_f64().unwrap());
        assert!(0.0 < lo && lo <= up && up <= lo * (1.0 + 1e-4), "{l}");
        assert!(l["certificate"].is_string());
        // The route in words (issue 18's plan): non-empty, and a conv's names its operator.
        let route = l["route"].as_str().unwrap();
        assert!(!route.is_empty(), "{l}");
        if l["op"] == "Conv" {
            assert!(
                route.contains("exact") || route.contains("operator"),
                "{route}"
            );
        }
    }
    assert_eq!(layers[1]["folded"], serde_json::json!(["bn1"]));
    let n = &v["network"];
    let (lo, up) = (n["lower"].as_f64().unwrap(), n["upper"].as_f64().unwrap());
    assert!(0.0 < lo && lo <= up, "{n}");
    // The reference composition of scripts/make_onnx_fixtures.py.
    let refs: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("reference.json")).unwrap()).unwrap();
    let want = refs["residual.onnx"]["network_upper"].as_f64().unwrap();
    // That composition is the product method; network.upper is the smallest method's.
    let methods = n["methods"].as_array().unwrap();
    for m in methods {
        assert!(m["name"].is_string() && m["certificate"].is_string(), "{m}");
        assert!(m["upper"].as_f64().unwrap() >= up && m["seconds"].as_f64().unwrap() >= 0.0);
    }
    let product = methods
        .iter()
        .find(|m| m["name"] == "product")
        .and_then(|m| m["upper"].as_f64())
        .unwrap();
    assert!(
        product >= want * (1.0 - 1e-9) && product <= want * (1.0 + 1e-3),
        "{product} vs {want}"
    );
    assert!(methods.iter().any(|m| m["name"] == n["method"]));
    assert!(out.stderr.is_empty() || !String::from_utf8_lossy(&out.stderr).contains("error"));
}

#[test]
fn method_flag_selects_the_network_bounds() {
    let path = fixture("mlp.onnx");
    let names = |method: &str, extra: &[&str]| -> (Vec<String>, Value) {
        let mut args = vec!["analyze", path.to_str().unwrap(), "--json", "--no-lower"];
        args.extend(["--method", method]);
        args.extend(extra);
        let v = json_of(&run(&args));
        let names = v["network"]["methods"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap().to_string())
            .collect();
        (names, v["network"].clone())
    };
    assert_eq!(names("product", &[]).0, ["product"]);
    assert_eq!(names("liplt", &[]).0, ["product", "liplt"]);
    let (sdp, n) = names("lipsdp", &[]);
    assert_eq!(sdp, ["product", "lipsdp"]);
    assert_eq!(n["method"], "lipsdp");
    assert_eq!(names("eclipse", &[]).0, ["product", "eclipse"]);
    assert_eq!(
        names("auto", &[]).0,
        ["product", "liplt", "eclipse", "lipsdp"]
    );
    // Over the size limits: not computed, and a note says why.
    let (small, n) = names("auto", &["--lipsdp-max-size", "10"]);
    assert_eq!(small, ["product", "liplt", "eclipse"]);
    assert!(
        n["notes"]
            .to_string()
            .contains("LipSDP-Neuron not computed"),
        "{n}"
    );
    let (small, n) = names("auto", &["--eclipse-max-size", "10"]);
    assert_eq!(small, ["product", "liplt", "lipsdp"]);
    assert!(
        n["notes"].to_string().contains("ECLipsE-Fast not computed"),
        "{n}"
    );
    let bad = run(&["analyze", path.to_str().unwrap(), "--method", "sdp"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("lipsdp"));
}

#[test]
fn input_shape_flag_serves_dynamic_models() {
    let path = fixture("dynamic.onnx");
    let out = run(&["analyze", path.to_str().unwrap(), "--json"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: ") && err.contains("--input-shape"),
        "{err}"
    );
    let out = run(&[
        "analyze",
        path.to_str().unwrap(),
        "--json",
        "--input-shape",
        "1,3,7,9",
    ]);
    let v = json_of(&out);
    assert_eq!(v["input_shape"], serde_json::json!([1, 3, 7, 9]));
    assert_eq!(
        v["layers"][0]["output_shape"],
        serde_json::json!([1, 4, 7, 9])
    );
}

#[test]
fn bad_input_exits_nonzero_with_one_error_line() {
    let dir = std::env::temp_dir().join(format!("lipschitz-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let empty = dir.join("empty.onnx");
    std::fs::write(&empty, b"").unwrap();
    let noise = dir.join("noise.onnx");
    std::fs::write(
        &noise,
        (0..4096u32)
            .map(|i| (i * 2654435761) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "analyze".into(),
                fixture("unsupported_op.onnx").display().to_string(),
            ],
            "Cos",
        ),
        (
            vec![
                "analyze".into(),
                fixture("nan_weight.onnx").display().to_string(),
            ],
            "non-finite",
        ),
        (
            vec![
                "analyze".into(),
                fixture("bad_channels.onnx").display().to_string(),
            ],
            "channels",
        ),
        (
            vec!["analyze".into(), "/no/such/model.onnx".into()],
            "/no/such/model.onnx",
        ),
        (vec!["analyze".into(), empty.display().to_string()], "empty"),
        (
            vec!["analyze".into(), noise.display().to_string()],
            "noise.onnx",
        ),
        (
            vec![
                "analyze".into(),
                fixture("mlp.onnx").display().to_string(),
                "--rtol".into(),
                "-1".into(),
            ],
            "rtol",
        ),
    ];
    for (args, needle) in cases {
        let out = bin().args(&args).output().unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{args:?}: {err}");
        assert!(lines[0].starts_with("error: "), "{args:?}: {err}");
        assert!(
            lines[0].contains(needle),
            "{args:?}: '{err}' lacks '{needle}'"
        );
        assert!(out.stdout.is_empty(), "{args:?} printed to stdout");
    }
    std::fs::remove_dir_all(&dir).ok();
}

fn certify_fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/certify")
        .join(name)
        .to_str()
        .unwrap()
        .to_string()
}

#[test]
fn certify_writes_json_csv_and_an_svg_plot() {
    let dir = std::env::temp_dir().join(format!("lipschitz-cli-certify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (csv, svg) = (dir.join("radii.csv"), dir.join("curve.svg"));
    let (model, x, y) = (
        certify_fixture("mlp.onnx"),
        certify_fixture("x_test.npy"),
        certify_fixture("y_test.npy"),
    );
    let out = run(&[
        "certify",
        &model,
        "--inputs",
        &x,
        "--labels",
        &y,
        "--eps",
        "0.1,0.2",
        "--local",
        "--json",
        "--csv",
        csv.to_str().unwrap(),
        "--plot",
        svg.to_str().unwrap(),
    ]);
    let v = json_of(&out);
    assert_eq!(v["n"], 360);
    assert_eq!(v["eps"], serde_json::json!([0.1, 0.2]));
    assert!(v["clean_accuracy"].as_f64().unwrap() > 0.95);
    assert_eq!(v["lipschitz"]["method"], "lipsdp");
    assert_eq!(v["lipschitz"]["certificate"], "deterministic");
    let acc = &v["certified_accuracy"];
    for k in 0..2 {
        let g = acc["global"][k].as_f64().unwrap();
        let p = acc["pairwise"][k].as_f64().unwrap();
        let l = acc["local"][k].as_f64().unwrap();
        assert!(g <= p && p <= l, "{acc}");
    }
    let samples = v["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 360);
    for key in [
        "label",
        "predicted",
        "margin",
        "radius_global",
        "radius_pairwise",
        "radius_local",
    ] {
        assert!(samples[0].get(key).is_some(), "no {key}");
    }
    let rows = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(rows.lines().count(), 361);
    assert!(rows.starts_with("index,label,predicted,margin,radius_global"));
    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(plot.starts_with("<svg") && plot.contains("pairwise") && plot.contains("<polyline"));

    // The table, from an .npz holding both arrays.
    let out = run(&[
        "certify",
        &model,
        "--inputs",
        &certify_fixture("subset.npz"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("40 samples, 10 classes"), "{text}");
    assert!(
        text.contains("0.1412") && text.contains("pairwise"),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn certify_refuses_bad_arguments_in_one_line() {
    let (model, x) = (certify_fixture("mlp.onnx"), certify_fixture("x_test.npy"));
    for (args, expected) in [
        (vec!["--inputs", x.as_str()], "pass --labels"),
        (
            vec!["--inputs", x.as_str(), "--labels", x.as_str()],
            "expected (360,)",
        ),
        (
            vec![
                "--inputs",
                x.as_str(),
                "--labels",
                &certify_fixture("y_test.npy"),
                "--eps",
                "-1",
            ],
            "eps",
        ),
    ] {
        let mut all = vec!["certify", model.as_str(), "--method", "product"];
        all.extend(args);
        let out = run(&all);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.starts_with("error: ") && err.contains(expected),
            "{err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
}

#[test]
fn explain_prints_each_layers_route() {
    let path = fixture("residual.onnx");
    let out = run(&["analyze", path.to_str().unwrap(), "--no-lower", "--explain"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches("route: ").count(), 4, "{text}");
    let plain = run(&["analyze", path.to_str().unwrap(), "--no-lower"]);
    assert!(!String::from_utf8_lossy(&plain.stdout).contains("route: "));
}
