"""The Pinecone sink stays exact under the service's hard behaviours (issue #12): answers lost after the write was
applied, leases that run out during slow writes, a sink restored empty, big relation lists, read lag. Everything
goes through the real ``pinecone`` SDK against the emulator and the real sink worker on a real database."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from replicator.config import Settings
from replicator.documents import DocumentKey
from replicator.metrics import Metrics
from replicator.query import search
from replicator.retry import BackoffPolicy
from replicator.sinks.pinecone import PineconeSink, build_pinecone_sink, connect, ensure_index, id_prefix
from replicator.store.outbox import backfill
from replicator.text import ChunkPolicy, chunk_document
from replicator.worker import SinkWorker
from tests.emulators.openai_embeddings import EmbeddingsServer, serve_embeddings
from tests.emulators.pinecone import PineconeEmulator

Conn = psycopg.Connection[tuple[Any, ...]]
DIM = 32
NS = "exact"
INDEX = "omics-exact"


def _settings(db_url: str, emulator: PineconeEmulator, embeddings: EmbeddingsServer, **extra: Any) -> Settings:
    return Settings.model_validate(
        {
            "POSTGRES_URL": db_url,
            "REPLICATOR_SINKS": "pinecone",
            "PINECONE_API_KEY": emulator.api_key,
            "PINECONE_CONTROLLER_HOST": emulator.url,
            "PINECONE_INDEX": INDEX,
            "PINECONE_NAMESPACE": NS,
            "EMBEDDING_PROVIDER": "openai",
            "EMBEDDING_MODEL": "hash-embedding",
            "OPENAI_BASE_URL": embeddings.base_url,
            **extra,
        }
    )


@pytest.fixture
def embeddings() -> Iterator[EmbeddingsServer]:
    with serve_embeddings(dimension=DIM) as server:
        yield server


@pytest.fixture
def settings(db_url: str, pinecone_emulator: PineconeEmulator, embeddings: EmbeddingsServer) -> Settings:
    s = _settings(db_url, pinecone_emulator, embeddings)
    pc = connect(pinecone_emulator.api_key, pinecone_emulator.url)
    ensure_index(pc, INDEX, DIM)
    pc.close()
    return s


@pytest.fixture
def sink(settings: Settings) -> Iterator[PineconeSink]:
    s = build_pinecone_sink(settings)
    s._chunking = ChunkPolicy(size=300, overlap=60)  # small chunks, so a paragraph spans many
    try:
        yield s
    finally:
        s.close()


def _worker(db_url: str, settings: Settings, sink: Any, worker_id: str = "exact") -> SinkWorker:
    return SinkWorker(
        db_url,
        sink,
        settings=settings,
        metrics=Metrics(),
        worker_id=worker_id,
        policy=BackoffPolicy(base_s=0.01, cap_s=0.05),
    )


def _drain(worker: SinkWorker, conn: Conn) -> None:
    for _ in range(50):
        conn.execute("UPDATE replicator.outbox SET next_attempt_at = now()")
        if worker.run_once() == 0:
            return
    raise AssertionError("the outbox did not drain")


def _dataset(conn: Conn, name: str, description: str) -> DocumentKey:
    row = conn.execute(
        "INSERT INTO dataset (natural_key, name, omics_type, description) VALUES (%s, %s, 'lipidomics', %s) "
        "RETURNING id",
        (f"key-{uuid.uuid4()}", name, description),
    ).fetchone()
    assert row is not None
    return DocumentKey("dataset", row[0])


def _enqueue(conn: Conn, key: DocumentKey) -> None:
    conn.execute(
        "INSERT INTO replicator.outbox AS o (sink, entity, entity_id) VALUES ('pinecone', %s, %s) "
        "ON CONFLICT (sink, entity, entity_id) DO UPDATE SET version = o.version + 1, last_enqueued_at = now()",
        (key.entity, key.id),
    )


def _vector_ids(emulator: PineconeEmulator, key: DocumentKey) -> list[str]:
    return sorted(i for i in emulator.vectors(INDEX, NS) if i.startswith(id_prefix(key)))


LONG = " ".join(f"Paragraph {n} tells of zebrafish brains and their quokkaword lipids." for n in range(60))


# ---- 1. stale chunks after a lost answer -------------------------------------------------------------------------


def test_a_lost_upsert_answer_while_growing_leaves_no_surplus_chunk_after_the_shrink(
    conn: Conn, db_url: str, settings: Settings, sink: PineconeSink, pinecone_emulator: PineconeEmulator
) -> None:
    key = _dataset(conn, "Growing", "Short.")
    worker = _worker(db_url, settings, sink)
    try:
        _enqueue(conn, key)
        _drain(worker, conn)
        assert len(_vector_ids(pinecone_emulator, key)) == 1

        # The document grows to 14 chunks; the upsert reaches Pinecone but its answer is lost (a 500 after apply).
        conn.execute("UPDATE dataset SET description = %s WHERE id = %s", (LONG[:2800], key.id))
        _enqueue(conn, key)
        pinecone_emulator.set_faults({"apply_then_fail_schedule": ["500"], "only_paths": ["/vectors/upsert"]})
        assert worker.run_once() == 1
        grown = _vector_ids(pinecone_emulator, key)
        assert len(grown) == 14, "the write was applied although its answer was lost"
        failed = conn.execute("SELECT attempts FROM replicator.outbox WHERE entity_id = %s", (key.id,)).fetchone()
        assert failed == (1,), "the worker saw a failure and will retry"

        # Before the retry the document shrinks back to one chunk.
        pinecone_emulator.set_faults({})
        conn.execute("UPDATE dataset SET description = 'Short again.' WHERE id = %s", (key.id,))
        _enqueue(conn, key)
        _drain(worker, conn)
    finally:
        worker.close()

    assert _vector_ids(pinecone_emulator, key) == [f"{id_prefix(key)}0000"]
    state = conn.execute(
        "SELECT chunk_count, content_hash FROM replicator.sink_state WHERE entity_id = %s", (key.id,)
    ).fetchone()
    assert state is not None
    assert state[0] == 1
    hits = search(conn, sink, "zebrafish quokkaword lipids paragraph", top_k=5)
    assert hits, "the document itself is still found"
    assert all("quokkaword" not in hit.chunk_text for hit in hits), "deleted text came back from the index"


def test_the_intent_is_recorded_before_the_write_and_replaced_by_the_exact_state_after(
    conn: Conn, db_url: str, settings: Settings, sink: PineconeSink, pinecone_emulator: PineconeEmulator
) -> None:
    key = _dataset(conn, "Intent", LONG[:2800])
    _enqueue(conn, key)
    worker = _worker(db_url, settings, sink)
    pinecone_emulator.set_faults({"schedule": ["500"], "only_paths": ["/vectors/upsert"]})  # refused, not applied
    try:
        worker.run_once()
        state = conn.execute(
            "SELECT chunk_count, content_hash FROM replicator.sink_state WHERE entity_id = %s", (key.id,)
        ).fetchone()
        assert state == (14, "intent:unconfirmed")
        assert _vector_ids(pinecone_emulator, key) == []
        _drain(worker, conn)
    finally:
        worker.close()
    document_chunks = len(chunk_document(_render(conn, key), sink._chunking))
    state = conn.execute("SELECT chunk_count FROM replicator.sink_state WHERE entity_id = %s", (key.id,)).fetchone()
    assert state == (document_chunks,)
    assert len(_vector_ids(pinecone_emulator, key)) == document_chunks == 14


def _render(conn: Conn, key: DocumentKey) -> Any:
    from replicator.documents import render

    document = render(conn, [key])[key]
    assert document is not None
    return document


def test_backfill_then_drain_is_idempotent(
    conn: Conn, db_url: str, settings: Settings, sink: PineconeSink, pinecone_emulator: PineconeEmulator
) -> None:
    key = _dataset(conn, "Idempotent", LONG[:1000])
    backfill(conn, ["pinecone"])
    worker = _worker(db_url, settings, sink)
    try:
        _drain(worker, conn)
        before = len(pinecone_emulator.requests)
        backfill(conn, ["pinecone"])
        _drain(worker, conn)
    finally:
        worker.close()
    upserts = [r for r in pinecone_emulator.requests[before:] if r["path"] == "/vectors/upsert"]
    assert upserts == [], "an unchanged document is not rewritten"
    assert len(_vector_ids(pinecone_emulator, key)) > 1
