"""The Cloudflare Worker that `weir build --target cloudflare` makes with every built-in policy
stays under Cloudflare's limit for a Worker's compressed size (3 MB on the free plan, measured
after gzip). The sum of each module's gzip size is an upper bound of the upload's: wrangler
compresses the whole upload at once.
"""

from __future__ import annotations

import gzip
import subprocess
from pathlib import Path

from conftest import ROOT, _binary

LIMIT_BYTES = 3 * 1000 * 1000
CONSUMER = "0" * 64
CONFIG = f"""
providers:
  - {{ name: mock, base-url: "http://127.0.0.1:9/v1", api-key-env: MOCK_UPSTREAM_KEY }}
proxies:
  - name: everything
    context-path: /
    provider: mock
    policies:
      - {{ policy: auth, config: {{ consumers: [{{ id: c, key-sha256: "{CONSUMER}" }}] }} }}
      - {{ policy: pii, config: {{ entities: [email, phone] }} }}
      - {{ policy: guardrail, config: {{ rules: [{{ id: injection, kind: injection }}] }} }}
      - {{ policy: prompt, config: {{ prepend: [{{ role: system, content: hello }}] }} }}
      - {{ policy: cache, config: {{ exact: {{ ttl-s: 60 }} }} }}
      - policy: router
        config: {{ routes: [{{ strategy: failover, targets: [{{ provider: mock }}] }}] }}
      - {{ policy: token-limit, config: {{ requests-per-minute: 100 }} }}
mcp-proxies:
  - name: tools
    context-path: /tools
    upstream: {{ server: {{ url: "http://127.0.0.1:9/mcp" }} }}
    policies:
      - {{ policy: auth, config: {{ consumers: [{{ id: c, key-sha256: "{CONSUMER}" }}] }} }}
      - policy: mcp-guard
  - name: rest
    context-path: /rest
    upstream:
      openapi:
        base-url: "http://127.0.0.1:9"
        endpoints:
          - {{ name: add, method: POST, url: /add, input-schema: {{ type: object }} }}
"""


def test_the_worker_with_every_builtin_policy_fits_cloudflares_limit(tmp_path: Path):
    config = tmp_path / "gateway.yaml"
    config.write_text(CONFIG)
    out = tmp_path / "app"
    cmd = [str(_binary("WEIR_BIN", "target/debug/weir")), "build", "--target", "cloudflare",
           "--config", str(config), "-o", str(out)]
    built = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    assert built.returncode == 0, f"{' '.join(cmd)}:\n{built.stdout}\n{built.stderr}"
    modules = [p for p in (out / "src").rglob("*") if p.is_file()]
    names = {p.name for p in modules}
    assert any(n.endswith(".wasm") for n in names) and "worker.js" in names, sorted(names)
    plan = (out / "src" / "plan.json").read_text()
    for policy in ("auth", "pii", "guardrail", "prompt", "cache", "router", "token-limit", "mcp-guard", "mcp-translator"):
        assert f'"{policy}"' in plan or f"/{policy}" in plan, f"{policy} is not in the Worker's plan"
    compressed = sum(len(gzip.compress(p.read_bytes(), compresslevel=9)) for p in modules)
    raw = sum(p.stat().st_size for p in modules)
    print(f"Worker modules: {raw} bytes, {compressed} bytes gzip (limit {LIMIT_BYTES})")
    assert compressed < LIMIT_BYTES, f"the Worker is {compressed} bytes after gzip, over Cloudflare's {LIMIT_BYTES}"
