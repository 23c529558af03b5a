"""The contract from other languages: the same conformance policy written in JavaScript
(componentize-js) and in Python (componentize-py) against wit/policy-0.2, built by
scripts/build-language-policies.sh, loaded by a real `weir` as custom policies, and exercised
with the official `openai` SDK: a request edit, a denial, a stream rewrite, a kv counter.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import openai
import pytest

from conftest import ROOT, cache_args, _binary, _wait_ready, free_port, stop_process

LANGUAGES = ["js", "py"]


@pytest.fixture(scope="module")
def language_weir(tmp_path_factory, mock_upstream, keys):
    out = tmp_path_factory.mktemp("language-policies")
    env = dict(os.environ)
    env.setdefault("COMPONENTIZE_PY", str(Path(__import__("sys").executable).parent / "componentize-py"))
    build = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build-language-policies.sh"), str(out)],
        capture_output=True, text=True, env=env, timeout=600, stdin=subprocess.DEVNULL,
    )
    assert build.returncode == 0, f"building the policies failed:\n{build.stdout}\n{build.stderr}"
    base = tmp_path_factory.mktemp("weir-languages")
    port = free_port()
    config = base / "weir.yaml"
    config.write_text(
        f"""
listen: 127.0.0.1:{port}
runtime: {{ policy-timeout-ms: 1000, policy-memory-mib: 128 }}
policies:
  - {{ name: conformance-js, path: {out / 'conformance-js.wasm'} }}
  - {{ name: conformance-py, path: {out / 'conformance-py.wasm'} }}
providers:
  - name: mock
    base-url: {mock_upstream.url}/v1
    api-key-env: MOCK_UPSTREAM_KEY
proxies:
""" + "".join(
            f"""  - name: {lang}
    context-path: /{lang}
    provider: mock
    policies:
      - policy: conformance-{lang}
        config: {{ model: mock-{lang} }}
"""
            for lang in LANGUAGES
        )
    )
    log_path = base / "weir.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEIR_")}
    env["MOCK_UPSTREAM_KEY"] = keys.upstream
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(_binary("WEIR_BIN", "target/debug/weir")), "--config", str(config), "--data-dir", str(base / "data"), *cache_args()],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        )
    try:
        _wait_ready(proc, port, log_path, path="/js/v1/models")
        yield f"http://127.0.0.1:{port}", out, log_path
    finally:
        stop_process(proc)


def client(base: str, lang: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/{lang}/v1", api_key="unused", max_retries=0, timeout=60)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_request_edit_and_kv_counter(language_weir, lang):
    base, _, _ = language_weir
    counts = []
    for _ in range(2):
        raw = client(base, lang).chat.completions.with_raw_response.create(
            model="mock-gpt", messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
        answer = raw.parse()
        assert answer.model == f"mock-{lang}", "the policy's set-model edit reached the upstream"
        counts.append(int(raw.headers["x-conformance-count"]))
    assert counts[1] == counts[0] + 1, counts


@pytest.mark.parametrize("lang", LANGUAGES)
def test_denial(language_weir, lang):
    base, _, _ = language_weir
    with pytest.raises(openai.PermissionDeniedError) as e:
        client(base, lang).chat.completions.create(
            model="mock-gpt", messages=[{"role": "user", "content": "hi"}], extra_headers={"x-deny": "1"}
        )
    assert e.value.body["code"] == "conformance_denied"


@pytest.mark.parametrize("lang", LANGUAGES)
def test_stream_rewrite(language_weir, lang):
    base, _, _ = language_weir
    stream = client(base, lang).chat.completions.create(
        model="mock-gpt", messages=[{"role": "user", "content": "hi"}], max_tokens=3, stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "MOCK0 MOCK1 MOCK2"


def test_sizes_are_reported(language_weir):
    """The components' sizes, for the README (printed with -s)."""
    _, out, _ = language_weir
    sizes = {p.name: p.stat().st_size for p in Path(out).glob("conformance-*.wasm")}
    assert set(sizes) == {"conformance-js.wasm", "conformance-py.wasm"}
    print(f"\nlanguage policy sizes: {sizes}")
    assert all(s > 1_000_000 for s in sizes.values()), sizes
