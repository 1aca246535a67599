#!/usr/bin/env python3
"""Generates the ONNX test fixtures in tests/fixtures/onnx/ and their reference values.

Everything here is independent of the Rust code: models are written with the `onnx` package's
helpers, reference norms come from explicit matrices built by a NumPy convolution written in
this file and NumPy's SVD, and reference outputs from a NumPy forward pass.

    pip install onnx numpy
    python3 scripts/make_onnx_fixtures.py

The outputs are committed, so the tests need no Python. The demo network bundled into the
`lipschitz` binary (src/bin/lipschitz/demo.onnx) is written too.
"""
import json
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "onnx")
rng = np.random.default_rng(20261124)


# ---- NumPy reference implementations --------------------------------------------------------

def conv2d(x, w, stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), groups=1, circular=False):
    """Cross-correlation on x (C, H, W), weights OIHW, pads [top, left, bottom, right]."""
    c_in, h, wd = x.shape
    c_out, cg, kh, kw = w.shape
    t, l, b, r = pads
    if circular:
        xp = np.pad(x, ((0, 0), (t, b), (l, r)), mode="wrap")
    else:
        xp = np.pad(x, ((0, 0), (t, b), (l, r)))
    dh, dw = dilation
    sh, sw = stride
    ho = (h + t + b - dh * (kh - 1) - 1) // sh + 1
    wo = (wd + l + r - dw * (kw - 1) - 1) // sw + 1
    y = np.zeros((c_out, ho, wo))
    og = c_out // groups
    for o in range(c_out):
        g = o // og
        for c in range(cg):
            for p in range(kh):
                for q in range(kw):
                    patch = xp[g * cg + c, p * dh: p * dh + sh * (ho - 1) + 1: sh,
                               q * dw: q * dw + sw * (wo - 1) + 1: sw]
                    y[o] += w[o, c, p, q] * patch
    return y


def explicit(f, shape):
    """The matrix of a linear map on arrays of `shape`."""
    n = int(np.prod(shape))
    cols = []
    for j in range(n):
        e = np.zeros(n)
        e[j] = 1.0
        cols.append(np.asarray(f(e.reshape(shape))).ravel())
    return np.stack(cols, axis=1)


def sigma(m):
    return float(np.linalg.svd(m, compute_uv=False)[0])


def bn_params(c):
    gamma = rng.uniform(0.5, 1.5, c).astype(np.float32)
    beta = rng.normal(0, 0.1, c).astype(np.float32)
    mean = rng.normal(0, 0.1, c).astype(np.float32)
    var = rng.uniform(0.5, 2.0, c).astype(np.float32)
    return gamma, beta, mean, var


def bn_scale(p, eps=1e-5):
    gamma, beta, mean, var = p
    a = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
    return a, beta - mean * a


def he(shape):
    fan_in = int(np.prod(shape[1:]))
    return (rng.normal(0, 1, shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


# ---- ONNX helpers ---------------------------------------------------------------------------

class Builder:
    def __init__(self, name):
        self.name = name
        self.nodes = []
        self.inits = []
        self.count = 0

    def const(self, arr, name=None):
        self.count += 1
        name = name or f"c{self.count}"
        self.inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def node(self, op, inputs, name=None, **attrs):
        self.count += 1
        name = name or f"{op.lower()}{self.count}"
        out = f"{name}_out"
        self.nodes.append(helper.make_node(op, inputs, [out], name=name, **attrs))
        return out

    def model(self, inp, in_shape, out, opset=13, in_name="input"):
        graph = helper.make_graph(
            self.nodes, self.name,
            [helper.make_tensor_value_info(in_name, TensorProto.FLOAT, in_shape)],
            [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
            self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="lipschitz-fixtures")
        m.ir_version = 8 if opset <= 17 else 9
        # Give the output its inferred type and shape (the checker requires one).
        try:
            inferred = onnx.shape_inference.infer_shapes(m)
            for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
                if vi.name == out and vi.type.tensor_type.HasField("shape"):
                    m.graph.output[0].CopyFrom(vi)
        except Exception:  # broken fixtures stay as they are
            pass
        return m


def save(model, name, external=False):
    path = os.path.join(OUT, name)
    if external:
        data = name + ".data"
        if os.path.exists(os.path.join(OUT, data)):
            os.remove(os.path.join(OUT, data))
        onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data, size_threshold=0)
    else:
        onnx.save_model(model, path)
    onnx.checker.check_model(path)
    return path


refs = {}


def relu(v):
    return np.maximum(v, 0)


# ---- 1. MLP: Gemm (transB) → Relu → Gemm (no trans, alpha) -----------------------------------

def mlp():
    b = Builder("mlp")
    w1 = rng.normal(0, 0.3, (32, 20)).astype(np.float32)
    b1 = rng.normal(0, 0.1, 32).astype(np.float32)
    w2 = rng.normal(0, 0.3, (32, 10)).astype(np.float32)  # stored K×N, transB = 0
    h = b.node("Gemm", ["input", b.const(w1, "fc1.weight"), b.const(b1, "fc1.bias")], "fc1", transB=1)
    h = b.node("Relu", [h], "relu1")
    out = b.node("Gemm", [h, b.const(w2, "fc2.weight")], "fc2", alpha=0.5)
    save(b.model("input", [1, 20], out), "mlp.onnx")
    x = rng.normal(0, 1, 20)
    y = 0.5 * (relu(w1.astype(np.float64) @ x + b1) @ w2.astype(np.float64))
    s1, s2 = sigma(w1.astype(np.float64)), sigma(0.5 * w2.astype(np.float64).T)
    refs["mlp.onnx"] = {"layers": [s1, s2], "network_upper": s1 * s2,
                        "x": x.tolist(), "y": y.tolist()}


# ---- 2. CNN with BatchNorm, pooling and a dense head ----------------------------------------

def cnn_bn():
    b = Builder("cnn_bn")
    w1 = he((6, 3, 3, 3)); bn1 = bn_params(6)
    w2 = he((8, 6, 3, 3)); bn2 = bn_params(8)
    wf = rng.normal(0, 0.3, (5, 8)).astype(np.float32)
    h = b.node("Conv", ["input", b.const(w1, "conv1.weight")], "conv1", pads=[1, 1, 1, 1], kernel_shape=[3, 3])
    h = b.node("BatchNormalization", [h] + [b.const(p, f"bn1.{k}") for p, k in zip(bn1, ["weight", "bias", "mean", "var"])], "bn1")
    h = b.node("Relu", [h], "relu1")
    h = b.node("MaxPool", [h], "pool1", kernel_shape=[2, 2], strides=[2, 2])
    h = b.node("Conv", [h, b.const(w2, "conv2.weight")], "conv2", pads=[1, 1, 1, 1], strides=[2, 2])
    h = b.node("BatchNormalization", [h] + [b.const(p, f"bn2.{k}") for p, k in zip(bn2, ["weight", "bias", "mean", "var"])], "bn2")
    h = b.node("Relu", [h], "relu2")
    h = b.node("GlobalAveragePool", [h], "gap")
    h = b.node("Flatten", [h], "flatten")
    out = b.node("Gemm", [h, b.const(wf, "fc.weight")], "fc", transB=1)
    save(b.model("input", [1, 3, 8, 8], out), "cnn_bn.onnx")

    a1, c1 = bn_scale(bn1)
    a2, c2 = bn_scale(bn2)
    w1f = w1.astype(np.float64) * a1[:, None, None, None]
    w2f = w2.astype(np.float64) * a2[:, None, None, None]
    m1 = explicit(lambda x: conv2d(x, w1f, pads=(1, 1, 1, 1)), (3, 8, 8))
    m2 = explicit(lambda x: conv2d(x, w2f, stride=(2, 2), pads=(1, 1, 1, 1)), (6, 4, 4))
    s1, s2, s3 = sigma(m1), sigma(m2), sigma(wf.astype(np.float64))
    # MaxPool 2×2/2 → 1; GAP over 2×2 → 1/2.
    x = rng.normal(0, 1, (3, 8, 8))
    h = relu(conv2d(x, w1.astype(np.float64), pads=(1, 1, 1, 1)) * a1[:, None, None] + c1[:, None, None])
    h = h.reshape(6, 4, 2, 4, 2).max(axis=(2, 4))
    h = relu(conv2d(h, w2.astype(np.float64), stride=(2, 2), pads=(1, 1, 1, 1)) * a2[:, None, None] + c2[:, None, None])
    y = wf.astype(np.float64) @ h.mean(axis=(1, 2))
    refs["cnn_bn.onnx"] = {"layers": [s1, s2, s3], "network_upper": s1 * s2 * s3 * 0.5,
                           "x": x.ravel().tolist(), "y": y.tolist()}


# ---- 3. Residual block, new-exporter style: opset 18, external data, ReduceMean(axes input),
#         Clip(min/max inputs) as ReLU6, input named x ------------------------------------------

def residual():
    b = Builder("residual")
    c = 4
    w0 = he((c, 2, 3, 3))
    w1 = he((c, c, 3, 3)); bn1 = bn_params(c)
    w2 = he((c, c, 3, 3)); bn2 = bn_params(c)
    wf = rng.normal(0, 0.3, (3, c)).astype(np.float32)
    bf = rng.normal(0, 0.1, 3).astype(np.float32)
    lo, hi = b.const(np.array(0.0, np.float32), "clip_min"), b.const(np.array(6.0, np.float32), "clip_max")
    s = b.node("Conv", ["x", b.const(w0, "stem.weight"), b.const(np.zeros(c, np.float32), "stem.bias")], "stem", pads=[1, 1, 1, 1])
    s = b.node("Clip", [s, lo, hi], "relu6_0")
    h = b.node("Conv", [s, b.const(w1, "conv1.weight")], "conv1", pads=[1, 1, 1, 1])
    h = b.node("BatchNormalization", [h] + [b.const(p, f"bn1.{k}") for p, k in zip(bn1, ["w", "b", "m", "v"])], "bn1")
    h = b.node("Relu", [h], "relu1")
    h = b.node("Conv", [h, b.const(w2, "conv2.weight")], "conv2", pads=[1, 1, 1, 1])
    h = b.node("BatchNormalization", [h] + [b.const(p, f"bn2.{k}") for p, k in zip(bn2, ["w", "b", "m", "v"])], "bn2")
    h = b.node("Add", [h, s], "add")
    h = b.node("Relu", [h], "relu2")
    h = b.node("ReduceMean", [h, b.const(np.array([-1, -2], np.int64), "axes")], "mean", keepdims=0)
    h = b.node("MatMul", [h, b.const(wf.T.copy(), "fc.weight")], "fc")
    out = b.node("Add", [h, b.const(bf, "fc.bias")], "fc_bias")
    save(b.model("x", [1, 2, 6, 6], out, opset=18, in_name="x"), "residual.onnx", external=True)

    a1, _ = bn_scale(bn1)
    a2, _ = bn_scale(bn2)
    m0 = explicit(lambda x: conv2d(x, w0.astype(np.float64), pads=(1, 1, 1, 1)), (2, 6, 6))
    m1 = explicit(lambda x: conv2d(x, w1.astype(np.float64) * a1[:, None, None, None], pads=(1, 1, 1, 1)), (c, 6, 6))
    m2 = explicit(lambda x: conv2d(x, w2.astype(np.float64) * a2[:, None, None, None], pads=(1, 1, 1, 1)), (c, 6, 6))
    s0, s1, s2, s3 = sigma(m0), sigma(m1), sigma(m2), sigma(wf.astype(np.float64))
    upper = s0 * (1 + s1 * s2) * (1 / 6.0) * s3
    x = rng.normal(0, 1, (2, 6, 6))
    a1_, c1_ = bn_scale(bn1)
    a2_, c2_ = bn_scale(bn2)
    st = np.clip(conv2d(x, w0.astype(np.float64), pads=(1, 1, 1, 1)), 0, 6)
    h = relu(conv2d(st, w1.astype(np.float64), pads=(1, 1, 1, 1)) * a1_[:, None, None] + c1_[:, None, None])
    h = conv2d(h, w2.astype(np.float64), pads=(1, 1, 1, 1)) * a2_[:, None, None] + c2_[:, None, None]
    h = relu(h + st).mean(axis=(1, 2))
    y = h @ wf.astype(np.float64).T + bf
    refs["residual.onnx"] = {"layers": [s0, s1, s2, s3], "network_upper": upper,
                             "x": x.ravel().tolist(), "y": y.tolist()}


# ---- 4. Circular conv as Pad(wrap) + Conv, then a zero-Pad merged into a Conv -----------------

def circular():
    b = Builder("circular")
    w1 = he((4, 3, 3, 3))
    w2 = he((4, 4, 3, 3))
    h = b.node("Pad", ["input", b.const(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads1")], "pad1", mode="wrap")
    h = b.node("Conv", [h, b.const(w1, "conv1.weight")], "conv1")
    h = b.node("Tanh", [h], "tanh")
    h = b.node("Pad", [h, b.const(np.array([0, 0, 2, 1, 0, 0, 0, 1], np.int64), "pads2")], "pad2", mode="constant")
    out = b.node("Conv", [h, b.const(w2, "conv2.weight")], "conv2", pads=[0, 1, 1, 0])
    save(b.model("input", [1, 3, 6, 5], out, opset=19), "circular.onnx")
    m1 = explicit(lambda x: conv2d(x, w1.astype(np.float64), pads=(1, 1, 1, 1), circular=True), (3, 6, 5))
    m2 = explicit(lambda x: conv2d(x, w2.astype(np.float64), pads=(2, 2, 1, 1)), (4, 6, 5))
    s1, s2 = sigma(m1), sigma(m2)
    x = rng.normal(0, 1, (3, 6, 5))
    h = np.tanh(conv2d(x, w1.astype(np.float64), pads=(1, 1, 1, 1), circular=True))
    y = conv2d(h, w2.astype(np.float64), pads=(2, 2, 1, 1))
    refs["circular.onnx"] = {"layers": [s1, s2], "network_upper": s1 * s2,
                             "x": x.ravel().tolist(), "y": y.ravel().tolist()}


# ---- 5. Concat (SqueezeNet fire module), depthwise conv, LeakyRelu, Sigmoid-SiLU ----------------

def fire():
    b = Builder("fire")
    ws = he((4, 6, 1, 1))
    we1 = he((5, 4, 1, 1))
    we3 = he((3, 4, 3, 3))
    wd = he((8, 1, 3, 3))
    s = b.node("Conv", ["input", b.const(ws, "squeeze.weight")], "squeeze")
    s = b.node("LeakyRelu", [s], "lrelu", alpha=0.2)
    e1 = b.node("Conv", [s, b.const(we1, "expand1.weight")], "expand1")
    e3 = b.node("Conv", [s, b.const(we3, "expand3.weight")], "expand3", pads=[1, 1, 1, 1])
    h = b.node("Concat", [e1, e3], "concat", axis=1)
    sg = b.node("Sigmoid", [h], "sig")
    h = b.node("Mul", [h, sg], "silu")
    out = b.node("Conv", [h, b.const(wd, "dw.weight")], "dw", group=8, pads=[1, 1, 1, 1])
    save(b.model("input", [1, 6, 5, 5], out), "fire.onnx")
    m_s = explicit(lambda x: conv2d(x, ws.astype(np.float64)), (6, 5, 5))
    m_1 = explicit(lambda x: conv2d(x, we1.astype(np.float64)), (4, 5, 5))
    m_3 = explicit(lambda x: conv2d(x, we3.astype(np.float64), pads=(1, 1, 1, 1)), (4, 5, 5))
    m_d = explicit(lambda x: conv2d(x, wd.astype(np.float64), pads=(1, 1, 1, 1), groups=8), (8, 5, 5))
    ss, s1, s3, sd = sigma(m_s), sigma(m_1), sigma(m_3), sigma(m_d)
    silu = 1.0999
    upper = ss * 1.0 * np.sqrt(s1 ** 2 + s3 ** 2) * silu * sd
    x = rng.normal(0, 1, (6, 5, 5))
    h = conv2d(x, ws.astype(np.float64))
    h = np.where(h >= 0, h, float(np.float32(0.2)) * h)  # ONNX float attributes are f32
    h = np.concatenate([conv2d(h, we1.astype(np.float64)), conv2d(h, we3.astype(np.float64), pads=(1, 1, 1, 1))])
    h = h / (1 + np.exp(-h))
    y = conv2d(h, wd.astype(np.float64), pads=(1, 1, 1, 1), groups=8)
    refs["fire.onnx"] = {"layers": [ss, s1, s3, sd], "network_upper": upper,
                         "x": x.ravel().tolist(), "y": y.ravel().tolist()}


# ---- 6. A linear run: conv → BN → conv with no nonlinearity (merged operator) ---------------

def linear_run():
    b = Builder("linear_run")
    w1 = he((6, 4, 1, 1)); bn = bn_params(6)
    w2 = he((5, 6, 3, 3))
    h = b.node("Conv", ["input", b.const(w1, "project.weight")], "project")
    h = b.node("BatchNormalization", [h] + [b.const(p, f"bn.{k}") for p, k in zip(bn, ["w", "b", "m", "v"])], "bn")
    h = b.node("Conv", [h, b.const(w2, "expand.weight")], "expand", pads=[1, 1, 1, 1])
    out = b.node("AveragePool", [h], "avg", kernel_shape=[2, 2], strides=[2, 2])
    save(b.model("input", [1, 4, 6, 6], out), "linear_run.onnx")
    a, _ = bn_scale(bn)
    w1f = w1.astype(np.float64) * a[:, None, None, None]
    m1 = explicit(lambda x: conv2d(x, w1f), (4, 6, 6))
    m2 = explicit(lambda x: conv2d(x, w2.astype(np.float64), pads=(1, 1, 1, 1)), (6, 6, 6))
    pool = explicit(lambda x: x.reshape(5, 3, 2, 3, 2).mean(axis=(2, 4)), (5, 6, 6))
    exact = sigma(pool @ m2 @ m1)
    refs["linear_run.onnx"] = {"layers": [sigma(m1), sigma(m2)], "network_exact": exact,
                               "network_product": sigma(m1) * sigma(m2) * 0.5}


# ---- 7. Dynamic input shape (needs --input-shape) ------------------------------------------------

def dynamic():
    b = Builder("dynamic")
    w = he((4, 3, 3, 3))
    out = b.node("Conv", ["input", b.const(w, "conv.weight")], "conv", pads=[1, 1, 1, 1])
    out = b.node("Relu", [out], "relu")
    save(b.model("input", ["N", 3, "H", "W"], out), "dynamic.onnx")
    m = explicit(lambda x: conv2d(x, w.astype(np.float64), pads=(1, 1, 1, 1)), (3, 7, 9))
    refs["dynamic.onnx"] = {"input_shape": [1, 3, 7, 9], "layers": [sigma(m)]}


# ---- 8. Broken models for the error paths ------------------------------------------------------

def broken():
    b = Builder("unsupported")
    out = b.node("Cos", ["input"], "cosine")
    save(b.model("input", [1, 4], out), "unsupported_op.onnx")

    b = Builder("missing")
    out = b.node("Conv", ["input", "conv.weight"], "conv")
    m = b.model("input", [1, 3, 8, 8], out)
    onnx.save_model(m, os.path.join(OUT, "missing_initializer.onnx"))

    b = Builder("channels")
    out = b.node("Conv", ["input", b.const(he((4, 5, 3, 3)), "conv.weight")], "conv")
    onnx.save_model(b.model("input", [1, 3, 8, 8], out), os.path.join(OUT, "bad_channels.onnx"))

    b = Builder("nan")
    w = he((4, 3))
    w[1, 2] = np.nan
    out = b.node("Gemm", ["input", b.const(w, "fc.weight")], "fc", transB=1)
    onnx.save_model(b.model("input", [1, 3], out), os.path.join(OUT, "nan_weight.onnx"))

    b = Builder("escape")
    out = b.node("Gemm", ["input", "fc.weight"], "fc", transB=1)
    m = b.model("input", [1, 3], out)
    t = onnx.TensorProto(name="fc.weight", data_type=TensorProto.FLOAT, dims=[2, 3])
    t.data_location = TensorProto.EXTERNAL
    for k, v in [("location", "../../secret.data"), ("offset", "0"), ("length", "24")]:
        e = t.external_data.add()
        e.key, e.value = k, v
    m.graph.initializer.append(t)
    onnx.save_model(m, os.path.join(OUT, "escape_external.onnx"))

    b = Builder("huge")
    out = b.node("Gemm", ["input", "fc.weight"], "fc", transB=1)
    m = b.model("input", [1, 1000000], out)
    t = onnx.TensorProto(name="fc.weight", data_type=TensorProto.FLOAT, dims=[1000000, 1000000])
    m.graph.initializer.append(t)
    onnx.save_model(m, os.path.join(OUT, "huge_tensor.onnx"))

    m = onnx.ModelProto(ir_version=8)
    m.opset_import.append(helper.make_opsetid("", 13))
    onnx.save_model(m, os.path.join(OUT, "no_graph.onnx"))


# ---- Demo network bundled in the binary ------------------------------------------------------

def demo():
    """A small CNN for 32×32 RGB images: conv-BN-ReLU stem, one residual block, a strided
    conv, global pooling and a dense head. Random (He) weights and BatchNorm statistics."""
    b = Builder("demo_resnet")
    def conv_bn(x, cin, cout, name, stride=1, relu_after=True):
        w = he((cout, cin, 3, 3))
        h = b.node("Conv", [x, b.const(w, f"{name}.weight")], name, pads=[1, 1, 1, 1], strides=[stride, stride])
        p = bn_params(cout)
        h = b.node("BatchNormalization", [h] + [b.const(v, f"{name}_bn.{k}") for v, k in zip(p, ["weight", "bias", "running_mean", "running_var"])], f"{name}_bn")
        return b.node("Relu", [h], f"{name}_relu") if relu_after else h
    h = conv_bn("input", 3, 16, "stem")
    r = conv_bn(h, 16, 16, "block1_conv1")
    r = conv_bn(r, 16, 16, "block1_conv2", relu_after=False)
    h = b.node("Add", [r, h], "block1_add")
    h = b.node("Relu", [h], "block1_relu")
    h = b.node("MaxPool", [h], "pool", kernel_shape=[2, 2], strides=[2, 2])
    h = conv_bn(h, 16, 32, "down", stride=2)
    h = b.node("GlobalAveragePool", [h], "gap")
    h = b.node("Flatten", [h], "flatten")
    w = rng.normal(0, np.sqrt(1 / 32), (10, 32)).astype(np.float32)
    out = b.node("Gemm", [h, b.const(w, "fc.weight"), b.const(np.zeros(10, np.float32), "fc.bias")], "fc", transB=1)
    path = os.path.join(ROOT, "src", "bin", "lipschitz", "demo.onnx")
    onnx.save_model(b.model("input", [1, 3, 32, 32], out), path)
    onnx.checker.check_model(path)


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    mlp()
    cnn_bn()
    residual()
    circular()
    fire()
    linear_run()
    dynamic()
    broken()
    demo()
    with open(os.path.join(OUT, "reference.json"), "w") as f:
        json.dump(refs, f, indent=1)
    print("wrote", sorted(os.listdir(OUT)))
