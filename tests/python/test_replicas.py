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

import socket

from conftest import cache_args, _binary, _wait_ready, complete_lines, free_port, sha256_hex, start_mock, stop_process

LIMIT = 200  # tokens per day: a window that does not roll over during the test
PRICE = 10.0  # USD per million tokens, input and output, of mock-gpt in this test
BUDGET = 0.002  # USD per day
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


class Replica:
    """One `weir` process with its own ports and data directory; it can be stopped and started again."""

    def __init__(self, base: Path, i: int, config: str, env: dict):
        self.port, self.admin, self.controller = free_port(), free_port(), free_port()
        self.config = base / f"weir-{i}.yaml"
        self.config.write_text(config.format(port=self.port, admin=self.admin, controller=self.controller))
        self.data = base / f"data-{i}"
        self.log_path = base / f"weir-{i}.log"
        self.env = env
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(_binary("WEIR_BIN", "target/debug/weir")), "--config", str(self.config), "--data-dir", str(self.data), *cache_args()],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env,
            )
        _wait_ready(self.proc, self.port, self.log_path)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def api(self, method: str, path: str, headers: dict | None = None, **kw) -> httpx.Response:
        return httpx.request(
            method, f"http://127.0.0.1:{self.controller}/api/v1{path}",
            headers={"authorization": f"Bearer {ADMIN_TOKEN}", **(headers or {})}, timeout=30, **kw,
        )


ADMIN_TOKEN = "weir-admin-" + secrets.token_hex(8)


@pytest.fixture(scope="module")
def replicas(tmp_path_factory, mock_upstream, keys):
    base = tmp_path_factory.mktemp("replicas")
    redis = Redis(base)
    redis.start()
    consumer_key = "sk-replica-" + secrets.token_hex(12)
    metered_key = "sk-metered-" + secrets.token_hex(12)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEIR_")}
    env["MOCK_UPSTREAM_KEY"] = keys.upstream
    env["WEIR_ADMIN_TOKEN"] = ADMIN_TOKEN
    config = f"""
listen: 127.0.0.1:{{port}}
prices: [{{{{ model: mock-gpt, input-per-million: {PRICE}, output-per-million: {PRICE} }}}}]
admin-listen: 127.0.0.1:{{admin}}
controller: {{{{ listen: "127.0.0.1:{{controller}}" }}}}
kv: {{{{ backend: redis, url: "redis://127.0.0.1:{redis.port}/0", prefix: "weir:replicas-test:", timeout-ms: 300 }}}}
# Debug builds of two replicas, Redis, the mock and 64 client threads share 2 cores here; these
# tests are about exact limits, not policy speed (the time limit has its own tests).
runtime: {{{{ policy-timeout-ms: 1000 }}}}
providers:
  - name: mock
    base-url: {mock_upstream.url}/v1
    api-key-env: MOCK_UPSTREAM_KEY
  # Nothing listens on the discard port: every attempt fails to connect.
  - {{{{ name: dead, base-url: "http://127.0.0.1:9/v1", api-key-env: MOCK_UPSTREAM_KEY }}}}
proxies:
  - name: limited
    context-path: /
    provider: mock
    policies:
      - policy: auth
        config: {{{{ consumers: [{{{{ id: shared, key-sha256: {sha256_hex(consumer_key)} }}}}] }}}}
      - policy: token-limit
        config: {{{{ tokens-per-day: {LIMIT} }}}}
  - name: budget
    context-path: /budget
    provider: mock
    policies:
      - policy: auth
        config: {{{{ consumers: [{{{{ id: shared, key-sha256: {sha256_hex(consumer_key)} }}}}] }}}}
      - policy: token-limit
        config:
          usd-per-day: {BUDGET}
          prices: [{{{{ model: mock-gpt, input-per-million: {PRICE}, output-per-million: {PRICE} }}}}]
  - name: metered
    context-path: /metered
    provider: mock
    policies:
      - policy: auth
        config: {{{{ consumers: [{{{{ id: metered, key-sha256: {sha256_hex(metered_key)} }}}}] }}}}
  - name: open
    context-path: /open
    provider: mock
    policies:
      - policy: token-limit
        config: {{{{ requests-per-minute: 100000, on-store-error: allow }}}}
  - name: routed
    context-path: /routed
    provider: mock
    policies:
      - policy: router
        config:
          circuit-breaker: {{{{ failures: 2, cool-down-ms: 120000 }}}}
          routes: [{{{{ name: main, strategy: failover, targets: [{{{{ provider: dead }}}}, {{{{ provider: mock }}}}] }}}}]
  - name: cached
    context-path: /cached
    provider: mock
    policies:
      - policy: auth
        config: {{{{ consumers: [{{{{ id: shared, key-sha256: {sha256_hex(consumer_key)} }}}}] }}}}
      - policy: cache
        config: {{{{ semantic: {{{{ provider: mock, model: mock-words, threshold: 0.8 }}}} }}}}
"""
    nodes = [Replica(base, i, config, env) for i in range(2)]
    try:
        for node in nodes:
            node.start()
        yield {"ports": [n.port for n in nodes], "nodes": nodes, "key": consumer_key, "metered_key": metered_key, "redis": redis, "upstream_key": keys.upstream}
    finally:
        for node in nodes:
            node.stop()
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


def test_budgets_hold_across_replicas_and_the_sdk_can_parse_the_refusal(replicas):
    ports, key = replicas["ports"], replicas["key"]
    with ThreadPoolExecutor(max_workers=64) as pool:
        outcomes = list(pool.map(lambda i: chat(ports[i % 2], key, "/budget"), range(64)))
    unexpected = [o for o in outcomes if o[0] not in (200, 429)]
    assert not unexpected, unexpected
    spent_usd = sum(tokens for status, tokens in outcomes if status == 200) * PRICE / 1e6
    reservation_usd = reservation() * PRICE / 1e6
    refused = [body for status, body in outcomes if status == 429]
    assert refused, "64 requests at ~0.00014 USD each never reached a 0.002 USD budget"
    assert spent_usd <= BUDGET + reservation_usd, (
        f"two replicas spent {spent_usd:.6f} USD of a {BUDGET} USD budget (one reservation: {reservation_usd:.6f})"
    )
    body = refused[0]
    assert body["code"] == "budget_exceeded", body
    assert "`usd-per-day`" in body["message"] and "resets in" in body["message"], body
    # The headers say what is left, as the OpenAI SDK exposes them.
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{ports[0]}/budget/v1", api_key=key, max_retries=0)
    with pytest.raises(openai.RateLimitError) as refusal:
        client.chat.completions.create(model="mock-gpt", messages=MESSAGES, max_tokens=MAX_TOKENS)
    headers = refusal.value.response.headers
    assert float(headers["x-ratelimit-limit-usd"]) == BUDGET
    assert 0 <= float(headers["x-ratelimit-remaining-usd"]) < reservation_usd
    assert int(headers["retry-after"]) > 0


def usage(node: "Replica") -> dict:
    r = httpx.get(f"http://127.0.0.1:{node.admin}/usage", timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def test_usage_is_the_whole_gateways_on_every_replica(replicas):
    """Each replica adds its totals to Redis every 100 ms: within a second both answer the same."""
    ports, key = replicas["ports"], replicas["metered_key"]
    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(lambda i: chat(ports[i % 2], key, "/metered"), range(16)))
    assert all(status == 200 for status, _ in outcomes), outcomes
    tokens = sum(t for _, t in outcomes)
    deadline = time.monotonic() + 1.0
    while True:
        answers = [usage(node) for node in replicas["nodes"]]
        mine = [[c for c in a["consumers"] if c["consumer"] == "metered"] for a in answers]
        if all(m and m[0]["requests"] == len(outcomes) for m in mine):
            break
        assert time.monotonic() < deadline, (mine, len(outcomes))
        time.sleep(0.02)
    for answer, totals in zip(answers, mine):
        assert answer["scope"] == "gateway", answer
        assert totals[0]["total_tokens"] == tokens, (totals, tokens)
        assert abs(totals[0]["cost_usd"] - tokens * PRICE / 1e6) < 1e-9, totals
    assert mine[0] == mine[1]


def served(port: int, path: str) -> int:
    """The status of a chat completion through `path` (404: no such proxy on this replica)."""
    r = httpx.post(
        f"http://127.0.0.1:{port}{path}/v1/chat/completions",
        json={"model": "mock-gpt", "messages": MESSAGES, "max_tokens": MAX_TOKENS}, timeout=30,
    )
    return r.status_code


def seen_within(port: int, path: str, seconds: float) -> float:
    """Polls until replica `port` serves `path`; returns how long that took (fails after `seconds`)."""
    started = time.monotonic()
    while True:
        status = served(port, path)
        elapsed = time.monotonic() - started
        if status == 200:
            return elapsed
        assert status == 404, f"{path}: {status}"
        assert elapsed < seconds, f"replica on port {port} does not serve {path} after {seconds} s"
        time.sleep(0.02)


def new_proxy(node: Replica, name: str) -> httpx.Response:
    return node.api("POST", "/llm-proxies", json={"name": name, "context-path": f"/{name}", "provider": "mock"})


def test_a_change_through_one_replica_reaches_the_other(replicas):
    a, b = replicas["nodes"]
    assert served(b.port, "/fresh") == 404
    made = new_proxy(a, "fresh")
    assert made.status_code == 201, made.text
    took = seen_within(b.port, "/fresh", 5)
    assert took <= 1.0, f"the change took {took:.2f} s to reach the other replica (promised: 1 s)"
    # The other controller shows the same resource, with the same revision.
    there = b.api("GET", "/llm-proxies/fresh")
    assert there.status_code == 200, there.text
    assert there.headers["etag"] == made.headers["etag"]
    # And the other way round.
    assert b.api("DELETE", "/llm-proxies/fresh", headers={"if-match": there.headers["etag"]}).status_code == 204
    deadline = time.monotonic() + 1.0
    while served(a.port, "/fresh") != 404:
        assert time.monotonic() < deadline, "the deletion did not reach the first replica within 1 s"
        time.sleep(0.02)


def test_the_shared_configuration_survives_restarts(replicas):
    a, b = replicas["nodes"]
    assert new_proxy(a, "kept").status_code == 201
    seen_within(b.port, "/kept", 5)
    b.stop()
    # Made while b is down: b finds it when it starts.
    assert new_proxy(a, "while-down").status_code == 201
    b.start()
    assert served(b.port, "/kept") == 200
    assert served(b.port, "/while-down") == 200
    assert replicas["upstream_key"] not in b.api("GET", "/config").text


def tried(node: Replica, request_id: str) -> list[str]:
    """The providers a request's attempts went to, from the replica's usage record."""
    path = node.data / "usage.jsonl"
    deadline = time.monotonic() + 10
    while True:
        for line in complete_lines(path):
            record = json.loads(line)
            if record.get("request_id") == request_id:
                return [a["provider"] for a in record["attempts"]]
        assert time.monotonic() < deadline, f"no usage record for {request_id}"
        time.sleep(0.02)


def test_a_circuit_opened_through_one_replica_is_open_on_the_other(replicas):
    """The router's breaker lives in Redis: two failures through replica a open `dead`'s circuit,
    and replica b no longer tries it; both admin APIs show it open, and both stay ready (the
    proxy still has a healthy target)."""
    a, b = replicas["nodes"]

    def ask(node: Replica) -> list[str]:
        r = httpx.post(
            f"http://127.0.0.1:{node.port}/routed/v1/chat/completions",
            json={"model": "mock-gpt", "messages": MESSAGES, "max_tokens": MAX_TOKENS}, timeout=30,
        )
        assert r.status_code == 200, r.text
        return tried(node, r.headers["x-request-id"])

    # (Waiting for each usage record orders the requests: the breaker counts in on-complete.)
    assert ask(a) == ["dead", "mock"]
    assert ask(a) == ["dead", "mock"]
    assert ask(b) == ["mock"]
    assert ask(a) == ["mock"]
    for node in (a, b):
        body = httpx.get(f"http://127.0.0.1:{node.admin}/circuits", timeout=10).json()
        (router,) = [r for r in body["routers"] if r["proxy"] == "routed"]
        states = {t["target"]: t["state"] for t in router["targets"]}
        assert states == {"dead/*": "open", "mock/*": "closed"}, body
        assert httpx.get(f"http://127.0.0.1:{node.admin}/ready", timeout=10).status_code == 200


def test_the_cache_is_shared_exact_and_semantic_entries_and_purges(replicas, mock_upstream):
    """An answer stored through one replica is a hit on the other: the exact entry in the shared
    key-value store, the semantic one through the vector index's change stream in Redis (each
    replica's in-memory index follows it). A purge through one replica's admin API is seen by
    both."""
    ports, key = replicas["ports"], replicas["key"]
    nonce = secrets.token_hex(4)
    question = f"How do I rotate the API keys of project {nonce}?"

    def ask(port: int, content: str) -> str:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/cached/v1", api_key=key, max_retries=0, timeout=30)
        r = client.chat.completions.with_raw_response.create(model="mock-gpt", max_tokens=5, messages=[{"role": "user", "content": content}])
        return r.headers["x-weir-cache"] + ("/" + r.headers["x-weir-cache-layer"] if r.headers["x-weir-cache"] == "hit" else "")

    assert ask(ports[0], question) == "miss"
    assert ask(ports[1], question) == "hit/exact"
    assert ask(ports[1], f"how can i rotate the api keys of project {nonce}") == "hit/semantic"
    recorded = httpx.get(f"{mock_upstream.url}/mock/requests", timeout=5).json()["requests"]
    assert sum(1 for r in recorded if "chat/completions" in r["path"] and nonce in json.dumps(r["body"])) == 1
    admin = replicas["nodes"][1].admin
    assert httpx.post(f"http://127.0.0.1:{admin}/cache/purge?proxy=cached", timeout=10).status_code == 200
    assert ask(ports[0], question) == "miss"


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
        ready = httpx.get(f"http://127.0.0.1:{replicas['nodes'][0].admin}/ready", timeout=10)
        assert ready.status_code == 503 and "key-value store" in ready.text, ready.text
        metrics = httpx.get(f"http://127.0.0.1:{replicas['nodes'][0].admin}/metrics", timeout=10).text
        assert 'weir_kv_operations_total{backend="redis"' in metrics and 'outcome="unavailable"' in metrics
        # The configuration stays the last good one; changes are refused rather than diverge.
        assert served(ports[1], "/kept") == 200
        refused = new_proxy(replicas["nodes"][0], "during-outage")
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "config_store_unavailable", refused.text
    finally:
        redis.start()  # same port, empty (no persistence in this test)
    deadline = time.monotonic() + 15
    while True:
        status, _ = chat(port, "unused", "/open")
        ready = httpx.get(f"http://127.0.0.1:{replicas['nodes'][0].admin}/ready", timeout=10)
        if status == 200 and ready.status_code == 200:
            break
        assert time.monotonic() < deadline, f"no recovery: {status}, /ready {ready.status_code} {ready.text}"
        time.sleep(0.2)
    # Redis came back empty: a replica writes its configuration back, and changes flow again.
    a, b = replicas["nodes"]
    deadline = time.monotonic() + 15
    while (made := new_proxy(b, "after-outage")).status_code != 201:
        assert made.status_code in (409, 503), made.text
        assert time.monotonic() < deadline, made.text
        time.sleep(0.2)
    assert seen_within(a.port, "/after-outage", 5) <= 1.0
    assert served(a.port, "/kept") == 200


def test_sigterm_lets_a_stream_finish_then_exits(replicas, keys, tmp_path):
    """SIGTERM during a stream: the replica stops accepting and says it is not ready, the stream
    ends normally, the process exits 0 and its usage is written and counted for the gateway."""
    a, b = replicas["nodes"]
    slow = start_mock(tmp_path, keys, "--chunk-delay-ms", "100")
    try:
        made = a.api("POST", "/llm-providers", json={
            "name": "slow", "template": "openai", "base-url": f"{slow.url}/v1", "api-key": keys.upstream,
        })
        assert made.status_code == 201, made.text
        assert a.api("POST", "/llm-proxies", json={"name": "slow", "context-path": "/slow", "provider": "slow"}).status_code == 201
        seen_within(b.port, "/slow", 5)
        # Read through b: it sends its own unsent totals first, so this is everything so far.
        before = next((c for c in usage(b)["consumers"] if c["consumer"] == "-"), {"total_tokens": 0})

        client = openai.OpenAI(base_url=f"http://127.0.0.1:{b.port}/slow/v1", api_key="unused", max_retries=0, timeout=60)
        stream = client.chat.completions.create(
            model="mock-gpt", messages=MESSAGES, max_tokens=20, stream=True, stream_options={"include_usage": True},
        )
        chunks = iter(stream)
        first = next(chunks)
        assert first.choices, first
        b.proc.send_signal(__import__("signal").SIGTERM)
        # Draining: not ready, and no new connection is accepted (checked while the stream runs).
        deadline = time.monotonic() + 5
        while True:
            ready = httpx.get(f"http://127.0.0.1:{b.admin}/ready", timeout=5)
            if ready.status_code == 503:
                assert "draining" in ready.text, ready.text
                break
            assert time.monotonic() < deadline, f"/ready still {ready.status_code} after SIGTERM"
            time.sleep(0.02)
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", b.port), timeout=2).close()
        rest = list(chunks)
        assert b.proc.poll() is None or rest, "the process ended before the stream did"
        text = "".join(c.choices[0].delta.content or "" for c in [first, *rest] if c.choices)
        assert len(text.split()) == 20, text
        assert rest[-1].usage is not None and rest[-1].usage.completion_tokens == 20
        assert b.proc.wait(timeout=35) == 0
        b.proc = None
        records = [json.loads(line) for line in (b.data / "usage.jsonl").read_text().splitlines()]
        streamed = [r for r in records if r["proxy"] == "slow" and r["stream"]]
        assert streamed and streamed[-1]["completion_tokens"] == 20, records[-3:]
        after = next(c for c in usage(a)["consumers"] if c["consumer"] == "-")
        assert after["total_tokens"] - before["total_tokens"] == streamed[-1]["total_tokens"], (before, after)
    finally:
        stop_process(slow.proc)
        if b.proc is None:
            b.start()
