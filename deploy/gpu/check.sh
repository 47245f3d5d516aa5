#!/usr/bin/env bash
# The GPU checks of the CUDA engine in one command, on a machine with an NVIDIA GPU, within 8
# minutes: the GPU tests (every kernel against its CPU reference, then under compute-sanitizer's
# memcheck and racecheck; every fixture and the demo model against the CPU engine; batching,
# preemption, routed experts; the worker answering a webhook when Redis and PostgreSQL were
# packed), the kernels' speed at Scout's shapes, and `herd engine bench --device cuda` on bench16
# and on a Scout-shaped stack (as many layers as fit) at batch 1, 16 and 64, through the scheduler
# at 1, 16 and 64 in flight, and a 2,048-token prefill. Prints one JSON summary last.
#
# Each GPU test runs in its own process: a fault leaves a CUDA context unusable for the rest of its
# process, and one failure must not hide the others. Logs go to /tmp/herd-check; $OUT (or
# /tmp/herd-gpu) gets summary.json and logs.txt (all logs, one after another).
#
# Needs .gpu/herd-gpu.tar.xz from deploy/gpu/build.sh (this machine has no Rust toolchain), and
# CUDA's driver, NVRTC 13, cuBLAS 13 and runtime headers somewhere (deploy/gpu/env.sh finds them).
set -u
cd "$(dirname "$0")/../.."
root=$(pwd)
export HERD_REPO_ROOT=$root
. deploy/gpu/env.sh
out=${OUT:-/tmp/herd-gpu}
work=/tmp/herd-check
rm -rf "$work" && mkdir -p "$out" "$work"
bin=/tmp/herd-gpu-bin
rm -rf "$bin" && mkdir -p "$bin"
python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' .gpu/herd-gpu.tar.xz "$bin" || {
  echo '{"error": "no .gpu/herd-gpu.tar.xz: run deploy/gpu/build.sh and carry .gpu"}'
  exit 2
}
chmod 755 "$bin"
begin=$(date +%s)
budget=${HERD_CHECK_SECONDS:-460}

# step NAME SECONDS CMD...: runs CMD with its output in $work/NAME.log and its exit code in
# $work/NAME.rc, stopped after SECONDS or when the whole budget is spent.
step() {
  local name=$1 limit=$2
  shift 2
  local left=$((budget - ($(date +%s) - begin)))
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -le 5 ]; then
    echo "skipped: out of time" > "$work/$name.log"
    echo 124 > "$work/$name.rc"
    return
  fi
  local t0=$(date +%s)
  timeout "$limit" "$@" > "$work/$name.log" 2>&1
  echo $? > "$work/$name.rc"
  echo "$name: exit $(cat "$work/$name.rc") in $(($(date +%s) - t0)) s" >&2
}

# each GROUP BINARY SECONDS: every ignored (GPU) test of BINARY in its own process.
each() {
  local group=$1 binary=$2 limit=$3
  for t in $("$binary" --list --ignored --format terse 2>/dev/null | sed -n 's/: test$//p'); do
    step "$group@$t" "$limit" "$binary" --exact "$t" --ignored
  done
}

{
  nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,clocks.sm,clocks.max.sm --format=csv,noheader
  echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
  echo "HERD_CUDA_INCLUDE=${HERD_CUDA_INCLUDE:-}"
  command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer
} > "$work/env.log" 2>&1

each kernels "$bin/kernel_tests" 30
each engine "$bin/engine_tests" 60
sanitizer=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
if [ -x "$sanitizer" ]; then
  step memcheck 60 "$sanitizer" --tool memcheck --error-exitcode 3 "$bin/kernel_tests" --ignored --test-threads 1
  step racecheck 45 "$sanitizer" --tool racecheck --error-exitcode 3 "$bin/kernel_tests" --ignored --test-threads 1 \
    attention flash grouped_gemm rms_norm moe transposes
fi
step kbench 60 "$bin/cuda_kbench"

bench="$bin/herd engine bench --device cuda --dtype bf16"
b16=engine/benches/bench16/config.json
scout=engine/benches/scout-shaped/config.json
step bench16 45 $bench --config $b16 --batch 1,16,64 --prompt 128 --new 64
for c in 1 16 64; do
  step serving_c$c 40 $bench --config $b16 --concurrency $c --requests 64 --prompt 128 --new 64 --outputs
done
step scout_decode 110 $bench --config $scout --layers auto --batch 1,16,64 --prompt 128 --new 32
step scout_prefill 70 $bench --config $scout --layers auto --batch 1 --prompt 2048 --new 2

if [ -x "$bin/services/redis-server" ]; then
  svc=$bin/services
  export LD_LIBRARY_PATH="$svc/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  pg=$svc/pgserver/pginstall/bin
  data=$(mktemp -d)
  chown -R nobody "$data" "$svc" 2>/dev/null
  as() { if [ "$(id -u)" -eq 0 ]; then su -s /bin/sh nobody -c "$*"; else sh -c "$*"; fi; }
  {
    "$svc/redis-server" --port 16379 --save '' --appendonly no --daemonize yes
    as "$pg/initdb -D $data/pg -U postgres --auth=trust"
    as "$pg/pg_ctl -D $data/pg -o '-p 15432 -k /tmp' -l $data/pg.log start -w"
    as "$pg/psql -h 127.0.0.1 -p 15432 -U postgres -c 'CREATE DATABASE herd'"
  } > "$work/services.log" 2>&1
  export REDIS_URL=redis://127.0.0.1:16379 DATABASE_URL=postgres://postgres@127.0.0.1:15432/herd
  each worker "$bin/worker_tests" 60
else
  echo "skipped: Redis and PostgreSQL were not packed (deploy/gpu/build.sh --services)" > "$work/services.log"
fi

for f in "$work"/*.log; do
  printf '\n===== %s (exit %s)\n' "$(basename "$f" .log)" "$(cat "${f%.log}.rc" 2>/dev/null || echo -)"
  cat "$f"
done > "$out/logs.txt"
python3 "$root/deploy/gpu/summary.py" "$work" $(($(date +%s) - begin)) > "$out/summary.json"
cat "$out/summary.json"
