#!/usr/bin/env python3
"""Writes tests/fixtures/coverage/: small PyTorch models of every construct issue 14 covers,
exported to ONNX with both PyTorch exporters (TorchScript, `_ts`, and dynamo, `_dynamo`), and
their reference outputs from onnxruntime.

    pip install torch onnx onnxscript onnxruntime numpy
    python3 scripts/make_coverage_fixtures.py

reference.json holds, per model: the input shape, an input `x` and onnxruntime's output `y`
(both flattened), and what the tool must do: "load" (a finite certified bound), or "refuse"
with the substrings every refusal must contain (the reason, and the name of every offending
node). The outputs are committed; the tests need no Python.
"""
import json
import os
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn
import torch.nn.functional as F

warnings.filterwarnings("ignore")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "coverage")
torch.manual_seed(20261205)


# ---- 1-Lipschitz building blocks, as their authors write them -----------------------------

class MaxMin(nn.Module):
    """MaxMin (Anil et al. 2019) as in the SOC/LOT/SLL code: halves of the channels."""

    def forward(self, x):
        a, b = x.chunk(2, dim=1)
        return torch.cat([torch.max(a, b), torch.min(a, b)], dim=1)


class GroupSort(nn.Module):
    """GroupSort with groups of `k` consecutive channels (deel-torchlip style: sort a view)."""

    def __init__(self, k):
        super().__init__()
        self.k = k

    def forward(self, x):
        shape = x.shape
        g = x.reshape(shape[0], shape[1] // self.k, self.k, *shape[2:])
        return torch.sort(g, dim=2, descending=True)[0].reshape(shape)


def aol_rescale(w):
    """AOL (Prach & Lampert 2022): W·diag(1/√Σ_j |WᵀW|_ij) has norm ≤ 1."""
    wtw = (w.t() @ w).abs()
    return w / wtw.sum(dim=1).clamp_min(1e-12).sqrt()[None, :]


class AolLinear(nn.Module):
    def __init__(self, n_in, n_out):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_out, n_in) / n_in ** 0.5)
        self.bias = nn.Parameter(torch.randn(n_out) * 0.1)

    def forward(self, x):
        return F.linear(x, aol_rescale(self.weight), self.bias)


class SllDense(nn.Module):
    """SDP-based Lipschitz layer (Araujo et al. 2023): x − 2 W T⁻¹ σ(Wᵀ x + b)."""

    def __init__(self, n, hidden):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n, hidden) / n ** 0.5)
        self.bias = nn.Parameter(torch.randn(hidden) * 0.1)
        self.q = nn.Parameter(torch.rand(hidden) + 0.5)

    def forward(self, x):
        w, q = self.weight, self.q
        qabs = q.abs()
        t = ((w.t() @ w).abs() * qabs[None, :] / qabs[:, None]).sum(dim=1)
        res = F.relu(x @ w + self.bias) / t
        return x - 2 * res @ w.t()


def orthogonal_linear(n_in, n_out):
    """An orthogonal layer (torch's parametrization), its weight baked in as users export
    it (the Householder product it is computed with has no ONNX export)."""
    layer = nn.utils.parametrizations.orthogonal(nn.Linear(n_in, n_out))
    nn.utils.parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
    return layer


# ---- the models --------------------------------------------------------------------------

class MaxMinMlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = orthogonal_linear(16, 32)
        self.act1 = MaxMin()
        self.fc2 = orthogonal_linear(32, 32)
        self.act2 = MaxMin()
        self.fc3 = orthogonal_linear(32, 10)

    def forward(self, x):
        return self.fc3(self.act2(self.fc2(self.act1(self.fc1(x)))))


class GroupSortCnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 8, 3, padding=1)
        self.act1 = GroupSort(4)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.act2 = MaxMin()
        self.fc = nn.Linear(8 * 3 * 3, 5)

    def forward(self, x):
        x = self.act2(self.conv2(self.act1(self.conv1(x))))
        return self.fc(x.flatten(1))


class AolSll(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = AolLinear(12, 24)
        self.act = MaxMin()
        self.sll = SllDense(24, 32)
        self.fc2 = AolLinear(24, 6)

    def forward(self, x):
        return self.fc2(self.sll(self.act(self.fc1(x))))


class Norms(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.gn = nn.GroupNorm(2, 8)
        self.conv2 = nn.Conv2d(8, 4, 3)
        self.inorm = nn.InstanceNorm2d(4, affine=True)
        self.fc = nn.Linear(4 * 4 * 4, 12)
        self.ln = nn.LayerNorm(12)
        self.out = nn.Linear(12, 3)

    def forward(self, x):
        x = F.relu(self.gn(self.conv(x)))
        x = F.gelu(self.inorm(self.conv2(x)))
        return self.out(F.relu(self.ln(self.fc(x.flatten(1)))))


class Resizes(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.conv3 = nn.Conv2d(4, 2, 3, padding=1)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = F.relu(self.conv2(x))
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = self.conv3(x)
        return F.interpolate(x, size=(9, 7), mode="bilinear", align_corners=True)


class Selections(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, padding=1)
        self.fc = nn.Linear(96 + 36 + 8, 5)

    def forward(self, x):
        x = self.conv(x)                                   # (1, 8, 6, 6)
        y = F.pixel_shuffle(x, 2)                          # (1, 2, 12, 12): DepthToSpace
        y = F.pixel_unshuffle(y, 2)                        # (1, 8, 6, 6): SpaceToDepth
        y = y.permute(0, 2, 3, 1)                          # Transpose
        y = torch.abs(y[:, 1:5, ::2, 2:6])                 # Slice, Abs
        y = y.permute(0, 3, 1, 2).reshape(1, 4, 4, 3)
        z = torch.index_select(x, 1, torch.tensor([0, 3, 3, 7]))  # Gather with repeats
        z = -z[:, :, :3, :3].repeat(1, 1, 2, 2)            # Tile, Neg
        z = F.mish(z.amax(dim=1))                          # ReduceMax, Mish
        w = F.softsign(y.expand(2, 4, 4, 3)).reshape(1, -1)  # Expand, Softsign
        u = torch.topk(x.flatten(1), 8)[0]                 # TopK values
        return self.fc(torch.cat([w, z.reshape(1, -1), u], dim=1))


class SllConv(nn.Module):
    """SLL's convolutional layer: x − 2·Wᵀ T⁻¹ σ(W x + b), Wᵀ the transposed convolution."""

    def __init__(self, c, hidden):
        super().__init__()
        self.kernel = nn.Parameter(torch.randn(hidden, c, 3, 3) / (3 * c ** 0.5))
        self.bias = nn.Parameter(torch.randn(hidden) * 0.1)
        self.q = nn.Parameter(torch.rand(hidden) + 0.5)

    def forward(self, x):
        k, q = self.kernel, self.q.abs()
        ktk = F.conv2d(k, k, padding=2).abs()          # |KᵀK| as a (hidden, hidden, 5, 5) kernel
        t = (ktk.sum(dim=(2, 3)) * q[None, :] / q[:, None]).sum(dim=1)
        res = F.relu(F.conv2d(x, k, self.bias, padding=1)) / t[None, :, None, None]
        return x - 2 * F.conv_transpose2d(res, k, padding=1)


class Convs(nn.Module):
    """1-D and transposed convolutions, an SLL block."""

    def __init__(self):
        super().__init__()
        self.conv1d = nn.Conv1d(3, 4, 5, stride=2, padding=2, dilation=1)
        self.deconv1d = nn.ConvTranspose1d(4, 2, 3, stride=2, padding=1, output_padding=1)
        self.deconv = nn.ConvTranspose2d(2, 4, 3, stride=2, padding=1, output_padding=1, groups=2)
        self.sll = SllConv(4, 6)
        self.fc = nn.Linear(4 * 4 * 8, 3)

    def forward(self, x):                                # (1, 3, 16)
        y = F.relu(self.conv1d(x))                       # (1, 4, 8)
        y = torch.tanh(self.deconv1d(y))                 # (1, 2, 16)
        y = y.reshape(1, 2, 2, 8)
        y = F.relu(self.deconv(y))                       # (1, 4, 4, 16)
        y = self.sll(y[:, :, :, ::2])                    # (1, 4, 4, 8)
        return self.fc(y.flatten(1))


class AdaptiveToken(nn.Module):
    """Adaptive average pooling to an uneven grid (GatherND/Where in the dynamo export) and a
    learned token concatenated in front of the features (ViT's class token)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d((3, 3))
        self.token = nn.Parameter(torch.randn(1, 3, 1))
        self.fc = nn.Linear(3 * 10, 4)

    def forward(self, x):
        y = self.pool(F.relu(self.conv(x))).flatten(2)      # (1, 3, 9)
        y = torch.cat([self.token, y], dim=2)               # (1, 3, 10)
        return self.fc(y.flatten(1))


class Attention(nn.Module):
    """Dot-product self-attention plus an SE gate and an exp: three different blockers."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.se_fc1 = nn.Linear(8, 2)
        self.se_fc2 = nn.Linear(2, 8)
        self.q = nn.Linear(8, 8)
        self.k = nn.Linear(8, 8)
        self.v = nn.Linear(8, 8)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        x = self.conv(x)
        s = torch.sigmoid(self.se_fc2(F.relu(self.se_fc1(x.mean(dim=(2, 3))))))
        x = x * s[:, :, None, None]
        t = x.flatten(2).transpose(1, 2)                    # (1, 16, 8)
        a = torch.softmax(self.q(t) @ self.k(t).transpose(1, 2) / 8 ** 0.5, dim=-1)
        t = a @ self.v(t)
        return self.fc(torch.exp(t.mean(dim=1)))


MODELS = {
    "maxmin_mlp": (MaxMinMlp, (1, 16), "load"),
    "groupsort_cnn": (GroupSortCnn, (1, 2, 6, 6), "load"),
    "aol_sll": (AolSll, (1, 12), "load"),
    "norms": (Norms, (1, 3, 6, 6), "load"),
    "resizes": (Resizes, (1, 2, 3, 4), "load"),
    "selections": (Selections, (1, 4, 6, 6), "load"),
    "convs": (Convs, (1, 3, 16), "load"),
    "adaptive_token": (AdaptiveToken, (1, 2, 5, 7), "load"),
    "attention": (Attention, (1, 3, 4, 4), "refuse"),
}


def export(model, shape, path, dynamo):
    x = torch.randn(*shape)
    kwargs = dict(input_names=["x"], output_names=["y"], opset_version=18)
    if dynamo:
        onnx_program = torch.onnx.export(model, (x,), dynamo=True, **kwargs)
        onnx_program.save(path)
    else:
        torch.onnx.export(model, (x,), path, dynamo=False, do_constant_folding=True, **kwargs)
    # Keep the weights inside the file (the dynamo exporter may write them beside it).
    m = onnx.load(path, load_external_data=True)
    onnx.save(m, path, save_as_external_data=False)
    if os.path.exists(path + ".data"):
        os.remove(path + ".data")
    return m


def blockers(m):
    """The names of the nodes a refusal must list: every node computing a product of two
    activations, a division by one, or an exp."""
    graph = m.graph
    consts = {i.name for i in graph.initializer}
    consts |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    names = []
    for n in graph.node:
        acts = [i for i in n.input if i and i not in consts]
        if n.op_type in ("MatMul", "Mul") and len(acts) == 2:
            names.append(n.name)
        elif n.op_type == "Exp":
            names.append(n.name)
    return names


def main():
    os.makedirs(OUT, exist_ok=True)
    reference = {}
    for name, (cls, shape, expect) in MODELS.items():
        model = cls().eval()
        with torch.no_grad():
            for exporter in ("ts", "dynamo"):
                path = os.path.join(OUT, f"{name}_{exporter}.onnx")
                try:
                    m = export(model, shape, path, exporter == "dynamo")
                except Exception as e:  # noqa: BLE001 - some constructs have one exporter
                    print(f"{name}_{exporter}: not exported ({str(e).splitlines()[0][:80]})")
                    if os.path.exists(path):
                        os.remove(path)
                    continue
                x = np.random.default_rng(len(name)).standard_normal(shape).astype(np.float32)
                sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
                y = sess.run(None, {sess.get_inputs()[0].name: x})[0]
                with torch.no_grad():
                    yt = model(torch.from_numpy(x)).numpy()
                assert np.allclose(y, yt, atol=1e-4), (name, exporter, np.abs(y - yt).max())
                entry = {"shape": list(shape), "x": x.ravel().tolist(),
                         "y": y.ravel().astype(float).tolist(), "expect": expect}
                if expect == "refuse":
                    entry["must_name"] = blockers(m)
                reference[f"{name}_{exporter}"] = entry
                ops = sorted({n.op_type for n in m.graph.node})
                print(f"{name}_{exporter}: {os.path.getsize(path)} bytes, ops {ops}")
    with open(os.path.join(OUT, "reference.json"), "w") as f:
        json.dump(reference, f, indent=1)


if __name__ == "__main__":
    main()
