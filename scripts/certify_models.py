#!/usr/bin/env python3
"""Small classifiers trained on scikit-learn's bundled `load_digits`, for `lipschitz certify`.

Writes tests/fixtures/certify/:
- mlp.onnx      Gemm/Relu 64-64-64-10, input (1, 64)
- cnn.onnx      Conv 1→8 3×3 pad 1, Relu, Conv 8→8 3×3 stride 2 pad 1, Relu, Flatten,
                Gemm 128→10; input (1, 1, 8, 8)
- lip_cnn.onnx  Conv 1→8, Relu, Conv 8→16 stride 2, Relu, Flatten, Gemm 256→10, every
                layer projected after each step onto spectral norm ≤ 1 (the exact norm of the
                zero-padded conv at 8×8, from its explicit matrix): a 1-Lipschitz network
- gs_cnn.onnx   the same with GroupSort-2 (MaxMin over channel halves) instead of Relu, the
                1-Lipschitz design of Anil et al. 2019. ONNX has no MaxMin: it is written
                exactly with supported operators, max(a, b) = b + relu(a − b) and
                min(a, b) = a − relu(a − b), where a, b and a − b are 1×1 convolutions
                selecting the channel halves (weights 0 and ±1, exact in float32)
- x_test.npy    float32 (360, 1, 8, 8), pixels scaled to [0, 1]; the held-out split
- y_test.npy    int64 (360,)
- subset.npz    arrays x (float64, 40×64, flattened) and y (int32): the first 40 test
                samples in another layout, dtype and container
- logits_<model>.npy  float64 (360, 10): each model's logits on x_test computed here by NumPy,
                an independent reference for the crate's forward pass and margins

    python3 -m venv venv && venv/bin/pip install onnx numpy scikit-learn
    venv/bin/python scripts/certify_models.py

Independent of the Rust code. The outputs are committed.
"""
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_digits

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "certify")


# --- layers (forward and backward by hand; batch-first, float64) ---------------------------

def im2col(x, stride, pad):
    """(B, C, H, W) → (B, C·9, Ho·Wo) for a 3×3 kernel."""
    b, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho = (h + 2 * pad - 3) // stride + 1
    wo = (w + 2 * pad - 3) // stride + 1
    cols = np.empty((b, c, 9, ho, wo))
    for p in range(3):
        for q in range(3):
            cols[:, :, 3 * p + q] = xp[:, :, p:p + stride * ho:stride, q:q + stride * wo:stride]
    return cols.reshape(b, c * 9, ho * wo), (ho, wo)


def col2im(dcols, shape, stride, pad, out_hw):
    b, c, h, w = shape
    ho, wo = out_hw
    dcols = dcols.reshape(b, c, 9, ho, wo)
    dxp = np.zeros((b, c, h + 2 * pad, w + 2 * pad))
    for p in range(3):
        for q in range(3):
            dxp[:, :, p:p + stride * ho:stride, q:q + stride * wo:stride] += dcols[:, :, 3 * p + q]
    return dxp[:, :, pad:pad + h, pad:pad + w]


class Conv:
    def __init__(self, rng, cin, cout, stride):
        self.w = rng.normal(0, np.sqrt(2 / (9 * cin)), (cout, cin, 3, 3))
        self.b = np.zeros(cout)
        self.stride = stride

    def params(self):
        return [self.w, self.b]

    def forward(self, x):
        self.shape = x.shape
        self.cols, self.hw = im2col(x, self.stride, 1)
        y = np.einsum("ok,bkn->bon", self.w.reshape(self.w.shape[0], -1), self.cols)
        return (y + self.b[None, :, None]).reshape(x.shape[0], -1, *self.hw)

    def backward(self, dy):
        dy = dy.reshape(dy.shape[0], dy.shape[1], -1)
        dw = np.einsum("bon,bkn->ok", dy, self.cols).reshape(self.w.shape)
        db = dy.sum(axis=(0, 2))
        dcols = np.einsum("ok,bon->bkn", self.w.reshape(self.w.shape[0], -1), dy)
        return col2im(dcols, self.shape, self.stride, 1, self.hw), [dw, db]

    def matrix(self, in_shape):
        """The explicit matrix of the zero-padded conv (bias left out) at this input size."""
        n = int(np.prod(in_shape))
        basis = np.eye(n).reshape(n, *in_shape)
        cols, hw = im2col(basis, self.stride, 1)
        y = np.einsum("ok,bkn->bon", self.w.reshape(self.w.shape[0], -1), cols)
        return y.reshape(n, -1).T


class Dense:
    def __init__(self, rng, n_in, n_out):
        self.w = rng.normal(0, np.sqrt(2 / n_in), (n_out, n_in))
        self.b = np.zeros(n_out)

    def params(self):
        return [self.w, self.b]

    def forward(self, x):
        self.x = x
        return x @ self.w.T + self.b

    def backward(self, dy):
        return dy @ self.w, [dy.T @ self.x, dy.sum(axis=0)]

    def matrix(self, _):
        return self.w


class Relu:
    def params(self):
        return []

    def forward(self, x):
        self.mask = x > 0
        return x * self.mask

    def backward(self, dy):
        return dy * self.mask, []


class MaxMin:
    """GroupSort with groups of 2 over the channel halves: [max(a, b), min(a, b)]."""

    def params(self):
        return []

    def forward(self, x):
        h = x.shape[1] // 2
        a, b = x[:, :h], x[:, h:]
        self.mask = a >= b
        return np.concatenate([np.where(self.mask, a, b), np.where(self.mask, b, a)], axis=1)

    def backward(self, dy):
        h = dy.shape[1] // 2
        dmax, dmin = dy[:, :h], dy[:, h:]
        da = np.where(self.mask, dmax, dmin)
        db = np.where(self.mask, dmin, dmax)
        return np.concatenate([da, db], axis=1), []


class Flatten:
    def params(self):
        return []

    def forward(self, x):
        self.shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dy):
        return dy.reshape(self.shape), []


def forward(layers, x):
    for layer in layers:
        x = layer.forward(x)
    return x


def train(layers, x, y, epochs, seed, scale=1.0, project=None):
    """Adam on the cross-entropy of `scale`·logits; `project` runs after every step."""
    rng = np.random.default_rng(seed)
    params = [p for layer in layers for p in layer.params()]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    step = 0
    for epoch in range(epochs):
        lr = 3e-3 if epoch < epochs * 0.7 else 6e-4
        order = rng.permutation(len(x))
        for start in range(0, len(x), 64):
            idx = order[start:start + 64]
            logits = scale * forward(layers, x[idx])
            logits -= logits.max(axis=1, keepdims=True)
            prob = np.exp(logits)
            prob /= prob.sum(axis=1, keepdims=True)
            prob[np.arange(len(idx)), y[idx]] -= 1
            grad = scale * prob / len(idx)
            grads = []
            for layer in reversed(layers):
                grad, g = layer.backward(grad)
                grads = g + grads
            step += 1
            for p, g, mi, vi in zip(params, grads, m, v):
                mi *= 0.9
                mi += 0.1 * g
                vi *= 0.999
                vi += 0.001 * g * g
                p -= lr * (mi / (1 - 0.9 ** step)) / (np.sqrt(vi / (1 - 0.999 ** step)) + 1e-8)
            if project:
                project()
    return layers


def spectral_projection(layers, in_shapes):
    """Divides each conv/dense weight by its exact spectral norm when that exceeds 1."""
    def project():
        for layer, shape in zip(layers, in_shapes):
            if shape is None:
                continue
            sigma = np.linalg.norm(layer.matrix(shape), 2)
            if sigma > 1:
                layer.w /= sigma
    return project


# --- ONNX ------------------------------------------------------------------------------------

def write_onnx(layers, input_shape, path, name):
    nodes, inits = [], []
    value = "x"
    for k, layer in enumerate(layers):
        out = f"v{k}"
        if isinstance(layer, Conv):
            inits += [numpy_helper.from_array(layer.w.astype(np.float32), f"w{k}"),
                      numpy_helper.from_array(layer.b.astype(np.float32), f"b{k}")]
            nodes.append(helper.make_node("Conv", [value, f"w{k}", f"b{k}"], [out],
                                          kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                                          strides=[layer.stride] * 2, name=f"conv{k}"))
        elif isinstance(layer, Dense):
            inits += [numpy_helper.from_array(layer.w.astype(np.float32), f"w{k}"),
                      numpy_helper.from_array(layer.b.astype(np.float32), f"b{k}")]
            nodes.append(helper.make_node("Gemm", [value, f"w{k}", f"b{k}"], [out], transB=1,
                                          name=f"fc{k}"))
        elif isinstance(layer, Relu):
            nodes.append(helper.make_node("Relu", [value], [out], name=f"relu{k}"))
        elif isinstance(layer, MaxMin):
            c = layer.channels
            h = c // 2
            eye = np.eye(h, dtype=np.float32)
            zero = np.zeros((h, h), dtype=np.float32)
            for part, w in [("a", np.hstack([eye, zero])), ("b", np.hstack([zero, eye])),
                            ("d", np.hstack([eye, -eye]))]:
                inits.append(numpy_helper.from_array(w.reshape(h, c, 1, 1), f"sel{k}{part}"))
                nodes.append(helper.make_node("Conv", [value, f"sel{k}{part}"], [f"{out}{part}"],
                                              kernel_shape=[1, 1], name=f"maxmin{k}_{part}"))
            nodes.append(helper.make_node("Relu", [f"{out}d"], [f"{out}r"], name=f"maxmin{k}_relu"))
            nodes.append(helper.make_node("Add", [f"{out}b", f"{out}r"], [f"{out}max"],
                                          name=f"maxmin{k}_max"))
            nodes.append(helper.make_node("Sub", [f"{out}a", f"{out}r"], [f"{out}min"],
                                          name=f"maxmin{k}_min"))
            nodes.append(helper.make_node("Concat", [f"{out}max", f"{out}min"], [out], axis=1,
                                          name=f"maxmin{k}"))
        else:
            nodes.append(helper.make_node("Flatten", [value], [out], name=f"flatten{k}"))
        value = out
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, *input_shape])],
        [helper.make_tensor_value_info(value, TensorProto.FLOAT, [1, 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    onnx.save(model, path)


def round_weights(layers):
    """The network as stored: weights rounded to float32 (then evaluated in float64)."""
    for layer in layers:
        for p in layer.params():
            p[...] = p.astype(np.float32).astype(np.float64)


def main():
    os.makedirs(OUT, exist_ok=True)
    images, labels = load_digits(return_X_y=True)
    images = (images / 16.0).astype(np.float32).astype(np.float64)
    order = np.random.default_rng(0).permutation(len(images))
    test, train_idx = order[:360], order[360:]
    x_train, y_train = images[train_idx], labels[train_idx]
    x_test, y_test = images[test], labels[test]

    rng = np.random.default_rng(1)
    models = {
        "mlp": ([Dense(rng, 64, 64), Relu(), Dense(rng, 64, 64), Relu(), Dense(rng, 64, 10)],
                (64,), None, 1.0, 60),
        "cnn": ([Conv(rng, 1, 8, 1), Relu(), Conv(rng, 8, 8, 2), Relu(), Flatten(),
                 Dense(rng, 128, 10)], (1, 8, 8), None, 1.0, 60),
        "lip_cnn": ([Conv(rng, 1, 8, 1), Relu(), Conv(rng, 8, 16, 2), Relu(), Flatten(),
                     Dense(rng, 256, 10)], (1, 8, 8),
                    [(1, 8, 8), None, (8, 8, 8), None, None, (256,)], 24.0, 100),
        "gs_cnn": ([Conv(rng, 1, 8, 1), MaxMin(), Conv(rng, 8, 16, 2), MaxMin(), Flatten(),
                    Dense(rng, 256, 10)], (1, 8, 8),
                   [(1, 8, 8), None, (8, 8, 8), None, None, (256,)], 24.0, 100),
    }
    only = os.environ.get("ONLY")  # retrain one model: ONLY=gs_cnn
    for name, (layers, shape, norm_shapes, scale, epochs) in models.items():
        if only and name != only:
            continue
        for layer, prev in zip(layers[1:], layers):
            if isinstance(layer, MaxMin):
                layer.channels = prev.w.shape[0]
        xs = x_train.reshape(-1, *shape)
        project = spectral_projection(layers, norm_shapes) if norm_shapes else None
        if project:
            project()
        train(layers, xs, y_train, epochs, 2, scale=scale, project=project)
        round_weights(layers)
        logits = forward(layers, x_test.reshape(-1, *shape))
        accuracy = np.mean(logits.argmax(axis=1) == y_test)
        print(f"{name}: test accuracy {accuracy:.3f}")
        write_onnx(layers, shape, os.path.join(OUT, f"{name}.onnx"), name)
        np.save(os.path.join(OUT, f"logits_{name}.npy"), logits)
    if only:
        return
    np.save(os.path.join(OUT, "x_test.npy"), x_test.reshape(-1, 1, 8, 8).astype(np.float32))
    np.save(os.path.join(OUT, "y_test.npy"), y_test.astype(np.int64))
    np.savez(os.path.join(OUT, "subset.npz"), x=x_test[:40].astype(np.float64),
             y=y_test[:40].astype(np.int32))


if __name__ == "__main__":
    main()
