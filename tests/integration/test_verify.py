"""``replicator verify`` with the Pinecone sink on the emulator (real SDK) and the real sink worker: a synced
store is reported in sync; each kind of drift is found; ``--repair`` enqueues it and, once the worker has drained
the outbox, verify is clean again."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from replicator.config import Settings
from replicator.documents import DocumentKey
from replicator.metrics import Metrics
from replicator.retry import BackoffPolicy
from replicator.sinks.pinecone import PineconeSink, build_pinecone_sink, connect, ensure_index
from replicator.store.outbox import backfill
from replicator.verify import INVALIDATED_HASH, compare, expected_hashes, repair, verify_sink
from replicator.worker import SinkWorker
from tests.emulators.openai_embeddings import EmbeddingsServer, serve_embeddings
from tests.emulators.pinecone import PineconeEmulator

Conn = psycopg.Connection[tuple[Any, ...]]
DIM = 16
NS = "verify"


def _settings(db_url: str, emulator: PineconeEmulator, embeddings: EmbeddingsServer) -> Settings:
    return Settings.model_validate(
        {
            "POSTGRES_URL": db_url,
            "REPLICATOR_SINKS": "pinecone",
            "PINECONE_API_KEY": emulator.api_key,
            "PINECONE_CONTROLLER_HOST": emulator.url,
            "PINECONE_INDEX": "omics-verify",
            "PINECONE_NAMESPACE": NS,
            "EMBEDDING_PROVIDER": "openai",
            "EMBEDDING_MODEL": "hash-embedding",
            "OPENAI_BASE_URL": embeddings.base_url,
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
    ensure_index(pc, s.pinecone_index, DIM)
    pc.close()
    return s


@pytest.fixture
def sink(settings: Settings) -> Iterator[PineconeSink]:
    s = build_pinecone_sink(settings)
    try:
        yield s
    finally:
        s.close()


def _dataset(conn: Conn, name: str, omics: str = "lipidomics") -> DocumentKey:
    row = conn.execute(
        "INSERT INTO dataset (natural_key, name, omics_type, description) VALUES (%s, %s, %s, %s) RETURNING id",
        (f"key-{uuid.uuid4()}", name, omics, f"{name} measured in patients"),
    ).fetchone()
    assert row is not None
    return DocumentKey("dataset", row[0])


def _program(conn: Conn, name: str, datasets: list[DocumentKey]) -> DocumentKey:
    row = conn.execute("INSERT INTO program (name) VALUES (%s) RETURNING id", (name,)).fetchone()
    assert row is not None
    for d in datasets:
        conn.execute("INSERT INTO program_dataset (program_id, dataset_id) VALUES (%s, %s)", (row[0], d.id))
    return DocumentKey("program", row[0])


def _drain(db_url: str, settings: Settings, sink: PineconeSink) -> None:
    worker = SinkWorker(
        db_url,
        sink,
        settings=settings,
        metrics=Metrics(),
        worker_id="verify-test",
        policy=BackoffPolicy(base_s=0.01, cap_s=0.05),
    )
    try:
        for _ in range(50):
            if worker.run_once() == 0:
                return
        raise AssertionError("the outbox did not drain")
    finally:
        worker.close()


def _synced(conn: Conn, db_url: str, settings: Settings, sink: PineconeSink) -> dict[str, DocumentKey]:
    keys = {name: _dataset(conn, name) for name in ("alpha", "beta", "gamma", "delta")}
    keys["program"] = _program(conn, "Neuro", [keys["alpha"], keys["beta"]])
    backfill(conn, ["pinecone"])
    _drain(db_url, settings, sink)
    return keys


def test_a_synced_index_is_reported_in_sync(conn: Conn, db_url: str, settings: Settings, sink: PineconeSink) -> None:
    _synced(conn, db_url, settings, sink)
    report = verify_sink(conn, sink)
    assert report.in_sync
    assert report.documents == 5
    assert report.remote == 5


def test_every_kind_of_drift_is_found_and_repair_plus_the_worker_makes_it_clean(
    conn: Conn, db_url: str, settings: Settings, sink: PineconeSink
) -> None:
    keys = _synced(conn, db_url, settings, sink)
    # orphaned: the row goes without the replicator seeing it (no outbox row is written here)
    conn.execute("DELETE FROM dataset WHERE id = %s", (keys["alpha"].id,))
    # missing: a new row nobody replicated
    new = _dataset(conn, "epsilon")
    # stale: the row changed since it was written
    conn.execute("UPDATE dataset SET description = 'rewritten' WHERE id = %s", (keys["beta"].id,))
    # duplicated: leftovers of an older version under gamma's prefix
    sink.index.upsert(
        vectors=[
            {
                "id": f"dataset:{keys['gamma'].id}#0042",
                "values": [0.5] * DIM,
                "metadata": {"content_hash": "older", "chunk": 42, "chunk_count": 43},
            }
        ],
        namespace=NS,
    )
    report = verify_sink(conn, sink)
    assert not report.in_sync
    assert report.orphaned == (keys["alpha"],)
    assert report.missing == (new,)
    # the program lost a dataset, so its document changed too: stale as well
    assert set(report.stale) == {keys["beta"], keys["program"]}
    assert report.duplicated == (keys["gamma"],)

    result = repair(conn, report)
    assert result.enqueued == 5
    outbox = {(e, i) for e, i in conn.execute("SELECT entity, entity_id FROM replicator.outbox WHERE sink='pinecone'")}
    assert outbox == {(k.entity, k.id) for k in (keys["alpha"], new, keys["beta"], keys["program"], keys["gamma"])}
    hashes: dict[uuid.UUID, str] = dict(
        conn.execute("SELECT entity_id, content_hash FROM replicator.sink_state WHERE sink='pinecone'")
    )
    assert hashes[keys["beta"].id] == INVALIDATED_HASH
    assert keys["gamma"].id not in hashes  # forgotten: the sink lists its chunks afresh

    _drain(db_url, settings, sink)
    assert verify_sink(conn, sink).in_sync


def test_compare_counts_a_document_with_two_remote_copies_as_duplicated_not_stale() -> None:
    from replicator.sinks.base import RemoteDocument

    key = DocumentKey("dataset", uuid.uuid4())
    report = compare("x", {key: "h1"}, [RemoteDocument(key, "a", "h1"), RemoteDocument(key, "b", "h0")])
    assert report.duplicated == (key,)
    assert report.stale == ()
    assert report.remote_ids[key] == ("a", "b")


def test_expected_hashes_cover_every_current_document(conn: Conn) -> None:
    a = _dataset(conn, "a")
    p = _program(conn, "P", [a])
    assert set(expected_hashes(conn, batch=1)) == {a, p}


def test_verify_command_exits_0_in_sync_and_1_with_drift_and_prints_json(
    conn: Conn,
    db_url: str,
    settings: Settings,
    sink: PineconeSink,
    pinecone_emulator: PineconeEmulator,
    embeddings: EmbeddingsServer,
) -> None:
    import json

    from replicator.cli import app

    keys = _synced(conn, db_url, settings, sink)
    env = {
        "POSTGRES_URL": db_url,
        "REPLICATOR_SINKS": "pinecone",
        "PINECONE_API_KEY": pinecone_emulator.api_key,
        "PINECONE_CONTROLLER_HOST": pinecone_emulator.url,
        "PINECONE_INDEX": "omics-verify",
        "PINECONE_NAMESPACE": NS,
        "EMBEDDING_PROVIDER": "openai",
        "EMBEDDING_MODEL": "hash-embedding",
        "OPENAI_BASE_URL": embeddings.base_url,
    }
    runner = CliRunner()
    ok = runner.invoke(app, ["verify", "--json"], env=env)
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["in_sync"] is True

    conn.execute("DELETE FROM dataset WHERE id = %s", (keys["delta"].id,))
    drift = runner.invoke(app, ["verify", "--json", "--repair"], env=env)
    assert drift.exit_code == 1, drift.output
    payload = json.loads(drift.stdout)
    assert payload["sinks"][0]["orphaned"] == [
        {"entity": "dataset", "postgres_id": str(keys["delta"].id), "remote_ids": [f"dataset:{keys['delta'].id}#"]}
    ]
    assert payload["repair"][0]["enqueued"] == 1

    unknown = runner.invoke(app, ["verify", "--sink", "nosuch"], env=env)
    assert unknown.exit_code == 2
