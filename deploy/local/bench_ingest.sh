#!/usr/bin/env bash
# Ingest benchmark: the real gateway with Redis against its own do-nothing /bare route, in the same
# binary and the same run, then a count of what reached the stream (nothing lost, nothing twice).
# Usage: bash deploy/local/bench_ingest.sh [requests] [concurrency]   (after `make services build`)
set -euo pipefail
cd "$(dirname "$0")/../.."
REQ="${1:-20000}"; CONC="${2:-32}"
PREFIX="bench$(date +%s)"
HERD=target/release/herd
# The tenant limit (over it the gateway answers 429) is lifted: this measures ingest.
HERD__LIMITS__TENANT_PER_SECOND=100000000 HERD__QUEUE__KEY_PREFIX="$PREFIX" RUST_LOG=warn "$HERD" gateway --config deploy/local/herd.toml >/tmp/herd-bench-gateway.log 2>&1 &
GW=$!
trap 'kill $GW 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null && break; sleep 0.2; done
for round in 1 2; do
  "$HERD" loadgen --requests "$REQ" --concurrency "$CONC" --bare --run-id "$PREFIX-bare$round"
  "$HERD" loadgen --requests "$REQ" --concurrency "$CONC" --run-id "$PREFIX-hook$round"
done
echo "stream entries: $(redis-cli XLEN "$PREFIX:turns:{0}") (expected $((2 * REQ)))"
echo "distinct message ids seen: $(redis-cli --scan --pattern "$PREFIX:seen:*" | wc -l)"
redis-cli --scan --pattern "$PREFIX:*" | xargs -r -n 1000 redis-cli del >/dev/null
