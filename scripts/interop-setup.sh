#!/usr/bin/env bash
# Installs the other stacks the interop tests (crates/server/tests/api/interop.rs) run as real
# backends: Python grpcio in a local venv (.interop/venv, pinned by interop/python/requirements.txt)
# and Node @grpc/grpc-js (interop/node/node_modules, pinned by its package-lock.json).
# Idempotent and quick when already done: each part is redone only when its pins changed.
# Needs python3 (with venv) and node/npm; reaches only PyPI and the npm registry.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.interop/venv
requirements=interop/python/requirements.txt
stamp="$venv/.requirements"
if [[ -x "$venv/bin/python" ]] && cmp -s "$requirements" "$stamp"; then
  echo "== interop: python venv up to date ($venv)"
else
  echo "== interop: python venv ($venv) from $requirements"
  mkdir -p .interop
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$stamp"
fi

node_dir=interop/node
lock="$node_dir/package-lock.json"
node_stamp="$node_dir/node_modules/.package-lock.json"
# npm writes node_modules/.package-lock.json on every install; it is newer than the committed
# lock unless the lock changed since.
if [[ -f "$node_stamp" && "$node_stamp" -nt "$lock" ]]; then
  echo "== interop: node_modules up to date ($node_dir)"
else
  echo "== interop: npm ci in $node_dir"
  (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error)
fi
