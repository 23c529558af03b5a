#!/usr/bin/env bash
# End-to-end tests of a real `weir` process with the official `openai` Python SDK.
#
# Usage (from anywhere; paths are relative to the repository root):
#   cargo build -p weir -p weir-mock-upstream -p weir-spin-runner
#   bash tests/python/run.sh [extra pytest args]
# Env: WEIR_BIN (default target/debug/weir), MOCK_BIN (default target/debug/weir-mock-upstream),
# SPIN_RUNNER_BIN (default target/debug/weir-spin-runner).
# test_scenarios.py also runs tests/scenarios/*.yaml against the Cloudflare app (`weir build
# --target cloudflare` + `wrangler dev`; skipped unless `npm install` ran in apps/cloudflare) and
# the Spin app (`weir build --target spin` + weir-spin-runner).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

abs() { case "$1" in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$root/$1" ;; esac; }
export WEIR_BIN="$(abs "${WEIR_BIN:-target/debug/weir}")"
export MOCK_BIN="$(abs "${MOCK_BIN:-target/debug/weir-mock-upstream}")"
export SPIN_RUNNER_BIN="$(abs "${SPIN_RUNNER_BIN:-target/debug/weir-spin-runner}")"
for bin in "$WEIR_BIN" "$MOCK_BIN" "$SPIN_RUNNER_BIN"; do
  if [ ! -x "$bin" ]; then
    echo "run.sh: $bin not found or not executable; build it with: cargo build -p weir -p weir-mock-upstream -p weir-spin-runner" >&2
    exit 2
  fi
done

venv="$here/.venv"
if [ ! -x "$venv/bin/python" ]; then
  echo "run.sh: creating $venv"
  python3 -m venv "$venv"
fi
echo "run.sh: installing tests/python/requirements.txt"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --progress-bar on -r "$here/requirements.txt"

echo "run.sh: running pytest (WEIR_BIN=$WEIR_BIN, MOCK_BIN=$MOCK_BIN)"
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/python "$@"
