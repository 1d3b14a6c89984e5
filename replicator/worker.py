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
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from replicator.config import Settings
from replicator.documents import Document, DocumentKey, render
from replicator.logs import event_logger
from replicator.metrics import Metrics
from replicator.outbox import NOTIFY_CHANNEL
from replicator.retry import BackoffPolicy
from replicator.sinks.base import DeleteItem, Outcome, OutcomeKind, RemoteState, Sink, SinkError, UpsertItem
from replicator.sinks.factory import backoff_policy
from replicator.status import configured_secrets, redact

log = event_logger("replicator.worker")

# CLAIM_BATCH — correctness-critical. Leases up to ``limit`` due rows of one sink to this worker and commits at
# once. Safe with any number of concurrent workers: FOR UPDATE SKIP LOCKED makes two claims never pick the same row
# while either is deciding, and a row another worker just leased fails the ``claimed_until < now()`` recheck that
# Postgres applies to a row it locks after a concurrent update. MATERIALIZED keeps the locking subquery evaluated
# exactly once (the classic ``IN (SELECT … SKIP LOCKED)`` form may be re-planned as a join that re-executes it).
# Oldest first, so a backlog drains in arrival order. SETTLE: a row is due once its document has gone ``settle``
# seconds without a new change (a burst becomes one write), or has waited ten times that since its first change
# (so a document that never stops changing is still written).
CLAIM_BATCH = """
WITH due AS MATERIALIZED (
    SELECT sink, entity, entity_id
    FROM replicator.outbox
    WHERE sink = %(sink)s
      AND next_attempt_at <= now()
      AND (claimed_until IS NULL OR claimed_until < now())
      AND (last_enqueued_at <= now() - make_interval(secs => %(settle)s)
           OR first_enqueued_at <= now() - make_interval(secs => 10 * %(settle)s))
    ORDER BY first_enqueued_at, entity, entity_id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE replicator.outbox AS o
SET claimed_by = %(worker)s, claimed_until = now() + make_interval(secs => %(lease)s)
FROM due
WHERE (o.sink, o.entity, o.entity_id) = (due.sink, due.entity, due.entity_id)
RETURNING o.entity, o.entity_id, o.version, o.attempts,
          extract(epoch FROM now() - o.first_enqueued_at)::float8
"""

# What each document looked like when this sink last wrote it.
READ_SINK_STATE = """
SELECT s.entity, s.entity_id, s.remote_id, s.content_hash, s.chunk_count
FROM replicator.sink_state s
JOIN unnest(%(entities)s::text[], %(ids)s::uuid[]) AS k(entity, entity_id)
  ON (s.entity, s.entity_id) = (k.entity, k.entity_id)
WHERE s.sink = %(sink)s
"""

RECORD_STATE = """
INSERT INTO replicator.sink_state AS s (sink, entity, entity_id, remote_id, content_hash, chunk_count, synced_at)
VALUES (%(sink)s, %(entity)s, %(id)s, %(remote_id)s, %(hash)s, %(chunks)s, now())
ON CONFLICT (sink, entity, entity_id) DO UPDATE
SET remote_id = EXCLUDED.remote_id, content_hash = EXCLUDED.content_hash, chunk_count = EXCLUDED.chunk_count,
    synced_at = now()
"""

FORGET_STATE = "DELETE FROM replicator.sink_state WHERE sink = %(sink)s AND entity = %(entity)s AND entity_id = %(id)s"

# COMPLETE — correctness-critical. Removes the row only if no change arrived since the claim (same version) and
# this worker still holds it; otherwise the row stays, so the newer change is applied too (RELEASE).
COMPLETE = """
DELETE FROM replicator.outbox
WHERE sink = %(sink)s AND entity = %(entity)s AND entity_id = %(id)s
  AND version = %(version)s AND claimed_by = %(worker)s
"""

# RELEASE: give a still-pending row back (a newer version arrived while we applied the older one).
RELEASE = """
UPDATE replicator.outbox SET claimed_by = NULL, claimed_until = NULL, attempts = 0, last_error = NULL
WHERE sink = %(sink)s AND entity = %(entity)s AND entity_id = %(id)s AND claimed_by = %(worker)s
"""

# RETRY_LATER: count the attempt and come back after the backoff (or a deferral, which is not an attempt).
RETRY_LATER = """
UPDATE replicator.outbox
SET attempts = attempts + %(count)s, next_attempt_at = now() + make_interval(secs => %(delay)s),
    last_error = %(error)s, claimed_by = NULL, claimed_until = NULL
WHERE sink = %(sink)s AND entity = %(entity)s AND entity_id = %(id)s AND claimed_by = %(worker)s
"""

# DEAD_LETTER: move the row out of the outbox with its error in one statement (so it is never in both or neither).
# ``version`` is NULL to move whatever version is there (retries exhausted), or the claimed version (a permanent
# rejection of THAT content; a newer version deserves its own try).
DEAD_LETTER = """
WITH moved AS (
    DELETE FROM replicator.outbox
    WHERE sink = %(sink)s AND entity = %(entity)s AND entity_id = %(id)s AND claimed_by = %(worker)s
      AND (%(version)s::bigint IS NULL OR version = %(version)s::bigint)
    RETURNING sink, entity, entity_id, version, lsn, attempts, first_enqueued_at
)
INSERT INTO replicator.dead_letter AS d
    (sink, entity, entity_id, version, lsn, attempts, error, permanent, first_enqueued_at, failed_at)
SELECT sink, entity, entity_id, version, lsn, attempts + %(count)s, %(error)s, %(permanent)s, first_enqueued_at, now()
FROM moved
ON CONFLICT (sink, entity, entity_id) DO UPDATE
SET version = EXCLUDED.version, lsn = EXCLUDED.lsn, attempts = EXCLUDED.attempts, error = EXCLUDED.error,
    permanent = EXCLUDED.permanent, first_enqueued_at = EXCLUDED.first_enqueued_at, failed_at = now()
"""

# RESOLVE: the document is now in sync downstream, so an older dead letter for it (rejected content that a later
# change fixed, or a retry from `dlq retry`) no longer describes anything wrong; keeping it would leave `health`
# failing for a problem that is gone.
RESOLVE_DEAD_LETTER = """
DELETE FROM replicator.dead_letter WHERE sink = %(sink)s AND entity = %(entity)s AND entity_id = %(id)s
"""

SINK_SUCCESS = """
INSERT INTO replicator.sink_status AS s (sink, enabled, last_success_at) VALUES (%(sink)s, true, now())
ON CONFLICT (sink) DO UPDATE SET last_success_at = now()
"""

SINK_ERROR = """
INSERT INTO replicator.sink_status AS s (sink, enabled, last_error, last_error_at)
VALUES (%(sink)s, true, %(error)s, now())
ON CONFLICT (sink) DO UPDATE SET last_error = EXCLUDED.last_error, last_error_at = now()
"""

# The soonest moment a row of this sink becomes claimable: wake then even if no NOTIFY comes.
NEXT_DUE = """
SELECT extract(epoch FROM min(greatest(
    next_attempt_at,
    coalesce(claimed_until, next_attempt_at),
    least(last_enqueued_at + make_interval(secs => %(settle)s),
          first_enqueued_at + make_interval(secs => 10 * %(settle)s))
)) - now())::float8
FROM replicator.outbox WHERE sink = %(sink)s
"""


@dataclass(frozen=True)
class ClaimedRow:
    key: DocumentKey
    version: int
    attempts: int
    age_s: float  # since first_enqueued_at


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
        row = (
            self._work_conn()
            .execute(NEXT_DUE, {"sink": self.sink.name, "settle": self.settings.settle_s(self.sink.name)})
            .fetchone()
        )
        timeout = self.settings.worker_idle_poll_s
        if row is not None and row[0] is not None:
            timeout = min(timeout, max(row[0], 0.0) + 0.01)
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
            elif state is not None and state.content_hash == doc.content_hash():
                unchanged.append(key)
            else:
                upserts.append(UpsertItem(document=doc, state=state))

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
        params = {
            "sink": self.sink.name,
            "limit": self.settings.worker_batch_size,
            "worker": self.worker_id,
            "lease": self.settings.lease_s,
            "settle": self.settings.settle_s(self.sink.name),
        }
        with conn.transaction():
            rows = conn.execute(CLAIM_BATCH, params).fetchall()
        claimed = [ClaimedRow(DocumentKey(e, i), version, attempts, age) for e, i, version, attempts, age in rows]
        return sorted(claimed, key=lambda row: row.key)

    def _render(
        self, conn: psycopg.Connection[Any], keys: list[DocumentKey]
    ) -> tuple[dict[DocumentKey, Document | None], dict[DocumentKey, RemoteState]]:
        with conn.transaction():
            # One snapshot for every query of the batch, so a document never mixes two commits.
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            docs = render(conn, keys)
            rows = conn.execute(
                READ_SINK_STATE,
                {"sink": self.sink.name, "entities": [k.entity for k in keys], "ids": [k.id for k in keys]},
            ).fetchall()
        states = {
            DocumentKey(entity, id_): RemoteState(remote_id=remote_id, content_hash=digest, chunk_count=chunks)
            for entity, id_, remote_id, digest, chunks in rows
        }
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
        successes = 0
        last_error: str | None = None
        skipped = set(unchanged)
        with conn.transaction():
            for row in claimed:
                key = row.key
                base = {"sink": sink, "entity": key.entity, "id": key.id, "worker": self.worker_id}
                if key in skipped:
                    self.metrics.skipped_unchanged.labels(sink=sink).inc()
                    successes += 1
                    self._complete(conn, base, row)
                    continue
                outcome = outcomes[key]
                self.metrics.sink_calls.labels(sink=sink, outcome=outcome.kind.value).inc()
                if outcome.kind is OutcomeKind.APPLIED:
                    doc = docs[key]
                    assert doc is not None
                    # The worker owns the content hash: it is what the next pass compares against.
                    state = outcome.state or RemoteState(remote_id=None, content_hash="", chunk_count=0)
                    conn.execute(
                        RECORD_STATE,
                        {**base, "remote_id": state.remote_id, "hash": doc.content_hash(), "chunks": state.chunk_count},
                    )
                    successes += 1
                    self._complete(conn, base, row)
                elif outcome.kind is OutcomeKind.DELETED:
                    conn.execute(FORGET_STATE, base)
                    successes += 1
                    self._complete(conn, base, row)
                elif outcome.kind is OutcomeKind.DEFERRED:
                    reason = self._redact(str(outcome.error) if outcome.error else "deferred by the sink")
                    if row.age_s >= self.settings.max_defer_s:
                        message = f"deferred for {row.age_s:.0f}s (REPLICATOR_MAX_DEFER_S): {reason}"
                        self._dead_letter(conn, base, row, message, permanent=False, count=0, guard_version=False)
                        last_error = message
                    else:
                        conn.execute(RETRY_LATER, {**base, "count": 0, "delay": self.settings.defer_s, "error": reason})
                else:
                    last_error = self._failed(conn, base, row, outcome)
            if successes:
                conn.execute(SINK_SUCCESS, {"sink": sink})
            if last_error is not None:
                conn.execute(SINK_ERROR, {"sink": sink, "error": last_error})

    def _complete(self, conn: psycopg.Connection[Any], base: dict[str, Any], row: ClaimedRow) -> None:
        """The claimed version is in sync downstream."""
        conn.execute(RESOLVE_DEAD_LETTER, base)
        if conn.execute(COMPLETE, {**base, "version": row.version}).rowcount == 0:
            conn.execute(RELEASE, base)

    def _failed(self, conn: psycopg.Connection[Any], base: dict[str, Any], row: ClaimedRow, outcome: Outcome) -> str:
        error = outcome.error or SinkError("the sink reported a failure without an error", retryable=True)
        message = self._redact(str(error))
        attempt = row.attempts + 1
        if not error.retryable:
            self._dead_letter(conn, base, row, message, permanent=True, count=1, guard_version=True)
        elif attempt >= self.settings.max_attempts:
            text = f"gave up after {attempt} attempts: {message}"
            self._dead_letter(conn, base, row, text, permanent=False, count=1, guard_version=False)
        else:
            delay = self.policy.delay(attempt, error.retry_after)
            conn.execute(RETRY_LATER, {**base, "count": 1, "delay": delay, "error": message})
            self.metrics.sink_retries.labels(sink=self.sink.name).inc()
            log.info("sink.retry", sink=self.sink.name, key=str(row.key), attempt=attempt, delay_s=round(delay, 3))
        return message

    def _dead_letter(
        self,
        conn: psycopg.Connection[Any],
        base: dict[str, Any],
        row: ClaimedRow,
        message: str,
        *,
        permanent: bool,
        count: int,
        guard_version: bool,
    ) -> None:
        params = {
            **base,
            "version": row.version if guard_version else None,
            "error": message,
            "permanent": permanent,
            "count": count,
        }
        if conn.execute(DEAD_LETTER, params).rowcount == 0:
            # A newer version arrived while the sink rejected the old one: give the new content its own try.
            conn.execute(RELEASE, base)
            return
        self.metrics.dead_letters.labels(sink=self.sink.name).inc()
        log.warning("sink.dead_letter", sink=self.sink.name, key=str(row.key), permanent=permanent, error=message)

    def _redact(self, text: str) -> str:
        return redact(text, self._secrets)


def new_worker_id(sink: str) -> str:
    """A worker id unique across processes and restarts (shown in ``claimed_by``)."""
    return f"{sink}-{uuid.uuid4().hex[:8]}"
