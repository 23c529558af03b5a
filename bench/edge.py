#!/usr/bin/env python3
"""Per-request CPU of the full policy pipeline at the edge, next to the self-hosted `weir`.

    bash bench/edge.sh            # builds the release binaries, then runs this
    python bench/edge.py --requests 300

The same configuration (weir-bench part E's full pipeline: auth -> pii -> guardrail (10 rules)
-> prompt -> cache (every request new: a miss) -> router -> token-limit, in front of the
release mock provider) runs on each target of the scenario harness (tests/python/targets.py):
the self-hosted `weir`, the Spin app under `weir-spin-runner` (our wasmtime host playing
`spin up`; its key-value store in memory) and the Cloudflare app under `wrangler dev --local` (workerd). Requests go one at a
time over a keep-alive connection; the CPU time of the target's processes (from /proc: for
Cloudflare, workerd and wrangler's Node process, reported apart) over the measured requests is
divided by their number. Every answer must be a 200 with the mock's answer and
`x-weir-cache: miss`, or the run fails. Not a test: timings depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "python"))
# Release binaries unless told otherwise (the harness defaults to the debug ones).
for var, name in (("WEIR_BIN", "weir"), ("MOCK_BIN", "weir-mock-upstream"), ("SPIN_RUNNER_BIN", "weir-spin-runner")):
    os.environ.setdefault(var, str(ROOT / "target" / "release" / name))

import httpx  # noqa: E402

import targets  # noqa: E402
from conftest import Keys, sha256_hex, start_mock, stop_process  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
FILLER = "The quick brown fox jumps over the lazy dog while the gateway counts tokens. " * 24


def config(mock_url: str, consumer_key: str) -> str:
    """Part E's full pipeline (bench/src/compare.rs), the provider key from the environment."""
    return f"""
providers:
  - name: mock
    base-url: {mock_url}/v1
    api-key-env: MOCK_UPSTREAM_KEY
    timeout-ms: 10000
proxies:
  - name: full
    context-path: /full
    provider: mock
    policies:
      - {{policy: auth, config: {{consumers: [{{id: bench, key-sha256: {sha256_hex(consumer_key)}}}]}}}}
      - {{policy: pii, config: {{entities: [email, phone, credit-card, iban, ipv4]}}}}
      - policy: guardrail
        config:
          rules:
            - {{id: injection, kind: injection}}
            - {{id: no-secrets, kind: regex, patterns: ['(?i)api[_-]?key\\s*[:=]']}}
            - {{id: passwords, kind: regex, patterns: ['(?i)password\\s*[:=]']}}
            - {{id: no-jailbreak, kind: regex, patterns: ['(?i)ignore (all )?previous instructions'], case-insensitive: true}}
            - {{id: links, kind: url, allowed-hosts: [docs.example.com]}}
            - {{id: request-length, kind: length, max-words: 5000}}
            - {{id: forbidden-answer, kind: regex, applies-to: response, patterns: ['forbidden phrase'], case-insensitive: true}}
            - {{id: budget, kind: regex, applies-to: response, patterns: [budget], action: flag}}
            - {{id: answer-links, kind: url, applies-to: response, allowed-hosts: [docs.example.com]}}
            - {{id: answer-length, kind: length, applies-to: response, max-words: 2000}}
      - {{policy: prompt, config: {{prepend: [{{role: system, content: 'You answer for ACME.'}}]}}}}
      - {{policy: cache, config: {{exact: {{ttl-s: 3600}}}}}}
      - policy: router
        config:
          circuit-breaker: {{enabled: false}}
          routes: [{{strategy: failover, targets: [{{provider: mock, model: mock-gpt}}]}}]
      - {{policy: token-limit, config: {{tokens-per-minute: 1000000000000000, requests-per-minute: 1000000000000000}}}}
"""


def processes() -> dict[int, tuple[int, str, int]]:
    """pid -> (parent pid, command name, CPU clock ticks) of every process."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        out[int(entry)] = (int(fields[1]), name, int(fields[11]) + int(fields[12]))
    return out


def tree_ticks(root: int) -> dict[str, int]:
    """CPU clock ticks of `root` and its descendants, by command name."""
    procs = processes()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    by_name: dict[str, int] = {}
    todo = [root]
    while todo:
        pid = todo.pop()
        if pid in procs:
            _, name, ticks = procs[pid]
            by_name[name] = by_name.get(name, 0) + ticks
        todo.extend(children.get(pid, []))
    return by_name


def measure(target, consumer_key: str, warmup: int, requests: int, run: str) -> dict:
    url = f"{target.base_url}/full/v1/chat/completions"
    headers = {"authorization": f"Bearer {consumer_key}"}
    latencies = []
    with httpx.Client(timeout=60) as client:

        def one(i: int) -> float:
            body = {
                "model": "mock-gpt",
                "messages": [
                    {"role": "system", "content": "You are a concise assistant. Answer in one short paragraph."},
                    {"role": "user", "content": f"{run} request {i}. {FILLER}"},
                ],
                "max_tokens": 32,
                "temperature": 0.2,
            }
            start = time.perf_counter()
            r = client.post(url, json=body, headers=headers)
            took = time.perf_counter() - start
            if r.status_code != 200 or not r.json().get("choices") or r.headers.get("x-weir-cache") != "miss":
                raise SystemExit(
                    f"{target.name}: request {i} answered {r.status_code} "
                    f"(x-weir-cache: {r.headers.get('x-weir-cache')}): {r.text[:500]}\n{target.log_text()[-3000:]}"
                )
            return took

        for i in range(warmup):
            one(i)
        before = tree_ticks(target.proc.pid)
        start = time.perf_counter()
        for i in range(warmup, warmup + requests):
            latencies.append(one(i))
        wall = time.perf_counter() - start
        after = tree_ticks(target.proc.pid)
    used = {name: (after.get(name, 0) - before.get(name, 0)) / TICK for name in after}
    latencies.sort()
    return {
        "cpu_ms": sum(used.values()) * 1000 / requests,
        "by_process": {name: s * 1000 / requests for name, s in used.items() if s > 0},
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "req_s": requests / wall,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="measured requests per target")
    parser.add_argument("--warmup", type=int, default=30, help="unmeasured requests first")
    parser.add_argument("--targets", default="weir,spin,cloudflare", help="comma-separated: weir, spin, cloudflare")
    parser.add_argument(
        "--no-preinitialise",
        action="store_true",
        help="build the edge apps with `weir build --no-preinitialise` (policies parse their configuration per request)",
    )
    parser.add_argument(
        "--spin-pooling",
        action="store_true",
        help="run weir-spin-runner with a pooling allocator (`--pooling`, weir's memory-reset settings), as a production Spin host does",
    )
    args = parser.parse_args()

    keys = Keys(alice="sk-bench-" + os.urandom(8).hex(), bob="unused", upstream="sk-upstream-" + os.urandom(8).hex())
    rows = []
    with tempfile.TemporaryDirectory(prefix="weir-bench-edge-") as tmp:
        work = Path(tmp)
        mock = start_mock(work, keys)
        try:
            for name in args.targets.split(","):
                reason = targets.skip_reason(name)
                if reason:
                    print(f"[edge] {name}: skipped: {reason}", file=sys.stderr)
                    continue
                workdir = work / name
                workdir.mkdir()
                target = targets.TARGETS[name](workdir, config(mock.url, keys.alice), keys.upstream)
                if hasattr(target, "env"):
                    target.env["WEIR_LOG"] = "warn"  # the harness's debug logging is not what is measured
                if args.no_preinitialise and name != "weir":
                    target.build_args = ["--no-preinitialise"]
                if hasattr(target, "persist"):
                    # weir-spin-runner's file persistence rewrites the whole store after every
                    # change (O(store) per write): the runner's, not Spin's; in memory here.
                    target.persist = False
                if hasattr(target, "pooling"):
                    target.pooling = args.spin_pooling
                print(f"[edge] {name}: building and starting", file=sys.stderr)
                target.start()
                try:
                    print(f"[edge] {name}: {args.warmup} + {args.requests} requests", file=sys.stderr)
                    rows.append((name, measure(target, keys.alice, args.warmup, args.requests, os.urandom(6).hex())))
                finally:
                    target.stop()
        finally:
            stop_process(mock.proc)

    print("| target | CPU ms/request | by process (ms/request) | p50 ms | p99 ms | req/s (one at a time) |")
    print("|---|---:|---|---:|---:|---:|")
    for name, m in rows:
        by = ", ".join(f"{p} {ms:.2f}" for p, ms in sorted(m["by_process"].items(), key=lambda kv: -kv[1]))
        print(f"| {name} | {m['cpu_ms']:.2f} | {by} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} | {m['req_s']:.0f} |")
    print(
        f"\n{args.requests} measured requests per target after {args.warmup}, one at a time; CPU from /proc "
        f"at 1/{TICK} s resolution; every answer a 200, a cache miss."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
