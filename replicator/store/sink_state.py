"""``replicator.sink_state`` and ``replicator.sink_status``: per sink and document, what was written downstream
(remote id such as the Notion page id, content hash, chunk count: DESIGN.md §4), and per sink, whether it is on and
how it last fared. Workers, ``verify`` and ``status`` read and write these through here only."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from replicator.documents import UNCONFIRMED_INTENT, DocumentKey, RemoteState, WriteIntent
from replicator.store.queries import QUERIES

Conn = psycopg.Connection[Any]


def _arrays(keys: Sequence[DocumentKey]) -> dict[str, list[Any]]:
    entities: list[str] = [k.entity for k in keys]
    ids: list[uuid.UUID] = [k.id for k in keys]
    return {"entities": entities, "ids": ids}


def read(conn: Conn, sink: str, keys: Sequence[DocumentKey]) -> dict[DocumentKey, RemoteState]:
    """What ``sink`` last wrote of each of ``keys`` (documents it never wrote are absent)."""
    if not keys:
        return {}
    rows = conn.execute(QUERIES["read_sink_state"], {"sink": sink, **_arrays(keys)}).fetchall()
    return {
        DocumentKey(entity, id_): RemoteState(remote_id=remote_id, content_hash=digest, chunk_count=chunks)
        for entity, id_, remote_id, digest, chunks in rows
    }


def remote_ids(conn: Conn, sink: str, keys: Sequence[DocumentKey]) -> dict[DocumentKey, str]:
    """The remote ids (Notion page ids) ``sink`` recorded for ``keys``."""
    return {key: state.remote_id for key, state in read(conn, sink, keys).items() if state.remote_id}


def record(conn: Conn, sink: str, key: DocumentKey, state: RemoteState) -> None:
    params = {
        "sink": sink,
        "entity": key.entity,
        "id": key.id,
        "remote_id": state.remote_id,
        "hash": state.content_hash,
        "chunks": state.chunk_count,
    }
    conn.execute(QUERIES["record_state"], params)


# Content hashes no render produces, written over a recorded hash so the worker rewrites the document:
# a write under way (``record_intents``), ``resync --force`` (``force_rewrite``), ``verify --repair`` (``invalidate``).
INTENT_HASH = UNCONFIRMED_INTENT
FORCED_HASH = "resync:forced"
INVALIDATED_HASH = "verify:invalidated"
# Recorded by the worker for a document it removed because it fell outside the sink's scope (#14): no render
# produces it, so the document is written again when it is back in scope, and the remote id stays, so the Notion sink
# restores the same page from the trash (with the blocks people wrote on it) instead of creating another.
SCOPE_REMOVED_HASH = "scope:removed"
# The worker passes ``force=True`` to the sink for these: rewrite even if the sink's own check says "current".
FORCE_HASHES = frozenset({FORCED_HASH, INVALIDATED_HASH})


def force_rewrite(conn: Conn, sinks: Sequence[str], entities: Iterable[str] | None = None) -> int:
    """Mark every document ``sinks`` hold (of ``entities``, all by default) to be rewritten (``force_rewrite``)."""
    total = 0
    for entity in (None,) if entities is None else tuple(entities):
        params = {"sinks": list(sinks), "hash": FORCED_HASH, "entity": entity}
        total += max(conn.execute(QUERIES["force_rewrite"], params).rowcount, 0)
    return total


def record_intents(conn: Conn, sink: str, worker: str, intents: Mapping[DocumentKey, WriteIntent]) -> None:
    """Before a write: record each document's ``WriteIntent`` (``record_intents``), for the documents whose
    outbox row ``worker`` still holds. The caller commits it before the write."""
    if not intents:
        return
    keys = sorted(intents)
    params = {
        "sink": sink,
        "worker": worker,
        "hashes": [intents[k].marker for k in keys],
        "parts": [intents[k].parts for k in keys],
        "remote_ids": [intents[k].remote_id for k in keys],
        **_arrays(keys),
    }
    conn.execute(QUERIES["record_intents"], params)


def forget(conn: Conn, sink: str, key: DocumentKey) -> None:
    conn.execute(QUERIES["forget_state"], {"sink": sink, "entity": key.entity, "id": key.id})


def invalidate(conn: Conn, sink: str, keys: Sequence[DocumentKey], marker: str) -> int:
    """Replace the stored hash of ``keys`` with ``marker`` (a hash no render produces): the next pass rewrites them."""
    if not keys:
        return 0
    return max(conn.execute(QUERIES["invalidate_states"], {"sink": sink, "hash": marker, **_arrays(keys)}).rowcount, 0)


def forget_many(conn: Conn, sink: str, keys: Sequence[DocumentKey]) -> int:
    if not keys:
        return 0
    return max(conn.execute(QUERIES["forget_states"], {"sink": sink, **_arrays(keys)}).rowcount, 0)


# ---- sink status --------------------------------------------------------------------------------------------------


def known_sinks(conn: Conn) -> list[str]:
    return [row[0] for row in conn.execute(QUERIES["known_sinks"])]


def sync_status(conn: Conn, sink: str, *, enabled: bool, streamed_before: bool) -> bool:
    """Record whether ``sink`` is on; returns whether it needs a resync (see ``sync_sink_status``)."""
    params = {"sink": sink, "enabled": enabled, "streamed_before": streamed_before}
    row = conn.execute(QUERIES["sync_sink_status"], params).fetchone()
    return bool(row and row[0])


def record_success(conn: Conn, sink: str) -> None:
    conn.execute(QUERIES["sink_success"], {"sink": sink})


def record_error(conn: Conn, sink: str, error: str) -> None:
    conn.execute(QUERIES["sink_error"], {"sink": sink, "error": error})


def record_duplicates(conn: Conn, sink: str, count: int) -> None:
    """Add ``count`` duplicate downstream documents found by ``sink`` to its running total."""
    if count > 0:
        conn.execute(QUERIES["sink_duplicates"], {"sink": sink, "n": count})


def record_schema_problem(conn: Conn, sink: str, entity: str, problem: str) -> None:
    """Documents of ``entity`` wait for a schema fix; ``problem`` says what and how (shown by status/health)."""
    conn.execute(QUERIES["sink_schema_problem"], {"sink": sink, "entity": entity, "problem": problem})


def clear_schema_problem(conn: Conn, sink: str, entities: Iterable[str]) -> None:
    """A document of one of ``entities`` was written: a schema problem named for it is over."""
    names = sorted(set(entities))
    if names:
        conn.execute(QUERIES["clear_sink_schema_problem"], {"sink": sink, "entities": names})


@dataclass(frozen=True)
class SinkCounts:
    name: str
    pending: int
    oldest_pending_age_s: float | None
    dead_letters: int
    needs_resync: bool
    last_success_at: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    duplicates_found: int = 0
    last_duplicate_at: datetime | None = None
    schema_problem: str | None = None
    schema_problem_at: datetime | None = None


def counts(conn: Conn, configured: Iterable[str]) -> list[SinkCounts]:
    """Every sink the replicator knows of (configured ones, and any with rows in its tables), with its backlog."""
    rows = conn.execute(QUERIES["sink_counts"], {"configured": list(configured)}).fetchall()
    return [
        SinkCounts(name, pending, max(0.0, oldest) if oldest is not None else None, *rest)
        for name, pending, oldest, *rest in rows
    ]


# ---- sink health (replicator/sink_gate.py) ------------------------------------------------------------------------


@dataclass(frozen=True)
class SinkHealthRow:
    name: str
    up: bool
    reason: str | None
    fix: str | None  # the command that fixes a configuration an operator must fix
    down_for_s: float | None
    checked_s_ago: float
    process: str | None


def record_health(conn: Conn, sink: str, *, up: bool, reason: str | None, fix: str | None, process: str) -> None:
    params = {"sink": sink, "up": up, "reason": reason, "fix": fix, "process": process}
    conn.execute(QUERIES["record_sink_health"], params)


def read_health(conn: Conn) -> dict[str, SinkHealthRow]:
    rows = conn.execute(QUERIES["read_sink_health"]).fetchall()
    return {
        name: SinkHealthRow(name, up, reason, fix, None if down is None else max(0.0, down), max(0.0, ago), process)
        for name, up, reason, fix, down, ago, process in rows
    }
