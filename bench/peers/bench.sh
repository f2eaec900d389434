#!/usr/bin/env bash
# The measuring half of the peer benchmark, started by run.sh (inside a network namespace of its
# own when it can: only loopback exists there). Starts the echo backend, then each system in
# turn — its processes, a readiness check, the driver, then stops it — and writes the table.
#
# Every wait has a timeout, every process started is stopped on exit (trap), and a system that
# fails to start or to run is reported in the table as FAILED with the reason; the others go on.
#
# Inputs (environment, set by run.sh): PEERS_* settings, NEXUS_BIN, PEERS_NODE_OK and
# PEERS_PYTHON_OK (whether setup.sh installed each part), PEERS_NETNS_NOTE, PEERS_NEXUS_NOTE.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DEPS=$HERE/.deps
LOGS=$HERE/.logs
NODE_MODULES=$DEPS/node/node_modules
VENV=$DEPS/venv

# The settings, with their defaults, come from run.sh.
RUNS=${PEERS_RUNS:?} WARMUP=${PEERS_WARMUP:?} SECONDS_CONCURRENT=${PEERS_SECONDS:?}
CONCURRENCY=${PEERS_CONCURRENCY:?} SYSTEMS=${PEERS_SYSTEMS:?}
START_TIMEOUT=${PEERS_START_TIMEOUT:?} DRIVER_TIMEOUT=${PEERS_DRIVER_TIMEOUT:?}

export NODE_PATH=$NODE_MODULES
export PYTHONPATH=$HERE:$DEPS/gen

WORK=$(mktemp -d "${TMPDIR:-/tmp}/nexus-peers.XXXXXX")
RESULTS=$WORK/results.jsonl
rm -rf "$LOGS"
mkdir -p "$LOGS"

say() { printf '[peers %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ---------------------------------------------------------------------------------------------
# Processes. Each is started in a session of its own (setsid: it is its process group's leader),
# so that stopping it stops whatever it started too.

ALL_PIDS=()    # every process started, for the exit trap
SYSTEM_PIDS=() # those of the system being measured, stopped before the next one starts

start_bg() { # LOG CMD... -> STARTED_PID
  local log=$1
  shift
  setsid "$@" >"$log" 2>&1 </dev/null &
  STARTED_PID=$!
  ALL_PIDS+=("$STARTED_PID")
  SYSTEM_PIDS+=("$STARTED_PID")
}

stop_pid() { # PID: SIGTERM to its group, SIGKILL after 10 s
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  return 0
}

stop_system() {
  local i
  for ((i = ${#SYSTEM_PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${SYSTEM_PIDS[i]}"; done
  SYSTEM_PIDS=()
}

cleanup() {
  local i
  for ((i = ${#ALL_PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${ALL_PIDS[i]}"; done
  rm -rf "$WORK"
}
# A second signal (timeout relays SIGTERM to its child and to its process group) must not cut the
# cleanup short: the handlers ignore the signals once they run.
trap cleanup EXIT
trap 'trap "" INT TERM; say "interrupted"; exit 130' INT
trap 'trap "" INT TERM; say "terminated"; exit 143' TERM

# ---------------------------------------------------------------------------------------------
# Waits, each bounded and failing early when the process it waits for has died.

REASON=""
fail() { REASON=$*; return 1; }

alive_or_fail() { # PID NAME LOG
  local status tail
  kill -0 "$1" 2>/dev/null && return 0
  wait "$1" 2>/dev/null
  status=$?
  tail=$(tail -n 3 "$3" 2>/dev/null | tr '\n' ' ' | cut -c1-300)
  fail "$2 exited at start with status $status (${3#"$HERE"/}: ${tail:-nothing logged})"
}

wait_port() { # PORT PID NAME LOG
  local deadline=$((SECONDS + START_TIMEOUT))
  while ((SECONDS < deadline)); do
    alive_or_fail "$2" "$3" "$4" || return 1
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  fail "$3 did not listen on 127.0.0.1:$1 within ${START_TIMEOUT}s (log: ${4#"$HERE"/})"
}

wait_line() { # FILE REGEX PID NAME
  local deadline=$((SECONDS + START_TIMEOUT))
  while ((SECONDS < deadline)); do
    grep -qE "$2" "$1" 2>/dev/null && return 0
    alive_or_fail "$3" "$4" "$1" || return 1
    sleep 0.1
  done
  fail "$4 did not print /$2/ within ${START_TIMEOUT}s (log: ${1#"$HERE"/})"
}

# Retries CMD... (quietly) until it succeeds, for START_TIMEOUT seconds.
retry() { # WHAT CMD...
  local what=$1 deadline=$((SECONDS + START_TIMEOUT))
  shift
  while ((SECONDS < deadline)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  fail "$what did not succeed within ${START_TIMEOUT}s: $*"
}

# The restate-server executable, from the npm package for this platform (as its launcher finds it).
restate_exe() {
  node -p 'require.resolve(`@restatedev/restate-server-${process.platform}-${process.arch}/bin/restate-server`)'
}

free_ports() { # N -> N free loopback ports
  python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))' "$1"
}

json_failure() { # LABEL REASON
  python3 -c 'import json, sys; print(json.dumps({"system": sys.argv[1], "ok": False, "error": sys.argv[2]}))' "$1" "$2"
}

# ---------------------------------------------------------------------------------------------
# Drivers: one JSON line on stdout is the result; progress and errors go to the system's log.

COMMON_ARGS=(--warmup "$WARMUP" --runs "$RUNS" --concurrency "$CONCURRENCY" --seconds "$SECONDS_CONCURRENT")

run_driver() { # LABEL LOG CMD...
  local label=$1 log=$2 out=$WORK/driver.out err=$WORK/driver.err rc
  shift 2
  say "$label: driving (${WARMUP} warm-up, ${RUNS} sequential, ${CONCURRENCY} clients × ${SECONDS_CONCURRENT}s)"
  # In the background and waited for, so that a signal to this script is handled at once (the
  # exit trap stops the driver: timeout leads a process group of its own).
  timeout --kill-after=10 "$DRIVER_TIMEOUT" "$@" >"$out" 2>"$err" &
  ALL_PIDS+=("$!")
  wait "$!"
  rc=$?
  sed 's/^/    /' "$err" >&2
  cat "$err" >>"$log"
  if ((rc == 124 || rc == 137)); then
    fail "driver did not finish within ${DRIVER_TIMEOUT}s (PEERS_DRIVER_TIMEOUT)"
    return 1
  fi
  if ((rc != 0)) || ! grep -q '"ok": \?true' "$out"; then
    REASON=$(grep -h '^driver:' "$err" | tail -n 1 | cut -c1-400)
    [[ -n $REASON ]] || REASON="driver exited with status $rc (log: ${log#"$HERE"/})"
    return 1
  fi
  tail -n 1 "$out" >>"$RESULTS"
}

node_driver() { # LABEL LOG DRIVER-ARGS...
  local label=$1 log=$2
  shift 2
  run_driver "$label" "$log" node "$HERE/driver.js" --label "$label" "${COMMON_ARGS[@]}" "$@"
}

# ---------------------------------------------------------------------------------------------
# The systems. Each returns non-zero with REASON set when it cannot be measured.

ECHO_PORT=""

needs_node() { [[ $PEERS_NODE_OK == 1 ]] || fail "the npm packages are not installed (setup.sh node failed)"; }
needs_python() { [[ $PEERS_PYTHON_OK == 1 ]] || fail "the Python venv is not installed (setup.sh python failed)"; }

start_echo() {
  local log=$LOGS/echo.log
  needs_node || return 1
  ECHO_PORT=$(free_ports 1)
  start_bg "$log" node "$HERE/echo_server.js" --port "$ECHO_PORT"
  ECHO_PID=$STARTED_PID
  SYSTEM_PIDS=() # the backend is shared: it outlives each system and is not counted in any
  wait_port "$ECHO_PORT" "$ECHO_PID" "the echo backend" "$log" || return 1
  say "echo backend on 127.0.0.1:$ECHO_PORT (pid $ECHO_PID)"
}

system_direct() {
  needs_node || return 1
  node_driver direct "$LOGS/direct.log" --system direct --target "127.0.0.1:$ECHO_PORT" --pids self
}

system_nexus() { # ephemeral|durable
  local mode=$1 log=$LOGS/nexus-$1.log port pid pattern=peers_echo3 addr services
  [[ $mode == durable ]] && pattern=peers_echo3_durable
  needs_node || return 1
  [[ -x $NEXUS_BIN ]] || fail "no nexus executable at $NEXUS_BIN${PEERS_NEXUS_NOTE:+ ($PEERS_NEXUS_NOTE)}" || return 1
  port=$(free_ports 1)
  addr=http://127.0.0.1:$port
  start_bg "$log" "$NEXUS_BIN" serve --listen "127.0.0.1:$port" --service "echo=http://127.0.0.1:$ECHO_PORT" \
    --data-dir "$WORK/nexus-$mode"
  pid=$STARTED_PID
  wait_port "$port" "$pid" "nexus serve" "$log" || return 1
  # The action the patterns call, as discovered by reflection.
  services=$(timeout 30 "$NEXUS_BIN" services --addr "$addr" 2>&1)
  echo "$services" >>"$log"
  [[ $services == *bench.peers.v1.EchoService/Echo* ]] \
    || fail "nexus does not list the action bench.peers.v1.EchoService/Echo (log: ${log#"$HERE"/})" || return 1
  timeout 30 "$NEXUS_BIN" pattern register "$HERE/patterns/echo3.yaml" "$HERE/patterns/echo3_durable.yaml" \
    --addr "$addr" >>"$log" 2>&1 || fail "nexus pattern register failed (log: ${log#"$HERE"/})" || return 1
  node_driver "nexus $mode" "$log" --system nexus --target "$addr" --pattern "$pattern" --pids "$pid"
}

system_nexus_ephemeral() { system_nexus ephemeral; }
system_nexus_durable() { system_nexus durable; }

system_restate() {
  local log=$LOGS/restate-server.log svc_log=$LOGS/restate-service.log exe ingress admin fabric svc server_pid svc_pid
  needs_node || return 1
  exe=$(restate_exe 2>/dev/null) || fail "no restate-server executable in the npm packages" || return 1
  read -r ingress admin fabric svc <<<"$(free_ports 4)"

  # The service endpoint (Node, @restatedev/restate-sdk), calling the echo backend.
  RESTATE_LOGGING=WARN start_bg "$svc_log" node "$HERE/restate_service.js" --echo "127.0.0.1:$ECHO_PORT" --port "$svc"
  svc_pid=$STARTED_PID
  wait_port "$svc" "$svc_pid" "the Restate service" "$svc_log" || return 1

  # The server: a single node, its data in the work directory, TCP on loopback only, no
  # telemetry, no web UI; otherwise its defaults.
  RESTATE_DISABLE_TELEMETRY=true RESTATE_ADMIN__DISABLE_WEB_UI=true RESTATE_LOG_DISABLE_ANSI_CODES=true \
    RESTATE_INGRESS__BIND_ADDRESS=127.0.0.1:$ingress RESTATE_ADMIN__BIND_ADDRESS=127.0.0.1:$admin \
    RESTATE_BIND_ADDRESS=127.0.0.1:$fabric \
    start_bg "$log" "$exe" --no-logo --listen-mode tcp --node-name peers --base-dir "$WORK/restate"
  server_pid=$STARTED_PID
  wait_port "$admin" "$server_pid" "restate-server" "$log" || return 1
  retry "restate-server's health check" curl -sf --max-time 2 "http://127.0.0.1:$admin/health" || return 1
  retry "registering the service with restate-server (POST /deployments)" \
    curl -sf --max-time 10 -X POST -H 'content-type: application/json' \
    -d "{\"uri\": \"http://127.0.0.1:$svc\"}" "http://127.0.0.1:$admin/deployments" || return 1
  # The ingress knows the service once a call goes through.
  retry "a first call through restate's ingress" \
    curl -sf --max-time 10 -X POST -H 'content-type: application/json' -d '{"text": "ready", "n": 0}' \
    "http://127.0.0.1:$ingress/Echo3/run" || return 1
  node_driver restate "$svc_log" --system restate --target "http://127.0.0.1:$ingress/Echo3/run" \
    --pids "$server_pid,$svc_pid"
}

system_temporal() {
  local log=$LOGS/temporal-server.log worker_log=$LOGS/temporal-worker.log frontend http metrics server_pid worker_pid
  needs_python || return 1
  read -r frontend http metrics <<<"$(free_ports 3)"

  # The dev server: all of Temporal's services in one process, in-memory SQLite, loopback, no UI.
  start_bg "$log" "$VENV/bin/temporal" server start-dev --headless --ip 127.0.0.1 --port "$frontend" \
    --http-port "$http" --metrics-port "$metrics" --log-level warn --disable-config-file --disable-config-env
  server_pid=$STARTED_PID
  wait_port "$frontend" "$server_pid" "temporal server start-dev" "$log" || return 1

  start_bg "$worker_log" "$VENV/bin/python" "$HERE/temporal_worker.py" --temporal "127.0.0.1:$frontend" \
    --echo "127.0.0.1:$ECHO_PORT"
  worker_pid=$STARTED_PID
  wait_line "$worker_log" '^ready$' "$worker_pid" "the Temporal worker" || return 1
  run_driver temporal "$worker_log" "$VENV/bin/python" "$HERE/temporal_driver.py" --system temporal \
    --label temporal "${COMMON_ARGS[@]}" --target "127.0.0.1:$frontend" --pids "$server_pid,$worker_pid"
}

# ---------------------------------------------------------------------------------------------

say "work directory $WORK, logs in ${LOGS#"$HERE"/}/"
if ! start_echo; then
  say "FAILED: $REASON"
  ECHO_FAILURE=$REASON
fi

for system in $SYSTEMS; do
  label=${system/-/ }
  if ! declare -F "system_${system//-/_}" >/dev/null; then
    json_failure "$label" "unknown system (known: direct nexus-ephemeral nexus-durable restate temporal)" >>"$RESULTS"
    continue
  fi
  say "$label: starting"
  REASON=""
  if [[ -n ${ECHO_FAILURE:-} ]]; then
    json_failure "$label" "the echo backend did not start: $ECHO_FAILURE" >>"$RESULTS"
  elif ! "system_${system//-/_}"; then
    say "$label: FAILED: $REASON"
    json_failure "$label" "$REASON" >>"$RESULTS"
  fi
  stop_system
done

# Versions of what ran, for the record.
version() { "$@" 2>/dev/null | head -n 1; }
npm_version() { version node -p "require('$1/package.json').version"; }
py_version() { version "$VENV/bin/python" -c "import importlib.metadata as m; print(m.version('$1'))"; }
export PEERS_VERSIONS
PEERS_VERSIONS=$(
  echo "nexus: $(version "$NEXUS_BIN" --version) ($NEXUS_BIN)"
  echo "restate-server: $(version "$(restate_exe 2>/dev/null)" --version)"
  echo "@restatedev/restate-sdk: $(npm_version @restatedev/restate-sdk)"
  echo "temporal: $(version "$VENV/bin/temporal" --version)"
  echo "temporalio (Python SDK): $(py_version temporalio)"
  echo "@grpc/grpc-js: $(npm_version @grpc/grpc-js), grpcio: $(py_version grpcio)"
  echo "node: $(node --version), python: $(version "$VENV/bin/python" --version)"
)
python3 "$HERE/report.py" "$RESULTS" "$HERE/result.txt"
