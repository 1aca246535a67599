//! Models whose tensors live in external data, aimed at a folder laid out as an attacker
//! would lay it out: a symbolic link to a file outside, a symbolic link to a folder outside, a
//! hard link to an outside file, a FIFO, a subfolder, plus whatever location the fuzzer
//! writes. The importer must return an error or a network, never block, and never hand back
//! a byte of the outside file (its floats are a marker value no inside file holds). Run:
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run -O external_data -- -max_total_time=600`
#![no_main]
use libfuzzer_sys::fuzz_target;
use lipschitz::onnx::proto::{
    tensor_shape_proto, type_proto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};

use lipschitz::onnx::{load_onnx_bytes, ImportOptions};
use prost::Message;
use std::path::PathBuf;
use std::sync::OnceLock;

/// The value every float of the outside file holds.
const MARKER: f32 = 12345.678;

/// `root/model` (the model's folder) and `root/outside`, built once per process.
fn folder() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = std::env::temp_dir().join(format!("lipschitz-fuzz-ext-{}", std::process::id()));
        let (model, outside) = (root.join("model"), root.join("outside"));
        std::fs::create_dir_all(model.join("sub")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        let marker: Vec<u8> = (0..1024).flat_map(|_| MARKER.to_le_bytes()).collect();
        std::fs::write(outside.join("secret.bin"), &marker).unwrap();
        std::fs::write(outside.join("shared.bin"), &marker).unwrap();
        let inside: Vec<u8> = (0..1024u32)
            .flat_map(|i| ((i % 64) as f32).to_le_bytes())
            .collect();
        std::fs::write(model.join("data.bin"), &inside).unwrap();
        std::fs::write(model.join("sub/data.bin"), &inside).unwrap();
        let _ = std::os::unix::fs::symlink(outside.join("secret.bin"), model.join("link.bin"));
        let _ = std::os::unix::fs::symlink(&outside, model.join("linkdir"));
        let _ = std::fs::hard_link(outside.join("shared.bin"), model.join("hard.bin"));
        let fifo = std::ffi::CString::new(model.join("fifo.bin").to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) };
        model
    })
}

const LOCATIONS: [&str; 14] = [
    "data.bin",
    "sub/data.bin",
    "./data.bin",
    "link.bin",
    "linkdir/secret.bin",
    "hard.bin",
    "fifo.bin",
    "sub",
    ".",
    "",
    "../outside/secret.bin",
    "/etc/passwd",
    "sub/../link.bin",
    "data.bin/x",
];

fn take<'a>(data: &mut &'a [u8], n: usize) -> &'a [u8] {
    let k = n.min(data.len());
    let (head, rest) = data.split_at(k);
    *data = rest;
    head
}

fn number(data: &mut &[u8], bytes: usize) -> u64 {
    take(data, bytes)
        .iter()
        .fold(0, |a, &b| (a << 8) | b as u64)
}

fn input(name: &str, dims: &[i64]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|&d| tensor_shape_proto::Dimension {
            value: Some(tensor_shape_proto::dimension::Value::DimValue(d)),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: 1,
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fuzz_target!(|bytes: &[u8]| {
    let mut data = bytes;
    let dir = folder();
    // The top bit of the first byte: raw bytes as a model whose external files are looked up
    // in the attack folder; otherwise a Gemm whose weight is external, its fields fuzzed.
    let head = number(&mut data, 1);
    let model = if head & 0x80 != 0 {
        data.to_vec()
    } else {
        let choice = number(&mut data, 1) as usize;
        let location = if choice < LOCATIONS.len() {
            LOCATIONS[choice].to_string()
        } else {
            let n = number(&mut data, 1) as usize;
            String::from_utf8_lossy(take(&mut data, n)).into_owned()
        };
        let rows = 1 + number(&mut data, 1) as i64 % 16;
        let cols = 1 + number(&mut data, 1) as i64 % 16;
        let offset = number(&mut data, 2);
        let data_type = [1, 11, 10, 16, 7, 6, 3, 2][number(&mut data, 1) as usize % 8];
        let mut entries = vec![("location", location), ("offset", offset.to_string())];
        if number(&mut data, 1) & 1 == 1 {
            entries.push(("length", number(&mut data, 2).to_string()));
        }
        let weight = TensorProto {
            name: "W".into(),
            dims: vec![rows, cols],
            data_type,
            data_location: 1,
            external_data: entries
                .into_iter()
                .map(|(k, v)| StringStringEntryProto {
                    key: k.into(),
                    value: v,
                })
                .collect(),
            ..Default::default()
        };
        ModelProto {
            ir_version: 8,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: 17,
            }],
            graph: Some(GraphProto {
                node: vec![NodeProto {
                    op_type: "Gemm".into(),
                    input: vec!["x".into(), "W".into()],
                    output: vec!["y".into()],
                    attribute: vec![lipschitz::onnx::proto::AttributeProto {
                        name: "transB".into(),
                        i: 1,
                        r#type: 2,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                initializer: vec![weight],
                input: vec![input("x", &[1, cols])],
                output: vec![input("y", &[])],
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec()
    };
    let opts = ImportOptions {
        memory_limit: 16 << 20,
        ..ImportOptions::default()
    };
    if let Ok(net) = load_onnx_bytes(&model, "fuzz", Some(dir), &opts) {
        for node in net.nodes() {
            if let Some(layer) = node.op.as_layer() {
                let weight = layer.weights();
                assert!(
                    !weight.contains(&MARKER),
                    "node {} holds bytes of the outside file",
                    node.name
                );
            }
        }
    }
});
