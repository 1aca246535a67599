//! Arbitrary bytes as an ONNX model, import only (protobuf decoding, initializers, external
//! data refusal, constant folding, shape inference, memory charging): the importer must return
//! a network or an error — never panic, hang or allocate past its limit. Fast (no bounding), so
//! it gets most of the executions; `onnx_analyze` also bounds what it imports. Run:
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run -O onnx_import corpus/onnx -- -max_total_time=600`
#![no_main]
use libfuzzer_sys::fuzz_target;
use lipschitz::onnx::{load_onnx_bytes, ImportOptions};

fuzz_target!(|data: &[u8]| {
    let import = ImportOptions {
        memory_limit: 16 << 20,
        ..ImportOptions::default()
    };
    if let Ok(net) = load_onnx_bytes(data, "fuzz", None, &import) {
        // Every value the evaluator will hold was checked against the limit.
        for v in 0..net.shapes().len() {
            assert!(
                net.len_of(v) * 8 <= 16 << 20,
                "value {v} past the import limit"
            );
        }
    }
});
