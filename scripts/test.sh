#!/usr/bin/env bash
# The whole test suite: formatting, lints, then every test of every crate.
# Needs the Rust toolchain, plus python3, node and (the first time, as root, for apt-get) Debian's
# Go packages for the interop backends (embedded mode: SQLite in-process, servers on 127.0.0.1:0).
set -euo pipefail
cd "$(dirname "$0")/.."

# A fresh clone in CI builds once: incremental-compilation caches would only take disk (gigabytes
# for this workspace) and time. Developers keep their own setting.
if [[ "${CI:-}" == "true" ]]; then
  export CARGO_INCREMENTAL=0
fi

# The interop tests run real Python grpcio, Node grpc-js and Go grpc-go servers; install them
# (quick when already done).
bash scripts/interop-setup.sh
# The web UI's npm packages and Debian's chromium for its browser tests.
bash scripts/ui-setup.sh

# The UI first: its bundle is embedded in the binary, so a stale one fails before any Rust builds.
bash scripts/ui-test.sh build

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

bash scripts/ui-test.sh browser

# What the build took on disk (the CI machine's disk is not large; see [profile.dev] in Cargo.toml).
du -sh target 2>/dev/null || true
# In CI the test build is not needed any more: its disk goes to the fuzz build (a fresh clone
# holds one build at a time).
if [[ "${CI:-}" == "true" ]]; then
  rm -rf target/debug
fi

# A few seconds of coverage-guided fuzzing per target on the committed corpus (fuzz/README.md).
# Without AddressSanitizer and with the dev profile (opt-level 1) here: the build is the cost (the
# code fuzzed is safe Rust); the long runs (`bash scripts/fuzz.sh run`) use ASan and release.
FUZZ_SANITIZER="${FUZZ_SANITIZER:-none}" FUZZ_PROFILE="${FUZZ_PROFILE:-dev}" bash scripts/fuzz.sh smoke 5
du -sh fuzz/target 2>/dev/null || true
