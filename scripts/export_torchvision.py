#!/usr/bin/env python3
"""Exports torchvision models with PyTorch's ONNX exporters, to check that `lipschitz analyze`
loads what users actually produce (the files are too large to commit):

    pip install torch torchvision onnxscript
    python3 scripts/export_torchvision.py OUTDIR
    for f in OUTDIR/*.onnx; do target/release/lipschitz analyze "$f" --rtol 1e-3 --no-lower; done

Random weights (no download). Writes <name>_dynamo.onnx (+ .onnx.data external weights, the
default exporter since PyTorch 2.9) and <name>_torchscript.onnx (legacy exporter, weights
embedded, GlobalAveragePool + Flatten).
"""
import os
import sys

import torch
import torchvision

out = sys.argv[1] if len(sys.argv) > 1 else "torchvision_onnx"
os.makedirs(out, exist_ok=True)
torch.manual_seed(0)
models = {
    "resnet18": torchvision.models.resnet18(),
    "mobilenet_v2": torchvision.models.mobilenet_v2(),
    "squeezenet1_1": torchvision.models.squeezenet1_1(),
}
x = torch.randn(1, 3, 224, 224)
for name, model in models.items():
    model.eval()
    for dynamo in (True, False):
        path = os.path.join(out, f"{name}_{'dynamo' if dynamo else 'torchscript'}.onnx")
        kwargs = dict(dynamo=dynamo)
        if not dynamo:
            kwargs["opset_version"] = 17
        torch.onnx.export(model, (x,), path, **kwargs)
        print("wrote", path)
