# herd — the two commands: `make run` and `make test`.
SHELL := /bin/bash
DEMO_MODEL ?= deploy/models/herd-demo-chat
BENCH_CONFIG ?= engine/benches/bench16/config.json
export REDIS_URL ?= redis://127.0.0.1:6379
export DATABASE_URL ?= postgres://postgres:postgres@127.0.0.1:5432/herd

HERD_CONFIG ?= deploy/local/herd.toml

.PHONY: run key chat engine-chat test services dashboard-deps deploy-deps build bench lint soak

## Start (or reuse) Redis and PostgreSQL, migrate, build, and run herd (gateway + worker) with
## the bundled demo model. Chat with it from another terminal: `make chat`.
run: services build
	HERD_CONFIG=$(HERD_CONFIG) target/release/herd migrate
	@echo
	@echo "herd is starting with $(DEMO_MODEL) (settings: $(HERD_CONFIG))."
	@echo "Chat with it as a WhatsApp user from another terminal:   make chat"
	@echo "(or: target/release/herd chat --config $(HERD_CONFIG)); Ctrl-C stops herd."
	@echo "Dashboard: http://127.0.0.1:8081/admin/ — get a key with: make key"
	@echo
	HERD_CONFIG=$(HERD_CONFIG) target/release/herd serve

## A new admin API key for the dashboard (http://127.0.0.1:8081/admin/) of the herd `make run` started.
key: build
	HERD_CONFIG=$(HERD_CONFIG) target/release/herd admin create-key --role admin --name make-key

## A terminal WhatsApp user for the herd that `make run` started.
chat: build
	HERD_CONFIG=$(HERD_CONFIG) target/release/herd chat

## Chat with the model directly, without the messaging pipeline.
engine-chat: build
	target/release/herd engine chat --model $(DEMO_MODEL)

## Start (or reuse) Redis and PostgreSQL, install the dashboard test's browser, NVRTC (the CUDA
## kernels are compiled for sm_90 in the tests; no GPU needed) and the Kubernetes schemas the
## manifests are validated against, then run the whole test suite.
## Tests that need a GPU are skipped here (#[ignore]); deploy/gpu/check.sh runs them on one.
test: services dashboard-deps deploy-deps
	@eval "$$(bash deploy/local/cuda-deps.sh)"; \
	if cargo nextest --version >/dev/null 2>&1; then \
	  cargo nextest run --workspace --no-fail-fast; \
	else \
	  cargo test --workspace --no-fail-fast; \
	fi

services:
	@bash deploy/local/services.sh

dashboard-deps:
	@bash deploy/local/dashboard-deps.sh

deploy-deps:
	@bash deploy/local/deploy-deps.sh

build:
	cargo build --release -p herd

## Engine throughput on the 16-expert benchmark config (2 threads, as in docs/benchmarks.md).
bench: build
	HERD_THREADS=2 target/release/herd engine bench --config $(BENCH_CONFIG) --batch 1,4,16
	HERD_THREADS=2 target/release/herd engine bench --config $(BENCH_CONFIG) --dtype bf16 --batch 1
	HERD_THREADS=2 target/release/herd engine bench --config $(BENCH_CONFIG) --dtype f16 --batch 1

lint:
	cargo clippy --workspace --all-targets -- -D warnings

## The soak of herd as processes under faults (10,000 messages, 2 gateways, 3 workers) and its
## throughput with 1, 2 and 3 workers; see deploy/local/soak.sh. Not part of `make test` (which
## runs a short soak).
soak: services
	bash deploy/local/soak.sh
