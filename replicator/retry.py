"""Retry and rate limiting for sinks: ONE backoff policy for the whole replicator, ONE rate-limiter interface
(``RateLimiter``: the in-process ``TokenBucket`` here, the budget shared through Postgres in
``replicator/budget.py``), ``RetryingSink``, a wrapper with the sink's own interface that retries retryable
failures of writes a few times in-process, and ``retry_reads``, the one retry of a sink's reads (start-up checks,
inventory, fetches), which no wrapper sees.

The same ``BackoffPolicy`` also schedules the outbox's ``next_attempt_at`` when the in-process retries are spent
(the worker) and spaces the source's reconnects, so a flaky API sees one consistent schedule: exponential with
full jitter, capped, and never sooner than a ``Retry-After`` hint. ``backoff_policy`` builds it from settings.
The SDKs' own retries are turned off by the sinks, so nothing retries twice. Everything here is pure policy:
clocks, sleeps and randomness are passed in (STYLE.md §10, §14).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TypeVar

from tenacity import RetryCallState, Retrying, TryAgain, retry_if_exception, stop_after_attempt

from replicator.documents import Document, DocumentKey, WriteIntent
from replicator.metrics import Metrics
from replicator.sinks.base import DeleteItem, Outcome, OutcomeKind, RemoteDocument, Sink, SinkError, UpsertItem

if TYPE_CHECKING:
    from replicator.config import Settings

Item = TypeVar("Item", UpsertItem, DeleteItem)
T = TypeVar("T")


@dataclass(frozen=True)
class BackoffPolicy:
    """Exponential backoff with full jitter: attempt ``n`` (1-based) waits a uniform random time in
    ``[0, min(cap, base * 2**(n-1))]``, and at least ``retry_after`` when the sink gave one (a server's hint wins
    over our guess, but is itself capped at ``max_retry_after_s`` so a bogus header cannot stall a sink for days).
    """

    base_s: float = 0.5
    cap_s: float = 60.0
    max_retry_after_s: float = 900.0
    # The smallest share of the ceiling a wait can be: 0 is full jitter (retries of many workers spread out);
    # a re-check of a sink that is down uses 0.8, so it never comes much earlier than its step.
    floor: float = 0.0
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def ceiling(self, attempt: int) -> float:
        """The largest wait for this attempt, before jitter."""
        exponent = min(max(attempt, 1) - 1, 62)  # 2**62 * base is already far above any cap
        return float(min(self.cap_s, self.base_s * (2.0**exponent)))

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        ceiling = self.ceiling(attempt)
        wait = self.rng.uniform(self.floor * ceiling, ceiling)
        if retry_after is not None and retry_after > 0:
            wait = max(wait, min(retry_after, self.max_retry_after_s))
        return wait


def backoff_policy(settings: Settings) -> BackoffPolicy:
    """The replicator's one backoff policy, from REPLICATOR_RETRY_BASE_S and REPLICATOR_RETRY_MAX_S: the sinks'
    retries, the worker's rescheduling and the source's reconnects all wait by it."""
    return BackoffPolicy(base_s=settings.retry_base_s, cap_s=settings.retry_max_s)


def recheck_policy(settings: Settings) -> BackoffPolicy:
    """How a sink that is down is re-checked (``SinkGate``), from REPLICATOR_SINK_RECHECK_MIN_S doubling to
    REPLICATOR_SINK_RECHECK_MAX_S, each step 80–100 % of its ceiling, never sooner than a ``Retry-After``."""
    low = settings.sink_recheck_min_s
    return BackoffPolicy(base_s=low, cap_s=max(settings.sink_recheck_max_s, low), floor=0.8)


def retry_reads(
    call: Callable[[], T], *, policy: BackoffPolicy, attempts: int, sleep: Callable[[float], None] = time.sleep
) -> T:
    """Run a read-only call (describe, list, fetch, retrieve), retrying retryable ``SinkError``s under ``policy``:
    attempt ``n`` that fails waits ``policy.delay(n, retry_after)``, and the failure of attempt ``attempts`` (or a
    permanent one) is raised. Writes are retried by ``RetryingSink`` around ``upsert``/``delete``; reads made
    outside it (start-up, ``inventory``, ``fetch``) use this, so they follow the same backoff policy. ``call`` maps
    its SDK's exceptions to ``SinkError`` itself (and may pace or penalize a rate limiter as it does so). Like
    ``RetryingSink`` and the source's reconnects: tenacity, waiting by the one ``BackoffPolicy``."""

    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome is not None else None
        return policy.delay(state.attempt_number, error.retry_after if isinstance(error, SinkError) else None)

    retrying = Retrying(
        retry=retry_if_exception(lambda error: isinstance(error, SinkError) and error.retryable),
        stop=stop_after_attempt(attempts),
        wait=wait,
        sleep=sleep,
        reraise=True,
    )
    return retrying(call)


class RateLimiter(Protocol):
    """What a sink paces its API calls with. ``acquire(n)`` blocks until ``n`` tokens are granted and returns the
    seconds it waited; ``charge(n)`` takes tokens without waiting (the bucket may go into debt, later callers pay
    it off); ``penalize(s)`` is called when the API answered 429 with ``Retry-After: s``: nobody drawing on this
    budget gets a token for ``s`` seconds. Implementations are thread-safe."""

    def acquire(self, tokens: float = 1.0) -> float: ...

    def charge(self, tokens: float) -> None: ...

    def penalize(self, retry_after_s: float) -> None: ...


class TokenBucket:
    """A thread-safe token bucket in this process: ``rate`` tokens per second, at most ``burst`` saved up.
    ``acquire(n)`` blocks (through the injected ``sleep``) until ``n`` tokens are there; ``charge(n)`` takes tokens
    without waiting and may leave the bucket in debt, which later callers pay off (used when one document cost more
    calls than expected); ``penalize(s)`` grants nothing for ``s`` seconds, then one token, then ``rate``."""

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._updated = clock()
        self._blocked_until = self._updated
        self._lock = threading.Lock()

    def _refill(self) -> float:
        now = self._clock()
        # ``_updated`` may lie ahead (a penalty): nothing accrues before it.
        self._tokens = min(self.burst, self._tokens + max(0.0, now - self._updated) * self.rate)
        self._updated = max(self._updated, now)
        return now

    def acquire(self, tokens: float = 1.0) -> float:
        """Take ``tokens`` (capped at the burst so a large request cannot wait forever); returns seconds waited."""
        tokens = min(tokens, self.burst)
        waited = 0.0
        while True:
            with self._lock:
                now = self._refill()
                # A tolerance, because refilled float time rarely lands exactly on the token it waited for.
                if now >= self._blocked_until and self._tokens >= tokens - 1e-9:
                    self._tokens -= tokens
                    return waited
                wait = max((tokens - self._tokens) / self.rate, self._blocked_until - now, 1e-6)
            # Sleep outside the lock so other threads can refill/inspect; re-check afterwards since they may win.
            self._sleep(wait)
            waited += wait

    def charge(self, tokens: float) -> None:
        with self._lock:
            self._refill()
            self._tokens -= tokens

    def penalize(self, retry_after_s: float) -> None:
        """The API said "retry after ``retry_after_s``": no token until then, one at that moment (Notion: "requests
        made after waiting this minimum amount of time should no longer be rate limited"), then ``rate``."""
        with self._lock:
            now = self._refill()
            until = now + max(0.0, retry_after_s)
            self._blocked_until = max(self._blocked_until, until)
            # Exactly one token at ``until`` (the API's own word on when a request goes through; a debt is forgiven).
            self._tokens = 1.0
            self._updated = max(self._updated, until)


@dataclass(frozen=True)
class RetrySettings:
    """How hard ``RetryingSink`` tries in-process before giving the failure back to the worker (which then
    schedules the outbox row with the same policy)."""

    attempts: int = 3
    # A retry-after hint longer than this is not slept on in-process: the worker reschedules the row instead,
    # so a worker thread never blocks for minutes.
    max_inline_wait_s: float = 10.0


class RetryingSink(Sink):
    """Wraps a sink with in-process retries (tenacity, driven by ``BackoffPolicy``) and a token bucket.

    Only retryable failures are retried, and only the items that failed. A ``SinkError`` raised for the whole
    batch (a dropped connection) counts as a retryable failure of every item; a permanent one fails every item.
    One token is taken per item before the call; calls beyond one per item reported by the outcomes are charged
    afterwards, so the bucket tracks real API calls without the sink having to know about it.
    """

    def __init__(
        self,
        inner: Sink,
        *,
        policy: BackoffPolicy,
        bucket: RateLimiter | None = None,
        settings: RetrySettings | None = None,
        metrics: Metrics | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.wants_relation_ids = inner.wants_relation_ids
        self.fix_command = inner.fix_command
        self.policy = policy
        self.bucket = bucket
        self.settings = settings or RetrySettings()
        self.metrics = metrics
        self._sleep = sleep

    def check(self) -> None:
        self.inner.check()

    def write_intents(self, items: Sequence[UpsertItem]) -> dict[DocumentKey, WriteIntent]:
        return self.inner.write_intents(items)

    def document_hash(self, document: Document) -> str:
        return self.inner.document_hash(document)

    def close(self) -> None:
        self.inner.close()

    def inventory(self) -> Iterator[RemoteDocument]:
        # Reads are retried inside the sinks themselves (``retry_reads``, under the policy they were built with).
        return self.inner.inventory()

    def fetch(self, remote_ids: Sequence[str]) -> dict[str, RemoteDocument | None] | None:
        return self.inner.fetch(remote_ids)  # a read, like inventory

    def inventory_of(self, keys: Collection[DocumentKey]) -> Iterator[RemoteDocument]:
        return self.inner.inventory_of(keys)

    def settle_reads(self) -> None:
        self.inner.settle_reads()

    def upsert(self, items: Sequence[UpsertItem]) -> list[Outcome]:
        return self._with_retries(list(items), lambda item: item.document.key, self.inner.upsert)

    def delete(self, items: Sequence[DeleteItem]) -> list[Outcome]:
        return self._with_retries(list(items), lambda item: item.key, self.inner.delete)

    def _call(
        self, call: Callable[[Sequence[Item]], list[Outcome]], batch: list[Item], key_of: Callable[[Item], DocumentKey]
    ) -> list[Outcome]:
        if self.bucket is not None:
            self.bucket.acquire(len(batch))
        try:
            outcomes = call(batch)
        except SinkError as error:
            return [Outcome(key_of(item), OutcomeKind.FAILED, error=error) for item in batch]
        if self.metrics is not None:
            self.metrics.sink_requests.labels(sink=self.name).inc(sum(o.calls for o in outcomes))
        if self.bucket is not None:
            extra = sum(o.calls for o in outcomes) - len(batch)
            if extra > 0:
                self.bucket.charge(extra)
        return outcomes

    def _with_retries(
        self,
        items: list[Item],
        key_of: Callable[[Item], DocumentKey],
        call: Callable[[Sequence[Item]], list[Outcome]],
    ) -> list[Outcome]:
        if not items:
            return []
        final: dict[DocumentKey, Outcome] = {}
        pending = items
        policy = self.policy
        limit = self.settings.max_inline_wait_s

        def wait(state: RetryCallState) -> float:
            hints = [o.error.retry_after for o in final.values() if o.error is not None and o.error.retry_after]
            return policy.delay(state.attempt_number, max(hints) if hints else None)

        def retry_hint_too_long() -> bool:
            return any(
                o.error is not None and o.error.retry_after is not None and o.error.retry_after > limit
                for o in final.values()
                if o.kind is OutcomeKind.FAILED
            )

        retrying = Retrying(
            stop=stop_after_attempt(self.settings.attempts),
            wait=wait,
            sleep=self._sleep,
            reraise=False,
            retry_error_callback=lambda _state: None,
            before_sleep=lambda _state: self._count_retry(),
        )
        for attempt in retrying:
            with attempt:
                outcomes = self._call(call, pending, key_of)
                final.update({o.key: o for o in outcomes})
                retry_keys = {
                    o.key
                    for o in outcomes
                    if o.kind is OutcomeKind.FAILED and o.error is not None and o.error.retryable
                }
                # A document whose lease is gone is not retried here: the worker that holds the row writes it.
                pending = [item for item in pending if key_of(item) in retry_keys and item.held()]
                if pending and not retry_hint_too_long():
                    raise TryAgain
        return [final[key_of(item)] for item in items if key_of(item) in final]

    def _count_retry(self) -> None:
        if self.metrics is not None:
            self.metrics.sink_retries.labels(sink=self.name).inc()
