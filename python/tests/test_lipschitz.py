"""The Python package against independent references (NumPy SVDs of explicit matrices) and
against the Rust CLI on the same inputs (bit-identical JSON numbers)."""

import json
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

import lipschitz

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
CLI = Path(os.environ.get("LIPSCHITZ_CLI", ROOT / "target" / "release" / "lipschitz"))

try:
    import torch
except ImportError:  # the CI installs torch; a bare environment skips these tests
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")


def cli_json(*args):
    assert CLI.exists(), f"{CLI} missing: run `cargo build --release` first (or set LIPSCHITZ_CLI)"
    out = subprocess.run([str(CLI), *map(str, args), "--json"], capture_output=True, check=True)
    return json.loads(out.stdout)


def conv_matrix(w, size, stride, pad, circular=False, groups=1):
    """The explicit matrix of a 2-D cross-correlation (OIHW weights), column by column."""
    o, ig, kh, kw = w.shape
    c = ig * groups
    h, wd = size
    n = c * h * wd
    cols = []
    for k in range(n):
        x = np.zeros((c, h, wd))
        x.flat[k] = 1.0
        if circular:
            xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad)), mode="wrap")
        else:
            xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
        ho = (h + 2 * pad - kh) // stride + 1
        wo = (wd + 2 * pad - kw) // stride + 1
        y = np.zeros((o, ho, wo))
        for oc in range(o):
            g = oc // (o // groups)
            for i in range(ho):
                for j in range(wo):
                    patch = xp[g * ig:(g + 1) * ig, i * stride:i * stride + kh, j * stride:j * stride + kw]
                    y[oc, i, j] = np.sum(patch * w[oc])
        cols.append(y.ravel())
    return np.array(cols).T


def test_dense_norm_contains_the_svd_and_meets_rtol():
    rng = np.random.default_rng(0)
    for shape in [(300, 200), (5, 7), (1, 40)]:
        w = rng.standard_normal(shape).astype(np.float32)
        sigma = np.linalg.norm(w.astype(np.float64), 2)
        for arr in (w, w.astype(np.float64)):
            b = lipschitz.dense_norm(arr, rtol=1e-6)
            assert b.lower <= sigma * (1 + 1e-12) and sigma <= b.upper * (1 + 1e-12), (shape, b, sigma)
            assert b.upper <= b.lower * (1 + 1e-6) + 1e-12
    # float64 weights that float32 cannot hold: the interval still contains their norm.
    w = np.eye(3) * (1 + 1e-9)
    b = lipschitz.dense_norm(w)
    assert b.lower <= 1 + 1e-9 <= b.upper
    assert "Bound([" in repr(b) and b.to_dict()["certificate"] == b.certificate


@pytest.mark.parametrize(
    "stride,pad,circular,groups", [(1, 1, False, 1), (2, 1, False, 1), (1, 1, True, 1), (1, 0, False, 2)]
)
def test_conv2d_norm_matches_an_explicit_matrix(stride, pad, circular, groups):
    rng = np.random.default_rng(stride * 10 + pad + 3 * groups)
    w = rng.standard_normal((4, 4 // groups, 3, 3)).astype(np.float32)
    sigma = np.linalg.norm(conv_matrix(w.astype(np.float64), (6, 6), stride, pad, circular, groups), 2)
    b = lipschitz.conv2d_norm(
        w, 6, stride=stride, padding=pad, groups=groups,
        padding_mode="circular" if circular else "zeros", rtol=1e-6,
    )
    assert b.lower <= sigma * (1 + 1e-9) and sigma <= b.upper * (1 + 1e-9), (b, sigma)


def test_errors_raise_lipschitz_error_with_the_crate_message():
    assert issubclass(lipschitz.LipschitzError, ValueError)
    with pytest.raises(lipschitz.LipschitzError, match="not finite|NaN|non-finite"):
        lipschitz.dense_norm(np.array([[1.0, np.nan]], dtype=np.float32))
    with pytest.raises(lipschitz.LipschitzError, match="padding_mode"):
        lipschitz.conv2d_norm(np.ones((1, 1, 3, 3)), 5, padding_mode="reflect")
    with pytest.raises(lipschitz.LipschitzError, match="unsupported_op|not supported"):
        lipschitz.analyze(FIXTURES / "onnx" / "unsupported_op.onnx")
    with pytest.raises(lipschitz.LipschitzError, match="method"):
        lipschitz.analyze(FIXTURES / "onnx" / "mlp.onnx", method="magic")


def test_analyze_equals_the_cli_from_a_path_and_from_bytes():
    model = FIXTURES / "onnx" / "cnn_bn.onnx"
    expected = cli_json("analyze", model)
    for source in (model, str(model), model.read_bytes()):
        r = lipschitz.analyze(source)
        assert r.network.upper == expected["network"]["upper"]
        assert r.network.lower == expected["network"]["lower"]
        assert r.network.method == expected["network"]["method"]
        assert [m.upper for m in r.network.methods] == [m["upper"] for m in expected["network"]["methods"]]
        for layer, e in zip(r.layers, expected["layers"]):
            assert (layer.name, layer.lower, layer.upper) == (e["name"], e["lower"], e["upper"])
            assert layer.route == e["route"] and layer.route
    assert "layers" in repr(r) and r.to_dict()["network"]["upper"] == r.network.upper


def test_certify_equals_the_cli():
    d = FIXTURES / "certify"
    x, y = np.load(d / "x_test.npy"), np.load(d / "y_test.npy")
    expected = cli_json(
        "certify", d / "mlp.onnx", "--inputs", d / "x_test.npy", "--labels", d / "y_test.npy",
        "--method", "eclipse", "--local", "--eps", "0.1,0.2",
    )
    c = lipschitz.certify(d / "mlp.onnx", x, y, eps=[0.1, 0.2], method="eclipse", local=True)
    assert c.certified_accuracy == expected["certified_accuracy"]
    assert c.lipschitz == expected["lipschitz"]
    assert [s.to_dict() for s in c.samples] == expected["samples"]
    # Flattened inputs and float64 give the same radii.
    c2 = lipschitz.certify(d / "mlp.onnx", x.reshape(len(x), -1).astype(np.float64), y,
                           eps=[0.1, 0.2], method="eclipse", local=True)
    assert c2.samples == c.samples
    with pytest.raises(lipschitz.LipschitzError, match="labels"):
        lipschitz.certify(d / "mlp.onnx", x, y[:-1], method="product")


@needs_torch
def test_a_torch_conv2d_layer_matches_an_explicit_matrix():
    torch.manual_seed(0)
    layer = torch.nn.Conv2d(3, 5, 3, stride=2, padding=1)
    b = lipschitz.conv2d_norm(layer.weight, 7, stride=2, padding=1, rtol=1e-6)
    # The matrix of the layer (bias removed) by the Jacobian of the module itself.
    x = torch.zeros(1, 3, 7, 7)
    jac = torch.autograd.functional.jacobian(lambda t: layer(t) - layer.bias.view(1, -1, 1, 1), x)
    m = jac.reshape(-1, 3 * 7 * 7).double().numpy()
    sigma = np.linalg.norm(m, 2)
    assert b.lower <= sigma * (1 + 1e-6) and sigma <= b.upper * (1 + 1e-6), (b, sigma)


@needs_torch
def test_resnet18_module_equals_the_cli_on_the_exported_file():
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18()
    x = torch.zeros(1, 3, 64, 64)
    r = lipschitz.analyze(model, x)
    with tempfile.TemporaryDirectory() as d:
        path, _ = lipschitz._export(model, x, d)
        expected = cli_json("analyze", path)
    assert r.network.upper == expected["network"]["upper"]
    assert [m.upper for m in r.network.methods] == [m["upper"] for m in expected["network"]["methods"]]
    # The lower-bound search stops at a time budget (5 s), so on a busy machine two runs
    # may reach different (both attained) values: only its validity is compared.
    assert 0 < r.network.lower <= r.network.upper
    assert 0 < expected["network"]["lower"] <= expected["network"]["upper"]
    assert len(r.layers) == len(expected["layers"]) >= 21
    for layer, e in zip(r.layers, expected["layers"]):
        assert (layer.lower, layer.upper) == (e["lower"], e["upper"])
    named = [layer.module for layer in r.layers if layer.module]
    assert "conv1" in named and "fc" in named and any(m.startswith("layer4.") for m in named), named


@needs_torch
def test_a_one_lipschitz_torch_module_gets_a_bound_of_one():
    """Orthogonal layers with MaxMin (as the 1-Lipschitz literature writes it): the bound is
    1 up to the weights' rounding, every layer is named by its module, and a difference
    quotient of the module itself stays below the bound."""

    class MaxMin(torch.nn.Module):
        def forward(self, x):
            a, b = x.chunk(2, dim=1)
            return torch.cat([torch.max(a, b), torch.min(a, b)], dim=1)

    def orthogonal(n_in, n_out):
        layer = torch.nn.utils.parametrizations.orthogonal(torch.nn.Linear(n_in, n_out))
        torch.nn.utils.parametrize.remove_parametrizations(layer, "weight")
        return layer

    torch.manual_seed(1)
    model = torch.nn.Sequential(orthogonal(8, 16), MaxMin(), orthogonal(16, 16), MaxMin(), orthogonal(16, 4))
    r = lipschitz.analyze(model, torch.zeros(1, 8))
    assert r.network.upper <= 1 + 1e-5, r.network
    assert 0.9 <= r.network.lower <= r.network.upper
    assert [layer.module for layer in r.layers] == ["0", "2", "4"]
    x, y = torch.randn(1, 8), torch.randn(1, 8)
    with torch.no_grad():
        quotient = (model(x) - model(y)).norm() / (x - y).norm()
    assert quotient <= r.network.upper
