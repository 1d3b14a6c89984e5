"""Sink isolation: one sink's health in this process, shared by that sink's workers (``SinkGate``).

A sink is built and checked here, in its own workers' threads, never in the daemon's start-up path: a sink that is
unreachable, rate limited or misconfigured — at start-up or later — is marked *down* with its reason, its rows wait
in the outbox (no worker claims them, so no attempt is spent and nothing is dead-lettered), and it is re-checked
(``Sink.check()``) with backoff, ``REPLICATOR_SINK_RECHECK_MIN_S`` doubling up to ``REPLICATOR_SINK_RECHECK_MAX_S``
(a ``Retry-After`` hint longer than that is honoured), until it answers; then it is *up* and its workers go on by
themselves. The source, the slot and the other sinks never wait for it.

A configuration an operator must fix (``SinkConfigError``: a missing key, Notion databases that are gone, a Pinecone
index of the wrong dimension) is re-checked too (the fix may happen downstream, e.g. databases restored from the
trash), and is named with the command that fixes it. Every change of state is logged (``sink.down``, ``sink.up``),
set in the ``replicator_sink_up`` / ``replicator_sink_config_error`` gauges and written to ``replicator.sink_health``,
which ``replicator status`` and ``health`` read whether the daemon runs or not.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg

from replicator.config import Settings
from replicator.leader import process_name
from replicator.logs import event_logger
from replicator.metrics import Metrics
from replicator.retry import recheck_policy
from replicator.sinks.base import Sink, SinkConfigError, SinkError
from replicator.status import configured_secrets, redact
from replicator.store import sink_state

log = event_logger("replicator.sink")

# What fixes a sink's configuration when the sink could not even be built (so it cannot say itself).
_FIX_COMMANDS = {
    "notion": "replicator notion init --parent-page ID (then set the NOTION_*_DB_ID it prints), "
    "or restore the databases from the Notion trash",
    "pinecone": "replicator pinecone init (an index whose dimension matches the embedding provider)",
}
GENERIC_FIX = "fix the sink's settings (see `replicator config`) and restart `replicator run`"


def fix_command(name: str, sink: Sink | None) -> str:
    if sink is not None and sink.fix_command:
        return sink.fix_command
    return _FIX_COMMANDS.get(name, GENERIC_FIX)


class SinkGate:
    """Builds, checks and re-checks one sink; its workers call ``ensure`` before each pass and ``report_down`` when a
    pass shows the sink (not a document) failing. Thread-safe."""

    def __init__(
        self,
        name: str,
        build: Callable[[], Sink],
        *,
        settings: Settings,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._build = build
        self.settings = settings
        self._policy = recheck_policy(settings)
        self.metrics = metrics
        self._clock = clock
        self._secrets = configured_secrets(settings)
        self.sink: Sink | None = None
        self._up = threading.Event()
        self._check_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._failures = 0
        self._next_check = 0.0
        self.reason: str | None = None
        self.config_error = False
        self.down_since: float | None = None
        self.checks = 0
        metrics.sink_up.labels(sink=name).set(0)
        metrics.sink_config_error.labels(sink=name).set(0)

    @property
    def up(self) -> bool:
        return self._up.is_set()

    # ---- for the workers --------------------------------------------------------------------------------------

    def ensure(self, stop: threading.Event) -> Sink | None:
        """The sink once it is up (building and checking it, with backoff, as long as it is not); None when
        ``stop`` is set first. One worker checks at a time; the others wait for its verdict."""
        while not stop.is_set():
            if self._up.is_set() and self.sink is not None:
                return self.sink
            if not self._check_lock.acquire(timeout=0.5):
                continue
            try:
                if self._up.is_set():
                    continue
                wait = self._next_check - self._clock()
                if wait > 0:
                    stop.wait(min(wait, 0.5))
                    continue
                self._check_once()
            finally:
                self._check_lock.release()
        return None

    def report_down(self, error: SinkError, *, config: bool = False) -> None:
        """A pass failed in a way that is the sink's (every item failed retryably, or a sink-wide error): stop
        claiming rows and re-check the sink after a backoff."""
        self._mark_down(str(error), config=config or error.sink_wide, retry_after=error.retry_after)

    def report_success(self) -> None:
        """A pass applied something: the backoff starts again from its minimum next time."""
        self._failures = 0

    # ---- internals --------------------------------------------------------------------------------------------

    def _check_once(self) -> None:
        self.checks += 1
        try:
            if self.sink is None:
                self.sink = self._build()
            self.sink.check()
        except SinkConfigError as error:
            self._mark_down(str(error), config=True)
        except SinkError as error:
            self._mark_down(str(error), config=error.sink_wide, retry_after=error.retry_after)
        except Exception as error:  # a bug or an SDK surprise in a sink must not end its workers
            self._mark_down(f"{type(error).__name__}: {error}", config=False)
        else:
            self._mark_up()

    def _delay(self, retry_after: float | None) -> float:
        return self._policy.delay(self._failures, retry_after)

    def _mark_down(self, reason: str, *, config: bool, retry_after: float | None = None) -> None:
        reason = redact(reason, self._secrets)
        with self._state_lock:
            self._failures += 1
            delay = self._delay(retry_after)
            self._next_check = self._clock() + delay
            was_up = self._up.is_set()
            changed = was_up or self.down_since is None or reason != self.reason or config != self.config_error
            self._up.clear()
            if self.down_since is None or was_up:
                self.down_since = self._clock()
            self.reason = reason
            self.config_error = config
        fix = fix_command(self.name, self.sink) if config else None
        self.metrics.sink_up.labels(sink=self.name).set(0)
        self.metrics.sink_config_error.labels(sink=self.name).set(1 if config else 0)
        self.metrics.sink_checks.labels(sink=self.name, result="config_error" if config else "down").inc()
        if changed:
            fields: dict[str, Any] = {"sink": self.name, "reason": reason, "recheck_in_s": round(delay, 2)}
            if fix:
                fields["action"] = fix
            log.error("sink.down", **fields) if config else log.warning("sink.down", **fields)
        else:
            log.info("sink.still_down", sink=self.name, recheck_in_s=round(delay, 2))
        self._persist(up=False, reason=reason, fix=fix)

    def _mark_up(self) -> None:
        with self._state_lock:
            was_down = self.down_since
            self.down_since = None
            self.reason = None
            self.config_error = False
            self._up.set()
        self.metrics.sink_up.labels(sink=self.name).set(1)
        self.metrics.sink_config_error.labels(sink=self.name).set(0)
        self.metrics.sink_checks.labels(sink=self.name, result="up").inc()
        down_s = round(self._clock() - was_down, 2) if was_down is not None else None
        log.info("sink.up", sink=self.name, down_s=down_s, checks=self.checks)
        self._persist(up=True, reason=None, fix=None)

    def _persist(self, *, up: bool, reason: str | None, fix: str | None) -> None:
        """Write the state for `status` and `health`; a database that is down too must not stop the gate."""
        try:
            with psycopg.connect(
                self.settings.dsn, autocommit=True, connect_timeout=5, application_name="replicator-sink-health"
            ) as conn:
                sink_state.record_health(conn, self.name, up=up, reason=reason, fix=fix, process=process_name())
        except psycopg.Error as error:
            log.warning("sink.health_not_recorded", sink=self.name, error=redact(str(error), self._secrets))
