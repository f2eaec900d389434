#!/usr/bin/env bash
# The whole test suite: formatting, lints, then every test of every crate.
# Needs nothing but the Rust toolchain (embedded mode: SQLite in-process, servers on 127.0.0.1:0).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
