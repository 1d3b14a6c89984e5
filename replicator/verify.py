"""``replicator verify``: compare Postgres with what each sink holds, through ``Sink.inventory()``.

Every current document is rendered from Postgres (in batches, in one REPEATABLE READ snapshot) and its content
hash compared with the hash the sink stored downstream:

- missing: in Postgres, not downstream;
- orphaned: downstream, but its row is gone;
- stale: downstream with another content hash (or an incomplete set of chunks);
- duplicated: more than one remote document for one key (two Notion pages, or Pinecone chunks that disagree).

``repair`` goes through the normal pipeline rather than around it: it enqueues the keys into
``replicator.outbox`` (the same coalescing insert the source uses) and makes the worker write them again —
for missing and stale keys it invalidates the recorded hash (so the "unchanged, skip" shortcut does not apply),
for duplicated keys it forgets the sink state (so the sink looks the document up afresh and removes the extras);
orphans are enqueued and the worker, finding no row, deletes them downstream.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from replicator.documents import Document, DocumentKey, render
from replicator.graph import ENTITIES
from replicator.sinks.base import RemoteDocument, Sink
from replicator.store import narrative, sink_state
from replicator.store.outbox import current_lsn, enqueue

RENDER_BATCH = 500
# What ``repair`` writes over a recorded hash so the worker sees the document as changed.
INVALIDATED_HASH = "verify:invalidated"


@dataclass(frozen=True)
class SinkReport:
    sink: str
    documents: int  # current documents in Postgres
    remote: int  # remote documents the sink listed (duplicates included)
    missing: tuple[DocumentKey, ...] = ()
    orphaned: tuple[DocumentKey, ...] = ()
    stale: tuple[DocumentKey, ...] = ()
    duplicated: tuple[DocumentKey, ...] = ()
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
) -> dict[DocumentKey, str]:
    """Content hash of every current document (as ``hasher``, a sink's ``document_hash``, computes it), rendered in
    batches inside one REPEATABLE READ snapshot."""
    out: dict[DocumentKey, str] = {}
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        for entity in ENTITIES:
            query = sql.SQL("SELECT id FROM {} ORDER BY id").format(sql.Identifier("public", entity))
            ids = [row[0] for row in conn.execute(query)]
            for start in range(0, len(ids), batch):
                keys = [DocumentKey(entity, i) for i in ids[start : start + batch]]
                for key, document in render(conn, keys).items():
                    if document is not None:
                        out[key] = hasher(document)
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
    conn: psycopg.Connection[Any], sink: Sink, expected: dict[DocumentKey, str] | None = None
) -> SinkReport:
    """Compare one sink with Postgres (``expected`` from ``expected_hashes`` with this sink's ``document_hash``)."""
    hashes = expected if expected is not None else expected_hashes(conn, hasher=sink.document_hash)
    return compare(sink.name, hashes, sink.inventory())


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
