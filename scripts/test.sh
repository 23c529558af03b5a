#!/usr/bin/env bash
# Runs every test of the repository: host crates (unit + end-to-end), the policy components'
# unit tests, and the end-to-end tests with the official `openai` Python SDK.
# Usage (from anywhere): bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "toolchain: wasm32-wasip2 target (listed in rust-toolchain.toml)"
rustup target add wasm32-wasip2 >/dev/null 2>&1 || rustup target add wasm32-wasip2

step "system tools: curl, jq (the README's controller example), redis-server (shared state across replicas) and nginx (nginx -t on deploy/nginx.conf)"
if ! command -v jq >/dev/null || ! command -v curl >/dev/null || ! command -v redis-server >/dev/null \
  || ! command -v nginx >/dev/null; then
  apt-get install -y --no-install-recommends jq curl redis-server nginx >/dev/null \
    || { apt-get update -qq && apt-get install -y --no-install-recommends jq curl redis-server nginx; }
fi

step "host crates: build, unit and end-to-end tests (builds the policy components first)"
cargo test --workspace --locked

step "policy components: unit tests (native)"
cargo test --locked --manifest-path components/Cargo.toml --target "$(rustc -vV | sed -n 's/^host: //p')"

step "Cloudflare app tooling: jco, wrangler, Node 22 (npm ci from the committed lockfile)"
# `npm ci` installs exactly the committed lockfile. Once (stop 7) a registry mirror left optional
# platform packages of jco out of what `npm ci` accepted; `npm install` with the same lockfile
# (pinned versions) is the fallback, and says so.
if ! (cd apps/cloudflare && npm ci --no-audit --no-fund --loglevel=error); then
  echo "test.sh: npm ci failed; installing the same pinned versions with npm install" >&2
  (cd apps/cloudflare && npm install --no-audit --no-fund --loglevel=error)
fi

step "MCP servers for the tests: @modelcontextprotocol/server-everything (npm ci in tests/node)"
(cd tests/node && npm ci --no-audit --no-fund --loglevel=error)

step "end-to-end tests with the official openai Python SDK (incl. the edge scenario on weir, wrangler dev and the Spin app)"
cargo build --locked -p weir -p weir-mock-upstream -p weir-spin-runner
bash tests/python/run.sh
