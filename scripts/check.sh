#!/usr/bin/env bash
# Every check CI runs: formatting, lints, all tests (unit, integration, doc), and each
# benchmark once as a smoke test. Usage: bash scripts/check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo clippy -p lipschitz-python -- -D warnings
# The library alone, as a user who turns the CLI and the C ABI off builds it.
cargo clippy --no-default-features --lib -- -D warnings
# The C examples link against target/release/liblipschitz.{so,a}: build them first.
cargo build --release
cargo test --release
cargo test --release --benches
# The Python package (python/, PyO3 + maturin), built and tested in a virtual environment
# made here, with torch and torchvision from PyPI for the module tests.
venv=target/python-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q numpy pytest torch torchvision onnx onnxscript
"$venv/bin/python" -m pip install -q --force-reinstall --no-deps ./python
"$venv/bin/python" -m pytest -q -p no:cacheprovider python/tests
