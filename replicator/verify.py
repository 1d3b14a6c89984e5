"""``replicator verify``: compare Postgres with what each sink holds, through ``Sink.inventory()``.

Every current document is rendered from Postgres (in batches, in one REPEATABLE READ snapshot) and its content
hash compared with the hash the sink stored downstream:

- missing: in Postgres, not downstream;
- orphaned: downstream, but its row is gone;
- stale: downstream with another content hash (or an incomplete set of chunks);
- duplicated: more than one remote document for one key (two Notion pages, or Pinecone chunks that disagree).

A scoped sink (replicator/scope.py) is compared with the documents in its scope; what it still holds outside the
scope while the row exists (``REPLICATOR_SCOPE_NARROW=keep``, or a Notion page people wrote on) is listed as
``outside_scope``: shown, never drift, never repaired.

Eventually consistent reads (Pinecone) are handled in ``verify_sink``: it waits for the sink's reads to catch up
(``Sink.settle_reads``), and re-checks what looks drifted after ``REPLICATOR_VERIFY_RECHECK_S`` before reporting it.

``repair`` goes through the normal pipeline rather than around it: it enqueues the keys into
``replicator.outbox`` (the same coalescing insert the source uses) and makes the worker write them again —
for missing and stale keys it invalidates the recorded hash (so the "unchanged, skip" shortcut does not apply),
for duplicated keys it forgets the sink state (so the sink looks the document up afresh and removes the extras);
orphans are enqueued and the worker, finding no row, deletes them downstream.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import psycopg
from psycopg import sql

from replicator.documents import Document, DocumentKey, render
from replicator.graph import ENTITIES
from replicator.scope import EVERYTHING, Scope, members, restrict
from replicator.sinks.base import RemoteDocument, Sink
from replicator.store import narrative, sink_state
from replicator.store.outbox import current_lsn, enqueue

RENDER_BATCH = 500
# What ``repair`` writes over a recorded hash so the worker sees the document as changed (and passes
# ``force=True`` to the sink, so a sink's own hash check does not skip it either).
INVALIDATED_HASH = sink_state.INVALIDATED_HASH


@dataclass(frozen=True)
class SinkReport:
    sink: str
    documents: int  # current documents in Postgres
    remote: int  # remote documents the sink listed (duplicates included)
    missing: tuple[DocumentKey, ...] = ()
    orphaned: tuple[DocumentKey, ...] = ()
    stale: tuple[DocumentKey, ...] = ()
    duplicated: tuple[DocumentKey, ...] = ()
    # A scoped sink's documents whose rows exist but fall outside its scope: kept there on purpose
    # (REPLICATOR_SCOPE_NARROW=keep, or a Notion page people wrote on), listed but not drift.
    outside_scope: tuple[DocumentKey, ...] = ()
    remote_ids: dict[DocumentKey, tuple[str, ...]] = field(default_factory=dict)  # for the drifted keys

    @property
    def in_sync(self) -> bool:
        return not (self.missing or self.orphaned or self.stale or self.duplicated)

    def as_json(self) -> dict[str, Any]:
        def keys(items: Iterable[DocumentKey]) -> list[dict[str, Any]]:
            return [
                {"entity": k.entity, "postgres_id": str(k.id), "remote_ids": list(self.remote_ids.get(k, ()))}
                for k in items
            ]

        return {
            "sink": self.sink,
            "in_sync": self.in_sync,
            "documents": self.documents,
            "remote": self.remote,
            "missing": keys(self.missing),
            "orphaned": keys(self.orphaned),
            "stale": keys(self.stale),
            "duplicated": keys(self.duplicated),
            "outside_scope": keys(self.outside_scope),
        }


@dataclass(frozen=True)
class RepairResult:
    sink: str
    enqueued: int
    invalidated: int  # sink_state hashes invalidated (missing, stale)
    forgotten: int  # sink_state rows removed (duplicated)


def expected_hashes(
    conn: psycopg.Connection[Any],
    *,
    batch: int = RENDER_BATCH,
    hasher: Callable[[Document], str] = Document.content_hash,
    scope: Scope = EVERYTHING,
) -> dict[DocumentKey, str]:
    """Content hash of every current document (as ``hasher``, a sink's ``document_hash``, computes it), rendered in
    batches inside one REPEATABLE READ snapshot. A sink's ``scope`` (replicator/scope.py): only the documents in
    it, as the scoped sink carries them (relations to documents outside it left out)."""
    out: dict[DocumentKey, str] = {}
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        inside = None if scope.everything else frozenset(members(conn, scope))
        for entity in ENTITIES:
            query = sql.SQL("SELECT id FROM {} ORDER BY id").format(sql.Identifier("public", entity))
            ids = [row[0] for row in conn.execute(query)]
            if inside is not None:
                ids = [i for i in ids if DocumentKey(entity, i) in inside]
            for start in range(0, len(ids), batch):
                keys = [DocumentKey(entity, i) for i in ids[start : start + batch]]
                for key, document in render(conn, keys).items():
                    if document is not None:
                        out[key] = hasher(document if inside is None else restrict(document, inside))
    return out


def compare(sink: str, expected: dict[DocumentKey, str], remote: Iterable[RemoteDocument]) -> SinkReport:
    by_key: dict[DocumentKey, list[RemoteDocument]] = defaultdict(list)
    count = 0
    for item in remote:
        by_key[item.key].append(item)
        count += 1
    missing = sorted(k for k in expected if k not in by_key)
    orphaned = sorted(k for k in by_key if k not in expected)
    duplicated = sorted(k for k, items in by_key.items() if len(items) > 1 and k in expected)
    stale = sorted(
        k for k, items in by_key.items() if len(items) == 1 and k in expected and items[0].content_hash != expected[k]
    )
    drifted = set(orphaned) | set(duplicated) | set(stale)
    remote_ids = {k: tuple(sorted({i.remote_id for i in by_key[k]})) for k in drifted}
    return SinkReport(
        sink=sink,
        documents=len(expected),
        remote=count,
        missing=tuple(missing),
        orphaned=tuple(orphaned),
        stale=tuple(stale),
        duplicated=tuple(duplicated),
        remote_ids=remote_ids,
    )


def verify_sink(
    conn: psycopg.Connection[Any],
    sink: Sink,
    expected: dict[DocumentKey, str] | None = None,
    *,
    recheck_s: float = 0.0,
    sleep: Callable[[float], None] = time.sleep,
    scope: Scope = EVERYTHING,
) -> SinkReport:
    """Compare one sink with Postgres (``expected`` from ``expected_hashes`` can be shared between sinks).

    Reads may lag the writes (Notion documents no consistency for queries, Pinecone is eventually consistent; see
    docs/operations.md, "What the real services do"). Three steps keep ``verify`` and ``--repair`` exact:

    1. ``sink.settle_reads()`` waits until the sink's reads reflect every write made before verify started, where
       the service says how far its reads are (Pinecone's LSNs).
    2. A drifted key is RE-CHECKED by id (``Sink.fetch``, where the sink can read by id: Notion's
       ``pages.retrieve``): the remote documents the inventory showed for it, and for a missing key the one its
       sink state names.
    3. With ``recheck_s`` > 0, whatever still looks drifted is looked at again after that many seconds — the
       documents re-rendered from Postgres, their remote copies read again (``inventory_of``) — so a read that was
       merely late (a Pinecone fetch has no freshness signal) is never reported.

    Only what still drifts is reported, so ``repair`` never rewrites a document that was in sync. (A change a
    lagging inventory does not show yet — a page a person trashed a moment ago — is seen by the next ``verify``.)"""
    hashes = expected if expected is not None else expected_hashes(conn, hasher=sink.document_hash, scope=scope)
    sink.settle_reads()
    remote = list(sink.inventory())
    first = _apart_outside_scope(conn, compare(sink.name, hashes, remote), scope)
    if first.in_sync:
        return first
    report = first
    ids = {i for k in (*first.orphaned, *first.stale, *first.duplicated) for i in first.remote_ids.get(k, ())}
    ids.update(sink_state.remote_ids(conn, sink.name, list(first.missing)).values())
    fresh = sink.fetch(sorted(ids)) if ids else None
    if fresh is not None:
        settled = [item for item in remote if item.remote_id not in fresh]
        seen = {r.remote_id for r in settled}
        settled.extend(doc for doc in fresh.values() if doc is not None and doc.remote_id not in seen)
        report = _apart_outside_scope(conn, compare(sink.name, hashes, settled), scope)
    if report.in_sync or recheck_s <= 0:
        return report
    sleep(recheck_s)
    sink.settle_reads()
    drifted = sorted(set(report.missing) | set(report.orphaned) | set(report.stale) | set(report.duplicated))
    now = expected_hashes_of(conn, drifted, hasher=sink.document_hash, scope=scope)
    second = _apart_outside_scope(conn, compare(sink.name, now, sink.inventory_of(drifted)), scope)
    return replace(
        second,
        documents=first.documents,
        remote=first.remote,
        outside_scope=tuple(sorted(set(first.outside_scope) | set(second.outside_scope))),
    )


def _apart_outside_scope(conn: psycopg.Connection[Any], report: SinkReport, scope: Scope) -> SinkReport:
    """A scoped sink's remote document that is not expected but whose row still exists is outside the scope, not
    an orphan: the worker leaves it there by choice (``keep``, or a page people wrote on). It is listed apart
    (``outside_scope``), so ``verify`` of a narrowed pilot can end clean and ``--repair`` never enqueues it."""
    if scope.everything or not report.orphaned:
        return report
    existing = _existing(conn, report.orphaned)
    return replace(
        report,
        orphaned=tuple(k for k in report.orphaned if k not in existing),
        outside_scope=tuple(k for k in report.orphaned if k in existing),
    )


def _existing(conn: psycopg.Connection[Any], keys: Iterable[DocumentKey]) -> set[DocumentKey]:
    """The keys whose rows exist now."""
    by_entity: dict[str, list[uuid.UUID]] = defaultdict(list)
    for key in keys:
        by_entity[key.entity].append(key.id)
    found: set[DocumentKey] = set()
    for entity, ids in by_entity.items():
        query = sql.SQL("SELECT id FROM {} WHERE id = ANY(%s)").format(sql.Identifier("public", entity))
        found.update(DocumentKey(entity, row[0]) for row in conn.execute(query, (ids,)))
    return found


def expected_hashes_of(
    conn: psycopg.Connection[Any],
    keys: list[DocumentKey],
    *,
    hasher: Callable[[Document], str] = Document.content_hash,
    scope: Scope = EVERYTHING,
) -> dict[DocumentKey, str]:
    """Content hash (as ``hasher`` computes it) of each of ``keys`` that exists now (one REPEATABLE READ snapshot);
    with a ``scope``, of those in it, as the scoped sink carries them."""
    out: dict[DocumentKey, str] = {}
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        inside = None if scope.everything else frozenset(members(conn, scope))
        if inside is not None:
            keys = [k for k in keys if k in inside]
        for start in range(0, len(keys), RENDER_BATCH):
            for key, document in render(conn, keys[start : start + RENDER_BATCH]).items():
                if document is not None:
                    out[key] = hasher(document if inside is None else restrict(document, inside))
    return out


def repair(conn: psycopg.Connection[Any], report: SinkReport) -> RepairResult:
    """Enqueue everything that drifted, in one transaction (see the module docstring for what each kind gets)."""
    rewrite = sorted(set(report.missing) | set(report.stale))
    keys = sorted(set(rewrite) | set(report.duplicated) | set(report.orphaned))
    with conn.transaction():
        invalidated = sink_state.invalidate(conn, report.sink, rewrite, INVALIDATED_HASH)
        forgotten = sink_state.forget_many(conn, report.sink, report.duplicated)
        enqueued = enqueue(conn, {report.sink: keys}, current_lsn(conn)) if keys else 0
    return RepairResult(report.sink, enqueued, invalidated, forgotten)


def record_report(conn: psycopg.Connection[Any], report: SinkReport) -> None:
    """Keep the counts of the last verify of this sink (``replicator rollout status`` shows them)."""
    narrative.record_verify(
        conn,
        {
            "sink": report.sink,
            "in_sync": report.in_sync,
            "documents": report.documents,
            "remote": report.remote,
            "missing": len(report.missing),
            "orphaned": len(report.orphaned),
            "stale": len(report.stale),
            "duplicated": len(report.duplicated),
        },
    )
