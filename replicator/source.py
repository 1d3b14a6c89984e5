"""The source: reads the wal2json slot over the streaming replication protocol and turns it into durable outbox
rows, confirming to the server only what is committed.

``ReplicationStream`` speaks the protocol through psycopg 3's libpq layer (its high-level API has no replication
support): a ``replication=database`` connection, ``START_REPLICATION … LOGICAL`` with wal2json format-version 2,
then COPY_BOTH — XLogData (``w``) and keepalives (``k``) in, standby status updates (``r``) out.

``SourceLoop`` reads each record's key values (``changes.KeyScanner``; ``changes.parse`` for the rare rest), routes
them to dirty documents (``routing``) and writes them to the outbox (``outbox``) in batches cut at commit records:
as soon as the stream has nothing more buffered, or at ``batch_max_changes`` row changes or ``batch_max_wait_ms``
under sustained load. A writer thread commits each batch while the reader goes on reading (the server keeps
decoding meanwhile), merging what is handed over meanwhile (group commit); only after the outbox transaction
commits is the batch's end LSN sent as the flushed
position, so the slot never moves past a change whose outbox row is not durable. A huge transaction is streamed
in bounded memory: only its dirty keys are kept (a set), flushed to the outbox mid-transaction when the set grows,
and its LSN is confirmed at its commit record. The loop also writes a heartbeat row every few seconds; seeing it
come back through the stream is recorded in ``source_checkpoint`` (lag in seconds) and keeps an idle slot moving.
A broken connection is retried with backoff (tenacity); a missing or invalidated slot is an incident
(``SlotLostError``), never silently recreated.
"""

from __future__ import annotations

import contextlib
import random
import select
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import pq
from psycopg.pq.abc import PGconn
from tenacity import RetryCallState, Retrying, retry_if_exception_type

from replicator.changes import (
    ACTION_AT,
    ACTION_PREFIX,
    ROW_ACTION_BYTES,
    Action,
    Change,
    KeyScanner,
    format_lsn,
    parse,
)
from replicator.errors import PermanentError
from replicator.logs import event_logger
from replicator.metrics import Metrics
from replicator.routing import DOMAIN_SCHEMA, ROUTE_COLUMNS, SOURCE_TABLES, DirtyDocuments, SqlFeatureHolders
from replicator.store import checkpoints
from replicator.store.checkpoints import HEARTBEAT_TABLE
from replicator.store.outbox import enqueue_entities, enqueue_pairs

log = event_logger("replicator.source")

PLUGIN = "wal2json"
# Microseconds between the Unix epoch and the Postgres epoch (2000-01-01), for standby status timestamps.
_PG_EPOCH_US = 946_684_800_000_000
_XLOGDATA = struct.Struct(">QQQ")  # wal start, wal end, server clock
_KEEPALIVE = struct.Struct(">QQB")  # wal end, server clock, reply requested
_STATUS = struct.Struct(">QQQQB")  # written, flushed, applied, client clock, reply requested
# Status updates are sent at least this often, well inside the server's wal_sender_timeout (60 s on our clusters).
STATUS_INTERVAL_S = 10.0
# Reconnect backoff after a broken stream (a Postgres restart): base doubling to max; reset by a session that
# streamed this long.
_RECONNECT_BASE_S = 0.5
_RECONNECT_MAX_S = 30.0
_STABLE_SESSION_S = 10.0
# Messages handled between two looks at the clock (timers); small enough to stay responsive.
_DRAIN = 512


class SourceError(PermanentError):
    """The source cannot stream (a wrong slot plugin, a protocol error)."""


class SlotLostError(SourceError):
    """The slot vanished or was invalidated after the replicator had used it: changes are gone. Recovery is an
    explicit operator step (``replicator slot drop`` then a run, which recreates the slot and backfills)."""

    def __init__(self, slot: str, reason: str) -> None:
        super().__init__(
            f"replication slot {slot!r} {reason}; changes may be lost. Run 'replicator slot drop' "
            "and restart to recreate it with a full resync."
        )
        self.slot = slot
        self.reason = reason


class StreamInterruptedError(SourceError):
    """The replication connection ended or broke; the loop reconnects."""

    retryable = True


# ---- slot management ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlotInfo:
    name: str
    exists: bool
    plugin: str | None = None
    active_pid: int | None = None
    confirmed_flush_lsn: int | None = None
    wal_status: str | None = None


def slot_info(conn: psycopg.Connection[Any], slot: str) -> SlotInfo:
    row = conn.execute(
        "SELECT plugin, active_pid, (confirmed_flush_lsn - '0/0')::bigint, wal_status "
        "FROM pg_replication_slots WHERE slot_name = %s AND database = current_database()",
        (slot,),
    ).fetchone()
    if row is None:
        return SlotInfo(slot, exists=False)
    return SlotInfo(slot, True, row[0], row[1], row[2], row[3])


def create_slot(conn: psycopg.Connection[Any], slot: str) -> int:
    """Create the wal2json slot; returns its consistent point (changes after it stream, rows before it are
    backfilled)."""
    row = conn.execute(
        "SELECT (lsn - '0/0')::bigint FROM pg_create_logical_replication_slot(%s, %s)", (slot, PLUGIN)
    ).fetchone()
    assert row is not None
    log.info("slot.created", slot=slot, lsn=format_lsn(int(row[0])))
    return int(row[0])


def drop_slot(conn: psycopg.Connection[Any], slot: str) -> bool:
    """Drop the slot (ending its consumer) and forget the replicator's checkpoint and heartbeat for it, so the
    next run recreates the slot and backfills. Returns whether a slot existed."""
    with conn.transaction():
        conn.execute(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
            "WHERE slot_name = %s AND active_pid IS NOT NULL",
            (slot,),
        )
    existed = False
    for _ in range(50):  # the terminated walsender releases the slot asynchronously
        try:
            cur = conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s", (slot,)
            )
            existed = cur.rowcount > 0
            break
        except psycopg.errors.ObjectInUse:
            time.sleep(0.1)
    checkpoints.forget(conn, slot)
    log.warning("slot.dropped", slot=slot, existed=existed)
    return existed


def start_replication_command(slot: str, tables: Sequence[str], start_lsn: int = 0) -> bytes:
    """The START_REPLICATION command; hyphenated wal2json options must be double-quoted (eulerto/wal2json#264).
    ``numeric-data-types-as-string`` is not sent: wal2json 2.5 (Debian's) rejects it, and we read only keys."""
    add_tables = ",".join(tables)
    options = {
        "format-version": "2",
        "include-lsn": "1",
        "include-xids": "1",
        "include-pk": "1",
        "include-timestamp": "1",
        "include-transaction": "1",
        "add-tables": add_tables,
    }
    opts = ", ".join(f"\"{k}\" '{v}'" for k, v in options.items())
    # The slot name is validated by Settings (^[a-z0-9_]{1,63}$); table names are ours.
    return f"START_REPLICATION SLOT {slot} LOGICAL {format_lsn(start_lsn)} ({opts})".encode()


def stream_tables() -> tuple[str, ...]:
    return (*(f"{DOMAIN_SCHEMA}.{t}" for t in SOURCE_TABLES), HEARTBEAT_TABLE)


# ---- the protocol ------------------------------------------------------------------------------------------------


class ReplicationStream:
    """One COPY_BOTH replication session on a slot (not thread-safe; one reader)."""

    def __init__(self, dsn: str, slot: str, *, tables: Sequence[str] | None = None) -> None:
        self._conninfo = psycopg.conninfo.make_conninfo(dsn, replication="database", application_name="replicator")
        self.slot = slot
        self.tables = tuple(tables) if tables is not None else stream_tables()
        self._pg: PGconn | None = None
        self.received_lsn = 0

    @property
    def pgconn(self) -> PGconn:
        if self._pg is None:
            raise StreamInterruptedError("the replication stream is not open")
        return self._pg

    def start(self, start_lsn: int = 0) -> None:
        pg = pq.PGconn.connect(self._conninfo.encode())
        if pg.status != pq.ConnStatus.OK:
            message = pg.get_error_message()
            pg.finish()
            raise StreamInterruptedError(f"replication connection failed: {message}")
        result = pg.exec_(start_replication_command(self.slot, self.tables, start_lsn))
        if result.status != pq.ExecStatus.COPY_BOTH:
            error = (result.error_message or b"").decode(errors="replace").strip()
            sqlstate = result.error_field(pq.DiagnosticField.SQLSTATE)
            pg.finish()
            raise _start_error(self.slot, error, sqlstate.decode() if sqlstate else None)
        pg.nonblocking = 1
        self._pg = pg

    def read(self, timeout: float) -> memoryview | None:
        """The next CopyData message, or None when none arrived within ``timeout`` seconds."""
        pg = self.pgconn
        nbytes, data = pg.get_copy_data(1)
        if nbytes > 0:
            return data
        if nbytes == 0:
            ready, _, _ = select.select([pg.socket], [], [], max(timeout, 0.0))
            if not ready:
                return None
            pg.consume_input()
            nbytes, data = pg.get_copy_data(1)
            if nbytes > 0:
                return data
            if nbytes == 0:
                return None
        raise StreamInterruptedError(f"replication stream ended: {pg.get_error_message()}")

    def send_status(self, flushed_lsn: int, *, reply: bool = False) -> None:
        """Tell the server what is durable: ``flushed_lsn`` becomes the slot's confirmed_flush_lsn."""
        pg = self.pgconn
        now_us = time.time_ns() // 1000 - _PG_EPOCH_US
        written = max(self.received_lsn, flushed_lsn)
        msg = b"r" + _STATUS.pack(written, flushed_lsn, flushed_lsn, now_us, 1 if reply else 0)
        if pg.put_copy_data(msg) != 1:
            raise StreamInterruptedError(f"could not send a status update: {pg.get_error_message()}")
        while pg.flush() == 1:
            select.select([], [pg.socket], [], 1.0)

    def close(self) -> None:
        if self._pg is not None:
            self._pg.finish()
            self._pg = None


def _start_error(slot: str, error: str, sqlstate: str | None) -> SourceError:
    if sqlstate == "42704" or "does not exist" in error:
        return SlotLostError(slot, "does not exist")
    if "invalidated" in error or "cannot read from logical replication slot" in error:
        return SlotLostError(slot, "was invalidated by the server (wal_status = lost)")
    return StreamInterruptedError(f"START_REPLICATION failed: {error}")


# ---- the loop ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceOptions:
    slot: str
    sinks: tuple[str, ...]
    batch_max_changes: int = 5000
    batch_max_wait_ms: int = 200
    heartbeat_interval_s: float = 5.0
    shutdown_deadline_s: float = 20.0
    leader: str | None = None


class SourceLoop:
    """Streams the slot into the outbox until ``stop`` is set, reconnecting with backoff."""

    def __init__(
        self,
        dsn: str,
        options: SourceOptions,
        *,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        leader_check: Callable[[], None] | None = None,
        on_streaming: Callable[[bool], None] | None = None,
    ) -> None:
        self.dsn = dsn
        self.options = options
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.leader_check = leader_check
        self.on_streaming = on_streaming
        self.confirmed_lsn = 0
        self.batches = 0
        self.changes = 0
        self._session_started: float | None = None  # when the current streaming session started
        self._attempt_base = 0  # reconnect attempts made before the last stable session

    def run(self, stop: threading.Event) -> None:
        """Stream until ``stop``; a broken connection (a Postgres restart or failover) reconnects after
        0.5 s doubling to 30 s, plus up to 0.5 s of jitter, counted from the last session that streamed for
        ``_STABLE_SESSION_S``, and resumes from the slot's confirmed LSN (the server resends what follows it)."""

        def wait(state: RetryCallState) -> float:
            started, self._session_started = self._session_started, None
            if started is not None and self.clock() - started >= _STABLE_SESSION_S:
                self._attempt_base = state.attempt_number - 1
            failures = max(state.attempt_number - self._attempt_base, 1)
            delay = min(_RECONNECT_MAX_S, _RECONNECT_BASE_S * 2.0 ** min(failures - 1, 16))
            return delay + random.uniform(0, _RECONNECT_BASE_S)

        def log_retry(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            delay = state.next_action.sleep if state.next_action else None
            log.warning("source.reconnect", attempt=state.attempt_number, error=str(error), delay_s=delay)
            if self.on_streaming:
                self.on_streaming(False)

        retrying = Retrying(
            retry=retry_if_exception_type((StreamInterruptedError, psycopg.OperationalError, psycopg.InterfaceError)),
            wait=wait,
            stop=lambda _state: stop.is_set(),
            sleep=_interruptible_sleep(stop),
            before_sleep=log_retry,
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                self._stream(stop)

    def _stream(self, stop: threading.Event) -> None:
        opts = self.options
        stream = ReplicationStream(self.dsn, opts.slot)
        with (
            psycopg.connect(self.dsn, autocommit=True, application_name="replicator-outbox") as outbox_conn,
            psycopg.connect(self.dsn, autocommit=True, application_name="replicator-heartbeat") as beat_conn,
        ):
            stream.start()
            self._session_started = self.clock()
            writer = _OutboxWriter(self, outbox_conn)
            writer.start()
            try:
                if self.on_streaming:
                    self.on_streaming(True)
                log.info("source.streaming", slot=opts.slot, sinks=",".join(opts.sinks))
                _Batcher(self, stream, beat_conn, writer).run(stop)
            finally:
                writer.close(timeout=opts.shutdown_deadline_s)
                stream.close()


def _interruptible_sleep(stop: threading.Event) -> Callable[[float], None]:
    def sleep(seconds: float) -> None:
        stop.wait(seconds)

    return sleep


@dataclass(frozen=True)
class _Batch:
    """Dirty documents handed from the reader to the outbox writer, with the commit LSN they make durable
    (None for a piece of a transaction still open) and the heartbeat seen in them."""

    dirty: DirtyDocuments
    confirm: int | None
    heartbeat_seen: str | None
    lsn: int
    per_table: dict[str, int]

    def merge(self, later: _Batch) -> _Batch:
        """This batch followed by a later one, written as one (the outbox coalesces per document anyway)."""
        self.dirty.merge(later.dirty)
        per_table = dict(self.per_table)
        for table, n in later.per_table.items():
            per_table[table] = per_table.get(table, 0) + n
        return _Batch(
            self.dirty,
            later.confirm if later.confirm is not None else self.confirm,
            later.heartbeat_seen if later.heartbeat_seen is not None else self.heartbeat_seen,
            max(self.lsn, later.lsn),
            per_table,
        )


class _OutboxWriter(threading.Thread):
    """Writes batches to the outbox in its own thread, in order, so the reader keeps reading the stream while a
    batch commits (the server decodes on; a 2-core machine keeps both busy). GROUP COMMIT: a batch handed over
    while another is committing waits in one slot, and later ones are merged into it, so the reader can hand over
    every commit at once (low latency when the stream is quiet) and under load the writer still commits few, large
    transactions. Once the waiting batch holds ``batch_max_changes`` documents, ``submit`` blocks: memory stays
    bounded and the reader is pushed back. ``committed_lsn`` is the highest commit LSN whose outbox rows are
    durable: the only position the reader may confirm."""

    def __init__(self, loop: SourceLoop, conn: psycopg.Connection[Any]) -> None:
        super().__init__(name="replicator-outbox-writer", daemon=True)
        self.loop = loop
        self.conn = conn
        self.holders = SqlFeatureHolders(conn)
        self.committed_lsn = 0
        self.error: BaseException | None = None
        self._cap = loop.options.batch_max_changes
        self._pending = 0
        self._waiting: _Batch | None = None
        self._closing = False
        self._cv = threading.Condition()

    @property
    def pending(self) -> int:
        """Batches submitted and not yet committed (merged ones count once)."""
        with self._cv:
            return self._pending

    def submit(self, batch: _Batch, while_waiting: Callable[[], None]) -> None:
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

    def _write(self, job: _Batch) -> None:
        opts = self.loop.options
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
        # One round trip for the whole transaction (BEGIN, upsert, notify, checkpoint, COMMIT) in pipeline mode:
        # less time to the outbox commit, and one wake-up of this thread (one GIL hand-over) instead of five. Whole
        # entities (rare) read their row counts, so they run without it.
        with self.conn.pipeline() if not whole_entities else contextlib.nullcontext(), self.conn.transaction():
            if keys and sinks:
                written += enqueue_pairs(self.conn, sinks, keys, lsn)
            if whole_entities and sinks:
                written += enqueue_entities(self.conn, sinks, sorted(whole_entities), lsn)
            if job.confirm is not None:
                checkpoints.save(
                    self.conn, opts.slot, job.confirm, heartbeat_seen=job.heartbeat_seen, leader=opts.leader
                )
        if job.confirm is not None and job.confirm > self.committed_lsn:
            self.committed_lsn = job.confirm
        m = self.loop.metrics
        m.batches.inc()
        for sink in sinks:
            m.documents_enqueued.labels(sink).inc(len(keys))
        for table, n in job.per_table.items():
            m.changes_read.labels(table).inc(n)
        self.loop.batches += 1
        log.debug(
            "outbox.enqueued",
            documents=len(keys),
            rows=written,
            whole_entities=",".join(sorted(whole_entities)),
            lsn=format_lsn(lsn),
            confirmed=job.confirm is not None,
        )


class _Batcher:
    """One streaming session's batching state (kept out of ``SourceLoop`` so a reconnect starts clean: the server
    resends everything after the confirmed LSN)."""

    def __init__(
        self,
        loop: SourceLoop,
        stream: ReplicationStream,
        beat_conn: psycopg.Connection[Any],
        writer: _OutboxWriter,
    ) -> None:
        self.loop = loop
        self.opts = loop.options
        self.stream = stream
        self.beat_conn = beat_conn
        self.writer = writer
        self.dirty = DirtyDocuments()
        self.in_txn = False
        self.pending_commit: int | None = None  # end LSN of the last commit read but not yet handed over
        self.batch_changes = 0
        self.batch_deadline: float | None = None
        self.heartbeat_seen: str | None = None
        self.last_lsn = 0
        self.per_table: dict[str, int] = {}

    # -- outbox --------------------------------------------------------------------------------------------------

    def flush(self) -> None:
        """Hand the dirty documents (and the last commit read, if any) to the writer. Without a commit
        (mid-transaction) keys are written but nothing will be confirmed."""
        confirm = self.pending_commit
        if self.dirty or self.heartbeat_seen is not None:
            self.writer.submit(
                _Batch(self.dirty, confirm, self.heartbeat_seen, self.last_lsn, self.per_table), self.keep_alive
            )
            self.dirty = DirtyDocuments()
            self.per_table = {}
            if confirm is not None:
                self.heartbeat_seen = None
        elif confirm is not None and self.writer.pending == 0:
            # A batch with no documents and no heartbeat (e.g. our own outbox commits, which wal2json reports as
            # empty transactions) is confirmed without writing anything, so confirming never feeds itself.
            # Only when nothing is queued before it: confirmation must stay in commit order.
            self.confirm(confirm)
        elif confirm is not None:
            self.writer.submit(_Batch(self.dirty, confirm, None, self.last_lsn, self.per_table), self.keep_alive)
            self.dirty = DirtyDocuments()
            self.per_table = {}
        self.pending_commit = None
        self.batch_changes = 0
        self.batch_deadline = None

    def keep_alive(self) -> None:
        """While waiting for the writer: confirm what became durable. A status update resets the server's
        wal_sender_timeout; the stream is not read meanwhile (that would buffer it without bound)."""
        self.confirm(max(self.writer.committed_lsn, self.loop.confirmed_lsn))

    def collect(self) -> None:
        """Confirm what the writer has made durable."""
        self.writer.check()
        if self.writer.committed_lsn > self.loop.confirmed_lsn:
            self.confirm(self.writer.committed_lsn)

    def confirm(self, lsn: int) -> None:
        if lsn > self.loop.confirmed_lsn:
            self.loop.confirmed_lsn = lsn
            self.loop.metrics.confirmed_lsn.set(lsn)
        self.stream.send_status(self.loop.confirmed_lsn)

    def idle(self) -> bool:
        """Nothing read is waiting to become durable."""
        return (
            not self.in_txn
            and self.pending_commit is None
            and not self.dirty
            and self.heartbeat_seen is None
            and self.writer.pending == 0
        )

    # -- heartbeat -----------------------------------------------------------------------------------------------

    def beat(self) -> None:
        checkpoints.beat(self.beat_conn, self.opts.slot)

    # -- the read loop -------------------------------------------------------------------------------------------

    def record(self, change: Change) -> None:
        """A record the fast path left to ``parse``: a heartbeat, a TRUNCATE, a row it did not recognise (begin
        and commit records given this way are handled as the fast path handles them)."""
        action = change.action
        if action is Action.COMMIT:
            self.in_txn = False
            self.pending_commit = change.lsn
            if self.batch_changes >= self.opts.batch_max_changes or (
                self.batch_deadline is not None and self.loop.clock() >= self.batch_deadline
            ):
                self.flush()
        elif action is Action.BEGIN:
            self.in_txn = True
            if self.batch_deadline is None:
                self.batch_deadline = self.loop.clock() + self.opts.batch_max_wait_ms / 1000.0
        elif action is not Action.MESSAGE:
            self.batch_changes += 1
            self.loop.changes += 1
            table = change.table or ""
            self.per_table[table] = self.per_table.get(table, 0) + 1
            if change.schema == "replicator":
                if table == "heartbeat" and change.columns.get("slot_name") == self.opts.slot:
                    self.heartbeat_seen = change.columns.get("beat_at")
            else:
                self.dirty.add(change)
                if len(self.dirty) >= self.opts.batch_max_changes:
                    self.flush()

    def run(self, stop: threading.Event) -> None:
        clock = self.loop.clock
        stream = self.stream
        writer = self.writer
        max_changes = self.opts.batch_max_changes
        wait_s = self.opts.batch_max_wait_ms / 1000.0
        slot = self.opts.slot
        scanner = KeyScanner(DOMAIN_SCHEMA, ROUTE_COLUMNS)
        next_beat = clock()
        next_status = clock() + STATUS_INTERVAL_S
        while not stop.is_set():
            self.collect()
            now = clock()
            if now >= next_beat:
                if self.loop.leader_check:
                    self.loop.leader_check()
                self.beat()
                next_beat = now + self.opts.heartbeat_interval_s
            if now >= next_status:
                stream.send_status(self.loop.confirmed_lsn)
                next_status = now + STATUS_INTERVAL_S
            if self.batch_deadline is not None and now >= self.batch_deadline and not self.in_txn:
                self.flush()
            # Capped so a stop request (SIGTERM) is noticed within half a second even when the stream is idle.
            timeout = min(next_beat, next_status, self.batch_deadline or next_beat, now + 0.5) - now
            if writer.pending:
                timeout = min(timeout, 0.01)  # a batch is committing: come back soon to confirm it
            for _ in range(_DRAIN):
                data = stream.read(timeout)
                if data is None:
                    # Nothing more buffered: hand the commits read so far to the writer now instead of waiting out
                    # batch_max_wait_ms. Coalescing does not need the wait: the writer merges whatever is handed
                    # over while it commits, the outbox coalesces per document, and each sink's settle window
                    # coalesces again; so a commit reaches the outbox one outbox commit after it is read.
                    if self.pending_commit is not None and not self.in_txn:
                        self.flush()
                    break
                timeout = 0.0
                kind = data[0]
                if kind == 0x77:  # 'w' XLogData
                    start = _XLOGDATA.unpack_from(data, 1)[0]
                    self.last_lsn = start
                    if start > stream.received_lsn:
                        stream.received_lsn = start
                    payload = bytes(data[25:])
                    action = payload[ACTION_AT] if payload.startswith(ACTION_PREFIX) else 0
                    row_action = ROW_ACTION_BYTES.get(action)
                    if row_action is not None and (scanned := scanner.scan(payload)) is not None:
                        # The fast path (nearly every record): a row of a domain table, read for its key values.
                        table, values = scanned
                        self.batch_changes += 1
                        self.loop.changes += 1
                        self.per_table[table] = self.per_table.get(table, 0) + 1
                        self.dirty.add_values(table, row_action, values)
                        # A huge transaction: write its keys now (harmless duplicates if we crash), keep only the
                        # commit for confirmation. Memory stays bounded by max_changes keys.
                        if len(self.dirty) >= max_changes:
                            self.flush()
                    elif action == 0x43:  # 'C' commit
                        self.in_txn = False
                        self.pending_commit = start
                        if self.batch_changes >= max_changes or (
                            self.batch_deadline is not None and clock() >= self.batch_deadline
                        ):
                            self.flush()
                    elif action == 0x42:  # 'B' begin
                        self.in_txn = True
                        if self.batch_deadline is None:
                            self.batch_deadline = clock() + wait_s
                    elif action != 0x4D:  # not 'M' (a logical message): parse it fully
                        self.record(parse(payload, start))
                elif kind == 0x6B:  # 'k' keepalive
                    wal_end, _, reply = _KEEPALIVE.unpack_from(data, 1)
                    stream.received_lsn = max(stream.received_lsn, wal_end)
                    if self.idle() and wal_end > self.loop.confirmed_lsn:
                        # Everything the server sent before this keepalive is durable: safe to confirm its end.
                        self.confirm(wal_end)
                        next_status = clock() + STATUS_INTERVAL_S
                    elif reply:
                        stream.send_status(self.loop.confirmed_lsn)
                        next_status = clock() + STATUS_INTERVAL_S
        # Shutdown: hand over what is read, wait for the writer, confirm what is committed; a transaction cut
        # short is re-sent after a restart.
        if self.dirty or self.pending_commit is not None or self.heartbeat_seen is not None:
            self.flush()
        writer.close(timeout=self.opts.shutdown_deadline_s)
        self.collect()
        if self.loop.confirmed_lsn:
            stream.send_status(self.loop.confirmed_lsn)
        log.info("source.stopped", slot=slot, confirmed_lsn=format_lsn(self.loop.confirmed_lsn))
