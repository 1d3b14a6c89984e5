"""The outbox writer: a thread that commits the listener's batches to the outbox, in order, while the listener
goes on reading the stream (the server keeps decoding meanwhile). Batches handed over while one commits are merged
into one (group commit). Each outbox transaction also saves the slot's checkpoint; only once it has committed does
``committed_lsn`` move, and that is the only position the listener may confirm to the server, so the slot never
moves past a change whose outbox row is not durable.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from replicator.changes import format_lsn
from replicator.logs import event_logger
from replicator.metrics import Metrics
from replicator.routing import DirtyDocuments, SqlFeatureHolders
from replicator.source.options import SourceOptions, SourceProgress
from replicator.store import checkpoints
from replicator.store.outbox import enqueue_entities, enqueue_pairs, write_batch

log = event_logger("replicator.source")


@dataclass(frozen=True)
class Batch:
    """Dirty documents handed from the reader to the outbox writer, with the commit LSN they make durable
    (None for a piece of a transaction still open) and the heartbeat seen in them."""

    dirty: DirtyDocuments
    confirm: int | None
    heartbeat_seen: str | None
    lsn: int
    per_table: dict[str, int]

    def merge(self, later: Batch) -> Batch:
        """This batch followed by a later one, written as one (the outbox coalesces per document anyway)."""
        self.dirty.merge(later.dirty)
        per_table = dict(self.per_table)
        for table, n in later.per_table.items():
            per_table[table] = per_table.get(table, 0) + n
        return Batch(
            self.dirty,
            later.confirm if later.confirm is not None else self.confirm,
            later.heartbeat_seen if later.heartbeat_seen is not None else self.heartbeat_seen,
            max(self.lsn, later.lsn),
            per_table,
        )


class OutboxWriter(threading.Thread):
    """Writes batches to the outbox in its own thread, in order, so the reader keeps reading the stream while a
    batch commits (the server decodes on; a 2-core machine keeps both busy). GROUP COMMIT: a batch handed over
    while another is committing waits in one slot, and later ones are merged into it, so the reader can hand over
    every commit at once (low latency when the stream is quiet) and under load the writer still commits few, large
    transactions. Once the waiting batch holds ``batch_max_changes`` documents, ``submit`` blocks: memory stays
    bounded and the reader is pushed back. ``committed_lsn`` is the highest commit LSN whose outbox rows are
    durable: the only position the reader may confirm."""

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        options: SourceOptions,
        *,
        metrics: Metrics,
        progress: SourceProgress,
    ) -> None:
        super().__init__(name="replicator-outbox-writer", daemon=True)
        if not conn.autocommit:
            # A batch is one statement that must be its own transaction (outbox.write_batch).
            raise ValueError("the outbox writer needs an autocommit connection")
        self.conn = conn
        self.options = options
        self.metrics = metrics
        self.progress = progress
        self.holders = SqlFeatureHolders(conn)
        self.committed_lsn = 0
        self.error: BaseException | None = None
        self._cap = options.batch_max_changes
        self._pending = 0
        self._waiting: Batch | None = None
        self._closing = False
        self._cv = threading.Condition()

    @property
    def pending(self) -> int:
        """Batches submitted and not yet committed (merged ones count once)."""
        with self._cv:
            return self._pending

    def submit(self, batch: Batch, while_waiting: Callable[[], None]) -> None:
        """Hand a batch over (merged into the one waiting, if any); while the waiting one is full, call
        ``while_waiting`` now and then (it keeps the replication connection alive: a slow outbox must not make
        the server time the stream out)."""
        while True:
            self.check()
            with self._cv:
                waiting = self._waiting
                if waiting is None:
                    self._waiting = batch
                    self._pending += 1
                    self._cv.notify_all()
                    return
                if len(waiting.dirty) < self._cap:
                    self._waiting = waiting.merge(batch)
                    return
                if self._cv.wait(1.0):
                    continue
            while_waiting()

    def check(self) -> None:
        """Re-raise, in the reader's thread, a failure of the writer (the loop then reconnects)."""
        if self.error is not None:
            raise self.error

    def run(self) -> None:
        while True:
            with self._cv:
                while self._waiting is None and not self._closing:
                    self._cv.wait()
                batch = self._waiting
                if batch is None:
                    return
                self._waiting = None
                self._cv.notify_all()
            try:
                self._write(batch)
            except BaseException as exc:
                self.error = exc
                return
            finally:
                with self._cv:
                    self._pending -= 1
                    self._cv.notify_all()

    def close(self, timeout: float) -> None:
        """Finish the handed-over batches (up to ``timeout``) and stop."""
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        if self.is_alive():
            self.join(timeout)

    def _write(self, job: Batch) -> None:
        opts = self.options
        keys, whole_entities = job.dirty.resolve_pairs(self.holders)
        sinks = opts.sinks
        lsn = job.confirm if job.confirm is not None else job.lsn
        written = 0
        if not keys and not whole_entities and job.heartbeat_seen is None:
            # Only a commit to confirm, queued behind real batches to keep the order: nothing to write (writing a
            # checkpoint here would put an empty transaction in the stream, which would come back as another one).
            if job.confirm is not None and job.confirm > self.committed_lsn:
                self.committed_lsn = job.confirm
            return
        checkpoint = (
            checkpoints.save_params(opts.slot, job.confirm, heartbeat_seen=job.heartbeat_seen, leader=opts.leader)
            if job.confirm is not None
            else None
        )
        if not whole_entities:
            # Nearly every batch: the upsert, its notification and the checkpoint in ONE statement, its own
            # transaction on this autocommit connection (one round trip, one statement for the server, one wake-up
            # of this thread). Committed before ``committed_lsn`` moves, exactly as before.
            written += write_batch(self.conn, sinks, keys, lsn, checkpoint=checkpoint)
        else:
            # Whole entities (a TRUNCATE: rare) read their row counts, statement by statement.
            with self.conn.transaction():
                if keys and sinks:
                    written += enqueue_pairs(self.conn, sinks, keys, lsn)
                if sinks:
                    written += enqueue_entities(self.conn, sinks, sorted(whole_entities), lsn)
                if checkpoint is not None:
                    checkpoints.save(
                        self.conn, opts.slot, checkpoint["lsn"], heartbeat_seen=job.heartbeat_seen, leader=opts.leader
                    )
        if job.confirm is not None and job.confirm > self.committed_lsn:
            self.committed_lsn = job.confirm
        m = self.metrics
        m.batches.inc()
        for sink in sinks:
            m.documents_enqueued.labels(sink).inc(len(keys))
        for table, n in job.per_table.items():
            m.changes_read.labels(table).inc(n)
        self.progress.batches += 1
        log.debug(
            "outbox.enqueued",
            documents=len(keys),
            rows=written,
            whole_entities=",".join(sorted(whole_entities)),
            lsn=format_lsn(lsn),
            confirmed=job.confirm is not None,
        )
