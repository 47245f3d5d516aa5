#!/usr/bin/env bash
# The soak of herd as separate processes on one machine (loopback only), bounded in count:
#   1. throughput with 1, 2 and 3 workers (2 gateways; no faults; each webhook once; as many
#      messages per user as in step 2, so that conversations are as long);
#   2. the soak: MESSAGES messages from USERS users, each webhook delivered 1-3 times, a
#      stand-in Graph API refusing 5 % of sends (429 and 500), a worker killed (kill -9) every
#      20 s and started again, one Redis restart, one drop of every PostgreSQL connection;
#      offered at 80 % of the 3-worker throughput of step 1 (or RATE messages/s).
# Each run has a Redis of its own (AOF, fsync always) and a fresh database on the PostgreSQL of
# `make services`. Each worker process is held to WORKER_CPUS CPUs (a cgroup quota, 0.25 by
# default; 0: no quota), as if each had a machine of its own: the gateways, Redis, PostgreSQL and
# the soak itself share the rest, so how throughput scales with workers is measured even on a
# machine with fewer cores than workers. Needs root (cgroups). Reports are JSON in $OUT
# (target/soak); a table is printed at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."
MESSAGES=${MESSAGES:-10000}
USERS=${USERS:-500}
THROUGHPUT_MESSAGES=${THROUGHPUT_MESSAGES:-1500}
WORKER_CPUS=${WORKER_CPUS:-0.25}
OUT=${OUT:-target/soak}
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
export DATABASE_URL=${DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/herd}

bash deploy/local/services.sh
cargo build --release -q -p herd -p herd-e2e --bin herd --bin soak
mkdir -p "$OUT"
SOAK=(target/release/soak --herd target/release/herd --worker-cpus "$WORKER_CPUS")

for w in 1 2 3; do
  echo "throughput, $w worker(s): $THROUGHPUT_MESSAGES messages" >&2
  "${SOAK[@]}" --workers "$w" --messages "$THROUGHPUT_MESSAGES" --users "$((THROUGHPUT_MESSAGES * USERS / MESSAGES))" \
    --no-faults --deliveries 1 --fail-every 0 --rate 100000 --settle 1800 >"$OUT/throughput-$w.json"
done
if [ -z "${RATE:-}" ]; then
  RATE=$(python3 -c 'import json,sys; print(round(0.8 * json.load(open(sys.argv[1]))["throughput"], 2))' "$OUT/throughput-3.json")
fi
echo "soak: $MESSAGES messages from $USERS users at $RATE/s, with faults" >&2
"${SOAK[@]}" --workers 3 --messages "$MESSAGES" --users "$USERS" --rate "$RATE" --settle 900 >"$OUT/soak.json"

python3 - "$OUT" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
t = {w: json.loads((out / f"throughput-{w}.json").read_text()) for w in (1, 2, 3)}
base = t[1]["throughput"]
print("| workers | messages | seconds | replies/s | speed-up | efficiency |")
print("|---|---|---|---|---|---|")
for w, r in t.items():
    print(f"| {w} | {r['messages']} | {r['seconds']:.1f} | {r['throughput']:.2f} | {r['throughput'] / base:.2f}x | {r['throughput'] / base / w:.0%} |")
s = json.loads((out / "soak.json").read_text())
print()
for k in ("messages", "users", "webhooks", "refused", "recorded", "answered_once", "duplicates", "lost", "unknown", "failed",
          "dead_letters", "sends_refused", "worker_kills", "redis_restarts", "postgres_drops", "p50_ms", "p99_ms", "seconds", "throughput"):
    v = s[k]
    print(f"{k:>15}: {v:.2f}" if isinstance(v, float) else f"{k:>15}: {v}")
PY
