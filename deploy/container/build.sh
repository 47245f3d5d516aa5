#!/usr/bin/env bash
# Builds herd's images where no registry can be reached, with podman: a Debian 12 base made by
# debootstrap (localhost/herd-debian:bookworm), herd from the release binary built here
# (localhost/herd:local, through the Dockerfile's BINARY_IMAGE; HERD_BINARY picks another binary),
# and Redis, PostgreSQL and nginx
# from Debian's packages for the compose file (localhost/herd-{redis,postgres,nginx}:local).
# With --gpu also the GPU image (localhost/herd-gpu:local, the Dockerfile's `gpu` target): CUDA
# 13.0's NVRTC, headers and cuBLAS from NVIDIA's wheels (installed here into .cache/cuda-image).
# Podman on a host with cgroups v1 and strict rlimits wants runc and cgroupfs: see
# deploy/container/containers.conf (used through CONTAINERS_CONF).
set -euo pipefail
cd "$(dirname "$0")/../.."
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/deploy/container/containers.conf}
BASE=localhost/herd-debian:bookworm
if ! podman image exists "$BASE"; then
  rootfs=$(mktemp -d)
  trap 'rm -rf "$rootfs"' EXIT
  echo "build: $BASE (debootstrap)" >&2
  debootstrap --variant=minbase --include=ca-certificates,curl bookworm "$rootfs" >/dev/null
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | podman import -q - "$BASE" >/dev/null
fi
# HERD_BINARY: a herd binary built already (the test suite passes its own); else the release build.
if [ -z "${HERD_BINARY:-}" ]; then
  echo "build: herd (release binary)" >&2
  cargo build --release -q -p herd
  HERD_BINARY=target/release/herd
fi
ctx=$(mktemp -d)
cp "$HERD_BINARY" "$ctx/herd"
strip "$ctx/herd"
printf 'FROM %s\nCOPY herd /src/target/release/herd\n' "$BASE" > "$ctx/Containerfile"
podman build -q --network host -t localhost/herd-binary:local "$ctx" >/dev/null
rm -rf "$ctx"
podman build -q --format docker --network host \
  --build-arg RUNTIME_IMAGE="$BASE" --build-arg BINARY_IMAGE=localhost/herd-binary:local \
  -t localhost/herd:local . >/dev/null
if [ "${1:-}" = "--gpu" ]; then
  cu=.cache/cuda-image/nvidia/cu13
  if [ ! -e "$cu/lib/libcublasLt.so.13" ] || [ ! -e "$cu/include/crt/mma.h" ]; then
    echo "build: CUDA 13.0 libraries (NVIDIA's wheels) into .cache/cuda-image" >&2
    python3 -m pip install -q --disable-pip-version-check --no-deps --target .cache/cuda-image \
      nvidia-cuda-nvrtc==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-cuda-crt==13.0.88 \
      nvidia-cublas==13.0.2.14 >&2
  fi
  # The same files the Dockerfile's cuda-libs stage keeps.
  ctx=$(mktemp -d)
  mkdir -p "$ctx/cuda/lib"
  cp -a "$cu/include" "$ctx/cuda/include"
  for lib in libnvrtc.so.13 libnvrtc-builtins.so.13.0 libcublas.so.13 libcublasLt.so.13; do cp -a "$cu/lib/$lib" "$ctx/cuda/lib/"; done
  printf 'FROM %s\nCOPY cuda /cuda\n' "$BASE" > "$ctx/Containerfile"
  podman build -q --network host -t localhost/herd-cuda-libs:local "$ctx" >/dev/null
  rm -rf "$ctx"
  podman build -q --format docker --network host --target gpu \
    --build-arg RUNTIME_IMAGE="$BASE" --build-arg BINARY_IMAGE=localhost/herd-binary:local \
    --build-arg CUDA_LIBS_IMAGE=localhost/herd-cuda-libs:local \
    -t localhost/herd-gpu:local . >/dev/null
fi
for s in redis postgres nginx; do
  podman build -q --format docker --network host --build-arg BASE="$BASE" \
    -f "deploy/container/local/$s.Containerfile" -t "localhost/herd-$s:local" deploy/container/local >/dev/null
done
podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E 'herd(-debian|-redis|-postgres|-nginx|-gpu)?:' >&2
