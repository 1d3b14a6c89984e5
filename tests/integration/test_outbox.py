"""The outbox writer on the real server: coalescing, notifications, checkpoints, backfill."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

from replicator.documents import DocumentKey
from replicator.store.checkpoints import load as load_checkpoint
from replicator.store.checkpoints import save as save_checkpoint
from replicator.store.checkpoints import save_params
from replicator.store.outbox import NOTIFY_CHANNEL, backfill, enqueue, enqueue_entities, write_batch

Conn = psycopg.Connection[tuple[Any, ...]]


def rows(conn: Conn) -> dict[tuple[str, str, uuid.UUID], tuple[int, int]]:
    found = conn.execute("SELECT sink, entity, entity_id, version, lsn FROM replicator.outbox").fetchall()
    return {(r[0], r[1], r[2]): (r[3], r[4]) for r in found}


def new_dataset(conn: Conn, key: str) -> uuid.UUID:
    row = conn.execute(
        "INSERT INTO dataset (natural_key, name, omics_type) VALUES (%s, %s, 'lipidomics') RETURNING id", (key, key)
    ).fetchone()
    assert row is not None
    return uuid.UUID(str(row[0]))


def test_enqueueing_a_pending_document_again_bumps_its_version_keeps_the_highest_lsn_and_first_time(
    conn: Conn,
) -> None:
    key = DocumentKey("dataset", uuid.uuid4())
    enqueue(conn, {"notion": [key], "pinecone": [key]}, 200)
    first = conn.execute("SELECT first_enqueued_at FROM replicator.outbox WHERE sink = 'notion'").fetchone()
    enqueue(conn, {"notion": [key]}, 100)
    enqueue(conn, {"notion": [key]}, 300)
    assert rows(conn) == {
        ("notion", "dataset", key.id): (3, 300),
        ("pinecone", "dataset", key.id): (1, 200),
    }
    after = conn.execute(
        "SELECT first_enqueued_at, last_enqueued_at > first_enqueued_at FROM replicator.outbox WHERE sink = 'notion'"
    ).fetchone()
    assert after is not None
    assert first is not None
    assert after[0] == first[0]


def test_a_newer_change_leaves_a_rows_backoff_alone(conn: Conn) -> None:
    key = DocumentKey("signature", uuid.uuid4())
    enqueue(conn, {"notion": [key]}, 1)
    conn.execute("UPDATE replicator.outbox SET attempts = 3, next_attempt_at = now() + interval '1 hour'")
    enqueue(conn, {"notion": [key]}, 2)
    row = conn.execute("SELECT attempts, next_attempt_at > now() + interval '50 minutes' FROM replicator.outbox")
    assert row.fetchone() == (3, True)


def test_enqueue_notifies_each_sink_once_at_commit(db_url: str, conn: Conn) -> None:
    with psycopg.connect(db_url, autocommit=True) as listener:
        listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
        with conn.transaction():
            enqueue(
                conn,
                {"notion": [DocumentKey("dataset", uuid.uuid4()) for _ in range(5)], "pinecone": []},
                1,
            )
        payloads = [n.payload for n in listener.notifies(timeout=1.0)]
    assert payloads == ["notion"]


def test_a_source_batch_is_one_statement_that_upserts_coalescing_saves_the_checkpoint_and_notifies(
    db_url: str, conn: Conn
) -> None:
    d1, d2 = str(uuid.uuid4()), str(uuid.uuid4())
    with psycopg.connect(db_url, autocommit=True) as listener:
        listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
        written = write_batch(conn, ("notion", "pinecone"), [("dataset", d1)], 100, checkpoint=save_params("s", 100))
        assert write_batch(conn, ("notion",), [("dataset", d1), ("dataset", d2)], 300, checkpoint=None) == 2
        payloads = sorted(n.payload for n in listener.notifies(timeout=1.0, stop_after=3))
    assert written == 2
    assert payloads == ["notion", "notion", "pinecone"]
    assert rows(conn) == {
        ("notion", "dataset", uuid.UUID(d1)): (2, 300),
        ("pinecone", "dataset", uuid.UUID(d1)): (1, 100),
        ("notion", "dataset", uuid.UUID(d2)): (1, 300),
    }
    checkpoint = load_checkpoint(conn, "s")
    assert checkpoint is not None
    assert checkpoint.confirmed_lsn == 100
    # A batch with no documents only moves the checkpoint (forward only, as ``save``).
    assert write_batch(conn, ("notion",), [], 90, checkpoint=save_params("s", 90)) == 0
    assert write_batch(conn, ("notion",), [], 400, checkpoint=save_params("s", 400, heartbeat_seen="2026-01-01")) == 0
    checkpoint = load_checkpoint(conn, "s")
    assert checkpoint is not None
    assert checkpoint.confirmed_lsn == 400
    assert checkpoint.heartbeat_seen is not None


def test_a_source_batch_that_fails_writes_neither_rows_nor_checkpoint(conn: Conn) -> None:
    with pytest.raises(psycopg.errors.InvalidTextRepresentation):
        write_batch(
            conn,
            ("notion",),
            [("dataset", str(uuid.uuid4())), ("dataset", "not-a-uuid")],
            5,
            checkpoint=save_params("s", 5),
        )
    assert rows(conn) == {}
    assert load_checkpoint(conn, "s") is None
    with pytest.raises(ValueError, match="LSN"):
        write_batch(conn, ("notion",), [("dataset", str(uuid.uuid4()))], 5, checkpoint=save_params("s", 6))


def test_an_empty_batch_writes_nothing(conn: Conn) -> None:
    assert enqueue(conn, {"notion": []}, 1) == 0
    assert rows(conn) == {}


def test_the_checkpoint_only_moves_forward_and_keeps_the_last_heartbeat(conn: Conn) -> None:
    save_checkpoint(conn, "s", 500, heartbeat_seen="2026-01-01 00:00:00+00")
    save_checkpoint(conn, "s", 400)
    checkpoint = load_checkpoint(conn, "s")
    assert checkpoint is not None
    assert checkpoint.confirmed_lsn == 500
    assert checkpoint.heartbeat_seen is not None
    assert checkpoint.heartbeat_seen.year == 2026
    assert checkpoint.heartbeat_received_at is not None
    assert load_checkpoint(conn, "other") is None


def test_backfill_enqueues_every_document_for_every_sink_and_documents_whose_rows_are_gone(conn: Conn) -> None:
    datasets = {new_dataset(conn, f"d{i}") for i in range(3)}
    program = conn.execute("INSERT INTO program (name) VALUES ('ALS') RETURNING id").fetchone()
    assert program is not None
    gone = uuid.uuid4()
    conn.execute(
        "INSERT INTO replicator.sink_state (sink, entity, entity_id, content_hash) "
        "VALUES ('notion', 'dataset', %s, 'h')",
        (gone,),
    )
    conn.execute("INSERT INTO replicator.sink_status (sink, enabled, needs_resync) VALUES ('notion', true, true)")
    count = backfill(conn, ["notion", "pinecone"])
    found = rows(conn)
    assert count == len(found) == 2 * 4 + 1
    assert {k[2] for k in found if k[0] == "notion" and k[1] == "dataset"} == datasets | {gone}
    assert ("pinecone", "program", program[0]) in found
    assert conn.execute("SELECT needs_resync FROM replicator.sink_status").fetchone() == (False,)


def test_backfill_of_one_entity_leaves_the_others(conn: Conn) -> None:
    new_dataset(conn, "d")
    conn.execute("INSERT INTO program (name) VALUES ('ALS')")
    assert backfill(conn, ["pinecone"], ["program"]) == 1
    assert {k[1] for k in rows(conn)} == {"program"}


def test_an_unknown_entity_is_refused(conn: Conn) -> None:
    with pytest.raises(ValueError, match="unknown entity 'feature'"):
        enqueue_entities(conn, ["notion"], ["feature"], 1)
