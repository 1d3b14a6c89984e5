"""``replicator.source_checkpoint`` and ``replicator.heartbeat``: how far the source has made changes durable, and
the heartbeat row whose round trip through the slot measures lag in seconds (DESIGN.md §8). ``save`` runs in the
outbox transaction (see ``save_checkpoint`` in ``queries.sql``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from replicator.store.queries import QUERIES

Conn = psycopg.Connection[Any]

# The heartbeat table is streamed with the domain tables (wal2json ``add-tables``), so each beat comes back.
HEARTBEAT_TABLE = "replicator.heartbeat"


@dataclass(frozen=True)
class Checkpoint:
    slot_name: str
    confirmed_lsn: int
    backfill_done_at: datetime | None
    heartbeat_seen: datetime | None
    heartbeat_received_at: datetime | None
    leader: str | None


@dataclass(frozen=True)
class CheckpointLag:
    """What ``status`` reads of the checkpoint: lag in seconds from the heartbeat, the leader, the backfill."""

    lag_seconds: float | None
    leader: str | None
    backfill_done_at: datetime | None
    age_s: float | None = None  # since the checkpoint last moved (a process streamed or heartbeated)


def save(conn: Conn, slot: str, lsn: int, *, heartbeat_seen: str | None = None, leader: str | None = None) -> None:
    """Advance the slot's checkpoint (caller's transaction; see ``save_checkpoint``)."""
    conn.execute(QUERIES["save_checkpoint"], save_params(slot, lsn, heartbeat_seen=heartbeat_seen, leader=leader))


def save_params(slot: str, lsn: int, *, heartbeat_seen: str | None = None, leader: str | None = None) -> dict[str, Any]:
    """The parameters of ``save_checkpoint`` (also for ``outbox.write_batch``, which runs it with the upsert)."""
    return {"slot": slot, "lsn": lsn, "beat": heartbeat_seen, "leader": leader}


def mark_backfilled(conn: Conn, slot: str) -> None:
    conn.execute(QUERIES["mark_backfilled"], {"slot": slot})


def load(conn: Conn, slot: str) -> Checkpoint | None:
    row = conn.execute(QUERIES["load_checkpoint"], {"slot": slot}).fetchone()
    return Checkpoint(*row) if row else None


def lag(conn: Conn, slot: str, heartbeat_interval_s: float) -> CheckpointLag | None:
    row = conn.execute(QUERIES["checkpoint_lag"], {"slot": slot, "interval": heartbeat_interval_s}).fetchone()
    if row is None:
        return None
    seconds = max(0.0, float(row[0])) if row[0] is not None else None
    return CheckpointLag(seconds, row[1], row[2], max(0.0, float(row[3])) if row[3] is not None else None)


def forget(conn: Conn, slot: str) -> None:
    """After the slot was dropped: no checkpoint and no heartbeat for it (one transaction)."""
    with conn.transaction():
        conn.execute(QUERIES["forget_checkpoint"], {"slot": slot})
        conn.execute(QUERIES["forget_heartbeat"], {"slot": slot})


def beat(conn: Conn, slot: str) -> None:
    """Write the heartbeat row (autocommit connection: it must commit to come back through the slot)."""
    conn.execute(QUERIES["beat"], {"slot": slot})
