"""Type stubs of the native module (the crate's entry points; results as JSON text)."""

from os import PathLike
from typing import Any, Dict, List, Union

import numpy as np

__version__: str

class LipschitzError(ValueError):
    """A bad input or a failed computation; the message names the problem."""

def dense_norm_json(w: np.ndarray, rtol: float, method: str, seed: int, threads: int) -> str: ...
def conv2d_norm_json(
    weight: np.ndarray,
    input: List[int],
    stride: List[int],
    pads: List[int],
    dilation: List[int],
    groups: int,
    padding_mode: str,
    rtol: float,
    seed: int,
    threads: int,
) -> str: ...
def analyze_json(model: Union[str, PathLike, bytes], args: Dict[str, Any]) -> str: ...
def certify_json(
    model: Union[str, PathLike, bytes],
    inputs: np.ndarray,
    labels: np.ndarray,
    eps: List[float],
    local: bool,
    deterministic: bool,
    args: Dict[str, Any],
) -> str: ...
