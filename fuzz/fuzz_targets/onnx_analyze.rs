//! Arbitrary bytes as an ONNX model: the importer must return a network or an error, and a
//! small imported network must bound cleanly. Run:
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run -O onnx_analyze corpus/onnx -- -max_total_time=600`
#![no_main]
use libfuzzer_sys::fuzz_target;
use lipschitz::network::{analyze, AnalysisOptions, LowerOptions};
use lipschitz::onnx::{load_onnx_bytes, ImportOptions};
use lipschitz::Options;
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    let import = ImportOptions {
        memory_limit: 16 << 20,
        ..ImportOptions::default()
    };
    let Ok(net) = load_onnx_bytes(data, "fuzz", None, &import) else {
        return;
    };
    if net.activation_bytes() > 4 << 20 {
        return;
    }
    let opts = AnalysisOptions {
        layer: Options {
            rtol: 1e-2,
            max_iterations: 200,
            memory_limit: 64 << 20,
            time_limit: Some(Duration::from_millis(200)),
            ..Options::default()
        },
        lower: Some(LowerOptions {
            samples: 1,
            power_iterations: 2,
            ascent_steps: 1,
            memory_limit: 64 << 20,
            time_limit: Duration::from_millis(100),
            ..LowerOptions::default()
        }),
        merge_linear_runs: true,
        ..AnalysisOptions::default()
    };
    if let Ok(a) = analyze(&net, &opts) {
        let n = &a.network;
        assert!(!n.upper.is_nan() && n.upper >= 0.0, "bad upper {}", n.upper);
        if let Some(l) = n.lower {
            assert!(
                l >= 0.0 && l <= n.upper,
                "lower {l} above upper {}",
                n.upper
            );
        }
    }
});
