"""The outbox writer: dirty documents become rows of ``replicator.outbox``, coalesced per sink + entity + id, in
the same transaction that advances ``replicator.source_checkpoint``. Only after that transaction commits does the
source confirm the batch's end LSN to the server, so the slot never moves past a change whose outbox row is not
durable (DESIGN.md §2).

Coalescing: a row that is already pending gets ``version + 1``, the highest LSN and a new ``last_enqueued_at``;
``first_enqueued_at`` stays (it is what "age of the oldest pending row" measures). ``attempts`` and
``next_attempt_at`` are left alone on purpose: a row waits because its SINK failed (429, outage), which a newer
change does not cure, and resetting the backoff on every change would hammer a rate-limited API under steady
writes. The newer content is not lost: the worker renders from the current rows whenever it next tries, and a
row dead-lettered for good has left the outbox, so a new change starts it afresh.

``backfill`` enqueues every existing document (first start after the slot is created, and ``replicator resync``).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from replicator.documents import ENTITIES, DocumentKey

NOTIFY_CHANNEL = "replicator_outbox"

# COALESCING UPSERT — correctness-critical. One statement per batch (arrays unnested server-side). A newer change
# bumps ``version`` so a worker that claimed the older version will not delete the row after applying it (it
# compares versions); the LSN only moves forward; first_enqueued_at is kept.
_ON_CONFLICT = """
    ON CONFLICT (sink, entity, entity_id) DO UPDATE
    SET version = o.version + 1,
        lsn = greatest(o.lsn, EXCLUDED.lsn),
        last_enqueued_at = now()
"""

ENQUEUE_SQL = (
    """
    INSERT INTO replicator.outbox AS o (sink, entity, entity_id, lsn)
    SELECT k.sink, k.entity, k.entity_id, %(lsn)s
    FROM unnest(%(sinks)b::text[], %(entities)b::text[], %(ids)b::uuid[]) AS k(sink, entity, entity_id)
    """
    + _ON_CONFLICT
)

NOTIFY_SQL = "SELECT pg_notify(%(channel)s, s) FROM unnest(%(sinks)s::text[]) AS s"

# WHOLE ENTITY — every current row of the entity, plus every document a sink still holds for it (its row may be
# gone, e.g. after a TRUNCATE: the worker then renders None and deletes downstream). UNION keeps the rows distinct,
# which ON CONFLICT requires within one statement.
_WHOLE_ENTITY_SQL = """
    INSERT INTO replicator.outbox AS o (sink, entity, entity_id, lsn)
    SELECT s.sink, %(entity)s, d.id, %(lsn)s
    FROM unnest(%(sinks)s::text[]) AS s(sink) CROSS JOIN {table} AS d
    UNION
    SELECT st.sink, st.entity, st.entity_id, %(lsn)s
    FROM replicator.sink_state AS st
    WHERE st.sink = ANY(%(sinks)s::text[]) AND st.entity = %(entity)s
    """

# CHECKPOINT ADVANCE — correctness-critical. Written in the outbox transaction, so it never claims an LSN whose
# rows are not committed; greatest() keeps it monotonic across a replay after a crash.
SAVE_CHECKPOINT_SQL = """
    INSERT INTO replicator.source_checkpoint AS c
        (slot_name, confirmed_lsn, heartbeat_seen, heartbeat_received_at, leader, updated_at)
    VALUES (%(slot)s, %(lsn)s, %(beat)s::timestamptz,
            CASE WHEN %(beat)s::timestamptz IS NULL THEN NULL ELSE now() END, %(leader)s, now())
    ON CONFLICT (slot_name) DO UPDATE
    SET confirmed_lsn = greatest(c.confirmed_lsn, EXCLUDED.confirmed_lsn),
        heartbeat_seen = coalesce(EXCLUDED.heartbeat_seen, c.heartbeat_seen),
        heartbeat_received_at = coalesce(EXCLUDED.heartbeat_received_at, c.heartbeat_received_at),
        leader = coalesce(EXCLUDED.leader, c.leader),
        updated_at = now()
"""


@dataclass(frozen=True)
class Checkpoint:
    slot_name: str
    confirmed_lsn: int
    backfill_done_at: datetime | None
    heartbeat_seen: datetime | None
    heartbeat_received_at: datetime | None
    leader: str | None


def enqueue(conn: psycopg.Connection[Any], keys_by_sink: Mapping[str, Collection[DocumentKey]], lsn: int) -> int:
    """Upsert the dirty documents of each sink and notify the sinks that got rows. Runs in the caller's
    transaction (notifications are delivered at its commit). Returns the number of (sink, document) rows."""
    sinks: list[str] = []
    entities: list[str] = []
    ids: list[uuid.UUID] = []
    for sink, keys in keys_by_sink.items():
        for key in keys:
            sinks.append(sink)
            entities.append(key.entity)
            ids.append(key.id)
    if not sinks:
        return 0
    conn.execute(ENQUEUE_SQL, {"sinks": sinks, "entities": entities, "ids": ids, "lsn": lsn})
    notify(conn, [s for s, keys in keys_by_sink.items() if keys])
    return len(sinks)


def enqueue_entities(conn: psycopg.Connection[Any], sinks: Collection[str], entities: Iterable[str], lsn: int) -> int:
    """Enqueue every document of whole entities (a TRUNCATE, a backfill). Caller's transaction."""
    if not sinks:
        return 0
    total = 0
    for entity in entities:
        if entity not in ENTITIES:
            raise ValueError(f"unknown entity {entity!r}; known: {', '.join(ENTITIES)}")
        query = sql.SQL(_WHOLE_ENTITY_SQL + _ON_CONFLICT).format(table=sql.Identifier("public", entity))
        cur = conn.execute(query, {"sinks": list(sinks), "entity": entity, "lsn": lsn})
        total += max(cur.rowcount, 0)
    notify(conn, sinks)
    return total


def notify(conn: psycopg.Connection[Any], sinks: Iterable[str]) -> None:
    names = sorted(set(sinks))
    if names:
        conn.execute(NOTIFY_SQL, {"channel": NOTIFY_CHANNEL, "sinks": names})


def current_lsn(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT (pg_current_wal_lsn() - '0/0')::bigint").fetchone()
    assert row is not None
    return int(row[0])


def backfill(conn: psycopg.Connection[Any], sinks: Collection[str], entities: Iterable[str] | None = None) -> int:
    """Enqueue every existing document of ``entities`` (all by default) for ``sinks``, in one transaction.
    A full backfill also clears ``sink_status.needs_resync`` of those sinks. Returns the rows enqueued."""
    chosen = tuple(entities) if entities is not None else ENTITIES
    with conn.transaction():
        total = enqueue_entities(conn, sinks, chosen, current_lsn(conn))
        if entities is None and sinks:
            conn.execute(
                "UPDATE replicator.sink_status SET needs_resync = false WHERE sink = ANY(%s::text[])", (list(sinks),)
            )
    return total


def save_checkpoint(
    conn: psycopg.Connection[Any], slot: str, lsn: int, *, heartbeat_seen: str | None = None, leader: str | None = None
) -> None:
    """Advance the slot's checkpoint (caller's transaction; see SAVE_CHECKPOINT_SQL)."""
    conn.execute(SAVE_CHECKPOINT_SQL, {"slot": slot, "lsn": lsn, "beat": heartbeat_seen, "leader": leader})


def mark_backfilled(conn: psycopg.Connection[Any], slot: str) -> None:
    conn.execute(
        "UPDATE replicator.source_checkpoint SET backfill_done_at = now(), updated_at = now() WHERE slot_name = %s",
        (slot,),
    )


def load_checkpoint(conn: psycopg.Connection[Any], slot: str) -> Checkpoint | None:
    row = conn.execute(
        "SELECT slot_name, confirmed_lsn, backfill_done_at, heartbeat_seen, heartbeat_received_at, leader "
        "FROM replicator.source_checkpoint WHERE slot_name = %s",
        (slot,),
    ).fetchone()
    return Checkpoint(*row) if row else None
