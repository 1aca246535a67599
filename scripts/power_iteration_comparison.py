#!/usr/bin/env python3
"""What a PyTorch user does today against the certified analysis, in one run (issue 18).

    pip install torch torchvision onnxscript
    cargo build --release
    python3 scripts/power_iteration_comparison.py [OUTDIR] [SIZE] [MODEL ...]

For each torchvision model (random init, seed 0, eval mode; exported once with the dynamo
exporter into OUTDIR): power iteration on every Conv2d and Linear layer through
`torch.nn.functional.conv2d` / `linear` and their adjoints (autograd), from a seeded random
start, until the estimate changes by less than 1e-6 relative — uncertified, it stops low —
against `lipschitz analyze MODEL.onnx --input-shape 1,3,SIZE,SIZE --rtol 1e-3 --method
product --no-lower --json` (every layer certified to width 1e-3, the network's product).
Both on 2 threads. The table gives both times, and per layer whether the power estimate lies
below the certified upper bound (to 1e-5: it is computed in float32) and how far below the
certified lower bound it stops.

Layers are matched by module name (the report's `module`, from the dynamo export). The tool
bounds each convolution with the BatchNorm after it folded in, so the power iteration here
applies the same per-channel scale gamma/sqrt(var + eps) to the convolution's output.
Not part of CI.
"""
import json
import os
import subprocess
import sys
import time
import warnings

import torch
import torch.nn.functional as F
import torchvision.models as tvm

warnings.filterwarnings("ignore")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "lipschitz")
THREADS = 2
RTOL = 1e-6
MAX_STEPS = 10_000

MODELS = {
    "resnet18": tvm.resnet18,
    "vgg11_bn": tvm.vgg11_bn,
    "alexnet": tvm.alexnet,
    "mobilenet_v2": tvm.mobilenet_v2,
    "resnet50": tvm.resnet50,
    "densenet121": tvm.densenet121,
}


def layer_inputs(model, size):
    """Input shape of every Conv2d and Linear, by module name (one forward pass)."""
    shapes = {}
    hooks = []

    def record(name):
        def hook(module, inputs, output):  # returns None: the output is left as it is
            shapes.setdefault(name, tuple(inputs[0].shape))
        return hook

    for name, m in model.named_modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            hooks.append(m.register_forward_hook(record(name)))
    with torch.no_grad():
        model(torch.randn(1, 3, size, size))
    for h in hooks:
        h.remove()
    return shapes


def bn_after(model):
    """The BatchNorm2d that directly follows each Conv2d in module order (torchvision's
    conv → bn pattern), by the conv's name: its per-channel scale gamma/sqrt(var + eps)."""
    scales = {}
    pending = None
    for name, m in model.named_modules():
        if len(list(m.children())) > 0:
            continue  # containers: only leaves are layers
        # DenseNet's next layer normalises the concatenation: more channels, not this conv's.
        if isinstance(m, torch.nn.BatchNorm2d) and pending is not None \
                and m.num_features == pending[1].out_channels:
            scales[pending[0]] = (m.weight / torch.sqrt(m.running_var + m.eps)).detach()
        pending = (name, m) if isinstance(m, torch.nn.Conv2d) else None
    return scales


def power_iteration(module, shape, scale):
    """Largest singular value of the layer's linear part by power iteration on WᵀW, to a
    relative change of RTOL; returns (estimate, steps)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g, dtype=torch.float32)
    x /= x.norm()

    def apply(v):
        if isinstance(module, torch.nn.Conv2d):
            y = F.conv2d(v, module.weight, None, module.stride, module.padding, module.dilation,
                         module.groups)
            return y if scale is None else y * scale.view(1, -1, 1, 1)
        return F.linear(v, module.weight)

    sigma = 0.0
    for step in range(1, MAX_STEPS + 1):
        x.requires_grad_(True)
        y = apply(x)
        new = y.norm().item()
        (grad,) = torch.autograd.grad(y, x, y)  # Wᵀ W x
        x = grad.detach()
        x /= x.norm()
        if abs(new - sigma) <= RTOL * new:
            return new, step
        sigma = new
    return sigma, MAX_STEPS


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "power_iteration"
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 224
    names = sys.argv[3:] or list(MODELS)
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(THREADS)
    rows = []
    for name in names:
        torch.manual_seed(0)
        model = MODELS[name]().eval()
        path = os.path.join(out, f"{name}.onnx")
        if not os.path.exists(path):
            torch.onnx.export(model, (torch.randn(1, 3, size, size),), path, dynamo=True)
        shapes = layer_inputs(model, size)
        scales = bn_after(model)
        modules = dict(model.named_modules())
        t = time.time()
        power = {}
        with torch.enable_grad():
            for layer, shape in shapes.items():
                power[layer] = power_iteration(modules[layer], shape, scales.get(layer))
        power_seconds = time.time() - t

        env = dict(os.environ, RAYON_NUM_THREADS=str(THREADS))
        t = time.time()
        r = subprocess.run([BIN, "analyze", path, "--input-shape", f"1,3,{size},{size}",
                            "--rtol", "1e-3", "--method", "product", "--no-lower", "--json"],
                           capture_output=True, text=True, env=env, check=True)
        tool_seconds = time.time() - t
        report = json.loads(r.stdout)
        certified = {l.get("module") or l["name"]: (l["lower"], l["upper"]) for l in report["layers"]}
        matched = [k for k in power if k in certified]
        # Power iteration runs in float32: its estimate carries ~1e-6 relative rounding.
        above = [k for k in matched if power[k][0] > certified[k][1] * (1 + 1e-5)]
        for k in above:
            print(f"{name} {k}: power {power[k][0]:.9g} above the certified "
                  f"[{certified[k][0]:.9g}, {certified[k][1]:.9g}]", file=sys.stderr)
        shortfall = max((certified[k][0] - power[k][0]) / certified[k][0] for k in matched)
        steps = sum(s for _, s in power.values())
        rows.append((name, size, len(shapes), len(matched), steps, power_seconds, tool_seconds,
                     len(above), shortfall))
        print(rows[-1], file=sys.stderr, flush=True)
    print("| model | input | layers (matched) | power iteration: steps, time | certified "
          "(rtol 1e-3), time | ratio | power above certified upper | power's largest "
          "shortfall below certified lower |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, size, n, m, steps, ps, ts, above, short in rows:
        print(f"| {name} | {size}² | {n} ({m}) | {steps}, {ps:.2f} s | {ts:.2f} s | "
              f"{ps / ts:.2f}× | {above} | {100 * max(short, 0):.3f} % |")


if __name__ == "__main__":
    main()
