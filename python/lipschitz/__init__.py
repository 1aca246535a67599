"""Certified Lipschitz constants of neural networks, from Python.

Every answer is an interval: ``lower`` is attained (a vector, or a pair of inputs, reaches
it), ``upper`` is proven (``certificate`` says how: ``exact``, ``deterministic`` or
``probabilistic(delta=…)``).

>>> import numpy as np, lipschitz
>>> b = lipschitz.dense_norm(np.diag([3.0, 1.0]))
>>> b.lower <= 3.0 <= b.upper
True

``analyze`` and ``certify`` take a path, ONNX bytes, or a ``torch.nn.Module`` (exported to
ONNX with an example input; torch, onnx and onnxscript are optional dependencies).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ._lipschitz import LipschitzError, __version__  # noqa: F401
from . import _lipschitz

__all__ = [
    "Bound",
    "Layer",
    "Method",
    "NetworkBound",
    "Report",
    "Sample",
    "Certification",
    "LipschitzError",
    "dense_norm",
    "conv2d_norm",
    "analyze",
    "certify",
]


#: The crate's defaults (seed, memory limit, lower-bound samples, method limits).
DEFAULTS: Dict[str, Any] = json.loads(_lipschitz.defaults_json())


class _Record:
    def to_dict(self) -> Dict[str, Any]:
        """The fields as a plain dict (nested records too)."""
        return asdict(self)  # type: ignore[call-overload]


@dataclass(frozen=True)
class Bound(_Record):
    """A certified interval ``lower ≤ ‖W‖₂ ≤ upper``."""

    lower: float
    upper: float
    certificate: str
    method: str = ""
    iterations: int = 0
    seconds: float = 0.0

    def __repr__(self) -> str:
        return f"Bound([{self.lower:.8g}, {self.upper:.8g}], {self.certificate}, {self.method})"


@dataclass(frozen=True)
class Layer(_Record):
    """One linear layer of a network (Conv, Gemm, MatMul) with its interval."""

    name: str
    op: str
    input_shape: List[int]
    output_shape: List[int]
    lower: float
    upper: float
    certificate: str
    seconds: float
    folded: List[str] = field(default_factory=list)
    module: Optional[str] = None
    #: In words, the route the layer's bound took and why (which bound gave each end,
    #: which operator the iterations used).
    route: str = ""

    def __repr__(self) -> str:
        where = self.module or self.name
        return f"Layer({where}: {self.op} [{self.lower:.6g}, {self.upper:.6g}] {self.certificate})"


@dataclass(frozen=True)
class Method(_Record):
    """One network bound: ``product``, ``liplt``, ``eclipse`` or ``lipsdp``."""

    name: str
    upper: float
    certificate: str
    seconds: float


@dataclass(frozen=True)
class NetworkBound(_Record):
    """The network's certified ``upper`` bound, the ``lower`` bound a pair of inputs attains,
    and every method computed."""

    lower: Optional[float]
    upper: float
    certificate: str
    method: str
    methods: List[Method]
    notes: List[str]

    def __repr__(self) -> str:
        return f"NetworkBound([{self.lower}, {self.upper:.8g}], {self.certificate}, by {self.method})"


@dataclass(frozen=True)
class Report(_Record):
    """What ``analyze`` found: every linear layer and the network bounds."""

    model: str
    input_shape: List[int]
    layers: List[Layer]
    network: NetworkBound
    seconds: float
    raw: Dict[str, Any] = field(repr=False, compare=False)

    def to_pandas(self):  # pragma: no cover - needs pandas
        """The layers as a ``pandas.DataFrame`` (pandas must be installed)."""
        import pandas as pd

        return pd.DataFrame([layer.to_dict() for layer in self.layers])

    def __repr__(self) -> str:
        return (
            f"Report({self.model}: {len(self.layers)} layers, "
            f"L ∈ [{self.network.lower}, {self.network.upper:.8g}] by {self.network.method})"
        )


@dataclass(frozen=True)
class Sample(_Record):
    """One sample's prediction, margin and certified ℓ2 radii."""

    label: int
    predicted: int
    margin: float
    radius_global: float
    radius_pairwise: Optional[float]
    radius_local: Optional[float]


@dataclass(frozen=True)
class Certification(_Record):
    """What ``certify`` found: the constant, clean and certified accuracy, every sample."""

    model: str
    n: int
    clean_accuracy: float
    lipschitz: Dict[str, Any]
    eps: List[float]
    certified_accuracy: Dict[str, Optional[List[float]]]
    samples: List[Sample]
    probabilistic: bool
    notes: List[str]
    seconds: float
    raw: Dict[str, Any] = field(repr=False, compare=False)

    def __repr__(self) -> str:
        acc = self.certified_accuracy
        return (
            f"Certification({self.n} samples, clean {self.clean_accuracy:.4f}, "
            f"L ≤ {self.lipschitz['upper']:.6g}; at eps {self.eps}: global {acc['global']}, "
            f"pairwise {acc['pairwise']}, local {acc['local']})"
        )


def _array(x: Any, dtype=None) -> np.ndarray:
    """A NumPy array from an array-like or a torch tensor (detached, moved to the CPU)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(x, dtype=dtype))


def _pair(v: Union[int, Sequence[int]], name: str) -> List[int]:
    if isinstance(v, int):
        return [v, v]
    v = list(v)
    if len(v) != 2:
        raise LipschitzError(f"{name} = {v}: expected an int or two ints")
    return [int(a) for a in v]


def dense_norm(
    W: Any, rtol: float = 1e-6, method: str = "auto", seed: Optional[int] = None, threads: int = 0
) -> Bound:
    """``‖W‖₂`` of a dense matrix (rows = outputs, as ``torch.nn.Linear.weight``).

    float32 arrays are read in place; float64 ones are rounded to float32 and the interval
    widened by the rounding, so that it holds for the doubles. ``method``: auto, exact,
    lanczos, block-lanczos or power.
    """
    w = _array(W)
    if w.dtype != np.float64:
        w = np.ascontiguousarray(w, dtype=np.float32)
    if w.ndim != 2:
        raise LipschitzError(f"W has shape {w.shape}: expected a matrix")
    seed = DEFAULTS["seed"] if seed is None else seed
    return Bound(**json.loads(_lipschitz.dense_norm_json(w, rtol, method, seed, threads)))


def conv2d_norm(
    weight: Any,
    input_size: Union[int, Sequence[int]],
    stride: Union[int, Sequence[int]] = 1,
    padding: Union[int, Sequence[int]] = 0,
    dilation: Union[int, Sequence[int]] = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
    rtol: float = 1e-4,
    seed: Optional[int] = None,
    threads: int = 0,
) -> Bound:
    """``‖W‖₂`` of a 2-D convolution with OIHW weights (``torch.nn.Conv2d.weight``) on
    images of ``input_size`` (H, W), as PyTorch computes it: ``padding`` is an int, (pad_h,
    pad_w) or (top, left, bottom, right); ``padding_mode`` is "zeros" or "circular"."""
    w = _array(weight, dtype=np.float32)
    if w.ndim != 4:
        raise LipschitzError(f"weight has shape {w.shape}: expected (out, in/groups, kH, kW)")
    if isinstance(padding, int):
        pads = [padding] * 4
    else:
        p = [int(a) for a in padding]
        pads = p * 2 if len(p) == 2 else p
        if len(pads) != 4:
            raise LipschitzError(f"padding = {padding}: expected 1, 2 or 4 ints")
    seed = DEFAULTS["seed"] if seed is None else seed
    out = _lipschitz.conv2d_norm_json(
        w,
        _pair(input_size, "input_size"),
        _pair(stride, "stride"),
        pads,
        _pair(dilation, "dilation"),
        int(groups),
        padding_mode,
        rtol,
        seed,
        threads,
    )
    return Bound(**json.loads(out))


def _network_args(input_shape: Optional[Sequence[int]], rtol: float, method: str, threads: int,
                  **limits: Optional[float]) -> Dict[str, Any]:
    """The options dict the native functions take; ``None`` limits get the crate's defaults."""
    args: Dict[str, Any] = {
        "input_shape": None if input_shape is None else [int(d) for d in input_shape],
        "rtol": float(rtol),
        "method": method,
        "threads": int(threads),
    }
    for key, value in limits.items():
        args[key] = DEFAULTS[key] if value is None else value
    for key in ("seed", "lower_samples", "lipsdp_max_size", "eclipse_max_size", "memory_limit_mb"):
        args[key] = int(args[key])
    args["liplt_max_work"] = float(args["liplt_max_work"])
    return args


def _is_torch_module(model: Any) -> bool:
    try:
        import torch
    except ImportError:
        return False
    return isinstance(model, torch.nn.Module)


def _export(model: Any, example_input: Any, directory: str) -> Tuple[str, Dict[str, str]]:
    """Exports a torch module to ``directory``/model.onnx; returns the path and, for each
    Conv/Gemm/MatMul node, the torch module its weight belongs to."""
    import torch

    if example_input is None:
        raise LipschitzError("a torch module needs example_input (e.g. torch.zeros(1, 3, 224, 224))")
    path = os.path.join(directory, "model.onnx")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            torch.onnx.export(model, (example_input,), path, verbose=False)
    finally:
        model.train(was_training)
    modules: Dict[str, str] = {}
    try:
        import onnx

        graph = onnx.load(path, load_external_data=False).graph
        weights = {i.name for i in graph.initializer}
        for node in graph.node:
            if node.op_type in ("Conv", "Gemm", "MatMul") and len(node.input) > 1:
                w = node.input[1]
                if w in weights and w.endswith(".weight"):
                    modules[node.name] = w[: -len(".weight")]
    except ImportError:  # pragma: no cover - onnx comes with the torch extra
        pass
    return path, modules


def _with_model(model: Any, example_input: Any, run):
    """Calls ``run(source, modules)`` with a path or bytes (torch modules exported first)."""
    if _is_torch_module(model):
        with tempfile.TemporaryDirectory(prefix="lipschitz-") as d:
            path, modules = _export(model, example_input, d)
            return run(path, modules)
    if isinstance(model, (bytes, bytearray, memoryview)):
        return run(bytes(model), {})
    return run(os.fspath(model), {})


def analyze(
    model: Any,
    example_input: Any = None,
    rtol: float = 1e-4,
    method: str = "auto",
    lower_samples: Optional[int] = None,
    input_shape: Optional[Sequence[int]] = None,
    seed: Optional[int] = None,
    threads: int = 0,
    memory_limit_mb: Optional[int] = None,
    lipsdp_max_size: Optional[int] = None,
    eclipse_max_size: Optional[int] = None,
    liplt_max_work: Optional[float] = None,
) -> Report:
    """Certified bounds of a network: every linear layer's interval, the network's upper
    bound (the smallest of product, LipLT, ECLipsE-Fast and LipSDP-Neuron that applies) and
    an attained lower bound (``lower_samples`` = 0 skips it).

    ``model`` is a path to an .onnx file, ONNX bytes, or a ``torch.nn.Module`` (exported to
    ONNX with ``example_input``; its layers are then named by their module path). The
    numbers are those of ``lipschitz analyze --json`` on the same file.
    """
    if example_input is not None and input_shape is None:
        input_shape = list(_array(example_input).shape)
    args = _network_args(
        input_shape, rtol, method, threads, seed=seed, lower_samples=lower_samples,
        memory_limit_mb=memory_limit_mb, lipsdp_max_size=lipsdp_max_size,
        eclipse_max_size=eclipse_max_size, liplt_max_work=liplt_max_work,
    )

    def run(source, modules):
        raw = json.loads(_lipschitz.analyze_json(source, args))
        if _is_torch_module(model):
            raw["model"] = f"torch module {type(model).__name__}"
        return _report(raw, modules)

    return _with_model(model, example_input, run)


def _report(raw: Dict[str, Any], modules: Dict[str, str]) -> Report:
    layers = [
        Layer(
            name=l["name"],
            op=l["op"],
            input_shape=l["input_shape"],
            output_shape=l["output_shape"],
            lower=l["lower"],
            upper=l["upper"],
            certificate=l["certificate"],
            seconds=l["seconds"],
            folded=l.get("folded", []),
            module=l.get("module") or modules.get(l["name"]),
            route=l.get("route", ""),
        )
        for l in raw["layers"]
    ]
    n = raw["network"]
    network = NetworkBound(
        lower=n["lower"],
        upper=n["upper"],
        certificate=n["certificate"],
        method=n["method"],
        methods=[Method(m["name"], m["upper"], m["certificate"], m["seconds"]) for m in n["methods"]],
        notes=n.get("notes", []),
    )
    return Report(
        model=raw["model"],
        input_shape=raw["input_shape"],
        layers=layers,
        network=network,
        seconds=raw["seconds"],
        raw=raw,
    )


def certify(
    model: Any,
    inputs: Any,
    labels: Any,
    eps: Sequence[float] = (36 / 255, 72 / 255, 108 / 255),
    local: bool = False,
    deterministic: bool = False,
    method: str = "auto",
    example_input: Any = None,
    seed: Optional[int] = None,
    threads: int = 0,
    memory_limit_mb: Optional[int] = None,
    lipsdp_max_size: Optional[int] = None,
    eclipse_max_size: Optional[int] = None,
    liplt_max_work: Optional[float] = None,
) -> Certification:
    """Certified robustness: each sample's prediction and the ℓ2 radii within which no input
    changes it (global ``margin/(√2·L)``, per class pair, and with ``local`` the constant on
    the ball around the sample), and the certified accuracy at each ``eps``.

    ``inputs``: N samples in the model's input layout (or flattened); ``labels``: N class
    indices. ``model`` as in ``analyze`` (a torch module is exported with
    ``example_input``, by default the first sample). The numbers are those of
    ``lipschitz certify --json``.
    """
    x = _array(inputs, dtype=np.float64)
    y = _array(labels).astype(np.int64).reshape(-1)
    if example_input is None and _is_torch_module(model):
        import torch

        example_input = torch.as_tensor(x[:1], dtype=torch.float32)
    args = _network_args(
        None, 1e-4, method, threads, seed=seed, lower_samples=0,
        memory_limit_mb=memory_limit_mb, lipsdp_max_size=lipsdp_max_size,
        eclipse_max_size=eclipse_max_size, liplt_max_work=liplt_max_work,
    )

    def run(source, _modules):
        raw = json.loads(
            _lipschitz.certify_json(source, x, y, [float(e) for e in eps], local, deterministic, args)
        )
        return Certification(
            model=raw["model"],
            n=raw["n"],
            clean_accuracy=raw["clean_accuracy"],
            lipschitz=raw["lipschitz"],
            eps=raw["eps"],
            certified_accuracy=raw["certified_accuracy"],
            samples=[Sample(**s) for s in raw["samples"]],
            probabilistic=raw["probabilistic"],
            notes=raw["notes"],
            seconds=raw["seconds"],
            raw=raw,
        )

    return _with_model(model, example_input, run)
