#!/usr/bin/env python3
"""The architecture coverage table of docs/coverage.md: every torchvision family exported with
PyTorch's default (dynamo) exporter at a small input, then analysed by the release binary.

    pip install torch torchvision onnxscript
    cargo build --release
    python3 scripts/torchvision_coverage.py OUTDIR   # prints the Markdown table

Random weights (no download). Each model: does it load, what upper bound and method, how
long; or the refusal, which names every blocking node.
"""
import os
import subprocess
import sys
import time
import warnings

import torch
import torchvision.models as tvm

warnings.filterwarnings("ignore")
out = sys.argv[1] if len(sys.argv) > 1 else "torchvision_coverage"
os.makedirs(out, exist_ok=True)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "lipschitz")
torch.manual_seed(0)

MODELS = [
    ("resnet18", lambda: tvm.resnet18(), 64),
    ("resnet50", lambda: tvm.resnet50(), 64),
    ("resnext50_32x4d", lambda: tvm.resnext50_32x4d(), 64),
    ("wide_resnet50_2", lambda: tvm.wide_resnet50_2(), 64),
    ("vgg11_bn", lambda: tvm.vgg11_bn(), 64),
    ("alexnet", lambda: tvm.alexnet(), 64),
    ("squeezenet1_1", lambda: tvm.squeezenet1_1(), 64),
    ("densenet121", lambda: tvm.densenet121(), 64),
    ("googlenet", lambda: tvm.googlenet(aux_logits=False, init_weights=True), 64),
    ("inception_v3", lambda: tvm.inception_v3(aux_logits=False, init_weights=True), 299),
    ("mobilenet_v2", lambda: tvm.mobilenet_v2(), 64),
    ("mobilenet_v3_small", lambda: tvm.mobilenet_v3_small(), 64),
    ("mnasnet0_5", lambda: tvm.mnasnet0_5(), 64),
    ("efficientnet_b0", lambda: tvm.efficientnet_b0(), 64),
    ("shufflenet_v2_x0_5", lambda: tvm.shufflenet_v2_x0_5(), 64),
    ("regnet_x_400mf", lambda: tvm.regnet_x_400mf(), 64),
    ("regnet_y_400mf", lambda: tvm.regnet_y_400mf(), 64),
    ("convnext_tiny", lambda: tvm.convnext_tiny(), 64),
    ("vit_b_16", lambda: tvm.vit_b_16(image_size=32), 32),
    ("swin_t", lambda: tvm.swin_t(), 64),
]


def main():
    rows = []
    only = set(sys.argv[2:])
    for name, make, size in MODELS:
        if only and name not in only:
            continue
        path = os.path.join(out, f"{name}.onnx")
        if not os.path.exists(path):
            model = make().eval()
            try:
                torch.onnx.export(model, (torch.randn(1, 3, size, size),), path, dynamo=True)
            except Exception as e:  # noqa: BLE001 - reported in the table
                rows.append((name, size, "export failed", str(e).splitlines()[0][:100]))
                continue
        t = time.time()
        r = subprocess.run([BIN, "analyze", path, "--rtol", "1e-2", "--no-lower", "--json"],
                           capture_output=True, text=True, timeout=1800)
        secs = time.time() - t
        if r.returncode == 0:
            import json
            j = json.loads(r.stdout)
            net = j["network"]
            best = min(net["methods"], key=lambda m: m["upper"])
            rows.append((name, size, "loads", f"{net['upper']:.4g} ({best['name']}), "
                         f"product {[m['upper'] for m in net['methods'] if m['name'] == 'product'][0]:.4g}, "
                         f"{len(j['layers'])} layers, {secs:.1f} s"))
        else:
            rows.append((name, size, "refused", r.stderr.strip()[:400]))
        print(rows[-1], file=sys.stderr, flush=True)
    print("| model | input | outcome | bound / reason |")
    print("|---|---|---|---|")
    for name, size, outcome, what in rows:
        print(f"| {name} | {size}² | {outcome} | {what.replace('|', '/')} |")


if __name__ == "__main__":
    main()
