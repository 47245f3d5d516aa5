#!/usr/bin/env python3
"""Validates herd's Kubernetes manifests offline, as `make test` does (services/herd/tests/deploy.rs).

Every overlay under deploy/k8s/overlays/ is rendered with `kubectl kustomize`, then:
- built-in kinds are checked against the Kubernetes OpenAPI schemas (`kubernetes-validate`, strict:
  unknown fields are errors), for each version in KUBERNETES_VERSIONS;
- KEDA's ScaledObject/TriggerAuthentication and the Prometheus Operator's ServiceMonitor against the
  models generated from their CRDs (cloudcoil-models-keda, cloudcoil-models-prometheus-operator),
  unknown fields included;
- herd's own rules: the settings (ConfigMap + Secret) load in `herd config`; the worker's grace
  period is above `worker.shutdown_grace_ms`; KEDA reads herd's stream and consumer group; probes
  use herd's /healthz and /readyz on declared ports; listen ports match the containers'; only the
  gateway is exposed; every pod runs as non-root on a read-only root filesystem; every referenced
  ConfigMap/Secret key exists (production's Secret: in secrets.env.example).

    python3 deploy/k8s/validate.py --herd target/release/herd
"""
import argparse, os, subprocess, sys

import yaml

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", ".."))
KUBERNETES_VERSIONS = ["1.29.0", "1.33.0"]
HERD_PATHS = {"/healthz", "/readyz"}
CUSTOM_GROUPS = {"keda.sh", "monitoring.coreos.com"}


def render(overlay):
    out = subprocess.run(["kubectl", "kustomize", overlay], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{overlay}: kubectl kustomize failed: {out.stderr.strip()}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def name(doc):
    return f"{doc['kind']}/{doc['metadata']['name']}"


def unknown_keys(given, dumped, path=""):
    """Keys in `given` that the model dropped (pydantic ignores unknown fields)."""
    found = []
    if isinstance(given, dict) and isinstance(dumped, dict):
        for k, v in given.items():
            if k not in dumped:
                found.append(f"{path}.{k}")
            else:
                found += unknown_keys(v, dumped[k], f"{path}.{k}")
    elif isinstance(given, list) and isinstance(dumped, list):
        for i, (a, b) in enumerate(zip(given, dumped)):
            found += unknown_keys(a, b, f"{path}[{i}]")
    return found


def check_custom(doc):
    from cloudcoil.models.keda import v1alpha1 as keda
    from cloudcoil.models.prometheus_operator import v1 as prom

    model = {
        ("keda.sh/v1alpha1", "ScaledObject"): keda.ScaledObject,
        ("keda.sh/v1alpha1", "TriggerAuthentication"): keda.TriggerAuthentication,
        ("monitoring.coreos.com/v1", "ServiceMonitor"): prom.ServiceMonitor,
    }.get((doc["apiVersion"], doc["kind"]))
    if model is None:
        return [f"{name(doc)}: no schema for {doc['apiVersion']} {doc['kind']}"]
    try:
        obj = model.model_validate(doc)
    except Exception as e:  # pydantic's ValidationError names the field
        return [f"{name(doc)}: {e}"]
    extra = unknown_keys(doc, obj.model_dump(by_alias=True, exclude_unset=True, mode="json"))
    return [f"{name(doc)}: unknown field {k}" for k in extra]


def check_builtin(doc):
    import kubernetes_validate

    errors = []
    for v in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(doc, v, strict=True)
        except kubernetes_validate.ValidationError as e:
            errors.append(f"{name(doc)} (Kubernetes {v}): {e.message} at {'.'.join(map(str, e.path))}")
        except Exception as e:  # an unknown kind or version
            errors.append(f"{name(doc)} (Kubernetes {v}): {e}")
    return errors


def pod_specs(docs):
    for d in docs:
        if d["kind"] in ("Deployment", "Job"):
            yield d, d["spec"]["template"]["spec"]


def herd_rules(overlay, docs, herd):
    errors = []
    # Generated ConfigMaps and Secrets carry a hash suffix (herd-config-5g7…).
    config = next((d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("herd-config")), None)
    if config is None:
        return [f"{overlay}: no herd-config ConfigMap"]
    env = dict(config.get("data", {}))
    secret = next((d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"].startswith("herd-secrets")), None)
    if secret is not None:
        import base64

        secret_keys = {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
    else:
        example = os.path.join(overlay, "secrets.env.example")
        if not os.path.exists(example):
            return [f"{overlay}: no Secret herd-secrets and no secrets.env.example documenting it"]
        secret_keys = dict(l.split("=", 1) for l in open(example).read().splitlines() if l.strip() and not l.startswith("#"))
    env.update(secret_keys)

    # herd's own settings loader: every HERD__ key known, every value valid.
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("HERD") and k not in ("REDIS_URL", "DATABASE_URL")}
    run_env.update(env)
    out = subprocess.run([herd, "config"], env=run_env, capture_output=True, text=True)
    if out.returncode != 0:
        errors.append(f"{overlay}: herd refuses the settings: {out.stderr.strip()}")
    grace_ms = int(env.get("HERD__WORKER__SHUTDOWN_GRACE_MS", "10000"))
    prefix, group = env.get("HERD__QUEUE__KEY_PREFIX", "herd"), env.get("HERD__QUEUE__GROUP", "workers")
    partitions = int(env.get("HERD__QUEUE__PARTITIONS", "1"))
    # herd's turn streams, one per partition: KEDA must watch each (a trigger per stream).
    streams = {f"{prefix}:turns:{{{p}}}" for p in range(partitions)}
    listen = {
        "herd-gateway": env.get("HERD__GATEWAY__LISTEN", "127.0.0.1:8080"),
        "herd-admin": env.get("HERD__ADMIN__LISTEN", "127.0.0.1:8081"),
        "herd-worker": env.get("HERD__WORKER__METRICS_LISTEN", "127.0.0.1:9464"),
    }

    for d, spec in pod_specs(docs):
        n = d["metadata"]["name"]
        if not n.startswith("herd-") or n in ("herd-redis", "herd-postgres"):
            continue
        sc = spec.get("securityContext", {})
        if not sc.get("runAsNonRoot"):
            errors.append(f"{name(d)}: pods must run as non-root")
        for c in spec["containers"]:
            csc = c.get("securityContext", {})
            if not csc.get("readOnlyRootFilesystem") or csc.get("allowPrivilegeEscalation", True):
                errors.append(f"{name(d)}/{c['name']}: read-only root filesystem, no privilege escalation")
            ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                p = c.get(probe, {}).get("httpGet")
                if p is None:
                    continue
                if p["path"] not in HERD_PATHS:
                    errors.append(f"{name(d)}: {probe} path {p['path']} is not one of herd's {sorted(HERD_PATHS)}")
                if p["port"] not in ports:
                    errors.append(f"{name(d)}: {probe} port {p['port']} is not a declared container port")
            if n in listen and d["kind"] == "Deployment":
                host, _, port = listen[n].rpartition(":")
                if host in ("127.0.0.1", "localhost"):
                    errors.append(f"{name(d)}: listens on {listen[n]}, unreachable from outside the pod")
                if int(port) not in ports.values():
                    errors.append(f"{name(d)}: listens on port {port}, containers declare {sorted(ports.values())}")
            for ref in c.get("envFrom", []):
                for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                    if key in ref:
                        ref_name = ref[key]["name"]
                        exists = any(x["kind"] == kind and x["metadata"]["name"] == ref_name for x in docs)
                        if not exists and not (kind == "Secret" and ref_name.startswith("herd-secrets") and secret is None):
                            errors.append(f"{name(d)}: {kind} {ref_name} is not in the render")
        if n == "herd-worker":
            grace = spec.get("terminationGracePeriodSeconds", 30)
            if grace * 1000 <= grace_ms:
                errors.append(f"{name(d)}: terminationGracePeriodSeconds {grace} s is not above worker.shutdown_grace_ms {grace_ms} ms")

    for d in docs:
        if d["kind"] == "ScaledObject":
            watched = set()
            for t in d["spec"]["triggers"]:
                m = t.get("metadata", {})
                if t["type"].startswith("redis"):
                    watched.add(m.get("stream"))
                    if m.get("stream") not in streams:
                        errors.append(f"{name(d)}: stream {m.get('stream')!r} is none of herd's {sorted(streams)}")
            if watched and not streams <= watched:
                errors.append(f"{name(d)}: no trigger watches {sorted(streams - watched)} (queue.partitions = {partitions})")
            for t in d["spec"]["triggers"]:
                m = t.get("metadata", {})
                if t["type"].startswith("redis") and m.get("consumerGroup") != group:
                    errors.append(f"{name(d)}: consumerGroup {m.get('consumerGroup')!r}, herd's is {group!r}")
                if "addressFromEnv" in m and m["addressFromEnv"] not in env:
                    errors.append(f"{name(d)}: addressFromEnv {m['addressFromEnv']} is in neither the ConfigMap nor the Secret")
        if d["kind"] == "TriggerAuthentication":
            for ref in d["spec"].get("secretTargetRef", []):
                if ref["key"] not in secret_keys:
                    errors.append(f"{name(d)}: Secret key {ref['key']} is not in herd-secrets")
        if d["kind"] == "Service" and d["spec"].get("type") in ("LoadBalancer", "NodePort") and d["metadata"]["name"] != "herd-gateway":
            errors.append(f"{name(d)}: only the gateway is exposed outside the cluster")
    return errors


def self_test(herd):
    """The herd rules catch what they are for: a ScaledObject on a stream herd does not write, and
    partitions no trigger watches. Returns the rules' misses."""
    import copy

    overlay = os.path.join(ROOT, "deploy", "k8s", "overlays", "production")
    docs = render(overlay)
    misses = []
    bad = copy.deepcopy(docs)
    for d in bad:
        if d["kind"] == "ScaledObject":
            d["spec"]["triggers"][0]["metadata"]["stream"] = "herd:turns"
    if not any("is none of herd's" in e for e in herd_rules(overlay, bad, herd)):
        misses.append("a trigger on the old stream herd:turns passed")
    bad = copy.deepcopy(docs)
    for d in bad:
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("herd-config"):
            d["data"]["HERD__QUEUE__PARTITIONS"] = "2"
    if not any("no trigger watches" in e for e in herd_rules(overlay, bad, herd)):
        misses.append("2 partitions with one trigger passed")
    if herd_rules(overlay, docs, herd):
        misses.append("the overlay as shipped fails")
    return misses


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--herd", required=True, help="the herd binary (for `herd config`)")
    ap.add_argument("--self-test", action="store_true", help="check that herd's rules catch broken manifests")
    args = ap.parse_args()
    if args.self_test:
        misses = self_test(args.herd)
        for m in misses:
            print("self-test:", m, file=sys.stderr)
        print("self-test: ok" if not misses else "self-test: FAILED")
        sys.exit(1 if misses else 0)
    overlays_dir = os.path.join(ROOT, "deploy", "k8s", "overlays")
    overlays = sorted(os.path.join(overlays_dir, o) for o in os.listdir(overlays_dir))
    errors = []
    for overlay in overlays:
        docs = render(overlay)
        kinds = sorted({d["kind"] for d in docs})
        for d in docs:
            errors += check_custom(d) if d["apiVersion"].split("/")[0] in CUSTOM_GROUPS else check_builtin(d)
        errors += herd_rules(overlay, docs, args.herd)
        print(f"{os.path.relpath(overlay, ROOT)}: {len(docs)} objects ({', '.join(kinds)})")
    for e in errors:
        print("error:", e, file=sys.stderr)
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
