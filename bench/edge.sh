#!/usr/bin/env bash
# Per-request CPU of the full pipeline on weir, the Spin app and the Cloudflare app (bench/edge.py).
#   bash bench/edge.sh [--requests N] [--targets weir,spin,cloudflare]
# Builds the release binaries, the test venv (tests/python/requirements.txt) and
# apps/cloudflare/node_modules (npm ci) when missing. Not a test: run it on an idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> cargo build --release -p weir -p weir-mock-upstream -p weir-spin-runner"
cargo build --release --locked -p weir -p weir-mock-upstream -p weir-spin-runner
venv=tests/python/.venv
if [ ! -x "$venv/bin/python" ]; then
  echo "==> python3 -m venv $venv"
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
if [ ! -d apps/cloudflare/node_modules ]; then
  echo "==> npm ci (apps/cloudflare: wrangler and Node 22)"
  (cd apps/cloudflare && npm ci --no-audit --no-fund)
fi
exec "$venv/bin/python" bench/edge.py "$@"
