"""The sink worker: takes dirty documents from ``replicator.outbox`` and makes one sink match Postgres.

One pass (``run_once``): lease a batch of due rows (``CLAIM_BATCH``, committed at once, so no transaction stays
open during slow API calls and a crashed worker's lease simply expires); render those documents from the CURRENT
rows in one snapshot; skip any whose content hash equals ``sink_state`` (no API call); record a write intent for
sinks with parts (``write_intents``: Pinecone's chunk count, committed before the write so a lost answer cannot
hide chunks); upsert the present ones (``force`` when ``resync --force`` or ``verify --repair`` marked them) and
delete the missing ones; then, in one transaction, record each outcome: new ``sink_state``, and the outbox row
deleted only if its version is still the one claimed (``COMPLETE``) — a change that arrived meanwhile keeps the
row, so it is rendered again. Retryable failures come back after the shared backoff policy; permanent ones, and
rows out of attempts, move to ``replicator.dead_letter``.

A claimed batch never outlives its lease unnoticed: while the sink works, a ``LeaseKeeper`` thread renews the
batch's leases every third of ``REPLICATOR_LEASE_S`` (``renew_leases``); every item handed to the sink carries a
fence (``UpsertItem.held``) that turns False once a row was taken by another worker, or once renewals have failed
for so long that the lease may run out, and sinks check it before each write request; the recording transaction
locks the rows still held (``held_claims``) and records nothing for the others. A worker that hits a database
error gives its claims back at once (``release_claims``) instead of letting them wait for the lease to run out.

``run`` repeats passes until ``stop`` is set, sleeping on ``LISTEN replicator_outbox`` (payload: the sink name)
between them, or until the next row is due. Any number of workers, threads or processes, may serve one sink:
``FOR UPDATE SKIP LOCKED`` plus the lease means a row is in one worker's hands at a time.

Sink isolation (``replicator/sink_gate.py``): with a ``SinkGate``, ``run`` claims nothing while the gate says the
sink is down, and reports a pass whose every item failed retryably, or any sink-wide error (``SinkError.sink_wide``:
the sink's fault, not the document's), so the gate re-checks the sink with backoff. A sink-wide failure never
dead-letters its row: the row goes back to the outbox without counting an attempt. A lost Postgres connection
(a restart, a failover) closes this worker's connections and reconnects after the shared backoff.
"""

from __future__ import annotations

import functools
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from replicator.config import Settings
from replicator.documents import Document, DocumentKey, RemoteState, WriteIntent, render
from replicator.logs import event_logger
from replicator.metrics import Metrics
from replicator.retry import BackoffPolicy, backoff_policy
from replicator.scope import in_scope, related_inside, restrict
from replicator.sinks.base import (
    DeleteItem,
    LeaseLostError,
    Outcome,
    OutcomeKind,
    Sink,
    SinkError,
    SinkSchemaError,
    UpsertItem,
    lease_lost,
)
from replicator.status import configured_secrets, redact
from replicator.store import outbox, sink_state
from replicator.store.outbox import NOTIFY_CHANNEL, ClaimedRow, Lease

if TYPE_CHECKING:
    from replicator.sink_gate import SinkGate

log = event_logger("replicator.worker")

# A lease counts as gone this fraction of REPLICATOR_LEASE_S before it would run out unrenewed: the margin covers
# a request already on its way when the fence was checked.
LEASE_MARGIN = 0.25


class LeaseKeeper:
    """The heartbeat of one claimed batch: renews the batch's leases every ``lease_s / 3`` on a connection of its
    own while the sink works, and answers ``holds(key)``: False for a row another worker took (lost for good), and
    for every row once the last confirmed renewal is within ``LEASE_MARGIN`` of running out (the database is
    unreachable, or the renewals are stuck), so a stalled worker stops writing before another can take its rows."""

    def __init__(
        self,
        lease: Lease,
        keys: Sequence[DocumentKey],
        *,
        lease_s: float,
        claimed_at: float,
        connect: Callable[[], psycopg.Connection[Any]],
        disconnect: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
        on_lost: Callable[[set[DocumentKey]], None] = lambda keys: None,
    ) -> None:
        self._lease = lease
        self._keys = set(keys)
        self._lost: set[DocumentKey] = set()
        self._lease_s = lease_s
        self._valid_until = claimed_at + lease_s
        self._connect = connect
        self._disconnect = disconnect
        self._clock = clock
        self._on_lost = on_lost
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{lease.worker}", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def holds(self, key: DocumentKey) -> bool:
        with self._lock:
            return key not in self._lost and self._clock() < self._valid_until - LEASE_MARGIN * self._lease_s

    def fence(self, key: DocumentKey) -> Callable[[], bool]:
        return functools.partial(self.holds, key)

    def _run(self) -> None:
        while not self._stop.wait(self._lease_s / 3):
            with self._lock:
                pending = self._keys - self._lost
            if not pending:
                return
            sent = self._clock()
            try:
                kept = outbox.renew(self._connect(), self._lease, pending, lease_s=self._lease_s)
            except psycopg.Error as error:
                # The lease is not extended; holds() turns False when the last confirmed one nears its end.
                log.warning("worker.lease_renew_failed", sink=self._lease.sink, worker=self._lease.worker,
                            error=type(error).__name__)  # fmt: skip
                self._disconnect()
                continue
            with self._lock:
                newly = pending - kept
                self._lost |= newly
                self._valid_until = sent + self._lease_s
            if newly:
                self._on_lost(newly)


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
        gate: SinkGate | None = None,
    ) -> None:
        self.dsn = dsn
        self.sink = sink
        self.gate = gate
        self.settings = settings
        self.metrics = metrics
        self.worker_id = worker_id
        self._clock = clock
        self._sleep = sleep
        self.policy = policy or backoff_policy(settings)
        self._secrets = configured_secrets(settings)
        self._lease = Lease(sink.name, worker_id)
        self._relation_ids: dict[DocumentKey, str] = {}
        # The documents this sink carries (replicator/scope.py); everything costs no query.
        self.scope = settings.scope_of(sink.name)
        self._conn: psycopg.Connection[Any] | None = None
        self._listen: psycopg.Connection[Any] | None = None
        self._beat: psycopg.Connection[Any] | None = None

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

    def _beat_conn(self) -> psycopg.Connection[Any]:
        """The heartbeat's connection (used only by the ``LeaseKeeper`` thread, while a batch is in flight)."""
        if self._beat is None or self._beat.closed:
            self._beat = psycopg.connect(
                self.dsn, autocommit=True, connect_timeout=5, application_name=f"replicator-{self.worker_id}-lease"
            )
        return self._beat

    def _drop_beat_conn(self) -> None:
        if self._beat is not None and not self._beat.closed:
            self._beat.close()
        self._beat = None

    def close(self) -> None:
        for conn in (self._conn, self._listen, self._beat):
            if conn is not None and not conn.closed:
                conn.close()
        self._conn = self._listen = self._beat = None

    def _release_claims(self) -> None:
        """After a database error: give back every row this worker holds, on a fresh connection, so other workers
        take them at once. If the database cannot be reached either, the leases simply run out."""
        try:
            with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as conn:
                released = outbox.release_all(conn, self._lease)
        except psycopg.Error as error:
            log.warning("worker.release_failed", sink=self.sink.name, worker=self.worker_id, error=type(error).__name__)
            return
        if released:
            log.info("worker.claims_released", sink=self.sink.name, worker=self.worker_id, rows=released)

    # ---- the loop -----------------------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Process batches until ``stop`` is set; the batch in flight when it is set is finished first."""
        failures = 0
        log.info("worker.started", sink=self.sink.name, worker=self.worker_id)
        try:
            while not stop.is_set():
                if self.gate is not None and self.gate.ensure(stop) is None:
                    break  # stopped while the sink was down
                try:
                    # LISTEN before the first claim, so a NOTIFY sent while we work is queued, not lost.
                    self._listen_conn()
                    if failures:
                        # Reconnected after a broken connection: rows claimed in the broken pass are ours still.
                        released = outbox.release_all(self._work_conn(), self._lease)
                        if released:
                            log.info("worker.leases_released", sink=self.sink.name, rows=released)
                    processed = self.run_once()
                    failures = 0
                    if processed == 0:
                        self._wait(stop)
                except (psycopg.OperationalError, psycopg.InterfaceError) as error:
                    failures += 1
                    delay = self.policy.delay(failures)
                    log.warning(
                        "worker.db_error", sink=self.sink.name, worker=self.worker_id, error=self._redact(str(error))
                    )
                    self.close()
                    self._release_claims()
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
        started = self._clock()
        claimed = self._claim(conn)
        if not claimed:
            return 0
        keys = [row.key for row in claimed]
        keeper = LeaseKeeper(
            self._lease,
            keys,
            lease_s=self.settings.lease_s,
            claimed_at=started,
            connect=self._beat_conn,
            disconnect=self._drop_beat_conn,
            clock=self._clock,
            on_lost=self._lost,
        )
        with keeper:
            outcomes, docs, unchanged, scoped = self._work(conn, keys, keeper)
        self._record(conn, claimed, docs, outcomes, unchanged, scoped)
        self._report(outcomes, [*unchanged, *(scoped.left_out if scoped else ())])
        self.metrics.apply_seconds.labels(sink=self.sink.name).observe(max(self._clock() - started, 0.0))
        return len(claimed)

    def _lost(self, keys: set[DocumentKey]) -> None:
        self.metrics.leases_lost.labels(sink=self.sink.name).inc(len(keys))
        log.warning("worker.lease_lost", sink=self.sink.name, worker=self.worker_id, keys=sorted(map(str, keys)))

    def _work(
        self, conn: psycopg.Connection[Any], keys: list[DocumentKey], keeper: LeaseKeeper
    ) -> tuple[dict[DocumentKey, Outcome], dict[DocumentKey, Document | None], list[DocumentKey], ScopedPass | None]:
        """Render, skip the unchanged, write the rest: the part of a pass that runs under the lease keeper."""
        docs, states, scoped = self._render(conn, keys)

        upserts: list[UpsertItem] = []
        deletes: list[DeleteItem] = []
        unchanged: list[DocumentKey] = []
        for key in keys:
            doc = docs.get(key)
            state = states.get(key)
            if scoped is not None and key in scoped.outside:
                # Outside the sink's scope: never written; removed if the sink holds it, unless the operator keeps it.
                if state is not None and state.content_hash != sink_state.SCOPE_REMOVED_HASH and scoped.remove:
                    deletes.append(DeleteItem(key=key, state=state, out_of_scope=True))
                    scoped.removing[key] = state
                else:
                    scoped.left_out.append(key)
                continue
            if doc is None:
                deletes.append(DeleteItem(key=key, state=state))
            elif state is not None and state.content_hash == self.sink.document_hash(doc):
                unchanged.append(key)
            else:
                related = {t: self._relation_ids[t] for t in doc.relation_keys() if t in self._relation_ids}
                force = state is not None and state.content_hash in sink_state.FORCE_HASHES
                upserts.append(
                    UpsertItem(
                        document=doc,
                        state=state,
                        relation_ids=related,
                        record_intent=self._intent(conn, key),
                        held=keeper.fence(key),
                        force=force,
                    )
                )

        outcomes: dict[DocumentKey, Outcome] = {}
        if upserts:
            self._record_intents(conn, self.sink.write_intents(upserts))
            upserts = self._still_held(upserts, lambda i: i.document.key, keeper, outcomes)
            if upserts:
                outcomes.update(self._apply(self.sink.upsert, upserts, [i.document.key for i in upserts]))
        if deletes:
            deletes = [replace(i, held=keeper.fence(i.key)) for i in deletes]
            deletes = self._still_held(deletes, lambda i: i.key, keeper, outcomes)
            if deletes:
                outcomes.update(self._apply(self.sink.delete, deletes, [i.key for i in deletes]))
        return outcomes, docs, unchanged, scoped

    @staticmethod
    def _still_held(
        items: list[Any],
        key_of: Callable[[Any], DocumentKey],
        keeper: LeaseKeeper,
        outcomes: dict[DocumentKey, Outcome],
    ) -> list[Any]:
        """The items whose lease still holds; the others get a ``lease_lost`` outcome and are not sent."""
        kept = []
        for item in items:
            key = key_of(item)
            if keeper.holds(key):
                kept.append(item)
            else:
                outcomes[key] = lease_lost(key)
        return kept

    def _report(self, outcomes: dict[DocumentKey, Outcome], unchanged: list[DocumentKey]) -> None:
        """Tell the gate how the sink fared: down for a sink-wide error or a pass where every item failed
        retryably (unreachable, rate limited, 5xx); fine when anything was applied."""
        if self.gate is None:
            return
        failed = [
            o.error
            for o in outcomes.values()
            if o.kind is OutcomeKind.FAILED and o.error is not None and not isinstance(o.error, LeaseLostError)
        ]
        sink_wide = next((e for e in failed if e.sink_wide), None)
        if sink_wide is not None:
            self.gate.report_down(sink_wide, config=True)
        elif failed and len(failed) == len(outcomes) and not unchanged and all(e.retryable for e in failed):
            self.gate.report_down(failed[0])
        elif len(failed) < len(outcomes) or unchanged:
            self.gate.report_success()

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
    ) -> tuple[dict[DocumentKey, Document | None], dict[DocumentKey, RemoteState], ScopedPass | None]:
        with conn.transaction():
            # One snapshot for every query of the batch, so a document never mixes two commits.
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            docs = render(conn, keys)
            states = sink_state.read(conn, self.sink.name, keys)
            scoped = None
            if not self.scope.everything:
                docs, scoped = self._scoped(conn, docs, states)
            self._relation_ids = {}
            if self.sink.wants_relation_ids:
                targets = sorted({t for d in docs.values() if d is not None for t in d.relation_keys()})
                self._relation_ids = sink_state.remote_ids(conn, self.sink.name, targets)
        return docs, states, scoped

    def _scoped(
        self,
        conn: psycopg.Connection[Any],
        docs: dict[DocumentKey, Document | None],
        states: dict[DocumentKey, RemoteState],
    ) -> tuple[dict[DocumentKey, Document | None], ScopedPass]:
        """The batch as this sink's scope sees it, in the render's snapshot: documents outside it set apart, the
        others without relations to documents outside it (``scope.restrict``), and for each the in-scope documents
        related to it (rendered again when it enters or leaves the scope, so their copies name it, or stop)."""
        present = {k: d for k, d in docs.items() if d is not None}
        targets = set(present)
        for doc in present.values():
            targets.update(doc.relation_keys())
            targets.update(m.other for m in doc.signature_matches)
        inside = in_scope(conn, self.scope, targets)
        scoped = ScopedPass(
            outside=frozenset(k for k in present if k not in inside),
            states=states,
            remove=self.settings.scope_narrow == "remove",
        )
        out: dict[DocumentKey, Document | None] = {}
        for key, rendered in docs.items():
            if rendered is None:
                out[key] = None
                continue
            if key in inside:
                rendered = restrict(rendered, inside)
                out[key] = rendered
            scoped.neighbours[key] = frozenset(related_inside(rendered, inside))
        return out, scoped

    def _intent(self, conn: psycopg.Connection[Any], key: DocumentKey) -> Callable[[WriteIntent], None]:
        """What ``UpsertItem.record_intent`` runs: ``_record_intents`` for one document, right before the call."""
        return lambda intent: self._record_intents(conn, {key: intent})

    def _record_intents(self, conn: psycopg.Connection[Any], intents: Mapping[DocumentKey, WriteIntent]) -> None:
        """The one record-before-write (``WriteIntent``, ``record_intents``): committed on its own before the write
        it announces, for the rows this worker still holds. Before the pass with ``Sink.write_intents``; right
        before a call with ``UpsertItem.record_intent``."""
        if intents:
            with conn.transaction():
                sink_state.record_intents(conn, self.sink.name, self.worker_id, intents)

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
        scoped: ScopedPass | None = None,
    ) -> None:
        sink = self.sink.name
        lease = self._lease
        successes = 0
        last_error: str | None = None
        skipped = set(unchanged)
        left_out = set(scoped.left_out) if scoped is not None else set()
        duplicates = sum(o.duplicates for o in outcomes.values())
        written_entities: set[str] = set()
        with conn.transaction():
            # The fence: rows another worker took after our lease ran out are not ours to record.
            ours = outbox.held(conn, lease, [row.key for row in claimed])
            for row in claimed:
                key = row.key
                if key not in ours:
                    continue
                if key in left_out:
                    assert scoped is not None
                    state = scoped.states.get(key)
                    held = state is not None and state.content_hash != sink_state.SCOPE_REMOVED_HASH
                    self.metrics.out_of_scope.labels(sink=sink, action="kept" if held else "not_written").inc()
                    scoped.crossed.add(key)
                    successes += 1
                    outbox.complete(conn, lease, row)
                    continue
                if key in skipped:
                    self.metrics.skipped_unchanged.labels(sink=sink).inc()
                    successes += 1
                    outbox.complete(conn, lease, row)
                    continue
                outcome = outcomes[key]
                if isinstance(outcome.error, LeaseLostError):
                    # Not written because the lease looked gone; still ours in the database: back at once, no
                    # attempt counted (nothing failed downstream).
                    outbox.retry_later(conn, lease, key, delay_s=0.0, error=str(outcome.error), attempts=0)
                    continue
                self.metrics.sink_calls.labels(sink=sink, outcome=outcome.kind.value).inc()
                if outcome.kind is OutcomeKind.APPLIED:
                    doc = docs[key]
                    assert doc is not None
                    # The worker owns the content hash: it is what the next pass compares against.
                    state = outcome.state or RemoteState(remote_id=None, content_hash="", chunk_count=0)
                    sink_state.record(conn, sink, key, replace(state, content_hash=self.sink.document_hash(doc)))
                    written_entities.add(key.entity)
                    if scoped is not None and scoped.newly_carried(key):
                        scoped.crossed.add(key)
                    successes += 1
                    outbox.complete(conn, lease, row)
                elif outcome.kind is OutcomeKind.DELETED:
                    removed = scoped.removing.get(key) if scoped is not None else None
                    if removed is not None and scoped is not None:
                        # Removed for the scope: the remote id stays (a page comes back from the trash with the
                        # blocks people wrote, when its document is in scope again), marked as not held.
                        marker = RemoteState(removed.remote_id, sink_state.SCOPE_REMOVED_HASH, chunk_count=0)
                        sink_state.record(conn, sink, key, marker)
                        self.metrics.out_of_scope.labels(sink=sink, action="removed").inc()
                        scoped.crossed.add(key)
                    else:
                        sink_state.forget(conn, sink, key)
                    successes += 1
                    outbox.complete(conn, lease, row)
                elif outcome.kind is OutcomeKind.DEFERRED:
                    reason = self._redact(str(outcome.error) if outcome.error else "deferred by the sink")
                    if isinstance(outcome.error, SinkSchemaError):
                        # Waits for an operator's schema fix, however long: never a dead letter.
                        sink_state.record_schema_problem(conn, sink, outcome.error.entity, reason)
                        self.metrics.schema_waits.labels(sink=sink).inc()
                        outbox.retry_later(conn, lease, key, delay_s=self.settings.defer_s, error=reason, attempts=0)
                    elif row.age_s >= self.settings.max_defer_s:
                        message = f"deferred for {row.age_s:.0f}s (REPLICATOR_MAX_DEFER_S): {reason}"
                        self._dead_letter(conn, row, message, permanent=False, count=0, guard_version=False)
                        last_error = message
                    else:
                        outbox.retry_later(conn, lease, key, delay_s=self.settings.defer_s, error=reason, attempts=0)
                else:
                    last_error = self._failed(conn, row, outcome)
            if scoped is not None:
                self._enqueue_neighbours(conn, scoped, {row.key for row in claimed})
            if duplicates:
                self.metrics.duplicates_found.labels(sink=sink).inc(duplicates)
                sink_state.record_duplicates(conn, sink, duplicates)
            sink_state.clear_schema_problem(conn, sink, written_entities)
            if successes:
                sink_state.record_success(conn, sink)
            if last_error is not None:
                sink_state.record_error(conn, sink, last_error)

    def _enqueue_neighbours(self, conn: psycopg.Connection[Any], scoped: ScopedPass, batch: set[DocumentKey]) -> None:
        """A document that entered this sink (first written) or is outside its scope changes what its in-scope
        neighbours' copies may name (their relations to it): enqueue those, for this sink only, so they are
        rendered again. Only in-scope neighbours, and only a first write re-enqueues in turn, so this ends; the
        documents of this batch were rendered in this snapshot already."""
        again = {n for key in scoped.crossed for n in scoped.neighbours.get(key, ())} - batch
        if again:
            outbox.enqueue(conn, {self.sink.name: sorted(again)}, outbox.current_lsn(conn))

    def _failed(self, conn: psycopg.Connection[Any], row: ClaimedRow, outcome: Outcome) -> str:
        error = outcome.error or SinkError("the sink reported a failure without an error", retryable=True)
        message = self._redact(str(error))
        attempt = row.attempts + 1
        if error.sink_wide:
            # The sink's fault, not this document's: the row waits, uncounted, until the sink answers again.
            delay = self.settings.sink_recheck_min_s
            outbox.retry_later(conn, self._lease, row.key, delay_s=delay, error=message, attempts=0)
            return message
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


@dataclass
class ScopedPass:
    """One pass of a worker whose sink has a scope: what fell outside it and what was done about it."""

    outside: frozenset[DocumentKey]  # claimed documents that exist but are outside the scope
    states: dict[DocumentKey, RemoteState]  # the sink states read with the render
    remove: bool  # REPLICATOR_SCOPE_NARROW=remove
    neighbours: dict[DocumentKey, frozenset[DocumentKey]] = field(default_factory=dict)  # in-scope related documents
    removing: dict[DocumentKey, RemoteState] = field(default_factory=dict)  # held, outside: deleted downstream
    left_out: list[DocumentKey] = field(default_factory=list)  # outside and not deleted (not held, or kept)
    crossed: set[DocumentKey] = field(default_factory=set)  # entered the sink or are outside it: see neighbours

    def newly_carried(self, key: DocumentKey) -> bool:
        """Written with no record of being held before (a first write, or back in scope after a removal)."""
        state = self.states.get(key)
        return (
            state is None
            or state.content_hash == sink_state.SCOPE_REMOVED_HASH
            or state.content_hash.startswith(
                "intent:"  # a write in flight when the last pass ended: perhaps never applied
            )
        )


def new_worker_id(sink: str) -> str:
    """A worker id unique across processes and restarts (shown in ``claimed_by``)."""
    return f"{sink}-{uuid.uuid4().hex[:8]}"
