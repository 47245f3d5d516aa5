# herd's container image: one binary (`herd gateway | worker | admin serve | migrate | serve`),
# the demo model for the cpu-demo overlay, a non-root user. The same image runs on GPUs: herd
# opens the NVIDIA driver, NVRTC and cuBLAS at run time, so the GPU variant only changes the
# runtime base to one that has those libraries:
#   docker build -t herd .
#   docker build -t herd-gpu --build-arg RUNTIME_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu24.04 .
# BINARY_IMAGE names where /src/target/release/herd comes from: the build stage below by default,
# or an image holding a binary built outside (deploy/container/build.sh, where no Rust image can be
# pulled).
ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim
ARG BINARY_IMAGE=build

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p herd \
 && strip target/release/herd

FROM ${BINARY_IMAGE} AS binary

FROM ${RUNTIME_IMAGE} AS runtime
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
