"""The source on the real server: wal2json changes become outbox rows, and the slot is confirmed only for what
the outbox holds."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from replicator.metrics import Metrics
from replicator.retry import BackoffPolicy
from replicator.routing import SqlFeatureHolders
from replicator.source import SlotLostError, SourceLoop, SourceOptions, create_slot, drop_slot, slot_info
from tests.daemon_harness import slot_of, wait_for

Conn = psycopg.Connection[tuple[Any, ...]]


class Running:
    def __init__(self, loop: SourceLoop) -> None:
        self.loop = loop
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.loop.run(self.stop)
        except BaseException as exc:
            self.error = exc

    def __enter__(self) -> Running:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive()


@pytest.fixture
def source(db_url: str, conn: Conn) -> Callable[..., Running]:
    create_slot(conn, slot_of(conn))

    def make(**options: Any) -> Running:
        opts = SourceOptions(
            slot=slot_of(conn),
            sinks=options.pop("sinks", ("recording",)),
            batch_max_wait_ms=options.pop("batch_max_wait_ms", 50),
            heartbeat_interval_s=options.pop("heartbeat_interval_s", 0.5),
            **options,
        )
        return Running(SourceLoop(db_url, opts, metrics=Metrics(), policy=BackoffPolicy()))

    return make


def outbox(conn: Conn) -> dict[tuple[str, str, uuid.UUID], int]:
    rows = conn.execute("SELECT sink, entity, entity_id, version FROM replicator.outbox").fetchall()
    return {(r[0], r[1], r[2]): r[3] for r in rows}


def confirmed(conn: Conn) -> int:
    row = conn.execute(
        "SELECT (confirmed_flush_lsn - '0/0')::bigint FROM pg_replication_slots WHERE slot_name = %s", (slot_of(conn),)
    ).fetchone()
    assert row is not None
    return int(row[0])


def current_lsn(conn: Conn) -> int:
    row = conn.execute("SELECT (pg_current_wal_lsn() - '0/0')::bigint").fetchone()
    assert row is not None
    return int(row[0])


def new_dataset(conn: Conn, key: str = "k1") -> uuid.UUID:
    row = conn.execute(
        "INSERT INTO dataset (natural_key, name, omics_type) VALUES (%s, %s, 'lipidomics') RETURNING id", (key, key)
    ).fetchone()
    assert row is not None
    return uuid.UUID(str(row[0]))


def new_entity(conn: Conn, table: str, name: str) -> uuid.UUID:
    """A program or an experiment (only a name is required)."""
    row = conn.execute(f"INSERT INTO {table} (name) VALUES (%s) RETURNING id", (name,)).fetchone()  # our constant names
    assert row is not None
    return uuid.UUID(str(row[0]))


def new_feature(conn: Conn, name: str) -> uuid.UUID:
    row = conn.execute(
        "INSERT INTO feature (feature_type, normalized_name, name) VALUES ('lipid', %s, %s) RETURNING id",
        (name, name),
    ).fetchone()
    assert row is not None
    return uuid.UUID(str(row[0]))


def test_committed_changes_become_coalesced_outbox_rows_and_the_slot_is_confirmed_past_them(
    conn: Conn, source: Callable[..., Running]
) -> None:
    ds = new_dataset(conn)
    features = [new_feature(conn, f"f{i}") for i in range(3)]
    with conn.transaction():
        for f in features:
            conn.execute("INSERT INTO dataset_feature (dataset_id, feature_id, raw_name) VALUES (%s, %s, 'x')", (ds, f))
    written_up_to = current_lsn(conn)
    with source():
        wait_for(lambda: confirmed(conn) >= written_up_to)
        rows = outbox(conn)
    assert set(rows) == {("recording", "dataset", ds)}
    checkpoint = conn.execute("SELECT confirmed_lsn FROM replicator.source_checkpoint").fetchone()
    assert checkpoint is not None
    assert checkpoint[0] >= written_up_to - 1024  # the commit end of the last transaction with documents


def test_a_renamed_feature_dirties_the_datasets_holding_it(conn: Conn, source: Callable[..., Running]) -> None:
    ds1, ds2, other = new_dataset(conn, "a"), new_dataset(conn, "b"), new_dataset(conn, "c")
    feature = new_feature(conn, "PC 34:1")
    for ds in (ds1, ds2):
        conn.execute(
            "INSERT INTO dataset_feature (dataset_id, feature_id, raw_name) VALUES (%s, %s, 'x')", (ds, feature)
        )
    with source():
        wait_for(lambda: len(outbox(conn)) == 3)
        conn.execute("DELETE FROM replicator.outbox")
        conn.execute("UPDATE feature SET name = 'PC 16:0_18:1' WHERE id = %s", (feature,))
        wait_for(lambda: len(outbox(conn)) == 2)
    assert {k[2] for k in outbox(conn)} == {ds1, ds2}
    assert other not in {k[2] for k in outbox(conn)}


def test_an_updated_dataset_dirties_its_linked_program_and_experiment(
    conn: Conn, source: Callable[..., Running]
) -> None:
    ds = new_dataset(conn, "linked")
    new_dataset(conn, "alone")
    program = new_entity(conn, "program", "P-linked")
    new_entity(conn, "program", "P-unlinked")
    experiment = new_entity(conn, "experiment", "E-linked")
    conn.execute("INSERT INTO program_dataset (program_id, dataset_id) VALUES (%s, %s)", (program, ds))
    conn.execute("INSERT INTO experiment_dataset (experiment_id, dataset_id) VALUES (%s, %s)", (experiment, ds))
    with source():
        wait_for(lambda: len(outbox(conn)) == 5)
        conn.execute("DELETE FROM replicator.outbox")
        conn.execute("UPDATE dataset SET name = 'renamed' WHERE id = %s", (ds,))
        wait_for(lambda: len(outbox(conn)) == 3)
    assert {(k[1], k[2]) for k in outbox(conn)} == {("dataset", ds), ("program", program), ("experiment", experiment)}


def test_the_neighbour_lookup_finds_every_linked_document_in_both_directions(conn: Conn) -> None:
    ds = new_dataset(conn, "n1")
    program, experiment = new_entity(conn, "program", "P-n"), new_entity(conn, "experiment", "E-n")
    new_entity(conn, "program", "P-unlinked")
    conn.execute("INSERT INTO program_dataset (program_id, dataset_id) VALUES (%s, %s)", (program, ds))
    conn.execute("INSERT INTO program_experiment (program_id, experiment_id) VALUES (%s, %s)", (program, experiment))
    lookup = SqlFeatureHolders(conn)
    cases = [
        ({("dataset", str(ds))}, {("program", str(program))}),
        ({("program", str(program))}, {("dataset", str(ds)), ("experiment", str(experiment))}),
        ({("dataset", str(ds)), ("experiment", str(experiment))}, {("program", str(program))}),
    ]
    for updated, neighbours in cases:
        assert lookup.related_pairs(updated) == neighbours
    assert lookup.related_pairs(set()) == set()


def test_the_heartbeat_comes_back_through_the_stream_and_is_recorded(
    conn: Conn, source: Callable[..., Running]
) -> None:
    with source(heartbeat_interval_s=0.2):
        row = wait_for(
            lambda: conn.execute(
                "SELECT heartbeat_seen, heartbeat_received_at FROM replicator.source_checkpoint "
                "WHERE slot_name = %s AND heartbeat_seen IS NOT NULL",
                (slot_of(conn),),
            ).fetchone()
        )
    beat = conn.execute("SELECT beat_at FROM replicator.heartbeat WHERE slot_name = %s", (slot_of(conn),)).fetchone()
    assert beat is not None
    assert row[0] <= beat[0]
    assert row[1] >= row[0]


def test_an_idle_slot_keeps_advancing_past_writes_it_does_not_stream(
    conn: Conn, source: Callable[..., Running]
) -> None:
    conn.execute("CREATE TABLE scratch (id int PRIMARY KEY)")
    with source():
        for i in range(5):
            conn.execute("INSERT INTO scratch VALUES (%s)", (i,))
        target = current_lsn(conn)
        wait_for(lambda: confirmed(conn) >= target)
    assert outbox(conn) == {}


def test_with_no_sinks_changes_are_read_and_confirmed_without_outbox_rows(
    conn: Conn, source: Callable[..., Running]
) -> None:
    new_dataset(conn)
    target = current_lsn(conn)
    with source(sinks=()) as running:
        wait_for(lambda: confirmed(conn) >= target)
    assert outbox(conn) == {}
    assert running.loop.changes >= 1


def test_a_dropped_slot_stops_the_source_with_a_slot_lost_error(conn: Conn, source: Callable[..., Running]) -> None:
    drop_slot(conn, slot_of(conn))
    assert not slot_info(conn, slot_of(conn)).exists
    with source() as running:
        running.thread.join(10)
    assert isinstance(running.error, SlotLostError)


def test_a_truncate_dirties_every_document_of_the_parent_entity(conn: Conn, source: Callable[..., Running]) -> None:
    datasets = {new_dataset(conn, f"t{i}") for i in range(3)}
    feature = new_feature(conn, "f")
    for ds in datasets:
        conn.execute(
            "INSERT INTO dataset_feature (dataset_id, feature_id, raw_name) VALUES (%s, %s, 'x')", (ds, feature)
        )
    with source():
        wait_for(lambda: len(outbox(conn)) == 3)
        conn.execute("DELETE FROM replicator.outbox")
        conn.execute("TRUNCATE dataset_feature")
        wait_for(lambda: len(outbox(conn)) == 3)
    assert {k[2] for k in outbox(conn)} == datasets


def test_the_source_reconnects_when_its_replication_connection_is_killed(
    conn: Conn, source: Callable[..., Running]
) -> None:
    with source() as running:
        wait_for(
            lambda: (
                conn.execute(
                    "SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot_of(conn),)
                ).fetchone()
                == (True,)
            )
        )
        conn.execute(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = %s", (slot_of(conn),)
        )
        ds = new_dataset(conn, "after-reconnect")
        wait_for(lambda: ("recording", "dataset", ds) in outbox(conn), timeout=30)
        assert running.error is None


def test_a_transaction_larger_than_a_batch_is_written_in_pieces_and_confirmed_at_its_commit(
    conn: Conn, source: Callable[..., Running]
) -> None:
    with conn.transaction():
        conn.execute(
            "INSERT INTO dataset (natural_key, name, omics_type) "
            "SELECT 'big' || g, 'big' || g, 'lipidomics' FROM generate_series(1, 100) g"
        )
    commit_end = current_lsn(conn)
    with source(batch_max_changes=10) as running:
        wait_for(lambda: len(outbox(conn)) == 100)
        wait_for(lambda: confirmed(conn) >= commit_end - 1024)
    assert running.loop.batches >= 10  # pieces of the one transaction, each written before its commit was read
    checkpoint = conn.execute(
        "SELECT confirmed_lsn FROM replicator.source_checkpoint WHERE slot_name = %s", (slot_of(conn),)
    ).fetchone()
    assert checkpoint is not None
    assert checkpoint[0] >= commit_end - 1024


def test_a_commit_reaches_the_outbox_when_the_stream_goes_quiet_without_waiting_out_the_batch_window(
    conn: Conn, source: Callable[..., Running]
) -> None:
    with source(batch_max_wait_ms=600_000) as running:  # a 10-minute window: only the quiet stream can cut it
        wait_for(lambda: running.loop.confirmed_lsn > 0, what="streaming")
        ds = new_dataset(conn, "quiet")
        wait_for(lambda: ("recording", "dataset", ds) in outbox(conn), timeout=30, what="the outbox row")
