"""The streaming replication protocol, spoken through psycopg 3's libpq layer (its high-level API has no
replication support): a ``replication=database`` connection, ``START_REPLICATION … LOGICAL`` with wal2json
format-version 2, then COPY_BOTH — XLogData (``w``) and keepalives (``k``) in, standby status updates (``r``) out.
This module knows the wire format (the message tags and layouts the listener unpacks) and nothing of batches or
the outbox; a server answer that means the slot is gone becomes ``SlotLostError``, anything else that ends the
session ``StreamInterruptedError`` (the loop reconnects).
"""

from __future__ import annotations

import select
import struct
import time
from collections.abc import Sequence

import psycopg
from psycopg import pq
from psycopg.pq.abc import PGconn

from replicator.changes import format_lsn
from replicator.errors import SlotLostError, SourceError, StreamInterruptedError
from replicator.routing import DOMAIN_SCHEMA, SOURCE_TABLES
from replicator.store.checkpoints import HEARTBEAT_TABLE

# Microseconds between the Unix epoch and the Postgres epoch (2000-01-01), for standby status timestamps.
_PG_EPOCH_US = 946_684_800_000_000
XLOGDATA_TAG = 0x77  # 'w'
KEEPALIVE_TAG = 0x6B  # 'k'
XLOGDATA = struct.Struct(">QQQ")  # wal start, wal end, server clock
XLOGDATA_PAYLOAD_AT = 1 + XLOGDATA.size  # the tag, the header, then the wal2json record
KEEPALIVE = struct.Struct(">QQB")  # wal end, server clock, reply requested
_STATUS = struct.Struct(">QQQQB")  # written, flushed, applied, client clock, reply requested
# Status updates are sent at least this often, well inside the server's wal_sender_timeout (60 s on our clusters).
STATUS_INTERVAL_S = 10.0
# The wal2json format-version 2 options the stream asks for (the benchmarks' pg_recvlogical baseline reads with the
# same ones, so both decode the same records); ``add-tables`` is added per stream.
WAL2JSON_OPTIONS: dict[str, str] = {
    "format-version": "2",
    "include-lsn": "1",
    "include-xids": "1",
    "include-pk": "1",
    "include-timestamp": "1",
    "include-transaction": "1",
}


def start_replication_command(slot: str, tables: Sequence[str], start_lsn: int = 0) -> bytes:
    """The START_REPLICATION command; hyphenated wal2json options must be double-quoted (eulerto/wal2json#264).
    ``numeric-data-types-as-string`` is not sent: wal2json 2.5 (Debian's) rejects it, and we read only keys."""
    add_tables = ",".join(tables)
    options = {**WAL2JSON_OPTIONS, "add-tables": add_tables}
    opts = ", ".join(f"\"{k}\" '{v}'" for k, v in options.items())
    # The slot name is validated by Settings (^[a-z0-9_]{1,63}$); table names are ours.
    return f"START_REPLICATION SLOT {slot} LOGICAL {format_lsn(start_lsn)} ({opts})".encode()


def stream_tables() -> tuple[str, ...]:
    return (*(f"{DOMAIN_SCHEMA}.{t}" for t in SOURCE_TABLES), HEARTBEAT_TABLE)


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
