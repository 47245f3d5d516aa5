# Sourced by the GPU scripts: finds the CUDA libraries herd opens at run time (the driver's
# libcuda, NVRTC, cuBLAS) and CUDA's headers for NVRTC, on a machine that has them somewhere —
# a CUDA toolkit, or the NVIDIA wheels of a Python environment (PyTorch's).
herd_find() {  # herd_find PATTERN: the first file named PATTERN under the usual places
  local roots="/usr/local/cuda /usr/local/nvidia /usr/lib/x86_64-linux-gnu /opt /usr/local/lib /usr/lib/python3"
  find $roots -name "$1" \( -type f -o -type l \) 2>/dev/null | head -1
}
for lib in 'libcuda.so.1' 'libnvrtc.so.13*' 'libcublas.so.13*' 'libcublasLt.so.13*'; do
  f=$(herd_find "$lib")
  [ -n "$f" ] && export LD_LIBRARY_PATH="$(dirname "$f")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done
if [ -z "${HERD_CUDA_INCLUDE:-}" ]; then
  mma=$(herd_find mma.h | grep '/crt/mma.h$' || true)
  [ -z "$mma" ] && mma=$(find / -path /proc -prune -o -path '*/crt/mma.h' -print 2>/dev/null | head -1)
  [ -n "$mma" ] && export HERD_CUDA_INCLUDE="$(dirname "$(dirname "$mma")")"
fi
export HERD_CACHE_DIR="${HERD_CACHE_DIR:-/tmp/herd-cache}"
