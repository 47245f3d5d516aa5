#!/usr/bin/env bash
# Builds what deploy/gpu/check.sh runs on a GPU machine (which has no Rust toolchain and no package
# registry), on this machine: the release herd binary and the test binaries that hold the GPU
# tests, stripped and packed into .gpu/herd-gpu.tar.xz (a few MB: the device tool carries at most
# 64 MiB with the working tree). With --services it also packs Redis and PostgreSQL for the
# worker's end-to-end test there (Debian's redis-server with its two uncommon libraries, and the
# PostgreSQL build of the `pgserver` wheel). No GPU and no CUDA toolkit are needed: herd opens
# the driver, NVRTC and cuBLAS at run time.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=.gpu
mkdir -p "$out"
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

echo "build: herd (release)" >&2
cargo build --release -q -p herd
cp target/release/herd "$stage/herd"

# The test binaries holding the GPU tests (their paths come from cargo's JSON messages).
tests() {
  cargo test --release --no-run --message-format=json -q "$@" 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["executable"])'
}
echo "build: test binaries" >&2
cp "$(tests -p herd-kernels --lib)" "$stage/kernel_tests"
cp "$(tests -p herd-engine --test cuda)" "$stage/engine_tests"
cp "$(tests -p herd-e2e --test gpu_worker)" "$stage/worker_tests"
cargo build --release -q -p herd-kernels --example cuda_kbench
cp target/release/examples/cuda_kbench "$stage/cuda_kbench"
strip "$stage"/*

if [ "${1:-}" = "--services" ]; then
  echo "build: Redis and PostgreSQL for the worker test" >&2
  mkdir -p "$stage/services/lib"
  cp "$(command -v redis-server)" "$stage/services/redis-server"
  for lib in liblzf.so.1 libjemalloc.so.2 libatomic.so.1; do cp -L "/lib/x86_64-linux-gnu/$lib" "$stage/services/lib/"; done
  whl=$(mktemp -d)
  python3 -m pip download -q --no-deps -d "$whl" pgserver==0.1.4 >&2
  python3 - "$whl"/pgserver-*.whl "$stage/services" <<'EOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for n in z.namelist():
        if (n.startswith("pgserver/pginstall/") and "/include/" not in n) or n.startswith("pgserver.libs/"):
            z.extract(n, sys.argv[2])
EOF
  rm -rf "$whl"
  chmod +x "$stage"/services/pgserver/pginstall/bin/*
fi

chmod 755 "$stage"
tar -C "$stage" -cf - . | xz -T0 -6 > "$out/herd-gpu.tar.xz"
ls -la "$out/herd-gpu.tar.xz" >&2
echo "build: carry .gpu and run deploy/gpu/check.sh on the GPU machine" >&2
