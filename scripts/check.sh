#!/usr/bin/env bash
# Every check CI runs: formatting, lints, all tests (unit, integration, doc), and each
# benchmark once as a smoke test. Usage: bash scripts/check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
# The library alone, as a user who turns the CLI and the C ABI off builds it.
cargo clippy --no-default-features --lib -- -D warnings
# The C examples link against target/release/liblipschitz.{so,a}: build them first.
cargo build --release
cargo test --release
cargo test --release --benches
