#!/bin/sh
# Healthy when whichever herd process runs here answers /healthz: the gateway (8080), the admin
# API (8081) or a worker's probe port (9464), each read from the settings' environment.
for addr in "${HERD__GATEWAY__LISTEN:-}" "${HERD__ADMIN__LISTEN:-}" "${HERD__WORKER__METRICS_LISTEN:-}"; do
  port=${addr##*:}
  [ -n "$port" ] || continue
  curl -fsS --max-time 2 "http://127.0.0.1:${port}/healthz" >/dev/null 2>&1 && exit 0
done
exit 1
