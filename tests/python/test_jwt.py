"""JWT bearer tokens in the `auth` component, through a real `weir` with the official `openai` SDK.

Tokens are signed here with PyJWT/cryptography (RS256, ES256, EdDSA); a small JWKS server plays
the identity provider (its key set can rotate; it counts fetches). Every refusal must name the
failing check and never contain the token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import jwt as pyjwt
import openai
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from conftest import free_port, start_weir, stop_process

ISSUER = "https://idp.test/"
AUDIENCE = "weir"
MESSAGES = [{"role": "user", "content": "hi"}]


def jwk(public, kid: str) -> dict:
    """The JWK of a public key (PyJWT knows the formats)."""
    if isinstance(public, rsa.RSAPublicKey):
        d = json.loads(pyjwt.algorithms.RSAAlgorithm.to_jwk(public))
        d["alg"] = "RS256"
    elif isinstance(public, ec.EllipticCurvePublicKey):
        d = json.loads(pyjwt.algorithms.ECAlgorithm.to_jwk(public))
    else:
        d = json.loads(pyjwt.algorithms.OKPAlgorithm.to_jwk(public))
    d["kid"] = kid
    d["use"] = "sig"
    return d


class Idp:
    """Signing keys and a JWKS endpoint whose key set can change."""

    def __init__(self):
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.rsa_next = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.ed = ed25519.Ed25519PrivateKey.generate()
        self.keys = [jwk(self.rsa.public_key(), "rsa-1")]
        self.fetches = 0
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                idp.fetches += 1
                body = json.dumps({"keys": idp.keys}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"

    def token(self, key=None, alg="RS256", kid="rsa-1", **claims) -> str:
        now = int(time.time())
        body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 300}
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        return pyjwt.encode(body, key or self.rsa, algorithm=alg, headers={"kid": kid})


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, mock_upstream, keys):
    idp = Idp()
    inline = {"keys": [jwk(idp.ec.public_key(), "ec-1"), jwk(idp.ed.public_key(), "ed-1")]}
    base = tmp_path_factory.mktemp("jwt")
    port, admin = free_port(), free_port()
    closed = free_port()
    config = base / "weir.yaml"
    config.write_text(
        f"""
listen: 127.0.0.1:{port}
admin-listen: 127.0.0.1:{admin}
providers:
  - name: mock
    base-url: {mock_upstream.url}/v1
    api-key-env: MOCK_UPSTREAM_KEY
proxies:
  - name: fetched
    context-path: /fetched
    provider: mock
    policies:
      - policy: auth
        allow-hosts: [127.0.0.1]
        config:
          jwt: {{ jwks-url: "{idp.url}", issuer: "{ISSUER}", audience: {AUDIENCE}, leeway-s: 5,
                 jwks-refetch-interval-s: 1 }}
  - name: inline
    context-path: /inline
    provider: mock
    policies:
      - policy: auth
        config:
          jwt: {{ jwks: {json.dumps(inline)}, issuer: "{ISSUER}", audience: {AUDIENCE}, consumer-claim: email }}
  - name: unreachable
    context-path: /unreachable
    provider: mock
    policies:
      - policy: auth
        allow-hosts: [127.0.0.1]
        config:
          jwt: {{ jwks-url: "http://127.0.0.1:{closed}/jwks.json" }}
"""
    )
    proc, log_path = start_weir(config, base, port, keys.upstream)
    try:
        yield {"port": port, "admin": admin, "idp": idp, "log": log_path}
    finally:
        stop_process(proc)
        idp.server.shutdown()


def call(gateway, path: str, token: str):
    client = openai.OpenAI(
        base_url=f"http://127.0.0.1:{gateway['port']}/{path}/v1", api_key=token, max_retries=0, timeout=30
    )
    try:
        client.chat.completions.create(model="mock-gpt", messages=MESSAGES, max_tokens=2)
        return 200, None
    except openai.APIStatusError as e:
        text = e.response.text
        signature = token.split(".")[2]
        assert token not in text and (not signature or signature not in text), "a refusal echoed the token"
        return e.status_code, e.body


def refused(gateway, path: str, token: str, words: str, status: int = 401) -> dict:
    got, body = call(gateway, path, token)
    assert got == status, (got, body)
    assert words in body["message"], body
    return body


def test_valid_tokens_of_each_algorithm(gateway):
    idp = gateway["idp"]
    assert call(gateway, "fetched", idp.token())[0] == 200
    assert call(gateway, "inline", idp.token(idp.ec, "ES256", "ec-1", email="bob@example.com"))[0] == 200
    assert call(gateway, "inline", idp.token(idp.ed, "EdDSA", "ed-1", email="carol@example.com"))[0] == 200
    # The consumer comes from the chosen claim.
    consumers = {c["consumer"] for c in httpx.get(f"http://127.0.0.1:{gateway['admin']}/usage").json()["consumers"]}
    assert {"alice", "bob@example.com", "carol@example.com"} <= consumers, consumers


def test_claims_are_checked_with_the_leeway(gateway):
    idp, now = gateway["idp"], int(time.time())
    body = refused(gateway, "fetched", idp.token(exp=now - 60), "expired (exp)")
    assert body["code"] == "invalid_token"
    # Within the 5 s leeway: still accepted.
    assert call(gateway, "fetched", idp.token(exp=now - 2))[0] == 200
    refused(gateway, "fetched", idp.token(nbf=now + 120), "not valid yet (nbf)")
    refused(gateway, "fetched", idp.token(aud="someone-else"), "wrong audience")
    refused(gateway, "fetched", idp.token(iss="https://evil.test/"), "wrong issuer")
    refused(gateway, "fetched", idp.token(exp=None), "no `exp` claim")
    refused(gateway, "inline", idp.token(idp.ec, "ES256", "ec-1"), "no `email` claim")


def test_a_wrong_signature_is_refused(gateway):
    idp = gateway["idp"]
    forged = idp.token(key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
    refused(gateway, "fetched", forged, "signature does not verify")
    # The right key of the wrong type for the header's algorithm.
    refused(gateway, "inline", idp.token(idp.ec, "ES256", "ed-1", email="x"), "signature does not verify")


def test_alg_none_and_hs_rs_confusion_are_refused(gateway):
    idp, now = gateway["idp"], int(time.time())
    claims = b64(json.dumps({"iss": ISSUER, "aud": AUDIENCE, "sub": "mallory", "exp": now + 300}).encode())
    none = f"{b64(json.dumps({'alg': 'none', 'kid': 'rsa-1'}).encode())}.{claims}."
    refused(gateway, "fetched", none, "algorithm `none` is not accepted")
    # HS256 "signed" with the RSA public key, which anyone can download from the JWKS.
    pem = idp.rsa.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    signing_input = f"{b64(json.dumps({'alg': 'HS256', 'kid': 'rsa-1'}).encode())}.{claims}"
    forged = f"{signing_input}.{b64(hmac.new(pem, signing_input.encode(), hashlib.sha256).digest())}"
    refused(gateway, "fetched", forged, "algorithm `HS256` is not accepted")


def test_an_unknown_kid_fetches_the_rotated_key_set(gateway):
    idp = gateway["idp"]
    rotated = idp.token(idp.rsa_next, kid="rsa-2")
    refused(gateway, "fetched", rotated, "no key with kid `rsa-2`")
    fetches = idp.fetches
    idp.keys = [jwk(idp.rsa.public_key(), "rsa-1"), jwk(idp.rsa_next.public_key(), "rsa-2")]
    # Fetched again at most once a second (jwks-refetch-interval-s: 1).
    deadline = time.monotonic() + 5
    while (status := call(gateway, "fetched", rotated)[0]) != 200:
        assert status == 401 and time.monotonic() < deadline, status
        time.sleep(0.1)
    assert idp.fetches > fetches
    # Known keys come from the cache: no fetch per request.
    fetches = idp.fetches
    for _ in range(5):
        assert call(gateway, "fetched", idp.token())[0] == 200
    assert idp.fetches == fetches


def test_unreachable_keys_are_a_503_and_tokens_never_reach_the_log(gateway):
    idp = gateway["idp"]
    token = idp.token()
    body = refused(gateway, "unreachable", token, "JWKS", status=503)
    assert body["code"] == "jwks_unavailable"
    # A token is never logged.
    log = gateway["log"].read_text(errors="replace")
    assert token.split(".")[2] not in log
