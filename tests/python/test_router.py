"""The `router` component in a real `weir`: failover between providers (one of them
Anthropic-native), no failover once the answer has started, weights over 1,000 requests, and a
circuit breaker that opens, stays open, half-opens and closes against a provider that is down
and then comes up (a second mock process started on its port).

The mock provider injects the faults: a target's model `mock-fault:status-503` answers 503,
`mock-fault:reset` drops the connection, `mock-fault:cut-after-2` cuts a stream after two chunks;
`first-N` limits a spec's faults to its first N requests, so a retry sees the provider recover.
The proxies `retry`, `patient`, `hasty`, `budget` and `accepted` have one provider and the
proxy's `retry` settings (weir-core's attempt loop, no router).
"""

from __future__ import annotations

import json
import secrets
import time

import httpx
import openai
import pytest

from conftest import free_port, sha256_hex, start_mock, start_weir, stop_process, usage_of

COOL_DOWN_MS = 1500


@pytest.fixture(scope="module")
def gw(tmp_path_factory, mock_upstream, keys):
    base = tmp_path_factory.mktemp("router")
    port, admin, flaky, dead = free_port(), free_port(), free_port(), free_port()
    key = "sk-router-" + secrets.token_hex(12)
    auth = f"{{ policy: auth, config: {{ consumers: [{{ id: tester, key-sha256: {sha256_hex(key)} }}] }} }}"
    off = "circuit-breaker: { enabled: false }"

    def proxy(name: str, router: str) -> str:
        return f"  - {{ name: {name}, context-path: /{name}, provider: mock, policies: [{auth}, {{ policy: router, config: {router} }}] }}\n"

    proxies = "".join(
        [
            proxy("failover", f"{{ {off}, routes: [{{ strategy: failover, targets: [{{ provider: mock, model: 'mock-fault:status-503' }}, {{ provider: anthropic, model: mock-gpt }}] }}] }}"),
            proxy("reset", f"{{ {off}, routes: [{{ strategy: failover, targets: [{{ provider: mock, model: 'mock-fault:reset' }}, {{ provider: mock, model: mock-gpt }}] }}] }}"),
            proxy("cut", f"{{ {off}, routes: [{{ strategy: failover, targets: [{{ provider: mock, model: 'mock-fault:cut-after-2' }}, {{ provider: mock, model: mock-gpt }}] }}] }}"),
            proxy("weighted", f"{{ {off}, routes: [{{ targets: [{{ provider: mock, model: mock-a, weight: 3 }}, {{ provider: mock, model: mock-b, weight: 1 }}] }}] }}"),
            proxy("breaker", f"{{ circuit-breaker: {{ failures: 3, cool-down-ms: {COOL_DOWN_MS} }}, routes: [{{ name: main, strategy: failover, targets: [{{ provider: flaky, model: mock-gpt }}, {{ provider: mock, model: mock-gpt }}] }}] }}"),
            proxy("dead", "{ circuit-breaker: { failures: 1, cool-down-ms: 60000 }, routes: [{ targets: [{ provider: dead }] }] }"),
            proxy(
                "content",
                f"{{ {off}, routes: [{{ name: fast, models: [fast], targets: [{{ provider: anthropic, model: mock-fast }}] }},"
                " { name: long, when: { min-prompt-tokens: 1000 }, targets: [{ provider: mock, model: mock-long }] },"
                " { name: gold, when: { header: { name: x-tier, values: [gold] } }, targets: [{ provider: mock, model: mock-gold }] }] }",
            ),
        ]
        + [
            f"  - {{ name: {name}, context-path: /{name}, provider: mock, retry: {retry}, policies: [{auth}] }}\n"
            for name, retry in [
                ("retry", "{ attempts: 2, backoff-ms: 20 }"),
                ("patient", "{ attempts: 1, backoff-ms: 20, max-backoff-ms: 3000 }"),
                ("hasty", "{ attempts: 1, backoff-ms: 20, max-backoff-ms: 500 }"),
                ("budget", "{ attempts: 10, backoff-ms: 200, budget-ms: 700 }"),
                ("accepted", "{ attempts: 1, backoff-ms: 20, after-accepted: [embeddings] }"),
            ]
        ]
    )
    config = base / "weir.yaml"
    config.write_text(
        f"""
listen: 127.0.0.1:{port}
admin-listen: 127.0.0.1:{admin}
providers:
  - {{ name: mock, base-url: "{mock_upstream.url}/v1", api-key-env: MOCK_UPSTREAM_KEY }}
  - {{ name: anthropic, kind: anthropic, base-url: "{mock_upstream.url}/v1", api-key-env: MOCK_UPSTREAM_KEY }}
  - {{ name: flaky, base-url: "http://127.0.0.1:{flaky}/v1", api-key-env: MOCK_UPSTREAM_KEY, timeout-ms: 5000 }}
  - {{ name: dead, base-url: "http://127.0.0.1:{dead}/v1", api-key-env: MOCK_UPSTREAM_KEY }}
proxies:
{proxies}"""
    )
    proc, log_path = start_weir(config, base, port, keys.upstream)
    try:
        yield {"port": port, "admin": admin, "key": key, "flaky": flaky, "data": base / "data", "log": log_path,
               "base": base, "keys": keys, "mock": mock_upstream}
    finally:
        stop_process(proc)


def oai(gw, path: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://127.0.0.1:{gw['port']}/{path}/v1", api_key=gw["key"], max_retries=0, timeout=30)


def attempts(record: dict) -> list[tuple[str, str | None, int | None, bool]]:
    return [(a["provider"], a.get("model"), a.get("status"), a["billed"]) for a in record["attempts"]]


def circuit(gw, proxy: str, target: str) -> dict:
    """One target's circuit as the admin API shows it."""
    body = httpx.get(f"http://127.0.0.1:{gw['admin']}/circuits", timeout=10).json()
    (router,) = [r for r in body["routers"] if r["proxy"] == proxy]
    (found,) = [t for t in router["targets"] if t["target"] == target]
    return found


def ask(gw, path: str, **kw):
    kw.setdefault("messages", [{"role": "user", "content": "hello"}])
    kw.setdefault("max_tokens", 5)
    kw.setdefault("model", "mock-gpt")
    return oai(gw, path).chat.completions.with_raw_response.create(**kw)


def test_a_503_fails_over_to_an_anthropic_target_and_the_sdk_sees_one_clean_answer(gw):
    r = ask(gw, "failover")
    answer = r.parse()
    assert answer.choices[0].message.content and answer.model == "mock-gpt", answer
    record = usage_of(gw, r.headers["x-request-id"])
    assert attempts(record) == [
        ("mock", "mock-fault:status-503", 503, False),
        ("anthropic", "mock-gpt", 200, True),
    ], record
    assert record["provider"] == "anthropic" and record["status"] == 200
    metrics = httpx.get(f"http://127.0.0.1:{gw['admin']}/metrics", timeout=10).text
    assert any(
        line.startswith("weir_policy_router_failovers_total")
        and 'from="mock/mock-fault:status-503"' in line and 'to="anthropic/mock-gpt"' in line
        for line in metrics.splitlines()
    ), metrics


def test_a_reset_before_the_answer_fails_over_streamed_too(gw):
    r = ask(gw, "reset", stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in r.parse() if c.choices)
    assert text.startswith("mock0"), text
    record = usage_of(gw, r.headers["x-request-id"])
    assert [(p, s, b) for p, _, s, b in attempts(record)] == [("mock", None, False), ("mock", 200, True)], record


def test_no_failover_once_the_answer_has_started(gw):
    r = ask(gw, "cut", stream=True, max_tokens=20)
    got = []
    with pytest.raises(openai.APIError):
        for chunk in r.parse():
            if chunk.choices and chunk.choices[0].delta.content:
                got.append(chunk.choices[0].delta.content)
    assert got == ["mock0", " mock1"], got
    record = usage_of(gw, r.headers["x-request-id"])
    assert len(record["attempts"]) == 1 and record["attempts"][0]["model"] == "mock-fault:cut-after-2", record


def test_weights_hold_over_1000_requests(gw):
    counts = {"mock-a": 0, "mock-b": 0}
    body = {"model": "anything", "max_tokens": 1, "messages": [{"role": "user", "content": "w"}]}
    with httpx.Client(base_url=f"http://127.0.0.1:{gw['port']}/weighted/v1", headers={"authorization": f"Bearer {gw['key']}"}, timeout=30) as c:
        for _ in range(1000):
            r = c.post("/chat/completions", json=body)
            assert r.status_code == 200, r.text
            counts[r.json()["model"]] += 1
    share = counts["mock-a"] / 1000
    # Weight 3 of 4: 0.75, binomial standard deviation 0.014 over 1,000 draws; ±0.05 is 3.6 sd.
    assert abs(share - 0.75) <= 0.05, counts


def test_a_breaker_opens_stays_open_half_opens_and_closes(gw):
    # `flaky` is down: each request tries it first, fails to connect, and fails over. (Each
    # request's usage record is written after its on-complete, where the breaker counts: waiting
    # for the record orders the requests.)
    for i in range(3):
        if i == 2:
            before_opening = time.monotonic()
        r = ask(gw, "breaker")
        assert [p for p, *_ in attempts(usage_of(gw, r.headers["x-request-id"]))] == ["flaky", "mock"]
    # Three failures in a row: left out, the request goes straight to the next target.
    r = ask(gw, "breaker")
    assert [p for p, *_ in attempts(usage_of(gw, r.headers["x-request-id"]))] == ["mock"]
    opened = time.monotonic()
    assert circuit(gw, "breaker", "flaky/mock-gpt")["state"] == "open"
    assert circuit(gw, "breaker", "mock/mock-gpt")["state"] == "closed"
    metrics = httpx.get(f"http://127.0.0.1:{gw['admin']}/metrics", timeout=10).text
    assert any(
        line.startswith("weir_policy_router_ejections_total") and 'target="flaky/mock-gpt"' in line and line.endswith(" 1")
        for line in metrics.splitlines()
    ), metrics
    # `flaky` comes up; while the cool-down runs it stays left out.
    flaky = start_mock(gw["base"], gw["keys"], port=gw["flaky"])
    try:
        r = ask(gw, "breaker")
        if time.monotonic() - opened < COOL_DOWN_MS / 1000 * 0.8:
            assert [p for p, *_ in attempts(usage_of(gw, r.headers["x-request-id"]))] == ["mock"]
        # After the cool-down one request probes `flaky`, which now answers: closed again.
        deadline = time.monotonic() + 15
        while True:
            r = ask(gw, "breaker")
            tried = [p for p, *_ in attempts(usage_of(gw, r.headers["x-request-id"]))]
            if tried == ["flaky"]:
                break
            assert tried == ["mock"], tried
            assert time.monotonic() < deadline, "the breaker never half-opened"
            time.sleep(0.1)  # waiting out the cool-down (a duration under test, not a race)
        assert time.monotonic() - before_opening >= COOL_DOWN_MS / 1000
        for _ in range(3):
            r = ask(gw, "breaker")
            assert [p for p, *_ in attempts(usage_of(gw, r.headers["x-request-id"]))] == ["flaky"]
        assert flaky.stats()["requests"] >= 4
        assert circuit(gw, "breaker", "flaky/mock-gpt") == {"target": "flaky/mock-gpt", "routes": ["main"], "state": "closed", "failures": 0}
    finally:
        stop_process(flaky.proc)


def test_every_target_left_out_is_a_503_with_retry_after(gw):
    assert httpx.get(f"http://127.0.0.1:{gw['admin']}/ready", timeout=10).status_code == 200
    with pytest.raises(openai.APIStatusError) as e:
        ask(gw, "dead")
    assert e.value.status_code == 502, e.value
    usage_of(gw, e.value.response.headers["x-request-id"])  # its on-complete has run
    with pytest.raises(openai.InternalServerError) as e:
        ask(gw, "dead")
    assert e.value.status_code == 503 and e.value.code == "no_healthy_target", e.value
    assert 1 <= int(e.value.response.headers["retry-after"]) <= 60
    # The admin API shows the open circuit, and with every target of a proxy out the replica is
    # not ready (the other proxies' targets are fine).
    dead = circuit(gw, "dead", "dead/*")
    assert dead["state"] == "open" and dead["routes"] == ["route-0"], dead
    assert dead["open_until_ms"] > time.time() * 1000 + 50_000, dead
    ready = httpx.get(f"http://127.0.0.1:{gw['admin']}/ready", timeout=10)
    assert ready.status_code == 503, ready.text
    assert "dead" in ready.json()["checks"]["targets"] and "breaker" not in ready.json()["checks"]["targets"], ready.text


def test_routes_by_model_alias_prompt_length_and_header(gw):
    r = ask(gw, "content", model="fast")
    assert r.parse().model == "mock-fast"
    assert usage_of(gw, r.headers["x-request-id"])["provider"] == "anthropic"
    r = ask(gw, "content", messages=[{"role": "user", "content": "long " * 1000}])
    assert r.parse().model == "mock-long"
    r = ask(gw, "content", extra_headers={"x-tier": "gold"})
    assert r.parse().model == "mock-gold"
    # No route applies: the proxy's own provider, with the client's model.
    r = ask(gw, "content", extra_headers={"x-tier": "silver"})
    assert r.parse().model == "mock-gpt"
    metrics = httpx.get(f"http://127.0.0.1:{gw['admin']}/metrics", timeout=10).text
    assert any(
        line.startswith("weir_policy_router_decisions_total") and 'route="fast"' in line and 'target="anthropic/mock-fast"' in line
        for line in metrics.splitlines()
    ), metrics


def test_embeddings_are_not_routed_unless_configured(gw):
    """The `failover` proxy's route (any model) sends chat to a 503 target first; an embeddings
    request is not a chat request and goes to the proxy's own provider with the client's model."""
    r = oai(gw, "failover").embeddings.with_raw_response.create(model="mock-embed", input="hello")
    assert len(r.parse().data[0].embedding) > 0
    record = usage_of(gw, r.headers["x-request-id"])
    assert attempts(record) == [("mock", "mock-embed", 200, True)], record


def fault(spec: str) -> str:
    """A fault spec of its own (`first-N` counts per spec)."""
    return f"mock-fault:{spec},key-{secrets.token_hex(4)}"


def test_a_target_is_retried_with_backoff_until_it_answers(gw):
    model = fault("first-2,status-500")
    r = ask(gw, "retry", model=model)
    assert r.parse().choices[0].message.content
    record = usage_of(gw, r.headers["x-request-id"])
    assert attempts(record) == [("mock", model, 500, False), ("mock", model, 500, False), ("mock", model, 200, True)], record
    # Three failures are more than two retries: the client gets the provider's last answer.
    model = fault("first-3,status-500")
    with pytest.raises(openai.InternalServerError):
        ask(gw, "retry", model=model)


def test_retry_after_is_honoured_up_to_max_backoff(gw):
    """The mock's 429 carries `retry-after: 1`: `patient` (max-backoff-ms 3000) waits the second
    and gets the answer; `hasty` (500) does not wait, and with no other target the 429 is the
    client's answer, its retry-after kept."""
    model = fault("first-1,status-429")
    started = time.monotonic()
    r = ask(gw, "patient", model=model)
    assert r.parse().choices[0].message.content
    assert time.monotonic() - started >= 1.0
    assert [s for _, _, s, _ in attempts(usage_of(gw, r.headers["x-request-id"]))] == [429, 200]
    model = fault("first-1,status-429")
    with pytest.raises(openai.RateLimitError) as e:
        ask(gw, "hasty", model=model)
    assert e.value.response.headers.get("retry-after") == "1"
    record = usage_of(gw, e.value.response.headers["x-request-id"])
    assert attempts(record) == [("mock", model, 429, False)], record


def test_the_time_budget_ends_the_retries(gw):
    """Ten retries with 200 ms backoff would take seconds; the 700 ms budget stops them, and no
    attempt starts after it."""
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as e:
        ask(gw, "budget", model="mock-fault:status-500")
    took = time.monotonic() - started
    record = usage_of(gw, e.value.response.headers["x-request-id"])
    assert 2 <= len(record["attempts"]) < 6, record
    assert took < 5, took


def test_an_answer_cut_after_the_upstream_accepted_it_is_retried_only_where_opted_in(gw):
    """A non-streamed embeddings answer that breaks off may have been billed: `retry` does not
    try again (one attempt, billed, a 502 to the client); `accepted` opted in for embeddings and
    gets the answer at the second attempt, both attempts recorded as billed."""
    model = fault("first-1,cut-after-1")
    with pytest.raises(openai.APIStatusError) as e:
        oai(gw, "retry").embeddings.create(model=model, input="hello")
    assert e.value.status_code == 502, e.value
    record = usage_of(gw, e.value.response.headers["x-request-id"])
    assert [(s, b) for _, _, s, b in attempts(record)] == [(200, True)], record
    model = fault("first-1,cut-after-1")
    r = oai(gw, "accepted").embeddings.with_raw_response.create(model=model, input="hello")
    assert len(r.parse().data[0].embedding) > 0
    record = usage_of(gw, r.headers["x-request-id"])
    assert [(s, b) for _, _, s, b in attempts(record)] == [(200, True), (200, True)], record
    assert record["attempts"][0]["error"] == "upstream_response_failed", record
    # The same cut on a chat answer is not retried there: only embeddings opted in.
    model = fault("first-1,cut-after-1")
    with pytest.raises(openai.APIStatusError) as e:
        ask(gw, "accepted", model=model)
    assert e.value.status_code == 502, e.value
