"""Several MCP servers behind one `weir` MCP proxy: the test server (tests/python/mcp_server.py,
both eras) and `@modelcontextprotocol/server-everything` (initialize era), plus one that is
down. The official `mcp` client, in both eras, sees their tools and prompts merged under
prefixed names, calls each, and the server that is down is left out (fail-open) or fails the
list (`fail-open: false`). Tool rules apply to the prefixed names.
"""

from __future__ import annotations

import secrets

import anyio
import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from conftest import free_port, sha256_hex, start_mock, start_weir, stop_process, usage_record


@pytest.fixture(scope="module")
def gw(tmp_path_factory, keys, mcp_server, everything_server):
    base = tmp_path_factory.mktemp("servers")
    mock = start_mock(base, keys)
    port, controller = free_port(), free_port()
    key = "sk-many-" + secrets.token_hex(8)
    down = f"http://127.0.0.1:{free_port()}/mcp"
    auth = f"""
      - policy: auth
        config:
          consumers:
            - {{ id: dana, key-sha256: {sha256_hex(key)} }}"""
    config = base / "weir.yaml"
    config.write_text(
        f"""
listen: 127.0.0.1:{port}
controller: {{ listen: 127.0.0.1:{controller} }}
providers:
  - {{ name: mock, base-url: "{mock.url}/v1", api-key-env: MOCK_UPSTREAM_KEY }}
proxies:
  - {{ name: llm, context-path: /llm, provider: mock }}
mcp-proxies:
  - name: many
    context-path: /many
    upstream:
      servers:
        - {{ name: local, url: "{mcp_server}" }}
        - {{ name: every, url: "{everything_server}" }}
        - {{ name: gone, url: "{down}", timeout-ms: 2000 }}
    tools:
      - {{ name: "local_delete_*", deny: ["*"] }}
    policies:{auth}
  - name: strict
    context-path: /strict
    upstream:
      servers:
        - {{ name: local, url: "{mcp_server}" }}
        - {{ name: gone, url: "{down}", timeout-ms: 2000 }}
      fail-open: false
    policies:{auth}
"""
    )
    proc, log_path = start_weir(config, base, port, keys.upstream)
    try:
        yield {"base": f"http://127.0.0.1:{port}", "api": f"http://127.0.0.1:{controller}/api/v1", "key": key, "data": base / "data", "log": log_path}
    finally:
        stop_process(proc)
        stop_process(mock.proc)


def session(gw, path: str, mode: str, work):
    async def run():
        http = httpx2.AsyncClient(headers={"authorization": f"Bearer {gw['key']}"}, timeout=httpx2.Timeout(30, read=60))
        async with Client(streamable_http_client(f"{gw['base']}{path}", http_client=http), mode=mode) as c:
            return await work(c)

    return anyio.run(run)


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
def test_two_servers_merged_under_prefixed_names_one_down(gw, mode):
    async def work(c):
        tools = [t.name for t in (await c.list_tools()).tools]
        added = await c.call_tool("local_add", {"a": 20, "b": 22})
        echoed = await c.call_tool("every_echo", {"message": "merged"})
        prompts = [p.name for p in (await c.list_prompts()).prompts]
        prompt = await c.get_prompt("every_simple-prompt")
        try:
            await c.call_tool("local_delete_everything", {})
            refused = None
        except MCPError as e:
            refused = e.error.data
        return tools, added, echoed, prompts, prompt, refused

    tools, added, echoed, prompts, prompt, refused = session(gw, "/many", mode, work)
    assert {"local_add", "local_weather", "every_echo", "every_get-sum"} <= set(tools), tools
    assert "add" not in tools and not any(t.startswith("gone_") for t in tools), tools
    assert "local_delete_everything" not in tools, "tool rules apply to the prefixed names"
    assert added.content[0].text == "42" and echoed.content[0].text == "Echo: merged"
    assert "every_simple-prompt" in prompts, prompts
    assert prompt.messages[0].content.text == "This is a simple prompt without arguments."
    assert refused and refused.get("code") == "tool_not_allowed", refused
    record = usage_record(gw["data"], lambda r: r.get("tool") == "local_add", "local_add")
    assert (record["consumer"], record["status"]) == ("dana", 200), record
    assert "MCP server `gone` left out of tools/list" in gw["log"].read_text()


def test_without_fail_open_a_server_down_fails_the_list(gw):
    async def work(c):
        try:
            await c.list_tools()
        except MCPError as e:
            return e.error.message
        return None

    said = session(gw, "/strict", "legacy", work)
    assert said and "MCP server `gone` failed" in said, said


def test_the_controller_lists_the_merged_tools(gw):
    r = httpx.get(f"{gw['api']}/mcp-proxies/many/tools", auth=("admin", "admin"), timeout=30)
    assert r.status_code == 200, r.text
    names = {t["name"] for t in r.json()["tools"]}
    assert {"local_add", "local_delete_everything", "every_echo"} <= names, sorted(names)
    r = httpx.get(f"{gw['api']}/mcp-proxies/strict/tools", auth=("admin", "admin"), timeout=30)
    assert r.status_code == 502 and "server `gone`" in r.text, r.text


def test_the_controller_refuses_unprefixed_servers_whose_tool_names_collide(gw, mcp_server, everything_server):
    """With `prefix: none` two servers must not offer a tool of the same name: the controller
    asks each server when the proxy is created and names the tool and both servers."""
    servers = [{"name": "first", "url": mcp_server}, {"name": "second", "url": mcp_server}]
    proxy = {"name": "flat", "context-path": "/flat", "upstream": {"servers": servers, "prefix": "none"}}
    r = httpx.post(f"{gw['api']}/mcp-proxies", json=proxy, auth=("admin", "admin"), timeout=60)
    assert r.status_code == 422, r.text
    assert "upstream.prefix" in r.text and "`first` and `second` both offer a tool named" in r.text, r.text
    # Servers whose names differ are accepted, unprefixed.
    proxy["upstream"]["servers"][1] = {"name": "second", "url": everything_server}
    r = httpx.post(f"{gw['api']}/mcp-proxies", json=proxy, auth=("admin", "admin"), timeout=60)
    assert r.status_code == 201, r.text
    r = httpx.get(f"{gw['api']}/mcp-proxies/flat/tools", auth=("admin", "admin"), timeout=30)
    names = {t["name"] for t in r.json()["tools"]}
    assert {"add", "echo"} <= names and not any(n.startswith(("first_", "second_")) for n in names), sorted(names)
