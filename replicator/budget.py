"""The Notion budget, shared by every process that calls Notion with one integration token.

Notion limits requests per integration ("an average of three requests per second", 429 ``rate_limited`` with
``Retry-After`` beyond it: https://developers.notion.com/reference/request-limits), not per process. So the
daemon's sink workers, its narrative capture, ``replicator verify`` and ``replicator notion check`` / ``init`` all
take their tokens from one row of ``replicator.rate_budget`` (``SharedBudget``), keyed by a fingerprint of the
token, and ``NOTION_RATE_PER_S`` is the integration's total however many processes run. A 429 seen by any of them
blocks all of them for its ``Retry-After``.

The budget must never stop a sink: when Postgres cannot be reached for it, the limiter falls back to a bucket in
this process at ``NOTION_RATE_PER_S / NOTION_BUDGET_FALLBACK_SHARE`` (logged once, ``budget.fallback``) and tries
Postgres again after a while. ``NOTION_BUDGET=local`` opts out: a bucket per process at the full rate (the old
behaviour). The sinks never import this module (they may not import the store): the daemon and the CLI build the
limiter here and hand it to the sink's builder.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg

from replicator.config import Settings
from replicator.logs import event_logger
from replicator.metrics import Metrics
from replicator.retry import RateLimiter, TokenBucket
from replicator.store import rate_budget

log = event_logger("replicator.budget")
T = TypeVar("T")

# Longest single sleep between takes: a wait is re-asked, so a budget whose rate was raised (or a stop) is seen soon.
MAX_SLEEP_S = 2.0
# After Postgres failed for the budget, the local fallback is used this long before Postgres is tried again.
RETRY_POSTGRES_S = 30.0


def fingerprint(credential: str) -> str:
    """The non-secret key of a credential's budget: the first 16 hex digits of its sha256 (never the token)."""
    return hashlib.sha256(credential.encode("utf-8")).hexdigest()[:16]


class SharedBudget:
    """A ``RateLimiter`` whose bucket is a row of ``replicator.rate_budget``, on its own short autocommit
    connection (opened on first use, never a worker's transaction). Thread-safe; one per process and credential
    is enough (``notion_limiter`` keeps one), though any number coordinate correctly through the row.

    ``sleep`` is injected; with ``stop`` given the default sleep is ``stop.wait`` and a set ``stop`` ends every
    wait (``acquire`` then returns without a token: the process is shutting down)."""

    def __init__(
        self,
        dsn: str,
        key: str,
        rate: float,
        burst: float | None = None,
        *,
        fallback_share: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] | None = None,
        stop: threading.Event | None = None,
        connect_timeout_s: float = 5.0,
        retry_postgres_s: float = RETRY_POSTGRES_S,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        if fallback_share < 1:
            raise ValueError("fallback_share must be at least 1")
        self.dsn = dsn
        self.key = key
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)
        self._clock = clock
        self._stop = stop
        wait: Callable[[float], Any] = sleep or (stop.wait if stop is not None else time.sleep)

        def nap(seconds: float) -> None:
            wait(seconds)

        self._sleep = nap
        self._connect_timeout_s = connect_timeout_s
        self._retry_postgres_s = retry_postgres_s
        local_rate = rate / fallback_share
        self.fallback = TokenBucket(local_rate, max(1.0, local_rate), clock=clock, sleep=self._sleep)
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self._down_until: float | None = None  # while set and ahead: use the fallback
        self.fallbacks = 0  # times Postgres failed for the budget (each logged once)

    # ---- RateLimiter ------------------------------------------------------------------------------------------

    def acquire(self, tokens: float = 1.0) -> float:
        want = min(tokens, self.burst)  # a larger request could never be granted
        waited = 0.0
        while not self._stopped():
            answer = self._take(want, force=False)
            if answer is None:  # Postgres is away: the local bucket paces this process meanwhile
                return waited + self.fallback.acquire(want)
            if answer.granted:
                return waited
            wait = min(max(answer.wait_s, 0.001), MAX_SLEEP_S)
            self._sleep(wait)
            waited += wait
        return waited

    def charge(self, tokens: float) -> None:
        if tokens > 0 and self._take(tokens, force=True) is None:
            self.fallback.charge(tokens)

    def penalize(self, retry_after_s: float) -> None:
        self.fallback.penalize(retry_after_s)  # this process waits it out even if Postgres is away
        self._run(lambda conn: rate_budget.penalize(conn, self.key, retry_after_s))

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # ---- Postgres ---------------------------------------------------------------------------------------------

    def _stopped(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    def _take(self, tokens: float, *, force: bool) -> rate_budget.Take | None:
        def take(conn: psycopg.Connection[Any]) -> rate_budget.Take:
            answer = rate_budget.take(conn, self.key, tokens, force=force)
            if answer is None:  # the row was deleted under us (or never made): make it and ask again
                rate_budget.ensure(conn, self.key, rate=self.rate, burst=self.burst)
                answer = rate_budget.take(conn, self.key, tokens, force=force)
            return answer or rate_budget.Take(granted=True)

        return self._run(take)

    def _run(self, work: Callable[[psycopg.Connection[Any]], T]) -> T | None:
        """``work`` on the budget's connection; ``None`` (and the fallback for a while) when Postgres fails."""
        with self._lock:
            if self._down_until is not None and self._clock() < self._down_until:
                return None
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = self._connect()
                    if self._down_until is not None:
                        log.info("budget.restored", key=self.key)
                    self._down_until = None
                return work(self._conn)
            except psycopg.Error as error:
                self._fall_back(error)
                return None

    def _connect(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=max(1, round(self._connect_timeout_s)))
        # A take is one short statement: never let a stuck server hold a sink longer than this.
        timeout_ms = int(self._connect_timeout_s * 1000)
        conn.execute(f"SET statement_timeout = {timeout_ms}")  # an int of ours, not input
        conn.execute(f"SET lock_timeout = {timeout_ms}")
        rate_budget.ensure(conn, self.key, rate=self.rate, burst=self.burst)
        return conn

    def _fall_back(self, error: psycopg.Error) -> None:
        # Called under the lock. One log line per outage, not per request.
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None
        if self._down_until is None:
            self.fallbacks += 1
            log.warning(
                "budget.fallback",
                key=self.key,
                error=type(error).__name__,
                local_rate_per_s=round(self.fallback.rate, 3),
                retry_in_s=self._retry_postgres_s,
            )
        self._down_until = self._clock() + self._retry_postgres_s


class MeteredLimiter:
    """A ``RateLimiter`` that counts the seconds callers waited in ``replicator_sink_budget_wait_seconds_total``."""

    def __init__(self, inner: RateLimiter, metrics: Metrics, sink: str) -> None:
        self.inner = inner
        self._waits = metrics.sink_budget_wait_seconds.labels(sink=sink)

    def acquire(self, tokens: float = 1.0) -> float:
        waited = self.inner.acquire(tokens)
        if waited > 0:
            self._waits.inc(waited)
        return waited

    def charge(self, tokens: float) -> None:
        self.inner.charge(tokens)

    def penalize(self, retry_after_s: float) -> None:
        self.inner.penalize(retry_after_s)


# One limiter per process, budget and stop event (a daemon's sink workers, its narrative capture and every rebuild
# of its sink share one, and with it one connection and one fallback bucket; another daemon in the same process, as
# in the tests, has its own stop and so its own limiter). Keyed by everything that shapes it.
_LIMITERS: dict[tuple[str, str, str, float, float, threading.Event | None], RateLimiter] = {}
_LIMITERS_LOCK = threading.Lock()


def notion_limiter(
    settings: Settings, metrics: Metrics | None = None, *, stop: threading.Event | None = None
) -> RateLimiter | None:
    """The Notion budget of this process: shared through Postgres (``NOTION_BUDGET=shared``, the default) or a
    local bucket (``local``), at ``NOTION_RATE_PER_S``. ``None`` without ``NOTION_API_KEY`` (no Notion calls)."""
    if settings.notion_api_key is None:
        return None
    key = fingerprint(settings.notion_api_key.get_secret_value())
    rate = settings.notion_rate_per_s
    share = settings.notion_budget_fallback_share
    shared = settings.notion_budget == "shared"
    cache_key = (settings.notion_budget, settings.dsn if shared else "", key, rate, share, stop)
    with _LIMITERS_LOCK:
        limiter = _LIMITERS.get(cache_key)
        if limiter is None:
            if shared:
                limiter = SharedBudget(settings.dsn, key, rate, fallback_share=share, stop=stop)
            else:
                limiter = TokenBucket(rate)
            _LIMITERS[cache_key] = limiter
    return MeteredLimiter(limiter, metrics, "notion") if metrics is not None else limiter


def sink_limiter(
    name: str, settings: Settings, metrics: Metrics | None = None, *, stop: threading.Event | None = None
) -> RateLimiter | None:
    """The budget to hand ``build_sink(name, …)``: Notion's for ``notion``, ``None`` (the sink's own bucket) else."""
    return notion_limiter(settings, metrics, stop=stop) if name == "notion" else None
