"""The sink worker: takes dirty documents from ``replicator.outbox`` and makes one sink match Postgres.

One pass (``run_once``): lease a batch of due rows (``CLAIM_BATCH``, committed at once, so no transaction stays
open during slow API calls and a crashed worker's lease simply expires); render those documents from the CURRENT
rows in one snapshot; skip any whose content hash equals ``sink_state`` (no API call); upsert the present ones and
delete the missing ones; then, in one transaction, record each outcome: new ``sink_state``, and the outbox row
deleted only if its version is still the one claimed (``COMPLETE``) — a change that arrived meanwhile keeps the
row, so it is rendered again. Retryable failures come back after the shared backoff policy; permanent ones, and
rows out of attempts, move to ``replicator.dead_letter``.

``run`` repeats passes until ``stop`` is set, sleeping on ``LISTEN replicator_outbox`` (payload: the sink name)
between them, or until the next row is due. Any number of workers, threads or processes, may serve one sink:
``FOR UPDATE SKIP LOCKED`` plus the lease means a row is in one worker's hands at a time.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import psycopg
from psycopg import sql

from replicator.config import Settings
from replicator.documents import Document, DocumentKey, RemoteState, render
from replicator.logs import event_logger
from replicator.metrics import Metrics
from replicator.retry import BackoffPolicy
from replicator.sinks.base import DeleteItem, Outcome, OutcomeKind, Sink, SinkError, UpsertItem
from replicator.sinks.factory import backoff_policy
from replicator.status import configured_secrets, redact
from replicator.store import outbox, sink_state
from replicator.store.outbox import NOTIFY_CHANNEL, ClaimedRow, Lease

log = event_logger("replicator.worker")


class SinkWorker:
    """Applies the outbox of one sink. Construct one per thread; it opens its own connections."""

    def __init__(
        self,
        dsn: str,
        sink: Sink,
        *,
        settings: Settings,
        metrics: Metrics,
        worker_id: str,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        policy: BackoffPolicy | None = None,
    ) -> None:
        self.dsn = dsn
        self.sink = sink
        self.settings = settings
        self.metrics = metrics
        self.worker_id = worker_id
        self._clock = clock
        self._sleep = sleep
        self.policy = policy or backoff_policy(settings)
        self._secrets = configured_secrets(settings)
        self._lease = Lease(sink.name, worker_id)
        self._relation_ids: dict[DocumentKey, str] = {}
        self._conn: psycopg.Connection[Any] | None = None
        self._listen: psycopg.Connection[Any] | None = None

    # ---- connections ------------------------------------------------------------------------------------------

    def _work_conn(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            # autocommit with explicit transaction blocks: each step commits on its own, nothing stays open.
            self._conn = psycopg.connect(self.dsn, autocommit=True, application_name=f"replicator-{self.worker_id}")
        return self._conn

    def _listen_conn(self) -> psycopg.Connection[Any]:
        if self._listen is None or self._listen.closed:
            self._listen = psycopg.connect(self.dsn, autocommit=True, application_name=f"replicator-{self.worker_id}")
            self._listen.execute(sql.SQL("LISTEN {}").format(sql.Identifier(NOTIFY_CHANNEL)))
        return self._listen

    def close(self) -> None:
        for conn in (self._conn, self._listen):
            if conn is not None and not conn.closed:
                conn.close()
        self._conn = self._listen = None

    # ---- the loop -----------------------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Process batches until ``stop`` is set; the batch in flight when it is set is finished first."""
        failures = 0
        log.info("worker.started", sink=self.sink.name, worker=self.worker_id)
        try:
            while not stop.is_set():
                try:
                    # LISTEN before the first claim, so a NOTIFY sent while we work is queued, not lost.
                    self._listen_conn()
                    processed = self.run_once()
                    failures = 0
                    if processed == 0:
                        self._wait(stop)
                except psycopg.OperationalError as error:
                    failures += 1
                    delay = self.policy.delay(failures)
                    log.warning(
                        "worker.db_error", sink=self.sink.name, worker=self.worker_id, error=self._redact(str(error))
                    )
                    self.close()
                    stop.wait(delay)
        finally:
            self.close()
            log.info("worker.stopped", sink=self.sink.name, worker=self.worker_id)

    def _wait(self, stop: threading.Event) -> None:
        """Sleep until a NOTIFY for this sink, the next due row, the idle poll limit, or ``stop``."""
        due_in = outbox.next_due_in(self._work_conn(), self.sink.name, self.settings.settle_s(self.sink.name))
        timeout = self.settings.worker_idle_poll_s
        if due_in is not None:
            timeout = min(timeout, max(due_in, 0.0) + 0.01)
        deadline = self._clock() + timeout
        listen = self._listen_conn()
        while not stop.is_set():
            remaining = deadline - self._clock()
            if remaining <= 0:
                return
            # Short slices so a stop request is noticed within a fraction of a second.
            for notify in listen.notifies(timeout=min(remaining, 0.5), stop_after=1):
                if notify.payload == self.sink.name:
                    return

    def run_once(self) -> int:
        """One pass: claim, render, apply, record. Returns the number of rows claimed (0: nothing was due)."""
        conn = self._work_conn()
        claimed = self._claim(conn)
        if not claimed:
            return 0
        started = self._clock()
        keys = [row.key for row in claimed]
        docs, states = self._render(conn, keys)

        upserts: list[UpsertItem] = []
        deletes: list[DeleteItem] = []
        unchanged: list[DocumentKey] = []
        for key in keys:
            doc = docs.get(key)
            state = states.get(key)
            if doc is None:
                deletes.append(DeleteItem(key=key, state=state))
            elif state is not None and state.content_hash == self.sink.document_hash(doc):
                unchanged.append(key)
            else:
                related = {t: self._relation_ids[t] for t in doc.relation_keys() if t in self._relation_ids}
                upserts.append(UpsertItem(document=doc, state=state, relation_ids=related))

        outcomes: dict[DocumentKey, Outcome] = {}
        if upserts:
            outcomes.update(self._apply(self.sink.upsert, upserts, [i.document.key for i in upserts]))
        if deletes:
            outcomes.update(self._apply(self.sink.delete, deletes, [i.key for i in deletes]))
        self._record(conn, claimed, docs, outcomes, unchanged)
        self.metrics.apply_seconds.labels(sink=self.sink.name).observe(max(self._clock() - started, 0.0))
        return len(claimed)

    # ---- steps --------------------------------------------------------------------------------------------------

    def _claim(self, conn: psycopg.Connection[Any]) -> list[ClaimedRow]:
        return outbox.claim(
            conn,
            self._lease,
            limit=self.settings.worker_batch_size,
            lease_s=self.settings.lease_s,
            settle_s=self.settings.settle_s(self.sink.name),
        )

    def _render(
        self, conn: psycopg.Connection[Any], keys: list[DocumentKey]
    ) -> tuple[dict[DocumentKey, Document | None], dict[DocumentKey, RemoteState]]:
        with conn.transaction():
            # One snapshot for every query of the batch, so a document never mixes two commits.
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            docs = render(conn, keys)
            states = sink_state.read(conn, self.sink.name, keys)
            self._relation_ids = {}
            if self.sink.wants_relation_ids:
                targets = sorted({t for d in docs.values() if d is not None for t in d.relation_keys()})
                self._relation_ids = sink_state.remote_ids(conn, self.sink.name, targets)
        return docs, states

    def _apply(
        self, call: Callable[[Any], list[Outcome]], items: Sequence[Any], keys: list[DocumentKey]
    ) -> dict[DocumentKey, Outcome]:
        try:
            results = {o.key: o for o in call(items)}
        except SinkError as error:
            results = {k: Outcome(k, OutcomeKind.FAILED, error=error) for k in keys}
        except Exception as error:  # a bug in a sink must not kill the worker: retry, then dead-letter
            log.error("sink.crashed", sink=self.sink.name, error=self._redact(f"{type(error).__name__}: {error}"))
            failure = SinkError(f"sink raised {type(error).__name__}: {error}", retryable=True)
            results = {k: Outcome(k, OutcomeKind.FAILED, error=failure) for k in keys}
        for key in keys:
            if key not in results:
                missing = SinkError("the sink returned no outcome for this document", retryable=True)
                results[key] = Outcome(key, OutcomeKind.FAILED, error=missing)
        return {k: results[k] for k in keys}

    def _record(
        self,
        conn: psycopg.Connection[Any],
        claimed: list[ClaimedRow],
        docs: dict[DocumentKey, Document | None],
        outcomes: dict[DocumentKey, Outcome],
        unchanged: list[DocumentKey],
    ) -> None:
        sink = self.sink.name
        lease = self._lease
        successes = 0
        last_error: str | None = None
        skipped = set(unchanged)
        with conn.transaction():
            for row in claimed:
                key = row.key
                if key in skipped:
                    self.metrics.skipped_unchanged.labels(sink=sink).inc()
                    successes += 1
                    outbox.complete(conn, lease, row)
                    continue
                outcome = outcomes[key]
                self.metrics.sink_calls.labels(sink=sink, outcome=outcome.kind.value).inc()
                if outcome.kind is OutcomeKind.APPLIED:
                    doc = docs[key]
                    assert doc is not None
                    # The worker owns the content hash: it is what the next pass compares against.
                    state = outcome.state or RemoteState(remote_id=None, content_hash="", chunk_count=0)
                    sink_state.record(conn, sink, key, replace(state, content_hash=self.sink.document_hash(doc)))
                    successes += 1
                    outbox.complete(conn, lease, row)
                elif outcome.kind is OutcomeKind.DELETED:
                    sink_state.forget(conn, sink, key)
                    successes += 1
                    outbox.complete(conn, lease, row)
                elif outcome.kind is OutcomeKind.DEFERRED:
                    reason = self._redact(str(outcome.error) if outcome.error else "deferred by the sink")
                    if row.age_s >= self.settings.max_defer_s:
                        message = f"deferred for {row.age_s:.0f}s (REPLICATOR_MAX_DEFER_S): {reason}"
                        self._dead_letter(conn, row, message, permanent=False, count=0, guard_version=False)
                        last_error = message
                    else:
                        outbox.retry_later(conn, lease, key, delay_s=self.settings.defer_s, error=reason, attempts=0)
                else:
                    last_error = self._failed(conn, row, outcome)
            if successes:
                sink_state.record_success(conn, sink)
            if last_error is not None:
                sink_state.record_error(conn, sink, last_error)

    def _failed(self, conn: psycopg.Connection[Any], row: ClaimedRow, outcome: Outcome) -> str:
        error = outcome.error or SinkError("the sink reported a failure without an error", retryable=True)
        message = self._redact(str(error))
        attempt = row.attempts + 1
        if not error.retryable:
            self._dead_letter(conn, row, message, permanent=True, count=1, guard_version=True)
        elif attempt >= self.settings.max_attempts:
            text = f"gave up after {attempt} attempts: {message}"
            self._dead_letter(conn, row, text, permanent=False, count=1, guard_version=False)
        else:
            delay = self.policy.delay(attempt, error.retry_after)
            outbox.retry_later(conn, self._lease, row.key, delay_s=delay, error=message, attempts=1)
            self.metrics.sink_retries.labels(sink=self.sink.name).inc()
            log.info("sink.retry", sink=self.sink.name, key=str(row.key), attempt=attempt, delay_s=round(delay, 3))
        return message

    def _dead_letter(
        self,
        conn: psycopg.Connection[Any],
        row: ClaimedRow,
        message: str,
        *,
        permanent: bool,
        count: int,
        guard_version: bool,
    ) -> None:
        moved = outbox.dead_letter(
            conn, self._lease, row, message, permanent=permanent, attempts=count, guard_version=guard_version
        )
        if not moved:
            return  # a newer version arrived while the sink rejected the old one: it got its own try
        self.metrics.dead_letters.labels(sink=self.sink.name).inc()
        log.warning("sink.dead_letter", sink=self.sink.name, key=str(row.key), permanent=permanent, error=message)

    def _redact(self, text: str) -> str:
        return redact(text, self._secrets)


def new_worker_id(sink: str) -> str:
    """A worker id unique across processes and restarts (shown in ``claimed_by``)."""
    return f"{sink}-{uuid.uuid4().hex[:8]}"
