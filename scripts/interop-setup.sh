#!/usr/bin/env bash
# Installs the other stacks the interop tests (crates/server/tests/api/interop.rs) run as real
# backends: Python grpcio in a local venv (.interop/venv, pinned by interop/python/requirements.txt),
# Node @grpc/grpc-js (interop/node/node_modules, pinned by its package-lock.json) and a grpc-go
# server built from Debian's packages (.interop/go).
# Idempotent and quick when already done: each part is redone only when its inputs changed.
# Needs python3 (with venv), node/npm, and root for apt-get the first time; reaches only PyPI,
# the npm registry and Debian's packages.
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

# grpc-go from Debian's packages (Go 1.19, grpc-go 1.33, golang/protobuf 1.3, protoc): no Go
# module proxy is reachable, so the server is built in GOPATH mode against /usr/share/gocode.
go_packages=(golang-go golang-google-grpc-dev golang-goprotobuf-dev protobuf-compiler)
missing=()
for p in "${go_packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "interop: grpc-go needs the Debian packages ${missing[*]}: run this as root, or apt-get install them" >&2
    exit 1
  fi
  echo "== interop: apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi
go_dir=.interop/go
binary="$go_dir/interop-server"
proto=interop/proto/interop/v1/interop.proto
if [[ -x "$binary" && "$binary" -nt interop/go/server.go && "$binary" -nt "$proto" ]]; then
  echo "== interop: grpc-go server up to date ($binary)"
else
  echo "== interop: building the grpc-go server ($binary)"
  rm -rf "$go_dir/src"
  mkdir -p "$go_dir/src/interop"
  # protoc's well-known types name the newer Go module in their go_package; Debian's grpc-go
  # 1.33 goes with golang/protobuf 1.3, whose packages these are.
  wkt="Mgoogle/protobuf/timestamp.proto=github.com/golang/protobuf/ptypes/timestamp"
  wkt="$wkt,Mgoogle/protobuf/struct.proto=github.com/golang/protobuf/ptypes/struct"
  wkt="$wkt,Mgoogle/protobuf/empty.proto=github.com/golang/protobuf/ptypes/empty"
  protoc -I interop/proto --go_out="plugins=grpc,paths=source_relative,$wkt:$go_dir/src/interop" "$proto"
  GO111MODULE=off GOFLAGS= GOPATH="$PWD/$go_dir:/usr/share/gocode" GOCACHE="$PWD/$go_dir/cache" \
    go build -o "$binary" interop/go/server.go
fi
