"""An MCP proxy in a real `weir` in front of a real MCP server (tests/python/mcp_server.py, the
official SDK), used with the official `mcp` client in both protocol eras: `auth` on the route,
tool access control per consumer, and what each call leaves in the usage records and metrics.
(tests/scenarios/mcp.yaml runs the access control on the edge targets too.) An OAuth client's
JWT (`auth` in JWT mode) must name this proxy as its audience.
"""

from __future__ import annotations

import json
import secrets
import time

import anyio
import httpx
import httpx2
import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from conftest import free_port, metric, sha256_hex, start_mock, start_weir, stop_process, usage_record
from scenario import leave_mid_call, mcp_session, minute_bucket, wait_for_window, wait_until_cancelled


# An OAuth client's tokens: signed by the authorization server's Ed25519 key, checked by `auth`.
SIGNER = ed25519.Ed25519PrivateKey.generate()
JWKS = {"keys": [{**json.loads(pyjwt.algorithms.OKPAlgorithm.to_jwk(SIGNER.public_key())), "kid": "idp-1", "use": "sig"}]}


def token(audience: str) -> str:
    now = int(time.time())
    claims = {"iss": "https://idp.example.com", "aud": audience, "sub": "agent-7", "iat": now, "exp": now + 300}
    return pyjwt.encode(claims, SIGNER, algorithm="EdDSA", headers={"kid": "idp-1"})


@pytest.fixture(scope="module")
def gw(tmp_path_factory, keys, mcp_server, mcp_server_modern_only, mcp_server_legacy_only):
    base = tmp_path_factory.mktemp("mcp")
    mock = start_mock(base, keys)
    port, admin, controller = free_port(), free_port(), free_port()
    alice, bob = "sk-mcp-alice-" + secrets.token_hex(8), "sk-mcp-bob-" + secrets.token_hex(8)
    config = base / "weir.yaml"
    config.write_text(
        f"""
listen: 127.0.0.1:{port}
admin-listen: 127.0.0.1:{admin}
controller: {{ listen: 127.0.0.1:{controller} }}
providers:
  - {{ name: mock, base-url: "{mock.url}/v1", api-key-env: MOCK_UPSTREAM_KEY }}
proxies:
  - {{ name: llm, context-path: /llm, provider: mock }}
mcp-proxies:
  - name: tools
    context-path: /tools
    upstream: {{ server: {{ url: "{mcp_server}" }} }}
    tools:
      - {{ name: "delete_*", allow: [admin] }}
      - {{ name: add, deny: [bob] }}
    policies:
      - policy: auth
        config:
          consumers:
            - {{ id: alice, key-sha256: {sha256_hex(alice)} }}
            - {{ id: bob, key-sha256: {sha256_hex(bob)} }}
  - name: limited
    context-path: /limited
    upstream: {{ server: {{ url: "{mcp_server}" }} }}
    policies:
      - policy: auth
        config:
          consumers:
            - {{ id: alice, key-sha256: {sha256_hex(alice)} }}
            - {{ id: bob, key-sha256: {sha256_hex(bob)} }}
      - {{ policy: token-limit, config: {{ scope: consumer-tool, requests-per-minute: 2 }} }}
  - name: modern
    context-path: /modern
    upstream: {{ server: {{ url: "{mcp_server_modern_only}" }} }}
    policies:
      - policy: auth
        config:
          consumers:
            - {{ id: alice, key-sha256: {sha256_hex(alice)} }}
            - {{ id: bob, key-sha256: {sha256_hex(bob)} }}
  - name: legacy
    context-path: /legacy
    upstream: {{ server: {{ url: "{mcp_server_legacy_only}" }} }}
    policies:
      - policy: auth
        config:
          consumers:
            - {{ id: alice, key-sha256: {sha256_hex(alice)} }}
  - name: pair
    context-path: /pair
    upstream:
      servers:
        - {{ name: one, url: "{mcp_server}" }}
        - {{ name: two, url: "{mcp_server_legacy_only}" }}
        - {{ name: three, url: "{mcp_server_modern_only}" }}
    policies:
      - policy: auth
        config:
          consumers:
            - {{ id: alice, key-sha256: {sha256_hex(alice)} }}
  - name: secure
    context-path: /secure
    upstream: {{ server: {{ url: "{mcp_server}" }} }}
    oauth: {{ authorization-servers: ["https://idp.example.com"] }}
    policies:
      - policy: auth
        config:
          jwt: {{ jwks: {json.dumps(JWKS)}, issuer: "https://idp.example.com", audience: "http://127.0.0.1:{port}/secure" }}
"""
    )
    proc, log_path = start_weir(config, base, port, keys.upstream)
    try:
        yield {"url": f"http://127.0.0.1:{port}/tools", "base": f"http://127.0.0.1:{port}", "admin": admin, "api": f"http://127.0.0.1:{controller}/api/v1", "alice": alice, "bob": bob,
               "data": base / "data", "log": log_path}
    finally:
        stop_process(proc)
        stop_process(mock.proc)


def session(gw, who: str, mode: str, call: str | None = None, **arguments):
    return anyio.run(mcp_session, gw["url"], call, arguments, gw[who], mode)


def tool_record(gw, consumer: str, tool: str, outcome: str) -> dict:
    return usage_record(
        gw["data"],
        lambda r: r.get("tool") == tool and r.get("consumer") == consumer and r["outcome"] == outcome,
        f"{consumer} calling {tool} ({outcome})",
    )


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
def test_each_consumer_sees_and_calls_only_its_tools(gw, mode):
    before = metric(gw, "weir_mcp_tool_calls_total", 'proxy="tools"', 'tool="add"', 'outcome="success"')
    tools, text, error, _ = session(gw, "alice", mode, "add", a=20, b=22)
    assert error is None and text == "42"
    assert "add" in tools and "delete_everything" not in tools, tools

    tools, text, error, _ = session(gw, "bob", mode, "add", a=1, b=1)
    assert "add" not in tools and "delete_everything" not in tools, tools
    assert text is None and error is not None and "tool_not_allowed" in error, error

    tools, text, error, _ = session(gw, "alice", mode, "delete_everything")
    assert text is None and "tool_not_allowed" in (error or ""), error

    ok = tool_record(gw, "alice", "add", "success")
    assert (ok["proxy"], ok["endpoint"], ok["status"]) == ("tools", "tools/call", 200)
    assert tool_record(gw, "bob", "add", "denied")["provider"] == ""
    assert tool_record(gw, "alice", "delete_everything", "denied")["status"] == 200
    after = metric(gw, "weir_mcp_tool_calls_total", 'proxy="tools"', 'tool="add"', 'outcome="success"')
    assert after == before + 1
    assert metric(gw, "weir_mcp_tool_calls_total", 'tool="delete_everything"', 'outcome="denied"') >= 1
    assert metric(gw, "weir_policy_denials_total", 'policy="mcp-tools"', 'code="tool_not_allowed"') >= 2
    if mode == "legacy":
        # The initialize era's server stream (GET) and session end (DELETE) went through too.
        for method in ("GET", "DELETE"):
            record = usage_record(gw["data"], lambda r: r["endpoint"] == method and r.get("consumer") == "alice", method)
            assert (record["status"], record["outcome"]) == (200, "success"), record


def test_no_key_is_a_401_with_a_json_rpc_body_and_no_key_reaches_the_log(gw):
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "t", "version": "1"}}}
    r = httpx.post(gw["url"], json=init, headers={"accept": "application/json, text/event-stream"}, timeout=10)
    assert r.status_code == 401
    body = r.json()
    assert body["jsonrpc"] == "2.0" and body["id"] == 1 and body["error"]["code"] == -32000
    log = gw["log"].read_text() + (gw["data"] / "usage.jsonl").read_text()
    assert gw["alice"] not in log and gw["bob"] not in log


def test_a_browser_page_from_another_origin_is_refused(gw):
    init = {"jsonrpc": "2.0", "id": 3, "method": "tools/list"}
    headers = {"accept": "application/json, text/event-stream", "authorization": f"Bearer {gw['alice']}"}
    r = httpx.post(gw["url"], json=init, headers={**headers, "origin": "http://evil.example"}, timeout=10)
    assert r.status_code == 403
    assert r.json()["error"]["data"]["code"] == "origin_not_allowed"
    host = gw["url"].split("/")[2]
    r = httpx.post(gw["url"], json=init, headers={**headers, "origin": f"http://{host}"}, timeout=10)
    assert r.status_code != 403, r.text


async def _steps(url: str, key: str, steps: list[tuple]) -> list:
    """Runs `("list",)` and `("call", tool, arguments)` steps in one session of the official
    client (initialize era); each gives the tool names, `("ok"|"tool-error", text)`, or
    `("mcp-error", data)`."""
    from mcp.shared.exceptions import MCPError

    out: list = []
    http = httpx2.AsyncClient(headers={"authorization": f"Bearer {key}"}, timeout=httpx2.Timeout(30, read=60))
    async with Client(streamable_http_client(url, http_client=http), mode="legacy") as client:
        for step in steps:
            if step[0] == "list":
                out.append([t.name for t in (await client.list_tools()).tools])
                continue
            try:
                result = await client.call_tool(step[1], step[2])
            except MCPError as e:
                out.append(("mcp-error", json.dumps(e.error.data) if e.error.data else e.error.message))
                continue
            text = "".join(getattr(c, "text", "") for c in result.content)
            out.append(("tool-error" if result.is_error else "ok", text))
    return out


def steps(gw, path: str, who: str, *plan: tuple) -> list:
    return anyio.run(_steps, f"{gw['base']}{path}", gw[who], list(plan))


def test_calls_per_minute_per_consumer_and_tool(gw):
    add = ("call", "add", {"a": 1, "b": 2})
    # token-limit counts fixed minutes: run all calls inside one.
    wait_for_window(20)
    window = minute_bucket()
    got = steps(gw, "/limited", "alice", ("list",), ("list",), ("list",), add, add, add,
                ("call", "delete_everything", {}))[3:]
    assert [g[0] for g in got] == ["ok", "ok", "mcp-error", "ok"], got
    assert "rate_limit_exceeded" in got[2][1] and "429" in got[2][1], got
    assert steps(gw, "/limited", "bob", add) == [("ok", "3")], "another consumer has its own counter"
    assert minute_bucket() == window, "the minute rolled over during the test: the counts mean nothing"
    assert tool_record(gw, "alice", "add", "denied")["status"] == 429


@pytest.fixture(scope="module")
def guarded(tmp_path_factory, keys):
    """weir in front of an MCP server of its own (these tests change its tools): `/guarded` with
    mcp-guard reporting changed tools, `/blocked` with mcp-guard blocking them."""
    from conftest import _mcp_server

    server = _mcp_server(tmp_path_factory)
    url = next(server)
    base = tmp_path_factory.mktemp("mcp-guard")
    mock = start_mock(base, keys)
    port, admin = free_port(), free_port()
    alice = "sk-guard-alice-" + secrets.token_hex(8)
    auth = f"{{ policy: auth, config: {{ consumers: [ {{ id: alice, key-sha256: {sha256_hex(alice)} }} ] }} }}"
    config = base / "weir.yaml"
    config.write_text(
        f"""
listen: 127.0.0.1:{port}
admin-listen: 127.0.0.1:{admin}
providers:
  - {{ name: mock, base-url: "{mock.url}/v1", api-key-env: MOCK_UPSTREAM_KEY }}
proxies:
  - {{ name: llm, context-path: /llm, provider: mock }}
mcp-proxies:
  - {{ name: guarded, context-path: /guarded, upstream: {{ server: {{ url: "{url}" }} }},
      policies: [ {auth}, {{ policy: mcp-guard }} ] }}
  - {{ name: blocked, context-path: /blocked, upstream: {{ server: {{ url: "{url}" }} }},
      policies: [ {auth}, {{ policy: mcp-guard, config: {{ on-definition-change: block }} }} ] }}
"""
    )
    proc, log_path = start_weir(config, base, port, keys.upstream)
    try:
        yield {"base": f"http://127.0.0.1:{port}", "admin": admin, "alice": alice, "data": base / "data",
               "log": log_path}
    finally:
        stop_process(proc)
        stop_process(mock.proc)
        next(server, None)


def test_arguments_that_do_not_fit_the_schema_never_reach_the_server(guarded):
    got = steps(guarded, "/guarded", "alice", ("list",), ("call", "add", {"a": "two", "b": 2}),
                ("call", "add", {"a": 2}), ("call", "add", {"a": 2, "b": 2}))
    assert "add" in got[0]
    kind, text = got[1]
    assert kind == "tool-error" and text.startswith("Invalid arguments for tool `add`"), got[1]
    assert got[2][0] == "tool-error" and "b" in got[2][1], got[2]
    assert got[3] == ("ok", "4")
    record = usage_record(guarded["data"], lambda r: "mcp.invalid_arguments" in r.get("flags", []), "a refused call")
    assert (record["tool"], record["outcome"], record["status"]) == ("add", "answered", 200)
    assert metric(guarded, "weir_policy_invalid_tool_arguments_total", 'policy="mcp-guard"', 'tool="add"') >= 2


def test_a_tool_that_changes_is_reported_or_blocked(guarded):
    weather = ("call", "weather", {"city": "Paris"})
    assert steps(guarded, "/guarded", "alice", ("list",), weather)[1] == ("ok", "sunny in Paris")
    assert steps(guarded, "/blocked", "alice", ("list",), weather)[1] == ("ok", "sunny in Paris")
    assert metric(guarded, "weir_policy_tool_definition_changes_total") == 0

    assert steps(guarded, "/guarded", "alice", ("call", "rug_pull", {}))[0] == ("ok", "weather changed")

    # Reported: the call goes on; the change is logged, counted and flagged.
    assert steps(guarded, "/guarded", "alice", ("list",), weather)[1] == ("ok", "sunny in Paris")
    assert metric(guarded, "weir_policy_tool_definition_changes_total", 'tool="weather"') == 1
    record = usage_record(guarded["data"], lambda r: "mcp.tool_changed" in r.get("flags", []), "the changed list")
    assert record["endpoint"] == "tools/list"
    assert "mcp-guard: tool `weather` on `guarded` changed its definition" in guarded["log"].read_text()
    # Blocked: once the change is seen, calls of that tool are refused; others go on.
    got = steps(guarded, "/blocked", "alice", ("list",), weather, ("call", "add", {"a": 1, "b": 1}))
    assert got[1][0] == "tool-error" and "changed" in got[1][1], got[1]
    assert got[2] == ("ok", "2")


def test_an_oauth_client_finds_the_authorization_server_and_its_token_must_be_for_this_proxy(gw):
    base = gw["url"].rsplit("/", 1)[0]
    resource = f"{base}/secure"
    meta = httpx.get(f"{base}/.well-known/oauth-protected-resource/secure", timeout=10)
    assert meta.status_code == 200
    assert meta.json()["resource"] == resource
    assert meta.json()["authorization_servers"] == ["https://idp.example.com"]

    listed = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    headers = {"accept": "application/json, text/event-stream"}
    for bad in (None, token("http://127.0.0.1:1/elsewhere")):
        auth = {"authorization": f"Bearer {bad}"} if bad else {}
        r = httpx.post(resource, json=listed, headers={**headers, **auth}, timeout=10)
        assert r.status_code == 401, r.text
        challenge = r.headers["www-authenticate"]
        assert challenge.startswith(f'Bearer resource_metadata="{base}/.well-known/oauth-protected-resource/secure"'), challenge

    tools, text, error, _ = anyio.run(mcp_session, resource, "add", {"a": 3, "b": 4}, token(resource), "auto")
    assert error is None and text == "7" and "add" in tools
    record = usage_record(gw["data"], lambda r: r["proxy"] == "secure" and r.get("tool") == "add", "the JWT call")
    assert record["consumer"] == "agent-7" and record["outcome"] == "success"


def test_the_controller_lists_every_tool_of_the_server(gw):
    """Asked of the server itself (a session of the initialize era): every tool, whatever the
    proxy's access rules say; a proxy whose server is down is a 502 that says so."""
    r = httpx.get(f"{gw['api']}/mcp-proxies/tools/tools", auth=("admin", "admin"), timeout=30)
    assert r.status_code == 200, r.text
    tools = {t["name"]: t for t in r.json()["tools"]}
    assert {"add", "delete_everything", "weather"} <= set(tools), sorted(tools)
    assert tools["add"]["inputSchema"]["required"] == ["a", "b"]
    down = {"name": "down", "context-path": "/down",
            "upstream": {"server": {"url": f"http://127.0.0.1:{free_port()}/mcp", "timeout-ms": 2000}}}
    r = httpx.post(f"{gw['api']}/mcp-proxies", json=down, auth=("admin", "admin"), timeout=30)
    assert r.status_code == 201, r.text
    r = httpx.get(f"{gw['api']}/mcp-proxies/down/tools", auth=("admin", "admin"), timeout=30)
    assert r.status_code == 502 and r.json()["error"]["code"] == "mcp_upstream_unavailable", r.text
    assert "could not be reached" in r.json()["error"]["message"], r.text


def test_sessions_are_the_gateways_and_bound_to_the_consumer(gw):
    """The initialize era's session ids are the gateway's (128 random bits, mapped to the
    server's): another consumer cannot use one, and an ended one is gone (404, the answer that
    makes a client start a new session)."""
    accept = {"accept": "application/json, text/event-stream"}

    def post(who: str, body: dict, session: str | None = None, method: str = "POST") -> httpx.Response:
        headers = {**accept, "authorization": f"Bearer {gw[who]}", "mcp-protocol-version": "2025-06-18"}
        if session:
            headers["mcp-session-id"] = session
        return httpx.request(method, gw["url"], json=body if method == "POST" else None, headers=headers, timeout=10)

    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    r = post("alice", init)
    assert r.status_code == 200, r.text
    sid = r.headers["mcp-session-id"]
    assert len(sid) == 32 and all(c in "0123456789abcdef" for c in sid), sid
    assert post("alice", {"jsonrpc": "2.0", "method": "notifications/initialized"}, sid).status_code == 202
    listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    assert post("alice", listing, sid).status_code == 200
    stolen = post("bob", listing, sid)
    assert stolen.status_code == 404 and stolen.json()["error"]["data"]["code"] == "session_not_found", stolen.text
    assert post("alice", listing, "0" * 32).status_code == 404
    assert post("alice", {}, sid, method="DELETE").status_code == 200
    assert post("alice", listing, sid).status_code == 404, "an ended session is gone"


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
def test_a_server_of_the_stateless_revision_only_serves_clients_of_both_eras(gw, mode):
    """The server refuses `initialize`: for a client of that era the gateway holds the session
    (bound to the consumer) and speaks the new revision to the server."""
    if mode == "legacy":
        got = steps(gw, "/modern", "alice", ("list",), ("call", "add", {"a": 40, "b": 2}))
        assert "add" in got[0] and got[1] == ("ok", "42"), got
    else:
        tools, text, error, _ = anyio.run(mcp_session, f"{gw['base']}/modern", "add", {"a": 1, "b": 2}, gw["alice"], mode)
        assert error is None and text == "3" and "add" in tools, (tools, text, error)
    record = usage_record(gw["data"], lambda r: r["proxy"] == "modern" and r.get("tool") == "add", "add on /modern")
    assert (record["consumer"], record["status"]) == ("alice", 200), record


def client_of(url: str, key: str, mode: str) -> Client:
    http = httpx2.AsyncClient(headers={"authorization": f"Bearer {key}"}, timeout=httpx2.Timeout(30, read=60))
    return Client(streamable_http_client(url, http_client=http), mode=mode)


# (proxy, the client's era, the tool's name there): the server in the client's era; the bridge
# (a 2026-07-28 client, a server of the initialize era only); the other way (a server of the
# stateless revision only); several servers behind one proxy.
LEAVING = [
    ("/tools", "legacy", "slow"),
    ("/legacy", "2026-07-28", "slow"),
    ("/modern", "legacy", "slow"),
    ("/pair", "legacy", "one_slow"),
    ("/pair", "2026-07-28", "two_slow"),
    ("/pair", "legacy", "three_slow"),
]


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
def test_several_servers_of_each_era_behind_one_proxy(gw, mode):
    """Servers of both eras, of the initialize era only and of the stateless revision only,
    merged for clients of both eras: the gateway speaks each server's era."""

    async def run():
        async with client_of(f"{gw['base']}/pair", gw["alice"], mode) as c:
            tools = {t.name for t in (await c.list_tools()).tools}
            sums = [await c.call_tool(f"{s}_add", {"a": i, "b": 40}) for i, s in enumerate(("one", "two", "three"))]
            return tools, [r.content[0].text for r in sums]

    tools, sums = anyio.run(run)
    assert {"one_add", "two_add", "three_add", "three_slow"} <= tools, tools
    assert sums == ["40", "41", "42"], sums


@pytest.mark.parametrize("path,era,tool", LEAVING)
def test_a_client_that_leaves_mid_call_cancels_it_upstream(gw, path, era, tool):
    """Progress is relayed as it comes, and MCP does not take a disconnection for a
    cancellation: when the client goes away during a tool call's event stream, the gateway
    sends the server `notifications/cancelled` for it."""
    url = gw["base"] + path
    seconds = leave_mid_call(url, gw["alice"], era, tool)
    wait_until_cancelled(url, gw["alice"], tool.replace("slow", "cancelled"), seconds)
    record = usage_record(
        gw["data"], lambda r: r.get("tool") == tool and r["proxy"] == path[1:] and r["consumer"] == "alice", tool
    )
    assert record["outcome"] == "client_cancelled", record
