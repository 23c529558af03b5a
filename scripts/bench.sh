#!/usr/bin/env bash
# Weir's benchmark, side by side with nginx (weir-bench part E), or any weir-bench part:
#   bash scripts/bench.sh                 # part E: mock, nginx, weir (about 6 minutes)
#   bash scripts/bench.sh all             # parts A-D
#   bash scripts/bench.sh compare --seconds 20
#   bash scripts/bench.sh compare --soak-seconds 600   # adds RSS over a 10-minute run (11 minutes more)
# Installs nginx (Debian package) when missing and builds the release binaries first.
# Not a test: run it on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/sbin/nginx ] && ! command -v nginx >/dev/null; then
  echo "==> installing nginx (Debian package: the reverse proxy part E compares weir with)"
  apt-get install -y --no-install-recommends nginx >/dev/null \
    || { apt-get update -qq && apt-get install -y --no-install-recommends nginx; }
fi
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)

echo "==> cargo build --release -p weir -p weir-mock-upstream -p weir-bench"
cargo build --release --locked -p weir -p weir-mock-upstream -p weir-bench

if [ "$#" -eq 0 ]; then
  set -- compare
fi
if [ "$1" = compare ]; then
  exec ./target/release/weir-bench "$@" --nginx-bin "$nginx_bin"
fi
exec ./target/release/weir-bench "$@"
