"""`@modelcontextprotocol/server-everything` (the MCP project's reference server, initialize era,
with sessions) behind a real `weir` MCP proxy with `auth`, used with the official `mcp` client
in both eras (a 2026-07-28 client through the gateway's bridge): tools, prompts, resources, a
long-running tool whose progress notifications arrive as they are sent (not held until the
result) — directly, through the bridge, and through a proxy with several servers — and a
cancelled call.
"""

from __future__ import annotations

import secrets
import time

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from conftest import free_port, sha256_hex, start_mock, start_weir, stop_process, usage_record


@pytest.fixture(scope="module")
def gw(tmp_path_factory, keys, everything_server):
    base = tmp_path_factory.mktemp("everything-gw")
    mock = start_mock(base, keys)
    port = free_port()
    key = "sk-every-" + secrets.token_hex(8)
    config = base / "weir.yaml"
    config.write_text(
        f"""
listen: 127.0.0.1:{port}
providers:
  - {{ name: mock, base-url: "{mock.url}/v1", api-key-env: MOCK_UPSTREAM_KEY }}
proxies:
  - {{ name: llm, context-path: /llm, provider: mock }}
mcp-proxies:
  - name: everything
    context-path: /everything
    upstream: {{ server: {{ url: "{everything_server}" }} }}
    policies:
      - policy: auth
        config:
          consumers:
            - {{ id: carol, key-sha256: {sha256_hex(key)} }}
  - name: pair
    context-path: /pair
    upstream:
      servers:
        - {{ name: left, url: "{everything_server}" }}
        - {{ name: right, url: "{everything_server}" }}
    policies:
      - policy: auth
        config:
          consumers:
            - {{ id: carol, key-sha256: {sha256_hex(key)} }}
"""
    )
    proc, log_path = start_weir(config, base, port, keys.upstream)
    try:
        yield {"url": f"http://127.0.0.1:{port}/everything", "pair": f"http://127.0.0.1:{port}/pair", "key": key, "data": base / "data", "log": log_path}
    finally:
        stop_process(proc)
        stop_process(mock.proc)


def client(gw, mode: str = "legacy", proxy: str = "url") -> Client:
    http = httpx2.AsyncClient(headers={"authorization": f"Bearer {gw['key']}"}, timeout=httpx2.Timeout(30, read=60))
    return Client(streamable_http_client(gw[proxy], http_client=http), mode=mode)


# (client era, proxy, the long-running tool's name there)
PROGRESS_PATHS = [
    ("legacy", "url", "trigger-long-running-operation"),
    ("2026-07-28", "url", "trigger-long-running-operation"),  # through the bridge
    ("legacy", "pair", "right_trigger-long-running-operation"),  # several servers
    ("2026-07-28", "pair", "left_trigger-long-running-operation"),
]


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
def test_tools_prompts_and_resources(gw, mode):
    """In the client's own era: the server speaks only the initialize era, so a client of the
    stateless revision is served by the gateway's bridge (a session per consumer)."""

    async def run():
        async with client(gw, mode) as c:
            tools = [t.name for t in (await c.list_tools()).tools]
            total = await c.call_tool("get-sum", {"a": 19, "b": 23})
            echo = await c.call_tool("echo", {"message": "through weir"})
            prompts = [p.name for p in (await c.list_prompts()).prompts]
            prompt = await c.get_prompt("simple-prompt")
            resources = (await c.list_resources()).resources
            first = await c.read_resource(str(resources[0].uri))
            return tools, total, echo, prompts, prompt, resources, first

    tools, total, echo, prompts, prompt, resources, first = anyio.run(run)
    assert {"get-sum", "echo", "trigger-long-running-operation"} <= set(tools), tools
    assert "42" in total.content[0].text and not total.is_error, total
    assert echo.content[0].text == "Echo: through weir", echo
    assert "simple-prompt" in prompts, prompts
    assert prompt.messages[0].content.text == "This is a simple prompt without arguments.", prompt
    assert resources and first.contents and first.contents[0].uri == resources[0].uri, first


@pytest.mark.parametrize("mode,proxy,tool", PROGRESS_PATHS)
def test_progress_arrives_while_the_tool_runs(gw, mode, proxy, tool):
    """Three steps a second apart: the first notification must come about two seconds before the
    result. A gateway that buffered the event stream would deliver them together."""

    async def run():
        seen: list[tuple[float, float]] = []

        async def progress(done: float, total: float | None, message: str | None) -> None:
            seen.append((time.monotonic(), done))

        async with client(gw, mode, proxy) as c:
            result = await c.call_tool(tool, {"duration": 3, "steps": 3}, progress_callback=progress)
            return seen, time.monotonic(), result

    seen, ended, result = anyio.run(run)
    assert [d for _, d in seen] == [1, 2, 3], seen
    assert "Long running operation completed" in result.content[0].text, result
    assert ended - seen[0][0] > 1.5, f"the first progress came {ended - seen[0][0]:.2f} s before the result"


@pytest.mark.parametrize("mode,proxy,tool", PROGRESS_PATHS)
def test_a_cancelled_call_reaches_the_server_and_the_session_goes_on(gw, mode, proxy, tool):
    async def run():
        async with client(gw, mode, proxy) as c:
            started = anyio.Event()

            async def progress(done: float, total: float | None, message: str | None) -> None:
                started.set()

            async def long_call() -> None:
                await c.call_tool(tool, {"duration": 30, "steps": 30}, progress_callback=progress)

            t0 = time.monotonic()
            async with anyio.create_task_group() as tg:
                tg.start_soon(long_call)
                await started.wait()
                tg.cancel_scope.cancel()
            cancelled_after = time.monotonic() - t0
            after = await c.call_tool(tool.replace("trigger-long-running-operation", "get-sum"), {"a": 1, "b": 2})
            return cancelled_after, after

    cancelled_after, after = anyio.run(run)
    assert cancelled_after < 10, cancelled_after
    assert "3" in after.content[0].text, after
    record = usage_record(gw["data"], lambda r: r["endpoint"] == "notifications/cancelled", "the cancellation")
    assert (record["consumer"], record["status"]) == ("carol", 202), record

