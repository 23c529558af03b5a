"""Two real `weir` processes sharing one real `redis-server` (Debian's, installed by
scripts/test.sh) behave as one gateway: limits are exact across them, and a Redis outage is
what each policy configured it to mean, with recovery without a restart. The test is the load
balancer: it sends each request to the replicas in turn.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from conftest import _binary, _wait_ready, free_port, sha256_hex, stop_process

LIMIT = 200  # tokens per day: a window that does not roll over during the test
MESSAGES = [{"role": "user", "content": "Limit me"}]
MAX_TOKENS = 10


def reservation() -> int:
    """What token-limit reserves: ceil(bytes of `messages` / 3) + max_tokens."""
    return math.ceil(len(json.dumps(MESSAGES, separators=(",", ":")).encode()) / 3) + MAX_TOKENS


class Redis:
    def __init__(self, workdir: Path):
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is needed: apt-get install redis-server (scripts/test.sh does)"
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, cwd=self.workdir,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with __import__("socket").create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not listen")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture(scope="module")
def replicas(tmp_path_factory, mock_upstream, keys):
    base = tmp_path_factory.mktemp("replicas")
    redis = Redis(base)
    redis.start()
    consumer_key = "sk-replica-" + secrets.token_hex(12)
    ports = [free_port(), free_port()]
    procs = []
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEIR_")}
    env["MOCK_UPSTREAM_KEY"] = keys.upstream
    for i, port in enumerate(ports):
        admin = free_port()
        config = base / f"weir-{i}.yaml"
        config.write_text(
            f"""
listen: 127.0.0.1:{port}
admin-listen: 127.0.0.1:{admin}
kv: {{ backend: redis, url: "redis://127.0.0.1:{redis.port}/0", prefix: "weir:replicas-test:", timeout-ms: 300 }}
providers:
  - name: mock
    base-url: {mock_upstream.url}/v1
    api-key-env: MOCK_UPSTREAM_KEY
proxies:
  - name: limited
    context-path: /
    provider: mock
    policies:
      - policy: auth
        config: {{ consumers: [{{ id: shared, key-sha256: {sha256_hex(consumer_key)} }}] }}
      - policy: token-limit
        config: {{ tokens-per-day: {LIMIT} }}
  - name: open
    context-path: /open
    provider: mock
    policies:
      - policy: token-limit
        config: {{ requests-per-minute: 100000, on-store-error: allow }}
"""
        )
        log_path = base / f"weir-{i}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [str(_binary("WEIR_BIN", "target/debug/weir")), "--config", str(config), "--data-dir", str(base / f"data-{i}")],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            )
        procs.append(proc)
        _wait_ready(proc, port, log_path)
        procs[-1].admin = admin
        procs[-1].log_path = log_path
    try:
        yield {"ports": ports, "procs": procs, "key": consumer_key, "redis": redis}
    finally:
        for p in procs:
            stop_process(p)
        redis.stop()


def chat(port: int, key: str, path: str = ""):
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}{path}/v1", api_key=key, max_retries=0, timeout=30)
    try:
        r = client.chat.completions.create(model="mock-gpt", messages=MESSAGES, max_tokens=MAX_TOKENS)
        return 200, r.usage.total_tokens
    except openai.APIStatusError as e:
        return e.status_code, e.body


def test_limits_are_exact_across_replicas(replicas):
    ports, key = replicas["ports"], replicas["key"]
    with ThreadPoolExecutor(max_workers=64) as pool:
        outcomes = list(pool.map(lambda i: chat(ports[i % 2], key), range(64)))
    unexpected = [o for o in outcomes if o[0] not in (200, 429)]
    assert not unexpected, unexpected
    admitted = [tokens for status, tokens in outcomes if status == 200]
    refused = [body for status, body in outcomes if status == 429]
    assert admitted and refused, f"{len(admitted)} admitted, {len(refused)} refused"
    assert sum(admitted) <= LIMIT + reservation(), (
        f"{len(admitted)} requests on two replicas used {sum(admitted)} tokens: more than the limit "
        f"{LIMIT} plus one reservation ({reservation()})"
    )
    assert all(b["code"] == "rate_limit_exceeded" for b in refused), refused[:1]
    # Both replicas refuse now: they see the same counters.
    for port in ports:
        assert chat(port, key)[0] == 429


def test_a_redis_outage_is_what_each_policy_chose_and_recovers(replicas):
    ports, redis = replicas["ports"], replicas["redis"]
    port = ports[0]
    assert chat(port, "unused", "/open")[0] == 200
    redis.stop()
    try:
        # Fail closed (default): 503 naming the store; fail open: through, uncounted.
        status, body = chat(ports[1], replicas["key"])
        assert status == 503 and body["code"] == "limit_store_unavailable", (status, body)
        assert chat(port, "unused", "/open")[0] == 200
        ready = httpx.get(f"http://127.0.0.1:{replicas['procs'][0].admin}/ready", timeout=10)
        assert ready.status_code == 503 and "key-value store" in ready.text, ready.text
        metrics = httpx.get(f"http://127.0.0.1:{replicas['procs'][0].admin}/metrics", timeout=10).text
        assert 'weir_kv_operations_total{backend="redis"' in metrics and 'outcome="unavailable"' in metrics
    finally:
        redis.start()  # same port, empty (no persistence in this test)
    deadline = time.monotonic() + 15
    while True:
        status, _ = chat(port, "unused", "/open")
        ready = httpx.get(f"http://127.0.0.1:{replicas['procs'][0].admin}/ready", timeout=10)
        if status == 200 and ready.status_code == 200:
            break
        assert time.monotonic() < deadline, f"no recovery: {status}, /ready {ready.status_code} {ready.text}"
        time.sleep(0.2)
