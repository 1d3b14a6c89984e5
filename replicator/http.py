"""The daemon's HTTP surface (stdlib ``ThreadingHTTPServer`` in a thread): ``/healthz`` (200 or 503 with the
reasons as JSON: the same rules as ``replicator health``, for monitoring), ``/livez`` (200 while the process runs:
the liveness probe, since a restart cures neither dead letters nor lag), ``/readyz`` (200 while this process can
do its work: the streaming leader or a standby, with Postgres reachable; 503 naming the rule otherwise) and
``/metrics`` (Prometheus text from the process's own registry). Gauges that are read from Postgres (pending rows,
lag) are refreshed by ``on_scrape`` just before ``/metrics`` answers, so they are current without a poller.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from replicator.logs import event_logger
from replicator.metrics import Metrics
from replicator.status import Health

log = event_logger("replicator.http")


class HttpServer:
    """A running server; ``url`` is its base URL (with the real port when 0 was asked for)."""

    def __init__(self, server: ThreadingHTTPServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        host, port = server.server_address[:2]
        self.host = str(host)
        self.port = int(port)
        self.address = f"{self.host}:{self.port}"
        self.url = f"http://{self.address}"

    def shutdown(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve(
    addr: str,
    metrics: Metrics,
    health: Callable[[], Health],
    ready: Callable[[], bool | Health],
    *,
    on_scrape: Callable[[], None] | None = None,
    live: Callable[[], bool] = lambda: True,
) -> HttpServer:
    """Start serving on ``HOST:PORT`` (port 0 picks a free one) in a daemon thread. ``health`` and ``ready`` are
    called per request; ``on_scrape`` (e.g. ``status.refresh_gauges`` bound to a connection factory) runs before
    each ``/metrics`` answer."""
    host, _, port = addr.rpartition(":")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            try:
                if path == "/healthz":
                    verdict = health()
                    self._send(200 if verdict.ok else 503, "application/json", orjson.dumps(verdict.to_dict()))
                elif path == "/livez":
                    alive = live()
                    self._send(200 if alive else 503, "application/json", orjson.dumps({"live": alive}))
                elif path == "/readyz":
                    answer = ready()
                    body: dict[str, Any] = {"ready": bool(answer)}
                    if isinstance(answer, Health):
                        body = {"ready": answer.ok, "rules": answer.rules, "reasons": answer.reasons}
                    self._send(200 if body["ready"] else 503, "application/json", orjson.dumps(body))
                elif path == "/metrics":
                    if on_scrape is not None:
                        try:
                            on_scrape()
                        except Exception as error:  # stale gauges beat no metrics at all
                            log.warning("http.scrape_refresh_failed", error=str(error))
                    self._send(200, CONTENT_TYPE_LATEST, generate_latest(metrics.registry))
                else:
                    self._send(404, "application/json", orjson.dumps({"error": f"no such path {path}"}))
            except Exception as error:
                log.error("http.error", path=path, error=str(error))
                body = {"ok": False, "rules": ["internal_error"], "reasons": [f"internal_error: {error}"]}
                self._send(503, "application/json", orjson.dumps(body))

        def _send(self, code: int, content_type: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Silence the stdlib's per-request stderr lines (probes every few seconds would drown the events)."""

    server = ThreadingHTTPServer((host, int(port)), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="replicator-http", daemon=True)
    thread.start()
    running = HttpServer(server, thread)
    log.info("http.listening", url=running.url)
    return running
