"""The Gateway-Controller REST API on a real `weir` process:

- durability: a change acknowledged with 201 survives SIGKILL right after the answer;
- the README's curl walk-through runs as written (against the mock provider);
- secret redaction: the provider key (a canary that the mock upstream also checks, so it must
  really be stored) never appears in API responses, exports, the admin endpoints, metrics or the
  log (debug level);
- the policy catalogue's config schemas accept the configurations the tests use;
- schemathesis checks the served OpenAPI document against the running server.

Tests in this module share one weir instance (controller, admin and data plane on free ports,
dev-mode credentials admin/admin) and run in file order: schemathesis, which may import a whole
new configuration, runs last.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import jsonschema
import openai
import pytest
import yaml

from conftest import ROOT, cache_args, Keys, MockUpstream, STARTUP_TIMEOUT_S, _binary, free_port, stop_process

ADMIN = ("admin", "admin")  # development mode: no credentials configured
SCHEMATHESIS_CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


@dataclass
class Controlled:
    """A weir process with the controller enabled; restartable on the same ports and data dir."""

    binary: Path
    workdir: Path
    env: dict
    port: int
    controller_port: int
    admin_port: int
    proc: subprocess.Popen | None = None

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def log_path(self) -> Path:
        return self.workdir / "weir.log"

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.controller_port}/api/v1"

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def start(self) -> None:
        config = self.workdir / "weir.yaml"
        config.write_text(
            f"listen: 127.0.0.1:{self.port}\n"
            f"admin-listen: 127.0.0.1:{self.admin_port}\n"
            f"controller:\n  listen: 127.0.0.1:{self.controller_port}\n"
            "providers: []\nproxies: []\n"
        )
        log = open(self.log_path, "ab")  # appended across restarts: the secrets check reads it all
        self.proc = subprocess.Popen(
            [str(self.binary), "--config", str(config), "--data-dir", str(self.data_dir), *cache_args()],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
        )
        log.close()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"weir exited with {self.proc.returncode}:\n{self.log_text()}", pytrace=False)
            try:
                if httpx.get(f"{self.api}/openapi.json", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        pytest.fail(f"the controller did not answer within {STARTUP_TIMEOUT_S}s:\n{self.log_text()}", pytrace=False)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def call(self, method: str, path: str, **kw) -> httpx.Response:
        return httpx.request(method, f"{self.api}{path}", auth=ADMIN, timeout=10, **kw)


@pytest.fixture(scope="module")
def controlled(tmp_path_factory, keys: Keys, mock_upstream: MockUpstream):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEIR_")}
    env["NO_COLOR"] = "1"
    env["WEIR_LOG"] = "info,weir=debug,weir_server=debug,weir_controller=debug,weir_runtime=debug,weir_llm=debug"
    c = Controlled(
        binary=_binary("WEIR_BIN", "target/debug/weir"),
        workdir=tmp_path_factory.mktemp("controlled"),
        env=env,
        port=free_port(),
        controller_port=free_port(),
        admin_port=free_port(),
    )
    c.start()
    yield c
    if c.proc is not None:
        stop_process(c.proc)


def provider_body(name: str, mock: MockUpstream, key: str) -> dict:
    return {"name": name, "template": "openai", "base-url": f"{mock.url}/v1", "api-key": key}


def test_a_201_survives_sigkill(controlled: Controlled, mock_upstream: MockUpstream, keys: Keys):
    created = controlled.call("POST", "/llm-providers", json=provider_body("durable", mock_upstream, keys.upstream))
    assert created.status_code == 201, created.text
    controlled.kill()  # right after the answer: it was on disk before the 201
    controlled.start()
    got = controlled.call("GET", "/llm-providers/durable")
    assert got.status_code == 200, got.text
    assert got.json()["api-key"] == "***"
    assert got.json()["base-url"] == f"{mock_upstream.url}/v1"

    proxy = controlled.call(
        "POST", "/llm-proxies", json={"name": "durable", "context-path": "/durable", "provider": "durable"}
    )
    assert proxy.status_code == 201, proxy.text
    made = controlled.call("POST", "/llm-proxies/durable/api-keys", json={"consumer": "carol"})
    assert made.status_code == 201, made.text
    key = made.json()["key"]
    controlled.kill()
    controlled.start()

    # The stored provider key really is the one the mock upstream checks, and the API key works.
    client = openai.OpenAI(base_url=f"{controlled.gateway}/durable/v1", api_key=key, max_retries=0)
    answer = client.chat.completions.create(model="mock-gpt", messages=[{"role": "user", "content": "hi"}], max_tokens=5)
    assert answer.choices[0].message.content
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{controlled.gateway}/durable/v1", api_key="wk-wrong", max_retries=0).chat.completions.create(
            model="mock-gpt", messages=[{"role": "user", "content": "hi"}]
        )


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(r"<!-- controller-example[^>]*-->\s*```bash\n(.*?)```", text, re.S)
    assert m, "README.md lost its controller-example block"
    return m.group(1)


def test_the_readme_walkthrough_runs(controlled: Controlled, mock_upstream: MockUpstream, keys: Keys, tmp_path: Path):
    assert shutil.which("jq") and shutil.which("curl"), "the README example needs curl and jq (scripts/test.sh installs them)"
    script = readme_example()
    for var, value in [
        ("CTL", controlled.api),
        ("GW", controlled.gateway),
        ("UPSTREAM", f"{mock_upstream.url}/v1"),
    ]:
        script, n = re.subn(rf"^{var}=\S+", f"{var}={value}", script, flags=re.M)
        assert n == 1, f"README example: no `{var}=` line"
    env = dict(os.environ, OPENAI_API_KEY=keys.upstream)
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    out = result.stdout
    assert '"object":"chat.completion"' in out.replace(" ", ""), out
    assert keys.upstream not in out
    exported = yaml.safe_load((tmp_path / "weir-state.yaml").read_text())
    providers = {p["name"]: p for p in exported["providers"]}
    assert providers["openai"]["api-key"] == "***"
    assert [p["name"] for p in exported["proxies"] if p["name"] == "team-a"] == ["team-a"]
    # The import kept the stored provider key: a new API key still gets an answer from the mock,
    # which checks that key.
    made = controlled.call("POST", "/llm-proxies/team-a/api-keys", json={"consumer": "bob"})
    assert made.status_code == 201, made.text
    again = httpx.post(
        f"{controlled.gateway}/team-a/v1/chat/completions",
        headers={"authorization": f"Bearer {made.json()['key']}"},
        json={"model": "mock-gpt", "messages": [{"role": "user", "content": "x"}]},
        timeout=10,
    )
    assert again.status_code == 200, again.text


def test_policy_schemas_accept_the_configs_in_use(controlled: Controlled, keys: Keys):
    catalogue = {p["name"]: p for p in controlled.call("GET", "/policies").json()["items"]}
    auth = catalogue["auth"]["config-schema"]
    limit = catalogue["token-limit"]["config-schema"]
    jsonschema.Draft202012Validator.check_schema(auth)
    jsonschema.Draft202012Validator.check_schema(limit)
    good_auth = {"consumers": [{"id": "a", "key-sha256": "0" * 64}], "allow-x-api-key": False}
    jsonschema.validate(good_auth, auth)
    jsonschema.validate({"tokens-per-minute": 100000}, limit)
    jsonschema.validate({"requests-per-minute": 5, "scope": "route"}, limit)
    for bad, schema in [
        ({"consumers": [{"id": "a", "key-sha256": "KEY"}]}, auth),
        ({"consumers": [], "colour": 1}, auth),
        ({"scope": "route"}, limit),  # no limit at all
        ({"tokens-per-minute": 0}, limit),
    ]:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
        # …and the component's own validate-config refuses the same document.
        policy = "auth" if schema is auth else "token-limit"
        refused = controlled.call(
            "POST",
            "/llm-proxies",
            json={"name": "schema-probe", "context-path": "/schema-probe", "provider": "durable",
                  "policies": [{"policy": policy, "config": bad}]},
        )
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["path"].startswith("policies[0].config"), refused.text


def every_output(controlled: Controlled) -> dict[str, str]:
    """Everything weir shows to anyone: API answers, exports, admin endpoints, data plane errors, log."""
    out: dict[str, str] = {}
    for path in [
        "/llm-providers",
        "/llm-providers/durable",
        "/llm-providers/openai",
        "/llm-proxies",
        "/llm-proxies/durable",
        "/llm-proxies/durable/api-keys",
        "/llm-provider-templates",
        "/mcp-proxies",
        "/policies",
        "/config",
        "/config?format=yaml",
    ]:
        r = controlled.call("GET", path)
        assert r.status_code == 200, f"{path}: {r.status_code} {r.text}"
        out[f"GET {path}"] = json.dumps(dict(r.headers)) + r.text
    out["openapi"] = httpx.get(f"{controlled.api}/openapi.json", timeout=10).text
    # Errors that quote the document back.
    for method, path, body in [
        ("PUT", "/llm-providers/durable", {"name": "durable", "base-url": "ftp://x", "api-key": "***"}),
        ("POST", "/llm-providers", {"name": "durable", "base-url": "http://x/v1", "api-key": "x"}),
    ]:
        r = controlled.call(method, path, json=body)
        assert r.status_code in (409, 422), r.text
        out[f"{method} {path}"] = r.text
    for path in ["/metrics", "/config", "/ready", "/health"]:
        out[f"admin {path}"] = httpx.get(f"{controlled.admin}{path}", timeout=10).text
    made = controlled.call("POST", "/llm-proxies/durable/api-keys", json={"consumer": "dave"})
    assert made.status_code == 201, made.text
    auth = {"authorization": f"Bearer {made.json()['key']}"}
    for model in ["mock-fault:status-401", "mock-fault:reset", "mock-gpt"]:
        r = httpx.post(
            f"{controlled.gateway}/durable/v1/chat/completions",
            headers=auth,
            json={"model": model, "messages": [{"role": "user", "content": "x"}]},
            timeout=10,
        )
        out[f"data plane {model}"] = json.dumps(dict(r.headers)) + r.text
    time.sleep(0.3)  # let the log catch up
    out["log"] = controlled.log_text()
    return out


def test_the_provider_key_never_shows(controlled: Controlled, keys: Keys):
    outputs = every_output(controlled)
    assert "GET /llm-providers/durable" in outputs and len(outputs["log"]) > 1000, "nothing to check"
    encoded = [keys.upstream, base64.b64encode(keys.upstream.encode()).decode(), keys.upstream[8:24]]
    leaks = [name for name, text in outputs.items() if any(e in text for e in encoded)]
    assert not leaks, f"the provider key appears in: {leaks}"
    # The canary is live: the mock upstream accepted it on the data plane.
    assert "chat.completion" in outputs["data plane mock-gpt"]


def test_openapi_document_matches_the_server(controlled: Controlled):
    st = Path(sys.executable).parent / "schemathesis"
    assert st.exists(), f"{st} missing: tests/python/requirements.txt installs schemathesis"
    basic = base64.b64encode(b"admin:admin").decode()
    cmd = [
        str(st),
        "--no-color",
        "run",
        f"{controlled.api}/openapi.json",
        "--checks",
        SCHEMATHESIS_CHECKS,
        "--max-examples",
        "12",
        "--seed",
        "20261202",
        "--header",
        f"Authorization: Basic {basic}",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=controlled.workdir)
    tail = (result.stdout + result.stderr)[-6000:]
    assert result.returncode == 0, f"schemathesis found differences between the document and the server:\n{tail}"
    assert re.search(r"\d+ passed", result.stdout), tail
    assert controlled.proc is not None and controlled.proc.poll() is None, "weir died under schemathesis"


def test_prompt_templates_are_managed_through_the_controller(controlled: Controlled, mock_upstream: MockUpstream, keys: Keys):
    """Templates are the `prompt` policy's configuration: created, versioned (ETag) and changed
    through the controller, live at once, with the content policies' schemas in the catalogue."""
    catalogue = {p["name"]: p for p in controlled.call("GET", "/policies").json()["items"]}
    for name in ("guardrail", "pii", "prompt"):
        jsonschema.Draft202012Validator.check_schema(catalogue[name]["config-schema"])
    if controlled.call("GET", "/llm-providers/templated").status_code == 404:
        made = controlled.call("POST", "/llm-providers", json=provider_body("templated", mock_upstream, keys.upstream))
        assert made.status_code == 201, made.text

    def proxy(text: str) -> dict:
        config = {"templates": [{"name": "greet", "messages": [{"role": "user", "content": text}]}]}
        jsonschema.validate(config, catalogue["prompt"]["config-schema"])
        return {"name": "templated", "context-path": "/templated", "provider": "templated",
                "policies": [{"policy": "prompt", "config": config}]}

    bad = controlled.call("POST", "/llm-proxies", json=proxy("Hello {{name"))
    assert bad.status_code == 422 and bad.json()["error"]["path"] == "policies[0].config.templates[0].messages[0].content", bad.text
    created = controlled.call("POST", "/llm-proxies", json=proxy("Hello {{name}}, v1"))
    assert created.status_code == 201, created.text
    etag = controlled.call("GET", "/llm-proxies/templated").headers["etag"]
    client = openai.OpenAI(base_url=f"{controlled.gateway}/templated/v1", api_key="unused", max_retries=0)

    def sent(nonce: str) -> str:
        client.chat.completions.create(
            model="mock-gpt", max_tokens=2, messages=[],
            extra_body={"weir_template": {"name": "greet", "variables": {"name": nonce}}},
        )
        bodies = httpx.get(f"{mock_upstream.url}/mock/requests", timeout=10).json()["requests"]
        return [json.dumps(r["body"]) for r in bodies if nonce in json.dumps(r["body"])][-1]

    assert "Hello n1-" in sent("n1-" + os.urandom(4).hex()) and ", v1" in sent("n2-" + os.urandom(4).hex())
    changed = controlled.call("PUT", "/llm-proxies/templated", json=proxy("Hi {{name}}, v2"), headers={"if-match": etag})
    assert changed.status_code == 200, changed.text
    assert changed.headers["etag"] != etag
    stale = controlled.call("PUT", "/llm-proxies/templated", json=proxy("Hi {{name}}, v3"), headers={"if-match": etag})
    assert stale.status_code == 412, stale.text
    body = sent("n3-" + os.urandom(4).hex())
    assert "Hi n3-" in body and ", v2" in body, body


def test_retries_and_routes_are_managed_through_the_controller(controlled: Controlled, mock_upstream: MockUpstream, keys: Keys):
    """A proxy's `retry` settings and its router's targets are set through the controller,
    checked with the field named, and live at once."""
    if controlled.call("GET", "/llm-providers/routed").status_code == 404:
        made = controlled.call("POST", "/llm-providers", json=provider_body("routed", mock_upstream, keys.upstream))
        assert made.status_code == 201, made.text
    # Fails twice, then answers (the mock counts the spec's requests).
    flaky = f"mock-fault:first-2,status-500,key-{os.urandom(4).hex()}"

    def proxy(retry: dict) -> dict:
        router = {"circuit-breaker": {"enabled": False}, "routes": [{"models": ["flaky"], "targets": [{"provider": "routed", "model": flaky}]}]}
        return {"name": "routed", "context-path": "/routed", "provider": "routed", "retry": retry,
                "policies": [{"policy": "router", "config": router}]}

    bad = controlled.call("POST", "/llm-proxies", json=proxy({"attempts": 11}))
    assert bad.status_code == 422 and bad.json()["error"]["path"].endswith("retry.attempts"), bad.text
    bad = controlled.call("POST", "/llm-proxies", json=proxy({"on-status": [503, 404]}))
    assert bad.status_code == 422 and bad.json()["error"]["path"].endswith("retry.on-status[1]"), bad.text
    created = controlled.call("POST", "/llm-proxies", json=proxy({"attempts": 2, "backoff-ms": 10}))
    assert created.status_code == 201, created.text
    assert controlled.call("GET", "/llm-proxies/routed").json()["retry"]["attempts"] == 2
    client = openai.OpenAI(base_url=f"{controlled.gateway}/routed/v1", api_key="unused", max_retries=0)
    answer = client.chat.completions.create(model="flaky", max_tokens=2, messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content and answer.model == flaky, answer


def test_cache_settings_are_validated_and_live_through_the_controller(controlled: Controlled, mock_upstream: MockUpstream, keys: Keys):
    """The cache's configuration is checked by the component itself (422 naming the field, its
    schema in the catalogue); a valid one is live at once."""
    catalogue = {p["name"]: p for p in controlled.call("GET", "/policies").json()["items"]}
    schema = catalogue["cache"]["config-schema"]
    jsonschema.Draft202012Validator.check_schema(schema)
    if controlled.call("GET", "/llm-providers/cached").status_code == 404:
        made = controlled.call("POST", "/llm-providers", json=provider_body("cached", mock_upstream, keys.upstream))
        assert made.status_code == 201, made.text

    def proxy(config: dict) -> dict:
        return {"name": "cached", "context-path": "/cached", "provider": "cached", "policies": [{"policy": "cache", "config": config}]}

    bad = controlled.call("POST", "/llm-proxies", json=proxy({"semantic": {"provider": "cached", "model": "mock-words", "threshold": 1.5}}))
    assert bad.status_code == 422 and bad.json()["error"]["path"] == "policies[0].config.semantic.threshold", bad.text
    bad = controlled.call("POST", "/llm-proxies", json=proxy({"exact": {"ttl-s": 0}}))
    assert bad.status_code == 422 and bad.json()["error"]["path"] == "policies[0].config.exact.ttl-s", bad.text
    good = {"exact": {"ttl-s": 60}}
    jsonschema.validate(good, schema)
    created = controlled.call("POST", "/llm-proxies", json=proxy(good))
    assert created.status_code == 201, created.text
    client = openai.OpenAI(base_url=f"{controlled.gateway}/cached/v1", api_key="unused", max_retries=0)
    content = "cache me " + secrets.token_hex(4)
    states = [
        client.chat.completions.with_raw_response.create(model="mock-gpt", max_tokens=4, messages=[{"role": "user", "content": content}]).headers["x-weir-cache"]
        for _ in range(2)
    ]
    assert states == ["miss", "hit"]
