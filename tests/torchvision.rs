//! Graphs exported from torchvision by PyTorch 2.15's default (dynamo) exporter, committed
//! without their weights (scripts/export_torchvision.py; the `.onnx.data` files are 5–47 MB).
//! The test writes a weight file of the right size beside each graph, filled with small
//! seeded values, so the real exporter's layout is exercised: opset 20, external data,
//! BatchNorm fused into Conv, input `x`, ReduceMean with axes as an input, ReLU6 as Clip with
//! min/max inputs, Concat (SqueezeNet), depthwise convs (MobileNetV2), overlapping MaxPool.

use lipschitz::network::{analyze, AnalysisOptions};
use lipschitz::onnx::proto::ModelProto;
use lipschitz::onnx::{load_onnx, ImportOptions};
use lipschitz::Options;
use prost::Message;
use std::path::{Path, PathBuf};

/// Copies the graph to a fresh folder and writes its external data file.
fn with_weights(name: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/torchvision")
        .join(name);
    let bytes = std::fs::read(&src).unwrap();
    let model = ModelProto::decode(bytes.as_slice()).unwrap();
    let mut end = 0usize;
    let mut location = String::new();
    for t in &model.graph.as_ref().unwrap().initializer {
        let get = |k: &str| {
            t.external_data
                .iter()
                .find(|e| e.key == k)
                .map(|e| e.value.clone())
        };
        if let Some(loc) = get("location") {
            location = loc;
            let off: usize = get("offset").unwrap_or_default().parse().unwrap_or(0);
            let len: usize = get("length").unwrap().parse().unwrap();
            end = end.max(off + len);
        }
    }
    let dir = std::env::temp_dir().join(format!("lipschitz-tv-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), &bytes).unwrap();
    let mut state = 0x9e37_79b9u32;
    let data: Vec<u8> = (0..end / 4)
        .flat_map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            ((state as f32 / u32::MAX as f32 - 0.5) * 0.1).to_le_bytes()
        })
        .collect();
    std::fs::write(dir.join(location), data).unwrap();
    dir.join(name)
}

fn check(name: &str, layers: usize, ops: &[&str]) {
    let path = with_weights(name);
    let opts = ImportOptions {
        input_shape: Some(vec![1, 3, 64, 64]),
        ..ImportOptions::default()
    };
    let net = load_onnx(&path, &opts).unwrap_or_else(|e| panic!("{name}: {e}"));
    for op in ops {
        assert!(
            net.nodes().iter().any(|n| n.kind == *op),
            "{name}: no {op} node"
        );
    }
    let analysis = AnalysisOptions {
        layer: Options::with_rtol(1e-2),
        lower: None,
        merge_linear_runs: true,
        ..AnalysisOptions::default()
    };
    let report = analyze(&net, &analysis).unwrap();
    assert_eq!(report.layers.len(), layers, "{name}");
    for l in &report.layers {
        assert!(l.lower > 0.0 && l.lower <= l.upper, "{name} {}", l.name);
    }
    assert!(report.network.upper.is_finite() && report.network.upper > 0.0);
    // Also at the exported size, load only.
    let full = load_onnx(&path, &ImportOptions::default()).unwrap();
    assert_eq!(full.input_shape(), &[1, 3, 224, 224]);
    std::fs::remove_dir_all(path.parent().unwrap()).ok();
}

#[test]
fn resnet18_from_the_dynamo_exporter() {
    check(
        "resnet18_dynamo.onnx",
        21,
        &["Conv", "MaxPool", "Add", "ReduceMean", "Gemm"],
    );
}

#[test]
fn mobilenet_v2_from_the_dynamo_exporter() {
    check(
        "mobilenet_v2_dynamo.onnx",
        53,
        &["Conv", "Clip", "Add", "ReduceMean", "Gemm"],
    );
}

#[test]
fn squeezenet_from_the_dynamo_exporter() {
    check(
        "squeezenet1_1_dynamo.onnx",
        26,
        &["Conv", "Concat", "MaxPool", "ReduceMean"],
    );
}

/// Issue 14's architecture families at small inputs (scripts/torchvision_coverage.py; graphs
/// without weights and with only the name-scope metadata kept): the globally Lipschitz ones
/// load — through GatherND/Where adaptive pooling (VGG), channel shuffles (ShuffleNet),
/// LayerNorm (ConvNeXt) — and get a finite bound above sampled difference quotients; the
/// others are refused with every blocking node named.
#[test]
fn architecture_families_load_or_are_refused_with_every_blocker() {
    use lipschitz::network::{Evaluator, NetworkMethod};
    for (name, op) in [
        ("vgg11_bn_small.onnx", "GatherND"),
        ("shufflenet_v2_x0_5_small.onnx", "Transpose"),
        ("convnext_tiny_small.onnx", "LayerNormalization"),
    ] {
        let path = with_weights(name);
        let net =
            load_onnx(&path, &ImportOptions::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(net.nodes().iter().any(|n| n.kind == op), "{name}: no {op}");
        let opts = AnalysisOptions {
            layer: Options::with_rtol(1e-1),
            lower: None,
            methods: vec![NetworkMethod::Product],
            ..AnalysisOptions::default()
        };
        let upper = analyze(&net, &opts).unwrap().network.upper;
        assert!(upper.is_finite() && upper > 0.0, "{name}: {upper}");
        let eval = Evaluator::new(&net, true, 1 << 30).unwrap();
        let n = eval.input_len();
        let mut state = 7u64;
        let mut next = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
            (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        };
        for _ in 0..2 {
            let x: Vec<f64> = (0..n).map(|_| next()).collect();
            let y: Vec<f64> = x.iter().map(|v| v + 1e-3 * next()).collect();
            let (fx, fy) = (
                eval.output(&eval.forward(&x)),
                eval.output(&eval.forward(&y)),
            );
            let num: f64 = fx.iter().zip(&fy).map(|(a, b)| (a - b) * (a - b)).sum();
            let den: f64 = x.iter().zip(&y).map(|(a, b)| (a - b) * (a - b)).sum();
            assert!((num / den).sqrt() <= upper, "{name}");
        }
        std::fs::remove_dir_all(path.parent().unwrap()).ok();
    }
    for (name, blockers, reason) in [
        ("efficientnet_b0_small.onnx", 16, "squeeze-and-excitation"),
        ("vit_b_16_small.onnx", 24, "self-attention"),
    ] {
        let path = with_weights(name);
        let err = load_onnx(&path, &ImportOptions::default())
            .expect_err(name)
            .to_string();
        assert!(
            err.contains(&format!("{blockers} node(s) stop the analysis")),
            "{name}: {err}"
        );
        assert!(
            err.contains("not globally Lipschitz") && err.contains(reason),
            "{err}"
        );
        std::fs::remove_dir_all(path.parent().unwrap()).ok();
    }
}
