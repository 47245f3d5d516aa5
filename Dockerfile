# herd's container image: one binary (`herd gateway | worker | admin serve | migrate | serve`),
# the demo model for the cpu-demo overlay, a non-root user. herd opens the NVIDIA driver, NVRTC
# and cuBLAS at run time, so the GPU image is the same image with CUDA 13.0's NVRTC, runtime
# headers and cuBLAS added (the driver comes from the host, through the NVIDIA container toolkit):
#   docker build -t herd .
#   docker build -t herd-gpu --target gpu .
# BINARY_IMAGE names where /src/target/release/herd comes from: the build stage below by default,
# or an image holding a binary built outside; CUDA_LIBS_IMAGE likewise names an image holding
# /cuda (deploy/container/build.sh makes both where no registry can be reached).
ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim
ARG BINARY_IMAGE=build
ARG PYTHON_IMAGE=python:3.12-slim-bookworm
ARG CUDA_LIBS_IMAGE=cuda-libs

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p herd \
 && strip target/release/herd

FROM ${BINARY_IMAGE} AS binary

# CUDA 13.0 from NVIDIA's wheels, only the libraries herd opens: NVRTC (with its builtins) and
# cuBLAS, and the headers NVRTC compiles herd's kernels against. Pinned to 13.0: GPU hosts run a
# 13.0 driver, and a newer NVRTC emits PTX that driver rejects.
FROM ${PYTHON_IMAGE} AS cuda-libs
RUN pip install --no-cache-dir --no-deps --target /w nvidia-cuda-nvrtc==13.0.88 nvidia-cuda-runtime==13.0.96 \
      nvidia-cuda-cccl==13.0.85 nvidia-cuda-crt==13.0.88 nvidia-cublas==13.0.2.14 \
 && mkdir -p /cuda/lib \
 && cp -a /w/nvidia/cu13/include /cuda/include \
 && cp -a /w/nvidia/cu13/lib/libnvrtc.so.13 /w/nvidia/cu13/lib/libnvrtc-builtins.so.13.0 \
      /w/nvidia/cu13/lib/libcublas.so.13 /w/nvidia/cu13/lib/libcublasLt.so.13 /cuda/lib/ \
 && rm -rf /w

FROM ${CUDA_LIBS_IMAGE} AS cuda

FROM ${RUNTIME_IMAGE} AS runtime-base
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# ca-certificates: the platforms' Send API over TLS; curl: the health check.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /nonexistent --shell /usr/sbin/nologin herd
COPY --from=binary /src/target/release/herd /usr/local/bin/herd
COPY deploy/models/herd-demo-chat /opt/herd/models/herd-demo-chat
COPY deploy/container/healthcheck.sh /usr/local/bin/herd-healthcheck
ENV HERD__GATEWAY__LISTEN=0.0.0.0:8080 \
    HERD__ADMIN__LISTEN=0.0.0.0:8081 \
    HERD__WORKER__METRICS_LISTEN=0.0.0.0:9464 \
    HERD__WORKER__MODEL=/opt/herd/models/herd-demo-chat
USER 10001:10001
EXPOSE 8080 8081 9464
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 CMD ["/usr/local/bin/herd-healthcheck"]
ENTRYPOINT ["/usr/local/bin/herd"]
CMD ["serve"]

# The GPU image: the worker takes the first GPU when the driver reports one (else the CPU); compiled
# kernels are cached under /tmp (the root filesystem may be read-only).
FROM runtime-base AS gpu
COPY --from=cuda /cuda /opt/cuda
ENV LD_LIBRARY_PATH=/opt/cuda/lib \
    HERD_CUDA_INCLUDE=/opt/cuda/include:/opt/cuda/include/cccl \
    HERD_CACHE_DIR=/tmp/herd-cache \
    HERD__WORKER__DEVICE=auto

# The CPU image (the default target).
FROM runtime-base AS runtime
