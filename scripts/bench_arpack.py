#!/usr/bin/env python3
"""Side-by-side: SciPy's ARPACK `svds` (what a Python user reaches for) against
`lipschitz dense` on the same 5000×5000 Gaussian float32 matrix, to tol/rtol 1e-6.

Usage (needs numpy and scipy; not part of CI):
    cargo build --release
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python3 scripts/bench_arpack.py [n]

ARPACK's answer is uncertified (no upper bound); ours is a certified interval whose width is
at most 1e-6 relative. Times are medians of 3 runs, in the same process session.
"""
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.sparse.linalg import svds

n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
rng = np.random.default_rng(0)
a32 = rng.standard_normal((n, n), dtype=np.float32)
a64 = a32.astype(np.float64)
path = Path(tempfile.mkdtemp()) / f"gauss{n}.npy"
np.save(path, a32)

arpack = []
for _ in range(3):
    t = time.perf_counter()
    s = svds(a64, k=1, tol=1e-6, return_singular_vectors=False, random_state=0)
    arpack.append(time.perf_counter() - t)
sigma_arpack = float(s[0])

exe = Path(__file__).resolve().parent.parent / "target" / "release" / "lipschitz"
ours = []
for _ in range(3):
    out = subprocess.run(
        [str(exe), "dense", str(path), "--rtol", "1e-6", "--method", "lanczos", "--json"],
        check=True, capture_output=True, text=True,
    ).stdout
    layer = json.loads(out)["layers"][0]
    ours.append(layer["seconds"])

print(f"n = {n}")
print(f"scipy svds (ARPACK, tol 1e-6): median {np.median(arpack):.3f} s, sigma = {sigma_arpack:.10f} (uncertified)")
print(f"lipschitz lanczos (rtol 1e-6): median {np.median(ours):.3f} s, "
      f"[{layer['lower']:.10f}, {layer['upper']:.10f}] ({layer['certificate']}, {layer['matvecs']} matvecs)")
print(f"speed-up: {np.median(arpack) / np.median(ours):.1f}x")
