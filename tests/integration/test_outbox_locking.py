"""One lock order on ``replicator.outbox`` and a claim that reads an index (#15 item 3), on the real server.

Every statement that locks several outbox rows takes them in key order (sink, entity, entity_id), so the source's
coalescing upsert and a worker finishing its claimed rows (in key order too) cannot deadlock; the claim reads
``ix_outbox_claim`` in its ORDER BY instead of sorting the whole backlog.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from replicator.daemon import EXIT_OK
from replicator.store.outbox import enqueue_pairs
from replicator.store.queries import QUERIES
from tests.daemon_harness import InProcessDaemon, wait_for
from tests.integration.test_guarantees import settings_for, sink_matches_postgres

Conn = psycopg.Connection[tuple[Any, ...]]


def _uuid(n: int) -> str:
    return str(uuid.UUID(int=n))


def _locked(conn: Conn, entity_id: str) -> bool:
    """Whether another transaction holds the lock of this outbox row (probed with NOWAIT, released at once)."""
    try:
        with conn.transaction():
            conn.execute(
                "SELECT 1 FROM replicator.outbox WHERE sink = 'notion' AND entity = 'dataset' AND entity_id = %s "
                "FOR UPDATE NOWAIT",
                (entity_id,),
            )
    except psycopg.errors.LockNotAvailable:
        return True
    return False


def test_the_coalescing_upsert_takes_outbox_rows_in_key_order(db_url: str, conn: Conn) -> None:
    ids = [_uuid(n) for n in range(1, 41)]
    pairs = {("dataset", i) for i in ids}  # a set: Python's iteration order is not the key order
    enqueue_pairs(conn, ["notion"], pairs, 1)
    blocked_at = 20
    with psycopg.connect(db_url, autocommit=True) as worker, psycopg.connect(db_url, autocommit=True) as source:
        pid = source.info.backend_pid

        def upsert() -> None:
            with source.transaction():
                enqueue_pairs(source, ["notion"], pairs, 2)

        thread = threading.Thread(target=upsert, daemon=True)
        with worker.transaction():
            # A worker finishing row 20 holds its lock; the source's upsert of all 40 then waits at row 20.
            worker.execute(
                "SELECT 1 FROM replicator.outbox WHERE sink = 'notion' AND entity_id = %s FOR UPDATE",
                (ids[blocked_at],),
            )
            thread.start()
            wait_for(
                lambda: (
                    conn.execute(
                        "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s", (pid,)
                    ).fetchone()
                    == (True,)
                ),
                what="the upsert waiting for the worker's row",
            )
            locked = [_locked(conn, i) for i in ids]
        thread.join(10)
    assert locked == [True] * (blocked_at + 1) + [False] * (len(ids) - blocked_at - 1)
    versions = conn.execute("SELECT DISTINCT version FROM replicator.outbox").fetchall()
    assert versions == [(2,)]


def test_the_claim_reads_its_index_in_order_instead_of_sorting_the_backlog(conn: Conn) -> None:
    conn.execute(
        "INSERT INTO replicator.outbox (sink, entity, entity_id, first_enqueued_at, last_enqueued_at) "
        "SELECT s, 'dataset', gen_random_uuid(), now() - interval '1 hour' + g * interval '1 ms', "
        "now() - interval '1 hour' FROM unnest(array['notion', 'pinecone']) s, generate_series(1, 20000) g"
    )
    conn.execute("ANALYZE replicator.outbox")
    params = {"sink": "notion", "limit": 50, "worker": "w", "lease": 60.0, "settle": 1.0}
    plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + QUERIES["claim_batch"], params).fetchall())
    assert "ix_outbox_claim" in plan, plan
    assert "Sort" not in plan, plan
    with conn.transaction():
        claimed = conn.execute(QUERIES["claim_batch"], params).fetchall()
    assert len(claimed) == 50


@pytest.mark.slow
def test_the_source_and_a_worker_never_deadlock_under_100_changes_per_second(
    conn: Conn, db_url: str, tmp_path: Path
) -> None:
    recording = tmp_path / "rec.jsonl"
    conn.execute(f"ALTER DATABASE {conn.info.dbname} SET log_lock_waits = on")  # our test database's name
    datasets = [
        r[0]
        for r in conn.execute(
            "INSERT INTO dataset (natural_key, name, omics_type) "
            "SELECT 'lock' || g, 'lock ' || g, 'lipidomics' FROM generate_series(1, 40) g RETURNING id"
        ).fetchall()
    ]
    before = conn.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()").fetchone()
    rng = random.Random(15)
    changes = 0
    settings = settings_for(db_url, recording, REPLICATOR_WORKER_BATCH="20")
    with InProcessDaemon(settings) as daemon, psycopg.connect(db_url, autocommit=True) as writer:
        wait_for(lambda: recording.exists() and recording.stat().st_size > 0, what="the first application")
        started = time.monotonic()
        while time.monotonic() - started < 10.0:
            # Several documents per transaction, in random order: multi-row upserts racing the worker's completes.
            with writer.transaction():
                for ds in rng.sample(datasets, 5):
                    writer.execute("UPDATE dataset SET name = %s WHERE id = %s", (f"n{changes}", ds))
                    changes += 1
            time.sleep(0.04)
        rate = changes / (time.monotonic() - started)
        wait_for(lambda: sink_matches_postgres(conn, recording), what="the sink matching Postgres")
    assert daemon.code == EXIT_OK
    time.sleep(1.0)  # the daemon's backends report their statistics as they exit
    after = conn.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()").fetchone()
    print(f"{changes} changes at {rate:.0f}/s; deadlocks {before} -> {after}")
    assert rate >= 50
    assert after == before
