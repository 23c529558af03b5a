"""Every scenario of tests/scenarios/ against every deployment target (targets.py): one test per
(scenario, target, step), run in order, e.g. `test_scenario[edge-cloudflare-05-the-count-survives-the-restart]`.

A target starts at its first step and stops when the next target starts (or at the end). A step
needing a capability the target lacks is skipped with the reason; after a failed step, the
rest of that scenario on that target is skipped. The Cloudflare target is skipped only when
apps/cloudflare/node_modules is missing; a failing `weir build` fails it.

    bash tests/python/run.sh -k scenario            # every target
    bash tests/python/run.sh -k 'scenario and weir' # the self-hosted binary only
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

import pytest

import targets
from conftest import ROOT, MockUpstream, free_port, sha256_hex
from scenario import Keys, Run, Scenario

SCENARIOS = [Scenario.load(p) for p in sorted((ROOT / "tests" / "scenarios").glob("*.yaml"))]

CASES = [
    pytest.param(sc, target, step, id=f"{sc.name}-{target}-{step.index:02d}-{step.slug}")
    for sc in SCENARIOS
    for target in targets.TARGETS
    for step in sc.steps
]


@dataclass
class Deployment:
    run: Run | None = None
    failed: str | None = None  # why the remaining steps are skipped


@dataclass
class Deployments:
    """The scenario runs of this module; at most one target is running at a time."""

    tmp_path_factory: pytest.TempPathFactory
    mock: MockUpstream
    mcp_url: str
    mcp_auth_url: str
    rest_url: str
    everything_url: str
    modern_url: str
    upstream_key: str = field(repr=False)
    runs: dict[tuple[str, str], Deployment] = field(default_factory=dict)
    running: tuple[str, str] | None = None

    def get(self, scenario: Scenario, target: str) -> Deployment:
        key = (scenario.name, target)
        dep = self.runs.setdefault(key, Deployment())
        if dep.run is not None or dep.failed is not None:
            return dep
        if self.running is not None and self.running != key:
            self.runs[self.running].run.target.stop()
            self.running = None
        keys = Keys(
            consumer="sk-scenario-" + secrets.token_hex(16),
            wrong="sk-wrong-" + secrets.token_hex(16),
            upstream=self.upstream_key,
        )
        run_key = secrets.token_hex(6)
        config = scenario.config_yaml(
            {
                "MOCK_URL": self.mock.url,
                # For policies that call the mock themselves (a guardrail's moderation endpoint).
                "UPSTREAM_KEY": keys.upstream,
                "CONSUMER_KEY_SHA256": sha256_hex(keys.consumer),
                "MCP_URL": self.mcp_url,
                # The same server, requiring the upstream key (MOCK_UPSTREAM_KEY) as its token.
                "MCP_AUTH_URL": self.mcp_auth_url,
                # A REST API with an OpenAPI document (tests/python/rest_api.py), requiring
                # `x-api-key: <the upstream key>`.
                "REST_URL": self.rest_url,
                # @modelcontextprotocol/server-everything: initialize era only, with sessions.
                "EVERYTHING_URL": self.everything_url,
                # tests/python/mcp_server.py speaking only the stateless revision (2026-07-28).
                "MCP_MODERN_URL": self.modern_url,
                "TEST_POLICY_WASM": str(TEST_POLICY_WASM),
                "ADMIN_LISTEN": f"127.0.0.1:{free_port()}",
                # Distinct per run: the mock counts `first-N` faults per spec, and every target
                # shares the mock.
                "RUN_KEY": run_key,
            }
        )
        workdir = self.tmp_path_factory.mktemp(f"{scenario.name}-{target}")
        error = None
        try:
            instance = targets.make(target, workdir, config, keys.upstream)
            instance.start()
        except pytest.skip.Exception as e:
            dep.failed = f"skipped: {e.msg}"
            raise
        except Exception as e:  # reported below, outside the handler (no chained traceback)
            error = e
        if error is not None:
            dep.failed = f"{target} did not start"
            pytest.fail(f"{target} did not start: {error}", pytrace=False)
        dep.run = Run(scenario, instance, keys, self.mock.url, run_key)
        self.running = key
        return dep

    def stop_all(self) -> None:
        for dep in self.runs.values():
            if dep.run is not None:
                dep.run.target.stop()


# The test policy component as built for the host (custom policy files in scenarios).
TEST_POLICY_WASM = ROOT / "components" / "target" / "wasm32-wasip2" / "release" / "weir_policy_test_policy.wasm"


@pytest.fixture(scope="module")
def deployments(tmp_path_factory, mock_upstream, mcp_server, mcp_server_with_token, rest_api, everything_server,
                mcp_server_modern_only, keys):
    d = Deployments(tmp_path_factory, mock_upstream, mcp_server, mcp_server_with_token, rest_api, everything_server,
                    mcp_server_modern_only, keys.upstream)
    yield d
    d.stop_all()


@pytest.mark.parametrize(("scenario", "target", "step"), CASES)
def test_scenario(request, deployments: Deployments, scenario: Scenario, target: str, step):
    dep = deployments.runs.get((scenario.name, target))
    if dep is not None and dep.failed is not None:
        pytest.skip(dep.failed if dep.failed.startswith("skipped") else f"an earlier step failed: {dep.failed}")
    dep = deployments.get(scenario, target)
    run = dep.run
    missing = step.requires - run.target.capabilities
    if missing:
        pytest.skip(f"{target} lacks {', '.join(sorted(missing))}")
    log_offset = len(run.target.log_text())
    try:
        run.step(step)
    except BaseException:
        dep.failed = step.name
        request.node.add_report_section("call", f"{target} log (during this step)", run.target.log_text()[log_offset:][-20000:])
        raise
