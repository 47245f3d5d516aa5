#!/usr/bin/env bash
# What the CUDA kernels' compile test needs on a machine without a GPU: NVRTC and CUDA's runtime
# headers, as NVIDIA's Python wheels pinned to CUDA 13.0 (the GPU machines' driver; a newer NVRTC
# emits PTX that driver rejects). Installs into .cache/cuda once; prints the environment the
# tests need. Safe to rerun.
set -euo pipefail
cd "$(dirname "$0")/../.."
dir=.cache/cuda
cu=$dir/nvidia/cu13
if [ ! -e "$cu/lib/libnvrtc.so.13" ] || [ ! -e "$cu/include/crt/mma.h" ]; then
  echo "cuda-deps: installing NVRTC 13.0 and CUDA 13.0's headers into $dir" >&2
  python3 -m pip install -q --disable-pip-version-check --no-deps --target "$dir" \
    nvidia-cuda-nvrtc==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-cuda-crt==13.0.88 >&2
fi
root=$(pwd)
echo "export LD_LIBRARY_PATH=$root/$cu/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
echo "export HERD_CUDA_INCLUDE=$root/$cu/include:$root/$cu/include/cccl"
echo "export HERD_REQUIRE_NVRTC=1"
