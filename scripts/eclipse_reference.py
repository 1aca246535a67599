#!/usr/bin/env python3
"""ECLipsE-Fast reference values (Xu & Sivaranjani, NeurIPS 2024) for the ReLU MLP fixtures.

Reads the Gemm weights of tests/fixtures/onnx/{mlp,digits_mlp,digits_mlp3}.onnx and runs the
published ECLipsE-Fast recursion (slopes [0, 1], so m = 1/2 and the αβ term vanishes):

    X_0 = I;  l_i = 1 / (2 m² λ_max(W_i X_{i-1}⁻¹ W_iᵀ));  X_i = l_i I − l_i² m² W_i X_{i-1}⁻¹ W_iᵀ
    L ≤ sqrt(λ_max(W_lᵀ W_l X_{l-1}⁻¹))

in numpy (float64), and writes tests/fixtures/lipsdp/eclipse.json. The crate computes the
same multipliers by another route (block Cholesky of the LipSDP-Neuron matrix) and verifies
them; the tests check that its bound lies within a small tolerance of these values.

    python3 -m venv venv && venv/bin/pip install onnx numpy
    venv/bin/python scripts/eclipse_reference.py

Independent of the Rust code. The output is committed.
"""
import json
import os

import numpy as np
import onnx
from onnx import numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ONNX_DIR = os.path.join(ROOT, "tests", "fixtures", "onnx")
OUT = os.path.join(ROOT, "tests", "fixtures", "lipsdp", "eclipse.json")


def gemm_weights(path):
    """The weight matrices (outputs × inputs) of a Gemm/Relu chain, alpha and transB applied."""
    model = onnx.load(path)
    inits = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    weights = []
    for node in model.graph.node:
        if node.op_type == "Relu":
            continue
        assert node.op_type == "Gemm", node.op_type
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs.get("transA", 0) == 0
        w = inits[node.input[1]]
        w = w if attrs.get("transB", 0) else w.T
        weights.append(attrs.get("alpha", 1.0) * w)
    return weights


def eclipse_fast(weights, alpha=0.0, beta=1.0):
    m = (alpha + beta) / 2
    x = np.eye(weights[0].shape[1])
    for w in weights[:-1]:
        k = w @ np.linalg.inv(x) @ w.T
        k = (k + k.T) / 2
        l = 1.0 / (2 * m * m * np.linalg.eigvalsh(k).max())
        x = l * np.eye(w.shape[0]) - l * l * m * m * k
    w = weights[-1]
    g = w @ np.linalg.inv(x) @ w.T
    return float(np.sqrt(np.linalg.eigvalsh((g + g.T) / 2).max()))


def main():
    out = {}
    for name in ["mlp", "digits_mlp", "digits_mlp3"]:
        weights = gemm_weights(os.path.join(ONNX_DIR, f"{name}.onnx"))
        value = eclipse_fast(weights)
        out[f"{name}.onnx"] = {"eclipse_fast": value}
        print(name, value)
    with open(OUT, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
