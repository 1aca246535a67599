//! A ResNet-18-shaped ONNX model (torchvision layout: 7×7/2 stem, BatchNorm after every
//! conv, 3×3/2 max pool, four stages of two basic blocks with 1×1/2 downsampling shortcuts,
//! global average pooling, Flatten, Gemm 512→1000) with seeded random weights, encoded with
//! the crate's own protobuf types. Shared by the network benchmark and the timing example.

use lipschitz::onnx::proto::{
    tensor_proto::DataType, tensor_shape_proto, type_proto, AttributeProto, GraphProto, ModelProto,
    NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use prost::Message;
use rand::{Rng, SeedableRng};

struct Graph {
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    rng: rand_chacha::ChaCha8Rng,
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        ints: v.to_vec(),
        r#type: 7,
        ..Default::default()
    }
}

impl Graph {
    fn tensor(&mut self, name: &str, dims: &[i64], values: Vec<f32>) -> String {
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.inits.push(TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: DataType::Float as i32,
            raw_data: raw,
            ..Default::default()
        });
        name.into()
    }

    fn node(
        &mut self,
        op: &str,
        name: &str,
        inputs: Vec<String>,
        attrs: Vec<AttributeProto>,
    ) -> String {
        let out = format!("{name}_out");
        self.nodes.push(NodeProto {
            op_type: op.into(),
            name: name.into(),
            input: inputs,
            output: vec![out.clone()],
            attribute: attrs,
            ..Default::default()
        });
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn conv_bn(
        &mut self,
        x: String,
        name: &str,
        cin: i64,
        cout: i64,
        k: i64,
        stride: i64,
        relu: bool,
    ) -> String {
        let n = (cout * cin * k * k) as usize;
        let std = (2.0 / (cin * k * k) as f64).sqrt();
        let w: Vec<f32> = (0..n)
            .map(|_| (self.rng.sample::<f64, _>(rand_distr::StandardNormal) * std) as f32)
            .collect();
        let w = self.tensor(&format!("{name}.weight"), &[cout, cin, k, k], w);
        let p = k / 2;
        let y = self.node(
            "Conv",
            name,
            vec![x, w],
            vec![
                ints("pads", &[p, p, p, p]),
                ints("strides", &[stride, stride]),
                ints("kernel_shape", &[k, k]),
            ],
        );
        let c = cout as usize;
        let gamma: Vec<f32> = (0..c).map(|_| self.rng.random_range(0.5..1.5)).collect();
        let beta: Vec<f32> = (0..c).map(|_| self.rng.random_range(-0.1..0.1)).collect();
        let mean: Vec<f32> = (0..c).map(|_| self.rng.random_range(-0.1..0.1)).collect();
        let var: Vec<f32> = (0..c).map(|_| self.rng.random_range(0.5..2.0)).collect();
        let ins = vec![
            y,
            self.tensor(&format!("{name}.bn.weight"), &[cout], gamma),
            self.tensor(&format!("{name}.bn.bias"), &[cout], beta),
            self.tensor(&format!("{name}.bn.mean"), &[cout], mean),
            self.tensor(&format!("{name}.bn.var"), &[cout], var),
        ];
        let y = self.node("BatchNormalization", &format!("{name}.bn"), ins, vec![]);
        if relu {
            self.node("Relu", &format!("{name}.relu"), vec![y], vec![])
        } else {
            y
        }
    }
}

fn value_info(name: &str, dims: &[i64]) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: DataType::Float as i32,
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| tensor_shape_proto::Dimension {
                            value: Some(tensor_shape_proto::dimension::Value::DimValue(d)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The encoded model (about 47 MB of weights) for a 1×3×`size`×`size` input.
pub fn resnet18_onnx(size: i64, seed: u64) -> Vec<u8> {
    let mut g = Graph {
        nodes: Vec::new(),
        inits: Vec::new(),
        rng: rand_chacha::ChaCha8Rng::seed_from_u64(seed),
    };
    let mut x = g.conv_bn("input".into(), "conv1", 3, 64, 7, 2, true);
    x = g.node(
        "MaxPool",
        "maxpool",
        vec![x],
        vec![
            ints("kernel_shape", &[3, 3]),
            ints("strides", &[2, 2]),
            ints("pads", &[1, 1, 1, 1]),
        ],
    );
    let mut cin = 64;
    for (stage, cout) in [64i64, 128, 256, 512].into_iter().enumerate() {
        for block in 0..2 {
            let stride = if stage > 0 && block == 0 { 2 } else { 1 };
            let name = format!("layer{}.{block}", stage + 1);
            let h = g.conv_bn(
                x.clone(),
                &format!("{name}.conv1"),
                cin,
                cout,
                3,
                stride,
                true,
            );
            let h = g.conv_bn(h, &format!("{name}.conv2"), cout, cout, 3, 1, false);
            let shortcut = if stride != 1 || cin != cout {
                g.conv_bn(
                    x.clone(),
                    &format!("{name}.downsample"),
                    cin,
                    cout,
                    1,
                    stride,
                    false,
                )
            } else {
                x.clone()
            };
            let s = g.node("Add", &format!("{name}.add"), vec![h, shortcut], vec![]);
            x = g.node("Relu", &format!("{name}.relu"), vec![s], vec![]);
            cin = cout;
        }
    }
    x = g.node("GlobalAveragePool", "avgpool", vec![x], vec![]);
    x = g.node("Flatten", "flatten", vec![x], vec![]);
    let w: Vec<f32> = (0..1000 * 512)
        .map(|_| g.rng.random_range(-0.044f32..0.044))
        .collect();
    let w = g.tensor("fc.weight", &[1000, 512], w);
    let b = g.tensor("fc.bias", &[1000], vec![0.0; 1000]);
    let mut t = AttributeProto {
        name: "transB".into(),
        i: 1,
        r#type: 2,
        ..Default::default()
    };
    t.r#type = 2;
    let out = g.node("Gemm", "fc", vec![x, w, b], vec![t]);
    let model = ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        producer_name: "lipschitz-bench".into(),
        graph: Some(GraphProto {
            name: "resnet18".into(),
            node: g.nodes,
            initializer: g.inits,
            input: vec![value_info("input", &[1, 3, size, size])],
            output: vec![value_info(&out, &[1, 1000])],
            ..Default::default()
        }),
        ..Default::default()
    };
    model.encode_to_vec()
}
