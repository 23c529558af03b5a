"""Target-independent scenarios (tests/scenarios/*.yaml): a gateway configuration and client
steps that every deployment of Weir must pass. The file format is described in the comments of
tests/scenarios/edge.yaml; targets are in targets.py and the pytest glue in test_scenarios.py.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import anyio
import openai
import yaml

ACTIONS = ("chat", "exhaust", "restart", "concurrent", "log-clean", "mcp", "mcp-leave", "metric", "upstream", "http")
PLACEHOLDER = re.compile(r"\$\{([A-Z0-9_]+)\}")


class Target(Protocol):
    """A running deployment of Weir that a scenario talks to."""

    name: str
    capabilities: frozenset[str]

    @property
    def base_url(self) -> str: ...

    def restart(self) -> None: ...

    def log_text(self) -> str: ...

    def metric_total(self, name: str) -> float: ...


@dataclass(frozen=True)
class Step:
    index: int
    name: str
    action: str | None  # one of ACTIONS, or None for a step that only waits (`window`)
    args: dict[str, Any]
    expect: dict[str, Any]
    # Per target, what replaces `expect` there (a target's stated limit, e.g. Spin's bare 500).
    expect_on: dict[str, dict[str, Any]]
    requires: frozenset[str]
    window_seconds: float | None
    same_window: bool

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")


@dataclass(frozen=True)
class Scenario:
    name: str
    path: Path
    config: dict[str, Any]
    request: dict[str, Any]
    steps: list[Step]

    @classmethod
    def load(cls, path: Path) -> Scenario:
        doc = yaml.safe_load(path.read_text())
        steps = []
        for i, raw in enumerate(doc["steps"]):
            actions = [a for a in ACTIONS if a in raw]
            if len(actions) > 1 or (not actions and "window" not in raw):
                raise ValueError(f"{path}: step {i} ({raw.get('name')!r}) needs exactly one of {ACTIONS} or a window")
            action = actions[0] if actions else None
            steps.append(
                Step(
                    index=i,
                    name=raw["name"],
                    action=action,
                    args=dict(raw.get(action) or {}) if action else {},
                    expect=dict(raw.get("expect") or {}),
                    expect_on={k: dict(v) for k, v in (raw.get("expect-on") or {}).items()},
                    requires=frozenset(raw.get("requires", [])),
                    window_seconds=(raw.get("window") or {}).get("seconds"),
                    same_window=bool(raw.get("same-window", False)),
                )
            )
        return cls(name=doc["name"], path=path, config=doc["config"], request=doc.get("request", {}), steps=steps)

    def config_yaml(self, values: dict[str, str]) -> str:
        """The gateway configuration with its ${PLACEHOLDERS} filled in."""

        def fill(node: Any) -> Any:
            if isinstance(node, dict):
                return {k: fill(v) for k, v in node.items()}
            if isinstance(node, list):
                return [fill(v) for v in node]
            if isinstance(node, str):

                def sub(m: re.Match) -> str:
                    if m.group(1) not in values:
                        raise KeyError(f"{self.path}: unknown placeholder ${{{m.group(1)}}}")
                    return values[m.group(1)]

                return PLACEHOLDER.sub(sub, node)
            return node

        return f"# Written from {self.path.name} by tests/python/scenario.py\n" + yaml.safe_dump(
            fill(self.config), sort_keys=False
        )


@dataclass
class Outcome:
    """One client request's result, whether the SDK returned or raised."""

    status: int
    headers: dict[str, str]
    body: Any  # parsed JSON (dict) or None
    content: str | None = None
    total_tokens: int | None = None

    def describe(self) -> str:
        return f"status {self.status}, body {json.dumps(self.body)[:500]}"


@dataclass
class Keys:
    consumer: str = field(repr=False)
    wrong: str = field(repr=False)
    upstream: str = field(repr=False)

    def all(self) -> list[tuple[str, str]]:
        return [("the consumer key", self.consumer), ("the wrong key", self.wrong), ("the upstream key", self.upstream)]


class Run:
    """Runs a scenario's steps, in order, against one target."""

    def __init__(self, scenario: Scenario, target: Target, keys: Keys, mock_url: str = "", run_key: str = ""):
        self.scenario = scenario
        self.run_key = run_key
        self.target = target
        self.keys = keys
        self.mock_url = mock_url
        self.window: int | None = None  # the minute bucket recorded by the last `window`

    # --- steps

    def step(self, step: Step) -> None:
        if step.window_seconds is not None:
            wait_for_window(step.window_seconds)
            self.window = minute_bucket()
        if step.action is not None:
            # `${RUN_KEY}` in a step's arguments: distinct per run (every target shares the mock).
            args = {k: v.replace("${RUN_KEY}", self.run_key) if isinstance(v, str) else v for k, v in step.args.items()}
            if "messages" in args:
                args["messages"] = [
                    {**m, "content": m["content"].replace("${RUN_KEY}", self.run_key)} if isinstance(m.get("content"), str) else m
                    for m in args["messages"]
                ]
            step = replace(step, args=args)
            getattr(self, "_" + step.action.replace("-", "_"))(step)
        if step.same_window:
            assert self.window is not None, f"step {step.name!r} is same-window but no window step came before"
            assert minute_bucket() == self.window, (
                "the minute window rolled over before this step ended, so the per-minute counters were "
                "reset and the check means nothing: the steps since the last `window` took too long"
            )

    def expect(self, step: Step) -> dict[str, Any]:
        return step.expect_on.get(self.target.name, step.expect)

    def _chat(self, step: Step) -> None:
        started = time.monotonic()
        out = self.chat(step.args)
        took_ms = (time.monotonic() - started) * 1000
        expect = self.expect(step)
        self.check(out, expect)
        if "took-at-least-ms" in expect:
            assert took_ms >= float(expect["took-at-least-ms"]), (
                f"the request took {took_ms:.0f} ms, less than the {expect['took-at-least-ms']} ms it must have waited"
            )

    def _mcp(self, step: Step) -> None:
        """An MCP session through the gateway with the official `mcp` client."""
        expect = self.expect(step)
        url = f"{self.target.base_url}{step.args['path']}"
        key = {"consumer": self.keys.consumer, "wrong": self.keys.wrong, None: None}[step.args.get("key")]
        progress: list[float] = []
        tools, text, error, is_error = anyio.run(
            mcp_session,
            url,
            step.args.get("call"),
            step.args.get("arguments") or {},
            key,
            step.args.get("mode", "auto"),
            progress if "progress" in expect else None,
        )
        if "progress" in expect:
            assert progress == [float(p) for p in expect["progress"]], (
                f"expected the progress notifications {expect['progress']}, got {progress} (result {text!r} / {error!r})"
            )
        for name in expect.get("tools", []):
            assert name in tools, f"tool {name!r} not listed: {tools}"
        for name in expect.get("absent-tools", []):
            assert name not in tools, f"tool {name!r} listed, but this consumer may not use it: {tools}"
        if "text" in expect:
            assert error is None, f"expected a result, got the error {error}"
            assert text == str(expect["text"]), f"expected {expect['text']!r}, got {text!r}"
            assert not is_error, f"expected a result, got the tool error {text!r}"
        for part in expect.get("text-contains", []):
            assert error is None, f"expected a result, got the error {error}"
            assert part in (text or ""), f"expected {part!r} in {text!r}"
        if "tool-error-starts-with" in expect:
            assert error is None and is_error, f"expected a tool error, got {text!r} / {error!r}"
            assert (text or "").startswith(expect["tool-error-starts-with"]), f"got the tool error {text!r}"
        if "error-code" in expect:
            assert error is not None, f"expected the error {expect['error-code']}, got the result {text!r}"
            assert expect["error-code"] in error, f"expected {expect['error-code']!r} in the error {error!r}"

    def _mcp_leave(self, step: Step) -> None:
        """A client that leaves during a tool call's event stream (`path`, `key`, `mode`, `tool`:
        a tool that reports progress every second and takes `seconds`, as the test server's
        `slow`); `expect: {cancelled-by: TOOL}` asks TOOL (the test server's `cancelled`) until
        the server says the call was cancelled."""
        key = {"consumer": self.keys.consumer, "wrong": self.keys.wrong}[step.args.get("key", "consumer")]
        url = f"{self.target.base_url}{step.args['path']}"
        seconds = leave_mid_call(url, key, step.args.get("mode", "legacy"), step.args["tool"])
        check = self.expect(step).get("cancelled-by")
        if check:
            wait_until_cancelled(url, key, check, seconds)

    def _http(self, step: Step) -> None:
        """A plain HTTP request (`method`, `path`, optional `key`, `headers` and `json` body)
        checked like a chat step (status, headers, body text)."""
        import httpx

        headers = {"accept": "application/json, text/event-stream", **(step.args.get("headers") or {})}
        if "key" in step.args:
            headers["authorization"] = f"Bearer {self.keys.consumer if step.args['key'] == 'consumer' else self.keys.wrong}"
        r = httpx.request(step.args.get("method", "GET"), f"{self.target.base_url}{step.args['path']}",
                          json=step.args.get("json"), headers=headers, timeout=30)
        try:
            body = r.json()
        except ValueError:
            body = r.text
        self.check(Outcome(status=r.status_code, headers={k.lower(): v for k, v in r.headers.items()}, body=body),
                   self.expect(step))

    def _metric(self, step: Step) -> None:
        # The edge apps write metrics to their log, which reaches the log file a moment later.
        deadline = time.monotonic() + 10
        while True:
            total = self.target.metric_total(step.args["name"])
            if total >= float(step.args["at-least"]) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert total >= float(step.args["at-least"]), (
            f"metric {step.args['name']} totals {total} on {self.target.name}, expected at least {step.args['at-least']}"
        )

    def _exhaust(self, step: Step) -> None:
        expect = self.expect(step)
        admitted = 0
        for _ in range(int(step.args.get("max-requests", 50))):
            out = self.chat(step.args)
            if out.status != 200:
                break
            admitted += 1
        else:
            raise AssertionError(f"no request was refused after {admitted} admitted ones")
        assert admitted >= 1, f"the first request was already refused: {out.describe()}"
        self.check(out, expect)

    def _restart(self, _step: Step) -> None:
        self.target.restart()

    def _concurrent(self, step: Step) -> None:
        count = int(step.args["count"])
        limit = int(step.args["limit"])
        barrier = threading.Barrier(count)

        def one(_: int) -> Outcome:
            barrier.wait(timeout=30)
            return self.chat(step.args)

        with ThreadPoolExecutor(max_workers=count) as pool:
            outcomes = list(pool.map(one, range(count)))
        unexpected = [o.describe() for o in outcomes if o.status not in (200, 429)]
        assert not unexpected, f"statuses other than 200 and 429: {unexpected}"
        admitted = [o for o in outcomes if o.status == 200]
        used = sum(o.total_tokens or 0 for o in admitted)
        reservation = self.reservation(step.args)
        assert admitted, "every concurrent request was refused"
        assert len(admitted) < count, f"all {count} concurrent requests were admitted (limit {limit} tokens)"
        assert used <= limit + reservation, (
            f"{len(admitted)} admitted requests used {used} tokens: more than the limit of {limit} "
            f"plus one reservation ({reservation})"
        )

    def _log_clean(self, step: Step) -> None:
        time.sleep(0.5)  # logs are written asynchronously
        log = self.target.log_text()
        assert log, f"{self.target.name} wrote no log"
        for what, secret in self.keys.all():
            assert secret not in log, f"{what} appears in the log of {self.target.name}"
        for text in step.args.get("also", []):
            assert text not in log, f"{text!r} appears in the log of {self.target.name}"

    def _upstream(self, step: Step) -> None:
        """What the mock provider received: the one recorded body that holds `marker`."""
        import httpx

        marker = step.args["marker"]
        bodies = httpx.get(f"{self.mock_url}/mock/requests", timeout=10).json()["requests"]
        mine = [
            json.dumps(r["body"], ensure_ascii=False)
            for r in bodies
            if marker in json.dumps(r["body"], ensure_ascii=False) and r["path"].endswith(step.args.get("path-suffix", ""))
        ]
        expect = self.expect(step)
        if "count" in expect:
            assert len(mine) == int(expect["count"]), f"the provider received {len(mine)} requests holding {marker!r}, not {expect['count']}"
            return
        assert mine, f"the provider received no request holding {marker!r}"
        body = mine[-1]
        for text in expect.get("contains", []):
            assert text in body, f"the provider did not receive {text!r}: {body[:600]}"
        for text in expect.get("lacks", []):
            assert text not in body, f"the provider received {text!r}: {body[:600]}"

    # --- requests

    def request(self, args: dict[str, Any]) -> dict[str, Any]:
        merged = {**self.scenario.request, **args}
        request = {
            "model": merged["model"],
            "messages": merged["messages"],
            "max_tokens": int(merged["max-tokens"]),
        }
        if "extra-body" in args:
            request["extra_body"] = args["extra-body"]
        if "extra-headers" in args:
            request["extra_headers"] = args["extra-headers"]
        return request

    def reservation(self, args: dict[str, Any]) -> int:
        """What token-limit reserves: ceil(bytes of `messages` as the SDK sends them / 3) + max_tokens."""
        req = self.request(args)
        messages = json.dumps(req["messages"], separators=(",", ":"), ensure_ascii=False)
        return math.ceil(len(messages.encode()) / 3) + req["max_tokens"]

    def chat(self, args: dict[str, Any]) -> Outcome:
        if "token" in args:  # a literal bearer token (a JWT)
            key = args["token"]
        else:
            key = {"consumer": self.keys.consumer, "wrong": self.keys.wrong, "none": "none"}[args.get("key", "consumer")]
        path = args.get("path", "").rstrip("/")
        client = openai.OpenAI(base_url=f"{self.target.base_url}{path}/v1", api_key=key, max_retries=0, timeout=60)
        request = self.request(args)
        try:
            if args.get("stream"):
                raw = client.chat.completions.with_raw_response.create(**request, stream=True)
                pieces: list[str] = []
                body = None
                try:
                    for c in raw.parse():
                        if c.choices:
                            pieces.append(c.choices[0].delta.content or "")
                except openai.APIError as e:
                    # An error event ends the stream: what came before it stays.
                    error = e.body if isinstance(e.body, dict) else {}
                    body = {"error": {"code": error.get("code"), "message": error.get("message") or str(e)}}
                headers = {k.lower(): v for k, v in raw.headers.items()}
                return Outcome(raw.status_code, headers, body, content="".join(pieces))
            raw = client.chat.completions.with_raw_response.create(**request)
        except openai.APIStatusError as e:
            try:
                body = e.response.json()
            except ValueError:
                body = {"text": e.response.text}
            return Outcome(e.status_code, {k.lower(): v for k, v in e.response.headers.items()}, body)
        except openai.APIError as e:
            # An error event inside a stream.
            return Outcome(200, {}, {"error": {"code": getattr(e, "code", None), "message": str(e)}})
        completion = raw.parse()
        return Outcome(
            raw.status_code,
            {k.lower(): v for k, v in raw.headers.items()},
            completion.model_dump(),
            content=completion.choices[0].message.content if completion.choices else None,
            total_tokens=completion.usage.total_tokens if completion.usage else None,
        )

    @staticmethod
    def check(out: Outcome, expect: dict[str, Any]) -> None:
        if "status" in expect:
            assert out.status == expect["status"], f"expected status {expect['status']}, got {out.describe()}"
        if "content" in expect:
            assert out.content == expect["content"], f"expected content {expect['content']!r}, got {out.content!r}"
        error = (out.body or {}).get("error") if isinstance(out.body, dict) else None
        if "model" in expect:
            assert isinstance(out.body, dict) and out.body.get("model") == expect["model"], (
                f"expected model {expect['model']!r}, got {out.describe()}"
            )
        if "body-text" in expect:
            text = json.dumps(out.body) if isinstance(out.body, dict) else str(out.body)
            assert expect["body-text"] in text, f"expected {expect['body-text']!r} in {out.describe()}"
        for field_name, key in (("error-code", "code"), ("error-type", "type")):
            if field_name in expect:
                assert error is not None, f"expected an OpenAI error object, got {out.describe()}"
                assert error.get(key) == expect[field_name], (
                    f"expected error {key} {expect[field_name]!r}, got {out.describe()}"
                )
        if "retry-after-at-least" in expect:
            assert "retry-after" in out.headers, f"no retry-after header: {out.headers}"
            assert int(out.headers["retry-after"]) >= int(expect["retry-after-at-least"]), out.headers
        for name, value in (expect.get("headers") or {}).items():
            assert out.headers.get(name.lower()) == str(value), (
                f"expected header {name}: {value}, got {out.headers.get(name.lower())!r}"
            )
        for name, prefix in (expect.get("header-prefixes") or {}).items():
            got = out.headers.get(name.lower()) or ""
            assert got.startswith(str(prefix)), f"expected header {name} to start with {prefix!r}, got {got!r}"
        if "error-message-contains" in expect:
            error = (out.body or {}).get("error") or {}
            assert expect["error-message-contains"] in (error.get("message") or ""), out.describe()


async def mcp_session(
    url: str,
    call: str | None,
    arguments: dict[str, Any],
    key: str | None = None,
    mode: str = "auto",
    progress: list[float] | None = None,
) -> tuple[list[str], str | None, str | None, bool]:
    """Lists the tools and calls one with the official client (with the API key `key`, in the
    protocol era `mode`: `auto`, `legacy` or a version); returns (tools, the result's text, the
    JSON-RPC error, whether the result is a tool error). With `progress`, the call asks for
    progress notifications and their values are appended to it as they arrive."""
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared.exceptions import MCPError

    server: Any = url
    if key is not None:
        http = httpx2.AsyncClient(headers={"authorization": f"Bearer {key}"}, timeout=httpx2.Timeout(30, read=60))
        server = streamable_http_client(url, http_client=http)
    async with Client(server, mode=mode) as client:
        listed = await client.list_tools()
        tools = [t.name for t in listed.tools]
        if call is None:
            return tools, None, None, False
        try:
            if progress is None:
                result = await client.call_tool(call, arguments)
            else:

                async def noted(done: float, total: float | None, message: str | None) -> None:
                    progress.append(done)

                result = await client.call_tool(call, arguments, progress_callback=noted)
        except MCPError as e:
            return tools, None, f"{e.error.message} {json.dumps(e.error.data)}", False
        text = "".join(getattr(c, "text", "") for c in result.content)
        return tools, text, None, bool(result.is_error)


def leave_mid_call(url: str, key: str, era: str, tool: str) -> int:
    """Calls `tool` (one that reports progress every second, as the test server's `slow`) for a
    random number of seconds (at least 30) over raw HTTP in the client's `era` (`legacy`: a
    session first), and leaves at its first progress notification. Returns the seconds asked,
    which name the call in the server's list of cancelled ones."""
    import secrets

    import httpx

    headers = {"accept": "application/json, text/event-stream", "authorization": f"Bearer {key}"}
    meta: dict[str, Any] = {"progressToken": "p1"}
    if era == "legacy":
        headers["mcp-protocol-version"] = "2025-06-18"
        init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
        r = httpx.post(url, json=init, headers=headers, timeout=30)
        assert r.status_code == 200, f"initialize: {r.status_code} {r.text}"
        headers["mcp-session-id"] = r.headers["mcp-session-id"]
        httpx.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers, timeout=30)
    else:
        headers.update({"mcp-protocol-version": era, "mcp-method": "tools/call", "mcp-name": tool})
        meta.update({"io.modelcontextprotocol/protocolVersion": era, "io.modelcontextprotocol/clientCapabilities": {}})
    seconds = 30 + secrets.randbelow(100_000)
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": tool, "arguments": {"seconds": seconds}, "_meta": meta}}
    with httpx.stream("POST", url, json=call, headers=headers, timeout=30) as stream:
        assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream"), (
            f"expected an event stream, got {stream.status_code}: {stream.read()!r}"
        )
        assert era == "legacy" or "mcp-session-id" not in stream.headers, stream.headers
        for line in stream.iter_lines():
            if "notifications/progress" in line:
                return seconds  # the first progress (a second in): leave
    raise AssertionError("the stream ended without a progress notification")


def wait_until_cancelled(url: str, key: str, check: str, seconds: int, timeout_s: float = 20) -> None:
    """Asks the tool `check` (the test server's `cancelled`) until it lists `slow(seconds)`."""
    deadline = time.monotonic() + timeout_s
    while True:
        _, text, error, _ = anyio.run(mcp_session, url, check, {}, key, "legacy")
        if f"slow({seconds})" in (text or ""):
            return
        assert time.monotonic() < deadline, f"the server never saw the call cancelled: {text!r} {error!r}"
        time.sleep(0.2)


# --- the per-minute window


def minute_bucket() -> int:
    return int(time.time() // 60)


def wait_for_window(seconds: float) -> None:
    """Waits until at least `seconds` remain in the current minute (UTC, as token-limit counts)."""
    remaining = 60 - time.time() % 60
    if remaining < seconds:
        time.sleep(remaining + 0.05)
