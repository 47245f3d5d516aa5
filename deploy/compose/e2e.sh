#!/usr/bin/env bash
# The compose stack end to end with podman: builds the images (deploy/container/build.sh), starts
# Redis, PostgreSQL, the migration, two gateways behind nginx, two workers and admin, sends signed
# WhatsApp webhooks through nginx with `herd loadgen`, and checks that a stand-in Graph API on this
# host gets exactly one text reply per message, also after every webhook is delivered again.
#   bash deploy/compose/e2e.sh [messages]     (`make compose-test`)
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-40}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/deploy/container/containers.conf}
bash deploy/local/deploy-deps.sh
# HERD_BINARY: the herd binary to put in the image and to send webhooks with (default: release).
if [ -z "${HERD_BINARY:-}" ]; then
  cargo build --release -q -p herd
  export HERD_BINARY=target/release/herd
fi
bash deploy/container/build.sh
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
export HERD_IMAGE=localhost/herd:local REDIS_IMAGE=localhost/herd-redis:local POSTGRES_IMAGE=localhost/herd-postgres:local LB_IMAGE=localhost/herd-nginx:local
export HERD_PORT=$(free_port) HERD_ADMIN_PORT=$(free_port)
stub_port=$(free_port)
export GRAPH_API_URL=http://host.containers.internal:$stub_port
project=herd-e2e-$$
log=$(mktemp)
compose() { target/deploy-venv/bin/podman-compose --in-pod false -p "$project" -f deploy/compose/compose.yaml "$@"; }
cleanup() {
  compose down -t 2 >/dev/null 2>&1 || true
  for _ in 1 2 3; do podman ps -a -q --filter "name=${project}_" | xargs -r podman rm -f -t 0 >/dev/null 2>&1 || true; done
  podman network rm -f "${project}_default" >/dev/null 2>&1 || true
  [ -n "${stub:-}" ] && kill "$stub" 2>/dev/null || true
  [ -n "${KEEP_LOG:-}" ] && cp "$log" "$KEEP_LOG"; rm -f "$log"
}
trap cleanup EXIT
python3 deploy/compose/graph_stub.py "$stub_port" "$log" &
stub=$!
compose up -d redis postgres migrate gateway-1 gateway-2 worker-1 worker-2 admin lb >/dev/null 2>&1
ready=0
for _ in $(seq 120); do
  if curl -fs -m 2 "http://127.0.0.1:$HERD_PORT/readyz" >/dev/null && curl -fs -m 2 "http://127.0.0.1:$HERD_ADMIN_PORT/readyz" >/dev/null; then ready=1; break; fi
  sleep 1
done
[ "$ready" = 1 ] || { echo "e2e: the stack did not get ready in 120 s" >&2; podman ps -a --filter "name=${project}_" >&2; exit 1; }
replies() { grep -c '"text":{"body"' "$log" || true; }
env -u HERD_CONFIG "$HERD_BINARY" loadgen --url "http://127.0.0.1:$HERD_PORT" --requests "$N" --concurrency 8 --run-id "$project" >/dev/null
for _ in $(seq 180); do [ "$(replies)" -ge "$N" ] && break; sleep 1; done
first=$(replies)
# Meta delivers webhooks again: the same messages once more must not be answered twice.
env -u HERD_CONFIG "$HERD_BINARY" loadgen --url "http://127.0.0.1:$HERD_PORT" --requests "$N" --concurrency 8 --run-id "$project" >/dev/null
sleep 15
total=$(replies)
recipients=$(grep '"text":{"body"' "$log" | grep -o '"to":"[0-9]*"' | sort -u | wc -l)
echo "compose e2e: $N messages through nginx, 2 gateways, 2 workers: $first replies, $total after redelivery, $recipients recipients"
[ "$first" -eq "$N" ] && [ "$total" -eq "$N" ] && [ "$recipients" -eq "$N" ] || { echo "e2e: want $N replies once each" >&2; exit 1; }
