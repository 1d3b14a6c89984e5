"""A tiny OpenAI-compatible embeddings server (``POST /v1/embeddings``) for tests: an honest HTTP stand-in for an
external embedding service, spoken to by the product's ``openai`` provider over a real socket.

Vectors are a feature hash of the words (each lower-cased word adds ±1 to one of ``dimension`` slots, chosen by
sha256), L2-normalised: texts that share words are close, unrelated texts are not, and everything is
deterministic. ``fail_next`` queues error answers (status, Retry-After) for fault tests; ``requests`` records
what arrived (path, authorization header, inputs).

    with serve_embeddings(dimension=16) as server:
        server.base_url  # http://127.0.0.1:PORT/v1
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_WORD = re.compile(r"\w+")


def hashed_vector(text: str, dimension: int) -> list[float]:
    values = [0.0] * dimension
    for word in _WORD.findall(text.lower()):
        digest = hashlib.sha256(word.encode()).digest()
        slot = int.from_bytes(digest[:4], "big") % dimension
        values[slot] += 1.0 if digest[4] & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in values))
    if norm == 0:
        values[0] = 1.0
        return values
    return [v / norm for v in values]


@dataclass
class EmbeddingsServer:
    dimension: int
    api_key: str | None = None
    model: str = "hash-embedding"
    requests: list[dict[str, Any]] = field(default_factory=list)
    failures: list[tuple[int, str | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    base_url: str = ""

    def fail_next(self, status: int, retry_after: str | None = None, times: int = 1) -> None:
        with self.lock:
            self.failures.extend([(status, retry_after)] * times)

    def answer(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], Any]:
        with self.lock:
            self.requests.append({"path": path, "authorization": headers.get("authorization"), "body": body})
            failure = self.failures.pop(0) if self.failures else None
        if path != "/v1/embeddings":
            return 404, {}, {"error": {"message": f"no route {path}", "type": "invalid_request_error"}}
        if self.api_key is not None and headers.get("authorization") != f"Bearer {self.api_key}":
            return 401, {}, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}
        if failure is not None:
            status, retry_after = failure
            extra = {"Retry-After": retry_after} if retry_after is not None else {}
            return status, extra, {"error": {"message": f"injected {status}", "type": "server_error"}}
        try:
            payload = json.loads(body)
            inputs = payload["input"]
            inputs = [inputs] if isinstance(inputs, str) else list(inputs)
            if not inputs or not all(isinstance(t, str) for t in inputs):
                raise ValueError("input must be a string or a non-empty list of strings")
        except (ValueError, KeyError, TypeError) as error:
            return 400, {}, {"error": {"message": str(error), "type": "invalid_request_error"}}
        with self.lock:
            self.requests[-1]["inputs"] = inputs
            self.requests[-1]["model"] = payload.get("model")
        data = [
            {"object": "embedding", "index": i, "embedding": hashed_vector(text, self.dimension)}
            for i, text in enumerate(inputs)
        ]
        # Answer in reverse order: clients must use ``index``, as the API allows any order.
        data.reverse()
        usage = {"prompt_tokens": sum(len(t.split()) for t in inputs), "total_tokens": 0}
        return 200, {}, {"object": "list", "data": data, "model": payload.get("model"), "usage": usage}


def _handler(server: EmbeddingsServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, extra, payload = server.answer(self.path, headers, body)
            raw = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(raw)

    return Handler


@contextmanager
def serve_embeddings(dimension: int = 16, api_key: str | None = None) -> Iterator[EmbeddingsServer]:
    server = EmbeddingsServer(dimension=dimension, api_key=api_key)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(server))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), name="embeddings-server", daemon=True)
    thread.start()
    server.base_url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
