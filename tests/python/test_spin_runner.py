"""`weir-spin-runner --pooling` (used by `bench/edge.py --spin-pooling` to measure a composed
app's instance from a pooling allocator): the Spin app answers as it does with fresh
instances, its key-value state carried across requests whose instances share recycled slots.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx

import targets
from conftest import sha256_hex

LIMIT = 6


def config(mock_url: str, consumer_key: str) -> str:
    return f"""
providers:
  - name: mock
    base-url: {mock_url}/v1
    api-key-env: MOCK_UPSTREAM_KEY
proxies:
  - name: demo
    context-path: /demo
    provider: mock
    policies:
      - {{policy: auth, config: {{consumers: [{{id: alice, key-sha256: {sha256_hex(consumer_key)}}}]}}}}
      - {{policy: token-limit, config: {{requests-per-minute: {LIMIT}}}}}
"""


def test_the_spin_app_answers_the_same_from_a_pooling_allocator(tmp_path, mock_upstream, keys):
    target = targets.make("spin", tmp_path, config(mock_upstream.url, keys.alice), keys.upstream)
    target.persist = False
    target.pooling = True
    target.start()
    try:
        url = f"{target.base_url}/demo/v1/chat/completions"
        body = {"model": "mock-gpt", "messages": [{"role": "user", "content": "hello"}]}

        def ask(key: str | None) -> httpx.Response:
            headers = {"authorization": f"Bearer {key}"} if key else {}
            return httpx.post(url, json=body, headers=headers, timeout=30)

        denied = ask(None)
        assert denied.status_code == 401, denied.text
        assert denied.json()["error"]["code"] == "missing_api_key", denied.text
        # Concurrent requests: instances in different pool slots at once.
        with ThreadPoolExecutor(max_workers=4) as pool:
            answers = list(pool.map(lambda _: ask(keys.alice), range(4)))
        for a in answers:
            assert a.status_code == 200, a.text
            assert a.json()["choices"][0]["message"]["content"], a.text
        # Then one at a time: recycled slots; the count lives in the key-value store.
        for _ in range(LIMIT - 4):
            ok = ask(keys.alice)
            assert ok.status_code == 200, ok.text
        over = ask(keys.alice)
        assert over.status_code == 429, over.text
        assert over.json()["error"]["code"] == "rate_limit_exceeded", over.text
    finally:
        target.stop()
    assert "request failed" not in target.log_path.read_text()
