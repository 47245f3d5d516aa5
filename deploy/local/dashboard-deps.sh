#!/usr/bin/env bash
# What the dashboard's browser test needs: Debian's Chromium (and a font), Node.js with npm, and
# playwright-core from tests/dashboard/package-lock.json. Installs what is missing; safe to rerun.
set -euo pipefail
cd "$(dirname "$0")/../.."
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
missing=()
command -v chromium >/dev/null || missing+=(chromium)
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "dashboard-deps: installing ${missing[*]} with apt"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ ! -d tests/dashboard/node_modules/playwright-core ]; then
  echo "dashboard-deps: npm ci in tests/dashboard"
  npm ci --prefix tests/dashboard --no-audit --no-fund >/dev/null
fi
