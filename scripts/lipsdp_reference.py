#!/usr/bin/env python3
"""Trained test networks and LipSDP-Neuron reference values from an independent solver.

1. Trains two ReLU MLPs on scikit-learn's bundled `load_digits` (8×8 images scaled to [0, 1],
   64 inputs, 10 classes) and writes them as ONNX (Gemm/Relu) to tests/fixtures/onnx/:
   digits_mlp.onnx (64-100-100-10) and digits_mlp3.onnx (64-128-128-128-10).
2. Solves LipSDP-Neuron (Fazlyab et al. 2019, slopes [0, 1], one multiplier per neuron) for
   those and for mlp.onnx with cvxpy — Clarabel where the LMI is small, SCS otherwise — and
   writes tests/fixtures/lipsdp/reference.json: the solver's √ρ per network (a solver value,
   not a certificate: the tests check that the crate's verified bound lies within a small
   tolerance of it).

    python3 -m venv venv && venv/bin/pip install onnx numpy cvxpy scikit-learn
    venv/bin/python scripts/lipsdp_reference.py

Everything is independent of the Rust code. The outputs are committed.
"""
import json
import os
import time

import cvxpy as cp
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_digits
from sklearn.neural_network import MLPClassifier

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ONNX_DIR = os.path.join(ROOT, "tests", "fixtures", "onnx")
OUT = os.path.join(ROOT, "tests", "fixtures", "lipsdp", "reference.json")


def train(hidden, seed):
    x, y = load_digits(return_X_y=True)
    clf = MLPClassifier(hidden_layer_sizes=hidden, random_state=seed, max_iter=400)
    clf.fit(x / 16.0, y)
    print(f"digits MLP {hidden}: train accuracy {clf.score(x / 16.0, y):.3f}")
    # sklearn: h = relu(x @ W + b) with W (in, out); ONNX Gemm with transB: W (out, in).
    return [(w.T.astype(np.float32), b.astype(np.float32)) for w, b in zip(clf.coefs_, clf.intercepts_)]


def write_mlp(layers, path):
    nodes, inits = [], []
    value = "input"
    for k, (w, b) in enumerate(layers):
        inits += [numpy_helper.from_array(w, f"w{k}"), numpy_helper.from_array(b, f"b{k}")]
        out = f"fc{k}"
        nodes.append(helper.make_node("Gemm", [value, f"w{k}", f"b{k}"], [out], transB=1))
        value = out
        if k + 1 < len(layers):
            nodes.append(helper.make_node("Relu", [out], [f"relu{k}"]))
            value = f"relu{k}"
    graph = helper.make_graph(
        nodes,
        "digits_mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, layers[0][0].shape[1]])],
        [helper.make_tensor_value_info(value, TensorProto.FLOAT, [1, layers[-1][0].shape[0]])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    onnx.save(model, path)


def read_mlp(path):
    """The weight matrices (out, in) of a Gemm/Relu chain, in float64 (the values the f32
    tensors hold exactly)."""
    m = onnx.load(path)
    inits = {i.name: numpy_helper.to_array(i).astype(np.float64) for i in m.graph.initializer}
    ws = []
    for n in m.graph.node:
        if n.op_type != "Gemm":
            continue
        a = {x.name: helper.get_attribute_value(x) for x in n.attribute}
        w = inits[n.input[1]]
        w = w if a.get("transB", 0) else w.T
        ws.append(a.get("alpha", 1.0) * w)
    return ws


def lipsdp(ws):
    """min √ρ s.t. the LipSDP-Neuron LMI over (x, w_1..w_K) holds, slopes [0, 1]."""
    n0 = ws[0].shape[1]
    hidden = [w.shape[0] for w in ws[:-1]]
    n = n0 + sum(hidden)
    offs = np.cumsum([n0] + hidden)  # start of w_k is offs[k-1] for k >= 1
    rho = cp.Variable(nonneg=True)
    ts = [cp.Variable(h, nonneg=True) for h in hidden]
    ey = np.zeros((ws[-1].shape[0], n))
    ey[:, offs[-2]:offs[-1]] = ws[-1]
    m = ey.T @ ey - rho * np.diag(np.r_[np.ones(n0), np.zeros(n - n0)])
    for k, (w, t) in enumerate(zip(ws[:-1], ts)):
        src = 0 if k == 0 else offs[k - 1]
        z = np.zeros((w.shape[0], n))
        z[:, src:src + w.shape[1]] = w
        e = np.zeros((w.shape[0], n))
        e[:, offs[k]:offs[k] + w.shape[0]] = np.eye(w.shape[0])
        tz = cp.multiply(cp.reshape(t, (w.shape[0], 1), order="F"), z)
        m = m + e.T @ tz + tz.T @ e - 2 * e.T @ cp.multiply(cp.reshape(t, (w.shape[0], 1), order="F"), e)
    problem = cp.Problem(cp.Minimize(rho), [(m + m.T) / 2 << 0])
    solver = cp.CLARABEL if n <= 120 else cp.SCS
    kwargs = {} if solver == cp.CLARABEL else {"eps": 1e-6, "max_iters": 50000}
    started = time.time()
    problem.solve(solver=solver, **kwargs)
    return float(np.sqrt(rho.value)), solver, time.time() - started, n


def main():
    write_mlp(train((100, 100), 0), os.path.join(ONNX_DIR, "digits_mlp.onnx"))
    write_mlp(train((128, 128, 128), 1), os.path.join(ONNX_DIR, "digits_mlp3.onnx"))
    out = {}
    for name in ["mlp.onnx", "digits_mlp.onnx", "digits_mlp3.onnx"]:
        ws = read_mlp(os.path.join(ONNX_DIR, name))
        value, solver, seconds, n = lipsdp(ws)
        product = float(np.prod([np.linalg.norm(w, 2) for w in ws]))
        print(f"{name}: LMI {n}, LipSDP-Neuron {value:.6f} ({solver}, {seconds:.1f} s), product {product:.6f}")
        out[name] = {"lipsdp": value, "solver": solver, "seconds": round(seconds, 1), "lmi_size": n,
                     "product": product}
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
