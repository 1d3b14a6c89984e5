"""The daemon wired end to end on the real server, in-process (a thread with a stop event) with the recording
sink: slot creation then backfill, streaming, sink switches, shutdown."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from replicator.daemon import EXIT_OK, EXIT_UNHEALTHY, sync_sink_status
from replicator.documents import DocumentKey
from replicator.leader import lock_key
from replicator.status import collect_status
from tests.daemon_harness import InProcessDaemon, daemon_settings, slot_of, wait_for
from tests.support.recording_sink import load_recording, recording_plugin

Conn = psycopg.Connection[tuple[Any, ...]]


settings_for = daemon_settings


def leader_locks(conn: Conn) -> int:
    """Holders of this test's leader lock (a bigint advisory lock shows as classid = high, objid = low 32 bits)."""
    key = lock_key(slot_of(conn)) & 0xFFFFFFFFFFFFFFFF
    row = conn.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 "
        "AND classid = %s::bigint::oid AND objid = %s::bigint::oid",
        (key >> 32, key & 0xFFFFFFFF),
    ).fetchone()
    assert row is not None
    return int(row[0])


def new_dataset(conn: Conn, key: str) -> uuid.UUID:
    row = conn.execute(
        "INSERT INTO dataset (natural_key, name, omics_type) VALUES (%s, %s, 'lipidomics') RETURNING id", (key, key)
    ).fetchone()
    assert row is not None
    return uuid.UUID(str(row[0]))


def slot_row(conn: Conn) -> tuple[Any, ...] | None:
    return conn.execute(
        "SELECT active, (confirmed_flush_lsn - '0/0')::bigint FROM pg_replication_slots WHERE slot_name = %s",
        (slot_of(conn),),
    ).fetchone()


def test_a_first_run_creates_the_slot_backfills_existing_rows_then_streams_new_ones(
    conn: Conn, db_url: str, tmp_path: Path
) -> None:
    recording = tmp_path / "rec.jsonl"
    before = new_dataset(conn, "before")
    with InProcessDaemon(settings_for(db_url, recording)) as daemon:
        wait_for(lambda: DocumentKey("dataset", before) in load_recording(recording).documents)
        after = new_dataset(conn, "after")
        wait_for(lambda: DocumentKey("dataset", after) in load_recording(recording).documents)
        conn.execute("DELETE FROM dataset WHERE id = %s", (before,))
        wait_for(lambda: DocumentKey("dataset", before) not in load_recording(recording).documents)
    assert daemon.code == EXIT_OK
    row = slot_row(conn)
    assert row is not None
    assert row[0] is False  # the stream was closed
    assert leader_locks(conn) == 0
    assert conn.execute("SELECT count(*) FROM replicator.outbox").fetchone() == (0,)


def test_a_slot_dropped_behind_the_replicators_back_is_reported_and_never_recreated(
    conn: Conn, db_url: str, tmp_path: Path
) -> None:
    settings = settings_for(db_url, tmp_path / "rec.jsonl")
    with InProcessDaemon(settings):
        wait_for(lambda: (row := slot_row(conn)) is not None and row[0])
    conn.execute("SELECT pg_drop_replication_slot(%s)", (slot_of(conn),))
    daemon = InProcessDaemon(settings)
    with daemon:
        daemon.thread.join(30)
    assert daemon.code == EXIT_UNHEALTHY
    assert slot_row(conn) is None


def test_a_sink_switched_back_on_is_flagged_for_resync(conn: Conn, db_url: str, tmp_path: Path) -> None:
    settings = settings_for(db_url, tmp_path / "rec.jsonl")
    with InProcessDaemon(settings):
        wait_for(lambda: (row := slot_row(conn)) is not None and row[0])
    assert sync_sink_status(conn, settings_for(db_url, tmp_path / "r", sinks="")) == []
    assert sync_sink_status(conn, settings) == ["recording"]
    flags: dict[str, bool] = dict(conn.execute("SELECT sink, needs_resync FROM replicator.sink_status").fetchall())
    assert flags == {"notion": False, "pinecone": False, "recording": True}


@pytest.mark.parametrize("dual_write", [True, False])
def test_dual_write_off_removes_notion_from_the_enabled_sinks(db_url: str, tmp_path: Path, dual_write: bool) -> None:
    settings = settings_for(db_url, tmp_path / "r", sinks="notion,recording", ENABLE_DUAL_WRITE=dual_write)
    assert ("notion" in settings.enabled_sinks) is dual_write


def test_sigterm_stops_reading_confirms_what_is_committed_releases_the_lock_and_exits_0(
    conn: Conn, db_url: str, tmp_path: Path
) -> None:
    import os
    import signal
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    env = {k: v for k, v in os.environ.items() if not k.startswith(("REPLICATOR_", "POSTGRES_"))}
    env.update(
        POSTGRES_URL=db_url,
        REPLICATOR_SLOT=slot_of(db_url),
        REPLICATOR_SINKS="recording",
        **recording_plugin(tmp_path / "rec.jsonl"),
        REPLICATOR_HTTP_ADDR="127.0.0.1:0",
        REPLICATOR_BATCH_MAX_WAIT_MS="50",
    )
    log = (tmp_path / "run.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "replicator", "run"], env=env, cwd=REPO_ROOT, stdout=log, stderr=log)
    try:
        wait_for(lambda: (row := slot_row(conn)) is not None and row[0])
        for i in range(20):
            new_dataset(conn, f"term{i}")
        written = conn.execute("SELECT (pg_current_wal_lsn() - '0/0')::bigint").fetchone()
        assert written is not None
        wait_for(lambda: len(load_recording(tmp_path / "rec.jsonl").documents) == 20)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == EXIT_OK
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    row = slot_row(conn)
    assert row is not None
    assert row[0] is False
    assert row[1] >= written[0] - 4096  # confirmed up to the last commit (its end lies just before `written`)
    assert leader_locks(conn) == 0
    assert '"event":"daemon.signal"' in (tmp_path / "run.log").read_text()


def test_a_standby_process_applies_outbox_rows_while_another_holds_the_leader_lock(
    conn: Conn, db_url: str, tmp_path: Path
) -> None:
    """Workers run in every process: a standby (here: the lock held by this test's session) still drains the
    outbox, so a second replica adds apply capacity, not only failover."""
    from replicator.store.outbox import enqueue

    recording = tmp_path / "rec.jsonl"
    dataset = new_dataset(conn, "queued")
    with psycopg.connect(db_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (lock_key(slot_of(conn)),))
        with InProcessDaemon(settings_for(db_url, recording)):
            with psycopg.connect(db_url, autocommit=True) as writer, writer.transaction():
                enqueue(writer, {"recording": [DocumentKey("dataset", dataset)]}, lsn=0)
            wait_for(lambda: DocumentKey("dataset", dataset) in load_recording(recording).documents)
            assert slot_row(conn) is None  # the standby never created or streamed the slot


def test_renaming_a_program_re_renders_the_datasets_that_show_its_name(conn: Conn, db_url: str, tmp_path: Path) -> None:
    recording = tmp_path / "rec.jsonl"
    dataset = new_dataset(conn, "linked")
    row = conn.execute("INSERT INTO program (name) VALUES ('Old name') RETURNING id").fetchone()
    assert row is not None
    conn.execute("INSERT INTO program_dataset (program_id, dataset_id) VALUES (%s, %s)", (row[0], dataset))
    key = DocumentKey("dataset", dataset)
    with InProcessDaemon(settings_for(db_url, recording)):
        before = wait_for(lambda: load_recording(recording).documents.get(key)).content_hash
        conn.execute("UPDATE program SET name = 'New name' WHERE id = %s", (row[0],))
        wait_for(lambda: load_recording(recording).documents[key].content_hash != before)


def test_an_unparseable_change_stops_the_stream_before_it_and_is_never_skipped(
    conn: Conn, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    import replicator.source.listener
    from replicator.changes import ChangeParseError, KeyScanner
    from replicator.daemon import EXIT_FAILED, run
    from replicator.metrics import Metrics

    recording = tmp_path / "rec.jsonl"
    settings = settings_for(db_url, recording)
    first = new_dataset(conn, "first")
    real_parse = replicator.source.listener.parse  # type: ignore[attr-defined]

    def parse(data: bytes, lsn: int) -> Any:  # the fault: wal2json sent a record we cannot read
        if b"poison" in bytes(data):
            raise ChangeParseError(f"record at {lsn:X} is not what format-version 2 promises")
        return real_parse(data, lsn)

    monkeypatch.setattr(replicator.source.listener, "parse", parse)
    real_scan = KeyScanner.scan

    def scan(self: KeyScanner, payload: bytes, start: int = 0) -> Any:  # the fast path leaves a record to parse
        return None if b"poison" in bytes(payload[start:]) else real_scan(self, payload, start)

    monkeypatch.setattr(KeyScanner, "scan", scan)
    metrics, codes = Metrics(), []
    thread = threading.Thread(target=lambda: codes.append(run(settings, metrics=metrics)), daemon=True)
    thread.start()
    wait_for(lambda: DocumentKey("dataset", first) in load_recording(recording).documents)
    poison = new_dataset(conn, "poison")
    thread.join(60)
    assert not thread.is_alive(), "the daemon must stop on its own, not hang or skip"
    assert codes == [EXIT_FAILED]
    assert metrics.source_incidents.labels(kind="unparseable_change")._value.get() == 1
    assert DocumentKey("dataset", poison) not in load_recording(recording).documents

    # After the fix (here: the real parser back), a restart streams the change the slot kept for it.
    monkeypatch.setattr(replicator.source.listener, "parse", real_parse)
    monkeypatch.setattr(KeyScanner, "scan", real_scan)
    with InProcessDaemon(settings) as daemon:
        wait_for(lambda: DocumentKey("dataset", poison) in load_recording(recording).documents)
    assert daemon.code == EXIT_OK


def test_a_changed_sink_scope_is_applied_at_start_widening_then_narrowing(
    conn: Conn, db_url: str, tmp_path: Path
) -> None:
    recording = tmp_path / "rec.jsonl"
    lipids = DocumentKey("dataset", new_dataset(conn, "lipids"))
    proteins = DocumentKey("dataset", new_dataset(conn, "proteins"))
    conn.execute("UPDATE dataset SET omics_type = 'proteomics' WHERE id = %s", (proteins.id,))

    def scoped(scope: str) -> Any:
        plugins = orjson.loads(recording_plugin(recording)["REPLICATOR_SINK_PLUGINS"])
        plugins["recording"]["scope"] = scope
        return settings_for(db_url, recording, REPLICATOR_SINK_PLUGINS=orjson.dumps(plugins).decode())

    def settled() -> bool:
        row = conn.execute("SELECT count(*) FROM replicator.outbox").fetchone()
        return row == (0,)

    pilot = scoped("dataset.omics_type=lipidomics")
    with InProcessDaemon(pilot):
        wait_for(lambda: lipids in load_recording(recording).documents)
        wait_for(settled)
    assert proteins not in load_recording(recording).documents
    [view] = [s for s in collect_status(conn, pilot).sinks if s.name == "recording"]
    assert view.scope == "dataset.omics_type=lipidomics"

    with InProcessDaemon(scoped("all")):  # widened: the backfill of what newly falls inside
        wait_for(lambda: proteins in load_recording(recording).documents)
    assert lipids in load_recording(recording).documents

    with InProcessDaemon(pilot):  # narrowed: removed downstream
        wait_for(lambda: proteins not in load_recording(recording).documents)
        wait_for(settled)
    assert lipids in load_recording(recording).documents
    row = conn.execute("SELECT scope, previous_scope, widened, narrowed FROM replicator.sink_scope").fetchone()
    assert row == ("dataset.omics_type=lipidomics", "all", 0, 1)
