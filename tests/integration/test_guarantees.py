"""The replicator's guarantees (issue 3 §5), each on the real server with the recording sink:

a. kill -9 at random moments while a writer commits: the sink ends equal to Postgres, and a quiet restart
   re-applies nothing;  b. 100 quick updates of one dataset reach the sink as a handful of applications;
c. while the sink is down the slot's confirmed LSN keeps up with the writer;  d. two ``replicator run``
   processes: one streams, one stands by and takes over after kill -9;  e. one 200,000-row transaction
   streams in bounded memory;  f. a dropped or invalidated slot is reported and never silently recreated.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest

from replicator.config import Settings
from replicator.daemon import EXIT_OK, EXIT_UNHEALTHY
from replicator.documents import DocumentKey, render
from replicator.graph import ENTITIES
from replicator.source import drop_slot
from replicator.status import collect_status, evaluate_health
from schema.migrate import upgrade
from tests.conftest import REPO_ROOT
from tests.daemon_harness import InProcessDaemon, slot_of, wait_for
from tests.pgcluster import PgCluster, free_port
from tests.support.recording_sink import load_recording, recording_plugin

Conn = psycopg.Connection[tuple[Any, ...]]


# ---- helpers -----------------------------------------------------------------------------------------------------


def replicator_env(db_url: str, recording: Path, **extra: str) -> dict[str, str]:
    env = dict(
        POSTGRES_URL=db_url,
        REPLICATOR_SLOT=slot_of(db_url),
        REPLICATOR_SINKS="recording",
        **recording_plugin(recording),
        REPLICATOR_HTTP_ADDR="127.0.0.1:0",
        REPLICATOR_HEARTBEAT_INTERVAL_S="0.5",
        REPLICATOR_BATCH_MAX_WAIT_MS="50",
        REPLICATOR_WORKER_IDLE_POLL_S="0.5",
        REPLICATOR_STANDBY_POLL_S="0.3",
        REPLICATOR_LEASE_S="3",
        REPLICATOR_LOG_FORMAT="json",
    )
    env.update(extra)
    return env


def env_for(db_url: str, recording: Path, **extra: str) -> dict[str, str]:
    """The process environment for a subprocess: ours, minus any REPLICATOR_/POSTGRES_ variables of the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REPLICATOR_", "POSTGRES_", "ENABLE_DUAL"))}
    env.update(replicator_env(db_url, recording, **extra))
    return env


def settings_for(db_url: str, recording: Path, **extra: str) -> Settings:
    return Settings(**replicator_env(db_url, recording, **extra))  # type: ignore[arg-type]


def _cli_has_run() -> bool:
    out = subprocess.run(
        [sys.executable, "-m", "replicator", "run", "--help"], capture_output=True, text=True, cwd=REPO_ROOT
    )
    return out.returncode == 0


RUN_COMMAND = (
    [sys.executable, "-m", "replicator", "run"]
    if _cli_has_run()
    # Until the CLI's ``run`` lands: the same library call it makes.
    else [
        sys.executable,
        "-c",
        "import sys; from replicator.config import Settings; from replicator.daemon import run; "
        "sys.exit(run(Settings()))",
    ]
)


class Process:
    """A ``replicator run`` subprocess with its log in a file."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        self._out = log.open("ab")
        self.popen = subprocess.Popen(RUN_COMMAND, env=env, cwd=REPO_ROOT, stdout=self._out, stderr=self._out)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def kill9(self) -> None:
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(10)
        self._out.close()

    def terminate(self, timeout: float = 40.0) -> int:
        self.popen.send_signal(signal.SIGTERM)
        code = self.popen.wait(timeout)
        self._out.close()
        return code

    def said(self, event: str) -> bool:
        return f'"event":"{event}"' in self.log.read_text(errors="replace")


@pytest.fixture
def procs() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for p in started:
        if p.popen.poll() is None:
            p.kill9()


def slot_row(conn: Conn) -> tuple[Any, ...] | None:
    return conn.execute(
        "SELECT active, (confirmed_flush_lsn - '0/0')::bigint, wal_status FROM pg_replication_slots "
        "WHERE slot_name = %s",
        (slot_of(conn),),
    ).fetchone()


def slot_active(conn: Conn) -> bool:
    row = slot_row(conn)
    return row is not None and bool(row[0])


def current_lsn(conn: Conn) -> int:
    row = conn.execute("SELECT (pg_current_wal_lsn() - '0/0')::bigint").fetchone()
    assert row is not None
    return int(row[0])


def confirmed_past(conn: Conn, lsn: int) -> bool:
    row = slot_row(conn)
    return row is not None and row[1] is not None and row[1] >= lsn


def outbox_count(conn: Conn) -> int:
    row = conn.execute("SELECT count(*) FROM replicator.outbox").fetchone()
    assert row is not None
    return int(row[0])


def new_dataset(conn: Conn, key: str) -> uuid.UUID:
    row = conn.execute(
        "INSERT INTO dataset (natural_key, name, omics_type) VALUES (%s, %s, 'lipidomics') RETURNING id", (key, key)
    ).fetchone()
    assert row is not None
    return uuid.UUID(str(row[0]))


def expected_documents(conn: Conn) -> dict[DocumentKey, str]:
    keys = [
        DocumentKey(entity, row[0])
        for entity in ENTITIES
        for row in conn.execute(f"SELECT id FROM {entity}").fetchall()  # entity names are our constants
    ]
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        rendered = render(conn, keys)
    return {k: doc.content_hash() for k, doc in rendered.items() if doc is not None}


def recorded_documents(path: Path) -> dict[DocumentKey, str]:
    return {k: d.content_hash for k, d in load_recording(path).documents.items()}


def sink_matches_postgres(conn: Conn, path: Path) -> bool:
    return outbox_count(conn) == 0 and recorded_documents(path) == expected_documents(conn)


class Writer(threading.Thread):
    """Commits a random mix of inserts, renames, links, child rows and deletes until stopped."""

    def __init__(self, db_url: str, seed: int) -> None:
        super().__init__(daemon=True)
        self.db_url = db_url
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.commits = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with psycopg.connect(self.db_url, autocommit=True) as conn:
                features = [
                    r[0]
                    for r in conn.execute(
                        "INSERT INTO feature (feature_type, normalized_name, name) "
                        "SELECT 'lipid', 'w' || g, 'W ' || g FROM generate_series(1, 40) g RETURNING id"
                    ).fetchall()
                ]
                program = conn.execute("INSERT INTO program (name) VALUES ('writer') RETURNING id").fetchone()
                assert program is not None
                n = 0
                while not self.stop.is_set():
                    n += 1
                    self._step(conn, n, features, program[0])
                    self.commits += 1
                    time.sleep(self.rng.uniform(0.0, 0.01))
        except BaseException as exc:
            self.error = exc

    def _step(self, conn: Conn, n: int, features: list[Any], program: Any) -> None:
        rng = self.rng
        ids = [r[0] for r in conn.execute("SELECT id FROM dataset ORDER BY natural_key").fetchall()]
        op = rng.random()
        with conn.transaction():
            if op < 0.35 or len(ids) < 3:
                ds = conn.execute(
                    "INSERT INTO dataset (natural_key, name, omics_type) VALUES (%s, %s, 'lipidomics') RETURNING id",
                    (f"w{n}", f"writer {n}"),
                ).fetchone()
                assert ds is not None
                conn.execute(
                    "INSERT INTO dataset_feature (dataset_id, feature_id, raw_name, log2_fold_change) "
                    "SELECT %s, f, 'x', %s FROM unnest(%s::uuid[]) f",
                    (ds[0], rng.uniform(-2, 2), rng.sample(features, 3)),
                )
                conn.execute("INSERT INTO program_dataset (program_id, dataset_id) VALUES (%s, %s)", (program, ds[0]))
            elif op < 0.7:
                conn.execute("UPDATE dataset SET name = %s WHERE id = %s", (f"renamed {n}", rng.choice(ids)))
            elif op < 0.8:
                conn.execute("UPDATE feature SET name = %s WHERE id = %s", (f"F {n}", rng.choice(features)))
            elif op < 0.9:
                conn.execute(
                    "UPDATE dataset_feature SET log2_fold_change = %s WHERE dataset_id = %s",
                    (rng.uniform(-3, 3), rng.choice(ids)),
                )
            else:
                conn.execute("DELETE FROM dataset WHERE id = %s", (rng.choice(ids),))


# ---- a. kill -9 ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_after_kill_9_at_random_moments_the_sink_equals_postgres_and_a_restart_reapplies_nothing(
    conn: Conn, db_url: str, tmp_path: Path, procs: list[Process]
) -> None:
    recording = tmp_path / "rec.jsonl"
    env = env_for(db_url, recording)
    for i in range(5):
        new_dataset(conn, f"pre{i}")
    writer = Writer(db_url, seed=3)
    writer.start()
    rng = random.Random(7)
    try:
        for round_ in range(5):
            proc = Process(env, tmp_path / "run.log")
            procs.append(proc)
            time.sleep(rng.uniform(0.5, 2.5) if round_ else 1.5)
            proc.kill9()
    finally:
        writer.stop.set()
        writer.join(30)
    assert writer.error is None
    assert writer.commits > 20
    final = Process(env, tmp_path / "run.log")
    procs.append(final)
    wait_for(lambda: sink_matches_postgres(conn, recording), timeout=60, what="sink equal to Postgres")
    applied = load_recording(recording).applications
    # A quiet restart: nothing changed, so nothing is applied again (no re-backfill, no replay beyond the slot).
    final.kill9()
    quiet = Process(env, tmp_path / "run.log")
    procs.append(quiet)
    wait_for(lambda: slot_active(conn), what="restarted daemon streaming")
    target = current_lsn(conn)
    wait_for(lambda: confirmed_past(conn, target), what="restart caught up")
    time.sleep(1.0)  # let a worker pick up anything a replay might have enqueued
    assert outbox_count(conn) == 0
    assert load_recording(recording).applications == applied
    assert recorded_documents(recording) == expected_documents(conn)
    assert quiet.terminate() == EXIT_OK


# ---- b. coalescing -----------------------------------------------------------------------------------------------


def test_a_hundred_quick_updates_of_one_dataset_reach_the_sink_as_a_handful_of_applications(
    conn: Conn, db_url: str, tmp_path: Path
) -> None:
    recording = tmp_path / "rec.jsonl"
    ds = new_dataset(conn, "hot")
    key = DocumentKey("dataset", ds)
    # The default batch window (200 ms) and a sink call that takes as long as a Notion request.
    settings = settings_for(
        db_url, recording, REPLICATOR_BATCH_MAX_WAIT_MS="200", **recording_plugin(recording, delay_ms=300)
    )
    with InProcessDaemon(settings) as daemon:
        wait_for(lambda: key in load_recording(recording).documents, what="first application")
        before = load_recording(recording).applications[key]
        for i in range(100):
            conn.execute("UPDATE dataset SET name = %s WHERE id = %s", (f"hot {i}", ds))
        wait_for(lambda: sink_matches_postgres(conn, recording), what="last update applied")
        after = load_recording(recording).applications[key]
    assert daemon.code == EXIT_OK
    assert load_recording(recording).documents[key].name == "hot 99"
    print(f"applications for 100 updates: {after - before}")
    assert 1 <= after - before <= 5


# ---- c. sink down ------------------------------------------------------------------------------------------------


def test_while_the_sink_is_down_the_slot_keeps_up_with_the_writer(conn: Conn, db_url: str, tmp_path: Path) -> None:
    recording = tmp_path / "rec.jsonl"
    settings = settings_for(db_url, recording, **recording_plugin(recording, fail="retryable"))
    with InProcessDaemon(settings):
        wait_for(lambda: slot_active(conn), what="streaming")
        for i in range(50):
            new_dataset(conn, f"down{i}")
        written = current_lsn(conn)
        wait_for(lambda: confirmed_past(conn, written), what="slot confirmed past the writer")
        pending = outbox_count(conn)
    assert pending >= 50
    assert load_recording(recording).documents == {}


# ---- d. failover -------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_run_processes_one_streams_one_stands_by_and_takes_over_after_kill_9(
    conn: Conn, db_url: str, tmp_path: Path, procs: list[Process]
) -> None:
    recording = tmp_path / "rec.jsonl"
    env = env_for(db_url, recording)
    first = Process(env, tmp_path / "first.log")
    procs.append(first)
    wait_for(lambda: slot_active(conn) and first.said("source.streaming"), what="first process streaming")
    second = Process(env, tmp_path / "second.log")
    procs.append(second)
    wait_for(lambda: second.said("leader.standby"), what="second process standing by")
    assert not second.said("source.streaming")
    first.kill9()
    wait_for(lambda: second.said("leader.acquired") and second.said("source.streaming"), what="takeover")
    ds = new_dataset(conn, "after-failover")
    wait_for(lambda: DocumentKey("dataset", ds) in load_recording(recording).documents, what="applied after failover")
    leader = conn.execute(
        "SELECT leader FROM replicator.source_checkpoint WHERE slot_name = %s", (slot_of(conn),)
    ).fetchone()
    assert leader is not None
    assert str(leader[0]).endswith(f":{second.pid}")
    assert second.terminate() == EXIT_OK


# ---- e. a huge transaction ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_one_transaction_of_200000_row_changes_streams_in_bounded_memory(
    conn: Conn, db_url: str, tmp_path: Path, procs: list[Process]
) -> None:
    recording = tmp_path / "rec.jsonl"
    conn.execute(
        "INSERT INTO feature (feature_type, normalized_name, name) "
        "SELECT 'lipid', 'big' || g, 'Big ' || g FROM generate_series(1, 200000) g"
    )
    ds = new_dataset(conn, "big")
    proc = Process(env_for(db_url, recording), tmp_path / "run.log")
    procs.append(proc)
    wait_for(lambda: proc.said("source.streaming"), what="streaming")
    process = psutil.Process(proc.pid)
    peak = 0
    conn.execute(
        "INSERT INTO dataset_feature (dataset_id, feature_id, raw_name, log2_fold_change) "
        "SELECT %s, id, name, 1.0 FROM feature WHERE normalized_name LIKE 'big%%'",
        (ds,),
    )
    written = current_lsn(conn)
    deadline = time.monotonic() + 60
    while not confirmed_past(conn, written):
        peak = max(peak, process.memory_info().rss)
        assert time.monotonic() < deadline, "the 200,000-row transaction was not confirmed within 60 s"
        time.sleep(0.05)
    peak = max(peak, process.memory_info().rss)
    wait_for(lambda: DocumentKey("dataset", ds) in load_recording(recording).documents, what="dataset applied")
    assert proc.terminate() == EXIT_OK
    print(f"peak RSS during the 200,000-row transaction: {peak / 2**20:.0f} MB")
    assert peak < 300 * 2**20


# ---- f. lost slots -----------------------------------------------------------------------------------------------


def test_a_dropped_slot_is_reported_by_status_and_health_and_not_recreated(
    conn: Conn, db_url: str, tmp_path: Path
) -> None:
    settings = settings_for(db_url, tmp_path / "rec.jsonl")
    with InProcessDaemon(settings):
        wait_for(lambda: slot_active(conn), what="streaming")
    conn.execute("SELECT pg_drop_replication_slot(%s)", (slot_of(conn),))
    again = InProcessDaemon(settings)
    with again:
        again.thread.join(30)
    assert again.code == EXIT_UNHEALTHY
    assert slot_row(conn) is None
    status = collect_status(conn, settings)
    assert status.slot.lost
    health = evaluate_health(status, settings)
    assert not health.ok
    assert any("missing" in r for r in health.reasons)
    # The explicit operator step: ``replicator slot drop`` clears the checkpoint; the next run recreates the slot
    # and resyncs every document.
    drop_slot(conn, slot_of(conn))
    ds = new_dataset(conn, "after-recovery")
    recording = tmp_path / "rec.jsonl"
    with InProcessDaemon(settings):
        wait_for(lambda: DocumentKey("dataset", ds) in load_recording(recording).documents, what="resynced")
    assert slot_row(conn) is not None


@pytest.fixture
def small_wal_cluster() -> Iterator[PgCluster]:
    """A dedicated cluster whose slots may retain at most 1 MB of WAL, so one can be invalidated on purpose."""
    tmp = Path(tempfile.mkdtemp(prefix="omics-cdc-smallwal-"))
    cluster = PgCluster(tmp / "data", free_port())
    cluster.init()
    with (cluster.datadir / "postgresql.conf").open("a") as conf:
        conf.write("max_slot_wal_keep_size = 1MB\nmin_wal_size = 32MB\nmax_wal_size = 64MB\n")
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.slow
def test_an_invalidated_slot_is_reported_by_status_and_health_and_not_recreated(
    small_wal_cluster: PgCluster, tmp_path: Path
) -> None:
    db_url = small_wal_cluster.url
    upgrade(db_url)
    settings = settings_for(db_url, tmp_path / "rec.jsonl")
    with psycopg.connect(db_url, autocommit=True) as conn:
        with InProcessDaemon(settings):
            wait_for(lambda: slot_active(conn), what="streaming")
        # With the replicator stopped, write WAL well past max_slot_wal_keep_size and checkpoint: the server
        # invalidates the slot.
        conn.execute("CREATE TABLE filler (payload text)")
        for _ in range(6):
            conn.execute("INSERT INTO filler SELECT repeat('x', 1000) FROM generate_series(1, 20000)")
            conn.execute("SELECT pg_switch_wal()")
        conn.execute("CHECKPOINT")
        wait_for(lambda: (row := slot_row(conn)) is not None and row[2] == "lost", what="slot invalidated")
        again = InProcessDaemon(settings)
        with again:
            again.thread.join(30)
        assert again.code == EXIT_UNHEALTHY
        row = slot_row(conn)
        assert row is not None
        assert row[2] == "lost"  # still the old, invalidated slot: not dropped and recreated behind our back
        status = collect_status(conn, settings)
        assert status.slot.lost
        health = evaluate_health(status, settings)
        assert not health.ok
        assert any("lost" in r for r in health.reasons)
