"""A small real REST API for the MCP translator's tests: pets, described by
tests/python/data/petstore.openapi.json (served at /openapi.json).

    python tests/python/rest_api.py PORT KEY   # serves http://127.0.0.1:PORT

Every /pets request must carry `x-api-key: KEY` (else 401). `GET /_seen` answers the headers
of every /pets request received so far, so a test can check what the gateway sent (its
credential) and what it did not (the client's key). `uploadPhoto` (an image body) is in the
document so that a translator must leave it out.
"""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

SPEC = (Path(__file__).parent / "data" / "petstore.openapi.json").read_bytes()
KEY = sys.argv[2] if len(sys.argv) > 2 else ""
LOCK = threading.Lock()
PETS: dict[int, dict] = {
    1: {"id": 1, "name": "Tom", "species": "cat", "tag": None},
    2: {"id": 2, "name": "Rex", "species": "dog", "tag": "good"},
    3: {"id": 3, "name": "Nemo", "species": "fish", "tag": None},
}
SEEN: list[dict[str, str]] = []


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, status: int, payload=None, content_type: str = "application/json") -> None:
        data = b"" if payload is None else payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        if data:
            self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _pets_request(self) -> tuple[list[str], dict[str, list[str]]] | None:
        url = urlsplit(self.path)
        parts = [p for p in url.path.split("/") if p]
        if not parts or parts[0] != "pets":
            return None
        with LOCK:
            SEEN.append({k.lower(): v for k, v in self.headers.items()})
        if self.headers.get("x-api-key") != KEY:
            self._send(401, {"error": "missing or wrong x-api-key"})
            return ([], {})
        return parts, parse_qs(url.query)

    def _body(self):
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        return json.loads(raw) if raw else None

    def do_GET(self) -> None:
        if self.path == "/openapi.json":
            return self._send(200, SPEC)
        if self.path == "/_seen":
            with LOCK:
                return self._send(200, SEEN)
        got = self._pets_request()
        if got is None:
            return self._send(404, {"error": f"no route {self.path}"})
        parts, query = got
        if not parts:
            return
        with LOCK:
            if len(parts) == 1:
                pets = list(PETS.values())
                if "species" in query:
                    pets = [p for p in pets if p["species"] == query["species"][0]]
                if "limit" in query:
                    pets = pets[: int(query["limit"][0])]
                return self._send(200, pets)
            pet = PETS.get(int(parts[1])) if parts[1].isdigit() else None
        if pet is None:
            return self._send(404, {"error": f"no pet {parts[1]}"})
        return self._send(200, pet)

    def do_POST(self) -> None:
        got = self._pets_request()
        if got is None:
            return self._send(404, {"error": f"no route {self.path}"})
        parts, _ = got
        if not parts:
            return
        body = self._body()
        if not isinstance(body, dict) or not body.get("name"):
            return self._send(400, {"error": "a pet needs a name"})
        with LOCK:
            pet = {"id": max(PETS) + 1, "name": body["name"], "species": body.get("species"), "tag": body.get("tag")}
            PETS[pet["id"]] = pet
        return self._send(201, pet)

    def do_DELETE(self) -> None:
        got = self._pets_request()
        if got is None:
            return self._send(404, {"error": f"no route {self.path}"})
        parts, _ = got
        if not parts:
            return
        with LOCK:
            removed = PETS.pop(int(parts[1]), None) if len(parts) > 1 and parts[1].isdigit() else None
        return self._send(204 if removed else 404, None if removed else {"error": "no such pet"})


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.serve_forever()
