"""The edge apps run the same policy bytes as the self-hosted gateway.

`weir` embeds the policy components built in components/target (weir_policies::AUTH is that
file). These tests build the Cloudflare and Spin apps from the edge scenario's configuration
and compare hashes:

- Spin: `weir.wasm` holds each policy component as a nested component, byte for byte;
- Cloudflare: jco splits the composition into core modules (src/gen/*.wasm) that the Worker
  instantiates; each core module of each policy component is one of them, byte for byte;
- both: the plan's sha256 of each slot is the sha256 of the policy file.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import tomllib
from pathlib import Path

import pytest

import targets
from conftest import ROOT, _binary

POLICIES = {
    "auth": ROOT / "components/target/wasm32-wasip2/release/weir_policy_auth.wasm",
    "token-limit": ROOT / "components/target/wasm32-wasip2/release/weir_policy_token_limit.wasm",
}

CONFIG = """
providers:
  - name: mock
    base-url: http://127.0.0.1:9/v1
    api-key-env: MOCK_UPSTREAM_KEY
proxies:
  - name: limited
    context-path: /
    provider: mock
    policies:
      - policy: auth
        config:
          consumers: [{ id: a, key-sha256: "%s" }]
      - policy: token-limit
        config: { tokens-per-minute: 120 }
""" % ("ab" * 32)


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def leb128(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at


def sections(component: bytes):
    """(id, payload) of each top-level section of a component binary."""
    assert component[:4] == b"\0asm" and component[4:8] == b"\x0d\x00\x01\x00", "not a component"
    at = 8
    while at < len(component):
        sid = component[at]
        size, at = leb128(component, at + 1)
        yield sid, component[at : at + size]
        at += size


CORE_MODULE, COMPONENT = 1, 4


def core_modules(component: bytes) -> list[bytes]:
    """Every core module in a component, nested components included."""
    out = []
    for sid, payload in sections(component):
        if sid == CORE_MODULE:
            out.append(payload)
        elif sid == COMPONENT:
            out.extend(core_modules(payload))
    return out


def nested_components(component: bytes) -> list[bytes]:
    out = []
    for sid, payload in sections(component):
        if sid == COMPONENT:
            out.append(payload)
            out.extend(nested_components(payload))
    return out


def build(tmp_path: Path, target: str) -> Path:
    config = tmp_path / "gateway.yaml"
    config.write_text(CONFIG)
    out = tmp_path / target
    cmd = [str(_binary("WEIR_BIN", "target/debug/weir")), "--config", str(config), "build", "--target", target, "-o", str(out)]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, f"{' '.join(cmd)}:\n{result.stdout}\n{result.stderr}"
    return out


def check_plan(plan: dict) -> None:
    by_policy = {s["policy"]: s["sha256"] for s in plan["slots"]}
    for name, path in POLICIES.items():
        assert by_policy[name] == sha(path.read_bytes()), name


def test_the_spin_app_holds_the_policy_components_byte_for_byte(tmp_path):
    out = build(tmp_path, "spin")
    app = (out / "weir.wasm").read_bytes()
    nested = {sha(c) for c in nested_components(app)}
    for name, path in POLICIES.items():
        assert sha(path.read_bytes()) in nested, f"{name} is not in weir.wasm as built"
    manifest = tomllib.loads((out / "spin.toml").read_text())
    check_plan(json.loads(manifest["variables"]["weir_plan"]["default"]))


def test_the_worker_runs_the_policy_core_modules_byte_for_byte(tmp_path):
    reason = targets.skip_reason("cloudflare")
    if reason:
        pytest.skip(reason)
    out = build(tmp_path, "cloudflare")
    shipped = {sha(p.read_bytes()) for p in (out / "src" / "gen").glob("*.wasm")}
    for name, path in POLICIES.items():
        modules = core_modules(path.read_bytes())
        assert modules, f"{name} has no core module"
        for i, m in enumerate(modules):
            assert sha(m) in shipped, f"core module {i} of {name} ({len(m)} bytes) is not among the Worker's modules"
    check_plan(json.loads((out / "src" / "plan.json").read_text()))
