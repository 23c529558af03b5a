"""The MCP translator in a real `weir` (with its controller): an MCP proxy over a real REST API
(tests/python/rest_api.py, described by tests/python/data/petstore.openapi.json, inline in the
configuration here), used with the official `mcp` client in both protocol eras. What the API
received is read back from it: the gateway's credential arrived, the client's key never did.
The controller refuses documents it cannot translate, naming the operation, and lists each MCP
proxy's tools. (tests/scenarios/mcp-translator.yaml runs the translator on the edge targets.)
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import anyio
import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from conftest import free_port, metric, sha256_hex, start_mock, start_weir, stop_process, usage_record

SPEC = json.loads((Path(__file__).parent / "data" / "petstore.openapi.json").read_text())
ADMIN = ("admin", "admin")  # the controller's development mode: no credentials configured


@pytest.fixture(scope="module")
def gw(tmp_path_factory, keys, rest_api):
    base = tmp_path_factory.mktemp("translator")
    mock = start_mock(base, keys)
    port, admin, controller = free_port(), free_port(), free_port()
    alice = "sk-rest-alice-" + secrets.token_hex(8)
    config = base / "weir.yaml"
    # The document goes in inline (as JSON, which is YAML), with its media operation left out.
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
  - name: pets
    context-path: /pets
    upstream:
      openapi:
        spec: {json.dumps(SPEC)}
        base-url: "{rest_api}"
        exclude-operations: [uploadPhoto]
        api-key-env: MOCK_UPSTREAM_KEY
        api-key-header: x-api-key
    policies:
      - policy: auth
        config:
          consumers:
            - {{ id: alice, key-sha256: {sha256_hex(alice)} }}
"""
    )
    proc, log_path = start_weir(config, base, port, keys.upstream)
    try:
        yield {"url": f"http://127.0.0.1:{port}/pets", "admin": admin, "api": f"http://127.0.0.1:{controller}/api/v1",
               "alice": alice, "data": base / "data", "log": log_path, "rest": rest_api}
    finally:
        stop_process(proc)
        stop_process(mock.proc)


async def _calls(url: str, key: str, mode: str, calls: list[tuple[str, dict]]):
    """Lists the tools, then makes each call; returns the tool names and, per call,
    (is_error, text, structured content)."""
    http = httpx2.AsyncClient(headers={"authorization": f"Bearer {key}"}, timeout=httpx2.Timeout(30, read=60))
    async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        out = []
        for name, arguments in calls:
            result = await client.call_tool(name, arguments)
            text = "".join(getattr(c, "text", "") for c in result.content)
            out.append((bool(result.is_error), text, result.structured_content))
        return tools, out


def calls(gw, mode: str, *plan: tuple[str, dict]):
    return anyio.run(_calls, gw["url"], gw["alice"], mode, list(plan))


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
def test_operations_are_tools_and_calls_are_rest_requests(gw, mode):
    tools, got = calls(
        gw,
        mode,
        ("getPet", {"petId": 1}),
        ("listPets", {"species": "dog", "limit": 5}),
        ("createPet", {"body": {"name": "Kit", "species": "cat", "tag": None}}),
        ("getPet", {"petId": 404}),
    )
    assert sorted(tools) == ["createPet", "deletePet", "getPet", "listPets"], sorted(tools)
    get_pet = tools["getPet"]
    assert get_pet.description == "One pet by its id."
    assert get_pet.input_schema["required"] == ["petId"]
    assert get_pet.input_schema["properties"]["petId"]["type"] == "integer"
    body = tools["createPet"].input_schema["properties"]["body"]
    assert body["required"] == ["name", "species"] and body["properties"]["tag"]["type"] == ["string", "null"]

    assert got[0][0] is False and got[0][2] == {"id": 1, "name": "Tom", "species": "cat", "tag": None}, got[0]
    assert got[1][0] is False and [p["name"] for p in got[1][2]["result"]] == ["Rex"], got[1]
    created = got[2][2]
    assert got[2][0] is False and created["name"] == "Kit" and created["id"] > 3, got[2]
    assert got[3][0] is True and got[3][1] == 'The API answered HTTP 404: {"error": "no pet 404"}', got[3]


def test_the_api_gets_the_gateways_credential_and_never_the_clients_key(gw, keys):
    before = len(httpx.get(f"{gw['rest']}/_seen", timeout=10).json())
    calls(gw, "2026-07-28", ("getPet", {"petId": 2}))
    seen = httpx.get(f"{gw['rest']}/_seen", timeout=10).json()[before:]
    assert len(seen) == 1, seen
    assert seen[0]["x-api-key"] == keys.upstream
    assert gw["alice"] not in json.dumps(seen), "the client's key reached the API"
    assert "authorization" not in seen[0], seen[0]
    log = gw["log"].read_text() + (gw["data"] / "usage.jsonl").read_text()
    assert keys.upstream not in log and gw["alice"] not in log


def test_bad_arguments_never_reach_the_api(gw):
    before = len(httpx.get(f"{gw['rest']}/_seen", timeout=10).json())
    _, got = calls(gw, "legacy", ("createPet", {"body": {"name": "", "species": "cat"}}), ("getPet", {"petId": "two"}))
    assert all(g[0] for g in got), got
    assert got[0][1].startswith("Invalid arguments for tool `createPet`"), got[0]
    assert got[1][1].startswith("Invalid arguments for tool `getPet`"), got[1]
    assert len(httpx.get(f"{gw['rest']}/_seen", timeout=10).json()) == before


def test_tool_calls_leave_usage_records_and_metrics(gw):
    before = metric(gw, "weir_mcp_tool_calls_total", 'proxy="pets"', 'tool="getPet"')
    calls(gw, "legacy", ("getPet", {"petId": 3}))
    record = usage_record(gw["data"], lambda r: r.get("tool") == "getPet" and r["proxy"] == "pets", "getPet")
    assert (record["consumer"], record["endpoint"], record["status"]) == ("alice", "tools/call", 200), record
    assert metric(gw, "weir_mcp_tool_calls_total", 'proxy="pets"', 'tool="getPet"') == before + 1


def test_a_get_stream_is_not_offered(gw):
    r = httpx.get(gw["url"], headers={"accept": "text/event-stream", "authorization": f"Bearer {gw['alice']}"}, timeout=10)
    assert r.status_code == 405 and r.headers["allow"] == "POST", r.text


def test_the_controller_lists_the_tools_of_an_mcp_proxy(gw):
    r = httpx.get(f"{gw['api']}/mcp-proxies/pets/tools", auth=ADMIN, timeout=10)
    assert r.status_code == 200, r.text
    tools = {t["name"]: t for t in r.json()["tools"]}
    assert sorted(tools) == ["createPet", "deletePet", "getPet", "listPets"]
    assert tools["listPets"]["inputSchema"]["properties"]["limit"]["minimum"] == 1
    r = httpx.get(f"{gw['api']}/mcp-proxies/nope/tools", auth=ADMIN, timeout=10)
    assert r.status_code == 404, r.text


def test_the_controller_refuses_a_document_it_cannot_translate_naming_the_operation(gw, rest_api):
    spec = json.loads(json.dumps(SPEC))
    proxy = {"name": "broken", "context-path": "/broken",
             "upstream": {"openapi": {"spec": spec, "base-url": rest_api}}}
    # The image upload needs a body the translator cannot send: it must be excluded.
    r = httpx.post(f"{gw['api']}/mcp-proxies", json=proxy, auth=ADMIN, timeout=30)
    assert r.status_code == 422, r.text
    said = r.text
    assert "upstream.openapi.spec.paths./pets/{petId}/photo.put.requestBody" in said, said
    assert "exclude-operations: [uploadPhoto]" in said, said
    # A reference to nothing names the operation and the reference.
    spec["paths"]["/pets"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"] = "#/components/schemas/Gone"
    proxy["upstream"]["openapi"]["exclude-operations"] = ["uploadPhoto"]
    r = httpx.post(f"{gw['api']}/mcp-proxies", json=proxy, auth=ADMIN, timeout=30)
    assert r.status_code == 422, r.text
    assert "paths./pets.post.requestBody.schema" in r.text and "#/components/schemas/Gone" in r.text, r.text
    # Fixed, it is created and serves.
    del spec["paths"]["/pets"]["post"]
    r = httpx.post(f"{gw['api']}/mcp-proxies", json=proxy, auth=ADMIN, timeout=30)
    assert r.status_code == 201, r.text
    r = httpx.get(f"{gw['api']}/mcp-proxies/broken/tools", auth=ADMIN, timeout=10)
    assert sorted(t["name"] for t in r.json()["tools"]) == ["deletePet", "getPet", "listPets"], r.text


def test_a_document_at_a_url_is_fetched_and_checked_when_the_proxy_is_created(gw, rest_api):
    proxy = {"name": "by-url", "context-path": "/by-url",
             "upstream": {"openapi": {"spec-url": f"{rest_api}/openapi.json", "base-url": rest_api}}}
    r = httpx.post(f"{gw['api']}/mcp-proxies", json=proxy, auth=ADMIN, timeout=30)
    assert r.status_code == 422, r.text
    said = r.json()["error"]["message"]
    assert f"the document at {rest_api}/openapi.json: paths./pets/{{petId}}/photo.put.requestBody" in said, said
    assert "upstream.openapi.spec-url" in r.text, r.text
    gone = {**proxy, "upstream": {"openapi": {"spec-url": f"http://127.0.0.1:{free_port()}/openapi.json", "base-url": rest_api}}}
    r = httpx.post(f"{gw['api']}/mcp-proxies", json=gone, auth=ADMIN, timeout=30)
    assert r.status_code == 422 and "could not be read" in r.text, r.text
    proxy["upstream"]["openapi"]["exclude-tags"] = ["media"]
    r = httpx.post(f"{gw['api']}/mcp-proxies", json=proxy, auth=ADMIN, timeout=30)
    assert r.status_code == 201, r.text
    r = httpx.get(f"{gw['api']}/mcp-proxies/by-url/tools", auth=ADMIN, timeout=10)
    assert sorted(t["name"] for t in r.json()["tools"]) == ["createPet", "deletePet", "getPet", "listPets"], r.text
