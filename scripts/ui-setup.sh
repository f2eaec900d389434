#!/usr/bin/env bash
# Installs what the web UI's build and browser tests need: the npm packages of ui/ (from the lock
# file) and Debian's chromium for Playwright (never a browser downloaded by a test tool).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/chromium ]; then
  echo "== installing Debian's chromium for the browser tests"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo -n"; fi
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null \
    || { $SUDO apt-get update -q >/dev/null && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; }
fi

# npm ci only when the lock changed since the last install (it deletes node_modules first).
if [ ! -f ui/node_modules/.package-lock.json ] || [ ui/package-lock.json -nt ui/node_modules/.package-lock.json ]; then
  echo "== npm ci (ui)"
  (cd ui && npm ci --no-audit --no-fund --loglevel=error)
fi
