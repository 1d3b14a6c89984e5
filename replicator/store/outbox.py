"""``replicator.outbox`` and ``replicator.dead_letter``: the durable, coalescing queue between the source and the
sink workers (DESIGN.md §2).

The source's side: dirty documents become rows, coalesced per sink + entity + id, in the same transaction that
advances the checkpoint (``checkpoints.save``); only after that commit does the source confirm the batch's end LSN
to the server, so the slot never moves past a change whose outbox row is not durable. Coalescing: a pending row gets
``version + 1``, the highest LSN and a new ``last_enqueued_at``; ``first_enqueued_at`` stays (it is what "age of the
oldest pending row" measures); ``attempts`` and ``next_attempt_at`` are left alone on purpose (a row waits because
its SINK failed, which a newer change does not cure; resetting the backoff on every change would hammer a
rate-limited API under steady writes). ``backfill`` enqueues every existing document.

The workers' side: ``claim`` leases due rows, ``complete`` removes a row only if its version is the one claimed,
``retry_later`` and ``dead_letter`` record failures. The operator's side: ``dlq_*``. The statements and the reasons
they are safe are in ``queries.sql``.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from replicator.documents import DocumentKey
from replicator.graph import ENTITIES
from replicator.store import sink_state
from replicator.store.queries import QUERIES

NOTIFY_CHANNEL = "replicator_outbox"

Conn = psycopg.Connection[Any]


# ---- the source's side --------------------------------------------------------------------------------------------


def enqueue(conn: Conn, keys_by_sink: Mapping[str, Collection[DocumentKey]], lsn: int) -> int:
    """Upsert the dirty documents of each sink and notify the sinks that got rows. Runs in the caller's
    transaction (notifications are delivered at its commit). Returns the number of (sink, document) rows.
    Sinks are written in name order, each in one statement (so rows are locked in key order)."""
    total = 0
    for sink in sorted(keys_by_sink):
        total += enqueue_pairs(conn, (sink,), {(key.entity, str(key.id)) for key in keys_by_sink[sink]}, lsn)
    return total


def enqueue_pairs(conn: Conn, sinks: Collection[str], pairs: Collection[tuple[str, str]], lsn: int) -> int:
    """The source's form of ``enqueue``: the same documents, as (entity, id text) pairs (each once), for every sink
    of ``sinks``, in one statement; no ``DocumentKey`` or ``uuid.UUID`` per document. Notifies the sinks. Returns
    the number of (sink, document) rows."""
    if not sinks or not pairs:
        return 0
    conn.execute(QUERIES["enqueue"], {**_pair_params(sinks, pairs), "lsn": lsn})
    notify(conn, sinks)
    return len(sinks) * len(pairs)


def _pair_params(sinks: Collection[str], pairs: Collection[tuple[str, str]]) -> dict[str, Any]:
    entities = [entity for entity, _ in pairs]
    unknown = set(entities).difference(ENTITIES)
    if unknown:
        raise ValueError(f"unknown entity {sorted(unknown)[0]!r}; known: {', '.join(ENTITIES)}")
    return {
        "sinks": sorted(sinks),
        "entities": ",".join(entities),
        "ids": ",".join([entity_id for _, entity_id in pairs]),
    }


def _batch_statement(enqueue: bool, checkpoint: bool) -> str:
    """One statement for a source batch: the coalescing upsert (``enqueue``) and the checkpoint advance
    (``save_checkpoint``) as data-modifying CTEs, the sinks' notification (``notify``) as its query. In autocommit
    it is one implicit transaction, so the rows, the checkpoint and the notification commit together or not at
    all, as they did as three statements between BEGIN and COMMIT, in one round trip and one statement for the
    server to run. The statements are the named ones, unchanged (their lock order, conflict rules and
    monotonic checkpoint); only their composition is here."""
    parts = []
    if enqueue:
        parts.append(f"enqueued AS ({QUERIES['enqueue']})")
    if checkpoint:
        parts.append(f"checkpoint AS ({QUERIES['save_checkpoint']})")
    # The notification only for the sinks that got rows (as ``enqueue_pairs``), else a query with no rows.
    query = QUERIES["notify"] if enqueue else "SELECT WHERE false"
    return f"WITH {', '.join(parts)}\n{query}"


_BATCH_STATEMENTS = {(e, c): _batch_statement(e, c) for e in (False, True) for c in (False, True) if e or c}


def write_batch(
    conn: Conn,
    sinks: Collection[str],
    pairs: Collection[tuple[str, str]],
    lsn: int,
    *,
    checkpoint: Mapping[str, Any] | None = None,
) -> int:
    """The source's batch write in ONE statement (run it in autocommit: it is then its own transaction):
    ``enqueue_pairs`` of ``pairs`` for ``sinks`` at ``lsn`` and, with ``checkpoint`` (the ``checkpoints.save``
    parameters: slot, lsn, beat, leader), the checkpoint advance, atomically. Returns the (sink, document) rows."""
    enqueue = bool(sinks and pairs)
    if not enqueue and checkpoint is None:
        return 0
    params: dict[str, Any] = {"lsn": lsn}
    if enqueue:
        params.update(_pair_params(sinks, pairs))
        params["channel"] = NOTIFY_CHANNEL
    if checkpoint is not None:
        if checkpoint["lsn"] != lsn:
            raise ValueError("a batch's checkpoint is the LSN its rows are enqueued at")
        params.update(checkpoint)
    conn.execute(_BATCH_STATEMENTS[enqueue, checkpoint is not None], params)
    return len(sinks) * len(pairs) if enqueue else 0


def enqueue_entities(conn: Conn, sinks: Collection[str], entities: Iterable[str], lsn: int) -> int:
    """Enqueue every document of whole entities (a TRUNCATE, a backfill). Caller's transaction."""
    if not sinks:
        return 0
    total = 0
    for entity in entities:
        if entity not in ENTITIES:
            raise ValueError(f"unknown entity {entity!r}; known: {', '.join(ENTITIES)}")
        query = sql.SQL(QUERIES["enqueue_entity"]).format(table=sql.Identifier("public", entity))
        cur = conn.execute(query, {"sinks": list(sinks), "entity": entity, "lsn": lsn})
        total += max(cur.rowcount, 0)
    notify(conn, sinks)
    return total


def notify(conn: Conn, sinks: Iterable[str]) -> None:
    names = sorted(set(sinks))
    if names:
        conn.execute(QUERIES["notify"], {"channel": NOTIFY_CHANNEL, "sinks": names})


def current_lsn(conn: Conn) -> int:
    row = conn.execute("SELECT (pg_current_wal_lsn() - '0/0')::bigint").fetchone()
    assert row is not None
    return int(row[0])


def backfill(conn: Conn, sinks: Collection[str], entities: Iterable[str] | None = None, *, force: bool = False) -> int:
    """Enqueue every existing document of ``entities`` (all by default) for ``sinks``, in one transaction.
    A full backfill also clears ``sink_status.needs_resync`` of those sinks. With ``force`` every recorded
    content hash of those documents is overwritten first (``sink_state.force_rewrite``), so each document is
    written again instead of skipped as unchanged. Returns the rows enqueued."""
    chosen = tuple(entities) if entities is not None else ENTITIES
    with conn.transaction():
        if force:
            sink_state.force_rewrite(conn, list(sinks), None if entities is None else chosen)
        total = enqueue_entities(conn, sinks, chosen, current_lsn(conn))
        if entities is None and sinks:
            conn.execute(QUERIES["clear_needs_resync"], {"sinks": list(sinks)})
    return total


# ---- the workers' side --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClaimedRow:
    key: DocumentKey
    version: int
    attempts: int
    age_s: float  # since first_enqueued_at


@dataclass(frozen=True)
class Lease:
    """Who holds a claimed row of which sink (the guard of every statement that finishes a claim)."""

    sink: str
    worker: str

    def params(self, key: DocumentKey) -> dict[str, Any]:
        return {"sink": self.sink, "entity": key.entity, "id": key.id, "worker": self.worker}


def claim(conn: Conn, lease: Lease, *, limit: int, lease_s: float, settle_s: float) -> list[ClaimedRow]:
    """Lease up to ``limit`` due rows (``claim_batch``) and commit at once; sorted by key."""
    params = {"sink": lease.sink, "limit": limit, "worker": lease.worker, "lease": lease_s, "settle": settle_s}
    with conn.transaction():
        rows = conn.execute(QUERIES["claim_batch"], params).fetchall()
    claimed = [ClaimedRow(DocumentKey(e, i), version, attempts, age) for e, i, version, attempts, age in rows]
    return sorted(claimed, key=lambda row: row.key)


def next_due_in(conn: Conn, sink: str, settle_s: float) -> float | None:
    """Seconds until the soonest row of ``sink`` becomes claimable (negative: overdue), None when none is pending."""
    row = conn.execute(QUERIES["next_due"], {"sink": sink, "settle": settle_s}).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def complete(conn: Conn, lease: Lease, row: ClaimedRow) -> None:
    """The claimed version is in sync downstream: resolve its dead letter, remove the row — or, when a newer
    version arrived meanwhile, give the row back so the newer change is applied too."""
    params = lease.params(row.key)
    conn.execute(QUERIES["resolve_dead_letter"], params)
    if conn.execute(QUERIES["complete"], {**params, "version": row.version}).rowcount == 0:
        release(conn, lease, row.key)


def _key_arrays(keys: Collection[DocumentKey]) -> dict[str, list[Any]]:
    ordered = sorted(keys)
    entities: list[str] = [k.entity for k in ordered]
    ids: list[uuid.UUID] = [k.id for k in ordered]
    return {"entities": entities, "ids": ids}


def renew(conn: Conn, lease: Lease, keys: Collection[DocumentKey], *, lease_s: float) -> set[DocumentKey]:
    """Extend the lease of ``keys`` (``renew_leases``); returns those this worker still holds."""
    if not keys:
        return set()
    params = {"sink": lease.sink, "worker": lease.worker, "lease": lease_s, **_key_arrays(keys)}
    with conn.transaction():
        rows = conn.execute(QUERIES["renew_leases"], params).fetchall()
    return {DocumentKey(entity, id_) for entity, id_ in rows}


def held(conn: Conn, lease: Lease, keys: Collection[DocumentKey]) -> set[DocumentKey]:
    """The rows of ``keys`` this worker still holds, locked until the caller's transaction ends (``held_claims``)."""
    if not keys:
        return set()
    params = {"sink": lease.sink, "worker": lease.worker, **_key_arrays(keys)}
    return {DocumentKey(entity, id_) for entity, id_ in conn.execute(QUERIES["held_claims"], params)}


def release_all(conn: Conn, lease: Lease) -> int:
    """Give back every row this worker holds (``release_claims``: after a database error, a Postgres restart).
    Returns how many."""
    params = {"sink": lease.sink, "worker": lease.worker}
    return max(conn.execute(QUERIES["release_claims"], params).rowcount, 0)


def release(conn: Conn, lease: Lease, key: DocumentKey) -> None:
    conn.execute(QUERIES["release"], lease.params(key))


def retry_later(conn: Conn, lease: Lease, key: DocumentKey, *, delay_s: float, error: str, attempts: int) -> None:
    """Give the row back, due after ``delay_s``; ``attempts`` is added to its count (0 for a deferral)."""
    conn.execute(QUERIES["retry_later"], {**lease.params(key), "count": attempts, "delay": delay_s, "error": error})


def dead_letter(
    conn: Conn, lease: Lease, row: ClaimedRow, error: str, *, permanent: bool, attempts: int, guard_version: bool
) -> bool:
    """Move the row to ``replicator.dead_letter``. With ``guard_version`` only the claimed version moves (a
    permanent rejection of THAT content); when a newer one arrived meanwhile, the row is released instead and
    False is returned."""
    params = {
        **lease.params(row.key),
        "version": row.version if guard_version else None,
        "error": error,
        "permanent": permanent,
        "count": attempts,
    }
    if conn.execute(QUERIES["dead_letter"], params).rowcount == 0:
        release(conn, lease, row.key)
        return False
    return True


# ---- dead letters: the operator's side ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DeadLetter:
    sink: str
    entity: str
    entity_id: uuid.UUID
    version: int
    attempts: int
    permanent: bool
    error: str
    first_enqueued_at: datetime
    failed_at: datetime


def dlq_list(conn: Conn, *, sink: str | None, entity: str | None, limit: int) -> list[DeadLetter]:
    rows = conn.execute(QUERIES["dlq_list"], {"sink": sink, "entity": entity, "limit": limit}).fetchall()
    return [DeadLetter(*row) for row in rows]


def dlq_retry(conn: Conn, *, sink: str | None, entity: str | None) -> int:
    """Move dead letters back into the outbox and wake their workers, in one transaction; returns how many."""
    with conn.transaction():
        sinks = [row[0] for row in conn.execute(QUERIES["dlq_retry"], {"sink": sink, "entity": entity})]
        notify(conn, sinks)
    return len(sinks)


def dlq_count(conn: Conn, *, sink: str | None, entity: str | None) -> int:
    row = conn.execute(QUERIES["dlq_count"], {"sink": sink, "entity": entity}).fetchone()
    return int(row[0]) if row else 0


def dlq_purge(conn: Conn, *, sink: str | None, entity: str | None) -> int:
    return max(conn.execute(QUERIES["dlq_purge"], {"sink": sink, "entity": entity}).rowcount, 0)
