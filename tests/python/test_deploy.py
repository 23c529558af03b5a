"""The deployment files under deploy/ are validated here, not run: CI has no Docker engine and no
Kubernetes cluster. What is checked:

- every Kubernetes manifest against the API schemas of real Kubernetes versions, strictly
  (unknown fields fail), with `kubernetes-validate` (offline);
- the weir configuration (deploy/weir.yaml, the ConfigMap's copy) against docs/config.schema.json;
- that the pieces agree with each other and with the configuration: ports, probe paths,
  Services, selectors, the environment variables the configuration names, the Dockerfile's user
  and paths, the compose services and the nginx upstreams;
- nginx.conf with `nginx -t` (Debian's nginx; scripts/test.sh installs it);
- that a real `weir` starts with that configuration and exactly the Deployment's environment
  (a local redis-server with the Secret's password), that the probes' endpoints answer, and that
  the compose healthcheck command passes, then fails once Redis is gone.

The weir behaviour the deployments rely on (shared state in Redis, readiness while draining,
graceful shutdown) is tested with real processes in test_replicas.py.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import jsonschema
import kubernetes_validate
import pytest
import yaml

from conftest import ROOT, free_port, stop_process

DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
# The oldest Kubernetes the manifests are meant for, and the newest kubernetes-validate ships.
K8S_VERSIONS = ["1.30.0", "1.37.0"]
DRAIN_S = 30  # weir lets in-flight requests and streams finish for up to 30 s after SIGTERM
REPLICAS = ["weir-1", "weir-2"]  # the compose services running weir


# --------------------------------------------------------------------------------------------
# Loading


def manifests() -> list[tuple[str, dict]]:
    """(file name, resource) of every Kubernetes resource in deploy/kubernetes/."""
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                out.append((path.name, doc))
    return out


def resource(kind: str, name: str) -> dict:
    found = [r for _, r in manifests() if r["kind"] == kind and r["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name} in deploy/kubernetes, found {len(found)}"
    return found[0]


def weir_yaml() -> dict:
    return yaml.safe_load((DEPLOY / "weir.yaml").read_text())


def configmap_config() -> dict:
    return yaml.safe_load(resource("ConfigMap", "weir-config")["data"]["weir.yaml"])


def port_of(address: str) -> int:
    """The port of a listen address such as `0.0.0.0:8080`."""
    return int(address.rsplit(":", 1)[1])


def env_vars_named(config: dict) -> set[str]:
    """Every environment variable the configuration names (provider keys, AWS credentials, the
    Redis password)."""
    names = set()
    for p in config.get("providers", []):
        if p.get("api-key-env"):
            names.add(p["api-key-env"])
        for k, v in (p.get("aws") or {}).items():
            if k.endswith("-env") and v:
                names.add(v)
    if config.get("kv", {}).get("password-env"):
        names.add(config["kv"]["password-env"])
    return names


def needed_env(config: dict) -> set[str]:
    """What the process needs in its environment: the variables the configuration names and,
    with a controller in production mode, the admin token."""
    names = env_vars_named(config)
    if (config.get("controller") or {}).get("listen"):
        names.add("WEIR_ADMIN_TOKEN")
    return names


def dockerfile() -> dict:
    """The runtime stage's USER, ENV, ENTRYPOINT and CMD, and every COPY of the build."""
    text = (DEPLOY / "Dockerfile").read_text()
    lines = re.sub(r"\\\n", " ", text).splitlines()
    stages: list[list[str]] = []
    for line in lines:
        line = line.strip()
        if line.startswith("FROM "):
            stages.append([])
        if stages and line and not line.startswith("#"):
            stages[-1].append(line)
    final = stages[-1]
    env = {}
    for line in final:
        if line.startswith("ENV "):
            env.update(dict(kv.split("=", 1) for kv in line[4:].split()))
    one = lambda word: [l[len(word) + 1:] for l in final if l.startswith(word + " ")][-1]  # noqa: E731
    return {
        "stages": len(stages),
        "user": one("USER"),
        "env": env,
        "entrypoint": json.loads(one("ENTRYPOINT")),
        "cmd": json.loads(one("CMD")),
        "copies": [l for s in stages for l in s if l.startswith("COPY ")],
    }


def weir_container() -> dict:
    (c,) = [c for c in resource("Deployment", "weir")["spec"]["template"]["spec"]["containers"] if c["name"] == "weir"]
    return c


def container_port(container: dict, port: int | str) -> int:
    """A probe's or Service's target port (a name or a number) as a number."""
    if isinstance(port, int):
        return port
    found = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    assert found, f"container {container['name']} has no port named {port}"
    return found[0]


def secret_env(container: dict, secret_name: str) -> dict[str, str]:
    """Variable → key in the Secret `secret_name`, for every variable taken from it."""
    out = {}
    for e in container.get("env", []):
        ref = (e.get("valueFrom") or {}).get("secretKeyRef")
        if ref and ref["name"] == secret_name:
            out[e["name"]] = ref["key"]
    return out


# --------------------------------------------------------------------------------------------
# Kubernetes


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_kubernetes_manifests_validate_strictly(version):
    resources = manifests()
    assert len(resources) == 10, [f"{f}: {r['kind']}" for f, r in resources]
    for file, r in resources:
        try:
            kubernetes_validate.validate(r, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            pytest.fail(f"{file}: {r['kind']} {r['metadata']['name']} is invalid for Kubernetes {version}: {path}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            pytest.fail(f"{file}: no schema for {r['apiVersion']} {r['kind']} in Kubernetes {version}: {e.message}")


def test_kustomization_lists_every_manifest_in_one_namespace():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(kustomization["resources"]) == files
    (namespace,) = [r["metadata"]["name"] for _, r in manifests() if r["kind"] == "Namespace"]
    assert kustomization["namespace"] == namespace
    for file, r in manifests():
        if r["kind"] != "Namespace":
            assert r["metadata"].get("namespace") == namespace, f"{file}: {r['kind']} is not in namespace {namespace}"


def test_the_configuration_validates_against_the_schema():
    schema = json.loads((ROOT / "docs/config.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    for origin, config in [("deploy/weir.yaml", weir_yaml()), ("kubernetes/configmap.yaml", configmap_config())]:
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(config)]
        assert not errors, f"{origin}: {errors}"
        assert config["kv"]["backend"] == "redis", f"{origin}: replicas share state only with kv.backend redis"
        assert config["controller"]["listen"], f"{origin}: the shared configuration needs the controller"
    assert configmap_config() == weir_yaml(), "the ConfigMap's weir.yaml differs from deploy/weir.yaml"


def test_deployment_probes_ports_and_services_match_the_configuration():
    config = configmap_config()
    deployment = resource("Deployment", "weir")
    pod = deployment["spec"]["template"]
    c = weir_container()
    admin = port_of(config["admin-listen"])
    # Probes: liveness (and startup) on /health, readiness on /ready, of the admin listener.
    for probe, path in [("startupProbe", "/health"), ("livenessProbe", "/health"), ("readinessProbe", "/ready")]:
        get = c[probe]["httpGet"]
        assert get["path"] == path, f"{probe} path"
        assert container_port(c, get["port"]) == admin, f"{probe} port is not admin-listen's {admin}"
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(admin)
    assert pod["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"
    # The data plane Service reaches `listen`, the controller Service `controller.listen`.
    for service, address in [("weir", config["listen"]), ("weir-controller", config["controller"]["listen"])]:
        svc = resource("Service", service)
        (port,) = svc["spec"]["ports"]
        assert container_port(c, port["targetPort"]) == port_of(address), f"Service {service} targets the wrong port"
        assert svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items(), f"Service {service} selects no weir pod"
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    # Draining takes up to DRAIN_S: Kubernetes must not kill the pod before.
    assert pod["spec"]["terminationGracePeriodSeconds"] > DRAIN_S
    assert deployment["spec"]["replicas"] >= 2


def test_deployment_environment_volumes_and_security():
    config = configmap_config()
    pod = resource("Deployment", "weir")["spec"]["template"]["spec"]
    c = weir_container()
    env = {e["name"]: e.get("value") for e in c["env"]}
    # Every variable the configuration names comes from the Secret, which has that key.
    secret = resource("Secret", "weir-secrets")
    from_secret = secret_env(c, "weir-secrets")
    missing = needed_env(config) - from_secret.keys()
    assert not missing, f"the Deployment does not set {sorted(missing)} from the Secret"
    for var, key in from_secret.items():
        assert key in secret["stringData"], f"{var}: the Secret has no key {key}"
    assert env["WEIR_PRODUCTION"] == "true"
    # The configuration file is the ConfigMap's, where WEIR_CONFIG says.
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    config_dir, config_file = env["WEIR_CONFIG"].rsplit("/", 1)
    (config_volume,) = [n for n, m in mounts.items() if m["mountPath"] == config_dir]
    assert volumes[config_volume]["configMap"]["name"] == "weir-config"
    assert config_file in resource("ConfigMap", "weir-config")["data"]
    # The data directory is writable (an emptyDir) although the root filesystem is not.
    data_dir = env.get("WEIR_DATA_DIR") or dockerfile()["env"]["WEIR_DATA_DIR"]
    (data_volume,) = [n for n, m in mounts.items() if m["mountPath"] == data_dir]
    assert "emptyDir" in volumes[data_volume]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert str(pod["securityContext"]["runAsUser"]) == dockerfile()["user"].split(":")[0]
    # The HorizontalPodAutoscaler's CPU target is relative to the request.
    assert c["resources"]["requests"]["cpu"] and c["resources"]["limits"]["memory"]


def test_autoscaler_and_disruption_budget_cover_the_deployment():
    pod_labels = resource("Deployment", "weir")["spec"]["template"]["metadata"]["labels"]
    hpa = resource("HorizontalPodAutoscaler", "weir")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "weir"}
    assert hpa["minReplicas"] >= 2 and hpa["maxReplicas"] > hpa["minReplicas"]
    assert [m["resource"]["name"] for m in hpa["metrics"] if m["type"] == "Resource"] == ["cpu"]
    pdb = resource("PodDisruptionBudget", "weir")["spec"]
    assert pdb["minAvailable"] == 1
    assert pdb["selector"]["matchLabels"].items() <= pod_labels.items()


def test_redis_is_where_the_configuration_points_with_the_secret_password():
    config = configmap_config()
    url = urlsplit(config["kv"]["url"])
    svc = resource("Service", url.hostname)
    (port,) = svc["spec"]["ports"]
    assert port["port"] == url.port
    redis = resource("StatefulSet", url.hostname)
    pod = redis["spec"]["template"]
    (c,) = pod["spec"]["containers"]
    assert container_port(c, port["targetPort"]) == 6379
    assert svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert c["image"].startswith("redis:7")
    args = c["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert redis["spec"]["volumeClaimTemplates"], "Redis keeps its data on a volume"
    # Redis requires the password weir sends: the same key of the same Secret.
    password_var = args[args.index("--requirepass") + 1]
    assert re.fullmatch(r"\$\((\w+)\)", password_var), password_var
    redis_key = secret_env(c, "weir-secrets")[password_var[2:-1]]
    weir_key = secret_env(weir_container(), "weir-secrets")[config["kv"]["password-env"]]
    assert redis_key == weir_key


# --------------------------------------------------------------------------------------------
# Docker: the image, compose, nginx


def test_dockerfile_builds_and_runs_weir_as_the_deployments_expect():
    d = dockerfile()
    assert d["stages"] == 2
    assert d["entrypoint"] == ["/usr/local/bin/weir"] and d["cmd"] == ["serve"]
    assert re.fullmatch(r"\d+(:\d+)?", d["user"]), "a numeric USER (runAsNonRoot can only check those)"
    assert d["user"] != "0" and not d["user"].startswith("0:")
    # WEIR_LISTEN overrides the configuration's `listen`: the same port.
    assert port_of(d["env"]["WEIR_LISTEN"]) == port_of(weir_yaml()["listen"])
    assert "COPY rust-toolchain.toml ./" in d["copies"] and "COPY . ." in d["copies"]
    # The build context leaves out the build outputs but none of what the build reads.
    ignored = [l.strip() for l in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines() if l.strip() and not l.startswith("#")]
    assert "target" in ignored and ".git" in ignored
    needed = ["Cargo.toml", "Cargo.lock", "rust-toolchain.toml", ".cargo", "core", "host", "components", "wit", "apps", "tests", "bench"]
    for path in needed:
        assert not any(fnmatch.fnmatch(path, pattern) for pattern in ignored), f"{path} is excluded from the build context"


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def test_compose_runs_two_replicas_redis_and_a_load_balancer():
    c = compose()
    services = c["services"]
    assert set(services) == {*REPLICAS, "redis", "lb"}
    config = weir_yaml()
    d = dockerfile()
    admin = port_of(config["admin-listen"])
    for name in REPLICAS:
        s = services[name]
        assert s["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}, name
        assert s["image"] == services[REPLICAS[0]]["image"], f"{name}: both replicas run one image"
        env = s["environment"]
        missing = needed_env(config) - env.keys()
        assert not missing, f"{name} does not set {sorted(missing)}"
        assert env["WEIR_PRODUCTION"] == "true"
        assert f"./weir.yaml:{env['WEIR_CONFIG']}:ro" in s["volumes"], f"{name}: weir.yaml is not mounted at WEIR_CONFIG"
        data = [v for v in s["volumes"] if v.endswith(":" + d["env"]["WEIR_DATA_DIR"])]
        assert len(data) == 1, f"{name}: no volume on the data directory"
        assert s["depends_on"]["redis"]["condition"] == "service_healthy"
        # The healthcheck asks the admin listener's /ready.
        check = " ".join(s["healthcheck"]["test"])
        assert f"/dev/tcp/127.0.0.1/{admin}" in check and "GET /ready " in check, check
        # Docker's default 10 s would kill streams that weir lets finish.
        grace = re.fullmatch(r"(\d+)s", s["stop_grace_period"])
        assert grace and int(grace[1]) > DRAIN_S, s["stop_grace_period"]
    data_volumes = [v.split(":")[0] for n in REPLICAS for v in services[n]["volumes"] if not v.startswith("./")]
    assert len(set(data_volumes)) == len(REPLICAS), f"each replica has its own data volume: {data_volumes}"
    # Redis with persistence, requiring the password weir sends.
    redis = services["redis"]
    assert redis["image"] == "redis:7"
    cmd = redis["command"]
    assert cmd[0] == "redis-server" and cmd[cmd.index("--appendonly") + 1] == "yes"
    password = services[REPLICAS[0]]["environment"][config["kv"]["password-env"]]
    assert cmd[cmd.index("--requirepass") + 1] == password
    assert urlsplit(config["kv"]["url"]).hostname == "redis"
    assert any(v.endswith(":/data") for v in redis["volumes"])
    assert "healthcheck" in redis
    # nginx with this directory's nginx.conf, after both replicas are healthy.
    lb = services["lb"]
    assert lb["image"] == "nginx:1.27"
    assert "./nginx.conf:/etc/nginx/nginx.conf:ro" in lb["volumes"]
    assert {n: v["condition"] for n, v in lb["depends_on"].items()} == {n: "service_healthy" for n in REPLICAS}
    assert "8080:8080" in lb["ports"]


def nginx_upstreams() -> dict[str, list[str]]:
    text = (DEPLOY / "nginx.conf").read_text()
    return {
        name: re.findall(r"^\s*server\s+(\S+?)[\s;]", body, re.M)
        for name, body in re.findall(r"upstream\s+(\w+)\s*\{(.*?)\}", text, re.S)
    }


def test_nginx_balances_both_replicas_and_streams_unbuffered():
    config = weir_yaml()
    upstreams = nginx_upstreams()
    assert upstreams["weir"] == [f"{r}:{port_of(config['listen'])}" for r in REPLICAS]
    assert upstreams["weir_controller"] == [f"{r}:{port_of(config['controller']['listen'])}" for r in REPLICAS]
    text = (DEPLOY / "nginx.conf").read_text()
    (data_plane,) = re.findall(r"location / \{[^}]*proxy_pass http://weir;[^}]*\}", text)
    assert re.search(r"^\s*proxy_buffering off;", data_plane, re.M), "SSE needs proxy_buffering off"
    timeout = re.search(r"^\s*proxy_read_timeout (\d+)s;", data_plane, re.M)
    assert timeout and int(timeout[1]) >= 300, "streams need a long proxy_read_timeout"
    # The listening ports are the ones compose publishes.
    listens = {int(p) for p in re.findall(r"^\s*listen (\d+);", text, re.M)}
    published = {int(p.rsplit(":", 1)[1]) for p in compose()["services"]["lb"]["ports"]}
    assert listens == published


def test_nginx_conf_syntax(tmp_path):
    nginx = shutil.which("nginx") or next((p for p in ["/usr/sbin/nginx"] if os.access(p, os.X_OK)), None)
    if nginx is None:
        pytest.skip("no nginx binary (apt-get install nginx; scripts/test.sh does): nginx.conf's syntax is not checked")
    # nginx resolves upstream names when it loads the file: map the replicas to loopback.
    text = (DEPLOY / "nginx.conf").read_text()
    for replica in REPLICAS:
        text = re.sub(rf"\bserver {replica}:", "server 127.0.0.1:", text)
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    r = subprocess.run(
        [nginx, "-t", "-q", "-e", "stderr", "-p", str(tmp_path), "-c", str(conf), "-g", f"pid {tmp_path}/nginx.pid;"],
        capture_output=True, text=True, timeout=30,
    )
    assert r.returncode == 0, r.stderr


# --------------------------------------------------------------------------------------------
# The configuration in a real weir, with the Deployment's environment


def test_weir_serves_the_deployment_configuration_with_the_deployments_environment(tmp_path):
    binary = Path(os.environ.get("WEIR_BIN", ROOT / "target/debug/weir"))
    if not os.access(binary, os.X_OK):
        pytest.skip(f"no weir binary at {binary} (run.sh builds it)")
    redis_server = shutil.which("redis-server")
    assert redis_server, "redis-server is needed: apt-get install redis-server (scripts/test.sh does)"
    secret = resource("Secret", "weir-secrets")["stringData"]
    c = weir_container()

    # Redis with the password the Secret gives it (as the StatefulSet does).
    redis_port = free_port()
    redis_password = secret[secret_env(c, "weir-secrets")[configmap_config()["kv"]["password-env"]]]
    redis = subprocess.Popen(
        [redis_server, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--requirepass", redis_password],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, cwd=tmp_path,
    )
    weir = None
    try:
        # The ConfigMap's configuration; only the addresses move to free loopback ports.
        config = configmap_config()
        ports = {"listen": free_port(), "admin": free_port(), "controller": free_port()}
        config["listen"] = f"127.0.0.1:{ports['listen']}"
        config["admin-listen"] = f"127.0.0.1:{ports['admin']}"
        config["controller"]["listen"] = f"127.0.0.1:{ports['controller']}"
        config["kv"]["url"] = f"redis://127.0.0.1:{redis_port}/0"
        config_path = tmp_path / "weir.yaml"
        config_path.write_text(yaml.safe_dump(config))
        # Exactly the Deployment's environment (Secret references resolved from the Secret).
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        for e in c["env"]:
            ref = (e.get("valueFrom") or {}).get("secretKeyRef")
            env[e["name"]] = secret[ref["key"]] if ref else e["value"]
        env["WEIR_CONFIG"] = str(config_path)
        env["WEIR_DATA_DIR"] = str(tmp_path / "data")
        log_path = tmp_path / "weir.log"
        with open(log_path, "wb") as log:
            weir = subprocess.Popen([str(binary), "serve"], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        admin = f"http://127.0.0.1:{ports['admin']}"

        def ready_status() -> int | None:
            try:
                return httpx.get(f"{admin}/ready", timeout=2).status_code
            except httpx.HTTPError:
                return None

        deadline = time.monotonic() + 180  # the first start compiles the policy components
        while ready_status() != 200:
            assert weir.poll() is None, f"weir exited with {weir.returncode}:\n{log_path.read_text(errors='replace')}"
            assert time.monotonic() < deadline, f"weir never became ready:\n{log_path.read_text(errors='replace')}"
            time.sleep(0.2)
        # The probes' endpoints (the Deployment's paths) and the compose healthcheck command.
        for probe in ["startupProbe", "livenessProbe", "readinessProbe"]:
            assert httpx.get(admin + c[probe]["httpGet"]["path"], timeout=5).status_code == 200, probe
        healthcheck = compose()["services"][REPLICAS[0]]["healthcheck"]["test"]
        assert healthcheck[:2] == ["CMD", "bash"]
        command = [a.replace(f"/127.0.0.1/{port_of(weir_yaml()['admin-listen'])}", f"/127.0.0.1/{ports['admin']}") for a in healthcheck[1:]]
        assert subprocess.run(command, timeout=10).returncode == 0, "the compose healthcheck fails on a ready replica"
        # The controller takes the Secret's admin token, and nothing else (production mode).
        api = f"http://127.0.0.1:{ports['controller']}/api/v1/llm-proxies"
        assert httpx.get(api, timeout=5).status_code == 401
        assert httpx.get(api, auth=("admin", "admin"), timeout=5).status_code == 401
        r = httpx.get(api, headers={"authorization": f"Bearer {secret['WEIR_ADMIN_TOKEN']}"}, timeout=5)
        assert r.status_code == 200, r.text
        assert "assistant" in r.text
        # The example proxy refuses callers without a key (its auth policy runs).
        r = httpx.post(f"http://127.0.0.1:{ports['listen']}/assistant/v1/chat/completions",
                       json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}, timeout=10)
        assert r.status_code == 401, r.text
        # Redis gone: /ready answers 503, so the healthcheck (and the readiness probe) fail.
        redis.send_signal(signal.SIGKILL)
        redis.wait(timeout=10)
        deadline = time.monotonic() + 15
        while ready_status() != 503:
            assert time.monotonic() < deadline, "/ready still answers 200 without Redis"
            time.sleep(0.2)
        assert subprocess.run(command, timeout=10).returncode != 0, "the compose healthcheck passes without Redis"
    finally:
        if weir is not None:
            stop_process(weir, timeout=40)
        if redis.poll() is None:
            redis.kill()
            redis.wait()
