#!/usr/bin/env bash
# Smoke test of the container packaging (Dockerfile, deploy/compose.yaml). Builds the image, runs
# it alone (embedded store), then the cluster of deploy/compose.yaml (two replicas, PostgreSQL 16,
# NATS JetStream), and checks that each Nexus answers: the UI over HTTP from the host, and gRPC
# calls with an API key through the CLI inside the containers (an unauthenticated call refused, a
# key made on one replica accepted by the other, an event published through JetStream).
#
#   bash scripts/docker-smoke.sh                                      # build, then check
#   NEXUS_SMOKE_IMAGE=nexus:ci NEXUS_SMOKE_BUILD=0 bash scripts/docker-smoke.sh  # an image already built
#
# Without a Docker daemon it says so and exits 0. Every wait is bounded. Containers, networks and
# volumes are removed at the end, whatever happens; the image (nexus:smoke) is kept for reuse.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v docker >/dev/null 2>&1; then
  echo "skipped: no Docker daemon (no docker command)"
  exit 0
fi
if ! info_err="$(docker info 2>&1 >/dev/null)"; then
  reason="$(printf '%s\n' "$info_err" | grep -v '^[[:space:]]*$' | tail -n 1 || true)"
  echo "skipped: no Docker daemon (\`docker info\` failed: ${reason:-no reason given})"
  exit 0
fi

image="${NEXUS_SMOKE_IMAGE:-nexus:smoke}"
run_id="nexus-smoke-$$"
container="$run_id"
compose=()
if docker compose version >/dev/null 2>&1; then
  compose=(docker compose -p "$run_id" -f deploy/compose.yaml)
elif command -v docker-compose >/dev/null 2>&1; then
  compose=(docker-compose -p "$run_id" -f deploy/compose.yaml)
fi
container_started=0
compose_started=0

cleanup() {
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "== failed; the last logs:" >&2
    if [ "$container_started" = 1 ]; then docker logs --tail 40 "$container" >&2 2>&1 || true; fi
    if [ "$compose_started" = 1 ]; then "${compose[@]}" logs --no-color --tail 40 >&2 2>&1 || true; fi
  fi
  if [ "$container_started" = 1 ]; then docker rm -f -v "$container" >/dev/null 2>&1 || true; fi
  if [ "$compose_started" = 1 ]; then
    "${compose[@]}" down -v --remove-orphans --timeout 10 >/dev/null 2>&1 || true
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
  echo "error: $*" >&2
  exit 1
}

# wait_until SECONDS WHAT COMMAND…: runs COMMAND every second until it succeeds, at most SECONDS.
wait_until() {
  local limit=$1 what=$2
  shift 2
  local deadline=$((SECONDS + limit))
  until "$@"; do
    if [ "$SECONDS" -ge "$deadline" ]; then fail "$what: not within ${limit}s"; fi
    sleep 1
  done
}

# http_status PORT PATH: the status code of `GET PATH` on 127.0.0.1:PORT (bash's /dev/tcp: no
# curl needed), empty when nothing answers within 5 s.
http_status() {
  (
    exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 0
    printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$2" >&3
    IFS=' ' read -r -t 5 _ code _ <&3 || exit 0
    printf '%s\n' "$code"
  ) 2>/dev/null
}

ui_answers() {
  [ "$(http_status "$1" /ui/)" = 200 ]
}

# free_port FROM: the first port from FROM on that nothing on 127.0.0.1 answers.
free_port() {
  local port=$1
  while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    port=$((port + 1))
    if [ "$port" -ge $(($1 + 200)) ]; then fail "no free port in $1-$port"; fi
  done
  echo "$port"
}

# Alive and answering; a container that stopped fails at once (its logs follow).
container_answers() {
  [ "$(docker inspect -f '{{.State.Running}}' "$container" 2>/dev/null)" = true ] \
    || fail "the container stopped: $(docker inspect -f '{{.State.Status}} (exit {{.State.ExitCode}})' "$container" 2>/dev/null)"
  ui_answers "$1"
}

container_healthy() {
  [ "$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$container")" = healthy ]
}

# expect_in TEXT FRAGMENT WHAT
expect_in() {
  case "$1" in
    *"$2"*) ;;
    *) fail "$3: \`$2\` not in: $1" ;;
  esac
}

# --- the image alone ---------------------------------------------------------------------------
if [ "${NEXUS_SMOKE_BUILD:-1}" = 1 ]; then
  echo "== docker build -t $image ."
  docker build --build-arg NEXUS_GIT_REV="$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)" -t "$image" .
fi

echo "== docker run $image (embedded store)"
container_started=1
docker run -d --name "$container" -p 127.0.0.1::50051 "$image" >/dev/null
port="$(docker port "$container" 50051/tcp | head -n 1)"
port="${port##*:}"
[ -n "$port" ] || fail "no host port published for 50051"
wait_until 60 "GET /ui/ on 127.0.0.1:$port (the container)" container_answers "$port"
echo "ok: GET /ui/ answers 200 on 127.0.0.1:$port"

version="$(docker exec "$container" nexus --version)"
expect_in "$version" "nexus " "nexus --version"
echo "ok: $version"

if docker exec "$container" nexus whoami >/dev/null 2>&1; then
  fail "a call without credentials was accepted (the image should require auth)"
fi
token="$(docker exec "$container" nexus token create --tenant smoke --subject docker-smoke --role viewer)"
who="$(docker exec -e NEXUS_TOKEN="$token" "$container" nexus whoami --json)"
expect_in "$who" '"docker-smoke"' "whoami with the new API key"
echo "ok: without credentials refused; with an API key (gRPC, in the container) answered as docker-smoke"

wait_until 90 "the container's HEALTHCHECK to report healthy" container_healthy
echo "ok: HEALTHCHECK healthy"

docker rm -f -v "$container" >/dev/null
container_started=0

# --- the cluster -------------------------------------------------------------------------------
if [ "${#compose[@]}" = 0 ]; then
  echo "skipped: the compose cluster (neither \`docker compose\` nor docker-compose is installed)"
  echo "docker smoke: ok (image only)"
  exit 0
fi

NEXUS_1_PORT="$(free_port 55051)"
NEXUS_2_PORT="$(free_port $((NEXUS_1_PORT + 1)))"
export NEXUS_IMAGE="$image" NEXUS_1_PORT NEXUS_2_PORT
echo "== ${compose[*]} up -d (replicas on 127.0.0.1:$NEXUS_1_PORT and :$NEXUS_2_PORT)"
compose_started=1
"${compose[@]}" up -d --no-build
wait_until 180 "GET /ui/ on replica nexus-1 (:$NEXUS_1_PORT)" ui_answers "$NEXUS_1_PORT"
wait_until 60 "GET /ui/ on replica nexus-2 (:$NEXUS_2_PORT)" ui_answers "$NEXUS_2_PORT"
echo "ok: both replicas answer GET /ui/"

token="$("${compose[@]}" exec -T nexus-1 nexus token create --tenant smoke --subject docker-smoke --role viewer --role runner)"
for replica in nexus-1 nexus-2; do
  # The key is in the shared PostgreSQL store: the replica that did not make it knows it too.
  who="$("${compose[@]}" exec -T -e NEXUS_TOKEN="$token" "$replica" nexus whoami --json)"
  expect_in "$who" '"docker-smoke"' "whoami on $replica"
done
echo "ok: an API key made on nexus-1 is accepted by both replicas (shared PostgreSQL store)"

published="$("${compose[@]}" exec -T -e NEXUS_TOKEN="$token" nexus-2 \
  nexus event publish smoke.ping --data '{"n": 1}' --id "smoke-$$" --source docker-smoke)"
expect_in "$published" "published smoke-$$" "event publish on nexus-2"
echo "ok: an event published through NATS JetStream ($published)"

echo "docker smoke: ok"
