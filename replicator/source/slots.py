"""Slot administration: look at, create and drop the wal2json logical replication slot the source reads. Creating
returns the slot's consistent point (rows before it are backfilled); dropping also forgets the replicator's
checkpoint and heartbeat for the slot, so the next run recreates it and resyncs. A slot that vanishes while in use
is never recreated here: that is an incident (``SlotLostError``, raised by the protocol on START_REPLICATION).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import psycopg

from replicator.changes import format_lsn
from replicator.logs import event_logger
from replicator.store import checkpoints

log = event_logger("replicator.source")

PLUGIN = "wal2json"


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
