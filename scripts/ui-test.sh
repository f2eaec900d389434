#!/usr/bin/env bash
# The web UI's checks. `build` (before the Rust build): generate the API types from proto/, type-
# check, rebuild the bundle from source and fail if the committed, embedded ui/dist differs, then
# the Vitest unit tests. `browser` (after it): the Playwright tests in Debian's chromium against
# real `nexus` processes (target/debug/nexus).
set -euo pipefail
cd "$(dirname "$0")/../ui"

what="${1:-all}"
case "$what" in
  build | browser | all) ;;
  *)
    echo "usage: scripts/ui-test.sh [build|browser|all]" >&2
    exit 2
    ;;
esac

if [ "$what" = build ] || [ "$what" = all ]; then
  echo "== ui: generate API types, type-check"
  npm run --silent gen
  npx tsc -b
  echo "== ui: the embedded bundle (ui/dist) matches the source"
  out="$(mktemp -d)"
  trap 'rm -rf "$out"' EXIT
  NEXUS_UI_OUT="$out" npx vite build --logLevel warn
  if ! diff -r "$out" dist >/dev/null; then
    diff -r "$out" dist | head -20 || true
    echo "error: ui/dist is stale — it is not what the sources in ui/ build to." >&2
    echo "       Run \`npm --prefix ui run build\` and commit ui/dist." >&2
    exit 1
  fi
  echo "== ui: unit tests (vitest)"
  npx vitest run
fi

if [ "$what" = browser ] || [ "$what" = all ]; then
  echo "== ui: browser tests (playwright, Debian chromium)"
  (cd .. && cargo build --locked --bin nexus -q)
  npx playwright test
fi
