"""End-to-end: the official `openai` Python SDK against a real `weir` in front of the real mock
upstream (`weir-mock-upstream`). Fixtures are in conftest.py.

The mock is deterministic: a chat reply is "mock0 mock1 …" with one word per completion token
(`max_tokens`), and its prompt tokens are `sum(3 + ceil(chars / 4))` over the messages.
"""

from __future__ import annotations

import math
import resource
import time

import httpx
import openai
import pytest

from pathlib import Path

from conftest import LIMITED_TOKENS_PER_MINUTE, cache_args, free_port, sha256_hex, start_weir, stop_process

MESSAGES = [{"role": "user", "content": "Say hello to the gateway"}]


def expected_prompt_tokens(messages) -> int:
    return sum(3 + math.ceil(len(m["content"]) / 4) for m in messages)


def reply_text(words: int) -> str:
    return " ".join(f"mock{i}" for i in range(words))


@pytest.fixture
def client(weir, keys) -> openai.OpenAI:
    return openai.OpenAI(base_url=weir.v1(), api_key=keys.alice, max_retries=0, timeout=30)


# --------------------------------------------------------------------------------------------
# Chat completions


def test_chat_completion_non_streaming(client):
    resp = client.chat.completions.create(model="mock-gpt", messages=MESSAGES, max_tokens=4)
    assert resp.object == "chat.completion"
    assert resp.model == "mock-gpt"
    assert len(resp.choices) == 1
    choice = resp.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "mock0 mock1 mock2 mock3"
    assert len(choice.message.content.split()) == 4
    assert choice.finish_reason == "length"
    assert resp.usage is not None
    assert resp.usage.prompt_tokens == expected_prompt_tokens(MESSAGES)
    assert resp.usage.completion_tokens == 4
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens


def test_chat_completion_has_request_id_header(client):
    raw = client.chat.completions.with_raw_response.create(model="mock-gpt", messages=MESSAGES, max_tokens=2)
    assert raw.status_code == 200
    assert raw.headers.get("x-request-id", "").startswith("req_")
    assert raw.parse().choices[0].message.content == "mock0 mock1"


def _collect(stream) -> tuple[str, list]:
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks


def test_streaming_without_usage(client):
    stream = client.chat.completions.create(model="mock-gpt", messages=MESSAGES, max_tokens=5, stream=True)
    text, chunks = _collect(stream)
    assert text == reply_text(5)
    assert chunks, "no chunk received"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    # weir asks the upstream for usage itself, and must strip that usage-only chunk again.
    assert all(c.usage is None for c in chunks), [c.usage for c in chunks if c.usage is not None]
    assert all(c.choices for c in chunks), "a choice-less (usage-only) chunk leaked through"
    finish = [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason]
    assert finish == ["length"]


def test_streaming_with_usage(client):
    stream = client.chat.completions.create(
        model="mock-gpt",
        messages=MESSAGES,
        max_tokens=5,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, chunks = _collect(stream)
    assert text == reply_text(5)
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.prompt_tokens == expected_prompt_tokens(MESSAGES)
    assert last.usage.completion_tokens == 5
    assert last.usage.total_tokens == last.usage.prompt_tokens + 5
    assert all(c.usage is None for c in chunks[:-1])


def test_streaming_matches_non_streaming(client):
    plain = client.chat.completions.create(model="mock-gpt", messages=MESSAGES, max_tokens=7)
    streamed, _ = _collect(
        client.chat.completions.create(model="mock-gpt", messages=MESSAGES, max_tokens=7, stream=True)
    )
    assert streamed == plain.choices[0].message.content == reply_text(7)


# --------------------------------------------------------------------------------------------
# Usage records


def test_usage_records(client, weir):
    ids = []
    plain = client.chat.completions.with_raw_response.create(model="mock-gpt", messages=MESSAGES, max_tokens=3)
    ids.append(plain.headers["x-request-id"])
    streamed = client.chat.completions.with_raw_response.create(
        model="mock-gpt", messages=MESSAGES, max_tokens=6, stream=True
    )
    ids.append(streamed.headers["x-request-id"])
    text, _ = _collect(streamed.parse())
    assert text == reply_text(6)

    records = weir.wait_usage(ids)
    prompt = expected_prompt_tokens(MESSAGES)
    for request_id, completion, stream in [(ids[0], 3, False), (ids[1], 6, True)]:
        recs = records[request_id]
        assert len(recs) == 1, f"expected one usage record for {request_id}, got {recs}"
        r = recs[0]
        assert r["consumer"] == "alice"
        assert r["proxy"] == "main"
        assert r["provider"] == "mock"
        assert r["endpoint"] == "chat/completions"
        assert r["model"] == "mock-gpt"
        assert r["stream"] is stream
        assert r["status"] == 200
        assert r["outcome"] == "success"
        assert r["prompt_tokens"] == prompt
        assert r["completion_tokens"] == completion
        assert r["total_tokens"] == prompt + completion


def test_usage_one_line_per_request(client, weir):
    ids = [
        client.chat.completions.with_raw_response.create(model="mock-gpt", messages=MESSAGES, max_tokens=1).headers[
            "x-request-id"
        ]
        for _ in range(5)
    ]
    assert len(set(ids)) == 5
    records = weir.wait_usage(ids)
    time.sleep(0.2)  # a duplicate would come right after
    records = weir.wait_usage(ids)
    assert {i: len(r) for i, r in records.items()} == {i: 1 for i in ids}
    assert all(r[0]["consumer"] == "alice" and r[0]["completion_tokens"] == 1 for r in records.values())


# --------------------------------------------------------------------------------------------
# Authentication


def test_wrong_key_is_authentication_error(weir):
    bad = openai.OpenAI(base_url=weir.v1(), api_key="sk-not-a-valid-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as exc:
        bad.chat.completions.create(model="mock-gpt", messages=MESSAGES, max_tokens=1)
    e = exc.value
    assert e.status_code == 401
    body = e.response.json()
    assert body["error"]["code"] == "invalid_api_key"
    assert body["error"]["type"] == "authentication_error"
    assert e.code == "invalid_api_key"


def test_missing_key_is_401(weir):
    # The SDK refuses an empty api_key itself, so omit its Authorization header instead.
    sdk = openai.OpenAI(base_url=weir.v1(), api_key="unused", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as exc:
        sdk.chat.completions.create(
            model="mock-gpt", messages=MESSAGES, max_tokens=1, extra_headers={"Authorization": openai.Omit()}
        )
    assert exc.value.status_code == 401
    assert exc.value.code == "missing_api_key"
    # No Authorization header at all.
    r = httpx.post(
        f"{weir.v1()}/chat/completions",
        json={"model": "mock-gpt", "messages": MESSAGES, "max_tokens": 1},
        timeout=10,
    )
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "missing_api_key"


def test_second_consumer_is_recorded_as_bob(weir, keys):
    bob = openai.OpenAI(base_url=weir.v1(), api_key=keys.bob, max_retries=0)
    raw = bob.chat.completions.with_raw_response.create(model="mock-gpt", messages=MESSAGES, max_tokens=2)
    rid = raw.headers["x-request-id"]
    recs = weir.wait_usage([rid])[rid]
    assert len(recs) == 1 and recs[0]["consumer"] == "bob"


# --------------------------------------------------------------------------------------------
# Embeddings and models


def test_embeddings(client):
    resp = client.embeddings.create(model="mock-embedding", input=["a", "b"])
    assert len(resp.data) == 2
    assert [d.index for d in resp.data] == [0, 1]
    for d in resp.data:
        assert len(d.embedding) == 8
        assert math.isclose(math.sqrt(sum(x * x for x in d.embedding)), 1.0, rel_tol=1e-4)
    assert resp.data[0].embedding != resp.data[1].embedding
    assert resp.usage.prompt_tokens == 2


def test_embeddings_float_format(client):
    resp = client.embeddings.create(model="mock-embedding", input="hello", encoding_format="float", dimensions=4)
    assert len(resp.data) == 1
    assert len(resp.data[0].embedding) == 4


def test_models_list(client):
    ids = [m.id for m in client.models.list()]
    assert {"mock-gpt", "mock-gpt-mini", "mock-reasoner", "mock-embedding"} <= set(ids)


# --------------------------------------------------------------------------------------------
# Rate limit


def test_rate_limit(weir, keys):
    limited = openai.OpenAI(base_url=weir.v1("/limited"), api_key=keys.bob, max_retries=0)
    successes = 0
    with pytest.raises(openai.RateLimitError) as exc:
        for _ in range(LIMITED_TOKENS_PER_MINUTE + 1):  # each request needs at least one token
            limited.chat.completions.create(
                model="mock-gpt", messages=[{"role": "user", "content": "hi"}], max_tokens=4
            )
            successes += 1
    assert successes >= 1, "the very first request was already refused"
    e = exc.value
    assert e.status_code == 429
    headers = e.response.headers
    assert int(headers["retry-after"]) >= 1
    assert "x-ratelimit-remaining-tokens" in headers
    assert int(headers["x-ratelimit-remaining-tokens"]) >= 0
    assert headers["x-ratelimit-limit-tokens"] == str(LIMITED_TOKENS_PER_MINUTE)
    assert e.code == "rate_limit_exceeded"
    # The main proxy is not affected by the limited proxy's counters.
    main = openai.OpenAI(base_url=weir.v1(), api_key=keys.bob, max_retries=0)
    assert main.chat.completions.create(model="mock-gpt", messages=MESSAGES, max_tokens=1).choices


# --------------------------------------------------------------------------------------------
# Upstream failures


def test_upstream_500_is_internal_server_error(client):
    with pytest.raises(openai.InternalServerError) as exc:
        client.chat.completions.create(model="mock-fault:status-500", messages=MESSAGES, max_tokens=1)
    assert exc.value.status_code == 500


def test_upstream_reset_is_502(client):
    with pytest.raises(openai.APIStatusError) as exc:
        client.chat.completions.create(model="mock-fault:reset", messages=MESSAGES, max_tokens=1)
    assert exc.value.status_code == 502
    assert exc.value.response.json()["error"]["code"] == "upstream_unavailable"


def test_cut_stream_raises(client, weir):
    raw = client.chat.completions.with_raw_response.create(
        model="mock-fault:cut-after-2", messages=MESSAGES, max_tokens=8, stream=True
    )
    rid = raw.headers["x-request-id"]
    stream = raw.parse()
    received = []
    with pytest.raises(openai.APIError) as exc:
        for chunk in stream:
            if chunk.choices:
                received.append(chunk.choices[0].delta.content or "")
    assert "".join(received) == "mock0 mock1"
    assert exc.value.body is not None and exc.value.body.get("code") == "upstream_stream_cut"
    recs = weir.wait_usage([rid])[rid]
    assert len(recs) == 1
    assert recs[0]["status"] == 502 and recs[0]["outcome"] == "upstream_error"


# --------------------------------------------------------------------------------------------
# Credentials on the upstream side


def test_client_key_never_reaches_upstream(weir, keys, capture_upstream):
    c = openai.OpenAI(
        base_url=weir.v1("/capture"),
        api_key=keys.alice,
        max_retries=0,
        default_headers={"x-custom-trace": "trace-123"},
    )
    resp = c.chat.completions.create(
        model="capture-model",
        messages=MESSAGES,
        max_tokens=1,
        # Secrets in every header weir must own on the upstream side.
        extra_headers={"x-api-key": keys.alice, "api-key": keys.alice, "cookie": f"session={keys.alice}"},
    )
    assert resp.choices[0].message.content == "captured"
    got = capture_upstream.last()
    assert got.path == "/v1/chat/completions"
    # The provider key is injected...
    assert got.headers.get("authorization") == [f"Bearer {keys.upstream}"]
    # ...and nothing of the client's credential goes upstream.
    for name, values in got.headers.items():
        for v in values:
            assert keys.alice not in v, f"client key leaked upstream in header {name}"
    for name in ("x-api-key", "api-key", "cookie"):
        assert name not in got.headers, f"{name} was forwarded upstream"
    assert keys.alice.encode() not in got.body
    # Ordinary client headers are forwarded (the capture really sees client headers).
    assert got.headers.get("x-custom-trace") == ["trace-123"]


def test_provider_key_injected_for_mock(client, mock_upstream):
    # The mock upstream runs with --api-key and answers 401 to anything else; weir would turn that
    # into a 502 upstream_auth_failed. A 200 proves weir sent the provider key.
    before = mock_upstream.stats()["requests"]
    assert client.chat.completions.create(model="mock-gpt", messages=MESSAGES, max_tokens=1).choices
    assert mock_upstream.stats()["requests"] == before + 1


# --------------------------------------------------------------------------------------------
# Secrets: runs last (file order), after every other test has sent traffic.


def test_secrets_not_in_logs_or_usage(weir, keys, client):
    # Some traffic of its own, so the test means something when run alone.
    client.chat.completions.create(model="mock-gpt", messages=MESSAGES, max_tokens=1)
    # A wrong key that contains alice's key: rejected keys must not be logged either.
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=weir.v1(), api_key=keys.alice + "x", max_retries=0).models.list()
    time.sleep(0.5)  # usage records and logs are written asynchronously
    log = weir.log_text()
    usage = weir.usage_path.read_text()
    assert log, "weir wrote no log"
    assert usage.strip(), "weir wrote no usage record"
    for name, secret in [("alice's key", keys.alice), ("bob's key", keys.bob), ("the upstream key", keys.upstream)]:
        assert secret not in log, f"{name} appears in weir's log"
        assert secret not in usage, f"{name} appears in usage.jsonl"
    # Also the config file weir read holds only hashes.
    config = weir.config_path.read_text()
    assert keys.alice not in config and keys.upstream not in config


def test_compiled_components_go_to_the_cache_dir(weir):
    """`--cache-dir` (which every gateway of the tests gets) takes the compiled components out
    of the data dir: weir compiles every bundled component at start, so without the flag they
    would be in `<data-dir>/cache`."""
    shared = Path(cache_args()[1])
    assert not (weir.data_dir / "cache").exists(), sorted(p.name for p in weir.data_dir.iterdir())
    assert len(list(shared.glob("*.cwasm"))) >= 9, f"{shared} holds too few compiled components"


def test_capped_address_space_falls_back_to_bounds_checked_memories(tmp_path, keys, mock_upstream):
    """Each policy memory reserves 4 GiB of address space (about 8 TiB for the default 1000
    instances), so that compiled policies load and store without bounds checks. Under a cap on
    the address space too small for that (`ulimit -v`, here 1 TiB) weir says so and runs its
    policies with bounds-checked memories instead: same answers, no failure."""
    port = free_port()
    config = tmp_path / "weir.yaml"
    config.write_text(
        f"""\
listen: 127.0.0.1:{port}
providers:
  - name: mock
    base-url: {mock_upstream.url}/v1
    api-key-env: MOCK_UPSTREAM_KEY
proxies:
  - name: capped
    context-path: /capped
    provider: mock
    policies:
      - policy: auth
        config:
          consumers:
            - id: alice
              key-sha256: {sha256_hex(keys.alice)}
      - policy: token-limit
        config: {{tokens-per-minute: 100000}}
"""
    )

    def cap_address_space():
        resource.setrlimit(resource.RLIMIT_AS, (1 << 40, 1 << 40))

    proc, log_path = start_weir(config, tmp_path, port, keys.upstream, preexec_fn=cap_address_space)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/capped/v1", api_key=keys.alice, max_retries=0, timeout=30)
        r = client.chat.completions.create(model="mock-gpt", messages=MESSAGES, max_tokens=3)
        assert r.choices[0].message.content == reply_text(3)
        assert r.usage.prompt_tokens == expected_prompt_tokens(MESSAGES)
        client.api_key = "sk-wrong"
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(model="mock-gpt", messages=MESSAGES, max_tokens=3)
    finally:
        stop_process(proc)
    log = log_path.read_text(errors="replace")
    assert "policy memories are bounds-checked instead" in log, log
