#!/usr/bin/env python3
"""Checks deploy/compose/ offline, as `make test` does (services/herd/tests/deploy.rs).

- compose.yaml against the Compose Specification (the `compose-spec` package: unknown keys, wrong
  types and unknown values are errors), with `${VAR:-default}` taken at its default and YAML merge
  keys resolved first;
- herd's rules: each herd service's environment (with the settings file it mounts) loads in
  `herd config`; workers get a stop grace period above `worker.shutdown_grace_ms`; nginx's
  upstreams and Prometheus's targets are services of the file on the ports herd listens on; the
  collector exports to a service of the file; every metric the Grafana dashboard queries is one
  herd exports.

    python3 deploy/compose/validate.py --herd target/release/herd
"""
import argparse, glob, json, os, re, subprocess, sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))


def defaults(text):
    return re.sub(r"\$\{([A-Z0-9_]+):-([^}]*)\}", lambda m: m.group(2), text)


def seconds(v):
    m = re.fullmatch(r"(\d+)(ms|s|m)?", str(v))
    if not m:
        raise ValueError(f"duration {v!r}")
    n, unit = int(m.group(1)), m.group(2) or "s"
    return n / 1000 if unit == "ms" else n * 60 if unit == "m" else n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--herd", required=True)
    args = ap.parse_args()
    errors = []
    text = open(os.path.join(HERE, "compose.yaml")).read()
    doc = yaml.safe_load(defaults(text))
    spec = {k: v for k, v in doc.items() if not k.startswith("x-")}
    import compose_spec

    try:
        compose_spec.PyCompose.from_json(json.dumps(spec))
    except ValueError as e:
        errors.append(f"compose.yaml: {e}")
    services = doc.get("services", {})
    herd_image = re.search(r"image: \$\{HERD_IMAGE:-([^}]*)\}", text).group(1)
    herd_services = {n: s for n, s in services.items() if s.get("image") == herd_image}
    if not {"migrate", "admin"} <= set(herd_services) or sum(1 for n in herd_services if n.startswith("gateway")) < 2 or sum(1 for n in herd_services if n.startswith("worker")) < 2:
        errors.append(f"compose.yaml: want a migration, 2 gateways, 2 workers and admin; herd services are {sorted(herd_services)}")

    listen = {}
    for n, s in herd_services.items():
        env = {k: str(v) for k, v in s.get("environment", {}).items()}
        for vol in s.get("volumes", []):
            src, dst = vol.split(":")[:2]
            if env.get("HERD_CONFIG") == dst:
                env["HERD_CONFIG"] = os.path.normpath(os.path.join(HERE, src))
        run_env = {k: v for k, v in os.environ.items() if not k.startswith("HERD") and k not in ("REDIS_URL", "DATABASE_URL")}
        run_env.update(env)
        out = subprocess.run([args.herd, "config"], env=run_env, capture_output=True, text=True, cwd=ROOT)
        if out.returncode != 0:
            errors.append(f"service {n}: herd refuses its settings: {out.stderr.strip()}")
        listen = {k: env[k].rpartition(":")[2] for k in env if k.endswith("LISTEN")}
        if n.startswith("worker"):
            grace = seconds(s.get("stop_grace_period", "10s"))
            want = int(env.get("HERD__WORKER__SHUTDOWN_GRACE_MS", "10000")) / 1000
            if grace <= want:
                errors.append(f"service {n}: stop_grace_period {grace} s is not above worker.shutdown_grace_ms ({want} s)")

    gateway_port = listen.get("HERD__GATEWAY__LISTEN")
    nginx = open(os.path.join(HERE, "nginx.conf")).read()
    upstreams = re.findall(r"server ([\w-]+):(\d+)", nginx)
    if len(upstreams) < 2:
        errors.append("nginx.conf: fewer than two upstream gateways")
    for host, port in upstreams:
        if not host.startswith("gateway") or host not in services or port != gateway_port:
            errors.append(f"nginx.conf: upstream {host}:{port} is not a gateway service on port {gateway_port}")

    prom = yaml.safe_load(open(os.path.join(HERE, "prometheus.yml")))
    ports = {"gateway": listen.get("HERD__GATEWAY__LISTEN"), "worker": listen.get("HERD__WORKER__METRICS_LISTEN"), "admin": listen.get("HERD__ADMIN__LISTEN")}
    for job in prom["scrape_configs"]:
        for target in (t for sc in job["static_configs"] for t in sc["targets"]):
            host, _, port = target.partition(":")
            kind = host.split("-")[0]
            if host not in services or ports.get(kind) != port:
                errors.append(f"prometheus.yml: target {target} is not a herd service on its port")

    otel = yaml.safe_load(open(os.path.join(HERE, "otel-collector.yaml")))
    for name, exp in otel.get("exporters", {}).items():
        host = exp.get("endpoint", "").split(":")[0]
        if host not in services:
            errors.append(f"otel-collector.yaml: exporter {name} sends to {host}, not a service")

    exported = set()
    for f in glob.glob(os.path.join(ROOT, "services", "*", "src", "*.rs")):
        exported |= set(re.findall(r'(?:counter|gauge|histogram)!\(\s*"(herd_[a-z_]+)"', open(f).read()))
    for f in glob.glob(os.path.join(HERE, "grafana", "dashboards", "*.json")):
        dash = json.load(open(f))
        for p in dash["panels"]:
            for t in p["targets"]:
                for metric in re.findall(r"\b(herd_[a-z_]+?)(?:_bucket|_sum|_count)?\b", t["expr"]):
                    if metric not in exported:
                        errors.append(f"{os.path.basename(f)}: panel {p['title']!r} queries {metric}, which herd does not export")
    for f in glob.glob(os.path.join(HERE, "grafana", "provisioning", "*", "*.yaml")):
        yaml.safe_load(open(f))

    print(f"deploy/compose: {len(services)} services ({', '.join(services)})")
    for e in errors:
        print("error:", e, file=sys.stderr)
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
