#!/usr/bin/env bash
# Peer benchmark: the same three-step work — three chained calls of one grpc-js echo backend —
# run by a Node client calling the backend itself (direct), by Nexus (an ephemeral and a durable
# pattern), by Restate (a service whose handler makes each call in ctx.run) and by Temporal (a
# workflow of three activities), measured alike: p50/p99 of a whole run, runs/s with 8 clients,
# CPU per run and RSS of each system's own processes. See README.md beside this file.
#
#   bash bench/peers/run.sh                          # from the repository root
#   PEERS_RUNS=50 PEERS_SECONDS=3 NEXUS_BIN=target/debug/nexus bash bench/peers/run.sh
#
# Settings (environment):
#   PEERS_RUNS=500         sequential runs for the latency percentiles (after PEERS_WARMUP=100)
#   PEERS_SECONDS=10       length of the concurrent phase, PEERS_CONCURRENCY=8 clients
#   PEERS_SYSTEMS="direct nexus-ephemeral nexus-durable restate temporal"   which, in this order
#   NEXUS_BIN              the nexus executable; default target/release/nexus, built with
#                          `cargo build --release -p nexus-cli` when missing
#   PEERS_NETNS=auto       run in a network namespace of its own with only loopback (`unshare
#                          --net`, needs root or user namespaces); 0 to run in the host's
#   PEERS_START_TIMEOUT=60, PEERS_DRIVER_TIMEOUT, PEERS_INSTALL_TIMEOUT=900   bounds, in seconds
#
# Opt-in: nothing else runs it. Installs into bench/peers/.deps (registries only), writes the
# table to bench/peers/result.txt and the processes' logs to bench/peers/.logs/. Exits 0 when
# every system produced numbers, 1 otherwise.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

say() { printf '[peers %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

for tool in node npm python3 curl timeout setsid sha256sum; do
  command -v "$tool" >/dev/null || { say "missing $tool: it is needed to run the peer benchmark"; exit 2; }
done

# 1. Dependencies (npm packages, Python venv): each part on its own, so that one failing only
#    fails the systems that need it.
PEERS_NODE_OK=0
PEERS_PYTHON_OK=0
bash "$HERE/setup.sh" node && PEERS_NODE_OK=1 \
  || say "the npm packages did not install: direct, Nexus and Restate will be marked FAILED"
bash "$HERE/setup.sh" python && PEERS_PYTHON_OK=1 \
  || say "the Python venv did not install: Temporal will be marked FAILED"
export PEERS_NODE_OK PEERS_PYTHON_OK

# 2. The nexus executable.
PEERS_NEXUS_NOTE=""
if [[ -z ${NEXUS_BIN:-} ]]; then
  NEXUS_BIN=$ROOT/target/release/nexus
  if [[ ! -x $NEXUS_BIN ]] && [[ " ${PEERS_SYSTEMS:-nexus} " == *" nexus-"* ]]; then
    say "building $NEXUS_BIN (cargo build --release -p nexus-cli)"
    (cd "$ROOT" && timeout 3600 cargo build --release -p nexus-cli) \
      || PEERS_NEXUS_NOTE="cargo build --release -p nexus-cli failed"
  fi
fi
NEXUS_BIN=$(realpath -m "$NEXUS_BIN")
export NEXUS_BIN PEERS_NEXUS_NOTE

# 3. The measurement, in a network namespace with nothing but loopback when possible: no process
#    of any system can reach anything else (restate-server, for one, asks GitHub for its latest
#    release at start).
export PEERS_RUNS=${PEERS_RUNS:-500} PEERS_WARMUP=${PEERS_WARMUP:-100} PEERS_SECONDS=${PEERS_SECONDS:-10}
export PEERS_CONCURRENCY=${PEERS_CONCURRENCY:-8} PEERS_START_TIMEOUT=${PEERS_START_TIMEOUT:-60}
export PEERS_SYSTEMS=${PEERS_SYSTEMS:-direct nexus-ephemeral nexus-durable restate temporal}
# A driver gets: warm-up and sequential runs at up to half a second each, the concurrent phase,
# and two minutes to spare. The whole measurement: per system, three starts and the driver, plus
# a margin.
export PEERS_DRIVER_TIMEOUT=${PEERS_DRIVER_TIMEOUT:-$((120 + ${PEERS_SECONDS%.*} + (PEERS_WARMUP + PEERS_RUNS) / 2))}
total=$((6 * (3 * PEERS_START_TIMEOUT + PEERS_DRIVER_TIMEOUT + 60)))
export PEERS_NETNS_NOTE
bench=(bash "$HERE/bench.sh")
netns=()
if [[ ${PEERS_NETNS:-auto} != 0 ]] && command -v ip >/dev/null; then
  if unshare --net true 2>/dev/null; then
    netns=(unshare --net)
  elif unshare --net --map-root-user true 2>/dev/null; then # without root: a user namespace too
    netns=(unshare --net --map-root-user)
  fi
fi
if ((${#netns[@]})); then
  PEERS_NETNS_NOTE="a network namespace of its own (${netns[*]}): loopback only"
  say "measuring in a private network namespace (loopback only)"
  bench=("${netns[@]}" -- bash -c 'ip link set lo up && exec "$@"' bash "${bench[@]}")
else
  if [[ ${PEERS_NETNS:-auto} == 0 ]]; then why="PEERS_NETNS=0"; else why="unshare --net or ip is not available here"; fi
  PEERS_NETNS_NOTE="the host's network ($why); every address used is on loopback"
  say "measuring in the host's network namespace ($why)"
fi
# In the background and waited for, so that Ctrl-C or SIGTERM here is passed on at once as a
# SIGTERM, on which bench.sh stops every process it started (its exit trap) before it exits.
timeout --kill-after=120 "$total" "${bench[@]}" &
child=$!
trap 'say "stopping"; kill -TERM "$child" 2>/dev/null; wait "$child" || true; exit 130' INT
trap 'say "stopping"; kill -TERM "$child" 2>/dev/null; wait "$child" || true; exit 143' TERM
wait "$child"
