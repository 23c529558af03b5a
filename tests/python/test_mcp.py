"""An MCP proxy in a real `weir` in front of a real MCP server (tests/python/mcp_server.py, the
official SDK), used with the official `mcp` client in both protocol eras: `auth` on the route,
tool access control per consumer, and what each call leaves in the usage records and metrics.
(tests/scenarios/mcp.yaml runs the access control on the edge targets too.)
"""

from __future__ import annotations

import json
import secrets

import anyio
import httpx2
import httpx
import pytest

from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from conftest import free_port, metric, sha256_hex, start_mock, start_weir, stop_process, usage_record
from scenario import mcp_session, minute_bucket, wait_for_window


@pytest.fixture(scope="module")
def gw(tmp_path_factory, keys, mcp_server):
    base = tmp_path_factory.mktemp("mcp")
    mock = start_mock(base, keys)
    port, admin = free_port(), free_port()
    alice, bob = "sk-mcp-alice-" + secrets.token_hex(8), "sk-mcp-bob-" + secrets.token_hex(8)
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
"""
    )
    proc, log_path = start_weir(config, base, port, keys.upstream)
    try:
        yield {"url": f"http://127.0.0.1:{port}/tools", "limited": f"http://127.0.0.1:{port}/limited", "admin": admin, "alice": alice, "bob": bob,
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
    tools, text, error = session(gw, "alice", mode, "add", a=20, b=22)
    assert error is None and text == "42"
    assert "add" in tools and "delete_everything" not in tools, tools

    tools, text, error = session(gw, "bob", mode, "add", a=1, b=1)
    assert "add" not in tools and "delete_everything" not in tools, tools
    assert text is None and error is not None and "tool_not_allowed" in error, error

    tools, text, error = session(gw, "alice", mode, "delete_everything")
    assert text is None and "tool_not_allowed" in (error or ""), error

    ok = tool_record(gw, "alice", "add", "success")
    assert (ok["proxy"], ok["endpoint"], ok["status"]) == ("tools", "tools/call", 200)
    assert tool_record(gw, "bob", "add", "denied")["provider"] == ""
    assert tool_record(gw, "alice", "delete_everything", "denied")["status"] == 200
    after = metric(gw, "weir_mcp_tool_calls_total", 'proxy="tools"', 'tool="add"', 'outcome="success"')
    assert after == before + 1
    assert metric(gw, "weir_mcp_tool_calls_total", 'tool="delete_everything"', 'outcome="denied"') >= 1
    assert metric(gw, "weir_policy_denials_total", 'policy="mcp-tools"', 'code="tool_not_allowed"') >= 2


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


def test_calls_per_minute_per_consumer_and_tool(gw):
    async def calls(who: str, plan: list[str]) -> list[str]:
        from mcp.shared.exceptions import MCPError

        out = []
        http = httpx2.AsyncClient(headers={"authorization": f"Bearer {gw[who]}"}, timeout=httpx2.Timeout(30, read=60))
        async with Client(streamable_http_client(gw["limited"], http_client=http), mode="legacy") as client:
            for _ in range(3):
                await client.list_tools()  # not a tool call: never counted
            for tool in plan:
                try:
                    result = await client.call_tool(tool, {"a": 1, "b": 2} if tool == "add" else {})
                    out.append("error" if result.is_error else "ok")
                except MCPError as e:
                    out.append(json.dumps(e.error.data) if e.error.data else e.error.message)
        return out

    # token-limit counts fixed minutes: run all calls inside one.
    wait_for_window(20)
    window = minute_bucket()
    got = anyio.run(calls, "alice", ["add", "add", "add", "delete_everything"])
    assert got[:2] == ["ok", "ok"], got
    assert "rate_limit_exceeded" in got[2] and "429" in got[2], got
    assert got[3] == "ok", "another tool has its own counter"
    assert anyio.run(calls, "bob", ["add"]) == ["ok"], "another consumer has its own counter"
    assert minute_bucket() == window, "the minute rolled over during the test: the counts mean nothing"
    assert tool_record(gw, "alice", "add", "denied")["status"] == 429
