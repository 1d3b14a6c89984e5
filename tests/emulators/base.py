"""The common machinery of both emulators: a threaded HTTP server, routing, JSON, faults, state and a call log.

An emulator subclasses ``Emulator``, registers routes with ``route(method, pattern)`` and answers with
``Response``; it raises ``ApiError`` for an error in the service's own shape (each emulator says how an error
body looks by overriding ``error_body``). Faults are drawn per request from ``Faults``: before the handler runs
(latency, dropped connections, 5xx, 429 with ``Retry-After``, a schedule of forced outcomes for exact tests) and,
for a write, after it ran (``apply_then_fail_*``: the write is applied, its answer is lost). ``Versions`` keeps a
time-stamped history of stored objects so a read can see the state of ``read_lag_s`` seconds ago, as an
eventually consistent service answers.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Generic, TypeVar
from urllib.parse import parse_qs, urlsplit

APPLY_THEN_FAIL_KINDS = ("500", "503", "drop", "timeout")
MAX_READ_LAG_S = 600.0  # the history kept for lagged reads; a longer lag would need a longer history


@dataclass
class Faults:
    """What ``POST /_emulator/faults`` sets. Rates are probabilities per request (control paths excepted).

    ``schedule`` forces the outcome of the next requests in order, one entry per request: ``"ok"``, ``"429"``,
    ``"500"``, ``"503"``, ``"drop"`` — for tests that need an exact sequence rather than a rate.
    ``only_paths``, when set, limits every fault to requests whose path contains one of these substrings.

    The hard behaviours of the real services (all off by default; the names are fixed so other tools can set them):

    - ``apply_then_fail_rate`` (0..1): a write that succeeded is **applied** and then its answer is lost, one of
      ``apply_then_fail_kinds`` (any of ``"500"``, ``"503"``, ``"drop"``, ``"timeout"``; default all) drawn
      evenly: a 500 or 503 error in the service's shape, a connection closed without an answer, or an answer held
      ``apply_then_fail_timeout_s`` seconds (default 65 s: longer than the replicator's 30 s SDK timeout and
      notion-client's 60 s default) and then dropped. Tests with short client timeouts set a short hold.
      The request log marks such a request with ``"apply_then_fail": kind``. Which requests are writes each
      emulator says (``is_write``). ``apply_then_fail_schedule`` does the same for an exact sequence: one entry
      per successful write, in order (``"ok"`` or a kind), used before the rate; e.g. ``["timeout"]`` loses the
      answer of the next write only, so a client's retry of it is answered.
    - ``read_lag_s``: the reads each emulator names as eventually consistent see a write only that long after
      it was applied (at most ``MAX_READ_LAG_S``).
    - ``read_by_id_lag_s``: the same for reads by id where the service does not document their consistency
      (each emulator says which reads those are); separate so a test can lag queries and keep reads by id fresh.
    - ``index_init_s`` (Pinecone only): an index created while this is set answers "initializing" for that long.
    """

    rate_429: float = 0.0
    rate_5xx: float = 0.0
    retry_after_s: float = 1.0
    latency_ms: float = 0.0
    drop_rate: float = 0.0
    schedule: list[str] = field(default_factory=list)
    only_paths: list[str] = field(default_factory=list)
    seed: int | None = None
    apply_then_fail_rate: float = 0.0
    apply_then_fail_kinds: list[str] = field(default_factory=lambda: list(APPLY_THEN_FAIL_KINDS))
    apply_then_fail_timeout_s: float = 65.0
    apply_then_fail_schedule: list[str] = field(default_factory=list)
    read_lag_s: float = 0.0
    read_by_id_lag_s: float = 0.0
    index_init_s: float = 0.0

    def __post_init__(self) -> None:
        for name in ("rate_429", "rate_5xx", "drop_rate", "apply_then_fail_rate"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a number between 0 and 1, got {value!r}")
        for name in ("retry_after_s", "latency_ms", "apply_then_fail_timeout_s", "index_init_s"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a number ≥ 0, got {value!r}")
        for name in ("read_lag_s", "read_by_id_lag_s"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= MAX_READ_LAG_S:
                raise ValueError(f"{name} must be a number between 0 and {MAX_READ_LAG_S:g}, got {value!r}")
        kinds = self.apply_then_fail_kinds
        if not isinstance(kinds, list) or not kinds or any(k not in APPLY_THEN_FAIL_KINDS for k in kinds):
            raise ValueError(f"apply_then_fail_kinds must be a non-empty list of {list(APPLY_THEN_FAIL_KINDS)}")
        schedule = self.apply_then_fail_schedule
        if not isinstance(schedule, list) or any(k not in ("ok", *APPLY_THEN_FAIL_KINDS) for k in schedule):
            raise ValueError(f"apply_then_fail_schedule entries must be one of {['ok', *APPLY_THEN_FAIL_KINDS]}")


T = TypeVar("T")


class Versions(Generic[T]):
    """Time-stamped versions of keyed objects, for reads that see the state of some seconds ago.

    ``record(key, at, value)`` after every write (``None`` = deleted); ``as_of(key, at)`` answers the value the
    key had at ``at``: ``(False, None)`` when the key has no history (it predates recording: read the current
    state), ``(True, None)`` when it did not exist yet or was deleted. Versions older than ``MAX_READ_LAG_S``
    are folded into one, so the history stays small.
    """

    def __init__(self) -> None:
        self._log: dict[Any, list[tuple[float, T | None]]] = {}

    def record(self, key: Any, at: float, value: T | None) -> None:
        versions = self._log.setdefault(key, [])
        versions.append((at, value))
        horizon = at - MAX_READ_LAG_S
        while len(versions) > 1 and versions[1][0] <= horizon:
            versions.pop(0)

    def as_of(self, key: Any, at: float) -> tuple[bool, T | None]:
        versions = self._log.get(key)
        if not versions:
            return False, None
        seen: T | None = None
        for stamp, value in versions:
            if stamp > at:
                break
            seen = value
        return True, seen

    def known_keys(self) -> list[Any]:
        return list(self._log)

    def clear(self) -> None:
        self._log.clear()


class ApiError(Exception):
    """An error answered in the emulated service's shape."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


@dataclass
class Request:
    method: str
    path: str
    params: dict[str, str]  # path parameters from the route pattern
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: Any  # parsed JSON, or None
    raw_body: bytes


@dataclass
class Response:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Response]


class Emulator:
    """Base class: subclasses add routes in ``__init__`` and keep their state under ``self.lock``."""

    name = "emulator"

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.faults = Faults()
        self._rng = random.Random()
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self.requests: list[dict[str, Any]] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- to override -------------------------------------------------------------------------------
    def error_body(self, error: ApiError) -> Any:
        return {"status": error.status, "code": error.code, "message": error.message}

    def state(self) -> Any:
        return {}

    def reset(self) -> None:
        """Forget all stored data (subclasses extend)."""

    def check_request(self, request: Request) -> None:
        """Authentication and version headers; raise ApiError to refuse (subclasses override)."""

    def response_headers(self) -> dict[str, str]:
        """Headers the service sends on every answer (e.g. a request id); subclasses override."""
        return {}

    # ---- routing -----------------------------------------------------------------------------------
    def route(self, method: str, pattern: str) -> Callable[[Handler], Handler]:
        """``pattern`` is a path with ``{name}`` placeholders, e.g. ``/v1/pages/{page_id}``."""
        regex = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "$")

        def register(handler: Handler) -> Handler:
            self._routes.append((method, regex, handler))
            return handler

        return register

    def add_route(self, method: str, pattern: str, handler: Handler) -> None:
        self.route(method, pattern)(handler)

    # ---- faults ------------------------------------------------------------------------------------
    def set_faults(self, values: dict[str, Any]) -> Faults:
        known = set(Faults.__dataclass_fields__)
        unknown = set(values) - known
        if unknown:
            raise ApiError(400, "validation_error", f"unknown fault settings: {sorted(unknown)}")
        with self.lock:
            self.faults = Faults(**values)
            self._rng = random.Random(self.faults.seed)
            return self.faults

    def _draw_fault(self, path: str) -> str:
        with self.lock:
            f = self.faults
            if f.only_paths and not any(p in path for p in f.only_paths):
                return "ok"
            if f.schedule:
                return f.schedule.pop(0)
            r = self._rng.random()
            if r < f.drop_rate:
                return "drop"
            r -= f.drop_rate
            if r < f.rate_429:
                return "429"
            r -= f.rate_429
            if r < f.rate_5xx:
                return self._rng.choice(["500", "503"])
            return "ok"

    def is_write(self, method: str, path: str) -> bool:
        """Whether a request changes stored data (an apply-then-fail candidate); subclasses say."""
        return False

    def _draw_after_apply(self, method: str, path: str) -> str | None:
        """The way a write's answer is lost after it was applied, or ``None`` when it is answered."""
        with self.lock:
            f = self.faults
            if not self.is_write(method, path) or (f.apply_then_fail_rate <= 0 and not f.apply_then_fail_schedule):
                return None
            if f.only_paths and not any(p in path for p in f.only_paths):
                return None
            if f.apply_then_fail_schedule:
                kind = f.apply_then_fail_schedule.pop(0)
                return None if kind == "ok" else kind
            if self._rng.random() >= f.apply_then_fail_rate:
                return None
            return self._rng.choice(list(f.apply_then_fail_kinds))

    def fault_error(self, outcome: str) -> ApiError:
        """The error a forced fault answers with; subclasses may map codes to their service's names."""
        if outcome == "429":
            return ApiError(
                429, "rate_limited", "Rate limited", {"Retry-After": _retry_after(self.faults.retry_after_s)}
            )
        if outcome == "503":
            return ApiError(503, "service_unavailable", "Service unavailable")
        return ApiError(500, "internal_server_error", "Internal server error")

    # ---- dispatch ----------------------------------------------------------------------------------
    def dispatch(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> Response | None:
        """Answer one request; ``None`` means: drop the connection without an answer."""
        split = urlsplit(target)
        path = split.path
        query = parse_qs(split.query, keep_blank_values=True)
        if path.startswith("/_emulator/"):
            return self._control(method, path, raw)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            return self._error(ApiError(400, "invalid_json", "Error parsing JSON body."))
        entry: dict[str, Any] = {"method": method, "path": path, "query": query, "body": body, "at": time.time()}
        with self.lock:
            self.requests.append(entry)
        if self.faults.latency_ms:
            time.sleep(self.faults.latency_ms / 1000)
        outcome = self._draw_fault(path)
        if outcome == "drop":
            return None
        if outcome != "ok":
            return self._error(self.fault_error(outcome))
        for route_method, regex, handler in self._routes:
            match = regex.match(path)
            if match and route_method == method:
                request = Request(method, path, match.groupdict(), query, headers, body, raw)
                try:
                    self.check_request(request)
                    response = handler(request)
                except ApiError as error:
                    return self._error(error)
                if response.status < 300:
                    lost = self._draw_after_apply(method, path)
                    if lost is not None:
                        entry["apply_then_fail"] = lost
                        return self._lose_answer(lost)
                return response
        if any(regex.match(path) for _, regex, _ in self._routes):
            return self._error(ApiError(405, "method_not_allowed", f"{method} is not allowed on {path}"))
        return self._error(ApiError(404, "not_found", f"No route for {method} {path}"))

    def _lose_answer(self, kind: str) -> Response | None:
        """The answer of an applied write, lost: an error, a dropped connection, or a hold and then a drop."""
        if kind == "drop":
            return None
        if kind == "timeout":
            # Held past the client's timeout; the client has given up by then, so nothing is sent at all.
            time.sleep(self.faults.apply_then_fail_timeout_s)
            return None
        return self._error(self.fault_error(kind))

    def _error(self, error: ApiError) -> Response:
        return Response(error.status, self.error_body(error), dict(error.headers))

    def _control(self, method: str, path: str, raw: bytes) -> Response:
        try:
            if path == "/_emulator/faults" and method == "POST":
                return Response(200, asdict(self.set_faults(json.loads(raw or b"{}"))))
            if path == "/_emulator/faults" and method == "GET":
                return Response(200, asdict(self.faults))
            if path == "/_emulator/state" and method == "GET":
                with self.lock:
                    return Response(200, self.state())
            if path == "/_emulator/requests" and method == "GET":
                with self.lock:
                    return Response(200, {"requests": list(self.requests)})
            if path == "/_emulator/reset" and method == "POST":
                with self.lock:
                    self.reset()
                    self.requests.clear()
                    self.faults = Faults()
                return Response(200, {"reset": True})
        except ApiError as error:
            return self._error(error)
        except (TypeError, ValueError) as error:
            return self._error(ApiError(400, "validation_error", str(error)))
        return self._error(ApiError(404, "not_found", path))

    # ---- serving -----------------------------------------------------------------------------------
    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve in a background thread; returns the base URL (``http://127.0.0.1:PORT``)."""
        self._server = ThreadingHTTPServer((host, port), _handler_for(self))
        self._server.daemon_threads = True
        server = self._server
        self._thread = threading.Thread(
            target=lambda: server.serve_forever(poll_interval=0.05), name=f"{self.name}-emulator", daemon=True
        )
        self._thread.start()
        return self.url

    @property
    def url(self) -> str:
        assert self._server is not None, "emulator not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def serve_forever(self, host: str, port: int) -> None:
        self._server = ThreadingHTTPServer((host, port), _handler_for(self))
        self._server.daemon_threads = True
        self._server.serve_forever(poll_interval=0.05)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _retry_after(seconds: float) -> str:
    # The header carries whole seconds; never 0 when a wait was asked for.
    return str(max(1, round(seconds))) if seconds > 0 else "0"


def _handler_for(emulator: Emulator) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in separate writes; with Nagle on, the body waits for the client's delayed
        # ACK (~40 ms per request on Linux).
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read the request log instead
            return

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            response = emulator.dispatch(self.command, self.path, headers, raw)
            if response is None:
                # A dropped connection: close the socket without writing a status line.
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(2)
                return
            # A bytes body is sent as plain text (Pinecone answers a 401 that way); anything else as JSON.
            if isinstance(response.body, bytes):
                payload, content_type = response.body, "text/plain; charset=utf-8"
            else:
                payload = b"" if response.body is None else json.dumps(response.body).encode()
                content_type = "application/json"
            self.send_response(response.status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            for name, value in {**emulator.response_headers(), **response.headers}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _handle  # noqa: N815 (http.server names)

    return _Handler
