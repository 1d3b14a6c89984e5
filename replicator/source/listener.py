"""The listener: one streaming session's read loop. It reads each record's key values (``changes.KeyScanner``;
``changes.parse`` for the rare rest), routes them to dirty documents (``routing``) and cuts batches at commit
records — as soon as the stream has nothing more buffered, or at ``batch_max_changes`` row changes or
``batch_max_wait_ms`` under sustained load — handing them to the outbox writer. A huge transaction is streamed in
bounded memory: only its dirty keys are kept, handed over mid-transaction when the set grows, and its LSN is
confirmed at its commit record. It confirms to the server only what the writer has made durable, answers
keepalives, and writes a heartbeat row every few seconds (seeing it come back keeps an idle slot moving).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from time import sleep
from typing import Any

import psycopg

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
from replicator.logs import event_logger
from replicator.metrics import Metrics
from replicator.routing import DOMAIN_SCHEMA, ROUTE_COLUMNS, DirtyDocuments
from replicator.source.options import SourceOptions, SourceProgress
from replicator.source.protocol import (
    KEEPALIVE,
    KEEPALIVE_TAG,
    STATUS_INTERVAL_S,
    XLOGDATA,
    XLOGDATA_PAYLOAD_AT,
    XLOGDATA_TAG,
    ReplicationStream,
)
from replicator.source.writer import Batch, OutboxWriter
from replicator.store import checkpoints

log = event_logger("replicator.source")

# Messages handled between two looks at the clock (timers); small enough to stay responsive.
_DRAIN = 512
# How long the reader lets the stream gather once it has read it dry (see run): at most this much added latency.
_GATHER_S = 0.0005


class Listener:
    """One streaming session's batching state (a reconnect starts a new one, clean: the server resends everything
    after the confirmed LSN). What outlives the session is in ``progress``."""

    def __init__(
        self,
        stream: ReplicationStream,
        writer: OutboxWriter,
        beat_conn: psycopg.Connection[Any],
        options: SourceOptions,
        *,
        metrics: Metrics,
        progress: SourceProgress,
        clock: Callable[[], float],
        leader_check: Callable[[], None] | None = None,
    ) -> None:
        self.opts = options
        self.stream = stream
        self.beat_conn = beat_conn
        self.writer = writer
        self.metrics = metrics
        self.progress = progress
        self.clock = clock
        self.leader_check = leader_check
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
                Batch(self.dirty, confirm, self.heartbeat_seen, self.last_lsn, self.per_table), self.keep_alive
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
            self.writer.submit(Batch(self.dirty, confirm, None, self.last_lsn, self.per_table), self.keep_alive)
            self.dirty = DirtyDocuments()
            self.per_table = {}
        self.pending_commit = None
        self.batch_changes = 0
        self.batch_deadline = None

    def keep_alive(self) -> None:
        """While waiting for the writer: confirm what became durable. A status update resets the server's
        wal_sender_timeout; the stream is not read meanwhile (that would buffer it without bound)."""
        self.confirm(max(self.writer.committed_lsn, self.progress.confirmed_lsn))

    def collect(self) -> None:
        """Confirm what the writer has made durable."""
        self.writer.check()
        if self.writer.committed_lsn > self.progress.confirmed_lsn:
            self.confirm(self.writer.committed_lsn)

    def confirm(self, lsn: int) -> None:
        if lsn > self.progress.confirmed_lsn:
            self.progress.confirmed_lsn = lsn
            self.metrics.confirmed_lsn.set(lsn)
        self.stream.send_status(self.progress.confirmed_lsn)

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
                self.batch_deadline is not None and self.clock() >= self.batch_deadline
            ):
                self.flush()
        elif action is Action.BEGIN:
            self.in_txn = True
            if self.batch_deadline is None:
                self.batch_deadline = self.clock() + self.opts.batch_max_wait_ms / 1000.0
        elif action is not Action.MESSAGE:
            self.batch_changes += 1
            self.progress.changes += 1
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
        clock = self.clock
        stream = self.stream
        writer = self.writer
        progress = self.progress
        max_changes = self.opts.batch_max_changes
        wait_s = self.opts.batch_max_wait_ms / 1000.0
        slot = self.opts.slot
        # The wire format as locals: this loop runs once per record.
        xlogdata_tag, keepalive_tag, payload_at = XLOGDATA_TAG, KEEPALIVE_TAG, XLOGDATA_PAYLOAD_AT
        xlogdata_header, keepalive = XLOGDATA.unpack_from, KEEPALIVE.unpack_from
        scan = KeyScanner(DOMAIN_SCHEMA, ROUTE_COLUMNS).scan
        get_copy_data = stream.pgconn.get_copy_data
        action_prefix, action_at = ACTION_PREFIX, payload_at + ACTION_AT
        next_beat = clock()
        next_status = clock() + STATUS_INTERVAL_S
        while not stop.is_set():
            self.collect()
            now = clock()
            if now >= next_beat:
                if self.leader_check:
                    self.leader_check()
                self.beat()
                next_beat = now + self.opts.heartbeat_interval_s
            if now >= next_status:
                stream.send_status(progress.confirmed_lsn)
                next_status = now + STATUS_INTERVAL_S
            if self.batch_deadline is not None and now >= self.batch_deadline and not self.in_txn:
                self.flush()
            # Capped so a stop request (SIGTERM) is noticed within half a second even when the stream is idle.
            timeout = min(next_beat, next_status, self.batch_deadline or next_beat, now + 0.5) - now
            if writer.pending:
                timeout = min(timeout, 0.01)  # a batch is committing: come back soon to confirm it
            for read in range(_DRAIN):  # read: the messages this wake-up has read so far
                # libpq's buffer first (nearly always a message under load), the socket only when it is empty.
                nbytes, buffered = get_copy_data(1)
                data = buffered if nbytes > 0 else stream.read(timeout)
                if data is None:
                    # Nothing more buffered: hand the commits read so far to the writer now instead of waiting out
                    # batch_max_wait_ms. Coalescing does not need the wait: the writer merges whatever is handed
                    # over while it commits, the outbox coalesces per document, and each sink's settle window
                    # coalesces again; so a commit reaches the outbox one outbox commit after it is read.
                    if self.pending_commit is not None and not self.in_txn:
                        self.flush()
                    if read:
                        # Read dry right after reading: let the stream gather for a moment instead of waking for
                        # each message the server sends (a wake-up costs more than the few messages it reads, and
                        # on a small machine takes a core from the walsender). What was read is handed over
                        # first, so the pause delays no commit already read; one arriving meanwhile waits at most
                        # _GATHER_S. Never when idle: an idle stream is waited for in select, as before.
                        sleep(_GATHER_S)
                    break
                timeout = 0.0
                kind = data[0]
                if kind == xlogdata_tag:
                    start = xlogdata_header(data, 1)[0]
                    self.last_lsn = start
                    if start > stream.received_lsn:
                        stream.received_lsn = start
                    # The whole message as bytes (one copy); the record is message[payload_at:], read in place.
                    message = bytes(data)
                    action = message[action_at] if message.startswith(action_prefix, payload_at) else 0
                    row_action = ROW_ACTION_BYTES.get(action)
                    if row_action is not None and (scanned := scan(message, payload_at)) is not None:
                        # The fast path (nearly every record): a row of a domain table, read for its key values.
                        table, values = scanned
                        self.batch_changes += 1
                        progress.changes += 1
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
                        self.record(parse(message[payload_at:], start))
                elif kind == keepalive_tag:
                    wal_end, _, reply = keepalive(data, 1)
                    stream.received_lsn = max(stream.received_lsn, wal_end)
                    if self.idle() and wal_end > progress.confirmed_lsn:
                        # Everything the server sent before this keepalive is durable: safe to confirm its end.
                        self.confirm(wal_end)
                        next_status = clock() + STATUS_INTERVAL_S
                    elif reply:
                        stream.send_status(progress.confirmed_lsn)
                        next_status = clock() + STATUS_INTERVAL_S
        # Shutdown: hand over what is read, wait for the writer, confirm what is committed; a transaction cut
        # short is re-sent after a restart.
        if self.dirty or self.pending_commit is not None or self.heartbeat_seen is not None:
            self.flush()
        writer.close(timeout=self.opts.shutdown_deadline_s)
        self.collect()
        if progress.confirmed_lsn:
            stream.send_status(progress.confirmed_lsn)
        log.info("source.stopped", slot=slot, confirmed_lsn=format_lsn(progress.confirmed_lsn))
